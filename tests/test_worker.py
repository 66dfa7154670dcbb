"""The worker, run as the scheduler runs it: ``python -m dpu_slurm.worker JOBDIR INDEX``."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.conftest import REPO, wait_until

LINE = re.compile(r"^\d\d:\d\d:\d\d - ")

TASKS = """\
import os, time

def ok(ctx):
    ctx.log(f"hello from {ctx.task} process {ctx.index} value {ctx.options['value']}")
    return [{"task": ctx.task, "index": ctx.index, "value": ctx.options["value"]}]

def boom(ctx):
    raise ValueError("boom in " + ctx.task)

def multiline(ctx):
    ctx.log("first\\nsecond")
    return None

def not_json(ctx):
    return [object()]

def exits(ctx):
    import sys
    sys.exit(0)

def one_dict(ctx):
    return {"single": ctx.index}

def a_string(ctx):
    return "not a list"

def sleepy(ctx):
    time.sleep(float(ctx.options.get("sleep", 30)))
    return []
"""


def make_job(tmp_path: Path, tasks: List[Dict[str, str]], options: Optional[Dict[str, Any]] = None,
             processes: Optional[List[Dict[str, Any]]] = None) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "wtasks.py").write_text(TASKS)
    (lib / "broken_import.py").write_text("import no_such_module_for_dpu_tests\n")
    (lib / "broken_syntax.py").write_text("def f(:\n")
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    job = {"job_id": 42, "user": "alice", "dpu": "testlocal",
           "sequence": ">".join(t["name"] for t in tasks), "tasks": tasks,
           "options": {"value": 1, "commit": False, **(options or {})},
           "processes": processes or [{}]}
    (jobdir / "job.json").write_text(json.dumps(job))
    return jobdir


def run_worker(tmp_path: Path, jobdir: Path, index: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "lib")]))
    return subprocess.run([sys.executable, "-m", "dpu_slurm.worker", str(jobdir), str(index)],
                          env=env, capture_output=True, text=True, timeout=60)


def outputs(jobdir: Path, index: int = 0) -> tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    pdir = jobdir / "p" / str(index)
    status = json.loads((pdir / "status.json").read_text())
    result = json.loads((pdir / "result.json").read_text())
    return status, result, (pdir / "log").read_text().splitlines()


def test_a_good_chain_ends_N_and_every_log_line_is_stamped(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:ok"}, {"name": "B", "run": "wtasks:multiline"}])
    proc = run_worker(tmp_path, jobdir)
    assert proc.returncode == 0, proc.stderr
    status, result, log = outputs(jobdir)
    assert status["state"] == "DONE" and status["tasks"] == ["N", "N"]
    assert status["started"] <= status["ended"]
    assert all(LINE.match(line) for line in log), log
    text = [LINE.sub("", line) for line in log]
    assert "hello from A process 0 value 1" in text
    assert text[-1] == "job_status = 0"
    assert "first" in text and "second" in text  # a multi-line message: each line stamped
    assert result == {"committed": False, "objects": [], "count": 1}


def test_results_are_kept_only_when_committed(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:ok"}], options={"commit": True})
    assert run_worker(tmp_path, jobdir).returncode == 0
    _, result, _ = outputs(jobdir)
    assert result == {"committed": True, "objects": [{"task": "A", "index": 0, "value": 1}], "count": 1}
    assert not list((jobdir / "p" / "0").glob(".*.tmp"))  # atomic writes leave no temp files


def test_process_overrides_reach_their_process_only(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:ok"}], options={"commit": True},
                      processes=[{"value": 10}, {"value": 20}])
    assert run_worker(tmp_path, jobdir, 1).returncode == 0
    _, result, _ = outputs(jobdir, 1)
    assert result["objects"] == [{"task": "A", "index": 1, "value": 20}]
    assert not (jobdir / "p" / "0").exists()


def test_a_failing_first_task_is_E_and_the_rest_S(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:boom"}, {"name": "B", "run": "wtasks:ok"},
                                 {"name": "C", "run": "wtasks:ok"}])
    proc = run_worker(tmp_path, jobdir)
    assert proc.returncode == 1
    status, result, log = outputs(jobdir)
    assert status["tasks"] == ["E", "S", "S"]
    assert status["reason"] == "task A failed: ValueError: boom in A"
    text = "\n".join(log)
    assert "Traceback (most recent call last)" in text and "ValueError: boom in A" in text
    assert "hello from B" not in text
    assert all(LINE.match(line) for line in log)
    assert log[-1].endswith("job_status = 1")
    assert result["count"] == 0


def test_a_failing_later_task_keeps_the_earlier_results_count(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:ok"}, {"name": "B", "run": "wtasks:boom"}],
                      options={"commit": True})
    assert run_worker(tmp_path, jobdir).returncode == 1
    status, result, _ = outputs(jobdir)
    assert status["tasks"] == ["N", "E"]
    assert result["objects"] == [{"task": "A", "index": 0, "value": 1}]


@pytest.mark.parametrize(("module", "error"), [("broken_import", "ModuleNotFoundError"),
                                               ("broken_syntax", "SyntaxError"),
                                               ("no_such_task_module", "ModuleNotFoundError")])
def test_a_task_module_that_fails_to_import_ends_E_with_the_traceback(tmp_path: Path, module: str,
                                                                       error: str) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": f"{module}:run"}, {"name": "B", "run": "wtasks:ok"}])
    proc = run_worker(tmp_path, jobdir)
    assert proc.returncode == 1
    status, _, log = outputs(jobdir)
    assert status["tasks"] == ["E", "S"]
    text = "\n".join(log)
    assert "Traceback" in text and error in text


def test_a_missing_task_function_ends_E(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:nope"}])
    assert run_worker(tmp_path, jobdir).returncode == 1
    status, _, log = outputs(jobdir)
    assert status["tasks"] == ["E"] and "AttributeError" in "\n".join(log)


def test_results_that_are_not_json_end_E(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:not_json"}])
    assert run_worker(tmp_path, jobdir).returncode == 1
    status, _, _ = outputs(jobdir)
    assert status["tasks"] == ["E"] and "not JSON" in status["reason"]


def test_sys_exit_in_a_task_is_E_and_the_records_are_still_written(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:exits"}, {"name": "B", "run": "wtasks:ok"}])
    assert run_worker(tmp_path, jobdir).returncode == 1
    status, result, log = outputs(jobdir)
    assert (status["state"], status["tasks"]) == ("DONE", ["E", "S"])
    assert "SystemExit" in "\n".join(log) and result["count"] == 0


def test_a_single_dict_result_is_one_object_and_a_string_is_an_error(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:one_dict"}], options={"commit": True})
    assert run_worker(tmp_path, jobdir).returncode == 0
    assert outputs(jobdir)[1]["objects"] == [{"single": 0}]
    other = tmp_path / "other"
    other.mkdir()
    jobdir = make_job(other, [{"name": "A", "run": "wtasks:a_string"}], options={"commit": True})
    assert run_worker(other, jobdir).returncode == 1
    status, result, _ = outputs(jobdir)
    assert status["tasks"] == ["E"] and "returned a str" in status["reason"]
    assert result["objects"] == []


def test_sigterm_ends_the_running_task_A_and_the_rest_S(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:sleepy"}, {"name": "B", "run": "wtasks:ok"}])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "lib")]))
    proc = subprocess.Popen([sys.executable, "-m", "dpu_slurm.worker", str(jobdir), "0"], env=env)
    status_file = jobdir / "p" / "0" / "status.json"
    wait_until(lambda: status_file.exists() and json.loads(status_file.read_text())["tasks"][0] == "RUNNING")
    proc.terminate()
    assert proc.wait(timeout=10) == 1
    status, _, _ = outputs(jobdir)
    assert status["state"] == "DONE" and status["tasks"] == ["A", "S"]
    assert "SIGTERM" in status["reason"]


def test_usage_error_without_arguments(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.worker"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_the_worker_imports_nothing_outside_the_standard_library() -> None:
    # It travels alone in the bundle: only bundle.WORKER_FILES are shipped.
    code = ("import sys; import dpu_slurm.worker; "
            "print(sorted(m for m in sys.modules if m.startswith('dpu_slurm')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    shipped = ["prereq", "proclock", "reaper", "requeue", "worker"]
    assert out.stdout.strip() == str(["dpu_slurm", *[f"dpu_slurm.{m}" for m in shipped]])
    from dpu_slurm.bundle import WORKER_FILES
    assert set(WORKER_FILES) == {"__init__.py", *[f"{m}.py" for m in shipped]}
