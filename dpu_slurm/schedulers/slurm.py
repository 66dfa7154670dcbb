"""SLURM: one array job per DPU job (chunked by max_array_size), one squeue call per poll.

States: https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES and
https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config import DPUConfig
from ..errors import SchedulerError
from ..store import Job
from ..transport.base import Completed, Gathered
from .accounting import Usage, parse_sacct
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observed,
    PollRequest,
    Scheduler,
    SubmitRequest,
    chunk_owners,
    minutes,
    since,
)
from .depend import slurm_args
from .helpers import layout
from .ranges import Seen, clip, parse_ranges

log = logging.getLogger(__name__)

# native state -> (state, letter). A process cancelled or past a deadline before it started is
# S; status.decide turns S into A when the worker's record shows it had started.
STATE_MAP = {
    "PENDING": (QUEUED, ""),
    "REQUEUED": (QUEUED, ""),
    "REQUEUE_FED": (QUEUED, ""),
    "REQUEUE_HOLD": (QUEUED, ""),
    "RESV_DEL_HOLD": (QUEUED, ""),
    "CONFIGURING": (QUEUED, ""),     # nodes being allocated or booted: nothing runs yet
    "RUNNING": (RUNNING, ""),
    "COMPLETING": (RUNNING, ""),     # ending: the worker's record says how
    "SUSPENDED": (RUNNING, ""),
    "STOPPED": (RUNNING, ""),
    "SIGNALING": (RUNNING, ""),
    "STAGE_OUT": (RUNNING, ""),
    "RESIZING": (RUNNING, ""),
    "COMPLETED": (ENDED, "N"),
    "FAILED": (ENDED, "E"),
    "SPECIAL_EXIT": (ENDED, "E"),
    "CANCELLED": (ENDED, "S"),
    "DEADLINE": (ENDED, "S"),
    "REVOKED": (ENDED, "S"),
    "TIMEOUT": (ENDED, "A"),
    "OUT_OF_MEMORY": (ENDED, "A"),
    "NODE_FAIL": (ENDED, "A"),
    "PREEMPTED": (ENDED, "A"),
    "BOOT_FAIL": (ENDED, "A"),
}
TRANSIENT = ("Unable to contact slurm controller", "Socket timed out", "Zero Bytes were transmitted",
              "Connection refused", "Resource temporarily unavailable")
_SEP = "|"


def _claims(jobs: Sequence[Job]) -> Dict[Tuple[str, str], Tuple[Job, int, int]]:
    """(native id, user) -> chunk_owners' entry: on the queue page the native ids come from
    job cards, claims of their users; a scheduler job counts only for a job of its own user, so
    a card naming another user's job id neither shows that job nor hides it from its owner."""
    out: Dict[Tuple[str, str], Tuple[Job, int, int]] = {}
    for job in jobs:
        for native, entry in chunk_owners([job]).items():
            out[(native, job.user)] = entry
    return out


