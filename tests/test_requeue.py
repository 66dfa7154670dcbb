"""Issue 13, must-have 3 without a scheduler: the worker's checkpoint callback, its requeue on the
warning signal up to requeue.max, the lock that keeps a second copy out, and how a poll shows a
requeued process (queued, its attempts in the history, never A)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from dpu_slurm.config import load_file
from dpu_slurm.proclock import LockRefused, ProcessLock
from dpu_slurm.schedulers.base import Observation
from dpu_slurm.states import ObsState, ProcState
from dpu_slurm.status import Record, _parse, decide
from dpu_slurm.store import Store
from tests.conftest import REPO, wait_until
from tests.test_worker import make_job

# A task counting to `until`, one step per 20 ms, its progress in a file the test watches;
# it resumes from its checkpoint and says where.
CTASKS = """\
import time

def count(ctx):
    box = [ctx.resumed or {"i": 0}]
    ctx.log(f"resumed at step {box[0]['i']}" if ctx.resumed else "fresh start")
    ctx.on_checkpoint(lambda: box[0])
    progress = ctx.workdir / "progress"
    until = int(ctx.options.get("until", 100000))
    while box[0]["i"] < until:
        time.sleep(0.02)
        box[0] = {"i": box[0]["i"] + 1}
        progress.write_text(str(box[0]["i"]))
    return [{"i": box[0]["i"], "attempt": ctx.attempt}]

def first(ctx):
    return [{"first": ctx.attempt}]

def broken_checkpoint(ctx):
    def bad():
        raise RuntimeError("no state")
    ctx.on_checkpoint(bad)
    (ctx.workdir / "progress").write_text("5")
    time.sleep(60)
"""


def job(tmp_path: Path, tasks: Any = None, **options: Any) -> Path:
    jobdir = make_job(tmp_path, tasks or [{"name": "Count", "run": "ctasks:count"}],
                      options={"commit": True, **options})
    (tmp_path / "lib" / "ctasks.py").write_text(CTASKS)
    return jobdir


def start(tmp_path: Path, jobdir: Path, how: str = "sge", most: int = 3) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "lib")]),
               DPU_REQUEUE=how, DPU_REQUEUE_MAX=str(most))
    return subprocess.Popen([sys.executable, "-m", "dpu_slurm.worker", str(jobdir), "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def status(jobdir: Path) -> Dict[str, Any]:
    return json.loads((jobdir / "p" / "0" / "status.json").read_text())


def progress(jobdir: Path) -> int:
    path = jobdir / "p" / "0" / "work" / "progress"
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def warn_when_started(proc: subprocess.Popen[str], jobdir: Path, sig: int = signal.SIGUSR1) -> int:
    """Send the warning once the task made some progress; the worker's exit status."""
    wait_until(lambda: progress(jobdir) >= 3, timeout=30)
    proc.send_signal(sig)
    return proc.wait(timeout=30)


def test_a_warned_process_checkpoints_requeues_and_its_next_attempt_resumes(tmp_path: Path) -> None:
    jobdir = job(tmp_path, until=200)
    first = start(tmp_path, jobdir)
    assert warn_when_started(first, jobdir) == 99   # Grid Engine requeues a job that exits 99
    between = status(jobdir)
    assert between["requeued"] is True and between["attempt"] == 2 and between["state"] == "RUNNING"
    assert [r[:2] for r in between["requeues"]] == [[1, "A"]]
    assert "requeued: SIGUSR1" in between["requeues"][0][2]
    saved = json.loads((jobdir / "p" / "0" / "checkpoint" / "task-0.json").read_text())["state"]["i"]
    assert saved >= 3
    assert not (jobdir / "p" / "0" / "result.json").exists()   # the attempt did not end
    second = start(tmp_path, jobdir)
    assert second.wait(timeout=60) == 0, second.stderr.read() if second.stderr else ""
    final = status(jobdir)
    assert final["state"] == "DONE" and final["tasks"] == ["N"] and final["attempt"] == 2
    assert len(final["requeues"]) == 1
    log = (jobdir / "p" / "0" / "log").read_text()
    assert f"resumed at step {saved}" in log and "Checkpoint of task Count saved" in log
    result = json.loads((jobdir / "p" / "0" / "result.json").read_text())
    assert result["objects"] == [{"i": 200, "attempt": 2}]
    assert not (jobdir / "p" / "0" / "checkpoint").exists()   # ended N: nothing resumes from it


