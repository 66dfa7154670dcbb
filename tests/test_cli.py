"""The `dpu` command: every subcommand, --json output and the exit codes 0 / 1 / 2."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, List

import pytest
import yaml

from dpu_slurm import cli
from dpu_slurm.config import current_user, environment_file
from tests.conftest import REPO, Env, wait_until

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def testlocal(env: Env) -> None:
    env.write_dpu()


def run_json(capsys: Capture, argv: List[str], code: int = 0) -> Any:
    assert cli.main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    return json.loads(captured.out)


def submit(capsys: Capture, *args: str) -> int:
    return int(run_json(capsys, ["run", "--dpu", "testlocal", *args])["jobid"])


def test_run_wait_ok_is_exit_0_with_counters(capsys: Capture) -> None:
    [view] = run_json(capsys, ["run", "--dpu", "testlocal", "--wait", "ReadNoise", "i=WFI", "c=ccd51",
                               "date=2000-04-28"])
    assert view["status"] == "FINISHED" and view["ok"] is True
    assert view["counters"] == {"N": 1, "E": 0, "A": 0, "S": 0, "U": 0}
    assert (view["sequence"], view["processes"], view["dpu"]) == ("ReadNoise", 1, "testlocal")


def test_run_wait_of_a_failing_job_is_exit_1(capsys: Capture) -> None:
    assert cli.main(["run", "--dpu", "testlocal", "--wait", "Null>Null", "x=1"]) == 1
    out = capsys.readouterr().out
    assert re.search(r" - Jobid \d+ has status FINISHED N/E/A/S/U 0/1/0/1/0$", out, re.M)


def test_run_options_go_through_the_options_parser(capsys: Capture) -> None:
    # strings from the shell: n -> int, fail -> bool, p -> dict; --time/--mem are dpu_time/dpu_mem
    jid = submit(capsys, "Null", "n=2", "fail=false", "--time", "5", "--mem", "500")
    from dpu_slurm.session import open_store
    store = open_store()
    job = store.job(jid)
    store.close()
    assert (job.nproc, job.options["count"], job.options["fail"]) == (2, 2, False)
    assert job.dpu_options["dpu_time"] == 5 and job.dpu_options["dpu_mem"] == 500


def test_status_jobids_logs_result(capsys: Capture) -> None:
    [view] = run_json(capsys, ["run", "--dpu", "testlocal", "--wait", "Null", "m=hello cli", "C=1"])
    jid = view["jobid"]
    assert run_json(capsys, ["jobids", "--dpu", "testlocal"]) == [jid]
    [status] = run_json(capsys, ["status", "--dpu", "testlocal", str(jid)])
    assert status["counters"]["N"] == 1 and status["jobid"] == jid
    logs = run_json(capsys, ["logs", "--dpu", "testlocal", str(jid)])
    assert all(re.match(r"^\d\d:\d\d:\d\d - ", line) for line in logs)
    assert any("Message: hello cli" in line for line in logs)
    def unstamped(lines: List[str]) -> List[str]:  # the header's stamp is the time of reading
        return [line[11:] for line in lines]
    assert unstamped(run_json(capsys, ["logs", "--dpu", "testlocal"])) == unstamped(logs)  # all jobs
    assert unstamped(run_json(capsys, ["logs", "--dpu", "testlocal", "--recent"])) == unstamped(logs)
    assert run_json(capsys, ["result", "--dpu", "testlocal", str(jid)]) == [
        {"class": "Null", "process": 0, "message": "hello cli"}]

    # without --json: the seed's printed lines
    assert cli.main(["status", "--dpu", "testlocal", str(jid)]) == 0
    assert re.search(rf"^\[\S+\] \d\d:\d\d:\d\d - Jobid {jid} has status FINISHED N/E/A/S/U 1/0/0/0/0$",
                     capsys.readouterr().out, re.M)
    assert cli.main(["jobids", "--dpu", "testlocal"]) == 0
    assert capsys.readouterr().out.split() == [str(jid)]


def test_wait_blocks_until_the_job_finished(capsys: Capture) -> None:
    jid = submit(capsys, "Null", "s=0.3")
    [view] = run_json(capsys, ["wait", "--dpu", "testlocal", str(jid), "--timeout", "30"])
    assert (view["status"], view["counters"]["N"]) == ("FINISHED", 1)
    slow = submit(capsys, "Null", "s=20")
    assert cli.main(["wait", "--dpu", "testlocal", str(slow), "--timeout", "0.2"]) == 3  # timed out
    assert cli.main(["cancel", "--dpu", "testlocal", "--force", str(slow)]) == 0


def test_result_of_an_uncommitted_job_is_empty_and_exit_1(capsys: Capture) -> None:
    [view] = run_json(capsys, ["run", "--dpu", "testlocal", "--wait", "Null"])
    assert cli.main(["result", "--dpu", "testlocal", str(view["jobid"])]) == 1
    assert "were not committed" in capsys.readouterr().out


def test_cancel_queued_and_forced(capsys: Capture, env: Env) -> None:
    env.write_dpu(slots=1)
    blocker = submit(capsys, "Null", "s=20")
    from dpu_slurm.processor import Processor
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    wait_until(lambda: dpu.wait(blocker, timeout=0)[0].counts.running == 1)
    queued = submit(capsys, "Null")
    cancelled = run_json(capsys, ["cancel", "--dpu", "testlocal", str(queued)])
    assert cancelled == {"cancelled": [queued], "left": []}
    assert cli.main(["cancel", "--dpu", "testlocal", str(blocker)]) == 2  # running: refused
    assert "force" in capsys.readouterr().err
    assert cli.main(["cancel", "--dpu", "testlocal", "--force", str(blocker)]) == 0
    capsys.readouterr()
    views = run_json(capsys, ["status", "--dpu", "testlocal", str(blocker), str(queued)], code=1)
    assert {v["jobid"]: v["counters"] for v in views} == {
        blocker: {"N": 0, "E": 0, "A": 1, "S": 0, "U": 0},
        queued: {"N": 0, "E": 0, "A": 0, "S": 1, "U": 0}}
    dpu.close()


def test_sequences_options_dpus(capsys: Capture) -> None:
    seqs = run_json(capsys, ["sequences"])
    assert "ReadNoise" in seqs and "Bias>HotPixels" in seqs
    assert run_json(capsys, ["options", "HotPixels"]) == [
        ["i", "c", "d", "tpl", "p", "C", "instrument", "chip", "date", "template", "pars", "commit"]]
    listed = run_json(capsys, ["dpus"])
    assert [d["name"] for d in listed] == ["local", "testlocal"]
    assert [d["scheduler"] for d in listed] == ["local", "local"]
    assert [d["current"] for d in listed] == [True, False]
    assert cli.main(["options", "HotPixels"]) == 0
    shown = capsys.readouterr().out
    assert re.search(r'^"tpl" or "template" \(default: None\)$', shown, re.M)
    assert "template name" not in shown  # the help text only with --verbose
    assert cli.main(["options", "HotPixels", "--verbose"]) == 0
    assert re.search(r'^"tpl" or "template" \(default: None\)\n    template name$',
                     capsys.readouterr().out, re.M)
    assert cli.main(["dpus", "--dpu", "testlocal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.search(r" - \* testlocal\s+local\s+this machine", ln) for ln in lines)  # current marked
    assert cli.main(["sequences"]) == 0
    assert "Bias>HotPixels" in capsys.readouterr().out


def test_select_saves_the_default_dpu(capsys: Capture) -> None:
    assert run_json(capsys, ["select", "testlocal"]) == {"dpu": "testlocal"}
    assert yaml.safe_load(environment_file().read_text()) == {"dpu_name": "testlocal"}
    jid = int(run_json(capsys, ["run", "Null"])["jobid"])  # no --dpu: the saved one
    assert run_json(capsys, ["jobids", "--dpu", "testlocal"]) == [jid]
    assert run_json(capsys, ["jobids", "--dpu", "local"]) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--dpu", "testlocal", "ReadNoice"], "did you mean 'ReadNoise'"),
    (["run", "--dpu", "testlocal", "ReadNoise", "i=WFI", "bogus=1"], "valid options"),
    (["run", "--dpu", "testlocal", "ReadNoise", "i=WFI", "notkeyvalue"], "is not KEY=VALUE"),
    (["run", "--dpu", "testlocal", "Null", "n=many"], "takes an int"),
    (["run", "--dpu", "nosuch", "Null"], "unknown DPU 'nosuch'"),
    (["status", "--dpu", "testlocal", "4242"], "no job with identifier 4242"),
    (["options", "Nul"], "did you mean 'Null'"),
])
def test_usage_and_config_errors_are_exit_2_with_a_message(capsys: Capture, argv: List[str],
                                                           message: str) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert cli.main([*argv, "--json"]) == 2
    assert message in json.loads(capsys.readouterr().out)["error"]


def test_a_bad_config_file_on_the_path_is_exit_2_for_it(capsys: Capture, env: Env) -> None:
    (env.config / "bad.yaml").write_text("name: bad\nscheduler: foo\n")
    assert cli.main(["status", "--dpu", "bad"]) == 2
    assert "bad.yaml:2: scheduler: is 'foo'" in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["frobnicate"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", "not-a-number"])
    assert exit_.value.code == 2


def test_the_module_entry_point_exits_with_the_code(env: Env) -> None:
    cmd = [sys.executable, "-m", "dpu_slurm.cli"]
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([*cmd, "sequences", "--json"], cwd=env.cwd, env=environ, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "Null>Null" in json.loads(ok.stdout)
    bad = subprocess.run([*cmd, "options", "Nope"], cwd=env.cwd, env=environ, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("dpu: error: unknown sequence 'Nope'")


def test_shell_prints_the_banner_and_gives_a_ready_dpu(env: Env) -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", "testlocal"],
                          input="print('IDS', dpu.get_sequence_identifiers()[:2])\n", cwd=env.cwd,
                          env=environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Welcome to the Astro-WISE Environment" in proc.stdout
    assert "Initializing Distributed Processing Unit..." in proc.stdout
    assert "IDS ['Null', 'ReadNoise']" in proc.stdout
    assert f"- username : {current_user()}\n- DPU      : testlocal (local, this machine)" in proc.stdout
    assert "awe> IDS" in proc.stdout  # the HOW-TO's prompt


def test_cleanup_removes_old_unused_bundles_and_keeps_the_rest(capsys: Capture, env: Env) -> None:
    """`dpu cleanup` goes through the Processor's public cleanup (no private session access)."""
    bundles = env.work / "testlocal" / "bundles"
    old, new = bundles / ("0" * 64), bundles / ("1" * 64)
    for folder in (old, new):
        folder.mkdir(parents=True)
    os.utime(old, (time.time() - 30 * 86400,) * 2)
    assert run_json(capsys, ["cleanup", "--dpu", "testlocal", "--days", "7"]) == {"removed": [old.name]}
    assert new.is_dir() and not old.exists()


