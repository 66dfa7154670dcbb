"""What a user at the prompt or the shell meets: echoes, fallbacks, messages."""
import io
import re

import pytest

from dpu_slurm import Processor, cli
from dpu_slurm.config import write_environment
from dpu_slurm.errors import ConfigError, OptionError


def test_a_saved_default_dpu_that_is_gone_falls_back_to_local_and_says_so(env):
    write_environment(dpu_name="gone")
    out = io.StringIO()
    dpu = Processor(out=out, session_log=False)
    assert dpu.dpu_name == "local"
    assert "Your saved default DPU 'gone' is not known any more" in out.getvalue()
    assert cli.main(["dpus"]) == 0, "dpu dpus still works to find a new one"


def test_an_unknown_dpu_given_explicitly_or_by_DPU_NAME_is_an_error(env, monkeypatch):
    with pytest.raises(ConfigError, match="unknown DPU 'nope'"):
        Processor("nope", out=io.StringIO(), session_log=False)
    monkeypatch.setenv("DPU_NAME", "nope")
    with pytest.raises(ConfigError, match="DPU_NAME"):
        Processor(out=io.StringIO(), session_log=False)


def test_prompt_echoes_are_short(env):
    env.write_dpu()
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    job_id = dpu.run("Null", return_jobid=True)
    views = dpu.wait(job_id, timeout=60)
    assert repr(views) == f"[<Jobid {job_id} FINISHED N/E/A/S/U 1/0/0/0/0>]"
    lines = dpu.get_logs(job_id)
    assert repr(lines) == f"<{len(lines)} log lines>" and len(lines) > 3


def test_calling_line_shows_the_dpu_options_given(env):
    env.write_dpu()
    out = io.StringIO()
    dpu = Processor("testlocal", out=out, session_log=False)
    dpu.run("Null", m="x", dpu_time=5, dpu_mem=300)
    assert "Calling: dpu.run('Null', m='x', dpu_time=5, dpu_mem=300)" in out.getvalue()


def test_wait_says_when_it_timed_out(env):
    env.write_dpu()
    out = io.StringIO()
    dpu = Processor("testlocal", out=out, session_log=False)
    job_id = dpu.run("Null", s=30, return_jobid=True)
    dpu.wait(job_id, timeout=0.1, interval=0.05)
    assert f"Timed out after 0.1 s; job(s) {job_id} not finished yet" in out.getvalue()
    dpu.cancel_job(job_id, force=True)


def test_command_line_option_given_twice_is_refused(env, capsys):
    assert cli.main(["run", "Null", "C=1", "C=0"]) == 2
    assert "option 'C' is given twice" in capsys.readouterr().err


def test_null_with_no_process_is_refused(env):
    dpu = Processor(out=io.StringIO(), session_log=False)
    with pytest.raises(OptionError, match="count must be at least 1"):
        dpu.run("Null", n=0)


def test_cancel_of_a_job_that_was_never_submitted_says_so(env):
    env.write_dpu()
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    job_id = dpu._store.record("testlocal", "alice", "Null", {}, {}, 1, 1)
    dpu._store.not_submitted(job_id, "sbatch refused it: invalid partition")
    outcome = dpu.cancel(job_id)
    assert re.match(f"Job {job_id} was never submitted .*invalid partition.*nothing to cancel", outcome.line)
    assert dpu.cancel_job(job_id) is None  # the seed's call: a line, no exception


def test_jobs_on_another_dpu_share_one_session_per_dpu(env):
    env.write_dpu(name="first")
    env.write_dpu(name="second")
    dpu = Processor("first", out=io.StringIO(), session_log=False)
    job_id = dpu.run("Null", return_jobid=True)
    dpu.select_dpu("second")
    job = dpu._store.job(job_id)
    assert dpu._session_for(job) is dpu._session_for(job), "one connection per DPU, not per call"
    assert dpu.wait([job_id], timeout=60)[0].ok
    dpu.close()
