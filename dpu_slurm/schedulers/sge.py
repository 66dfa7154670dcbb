"""Grid Engine on the command line: ``qsub -t 1-N`` per chunk, ONE ``qstat -xml`` per poll.

States: qstat(1) of Grid Engine 8.1 ("the status of the job"), table of job states in
https://sources.debian.org/src/gridengine/8.1.9%2Bdfsg-13.1/doc/man/man1/qstat.1
Pending tasks of an array are listed as one row with a range ("3-1000:1"), running ones one
row each: the output grows with the running tasks, not with the size of the job.
Task ids are 1-based: process = chunk offset + SGE_TASK_ID - 1.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import DPUConfig
from ..errors import Unreachable
from ..store import Job
from ..transport.base import Completed, Gathered
from .accounting import Usage, parse_qacct_usage
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observation,
    Observed,
    PollRequest,
    Scheduler,
    SubmitRequest,
    index_chunks,
    number_owners,
    since,
    walltime,
)
from .depend import sge_args
from .helpers import layout, runs
from .ranges import Seen, clip, parse_ranges

log = logging.getLogger(__name__)

# native state -> (state, letter). Keys are upper-cased (base.observe does so): the pairs that
# then coincide ('t' transferring / 'T' threshold-suspended, 's' / 'S' suspended) mean the same
# to us. d = being deleted, E = error, h = hold, R = restarted, q/w = queued/waiting.
STATE_MAP = {
    "QW": (QUEUED, ""), "HQW": (QUEUED, ""), "HRWQ": (QUEUED, ""), "RQ": (QUEUED, ""),
    "RQW": (QUEUED, ""),
    "HR": (RUNNING, ""), "HT": (RUNNING, ""), "HRR": (RUNNING, ""), "HRT": (RUNNING, ""),  # held meanwhile
    "R": (RUNNING, ""), "T": (RUNNING, ""), "RR": (RUNNING, ""), "RT": (RUNNING, ""),
    "S": (RUNNING, ""), "TS": (RUNNING, ""), "TT": (RUNNING, ""), "RS": (RUNNING, ""),
    "RTS": (RUNNING, ""), "RTT": (RUNNING, ""), "N": (RUNNING, ""), "P": (RUNNING, ""),
    "DR": (RUNNING, ""), "DT": (RUNNING, ""), "DRR": (RUNNING, ""), "DRT": (RUNNING, ""),
    "DS": (RUNNING, ""), "DRS": (RUNNING, ""),
    "DQW": (QUEUED, ""), "DHQW": (QUEUED, ""),      # deleted while queued: gone at the next poll
    "EQW": (ENDED, "E"), "EHQW": (ENDED, "E"), "EHRQW": (ENDED, "E"),  # cannot start: qstat -j says why
    "Z": (ENDED, "S"),                              # zombie (qstat -s z): ended, record decides
}
TRANSIENT = ("unable to contact qmaster", "can't unpack gdi request", "failed receiving gdi request",
              "commlib error", "got no connection")
_GONE = ("does not exist", "has already been deleted", "already in deletion", "registered the job",
         "has deleted")


def task_ids(text: str) -> List[int]:
    """Grid Engine's task list: '4', '1-10:1', '2,5-9:2' -> the task ids."""
    out: List[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        span, _, step = part.partition(":")
        first, _, last = span.partition("-")
        out += range(int(first), int(last or first) + 1, int(step or 1))
    return out


def parse_xml(text: str) -> Iterator[Tuple[str, str, str, str]]:
    """(job number, job name, state, task list) per job_list element of ``qstat -xml``."""
    if not text.strip():
        return
    for elem in ET.fromstring(text).iter("job_list"):  # noqa: S314 - our own qstat's output
        yield (elem.findtext("JB_job_number", ""), elem.findtext("JB_name", ""),
               elem.findtext("state", ""), elem.findtext("tasks", ""))


def parse_qacct(text: str) -> Iterator[Dict[str, str]]:
    """Records of ``qacct -j``: blocks separated by '====' lines, 'key value' per line."""
    record: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("====="):
            if record:
                yield record
            record = {}
            continue
        key, _, value = line.partition(" ")
        if key:
            record[key] = value.strip()
    if record:
        yield record


def accounting_observation(record: Dict[str, str]) -> Observation:
    """An ended task's verdict from its accounting record (exit_status, failed)."""
    status = int((record.get("exit_status") or "0").split()[0])
    failed = (record.get("failed") or "0").strip()
    if failed.split()[0] == "37" or (status > 128 and failed != "0"):
        return Observation(ENDED, "A", f"killed by Grid Engine: failed {failed}, exit status {status}")
    if status > 128:
        return Observation(ENDED, "A", f"killed by signal {status - 128}")
    if status > 0:
        return Observation(ENDED, "E", f"exit status {status}")
    if failed != "0":
        return Observation(ENDED, "E", f"failed {failed}")
    return Observation(ENDED, "N", "exit status 0")


class SGEScheduler(Scheduler):
    """Grid Engine on the command line: qsub -t per chunk, qstat -xml per poll, qacct, qdel."""

    name = "sge"
    ORDER = 3
    STATE_MAP = STATE_MAP
    TRANSIENT = TRANSIENT
    GONE = _GONE
    RERUN = True
    REQUEUE = "sge"

    # -- submit ---------------------------------------------------------------------------
    def script_context(self, req: SubmitRequest, k: int, offset: int, count: int) -> Dict[str, Any]:
        """Walltime (h_rt) and array throttle of the chunk."""
        return {"walltime": walltime(req.time_limit), "throttle": self.dpu.array_throttle}

    def rerun_chunks(self, indices: Sequence[int]) -> List[Tuple[int, List[int]]]:
        """-t takes one range per job: one array per run of consecutive indices (within a chunk)."""
        return [(ids[0], ids) for _, part in index_chunks(indices, self.dpu.max_array_size)
                for first, last in runs(part) for ids in [list(range(first, last + 1))]]

    def rerun_context(self, req: SubmitRequest, offset: int, ids: List[int]) -> Dict[str, Any]:
        """The run's tasks are 1..len(ids) at its offset, as for a first submission's chunk."""
        return self.script_context(req, 0, offset, len(ids))

    def submit_argv(self, req: SubmitRequest, name: str, text: str) -> List[str]:
        """qsub -terse of the chunk's script (it prints only the id)."""
        return [self.cmd("qsub"), "-terse", *sge_args(req.after, name), f"{req.jobdir}/{name}"]

    def parse_id(self, out: str) -> str:
        """The job number qsub -terse printed ('' when none)."""
        first = out.strip().split(".")[0]
        return first if first.isdigit() else ""

    # -- poll -----------------------------------------------------------------------------
    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """One qstat -xml of this user's (the page: everyone's) jobs."""
        owner = "*" if self.all_users else self.user()
        return PollRequest([self.cmd("qstat"), "-u", owner, "-xml"])

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """qstat -xml -> observations; Unreachable when it is not XML."""
        res = self.polled(got, "qstat")
        try:
            rows = list(parse_xml(res.stdout))
        except ET.ParseError as exc:
            raise Unreachable(f"qstat -xml printed something unreadable: {exc}") from None
        self.names = {}
        return self.observations(jobs, rows)

    def observations(self, jobs: Sequence[Job], rows: Sequence[Tuple[str, str, str, str]]) -> Observed:
        """Rows of (number, name, state, tasks) -> job id -> process index -> Observation."""
        own = number_owners(jobs)
        out: Observed = {}
        for number, name, state, tasks in rows:
            self.remember(name, number)
            if number not in own:
                continue
            job, offset, count = own[number]
            obs = self.observe(state)
            if obs.state == ENDED and obs.letter == "E":
                obs.reason = f"{state}: Grid Engine cannot start it (qstat -j {number} says why)"
            seen = out.setdefault(job.id, Seen())
            assert isinstance(seen, Seen)
            # A pending array's tasks come as one range ('2-100:1'): kept as a range, not expanded.
            for span in parse_ranges(tasks) if tasks else [(1, 1, 1)]:
                kept = clip(span, 1, count)
                if kept is not None:
                    seen.add((offset + kept[0] - 1, offset + kept[1] - 1, kept[2]), obs)
        return out

    # -- history --------------------------------------------------------------------------
    def history_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """Ended tasks from the accounting file (``qacct``), one call for all these jobs."""
        owner = [] if self.all_users else ["-o", self.user()]
        return [self.cmd("qacct"), *owner, "-b", since(jobs, "%Y%m%d%H%M"), "-j"]

    def parse_history(self, jobs: Sequence[Job], res: Completed) -> Observed:
        """qacct records -> how the processes ended; nothing when accounting is off."""
        if res.returncode != 0:
            return {}  # no accounting file yet, or accounting off: the worker's records decide
        own = number_owners(jobs)
        out: Observed = {}
        for record in parse_qacct(res.stdout):
            number = record.get("jobnumber", "")
            self.remember(record.get("jobname", ""), number)
            task = (record.get("taskid") or "undefined").strip()
            if number not in own:
                continue
            job, offset, count = own[number]
            index = int(task) if task.isdigit() else 1
            if 1 <= index <= count:
                out.setdefault(job.id, {})[offset + index - 1] = accounting_observation(record)
        return out

    # -- usage --------------------------------------------------------------------------
    USAGE_SOURCE = "qacct"

    def usage_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """The same qacct as the history: its records carry the figures too."""
        return self.history_request(jobs)

    def parse_usage(self, jobs: Sequence[Job], res: Completed) -> Usage:
        """qacct records -> figures (ru_wallclock, cpu, ru_maxrss or maxvmem)."""
        return parse_qacct_usage(jobs, parse_qacct(res.stdout)) if res.returncode == 0 else {}

    # -- cancel ---------------------------------------------------------------------------
    def cancel_queued(self, job: Job, queued: Sequence[int]) -> bool:
        """``qdel JOB -t FIRST-LAST`` per chunk and run of queued tasks (usually one per chunk:
        Grid Engine starts an array's tasks in order, the queued ones are its tail)."""
        for native, (offset, ids) in zip(job.native_ids, layout(job), strict=False):
            tasks = sorted(i - offset + 1 for i in queued if i in ids)
            for first, last in runs(tasks):
                self.check_cancel(self.transport.run([self.cmd("qdel"), native, "-t", f"{first}-{last}"]))
        return True

    def cancel_indices(self, job: Job, indices: Sequence[int]) -> None:
        """qdel of these queued tasks (their prerequisite failed)."""
        self.cancel_queued(job, indices)

    def cancel_argv(self, job: Optional[Job], force: bool, natives: Sequence[str]) -> List[List[str]]:
        """qdel of the job's arrays: the session has checked nothing runs unless force is given."""
        return [[self.cmd("qdel"), *natives]]

    # -- DRMAA ----------------------------------------------------------------------------
    @classmethod
    def drmaa_spec(cls, dpu: DPUConfig, req: SubmitRequest) -> Optional[List[str]]:
        """h_rt, h_vmem, queue, account and throttle as qsub options."""
        parts = ["-l", f"h_rt={walltime(req.time_limit)},h_vmem={req.mem}M"]
        parts += ["-q", req.partition] if req.partition else []
        parts += ["-A", dpu.account] if dpu.account else []
        return parts + (["-tc", str(dpu.array_throttle)] if dpu.array_throttle else [])

    @classmethod
    def drmaa_env(cls, env: Dict[str, str]) -> None:
        """SGE_ROOT and SGE_CELL for libdrmaa when unset and the default cell exists."""
        if "SGE_ROOT" not in env and Path("/var/lib/gridengine/default").is_dir():
            env.update(SGE_ROOT="/var/lib/gridengine", SGE_CELL=env.get("SGE_CELL", "default"))

    def drmaa_history(self, jobs: Sequence[Job]) -> Observed:
        """The qacct history, added to what DRMAA's own wait() data says."""
        return self.history(jobs)


__all__ = ["SGEScheduler", "STATE_MAP", "parse_xml", "parse_qacct", "task_ids", "QUEUED", "RUNNING"]
