"""PBS Pro and Torque: one array job per chunk (``-J`` / ``-t``), one ``qstat`` call per poll.

States: PBS Pro reference guide, "Job States" (qstat(1B)), and Torque's qstat(1B):
https://2021.help.altair.com/2021.1/PBSProfessional/PBSReferenceGuide2021.1.pdf (RG-199),
http://docs.adaptivecomputing.com/torque/archive/3-0-2/commands/qstat.php

``qstat -u USER`` lists an array as one row (``123[].server``) in both dialects, so the poll's
output does not grow with the number of processes; a row without a subjob index says the array
is alive, and each process's own record says whether it started. Slurm's Torque-compatible
wrappers list each running array task under a job id of its own: those rows are matched by the
job name, which carries the DPU job id.
"""
from __future__ import annotations

import logging
import math
import re
import shlex
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import SchedulerError, Unreachable
from ..store import Job
from ..transport.base import Gathered
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observation,
    Scheduler,
    SubmitRequest,
    chunk_owners,
    chunk_size,
    chunk_tag,
    chunks,
    job_tag,
    minute_limit,
    tag_of,
)

log = logging.getLogger(__name__)

# native state -> (state, letter). A row without a subjob index is the whole array: it only says
# the array is alive (see _aggregate). Ended rows say nothing of how a process ended: the worker's
# record does, else `qstat -f` (history) does, else S (never ran) / A (started, no final record).
STATE_MAP = {
    "Q": (QUEUED, ""),    # queued, eligible to run or be routed
    "H": (QUEUED, ""),    # held by the user, an admin or the server
    "W": (QUEUED, ""),    # waiting for its execution time (-a) or after a failed stage-in
    "T": (QUEUED, ""),    # in transit: being moved to a new location
    "R": (RUNNING, ""),   # running
    "E": (RUNNING, ""),   # exiting after having run
    "S": (RUNNING, ""),   # suspended by the server (Torque: suspended)
    "U": (RUNNING, ""),   # PBS Pro: user-suspended (cycle harvesting, workstation busy)
    "B": (RUNNING, ""),   # PBS Pro, arrays only: at least one subjob has begun
    "C": (ENDED, "S"),    # Torque: completed (kept for keep_completed seconds)
    "F": (ENDED, "S"),    # PBS Pro: finished (listed with -x)
    "X": (ENDED, "S"),    # PBS Pro, subjobs only: finished or deleted (expired)
    "M": (ENDED, "U"),    # PBS Pro: moved to another server; we cannot follow it there
}
_ARRAY_FLAG = {"torque": "-t", "pbspro": "-J"}
TRANSIENT = ("Connection refused", "cannot connect to server", "Communication failure",
              "Server not responding", "timed out", "pbs_iff")
_GONE = ("Unknown Job Id", "Invalid job id", "does not exist", "Job has finished", "already completed")
_ID = re.compile(r"^(\d+)(?:\[(\d*)\])?(?:\.\S*)?$")


def walltime(seconds: int) -> str:
    """HH:MM:SS (hours may pass 24), rounded up to whole minutes as the schedulers enforce them."""
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def split_id(native: str) -> Tuple[str, Optional[int], bool]:
    """(sequence number, subjob index, is an array) of a PBS job id.

    '123[4].server' -> ('123', 4, True); '123[].s' -> ('123', None, True); '123' -> ('123', None, False).
    """
    m = _ID.match(native.strip())
    if not m:
        return native.strip(), None, False
    index = m.group(2)
    return m.group(1), (int(index) if index else None), "[" in native


def owners(jobs: Sequence[Job]) -> Dict[str, Tuple[Job, int, int]]:
    """Numeric native id ('123' of '123[].server') -> (job, chunk offset, chunk size)."""
    return chunk_owners(jobs, lambda native: split_id(native)[0])


