"""Red team of issue 13's preemption work (checkpoints, requeued records, the process lock, the
``requeue`` key) as a hostile second Unix user and as an unlucky crash.

dpumallory is simulated by files chowned to her uid in a process folder she could write (a
shared scratch whose job folders are group- or world-writable); the worker runs as this user.
Each test names its attack; the report of the red13b branch lists the outcomes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

import pytest

from dpu_slurm.config import load_file
from dpu_slurm.errors import ConfigError, DPUError
from dpu_slurm.proclock import LockRefused, ProcessLock, _read
from dpu_slurm.requeue import MAX_RECORD, Checkpoints
from dpu_slurm.schedulers import for_dpu
from dpu_slurm.schedulers.base import Observation
from dpu_slurm.states import ObsState, ProcState
from dpu_slurm.status import _follow_requeues, _parse, decide
from dpu_slurm.store import Store
from dpu_slurm.transport.local import LocalTransport
from dpu_slurm.worker import write_json
from tests.conftest import REPO, wait_until
from tests.test_golden import request
from tests.test_requeue import job, progress, start, status, warn_when_started
from tests.test_requeue_golden import config as golden_config

MALLORY_UID = 1003


def _mallory(path: Path) -> Path:
    os.chown(path, MALLORY_UID, MALLORY_UID, follow_symlinks=False)
    return path


# -- 1. planted checkpoint state --------------------------------------------------------------
def _planted(tmp_path: Path, how: str) -> Path:
    """A checkpoint folder whose task-0.json is what mallory made of it."""
    root = tmp_path / "p0"
    (root / "checkpoint").mkdir(parents=True)
    state = root / "checkpoint" / "task-0.json"
    if how == "mallory's file":
        state.write_text(json.dumps({"state": {"i": 999}}))
        _mallory(state)
        done = root / "checkpoint" / "task-0.done.json"   # "task 0 ended N: skip it"
        done.write_text(json.dumps({"objects": [{"forged": True}]}))
        _mallory(done)
    elif how == "fifo":
        os.mkfifo(state)
    elif how == "huge":
        with open(state, "w") as fh:
            fh.write('{"state": {"i": 999}, "pad": "')
            fh.truncate(MAX_RECORD + 10)
    elif how == "symlink to alice's other state":
        other = tmp_path / "older.json"
        other.write_text(json.dumps({"state": {"i": 999}}))
        state.symlink_to(other)
    elif how == "not an object":
        state.write_text("[1, 2]")
    return root


@pytest.mark.parametrize("how", ["mallory's file", "fifo", "huge", "symlink to alice's other state",
                                 "not an object"])
def test_a_planted_checkpoint_state_is_never_resumed(tmp_path: Path, how: str) -> None:
    """Held: read_own opens O_NOFOLLOW|O_NONBLOCK, checks type, owner and size."""
    points = Checkpoints(_planted(tmp_path, how))
    assert points.state(0) is None and points.done(0) is None


def test_a_checkpoint_too_big_to_read_back_is_refused_when_saved_not_lost_on_resume(tmp_path: Path) -> None:
    """Broke (fixed): a state over MAX_RECORD was saved ("Checkpoint ... saved" in the log),
    then read back as None: the next attempt started afresh without a word."""
    points = Checkpoints(tmp_path)
    with pytest.raises(ValueError, match=r"keep large state as files in ctx\.checkpoint_dir"):
        points.save(0, "x" * (MAX_RECORD + 1), write_json)
    assert points.state(0) is None and not (tmp_path / "checkpoint" / "task-0.json").exists()
    big = "y" * (MAX_RECORD - 100)
    points.save(0, big, write_json)
    assert points.state(0) == big


def _mallorys_dir(tmp_path: Path) -> Path:
    theirs = tmp_path / "mallory"
    theirs.mkdir()
    (theirs / "task-0.json").write_text(json.dumps({"state": {"i": 150}}))
    (theirs / "task-0").mkdir()
    for path in (theirs / "task-0.json", theirs / "task-0", theirs):
        _mallory(path)
    return theirs


def test_a_checkpoint_folder_planted_as_a_symlink_is_never_written_or_used(tmp_path: Path) -> None:
    """Broke (fixed): p/<idx>/checkpoint made by mallory as a symlink to her folder was
    followed: the warned task's state was saved into her folder (she reads it, and later swaps
    in an older file of alice's) and ctx.checkpoint_dir was her folder. Now refused."""
    jobdir = job(tmp_path, until=200)
    theirs = _mallorys_dir(tmp_path)
    before = sorted(p.name for p in theirs.iterdir())
    (jobdir / "p" / "0").mkdir(parents=True)
    (jobdir / "p" / "0" / "checkpoint").symlink_to(theirs)
    assert warn_when_started(start(tmp_path, jobdir), jobdir) == 99
    assert sorted(p.name for p in theirs.iterdir()) == before   # nothing of alice's went there
    log = (jobdir / "p" / "0" / "log").read_text()
    assert "Checkpoint of task Count failed: PermissionError" in log and "not a folder of yours" in log
    assert status(jobdir)["requeued"] is True   # the records are whole
    with pytest.raises(PermissionError, match="not a folder of yours"):
        Checkpoints(jobdir / "p" / "0").folder(0)
    second = start(tmp_path, jobdir)
    assert second.wait(timeout=60) == 0
    log = (jobdir / "p" / "0" / "log").read_text()
    assert "fresh start" in log and "resumed at step 150" not in log
    assert "Results of task Count not kept for a requeue" in log and status(jobdir)["tasks"] == ["N"]
    assert (jobdir / "p" / "0" / "checkpoint").is_symlink()   # clear() never follows it
    assert sorted(p.name for p in theirs.iterdir()) == before


