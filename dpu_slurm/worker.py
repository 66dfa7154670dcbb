"""Runs inside every job, on every scheduler: ``python -m dpu_slurm.worker JOBDIR INDEX``.

Standard library only: it travels in the bundle and runs with whatever Python the nodes have.
It runs the tasks of the sequence for process INDEX, writes the log as ``HH:MM:SS - message``,
and writes ``status.json`` and ``result.json`` atomically (temp file + rename). The status it
writes is the truth of last resort for every scheduler. Before its final record it ends every
process its tasks left running (it is their child subreaper on Linux, so setsid ones too).
"""
from __future__ import annotations

import bisect
import importlib
import json
import os
import resource
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .prereq import failed_prerequisite, foreign_input
from .proclock import LockRefused, ProcessLock

# Re-exported: the local runner and tests import these from here.
from .reaper import (  # noqa: F401
    PR_SET_PDEATHSIG,
    end_descendants,
    prctl_function,
    proc_stat,
    proc_table,
    set_subreaper,
)
from .requeue import SGE_REQUEUE_EXIT, Checkpoints, ask_scheduler, chain, own_folder, read_own, settings

STATUS = "status.json"
RESULT = "result.json"
LOG = "log"
LOCKED = 75   # exit status of a copy that found its process already running (EX_TEMPFAIL)


def process_dir(jobdir: Path, index: int) -> Path:
    """Where process INDEX keeps its status, log, result and scratch space."""
    return Path(jobdir) / "p" / str(index)


def write_json(path: Path, data: Any) -> None:
    """Write JSON so a reader sees the old file or the new one, never half of one. The temp
    name is fresh (mkstemp: O_EXCL, no symlink followed), never a guessable one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)   # mkstemp makes 0600; the queue page reads these as another user
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)  # ASCII escapes: a lone surrogate from a task cannot break the record
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Context:
    """What a task function receives: its options, a logger, a scratch folder and, for
    preemption, its checkpoint: ``resumed`` (the state saved by an earlier attempt, or None),
    ``checkpoint_dir`` (its files kept across requeues) and ``on_checkpoint(callback)``."""

    def __init__(self, job_id: int, index: int, task: str, options: Dict[str, Any],
                 workdir: Path, log: Callable[[str], None], attempt: int = 1,
                 resumed: Any = None, checkpoint_dir: Optional[Path] = None) -> None:
        self.job_id = job_id
        self.index = index
        self.task = task
        self.options = options
        self.workdir = workdir
        self.log = log
        self.inputs: Dict[str, List[Path]] = {}   # required task -> its processes' work folders
        self.attempt = attempt
        self.resumed = resumed
        self._checkpoint_dir = checkpoint_dir or workdir
        self.checkpoint: Optional[Callable[[], Any]] = None

    @property
    def checkpoint_dir(self) -> Path:
        """A folder of this task's own, kept across requeued attempts (made on first use; a
        symlink or another user's folder there is refused, never used)."""
        own_folder(self._checkpoint_dir.parent)
        return own_folder(self._checkpoint_dir)

    def on_checkpoint(self, callback: Callable[[], Any]) -> None:
        """Register what to save when the scheduler warns that this run ends (preemption, time
        limit): `callback()` returns a JSON value, given back as ``resumed`` to the next attempt."""
        self.checkpoint = callback


def own_options(processes: Any, index: int) -> Dict[str, Any]:
    """One process's options over the shared ones. job.json's "processes" is a list with one
    dict per process (format 1), or {"format": 2, "count": N, "base": {...}, "runs": [[first,
    last, {...}], ...]}: sorted runs over the optional base (processes.py writes it)."""
    if isinstance(processes, list):
        return dict(processes[index])
    if not isinstance(processes, dict) or processes.get("format") != 2:
        raise ValueError("job.json: unknown processes format; this worker reads formats 1 and 2")
    if not 0 <= index < int(processes["count"]):
        raise IndexError(f"process {index} is not in this job of {processes['count']}")
    runs = processes["runs"]
    at = bisect.bisect_right([r[0] for r in runs], index) - 1
    own = runs[at][2] if at >= 0 and runs[at][0] <= index <= runs[at][1] else {}
    return {**processes.get("base", {}), **own}


