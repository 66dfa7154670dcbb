"""The HOW-TO (shared/seed/dpu-howto.txt) to the letter: its own lines typed at `dpu shell`."""
from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import List

import pytest
import yaml

import dpu_slurm.processor as processor_module
from dpu_slurm import cli
from dpu_slurm.config import current_user, environment_file
from dpu_slurm.errors import ConfigError, OptionError, SequenceError
from dpu_slurm.processor import Processor
from tests.conftest import REPO, Env, Session
from tests.test_catalog import SEED_HOTPIXELS, SEED_SHOW

STAMP = r"\d\d:\d\d:\d\d"
PREFIX = re.compile(rf"^\[[^\]]+\] {STAMP} - ")
RULE = "+" * 44

# Lines copied from the HOW-TO as they stand there (after its "awe> " prompt).
SEED_IDENTIFIERS = "dpu.get_sequence_identifiers()"
SEED_OPTIONS = "dpu.get_sequence_options('HotPixels')"
SEED_SHOW_OPTIONS = "dpu.show_sequence_options('HotPixels')"
SEED_JOBIDS = "dpu.get_jobids()"
SEED_CANCEL_LOOP = "for jobid in dpu.get_jobids(): dpu.cancel_job(jobid)"  # the completion
SEED_LOGS = "dpu.get_logs()"
SEED_CANCEL = "dpu.cancel_job(313)"
SEED_STATUS = "dpu.get_status()"


def shell(env: Env, lines: List[str], timeout: float = 120,
          dpu: str = "testlocal") -> subprocess.CompletedProcess[str]:
    """`dpu shell --dpu DPU` with these lines typed, one by one, then end of input."""
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", dpu],
                          input="\n".join(lines) + "\n", cwd=env.cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc


def messages(text: str) -> List[str]:
    """The printed lines without the prompts and the ``[user] HH:MM:SS - `` prefix."""
    return [PREFIX.sub("", re.sub(r"^(awe> |\.\.\.  )+", "", line)) for line in text.splitlines()]