def test_ctx_checkpoint_dir_refuses_another_users_folder(tmp_path: Path) -> None:
    """Broke (fixed): ctx.checkpoint_dir was mkdir(exist_ok=True), so a task-<n> folder of
    mallory's (or a symlink) was handed to alice's task as her own."""
    from dpu_slurm.worker import Context
    root = tmp_path / "p0" / "checkpoint"
    root.mkdir(parents=True)
    (root / "task-0").mkdir()
    _mallory(root / "task-0")
    ctx = Context(1, 0, "T", {}, tmp_path, lambda _: None, checkpoint_dir=root / "task-0")
    with pytest.raises(PermissionError, match="not a folder of yours"):
        _ = ctx.checkpoint_dir
    (root / "task-1").symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="not a folder of yours"):
        _ = Context(1, 0, "T", {}, tmp_path, lambda _: None, checkpoint_dir=root / "task-1").checkpoint_dir
    mine = Context(1, 0, "T", {}, tmp_path, lambda _: None, checkpoint_dir=root / "task-2")
    assert mine.checkpoint_dir.is_dir()


# -- 2. the process lock ------------------------------------------------------------------------
def _dead_lock(folder: Path) -> None:
    """A lock left by a killed run on this host (its pid runs no more)."""
    (folder / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 7,
                                             "start": "1", "at": 1.0}))


def test_two_copies_taking_over_one_stale_lock_never_both_hold_it(tmp_path: Path) -> None:
    """Broke (fixed): copy B judged the stale lock, copy A took it over (unlink, O_EXCL create)
    and the new lock got the freed inode number back (ext4 and tmpfs do so at once); B's
    take-over compared inode numbers only, removed A's live lock and took its own: both ran."""
    _dead_lock(tmp_path)
    late = ProcessLock(tmp_path, heartbeat=0)
    judged = _read(late.path)          # B reads the stale lock ...
    assert judged is not None
    first = ProcessLock(tmp_path, heartbeat=0)
    first.acquire(wait=0)              # ... A takes it over meanwhile ...
    late._take_over(judged)            # ... and B removes what it judged stale
    assert (tmp_path / "lock").exists(), "B removed A's live lock"
    with pytest.raises(LockRefused, match="already running"):
        ProcessLock(tmp_path, heartbeat=0).acquire(wait=0)
    first.release()
    assert not (tmp_path / "lock").exists()