class _Killed(BaseException):
    """Raised in the task by SIGTERM: the scheduler is ending this process."""


class _Warned(BaseException):
    """Raised in the task by the scheduler's warning signal: this run ends soon."""


class Worker:
    """Runs the tasks of one process of a job, writing its log, status and result records."""

    def __init__(self, jobdir: Path, index: int) -> None:
        self.jobdir = Path(jobdir)
        self.index = index
        self.job = json.loads((self.jobdir / "job.json").read_text(encoding="utf-8"))
        self.dir = process_dir(self.jobdir, index)
        own_folder(own_folder(self.dir.parent) / self.dir.name)   # never a planted link (red13b)
        self.tasks: List[Optional[str]] = [None] * len(self.job["tasks"])
        self.reason = ""
        self.started = time.time()
        # Held until this run ends: LockRefused (nothing touched) when another copy runs.
        self.lock = ProcessLock(self.dir)
        self.lock.acquire()
        self.requeue_how, self.requeue_max = settings()
        before = read_own(self.dir / STATUS)
        self.attempt, self.requeues = chain(self.dir, before)
        # SLURM requeues a preempted job even after its worker ended it: that run does nothing.
        self.ended = bool(self.requeue_max and before and before.get("state") == "DONE")
        self.checkpoints = Checkpoints(self.dir)
        self.ctx: Optional[Context] = None
        self.pos = 0
        self.warned = ""
        self._in_task = False
        self._log = open(self.dir / LOG, "a", encoding="utf-8", errors="backslashreplace")

    def log(self, message: str) -> None:
        """Append ``HH:MM:SS - message`` lines to the process log."""
        stamp = time.strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._log.write(f"{stamp} - {line}\n")
        self._log.flush()

    def status(self, state: str) -> None:
        """Write status.json atomically: the process state and each task's letter so far."""
        write_json(self.dir / STATUS, {
            "state": state, "tasks": self.tasks, "reason": self.reason,
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": self.started, "ended": time.time() if state == "DONE" else None,
            "attempt": self.attempt, "requeues": self.requeues,
            **({"usage": own_usage(self.started)} if state == "DONE" else {}),
        })

    def options(self) -> Dict[str, Any]:
        """The job's shared options with this process's own values over them."""
        return {**self.job["options"], **own_options(self.job["processes"], self.index)}

    def run(self) -> int:
        """Run the sequence's tasks in order, stop at the first that fails; the exit status (0: all N)."""
        signal.signal(signal.SIGTERM, _on_term)
        if self.requeue_max:  # the job script asked the scheduler for a warning before the end
            for name in ("SIGUSR1", "SIGUSR2") if self.requeue_how == "sge" else ("SIGUSR1",):
                signal.signal(getattr(signal, name), self._on_warning)
        if self.ended:  # its records stay as they are
            print(f"dpu_slurm worker: process {self.index} already ended; this run does nothing",
                  file=sys.stderr)
            return self._close(0)
        set_subreaper()
        skip = failed_prerequisite(self.job, self.index, process_dir, STATUS)
        if skip:  # never run: a process of a job this one waits for did not end N
            self.tasks, self.reason = ["S"] * len(self.tasks), skip
            self.log(f"Process skipped: {skip}")
            self.status("DONE")
            return self._close(0)
        self.status("RUNNING")
        options = self.options()
        results: List[Any] = []
        self.log(f"Job {self.job['job_id']} process {self.index} on {socket.gethostname()}: "
                 f"{self.job['sequence']}" + (f" (attempt {self.attempt})" if self.attempt > 1 else ""))
        try:
            for pos, spec in enumerate(self.job["tasks"]):
                kept = self.checkpoints.done(pos) if self.requeues else None
                if kept is not None:
                    self.tasks[pos] = "N"
                    results.extend(kept)
                    self.log(f"Task {spec['name']} ended N in an earlier attempt; not run again")
                    continue
                if self.warned:  # warned between two tasks: the next one is the one stopped
                    self.tasks[pos] = "RUNNING"
                    raise _Warned()
                self.tasks[pos], self.pos = "RUNNING", pos
                self.status("RUNNING")
                self.log(f"Starting task {spec['name']}")
                letter, objects = self._run_task(pos, spec, options)
                self.tasks[pos], self.ctx = letter, None   # a later warning is not this task's
                results.extend(objects)
                if letter == "N" and self.requeue_max:
                    trouble = self.checkpoints.mark_done(pos, objects, write_json)
                    if trouble:
                        self.log(f"Results of task {spec['name']} not kept for a requeue: {trouble}")
                if letter != "N":
                    break
        except _Killed:
            self._save_checkpoint()
            self.reason = self.reason or _kill_reason(time.time() - self.started)
            self._end_running("A")
            self.log(f"Process ended: {self.reason}")
        except _Warned:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the end comes: records first
            self._save_checkpoint()
            code = self._requeue()
            if code is not None:
                return self._close(code)
            self._end_running("A")
            self.log(f"Process ended: {self.reason}")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the records below be written whole
        # Nothing a task started outlives its process: ended before the final record says DONE.
        left = end_descendants(os.getpid())
        if left:
            self.log(f"Ended {left} process(es) the tasks left running")
        self.tasks = [t if t in ("N", "E", "A") else "S" for t in self.tasks]
        committed = bool(options.get("commit"))
        write_json(self.dir / RESULT, {"committed": committed, "objects": results if committed else [],
                                       "count": len(results)})
        code = 0 if all(t == "N" for t in self.tasks) else 1
        if "A" not in self.tasks:  # nothing resumes from it (an A keeps it for a rerun)
            self.checkpoints.clear()
        self.log(f"job_status = {code}")
        self.status("DONE")
        return self._close(code)

    def _close(self, code: int) -> int:
        self._log.close()
        self.lock.release()
        return code

    def _on_warning(self, signum: int, frame: Any) -> None:
        self.warned = signal.Signals(signum).name
        if self._in_task:
            raise _Warned()

    def _save_checkpoint(self) -> None:
        """The running task's state from its callback, kept for the next attempt."""
        ctx = self.ctx
        if ctx is None or ctx.checkpoint is None:
            return
        try:
            state = ctx.checkpoint()
            self.checkpoints.save(self.pos, state, write_json)
            self.log(f"Checkpoint of task {ctx.task} saved")
        except Exception as exc:  # a broken callback loses the checkpoint, never the records
            self.log(f"Checkpoint of task {ctx.task} failed: {type(exc).__name__}: {exc}")

    def _requeue(self) -> Optional[int]:
        """After the warning: have the scheduler run the process again (the exit status to end
        this run with), or None when it ends here A (self.reason says why)."""
        elapsed, limit = time.time() - self.started, int(os.environ.get("DPU_TIME_LIMIT", "0") or 0)
        warn = int(os.environ.get("DPU_REQUEUE_WARN", "0") or 0)
        what = "the time limit" if limit and elapsed >= limit - warn - 60 else "preemption"
        if self.requeue_how == "sge":  # -notify: USR1 comes before a suspend, USR2 before a kill
            what = "a suspend" if self.warned == "SIGUSR1" else "a kill"
        why = f"{self.warned} before {what}"
        if len(self.requeues) >= self.requeue_max:
            self.reason = f"{why}; not requeued: the limit of {self.requeue_max} requeue(s) is reached"
            return None
        letters = "".join("A" if t == "RUNNING" else (t or "S") for t in self.tasks)
        earlier = [*self.requeues, [self.attempt, letters, f"requeued: {why}", time.time()]]
        end_descendants(os.getpid())
        write_json(self.dir / STATUS, {  # what a poll sees until the next attempt starts
            "state": "RUNNING", "requeued": True, "tasks": [None] * len(self.tasks), "reason": "",
            "attempt": self.attempt + 1, "requeues": earlier, "host": socket.gethostname(),
            "pid": os.getpid(), "started": self.started, "ended": None})
        done, note = ask_scheduler(self.requeue_how)
        if not done:
            self.reason = f"{why}; not requeued: {note}; its checkpoint is kept for a rerun"
            return None
        self.log(f"Requeued ({why}; {note}): attempt {self.attempt + 1} resumes from the checkpoint")
        return SGE_REQUEUE_EXIT if self.requeue_how == "sge" else 0

    def _end_running(self, letter: str) -> None:
        self.tasks = [letter if t == "RUNNING" else t for t in self.tasks]

    def _run_task(self, pos: int, spec: Dict[str, str], options: Dict[str, Any]) -> tuple[str, List[Any]]:
        module_name, _, func_name = spec["run"].partition(":")
        workdir = self.dir / "work"
        workdir.mkdir(exist_ok=True)
        try:
            func = getattr(importlib.import_module(module_name), func_name)
            ctx = Context(self.job["job_id"], self.index, spec["name"], dict(options), workdir, self.log,
                          self.attempt, self.checkpoints.state(pos), self.checkpoints.root / f"task-{pos}")
            needs = self.job.get("inputs")  # a target run's (target.py): per process, task -> folders
            ctx.inputs = {k: [Path(d) for d in v] for k, v in needs[self.index].items()} if needs else {}
            folders = [d for dirs in ctx.inputs.values() for d in dirs]
            bad = next((why for why in map(foreign_input, folders) if why), "")
            if bad:
                self.reason = f"task {spec['name']}: a required work folder is not read: {bad}"
                self.log(self.reason)
                return "E", []
            self.ctx, self._in_task = ctx, True
            try:
                objects = func(ctx)
            finally:
                self._in_task = False
        except MemoryError:
            self.reason = f"OUT_OF_MEMORY: task {spec['name']} exceeded the memory limit"
            self.log(self.reason)
            return "A", []
        except (Exception, SystemExit) as exc:  # sys.exit() in a task ends the task, not the records
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self.reason = f"task {spec['name']} failed: {last[:300]}"
            for line in traceback.format_exc().splitlines():
                self.log(line)
            return "E", []
        if objects is None:
            objects = []
        elif isinstance(objects, dict):  # one object; list() would keep only its keys
            objects = [objects]
        elif not isinstance(objects, (list, tuple)):
            self.reason = (f"task {spec['name']} returned a {type(objects).__name__}; "
                           "a task returns a list of objects (or None)")
            self.log(self.reason)
            return "E", []
        try:
            json.dumps(objects)
        except (TypeError, ValueError) as exc:
            self.reason = f"task {spec['name']} returned results that are not JSON: {exc}"
            self.log(self.reason)
            return "E", []
        return "N", list(objects)


