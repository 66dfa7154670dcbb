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
from typing import Any, Callable, Dict, List, Optional, Tuple

from .prereq import failed_prerequisite, foreign_input

STATUS = "status.json"
RESULT = "result.json"
LOG = "log"


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


# -- processes a task leaves behind (Linux; elsewhere these do nothing) ---------------------------

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl_function() -> Optional[Callable[..., int]]:
    """libc's prctl, loaded up front (a forked child about to exec must not load libraries)."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def set_subreaper() -> bool:
    """Orphans below this process (daemonized, or gone with setsid) become its children, so
    whoever ends this process can end them too."""
    prctl = prctl_function()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def proc_stat(pid: int) -> Optional[Tuple[str, int, int, int, str]]:
    """(state, ppid, process group, session, start time) from /proc, None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[19]


def proc_table() -> Dict[int, Tuple[str, int, int, int, str]]:
    """proc_stat of every process (empty without /proc)."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit():
            row = proc_stat(int(name))
            if row is not None:
                out[int(name)] = row
    return out


def end_descendants(root: int, rounds: int = 100) -> int:
    """SIGKILL every process below `root` (by parent links, again until none is left: a killed
    parent's children come back to a subreaper root) and reap those that became ours."""
    killed = 0
    for _ in range(rounds):
        table = proc_table()
        below, todo = [], [root]
        while todo:
            parent = todo.pop()
            kids = [pid for pid, row in table.items() if row[1] == parent]
            below += kids
            todo += kids
        if not below:
            break
        for pid in below:
            if table[pid][0] != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            if table[pid][1] == os.getpid():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.005)
    return killed


class Context:
    """What a task function receives: its options, a logger and a scratch folder."""

    def __init__(self, job_id: int, index: int, task: str, options: Dict[str, Any],
                 workdir: Path, log: Callable[[str], None]) -> None:
        self.job_id = job_id
        self.index = index
        self.task = task
        self.options = options
        self.workdir = workdir
        self.log = log
        self.inputs: Dict[str, List[Path]] = {}   # required task -> its processes' work folders


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


class Worker:
    """Runs the tasks of one process of a job, writing its log, status and result records."""

    def __init__(self, jobdir: Path, index: int) -> None:
        self.jobdir = Path(jobdir)
        self.index = index
        self.job = json.loads((self.jobdir / "job.json").read_text(encoding="utf-8"))
        self.dir = process_dir(self.jobdir, index)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tasks: List[Optional[str]] = [None] * len(self.job["tasks"])
        self.reason = ""
        self.started = time.time()
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
            **({"usage": own_usage(self.started)} if state == "DONE" else {}),
        })

    def options(self) -> Dict[str, Any]:
        """The job's shared options with this process's own values over them."""
        return {**self.job["options"], **own_options(self.job["processes"], self.index)}

    def run(self) -> int:
        """Run the sequence's tasks in order, stop at the first that fails; the exit status (0: all N)."""
        signal.signal(signal.SIGTERM, _on_term)
        set_subreaper()
        skip = failed_prerequisite(self.job, self.index, process_dir, STATUS)
        if skip:  # never run: a process of a job this one waits for did not end N
            self.tasks, self.reason = ["S"] * len(self.tasks), skip
            self.log(f"Process skipped: {skip}")
            self.status("DONE")
            return 0
        self.status("RUNNING")
        options = self.options()
        results: List[Any] = []
        self.log(f"Job {self.job['job_id']} process {self.index} on {socket.gethostname()}: "
                 f"{self.job['sequence']}")
        try:
            for pos, spec in enumerate(self.job["tasks"]):
                self.tasks[pos] = "RUNNING"
                self.status("RUNNING")
                self.log(f"Starting task {spec['name']}")
                letter, objects = self._run_task(spec, options)
                self.tasks[pos] = letter
                results.extend(objects)
                if letter != "N":
                    break
        except _Killed:
            self.reason = self.reason or _kill_reason(time.time() - self.started)
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
        self.log(f"job_status = {code}")
        self.status("DONE")
        self._log.close()
        return code

    def _end_running(self, letter: str) -> None:
        self.tasks = [letter if t == "RUNNING" else t for t in self.tasks]

    def _run_task(self, spec: Dict[str, str], options: Dict[str, Any]) -> tuple[str, List[Any]]:
        module_name, _, func_name = spec["run"].partition(":")
        workdir = self.dir / "work"
        workdir.mkdir(exist_ok=True)
        try:
            func = getattr(importlib.import_module(module_name), func_name)
            ctx = Context(self.job["job_id"], self.index, spec["name"], dict(options), workdir, self.log)
            needs = self.job.get("inputs")  # a target run's (target.py): per process, task -> folders
            ctx.inputs = {k: [Path(d) for d in v] for k, v in needs[self.index].items()} if needs else {}
            folders = [d for dirs in ctx.inputs.values() for d in dirs]
            bad = next((why for why in map(foreign_input, folders) if why), "")
            if bad:
                self.reason = f"task {spec['name']}: a required work folder is not read: {bad}"
                self.log(self.reason)
                return "E", []
            objects = func(ctx)
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
    return Worker(Path(args[0]), int(args[1])).run()


if __name__ == "__main__":
    sys.exit(main())
