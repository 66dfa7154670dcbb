"""The embedded local DPU: a detached runner per job runs its processes on this machine.

At most ``slots`` processes run at once across all jobs: one flock'ed slot file each, held by the
runner and by the process (a slot stays taken while its process lives). The runner enforces the
time limit, RLIMIT_AS the memory. When a process ends (normally, at the limit, on cancel) the runner
kills its group, its session and the orphans it adopts as child subreaper (setsid ones too). The
runner keeps ``runner.json`` in the job folder; a job outlives the prompt that submitted it. When
the runner dies, its processes get SIGTERM (parent-death signal) and the next poll ends them, running
ones A, queued ones S, "the local runner died (pid N)": resubmit the job to run the queued ones.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any, Deque, Dict, List, Optional, Sequence, Set

from ..errors import SubmitError
from ..store import Job
from ..transport.base import Gathered
from ..worker import PR_SET_PDEATHSIG, prctl_function, proc_table, set_subreaper, write_json
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observation,
    PollRequest,
    Scheduler,
    SubmitRequest,
    chunk_tag,
    tag_of,
)
from .local_gate import Gate
from .local_kill import kill_worker_session, wait_for_runner

log = logging.getLogger(__name__)
RUNNER_FILE = "runner.json"
PID_FILE = "runner.pid"
KILL_GRACE = 3.0

STATE_MAP = {  # the runner's own states, named like Slurm's so the table reads the same
    "PENDING": (QUEUED, ""), "RUNNING": (RUNNING, ""), "COMPLETED": (ENDED, "N"),
    "FAILED": (ENDED, "E"),
    "TIMEOUT": (ENDED, "A"),
    "KILLED": (ENDED, "A"),        # cancelled while running (force)
    "CANCELLED": (ENDED, "S"),     # cancelled while queued
}


class LocalScheduler(Scheduler):
    """The embedded local DPU: a detached runner per job; polled by reading runner.json."""

    name = "local"
    ORDER = 0
    STATE_MAP = STATE_MAP
    CANCELS_QUEUED_ONLY = RERUN = True
    CHUNKED, RERUN_STALE = False, (RUNNER_FILE, PID_FILE)

    def slots(self) -> int:
        """How many processes may run at once on this machine (config, else the CPU count)."""
        return self.dpu.slots or os.cpu_count() or 1

    def submit(self, req: SubmitRequest) -> List[str]:
        """Write job.sh and start the job's detached runner; its pid is the id. SubmitError if not."""
        jobdir = Path(req.jobdir)
        script = jobdir / "job.sh"
        script.write_text(self.script(req), encoding="utf-8")
        write_json(jobdir / RUNNER_FILE, {"pid": None, "states": [["PENDING", ""]] * req.nproc})
        (jobdir / PID_FILE).unlink(missing_ok=True)  # a rerun: the first runner's pid is not ours
        here = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (here, os.environ.get("PYTHONPATH", "")) if p))
        only = ",".join(map(str, req.indices)) if req.indices is not None else "-"
        argv = [sys.executable, "-m", "dpu_slurm.schedulers.local", str(jobdir), str(req.nproc),
                str(req.time_limit), str(req.mem), str(self.slots()), str(self.slot_dir()), only]
        with open(jobdir / "runner.log", "ab") as out:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                  cwd=str(jobdir), start_new_session=True, timeout=60)
        pid_file = jobdir / PID_FILE
        if proc.returncode != 0 or not pid_file.exists():
            raise SubmitError(f"the local runner did not start (exit {proc.returncode}); "
                              f"see {jobdir / 'runner.log'}")
        native = [pid_file.read_text().strip()]
        if req.accepted is not None:
            req.accepted(native)
        return native

    def before_rerun(self, job: Job) -> None:
        """The last run's runner may still be saving its final states: wait until it exits (a
        poll would otherwise read them as the rerun's, once its files are moved aside)."""
        if not wait_for_runner(Path(job.jobdir) / PID_FILE, Path(job.jobdir)):
            raise SubmitError(f"the runner of job {job.id}'s last run still runs; rerun it again soon")

    def slot_dir(self) -> Path:
        """The folder of the slot lock files every job of this DPU shares."""
        return Path(self.transport.expand(self.dpu.target_workdir())) / "slots"

    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """No command: each job's runner.json, read in the gather's round trip."""
        return PollRequest(None, [str(Path(j.jobdir) / RUNNER_FILE) for j in jobs])

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Dict[int, Dict[int, Observation]]:
        """The runners' states -> observations; a dead runner's processes end (A running, S queued)."""
        files = got.files
        out: Dict[int, Dict[int, Observation]] = {}
        self.names = {}
        for job in jobs:
            raw = files.get(str(Path(job.jobdir) / RUNNER_FILE))
            if raw is None:
                continue
            try:
                data = json.loads(raw)
                if data.get("pid"):  # the runner started: the job is queued here under its tag
                    self.remember(chunk_tag(tag_of(job), 0), str(data["pid"]))
                final = {i for (d, i), rec in got.records.items() if d == job.jobdir and _final(rec)}
                out[job.id] = self._observed(data, Path(job.jobdir), final)
            except (ValueError, TypeError, KeyError, AttributeError):  # other users' files too
                log.warning("job %s: unreadable %s; its worker records decide", job.id, RUNNER_FILE)
        return out

    def _observed(self, data: Dict[str, Any], jobdir: Path, final: Set[int]) -> Dict[int, Observation]:
        """The runner's states; `final`: the processes whose worker wrote its final record."""
        dead = bool(data.get("pid")) and not _alive(data.get("pid"), data.get("pstart"))
        live = {int(i) for i in data.get("live", [])}
        seen: Dict[int, Observation] = {}
        for idx, (native, reason) in enumerate(data["states"]):
            obs = self.observe(str(native), str(reason))
            if obs.state != ENDED and dead:
                obs = _orphaned(data, idx, obs, jobdir)
            elif obs.state == ENDED and idx in live and idx not in final:
                # Being killed: ended once its worker wrote its final record or the runner swept it.
                obs = Observation(RUNNING)
            seen[idx] = obs
        return seen

    def cancel(self, job: Job, force: bool) -> None:
        """Signal the runner (SIGUSR1: drop queued; SIGTERM: also kill running) and wait briefly."""
        raw = self.transport.read_files([str(Path(job.jobdir) / RUNNER_FILE)])
        data = json.loads(next(iter(raw.values())) or b"{}")
        if _alive(data.get("pid"), data.get("pstart")):
            os.kill(int(data["pid"]), signal.SIGTERM if force else signal.SIGUSR1)
            _wait_for(lambda: not _alive(data["pid"], data.get("pstart")) or _settled(job, force), 10.0)