def own_usage(started: float) -> Dict[str, float]:
    """This process's figures so far: wall seconds, CPU seconds (its own and its reaped
    children's) and peak resident memory in KB (the larger of itself and a child)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1024 if sys.platform == "darwin" else 1  # macOS counts ru_maxrss in bytes
    return {"wall_s": round(time.time() - started, 3),
            "cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 3),
            "max_rss_kb": max(me.ru_maxrss, kids.ru_maxrss) // scale}


def _kill_reason(elapsed: float) -> str:
    """Why SIGTERM came: at the time limit the job script exported, it was the limit."""
    limit = int(os.environ.get("DPU_TIME_LIMIT", "0") or 0)
    if limit and elapsed >= max(limit - 2, 0.9 * limit):  # SLURM ends it at the limit, never before
        return f"TIMEOUT: killed after {limit // 3600:02d}:{limit % 3600 // 60:02d}:{limit % 60:02d}"
    return "killed by the scheduler (SIGTERM): cancelled, preempted or out of memory"


def _on_term(signum: int, frame: Any) -> None:
    raise _Killed()


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m dpu_slurm.worker JOBDIR INDEX``: run one process; its exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dpu_slurm.worker JOBDIR INDEX", file=sys.stderr)
        return 2
    early: List[str] = []  # a warning before the worker is ready is kept for it, not fatal
    if os.environ.get("DPU_REQUEUE_MAX"):
        for name in ("SIGUSR1", "SIGUSR2"):
            signal.signal(getattr(signal, name), lambda signum, _: early.append(signal.Signals(signum).name))
    try:
        worker = Worker(Path(args[0]), int(args[1]))
    except LockRefused as exc:  # a second copy: it leaves every record alone
        print(f"dpu_slurm worker: not run: {exc}", file=sys.stderr)
        return LOCKED
    except PermissionError as exc:  # its process folder is a symlink or another user's
        print(f"dpu_slurm worker: not run: {exc}", file=sys.stderr)
        return 1
    worker.warned = early[0] if early else ""
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