def test_a_warning_before_the_first_task_is_kept_and_requeues(tmp_path: Path) -> None:
    # The worker is warned while it reads job.json (made slow by a FIFO it waits on).
    jobdir = job(tmp_path, until=5)
    real = (jobdir / "job.json").read_bytes()
    (jobdir / "job.json").unlink()
    os.mkfifo(jobdir / "job.json")
    proc = start(tmp_path, jobdir)
    opened: List[int] = []

    def reader_waits() -> bool:  # a FIFO opens for writing without blocking once a reader is there
        try:
            opened.append(os.open(jobdir / "job.json", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return False
        return True
    wait_until(reader_waits, timeout=30)
    proc.send_signal(signal.SIGUSR1)   # the worker is blocked reading job.json
    os.set_blocking(opened[0], True)
    os.write(opened[0], real)
    os.close(opened[0])
    assert proc.wait(timeout=30) == 99
    assert status(jobdir)["requeued"] is True
    assert [r[:2] for r in status(jobdir)["requeues"]] == [[1, "A"]]


def test_a_task_that_ended_N_before_the_requeue_is_not_run_again(tmp_path: Path) -> None:
    tasks = [{"name": "First", "run": "ctasks:first"}, {"name": "Count", "run": "ctasks:count"}]
    jobdir = job(tmp_path, tasks, until=100)
    assert warn_when_started(start(tmp_path, jobdir), jobdir) == 99
    assert start(tmp_path, jobdir).wait(timeout=60) == 0
    log = (jobdir / "p" / "0" / "log").read_text()
    assert "Task First ended N in an earlier attempt; not run again" in log
    result = json.loads((jobdir / "p" / "0" / "result.json").read_text())
    assert result["objects"] == [{"first": 1}, {"i": 100, "attempt": 2}]


def test_requeue_count_exhausted_ends_A_with_the_checkpoint_kept(tmp_path: Path) -> None:
    jobdir = job(tmp_path)
    assert warn_when_started(start(tmp_path, jobdir, most=1), jobdir) == 99
    (jobdir / "p" / "0" / "work" / "progress").write_text("0")
    again = start(tmp_path, jobdir, most=1)
    assert warn_when_started(again, jobdir) == 1
    final = status(jobdir)
    assert final["state"] == "DONE" and final["tasks"] == ["A"] and final["attempt"] == 2
    assert "the limit of 1 requeue(s) is reached" in final["reason"]
    assert (jobdir / "p" / "0" / "checkpoint" / "task-0.json").exists()   # a rerun resumes from it


def test_a_run_started_after_the_process_ended_does_nothing(tmp_path: Path) -> None:
    # SLURM requeues a preempted job even when its worker ended it (the limit was reached).
    jobdir = job(tmp_path, until=5)
    assert start(tmp_path, jobdir).wait(timeout=60) == 0
    pdir = jobdir / "p" / "0"
    before = [(pdir / name).read_bytes() for name in ("status.json", "result.json", "log")]
    again = start(tmp_path, jobdir)
    assert again.wait(timeout=60) == 0
    assert "already ended; this run does nothing" in (again.stderr.read() if again.stderr else "")
    assert [(pdir / name).read_bytes() for name in ("status.json", "result.json", "log")] == before


def test_where_the_scheduler_cannot_requeue_the_process_ends_A_with_its_checkpoint(tmp_path: Path) -> None:
    jobdir = job(tmp_path)
    assert warn_when_started(start(tmp_path, jobdir, how=""), jobdir) == 1
    final = status(jobdir)
    assert final["tasks"] == ["A"] and "cannot be asked to requeue" in final["reason"]
    assert (jobdir / "p" / "0" / "checkpoint" / "task-0.json").exists()


def test_sigterm_saves_the_checkpoint_too(tmp_path: Path) -> None:
    jobdir = job(tmp_path)
    assert warn_when_started(start(tmp_path, jobdir), jobdir, signal.SIGTERM) == 1
    assert status(jobdir)["tasks"] == ["A"]
    assert json.loads((jobdir / "p" / "0" / "checkpoint" / "task-0.json").read_text())["state"]["i"] >= 3


def test_a_failing_checkpoint_callback_loses_the_checkpoint_not_the_records(tmp_path: Path) -> None:
    jobdir = job(tmp_path, [{"name": "Bad", "run": "ctasks:broken_checkpoint"}])
    assert warn_when_started(start(tmp_path, jobdir), jobdir) == 99
    assert "Checkpoint of task Bad failed: RuntimeError: no state" in (jobdir / "p" / "0" / "log").read_text()
    assert status(jobdir)["requeued"] is True


def test_a_second_copy_refuses_and_leaves_the_records_alone(tmp_path: Path) -> None:
    jobdir = job(tmp_path)
    first = start(tmp_path, jobdir)
    wait_until(lambda: progress(jobdir) >= 3, timeout=30)
    pdir = jobdir / "p" / "0"
    before = (status(jobdir), (pdir / "log").read_text())
    second = start(tmp_path, jobdir)
    assert second.wait(timeout=30) == 75
    assert "not run: process already running" in (second.stderr.read() if second.stderr else "")
    assert (status(jobdir), (pdir / "log").read_text()) == before
    first.terminate()
    first.wait(timeout=30)
    assert not (pdir / "lock").exists()   # released at the end of the run


def test_a_stale_lock_of_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    import socket
    (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                               "start": "1"}))
    lock = ProcessLock(tmp_path, heartbeat=0)
    lock.acquire()
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "lock").exists()