def _final(record: Optional[bytes]) -> bool:
    try:
        return bool(record) and json.loads(record or b"{}").get("state") == "DONE"
    except ValueError:
        return False


def _orphaned(data: Dict[str, Any], idx: int, obs: Observation, jobdir: Path) -> Observation:
    """A dead runner's process: queued ones S; running ones A, a worker still alive killed."""
    why = f"the local runner died (pid {int(data['pid'])})"
    if obs.state == QUEUED:
        return Observation(ENDED, "S", f"never started: {why}")
    pid, pstart = (data.get("procs") or {}).get(str(idx)) or (None, None)
    if pid and pstart:
        kill_worker_session(int(pid), str(pstart), jobdir)
    return Observation(ENDED, "A", why)


def _settled(job: Job, force: bool) -> bool:
    data = json.loads((Path(job.jobdir) / RUNNER_FILE).read_text())
    open_states = {"PENDING", "RUNNING"} if force else {"PENDING"}
    return not any(s in open_states for s, _ in data["states"])


def _wait_for(cond: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)


def _proc_start(pid: int) -> Optional[str]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: Any, pstart: Any) -> bool:
    if not pid:
        return False
    start = _proc_start(int(pid))
    return start is not None and (pstart is None or start == pstart)


class Runner:
    """One job's runner: ... JOBDIR NPROC LIMIT MEM SLOTS SLOTDIR ONLY (a rerun's indices, or -)."""
    def __init__(self, jobdir: Path, nproc: int, limit: int, mem: int, slots: int, slot_dir: Path,
                 only: Optional[List[int]] = None):
        self.jobdir, self.limit, self.mem = jobdir, limit, mem
        # A rerun runs only `only`; the others keep the outcome of their earlier attempt.
        self.states = [["PENDING" if only is None or i in only else "COMPLETED", ""] for i in range(nproc)]
        self.pending: Deque[int] = deque(range(nproc) if only is None else sorted(only))
        self.running: Dict[int, Any] = {}
        self.slots = [slot_dir / f"{k}.lock" for k in range(slots)]
        slot_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_queued = self.kill_running = False
        self.dirty, self.written = True, 0.0
        self.pid, self.pstart = os.getpid(), _proc_start(os.getpid())
        self.procs: Dict[str, List[Any]] = {}  # index -> [pid, start time] once started
        self.prctl = prctl_function()
        self.gate = Gate(jobdir, {k for k, (s, _) in STATE_MAP.items() if s != ENDED})  # after=

    def _on_cancel(self, signum: int, frame: Any) -> None:
        self.cancel_queued = True
        self.kill_running = self.kill_running or signum == signal.SIGTERM

    def save(self, force: bool = False) -> None:
        """Write runner.json when something changed (at most every 0.2 s unless force)."""
        now = time.monotonic()
        if self.dirty and (force or now - self.written > 0.2):
            write_json(self.jobdir / RUNNER_FILE, {"pid": self.pid, "pstart": self.pstart,
                                                   "states": self.states, "procs": self.procs,
                                                   "live": sorted(self.running)})
            self.dirty, self.written = False, now

    def set(self, idx: int, state: str, reason: str = "") -> None:
        """Set process idx's state and reason (saved by the next save)."""
        self.states[idx] = [state, reason]
        self.dirty = True

    def take_slot(self) -> Optional[IO[bytes]]:
        """A free slot's locked file, or None when every slot is taken."""
        for path in self.slots:
            fh = open(path, "ab")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fh
            except OSError:
                fh.close()
        return None

    def start(self, idx: int, slot: IO[bytes]) -> None:
        """Start process idx in its own session, holding `slot`, under RLIMIT_AS."""
        mem = self.mem * 1024 * 1024
        prctl, runner = self.prctl, self.pid

        def prepare() -> None:
            if prctl is not None:  # SIGTERM when the runner dies: nobody would time or end it
                prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != runner:  # it died before that was armed
                os._exit(1)
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))  # last: the calls above allocate

        out = open(self.jobdir / "out" / f"{idx}.out", "ab")
        # The process holds its slot's lock too: the slot stays taken while it lives, runner or not.
        proc = subprocess.Popen(["/bin/bash", str(self.jobdir / "job.sh"), str(idx)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(self.jobdir), start_new_session=True, preexec_fn=prepare,
                                pass_fds=(slot.fileno(),))
        out.close()
        self.running[idx] = {"proc": proc, "slot": slot, "t0": time.monotonic(), "term": None, "why": ""}
        self.procs[str(idx)] = [proc.pid, _proc_start(proc.pid)]
        self.set(idx, "RUNNING")

    def sweep(self, pid: Optional[int]) -> None:
        """Kill what `pid` left: its group, its session, adopted orphans of no running process."""
        if pid:
            _signal_group(pid, signal.SIGKILL)
        for _ in range(100):
            live = {entry["proc"].pid for entry in self.running.values()}
            victims = []
            for other, (state, ppid, group, session, _) in proc_table().items():
                adopted = ppid == self.pid and not {other, group, session} & live
                left = pid is not None and state != "Z" and pid in (group, session)
                if other != self.pid and (adopted or left):
                    victims.append((other, state, adopted))
            if not victims:
                return
            for other, state, adopted in victims:
                if state != "Z":
                    _kill(other, signal.SIGKILL)
                if adopted:
                    try:
                        os.waitpid(other, os.WNOHANG)
                    except ChildProcessError:
                        pass
            time.sleep(0.005)

    def stop(self, idx: int, state: str, why: str) -> None:
        """SIGTERM process idx's group, recording state and why first (SIGKILL follows in reap)."""
        entry = self.running[idx]
        if entry["term"] is None:
            entry["term"], entry["why"], entry["state"] = time.monotonic(), why, state
            # Say why before the worker records its end: a poll must not see RUNNING without it.
            self.set(idx, state, why)
            self.save(force=True)
            _signal_group(entry["proc"].pid, signal.SIGTERM)

    def reap(self) -> None:
        """Enforce time limits and grace, and record how each finished process ended."""
        now = time.monotonic()
        for idx, entry in list(self.running.items()):
            proc = entry["proc"]
            if proc.poll() is None:
                if entry["term"] is None and now - entry["t0"] > self.limit:
                    self.stop(idx, "TIMEOUT", f"killed after {_hms(self.limit)}")
                elif entry["term"] is not None and now - entry["term"] > KILL_GRACE:
                    _signal_group(proc.pid, signal.SIGKILL)
                continue
            del self.running[idx]
            self.sweep(proc.pid)
            entry["slot"].close()  # after the sweep: leftovers held the slot's lock too
            if entry["term"] is not None:
                self.set(idx, entry["state"], entry["why"])
            elif proc.returncode == 0:
                self.set(idx, "COMPLETED")
            elif proc.returncode == -signal.SIGKILL:  # not by us: the OOM killer or an admin
                self.set(idx, "KILLED", "killed by signal 9 (SIGKILL), e.g. out of memory")
            elif proc.returncode < 0:
                self.set(idx, "FAILED", f"killed by signal {-proc.returncode}")
            else:
                self.set(idx, "FAILED", f"exit code {proc.returncode}")

    def loop(self) -> None:
        """Run the job: start processes as slots free up, handle cancels, until all have ended."""
        (self.jobdir / "out").mkdir(exist_ok=True)
        signal.signal(signal.SIGUSR1, self._on_cancel)
        signal.signal(signal.SIGTERM, self._on_cancel)
        self.save(force=True)
        while self.pending or self.running:
            if self.cancel_queued:
                while self.pending:
                    self.set(self.pending.popleft(), "CANCELLED", "cancelled while queued")
            if self.kill_running:
                for idx in list(self.running):
                    self.stop(idx, "KILLED", "cancelled while running")
            started = False
            ready = deque(self.gate.ready(self.pending))
            while ready and len(self.running) < len(self.slots):
                slot = self.take_slot()
                if slot is None:
                    break
                self.pending.remove(ready[0])
                self.start(ready.popleft(), slot)
                started = True
            self.reap()
            self.save(force=started)  # a poll after this runner's death must know who ran
            time.sleep(0.02 if self.pending and not self.running else 0.05)
        self.sweep(None)  # orphans that outlived everything
        self.save(force=True)


def _signal_group(pid: int, sig: int) -> None:
    _kill(pid, sig, os.killpg)


def _kill(pid: int, sig: int, how: Any = os.kill) -> None:
    try:
        how(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def main(argv: Sequence[str]) -> int:
    """Fork the detached runner; exit 0 once it has written its pid, 1 if it failed to start."""
    jobdir = Path(argv[0])
    nproc, limit, mem, slots = (int(x) for x in argv[1:5])
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:  # detach: the submitter reaps this parent at once, init adopts the runner
        os.close(ready_w)
        return 0 if os.read(ready_r, 16) == b"ok" else 1
    os.close(ready_r)
    os.setsid()
    set_subreaper()  # orphans of its processes come back to the runner, which ends them
    only = None if len(argv) < 7 or argv[6] == "-" else [int(i) for i in argv[6].split(",")]
    runner = Runner(jobdir, nproc, limit, mem, slots, Path(argv[5]), only)
    runner.save(force=True)
    (jobdir / PID_FILE).write_text(str(runner.pid))
    os.write(ready_w, b"ok")
    os.close(ready_w)
    runner.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
