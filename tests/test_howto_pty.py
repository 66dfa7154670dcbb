"""Issue 14's "Done when": the HOW-TO's code lines (shared/seed/dpu-howto.txt), typed verbatim at
`dpu shell` on a terminal (a pty), on the local DPU and on the harness's real SLURM, each doing
what the HOW-TO says it does.

The HOW-TO's four run lines lost their leading ``dpu.run(`` in the document; they are typed with
it (and their trailing comments), and once as they stand, for the prompt's hint. Lines that are
not the HOW-TO's are the test's own set-up: a wait, a long job and one waiting for it, so the
cancel loop meets a finished, a running and a queued job.
"""
from __future__ import annotations

import ast
import io
import re
import subprocess
from typing import List

import pytest
import yaml

from dpu_slurm.config import current_user
from dpu_slurm.processor import Processor
from tests.awe_prompt import AwePrompt
from tests.conftest import Env
from tests.test_catalog import SEED_HOTPIXELS, SEED_SHOW

STAMP = r"\d\d:\d\d:\d\d"
RULE = re.escape("+" * 44)

# The HOW-TO's lines after its "awe> " prompt, to the letter.
IDENTIFIERS = "dpu.get_sequence_identifiers()"
OPTIONS = "dpu.get_sequence_options('HotPixels')"
SHOW_OPTIONS = "dpu.show_sequence_options('HotPixels')"
RUNS = [  # "dpu.run(" + the HOW-TO's line
    ("dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842') # all CCDs", 8),
    ("dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842', C=1) # commit results", 8),
    ("dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842', c='ccd50') # one CCD", 1),
    ("dpu.run('Reduce', i='WFI', o='CDF4_B_?', d='2000-04-29', f='#845')", 8),
]
AS_WRITTEN = "'DomeFlat', i='WFI', d='2000-04-28', f='#842') # all CCDs"
JOBIDS = "dpu.get_jobids()"
STATUS = "dpu.get_status()"
LOGS = "dpu.get_logs()"
CANCEL = "dpu.cancel_job(313)"
CANCEL_LOOP = ["for jobid in dpu.get_jobids():", "    dpu.cancel_job(jobid)", ""]
IDENTIFIERS_NOW = ['Null', 'ReadNoise', 'Bias', 'HotPixels', 'DomeFlat', 'Reduce', 'Null>Null',
                   'Bias>HotPixels', 'Bias>ReadNoise']


def said(text: str) -> List[str]:
    """The printed lines without the ``[user] HH:MM:SS - `` prefix."""
    return [re.sub(rf"^\[[^\]]+\] {STAMP} - ", "", line) for line in text.splitlines()]


