"""Inside the job: checkpoints and requeues on a scheduler's warning (standard library only; it
travels in the bundle with the worker).

With ``requeue: {max: N}`` in the DPU's file the job script asks for a warning signal before the
end (SLURM ``--signal=B:USR1@warn``, Grid Engine ``-notify``) and exports DPU_REQUEUE (how this
scheduler requeues) and DPU_REQUEUE_MAX. On the warning the worker calls the running task's
checkpoint callback (``ctx.on_checkpoint``), keeps what it returns, and has the scheduler run
the process again: SLURM by ``scontrol requeue JOB_TASK``, Grid Engine by exit status 99. The
next run is the process's next attempt and finds the saved state in ``ctx.resumed``. Where the
scheduler cannot be asked (PBS, local) or after N requeues, the process ends A with its
checkpoint kept, so a rerun (dpu.rerun or a ``retries:`` policy) resumes from it.

Between the two runs ``p/<idx>/status.json`` says ``requeued`` with the next attempt's number and
the earlier attempts of the chain, so a poll shows the process queued, never A.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

CHECKPOINT = "checkpoint"
SGE_REQUEUE_EXIT = 99   # Grid Engine puts a job that exits 99 back in the queue
MAX_RECORD = 1 << 20


def settings() -> Tuple[str, int]:
    """(how this scheduler requeues: 'slurm', 'sge', or '' for none; the most requeues) from
    the job script's environment; ('', 0) when the DPU did not ask for requeues."""
    how = os.environ.get("DPU_REQUEUE", "")
    try:
        most = max(0, int(os.environ.get("DPU_REQUEUE_MAX", "0") or 0))
    except ValueError:
        most = 0
    return (how if how in ("slurm", "sge") else ""), most


def read_own(path: Path) -> Optional[Dict[str, Any]]:
    """A JSON record of this user's from a job folder: regular file, no symlink followed, size
    capped; None when missing or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > MAX_RECORD:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = json.loads(fh.read(MAX_RECORD))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def earlier_attempts(folder: Path) -> int:
    """The highest attempt a rerun kept aside in ``attempt-<n>/`` (0: none)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    found = [int(n[8:]) for n in names if n.startswith("attempt-") and n[8:].isdigit()]
    return max(found, default=0)


def chain(folder: Path, record: Optional[Dict[str, Any]]) -> Tuple[int, List[List[Any]]]:
    """(this run's attempt number, the earlier attempts of its requeue chain as [attempt,
    letters, reason, ended]) from the status record left in the process folder. A record still
    RUNNING means the scheduler requeued a run that was killed before it could say so."""
    if record is None or record.get("state") == "DONE":
        return earlier_attempts(folder) + 1, []
    given = record.get("attempt")
    attempt = given if isinstance(given, int) and given > 0 else 1
    rows = [r for r in record.get("requeues") or [] if isinstance(r, list) and len(r) == 4]
    if record.get("requeued"):
        return attempt, rows
    letters = "".join("A" if t == "RUNNING" else (t if t in ("N", "E", "A", "S") else "S")
                      for t in record.get("tasks") or [])
    return attempt + 1, [*rows, [attempt, letters or "A", "requeued by the scheduler: the run was killed",
                                 None]]


def ask_scheduler(how: str) -> Tuple[bool, str]:
    """Have the scheduler run this process again: (done, what happened, in words)."""
    if how == "sge":
        return True, f"exit status {SGE_REQUEUE_EXIT} (Grid Engine requeues the task)"
    if how != "slurm":
        return False, "this scheduler cannot be asked to requeue"
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID", ""), os.environ.get("SLURM_ARRAY_TASK_ID", "")
    target = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")
    if not target:
        return False, "no SLURM job id in the environment"
    argv = [os.environ.get("DPU_SCONTROL") or "scontrol", "requeue", target]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"scontrol requeue {target} failed: {exc}"
    if res.returncode != 0:
        return False, f"scontrol requeue {target} failed: {(res.stderr or res.stdout).strip()[:300]}"
    return True, f"scontrol requeue {target}"


def own_folder(path: Path) -> Path:
    """`path` as a folder of this user's, made when missing (its parent must exist): never a
    symlink or another user's folder, whose files a task would read as its own state."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(f"{path} is not a folder of yours (a symlink or another user's); "
                              "remove it and run again")
    return path


class Checkpoints:
    """One process's checkpoint folder: each task's saved state and the results of the tasks
    that ended N in an earlier attempt of the chain (not run again)."""

    def __init__(self, folder: Path) -> None:
        self.root = Path(folder) / CHECKPOINT

    def folder(self, pos: int) -> Path:
        """The task's own folder for files it wants to keep across requeues."""
        return own_folder(own_folder(self.root) / f"task-{pos}")

    def state(self, pos: int) -> Any:
        """What the task's checkpoint callback returned last time (None: start afresh)."""
        data = read_own(self.root / f"task-{pos}.json")
        return data.get("state") if data else None

    def save(self, pos: int, state: Any, write: Any) -> None:
        """Keep a task's state (`write`: the worker's atomic JSON writer). A state the next
        attempt could not read back (over MAX_RECORD) is refused here, not lost silently there."""
        size = len(json.dumps({"state": state}))
        if size > MAX_RECORD:
            raise ValueError(f"the state is {size} bytes, over the {MAX_RECORD} kept; keep large "
                             "state as files in ctx.checkpoint_dir and return their names")
        write(own_folder(self.root) / f"task-{pos}.json", {"state": state})

    def done(self, pos: int) -> Optional[List[Any]]:
        """The results of task `pos` when it ended N in an earlier attempt, else None."""
        data = read_own(self.root / f"task-{pos}.done.json")
        objects = data.get("objects") if data else None
        return objects if isinstance(objects, list) else None

    def mark_done(self, pos: int, objects: List[Any], write: Any) -> str:
        """Keep an N task's results so a requeued attempt does not run it again; what went
        wrong, in words ('' when kept: a planted folder only costs the rerun of the task)."""
        try:
            write(own_folder(self.root) / f"task-{pos}.done.json", {"objects": objects})
        except OSError as exc:
            return str(exc)
        return ""

    def clear(self) -> None:
        """Forget every checkpoint (the process ended and nothing resumes from it)."""
        if self.root.is_dir() and not self.root.is_symlink():
            shutil.rmtree(self.root, ignore_errors=True)