def test_the_seeds_lines_typed_at_the_awe_prompt_behave_as_the_howto_says(env: Env) -> None:
    env.write_dpu(slots=1)
    proc = shell(env, [
        SEED_IDENTIFIERS,
        "dpu.get_dpu_identifiers()",
        SEED_OPTIONS,
        SEED_SHOW_OPTIONS,
        "dpu.show_sequence_identifiers('HotPixels')",  # the HOW-TO's (sequence identifier)
        "import time",
        "done = dpu.run('Null', m='first', return_jobid=True)",
        "_ = dpu.wait(done, timeout=60, interval=0.05)",
        "blocker = dpu.run('Null', s=60, return_jobid=True)",
        "queued = dpu.run('Null', n=2, return_jobid=True)",
        "while dpu.wait(blocker, timeout=0)[0].counts.running == 0: time.sleep(0.05)",
        "",
        SEED_JOBIDS,
        SEED_CANCEL_LOOP,
        "",
        SEED_LOGS,
        SEED_STATUS,
        "Env['dpu_name']",
        SEED_CANCEL,
        "print('STILL HERE')",
        "dpu.cancel_job(blocker, force=True)",
    ])
    out = proc.stdout
    said = messages(out)
    # the banner, then the awe> prompt of the HOW-TO
    assert "               Welcome to the Astro-WISE Environment" in said
    assert said.index("Importing Astro-WISE packages. Please wait...") < \
        said.index("Initializing Distributed Processing Unit...") < said.index("Current profile:")
    assert f"- username : {current_user()}" in said
    assert f"awe> {SEED_HOTPIXELS!r}" in out  # get_sequence_options echoes the HOW-TO's list
    assert "awe> ['Null', 'ReadNoise', 'Bias', 'HotPixels', 'DomeFlat', 'Reduce', 'Null>Null', " \
           "'Bias>HotPixels', 'Bias>ReadNoise']" in out
    assert "awe> ['local', 'testlocal']" in out
    assert out.count("awe> ") >= 17  # every line typed at the HOW-TO's prompt
    start = said.index("Recognized options for the OptionsParser are:")
    assert said[start + 1:start + 1 + len(SEED_SHOW)] == SEED_SHOW
    hot = [m for m in said if re.match(r"HotPixels\s", m)]
    assert len(hot) == 1 and "Bias" not in hot[0]  # the filter kept HotPixels alone...
    assert said.count(SEED_SHOW[0]) == 2          # ...and printed its options as well
    assert "awe> [1, 2, 3]" in out
    # the cancel loop went through all three jobs: finished, running, queued
    assert any("Job 1 is finished (status FINISHED N/E/A/S/U 1/0/0/0/0); nothing to cancel" in m
               for m in said)
    assert any("Job 2 has 1 running process(es) and none queued; nothing cancelled" in m for m in said)
    assert any(m.startswith("Cancelled job 3: status ") for m in said)
    # get_logs() with no ids: the seed's header for the finished job
    logs = "\n".join(said)
    assert re.search(rf"{STAMP} - {re.escape(RULE)}\n{STAMP} - job_status = 0\n{STAMP} - "
                     rf"{re.escape(RULE)}\n(.*\n)*?{STAMP} - Message: first", logs)
    # get_status(): the lines once each, then an echo that is no second copy of them
    assert sum(f"Jobid {jid} has status " in out for jid in (1, 2, 3)) == 3
    assert said.count("Jobid 1 has status FINISHED N/E/A/S/U 1/0/0/0/0") == 1
    assert re.search(r"^<status of 3 job\(s\): \d FINISHED(, 1 RUNNING)?>$", "\n".join(said), re.M)
    assert "awe> 'local'" in out           # Env['dpu_name']: the default DPU (nothing saved)
    assert "JobNotFound: no job with identifier 313" in proc.stderr
    assert "Traceback" not in proc.stderr and "STILL HERE" in out


def test_the_awe_prompt_in_a_terminal(env: Env) -> None:
    """The same prompt on a real terminal (a pty), where the console reads with line editing."""
    env.write_dpu()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", "testlocal"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=env.cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"})
    os.close(slave)
    seen = b""

    def upto(marker: bytes) -> str:
        nonlocal seen
        end = time.monotonic() + 60
        while marker not in seen:
            assert time.monotonic() < end, seen.decode(errors="replace")
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 65536)
        text, _, seen = seen.partition(marker)
        return text.decode(errors="replace").replace("\r\n", "\n")

    try:
        banner = upto(b"awe> ")
        assert "Welcome to the Astro-WISE Environment" in banner and "Current profile:" in banner
        os.write(master, (SEED_OPTIONS + "\n").encode())
        assert repr(SEED_HOTPIXELS) in upto(b"awe> ")
        os.write(master, (SEED_CANCEL + "\n").encode())
        assert "JobNotFound: no job with identifier 313" in upto(b"awe> ")
        os.write(master, b"dpu.select_dpu()\n")  # the HOW-TO's line: it asks which DPU
        listing = upto(b"DPU name: ")
        assert re.search(r"\* testlocal\s+local\s+this machine", listing) and " local " in listing
        os.write(master, b"local\n")
        assert re.search(r"Selected DPU local\s+'local'", upto(b"awe> "))
        os.write(master, b"\x04")  # end of input, as a user's Ctrl-D
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_show_sequence_identifiers_filters_by_name(session: Session) -> None:
    session.dpu.show_sequence_identifiers("hot")
    listed = [m.split()[0] for m in messages(session.out.getvalue())]
    assert listed == ["HotPixels", "Bias>HotPixels"]  # a part of the name, in any case
    session.out.truncate(0)
    session.out.seek(0)
    session.dpu.show_sequence_identifiers("bias")  # a whole name: also that sequence's options
    said = messages(session.out.getvalue())
    assert [m.split()[0] for m in said[:3]] == ["Bias", "Bias>HotPixels", "Bias>ReadNoise"]
    assert said[3] == "Recognized options for the OptionsParser are:" and len(said) > 4
    session.out.truncate(0)
    session.out.seek(0)
    session.dpu.show_sequence_identifiers("Nope")
    assert messages(session.out.getvalue()) == [
        "No sequence identifier matches 'Nope'; dpu.show_sequence_identifiers() lists them all"]
    session.out.truncate(0)
    session.out.seek(0)
    session.dpu.show_sequence_identifiers()
    assert len(session.printed()) == len(session.dpu.get_sequence_identifiers())
    with pytest.raises(SequenceError, match="takes a name like 'HotPixels'"):
        session.dpu.show_sequence_identifiers(3)  # type: ignore[arg-type]