@pytest.mark.parametrize("how", ["mallory's file", "fifo", "folder", "symlink to mallory's lock"])
def test_a_planted_lock_is_refused_with_what_to_do_and_never_hangs(tmp_path: Path, how: str) -> None:
    """Held: a lock that is not a regular file of this user's is refused (LockRefused, exit 75
    from the worker, records untouched) with the hint to remove it; a FIFO never blocks."""
    lock = tmp_path / "lock"
    if how == "mallory's file":
        lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "1"}))
        _mallory(lock)
    elif how == "fifo":
        os.mkfifo(lock)
    elif how == "folder":
        lock.mkdir()
    else:
        theirs = tmp_path / "theirs"
        theirs.write_text("{}")
        _mallory(theirs)
        lock.symlink_to(theirs)
    with pytest.raises(LockRefused, match="remove it"):
        ProcessLock(tmp_path, heartbeat=0).acquire(wait=0)


def test_a_worker_refused_by_a_planted_lock_leaves_the_records_alone(tmp_path: Path) -> None:
    """Held: exit 75 and not one record written (mallory's lock keeps alice's process from
    running but cannot make it run twice or change what it recorded)."""
    jobdir = job(tmp_path, until=5)
    pdir = jobdir / "p" / "0"
    pdir.mkdir(parents=True)
    (pdir / "lock").write_text("{}")
    _mallory(pdir / "lock")
    proc = start(tmp_path, jobdir)
    assert proc.wait(timeout=60) == 75
    assert "remove it and run again" in (proc.stderr.read() if proc.stderr else "")
    assert sorted(p.name for p in pdir.iterdir()) == ["lock"]


def test_a_lock_of_a_live_unrelated_process_with_another_start_time_is_taken_over(tmp_path: Path) -> None:
    """Held: the pid of a live process (here pid 1) that started at another time than the lock
    says is a reused pid, not the holder."""
    (tmp_path / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": 1, "start": "12345678901",
                                               "at": 1.0}))
    lock = ProcessLock(tmp_path, heartbeat=0)
    lock.acquire(wait=0)
    assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
    lock.release()


# -- 4. kill -9 at each step of the warning: checkpoint, requeued record, scheduler call -----
# Each patch ends the worker (SIGKILL) at one step; the steps run in this order.
KILLS = {
    "while writing the checkpoint (temp file written, not yet renamed)": """
real = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("task-0.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
""",
    "after the checkpoint, before the requeued record": """
def boom(self):
    os.kill(os.getpid(), signal.SIGKILL)
worker.Worker._requeue = boom
""",
    "while writing the requeued record (temp file written, not yet renamed)": """
real = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("status.json") and b'"requeued": true' in open(src, "rb").read():
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
""",
    "after the requeued record, before asking the scheduler": """
def boom(how):
    os.kill(os.getpid(), signal.SIGKILL)
worker.ask_scheduler = boom
""",
}


def _start_patched(tmp_path: Path, jobdir: Path, patch: str) -> subprocess.Popen[str]:
    code = "import os, signal, sys\nfrom dpu_slurm import worker\n" + patch + \
        f"\nsys.exit(worker.main([{str(jobdir)!r}, '0']))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "lib")]),
               DPU_REQUEUE="sge", DPU_REQUEUE_MAX="3")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("step", sorted(KILLS))
def test_a_worker_killed_at_each_step_of_a_requeue_leaves_records_a_poll_and_the_next_attempt_read(
        tmp_path: Path, step: str) -> None:
    """Held: every record stays whole (temp file, then rename), a poll never shows the process
    both requeued and ended N, and the next run (the scheduler requeues a killed run) ends N at
    attempt 2 with one earlier attempt, resuming from the checkpoint when it was saved."""
    jobdir = job(tmp_path, until=150)
    proc = _start_patched(tmp_path, jobdir, KILLS[step])
    wait_until(lambda: progress(jobdir) >= 3, timeout=30)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    pdir = jobdir / "p" / "0"
    raw = (pdir / "status.json").read_bytes()
    record = _parse(raw)
    assert record is not None and record.state != "DONE", raw
    for obs in (None, Observation(ObsState.QUEUED, ""), Observation(ObsState.ENDED, "A", "killed")):
        state, letters, _ = decide(obs, record, 1, young=obs is None)
        assert "N" not in letters and (state != ProcState.DONE or letters == "A"), (obs, state, letters)
    saved = pdir / "checkpoint" / "task-0.json"
    kept = json.loads(saved.read_text())["state"]["i"] if saved.exists() else None
    assert (kept is None) == step.startswith("while writing the checkpoint")
    again = start(tmp_path, jobdir)
    assert again.wait(timeout=60) == 0, again.stderr.read() if again.stderr else ""
    final = status(jobdir)
    assert final["state"] == "DONE" and final["tasks"] == ["N"] and final["attempt"] == 2
    assert [r[:2] for r in final["requeues"]] == [[1, "A"]]
    log = (pdir / "log").read_text()
    second = log.split("(attempt 2)")[-1]
    assert f"resumed at step {kept}" in second if kept is not None else "fresh start" in second
    assert json.loads((pdir / "result.json").read_text())["objects"] == [{"i": 150, "attempt": 2}]
    assert not [p.name for p in pdir.rglob(".*.tmp")] or step.startswith("while writing")