def test_a_fresh_lock_from_another_host_refuses_and_an_old_one_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "1"}))
    with pytest.raises(LockRefused, match="already running"):
        ProcessLock(tmp_path, stale=60, heartbeat=0).acquire(wait=0)
    os.utime(tmp_path / "lock", (1, 1))   # not refreshed for ages: its holder is gone
    lock = ProcessLock(tmp_path, stale=60, heartbeat=0)
    lock.acquire(wait=0)
    lock.release()


def test_a_lock_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(LockRefused, match="cannot be read as a lock"):
        ProcessLock(tmp_path, heartbeat=0).acquire(wait=0)
    assert target.read_text() == "keep"


# -- what a poll makes of it -------------------------------------------------------------------

def record(**fields: Any) -> Optional[Record]:
    return _parse(json.dumps({"state": "RUNNING", "tasks": [None], "reason": "", **fields}).encode())


def test_a_requeued_process_is_queued_while_the_scheduler_holds_it_then_running() -> None:
    waiting = record(requeued=True, attempt=2, requeues=[[1, "A", "requeued: SIGUSR1", 5.0]])
    assert waiting is not None and waiting.requeued and waiting.attempt == 2
    queued = Observation(ObsState.QUEUED, "")
    assert decide(queued, waiting, 1, young=True)[0] == ProcState.QUEUED
    assert decide(None, waiting, 1, young=True)[0] == ProcState.QUEUED
    assert decide(Observation(ObsState.RUNNING, ""), waiting, 1, young=True)[0] == ProcState.RUNNING
    assert decide(queued, record(), 1, young=True)[0] == ProcState.RUNNING  # unchanged otherwise


@pytest.mark.parametrize("bad", [{"attempt": "2"}, {"attempt": 0}, {"requeues": [[1, "A", "x"]]},
                                 {"requeues": [["1", "A", "x", None]]}, {"requeues": "no"},
                                 {"requeues": [[1, "A", "x", 1e300]]}])
def test_hostile_attempt_fields_make_the_record_unreadable(bad: Dict[str, Any]) -> None:
    assert record(**bad) is None


def test_requeued_attempts_go_to_the_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    job_id = store.record("d", "alice", "Bias", {}, {}, 2, 1)
    rows = [[1, "A", "requeued: SIGUSR1 before preemption", 5.0]]
    assert store.follow_requeues(job_id, {0: (2, rows)}) == 1
    assert store.follow_requeues(job_id, {0: (2, rows)}) == 0   # the next poll changes nothing
    assert store.attempt_numbers(job_id) == {0: 2, 1: 1}
    assert [r[:4] for r in store.attempts(job_id)] == [
        (0, 1, "A", "requeued: SIGUSR1 before preemption"), (0, 2, "", ""), (1, 1, "", "")]


def test_the_requeue_key_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(f"name: q\nscheduler: slurm\nworkdir: {tmp_path}/w\nrequeue: {{max: 3, warn: 120}}\n")
    assert load_file(path).requeue == {"max": 3, "warn": 120}
    from dpu_slurm.errors import ConfigError
    path.write_text(f"name: q\nscheduler: slurm\nworkdir: {tmp_path}/w\nrequeue: {{max: 3, warn: 5}}\n")
    with pytest.raises(ConfigError, match=r"q\.yaml:4: requeue\.warn: 5 is out of range"):
        load_file(path)