def the_howto_at_the_prompt(awe: AwePrompt, dpu: str, wait: float) -> None:
    """Every line of the HOW-TO at a terminal on `dpu`; `wait`: how long the jobs may take."""
    banner = said(awe.upto())
    assert "               Welcome to the Astro-WISE Environment" in banner
    assert banner.index("Importing Astro-WISE packages. Please wait...") < \
        banner.index("Initializing Distributed Processing Unit...") < banner.index("Current profile:")
    assert f"- username : {current_user()}" in banner and any(f"DPU      : {dpu} " in b for b in banner)

    # "The dpu can be asked which sequence identifiers it recognises" (the HOW-TO's names among them)
    assert ast.literal_eval(awe.type(IDENTIFIERS).strip()) == IDENTIFIERS_NOW
    assert ast.literal_eval(awe.type(OPTIONS).strip()) == SEED_HOTPIXELS
    assert said(awe.type(SHOW_OPTIONS)) == ["Recognized options for the OptionsParser are:", *SEED_SHOW]
    assert ast.literal_eval(awe.type("dpu.get_dpu_identifiers()").strip()) == ["local", dpu]
    listed = said(awe.type("dpu.show_dpu_identifiers()"))
    assert [line.split()[:2] for line in listed] == [["local", "local"], ["*", dpu]]  # * the one in use
    shown = said(awe.type("dpu.show_sequence_identifiers('HotPixels')"))
    assert [s.split()[0] for s in shown[:2]] == ["HotPixels", "Bias>HotPixels"]  # by a part of the name
    assert shown[2:] == ["Recognized options for the OptionsParser are:", *SEED_SHOW]  # a whole name

    # the HOW-TO's run lines as the document prints them: a hint, nothing submitted
    pasted = awe.type(AS_WRITTEN)
    assert "SyntaxError" in pasted and said(pasted)[-1] == (
        "did you mean dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842')? "
        "(the HOW-TO's run lines lost their 'dpu.run(')")
    # "The run method will print a job identifier for every job submitted"
    for jid, (line, nproc) in enumerate(RUNS, start=1):
        printed = said(awe.type(line, timeout=120))
        call = line.split(" #")[0]
        assert printed[0] == f"Calling: {call}", printed
        # the tasks' estimate; a learned one (and a suggestion) once 3 processes are known ended
        assert re.fullmatch(r"Estimated process time : \d+ seconds( \(from \d+ earlier runs?\))?",
                            printed[1]), printed
        assert all(p.startswith("Suggested: dpu_time=") for p in printed[2:-1]), printed
        many = f" ({nproc} processes)" if nproc > 1 else ""
        assert printed[-1] == f"Sending job with identifier {jid} to DPU{many}", printed
        assert awe.prompt == "awe> "

    # the test's own set-up: the jobs end; a long job runs and another waits for it
    assert awe.type(f"_ = dpu.wait(timeout={wait}, interval=0.5)", timeout=wait + 60) == ""
    awe.type("import time")
    awe.type("blocker = dpu.run('Null', s=300, return_jobid=True)", timeout=120)
    for line in ["for _ in range(1200):", "    if dpu.poll(blocker)[0].counts.running: break",
                 "    time.sleep(0.1)"]:
        assert awe.type(line) == "" and awe.prompt == "...  "
    awe.type("", timeout=wait + 60)
    assert awe.type("dpu.poll(blocker)[0].counts.running").strip() == "1"
    awe.type("waiting = dpu.run('Null', after=blocker, return_jobid=True)", timeout=120)

    # "Jobids of jobs you submitted can be requested with this command"
    assert ast.literal_eval(awe.type(JOBIDS).strip()) == [1, 2, 3, 4, 5, 6]
    # "A concise status overview": FINISHED with the counters, 75/0/0/0/0 in the HOW-TO
    raw = awe.type(STATUS, timeout=120)
    assert re.search(rf"^\[{re.escape(current_user())}\] {STAMP} - Jobid 1 has status FINISHED ", raw, re.M)
    status = said(raw)
    for jid, (_, nproc) in enumerate(RUNS, start=1):
        assert f"Jobid {jid} has status FINISHED N/E/A/S/U {nproc}/0/0/0/0" in status, status
    assert "Jobid 5 has status RUNNING N/E/A/S/U 0/0/0/0/0" in status
    assert any(re.fullmatch(r"Jobid 6 has status QUEUED N/E/A/S/U 0/0/0/0/0", s) for s in status)
    assert [sum(s.startswith(f"Jobid {jid} has") for s in status) for jid in range(1, 7)] == [1] * 6
    assert status[-1].startswith("<status of 6 job(s): 4 FINISHED")  # an echo, not a second copy
    # "If results have been committed, returns a list of the main created objects"
    result = awe.type("[(o['class'], o['chip'], o['filter']) for o in dpu.get_job_result(2)]")
    assert said(result)[0] == "Job 2: 8 committed object(s)"
    assert ast.literal_eval(result.splitlines()[1]) == [
        ("DomeFlatFrame", f"ccd{n}", "#842") for n in range(50, 58)]
    assert said(awe.type("dpu.get_job_result(1)")) == [
        "Results of job 1 were not committed; run it again with C=1 (commit=True) to keep them", "[]"]

    # "In an active AWE session it is possible to ask the Processor to return logs"
    logs = awe.type(LOGS, timeout=120)
    header = rf"{STAMP} - {RULE}\n{STAMP} - job_status = 0\n{STAMP} - {RULE}\n"
    assert len(re.findall(header, logs)) == 25  # one per process of the four runs
    assert re.search(rf"{STAMP} - Jobid 3 process 0\n{header}(.*\n)*?{STAMP} - Using RawDomeFlatFrame "
                     r"WFI.2000-04-28_DF0_842_ccd50.fits", logs)
    assert re.search(rf"{STAMP} - Reducing RawScienceFrame WFI.2000-04-29_CDF4_B_4_845_ccd57.fits", logs)
    shown_lines = logs.splitlines()
    assert shown_lines[-1] == f"<{len(shown_lines) - 1} log lines>"  # the echo: no second copy

    # "Jobs can be cancelled from the awe-prompt": 313 is not one of ours
    assert said(awe.type(CANCEL)) == [
        "JobNotFound: no job with identifier 313; dpu.get_jobids() (shell: dpu jobids) lists yours"]
    assert awe.type(CANCEL_LOOP[0]) == "" and awe.type(CANCEL_LOOP[1]) == ""
    cancelled = said(awe.type(CANCEL_LOOP[2], timeout=120))
    for jid, (_, nproc) in enumerate(RUNS, start=1):
        assert f"Job {jid} is finished (status FINISHED N/E/A/S/U {nproc}/0/0/0/0); nothing to cancel" \
            in cancelled[jid - 1], cancelled
    assert cancelled[4].startswith("Job 5 has 1 running process(es) and none queued; nothing "
                                   "cancelled"), cancelled
    assert cancelled[5].startswith("Cancelled job 6: status "), cancelled
    assert awe.prompt == "awe> "
    assert said(awe.type("Env['dpu_name']")) == ["'local'"]  # the HOW-TO's Environment key
    awe.type("dpu.cancel_job(blocker, force=True)", timeout=120)
    assert awe.close() == 0
    assert "Traceback" not in awe.transcript


def test_the_howto_typed_at_a_terminal_on_the_local_dpu(env: Env) -> None:
    env.write_dpu(slots=2)
    with AwePrompt(env.cwd, "testlocal") as awe:
        the_howto_at_the_prompt(awe, "testlocal", wait=240)


@pytest.mark.slurm
def test_the_howto_typed_at_a_terminal_on_the_slurm_dpu(env: Env, slurm_cluster: None) -> None:
    (env.config / "testslurm.yaml").write_text(yaml.safe_dump({
        "name": "testslurm", "scheduler": "slurm", "workdir": str(env.work / "slurm"), "time_factor": 1,
        "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
        "defaults": {"mem": 100},  # the HOW-TO's lines give no dpu_mem
        "partitions": [{"name": "debug", "max_time": 86400, "max_mem": 4000}]}))
    try:
        with AwePrompt(env.cwd, "testslurm") as awe:
            the_howto_at_the_prompt(awe, "testslurm", wait=420)
    finally:
        store = Processor("testslurm", out=io.StringIO(), session_log=False)
        for job_id in store.get_jobids():  # leave the shared cluster empty
            natives = store.poll(job_id)[0].job.native_ids
            if natives:
                subprocess.run(["scancel", *natives], check=False)
        store.close()