def hms(seconds: int) -> str:
    """Slurm's --time as [D-]HH:MM:SS, rounded up to whole minutes as Slurm enforces them."""
    days, rest = divmod(minutes(seconds), 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def compact(ids: Sequence[int]) -> str:
    """Sorted indices as Slurm's --array list: 3,7-9,12."""
    runs: List[List[int]] = []
    for i in sorted(set(ids)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


class SlurmScheduler(Scheduler):
    """SLURM: sbatch --array per chunk, squeue per poll, sacct for history, scancel."""

    name = "slurm"
    ORDER = 1
    STATE_MAP = STATE_MAP
    TRANSIENT = TRANSIENT
    CANCELS_QUEUED_ONLY = True
    RERUN = True
    REQUEUE = "slurm"
    DRMAA_INDEX_SHIFT = 1  # bulk indices start at 1, the poll counts from 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accounting: Optional[bool] = None

    def clusters(self) -> List[str]:
        """``-M NAMES`` when the config names SLURM clusters (multi-cluster sites), else nothing."""
        return ["-M", self.dpu.clusters] if self.dpu.clusters else []

    # -- submit ---------------------------------------------------------------------------
    def script_context(self, req: SubmitRequest, k: int, offset: int, count: int) -> Dict[str, Any]:
        """The chunk's --array range (with throttle), --time and the warning's lead."""
        throttle = f"%{self.dpu.array_throttle}" if self.dpu.array_throttle else ""
        return {"array": f"0-{count - 1}{throttle}", "time": hms(req.time_limit),
                "warn": self.warn(req.time_limit)}

    def rerun_context(self, req: SubmitRequest, offset: int, ids: List[int]) -> Dict[str, Any]:
        """--array as a list of the rerun's indices (runs compacted to ranges) and --time."""
        throttle = f"%{self.dpu.array_throttle}" if self.dpu.array_throttle else ""
        return {"array": compact(ids) + throttle, "time": hms(req.time_limit),
                "warn": self.warn(req.time_limit)}

    def warn(self, time_limit: int) -> int:
        """Seconds of warning asked before the limit (requeue.warn): at most half the limit. A
        lead as long as the limit would warn at the start, and every attempt would requeue
        itself without doing any work until requeue.max was spent."""
        return max(1, min(int(self.dpu.requeue.get("warn", 90)), time_limit // 2))

    def submit_argv(self, req: SubmitRequest, name: str, text: str) -> List[str]:
        """sbatch --parsable of the chunk's script in the job folder."""
        return [self.cmd("sbatch"), *self.clusters(), "--parsable", f"--chdir={req.jobdir}",
                *slurm_args(req.after, name),
                f"{req.jobdir}/{name}"]

    def parse_id(self, out: str) -> str:
        """The job id sbatch --parsable printed ('' when none)."""
        first = out.strip().split(";")[0]  # "123" or "123;cluster"
        return first if first.isdigit() else ""

    # -- poll -----------------------------------------------------------------------------
    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """One squeue: --me and a fixed format, the same command line whatever the number of jobs.
        Without -r: an array's pending elements come as one line with a range (`5-99999%50`),
        so the answer grows with what started, not with the job's size.
        The job name (last: any text) finds jobs whose submitter died before storing the ids;
        every user's jobs (the queue page) come with the user, as a card's native ids are a claim."""
        if self.all_users:
            return PollRequest([self.cmd("squeue"), *self.clusters(), "-h", "-o", "%F|%K|%T|%r|%u|%j"])
        return PollRequest([self.cmd("squeue"), *self.clusters(), "--me", "-h", "-o", "%F|%K|%T|%r|%j"])

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """squeue's lines -> observations; remembers DPU job names."""
        res = self.polled(got, "squeue")
        owners = chunk_owners(jobs)
        claims = _claims(jobs) if self.all_users else {}
        out: Observed = {}
        self.names, self.never = {}, {}
        for line in res.stdout.splitlines():
            if self.all_users:   # ...|user|name: a job counts only for a job of the same user
                parts = line.split(_SEP, 5)
                if len(parts) > 5:
                    self.remember(parts[5], parts[0])
                found = claims.get((parts[0], parts[4])) if len(parts) > 4 else None
                parts = parts[:4]
            else:
                parts = line.split(_SEP, 4)
                if len(parts) > 4:
                    self.remember(parts[4], parts[0])
                found = owners.get(parts[0])
            if len(parts) < 3 or found is None:
                continue
            job, offset, span = found
            reason = parts[3] if len(parts) > 3 and parts[3] not in ("None", "(null)") else ""
            obs = self.observe(parts[2])
            if reason and obs.state == QUEUED:
                obs.reason = f"{parts[2]} ({reason})"
            seen = out.setdefault(job.id, Seen())
            assert isinstance(seen, Seen)
            # A dependency that can never be met: graph.settle cancels those processes and ends them S.
            never = self.never.setdefault(job.id, set()) if reason == "DependencyNeverSatisfied" \
                and obs.state == QUEUED else None
            if parts[1].isdigit():
                seen[offset + int(parts[1])] = obs
                if never is not None:
                    never.add(offset + int(parts[1]))
                continue
            try:
                ranges = parse_ranges(parts[1])
            except SchedulerError:
                log.warning("squeue: unreadable array index %r of job %s; skipping the line",
                            parts[1], parts[0])
                continue
            for part in ranges:
                kept = clip(part, 0, span - 1)
                if kept is not None:
                    seen.add((kept[0] + offset, kept[1] + offset, kept[2]), obs)
                    if never is not None:
                        never.update(range(kept[0] + offset, kept[1] + offset + 1, kept[2]))
        return out

    # -- history --------------------------------------------------------------------------
    def history_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """sacct of ended array tasks, when the cluster keeps accounting."""
        if self._accounting is False:
            return None
        everyone = ["--allusers"] if self.all_users else []
        fields = "JobID,State,ExitCode,User,JobName" if self.all_users else "JobID,State,ExitCode,JobName"
        return [self.cmd("sacct"), *self.clusters(), *everyone, "-X", "-P", "-n",
                "-S", since(jobs, "%Y-%m-%dT%H:%M:%S"), "-o", fields]

    def parse_history(self, jobs: Sequence[Job], res: Completed) -> Observed:
        """sacct's lines -> how array tasks ended; notes when accounting is off."""
        if res.returncode != 0 or "accounting storage is disabled" in (res.stderr + res.stdout):
            self._accounting = False
            return {}
        self._accounting = True
        owners = chunk_owners(jobs)
        claims = _claims(jobs) if self.all_users else {}
        limits = {j.id: int(j.dpu_options.get("time_limit") or 0) for j in jobs}
        out: Observed = {}
        for line in res.stdout.splitlines():
            if self.all_users:
                parts = line.split(_SEP, 4)
                array_id, _, task = parts[0].partition("_")
                if len(parts) > 4:
                    self.remember(parts[4], array_id)
                found = claims.get((array_id, parts[3])) if len(parts) > 3 else None
                parts = parts[:3]
            else:
                parts = line.split(_SEP, 3)
                array_id, _, task = parts[0].partition("_")
                if len(parts) > 3:
                    self.remember(parts[3], array_id)
                found = owners.get(array_id)
            if len(parts) < 3 or found is None or not task.isdigit():
                continue
            job, offset, _ = found
            state = parts[1].split()[0]
            reason = f"exit code {parts[2]}" if state == "FAILED" else ""
            if state == "TIMEOUT" and limits[job.id]:
                reason = f"killed after {hms(limits[job.id])}"
            out.setdefault(job.id, {})[offset + int(task)] = self.observe(state, reason)
        return out

    # -- usage --------------------------------------------------------------------------
    USAGE_SOURCE = "sacct"

    def usage_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """sacct of these jobs' arrays with their steps: the peak is a step's (jobacct_gather)."""
        natives = [n for j in jobs for n in j.native_ids if n]
        if not natives or self._accounting is False:
            return None
        everyone = ["--allusers"] if self.all_users else []
        return [self.cmd("sacct"), *everyone, "--parsable2", "-n", "-j", ",".join(natives),
                "-o", "JobID,State,MaxRSS,ElapsedRaw,TotalCPU"]

    def parse_usage(self, jobs: Sequence[Job], res: Completed) -> Usage:
        """sacct's lines -> figures of ended array tasks (nothing when accounting is off)."""
        return parse_sacct(jobs, res.stdout) if res.returncode == 0 else {}

    # -- cancel ---------------------------------------------------------------------------
    def cancel_argv(self, job: Optional[Job], force: bool, natives: Sequence[str]) -> List[List[str]]:
        """scancel of the job's arrays; only their pending tasks unless force."""
        return [[self.cmd("scancel"), *self.clusters(), *([] if force else ["--state=PENDING"]), *natives]]

    def cancel_indices(self, job: Job, indices: Sequence[int]) -> None:
        """scancel --state=PENDING of these array tasks (ARRAY_TASK per process)."""
        tasks = [f"{native}_{i - offset}" for native, (offset, ids) in zip(job.native_ids, layout(job),
                                                                           strict=False)
                 for i in indices if i in ids and native]
        if tasks:
            self.check_cancel(self.transport.run([self.cmd("scancel"), *self.clusters(), "--state=PENDING",
                                                  *tasks]))

    # -- DRMAA ----------------------------------------------------------------------------
    @classmethod
    def drmaa_spec(cls, dpu: DPUConfig, req: SubmitRequest) -> Optional[List[str]]:
        """--time, --mem, --partition, --account and --qos as sbatch options."""
        parts = [f"--time={minutes(req.time_limit)}", f"--mem={req.mem}M"]
        parts += [f"--partition={req.partition}"] if req.partition else []
        parts += [f"--account={dpu.account}"] if dpu.account else []
        parts += [f"--qos={dpu.qos}"] if dpu.qos else []
        return parts