# -- 3. a hostile requeued record: the poll refuses it or keeps it bounded and clean -----------
def _rec(**fields: Any) -> bytes:
    return json.dumps({"state": "RUNNING", "tasks": [None], "reason": "", "requeued": True,
                       **fields}).encode()


REFUSED: Dict[str, Dict[str, Any]] = {
    "attempt huge": {"attempt": 10 ** 30},
    "attempt negative": {"attempt": -3},
    "attempt float": {"attempt": 2.0},
    "attempt true": {"attempt": True, "requeues": []},
    "row attempt true": {"attempt": 2, "requeues": [[True, "A", "x", None]]},
    "thousands of rows": {"attempt": 5000, "requeues": [[a, "A", "x", None] for a in range(1, 4000)]},
    "row after the current attempt": {"attempt": 3, "requeues": [[7, "A", "x", 1.0]]},
    "row of the current attempt": {"attempt": 2, "requeues": [[2, "N", "x", 1.0]]},
    "rows out of order": {"attempt": 4, "requeues": [[2, "A", "x", None], [1, "A", "x", None]]},
    "duplicate rows": {"attempt": 3, "requeues": [[1, "A", "a", None], [1, "N", "b", None]]},
    "letters not letters": {"attempt": 2, "requeues": [[1, "\x1b[2J", "x", None]]},
    "ended NaN": {"attempt": 2, "requeues": [[1, "A", "x", float("nan")]]},
    "ended negative": {"attempt": 2, "requeues": [[1, "A", "x", -1.0]]},
    "row a mapping": {"attempt": 2, "requeues": [{"attempt": 1}]},
    "nested deep": {"attempt": 2, "requeues": [[[[[[1]]]]]]},
    "requeued and ended N": {"state": "DONE", "tasks": ["N"], "attempt": 2,
                             "requeues": [[1, "A", "x", None]]},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_hostile_requeued_record_is_refused_and_the_store_keeps_no_garbage(
        tmp_path: Path, name: str) -> None:
    """Broke (fixed): an attempt 7 row of a process at attempt 3, a row of the current attempt
    (an 'N' history row for a running attempt), duplicate or unordered rows, JSON true as an
    attempt and escape sequences as letters all went into the store's history."""
    assert _parse(_rec(**REFUSED[name])) is None
    if "state" in REFUSED[name]:   # the same record without requeued: true is fine
        assert _parse(_rec(**{**REFUSED[name], "requeued": False})) is not None
    store = Store(tmp_path / "s.db")
    job_id = store.record("d", "alice", "Bias", {}, {}, 1, 1)
    assert _follow_requeues(store, {(job_id, 0): _parse(_rec(**REFUSED[name]))}) is False
    assert store.attempts(job_id) == [(0, 1, "", "", None)]


def test_a_requeued_record_with_escape_sequences_in_its_reason_is_stored_as_text(tmp_path: Path) -> None:
    """Broke (fixed): the reason of a requeue row reached the history (dpu status --attempts)
    with its control characters, obeyed by the terminal."""
    rec = _parse(_rec(attempt=2, requeues=[[1, "A", "requeued\x1b]0;owned\x07\x1b[2J", 1.0]]))
    assert rec is not None
    store = Store(tmp_path / "s.db")
    job_id = store.record("d", "alice", "Bias", {}, {}, 1, 1)
    assert _follow_requeues(store, {(job_id, 0): rec}) is True
    reasons = [r[3] for r in store.attempts(job_id)]
    assert not any("\x1b" in r or "\x07" in r for r in reasons) and any("\\x1b" in r for r in reasons)
    assert store.attempt_numbers(job_id) == {0: 2}


def test_the_longest_allowed_chain_is_kept_bounded(tmp_path: Path) -> None:
    """Held: 1000 earlier attempts, each with a 5000-character reason, are kept cut to 2000 characters."""
    rows = [[a, "A" * 200, "r" * 5000, None] for a in range(1, 1001)]
    rec = _parse(_rec(attempt=1001, requeues=rows))
    assert rec is not None and all(len(r[1]) <= 50 and len(r[2]) <= 2000 for r in rec.requeues)


# -- 5. the requeue key -------------------------------------------------------------------------
BAD_REQUEUE = {
    "{max: -1}": "requeue.max: -1 is out of range",
    "{max: 101}": "requeue.max: 101 is out of range",
    "{max: 100000000000000000000000}": "requeue.max: 100000000000000000000000 is out of range",
    "{max: '3'}": "requeue.max: must be an integer, got '3'",
    "{max: 3.5}": "requeue.max: must be an integer",
    "{max: true}": "requeue.max: must be an integer",
    "{max: .nan}": "requeue.max: must be an integer",
    "{max: 1e3}": "requeue.max: must be an integer",
    "{max: [1]}": "requeue.max: must be an integer",
    "{max: 2, warn: .inf}": "requeue.warn: must be an integer",
    "{max: 2, warn: 3601}": "requeue.warn: 3601 is out of range",
    "{max: 2, warn: -5}": "requeue.warn: -5 is out of range",
    "{max: 2, often: 1}": "unknown key",
    "3": "requeue: must be a mapping",
    "'yes'": "requeue: must be a mapping",
    "[1, 2]": "requeue: must be a mapping",
}


@pytest.mark.parametrize("value", sorted(BAD_REQUEUE))
def test_a_bad_requeue_value_is_a_config_error_with_file_and_line(tmp_path: Path, value: str) -> None:
    """Held: each bad value is a ConfigError naming the file and the line."""
    path = tmp_path / "q.yaml"
    path.write_text(f"name: q\nscheduler: slurm\nworkdir: {tmp_path}/w\nrequeue: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert str(caught.value).startswith(f"{path}:4:") and BAD_REQUEUE[value] in str(caught.value)


def test_a_bad_requeue_value_on_its_own_line_is_named_by_that_line(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(f"name: q\nscheduler: slurm\nworkdir: {tmp_path}/w\nrequeue:\n  max: 2\n  warn: 5\n")
    with pytest.raises(ConfigError, match=r"q\.yaml:6: requeue\.warn: 5 is out of range"):
        load_file(path)


def test_a_warning_longer_than_the_time_limit_is_refused_or_shortened() -> None:
    """Broke (fixed): requeue.warn was not compared with the job's time limit; SLURM sent the
    warning at once and each attempt requeued itself without work. Now at most half the limit."""
    cfg = replace(golden_config("slurm"), requeue={"max": 2, "warn": 3600})
    try:
        text = next(iter(for_dpu(cfg, LocalTransport()).scripts(request(cfg)).values()))
    except DPUError:
        return   # refused with a clear error: fine
    found = re.search(r"--signal=B:USR1@(\d+)", text)
    assert found is not None and int(found.group(1)) <= request(cfg).time_limit // 2
    assert f"DPU_REQUEUE_WARN={found.group(1)}" in text


@pytest.mark.parametrize("what", ["p/0", "p"])
def test_a_process_folder_planted_as_a_link_to_mallorys_folder_is_refused(tmp_path: Path, what: str) -> None:
    """Broke (fixed): the worker made p/<idx> with mkdir(exist_ok=True), so a link to a folder
    of mallory's (made before alice's first run where she could write) became the process
    folder: she could delete alice's lock (a second copy ran) and swap her records and
    checkpoints for older ones. Now the worker refuses it and writes nothing there."""
    jobdir = job(tmp_path, until=5)
    theirs = tmp_path / "mallory"
    theirs.mkdir()
    _mallory(theirs)
    (jobdir / "p").mkdir()
    if what == "p":
        (jobdir / "p").rmdir()
    (jobdir / what).symlink_to(theirs)
    proc = start(tmp_path, jobdir)
    assert proc.wait(timeout=60) == 1
    assert "not a folder of yours" in (proc.stderr.read() if proc.stderr else "")
    assert list(theirs.iterdir()) == []
