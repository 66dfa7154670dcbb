"""The HOW-TO (shared/seed/dpu-howto.txt) to the letter: its own lines typed at `dpu shell`."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from typing import List

import pytest
import yaml

import dpu_slurm.processor as processor_module
from dpu_slurm import cli
from dpu_slurm.config import environment_file
from dpu_slurm.errors import ConfigError, OptionError, SequenceError
from dpu_slurm.processor import Processor
from tests.awe_prompt import AwePrompt
from tests.conftest import REPO, Env, Session
from tests.test_catalog import SEED_HOTPIXELS

STAMP = r"\d\d:\d\d:\d\d"
PREFIX = re.compile(rf"^\[[^\]]+\] {STAMP} - ")
RULE = "+" * 44

# Lines copied from the HOW-TO as they stand there (after its "awe> " prompt); the whole HOW-TO
# is typed at a terminal in test_howto_pty.py.
SEED_OPTIONS = "dpu.get_sequence_options('HotPixels')"
SEED_CANCEL = "dpu.cancel_job(313)"
SEED_RUN_AS_WRITTEN = "'DomeFlat', i='WFI', d='2000-04-28', f='#842') # all CCDs"  # lost "dpu.run("


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


def test_the_awe_prompt_in_a_terminal(env: Env) -> None:
    """The prompt on a real terminal (a pty): select_dpu() asks which DPU (it needs a terminal)."""
    env.write_dpu()
    with AwePrompt(env.cwd, "testlocal") as awe:
        banner = awe.upto()
        assert "Welcome to the Astro-WISE Environment" in banner and "Current profile:" in banner
        assert repr(SEED_HOTPIXELS) in awe.type(SEED_OPTIONS)
        assert "JobNotFound: no job with identifier 313" in awe.type(SEED_CANCEL)
        os.write(awe.master, b"dpu.select_dpu()\n")  # the HOW-TO's line: it asks which DPU
        listing = awe.upto("DPU name: ")
        assert re.search(r"\* testlocal\s+local\s+this machine", listing) and " local " in listing
        assert re.search(r"Selected DPU local\s+'local'", awe.type("local"))
        assert awe.close() == 0  # end of input, as a user's Ctrl-D


def test_a_howto_line_pasted_as_it_stands_gets_the_line_it_meant(env: Env) -> None:
    env.write_dpu()
    proc = shell(env, [SEED_RUN_AS_WRITTEN, "awe> dpu.get_jobids()", "'Null', m=)", "print('ALIVE')"])
    err = proc.stderr.splitlines()
    at = err.index("SyntaxError: unmatched ')'")
    assert err[at + 1] == ("did you mean dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842')? "
                           "(the HOW-TO's run lines lost their 'dpu.run(')")
    assert "NameError: name 'awe' is not defined" in err
    assert "did you mean dpu.get_jobids()? (type the line without the awe> prompt)" in err
    assert sum("did you mean" in line for line in err) == 2  # no hint for a line that is wrong anyway
    assert "ALIVE" in proc.stdout and "Sending job" not in proc.stdout  # nothing submitted


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