def test_get_logs_without_ids_returns_every_job_and_recent_keeps_the_24_hours(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_dpu()
    first = Processor("testlocal", out=io.StringIO(), session_log=False)
    old = first.run("Null", m="long ago", return_jobid=True)
    first.wait(old, timeout=60, interval=0.05)
    first.close()
    time.sleep(0.01)  # the next session starts after the job was created
    out = io.StringIO()
    dpu = Processor("testlocal", out=out, session_log=False)
    monkeypatch.setattr(processor_module, "RECENT", 0)  # as if the job ended more than 24 h ago
    try:
        assert "Message: long ago" in "\n".join(dpu.get_logs())      # the HOW-TO: all logs
        assert "Message: long ago" not in "\n".join(dpu.get_logs(recent=True))
        assert dpu.get_status() == []  # the status overview keeps to active and recent jobs
    finally:
        dpu.close()


def test_each_process_log_starts_with_the_seeds_header(session: Session) -> None:
    jid = session.dpu.run("Null", n=2, x=True, return_jobid=True)
    session.dpu.wait(jid, timeout=60, interval=0.05)
    lines = session.dpu.get_logs(jid)
    for idx in (0, 1):
        at = next(i for i, ln in enumerate(lines) if ln.endswith(f" - Jobid {jid} process {idx}"))
        assert [re.sub(rf"^{STAMP} - ", "", ln) for ln in lines[at + 1:at + 4]] == \
            [RULE, "job_status = 1", RULE]  # a failed task: job_status 1
    assert all(re.match(rf"^{STAMP} - ", ln) for ln in lines)


@pytest.mark.parametrize("version", ["master", "develop", "current"])
def test_dpu_aweversion_master_develop_current_on_the_local_dpu(version: str) -> None:
    dpu = Processor("local", out=io.StringIO(), session_log=False)
    try:
        jid = dpu.run("Null", m=version, dpu_aweversion=version, send_code=False, return_jobid=True)
        view = dpu.wait(jid, timeout=60, interval=0.05)[0]
        assert view.ok, view
        assert f"Message: {version}" in "\n".join(dpu.get_logs(jid, echo=False))
        with pytest.raises(OptionError, match="versions there: master, develop, current"):
            dpu.run("Null", dpu_aweversion="nightly")
    finally:
        dpu.close()


def test_env_dpu_name_reads_and_saves_the_default_dpu(env: Env) -> None:
    env.write_dpu()
    out = io.StringIO()
    dpu = Processor(out=out, session_log=False)
    Env = dpu.environment()
    assert Env["dpu_name"] == "local" and dpu.dpu_name == "local"
    Env["dpu_name"] = "testlocal"
    assert Env["dpu_name"] == "testlocal"
    assert yaml.safe_load(environment_file().read_text()) == {"dpu_name": "testlocal"}
    assert "this session keeps using DPU 'local': dpu.select_dpu('testlocal') switches it now" \
        in out.getvalue()
    fresh = Processor(out=io.StringIO(), session_log=False)
    assert fresh.dpu_name == "testlocal"  # persisted as select_dpu(persist=True) does
    with pytest.raises(ConfigError, match="unknown DPU 'nope'"):
        Env["dpu_name"] = "nope"
    with pytest.raises(ConfigError, match="Env has no setting 'dpu_nmae'; settings: dpu_name"):
        Env["dpu_nmae"]
    assert yaml.safe_load(environment_file().read_text()) == {"dpu_name": "testlocal"}  # unchanged
    assert repr(Env) == "Env({'dpu_name': 'testlocal'})"
    assert cli.main(["dpus"]) == 0
    dpu.close()
    fresh.close()


def test_env_in_the_shell_sets_the_default_for_the_next_session(env: Env) -> None:
    env.write_dpu()
    proc = shell(env, ["Env['dpu_name'] = 'testlocal'", "Env['dpu_name']", "Env['dpu_name'] = 'nope'"])
    assert "awe> 'testlocal'" in proc.stdout
    assert "ConfigError: unknown DPU 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert yaml.safe_load(environment_file().read_text()) == {"dpu_name": "testlocal"}


@pytest.mark.slurm
def test_the_seeds_lines_at_the_awe_prompt_on_the_slurm_dpu(env: Env, slurm_cluster: None) -> None:
    (env.config / "testslurm.yaml").write_text(yaml.safe_dump({
        "name": "testslurm", "scheduler": "slurm", "workdir": str(env.work / "slurm"), "time_factor": 1,
        "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
        "partitions": [{"name": "debug", "max_time": 86400, "max_mem": 4000}]}))
    try:
        proc = shell(env, [
            "done = dpu.run('Null', m='on slurm', dpu_mem=100, return_jobid=True)",
            "_ = dpu.wait(done, timeout=120, interval=0.5)",
            "long = dpu.run('Null', s=300, dpu_mem=100, return_jobid=True)",
            SEED_JOBIDS,
            SEED_STATUS,
            SEED_CANCEL_LOOP,
            "",
            SEED_LOGS,
            SEED_CANCEL,
            "dpu.cancel_job(long, force=True)",
        ], timeout=300, dpu="testslurm")
    finally:
        store = Processor("testslurm", out=io.StringIO(), session_log=False)
        for job_id in store.get_jobids():  # leave the shared cluster empty
            natives = store.poll(job_id)[0].job.native_ids
            if natives:
                subprocess.run(["scancel", *natives], check=False)
        store.close()
    said = messages(proc.stdout)
    assert "awe> [1, 2]" in proc.stdout
    assert "Jobid 1 has status FINISHED N/E/A/S/U 1/0/0/0/0" in said
    assert any("Job 1 is finished (status FINISHED N/E/A/S/U 1/0/0/0/0); nothing to cancel" in m
               for m in said)
    assert any(m.startswith(("Cancelled job 2", "Job 2 has 1 running process(es)")) for m in said)
    logs = "\n".join(said)
    assert re.search(rf"{STAMP} - {re.escape(RULE)}\n{STAMP} - job_status = 0\n{STAMP} - "
                     rf"{re.escape(RULE)}\n(.*\n)*?{STAMP} - Message: on slurm", logs)
    assert "JobNotFound: no job with identifier 313" in proc.stderr and "Traceback" not in proc.stderr


def test_get_jobids_everywhere_lists_the_jobs_of_your_other_stores_from_the_job_index(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_dpu()
    here = Processor("testlocal", out=io.StringIO(), session_log=False)
    mine = here.run("Null", return_jobid=True)
    monkeypatch.setenv("DPU_HOME", str(env.root / "other-machine"))  # another store, same DPU
    there = Processor("testlocal", out=io.StringIO(), session_log=False)
    theirs = [there.run("Null", m=str(i), return_jobid=True) for i in range(3)]
    there.close()
    assert theirs == [1, 2, 3] and mine == 1
    try:
        assert here.get_jobids() == [1]                      # this machine's store
        assert here.get_jobids(everywhere=True) == [1, 2, 3]  # what the DPU's index holds of yours
    finally:
        here.close()