def test_shell_session_keeps_its_log_file_and_one_shot_commands_do_not(env: Env) -> None:
    env.write_dpu()
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "sequences", "--dpu", "testlocal"],
                   cwd=env.cwd, env=environ, capture_output=True, text=True, timeout=60, check=True)
    assert list(env.cwd.glob("*.log")) == []
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", "testlocal"],
                          input="dpu.run('Null')\n", cwd=env.cwd, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    logs = list(env.cwd.glob("[0-9]*_[0-9]*.log"))
    assert len(logs) == 1
    assert "Sending job with identifier 1 to DPU" in logs[0].read_text()


def test_a_bad_value_at_the_shell_prompt_is_one_line_not_a_traceback(env: Env) -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", "testlocal"],
                          input="dpu.run('Null', s=float('inf'))\ndpu.run('Null', dpu_mem=0.5)\n"
                                "print('STILL', dpu.get_jobids())\n",
                          cwd=env.cwd, env=environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "OptionError: option 's'/'sleep': must be a finite number, got inf" in proc.stderr
    assert "OptionError: dpu_mem must be a positive number of MB from 16" in proc.stderr
    assert "Traceback" not in proc.stderr and "STILL []" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["Null", "s=inf"], "option 's'/'sleep': must be a finite number, got inf"),
    (["Null", "s=nan"], "option 's'/'sleep': must be a finite number, got nan"),
    (["Null", "s=1e308"], "the tasks' estimate for these options is 1e+308 s"),
    (["--time", "1e308", "Null"], "dpu_time must be a positive number of seconds, at most 31536000"),
    (["--time", "nan", "Null"], "dpu_time must be a positive number of seconds"),
    (["--mem", "1e18", "Null"], "dpu_mem must be a positive number of MB from 16 to 67108864"),
    (["--mem", "0.5", "Null"], "dpu_mem must be a positive number of MB from 16 to 67108864 (64 TB); "
                               "got 0.5"),
])
def test_numbers_out_of_bounds_are_exit_2_with_a_message_and_nothing_recorded(
        capsys: Capture, args: List[str], message: str) -> None:
    assert cli.main(["run", "--dpu", "testlocal", *args]) == 2  # was a traceback (or a doomed job)
    err = capsys.readouterr().err
    assert err.startswith("dpu: error: ") and message in err and "Traceback" not in err
    assert run_json(capsys, ["jobids", "--dpu", "testlocal"]) == []