def parse_alt(text: str) -> Iterator[Tuple[str, str, str, str]]:
    """(job id, user, job name, state) per row of qstat's alternative format (-a / -u).

    Both dialects end a row with '... S Elap-Time'; Job ID, Username, Queue, Jobname lead it.
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or not fields[0][:1].isdigit():
            continue  # server line, headers, dashes
        yield fields[0], fields[1], fields[3], fields[-2]


def parse_full(text: str) -> List[Dict[str, str]]:
    """Blocks of ``qstat -f`` (Torque, PBS Pro; also with PBS Pro's -x): one dict per job.

    Long values continue on lines indented by a tab and without ' = '; they are joined.
    """
    jobs: List[Dict[str, str]] = []
    key = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("Job Id:"):
            jobs.append({"Job Id": line.split(":", 1)[1].strip()})
            key = ""
        elif jobs and " = " in line and not raw.startswith("\t\t"):
            key, _, value = line.strip().partition(" = ")
            jobs[-1][key] = value
        elif jobs and key and line.strip():
            jobs[-1][key] += line.strip()
    return jobs


def full_rows(blocks: List[Dict[str, str]]) -> Iterator[Tuple[str, str, str, str]]:
    """(job id, user, job name, state) of each ``qstat -f`` block, as parse_alt gives them."""
    for block in blocks:
        owner = block.get("Job_Owner", "").partition("@")[0]
        yield block["Job Id"], owner, block.get("Job_Name", ""), block.get("job_state", "")


def exit_observation(state: str, exit_status: Optional[str]) -> Observation:
    """An ended job's verdict from its exit status (qstat -f: exit_status / Exit_status)."""
    if exit_status is None or not exit_status.lstrip("-").isdigit():
        return Observation(ENDED, "S", f"{state}: it never ran")
    code = int(exit_status)
    if code == 0:
        return Observation(ENDED, "N", f"{state}: exit status 0")
    if code >= 256:  # both dialects: 256 + the signal that killed it
        return Observation(ENDED, "A", f"{state}: killed by signal {code - 256}")
    if code > 0:
        return Observation(ENDED, "E", f"{state}: exit status {code}")
    limits = {-10: "its memory limit", -11: "its walltime", -12: "its CPU time limit"}
    if code in limits:  # Torque's JOB_EXEC_OVERLIMIT_* codes
        return Observation(ENDED, "A", f"{state}: killed for exceeding {limits[code]}")
    return Observation(ENDED, "E", f"{state}: PBS could not run it (JOB_EXEC code {code})")


class PBSScheduler(Scheduler):
    name = "pbs"
    STATE_MAP = STATE_MAP
    TRANSIENT = TRANSIENT

    # -- submit ---------------------------------------------------------------------------
    def scripts(self, req: SubmitRequest) -> Dict[str, str]:
        flag = _ARRAY_FLAG.get(self.dpu.flavor, "-t")
        throttle = f"%{self.dpu.array_throttle}" if self.dpu.array_throttle else ""
        out: Dict[str, str] = {}
        for k, (offset, count) in enumerate(chunks(req.nproc, self.dpu.max_array_size)):
            # PBS Pro refuses a one-index array: a chunk of one process is a plain job.
            out[f"job-{k}.sh"] = self.script(
                req, offset=offset, count=count, flavor=self.dpu.flavor, array_flag=flag,
                array=f"0-{count - 1}{throttle}" if count > 1 else "",
                walltime=walltime(req.time_limit), output=f"{req.jobdir}/out/job-{k}.out",
                tag=req.chunk_tag(k), time_limit_enforced=minute_limit(req.time_limit))
        return out

    @staticmethod
    def directive_args(script: str) -> List[str]:
        """The script's #PBS lines as qsub options. A real qsub reads them from the script;
        Slurm's Torque wrappers do not, so they also go on the command line (same text)."""
        args: List[str] = []
        for line in script.splitlines():
            if line.startswith("#PBS "):
                args += shlex.split(line[5:])
        return args

    def submit(self, req: SubmitRequest) -> List[str]:
        def job_id(out: str) -> str:
            lines = out.strip().splitlines()
            last = lines[-1].strip() if lines else ""
            return last if _ID.match(last) else ""

        return self.submit_chunks(
            self.stage(req),
            lambda name, text: [self.cmd("qsub"), *self.directive_args(text), f"{req.jobdir}/{name}"],
            job_id, "qdel", req.accepted)

    # -- poll -----------------------------------------------------------------------------
    def poll(self, jobs: Sequence[Job]) -> Dict[int, Dict[int, Observation]]:
        # `qstat -u` cuts job names to 10-16 characters: while a job waits to be found by its
        # tag (its submitter died), the one call is `qstat -f`, which carries whole names.
        full = any(j.phase == "recorded" for j in jobs)
        mine = [] if self.all_users or full else ["-u", self.user()]
        res = self.transport.run([self.cmd("qstat"), *(["-f"] if full else mine)], timeout=60)
        # Slurm's wrappers exit 153 when there is no job to list.
        if res.returncode not in (0, 153) or (res.returncode == 153 and res.stdout.strip()):
            raise Unreachable(f"qstat failed on DPU {self.dpu.name!r}: "
                              f"{(res.stderr or res.stdout).strip()}")
        self.names = {}
        if full:
            who = None if self.all_users else self.user()
            self._rows = [r for r in full_rows(parse_full(res.stdout)) if who is None or r[1] == who]
            for native, _user, name, _state in self._rows:
                self.remember(name, native)
        else:
            self._rows = list(parse_alt(res.stdout))
        return self.observations(jobs, iter(self._rows))

    def reparse(self, jobs: Sequence[Job], got: Gathered) -> Dict[int, Dict[int, Observation]]:
        """Jobs adopted after the poll: the rows of that same qstat call."""
        return self.observations(jobs, iter(getattr(self, "_rows", [])))

    def observations(self, jobs: Sequence[Job],
                     rows: Iterator[Tuple[str, str, str, str]]) -> Dict[int, Dict[int, Observation]]:
        """Rows of (id, user, name, state) -> job id -> process index -> Observation."""
        own = owners(jobs)
        by_tag = {chunk_tag(tag_of(j), k): (j, off, n)
                  for j in jobs for k, (off, n) in enumerate(chunks(j.nproc, chunk_size(j)))}
        by_tag.update({job_tag(j.user, j.id): (j, 0, j.nproc) for j in jobs})  # jobs of older versions
        exact: Dict[int, Dict[int, Observation]] = {}
        alive: Dict[int, Dict[int, Observation]] = {}
        for native, _user, name, state in rows:
            number, index, is_array = split_id(native)
            if number in own:
                job, offset, count = own[number]
                if index is None and not is_array and count == 1:
                    index = 0  # a plain job: its one process
                indices = [offset + index] if index is not None else list(range(offset, offset + count))
            elif name in by_tag:  # a wrapper's array task under a job id of its own
                job, offset, count = by_tag[name]
                index, indices = None, list(range(offset, offset + count))
            else:
                continue
            obs = self.observe(state)
            if index is not None:
                if obs.state == ENDED and obs.letter == "S":
                    continue  # ended: the worker's record or `qstat -f` says how
                exact.setdefault(job.id, {})[indices[0]] = obs
            elif obs.state != ENDED or obs.letter == "U":
                agg = obs if obs.state == ENDED else _aggregate(state, obs)
                seen = alive.setdefault(job.id, {})
                for idx in indices:
                    seen.setdefault(idx, agg)
        for job_id, seen in exact.items():
            alive.setdefault(job_id, {}).update(seen)
        return alive

    def history(self, jobs: Sequence[Job]) -> Dict[int, Dict[int, Observation]]:
        """Ended processes from ``qstat -f`` (PBS Pro: with -x, its job history), one call."""
        natives = [n for j in jobs for n in j.native_ids]
        if not natives:
            return {}
        extra = ["-x", "-t"] if self.dpu.flavor == "pbspro" else []
        res = self.transport.run([self.cmd("qstat"), "-f", *extra, *natives], timeout=60)
        return self.ended(jobs, parse_full(res.stdout))

    def ended(self, jobs: Sequence[Job], blocks: List[Dict[str, str]]) -> Dict[int, Dict[int, Observation]]:
        own = owners(jobs)
        out: Dict[int, Dict[int, Observation]] = {}
        for block in blocks:
            number, index, is_array = split_id(block["Job Id"])
            state = block.get("job_state", "")
            if number not in own or (is_array and index is None):
                continue  # an array's parent row: its subjobs carry the outcome
            job, offset, count = own[number]
            if index is None and count != 1:
                continue
            obs = self.observe(state)
            if obs.state != ENDED:
                continue
            if obs.letter == "S":
                obs = exit_observation(state, block.get("Exit_status", block.get("exit_status")))
            out.setdefault(job.id, {})[offset + (index or 0)] = obs
        return out

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self, job: Job, force: bool) -> None:
        """qdel of the job's arrays: the session has checked nothing runs unless force is given."""
        res = self.transport.run([self.cmd("qdel"), *job.native_ids])
        text = (res.stderr + res.stdout).strip()
        if res.returncode != 0 and not all(any(g in line for g in _GONE)
                                           for line in text.splitlines() if line.strip()):
            raise SchedulerError(f"qdel failed: {text}")


def _aggregate(state: str, obs: Observation) -> Observation:
    """A whole-array row: every process of it is at least queued; its record says if it started."""
    return Observation(QUEUED, "", f"array {state}" if obs.state == RUNNING else "")
