"""PBS Pro and Torque: one array job per chunk (``-J`` / ``-t``), one ``qstat`` call per poll.

States: PBS Pro reference guide, "Job States" (qstat(1B)), and Torque's qstat(1B):
https://2021.help.altair.com/2021.1/PBSProfessional/PBSReferenceGuide2021.1.pdf (RG-199),
http://docs.adaptivecomputing.com/torque/archive/3-0-2/commands/qstat.php

The poll is PBS Pro's ``qstat -f -F json`` or Torque's ``qstat -x`` (XML), with whole job names;
where ``-x`` is refused (Slurm's wrappers) the same command runs a text form (``qstat -u`` /
``-f``), parsed only as that fallback. An array is one row (``123[].server``), so the output does
not grow with the number of processes; a row without a subjob index says the array is alive,
and each process's own record says whether it started. Slurm's Torque-compatible
wrappers list each running array task under a job id of its own: those rows are matched by the
job name, which carries the DPU job id.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
import xml.etree.ElementTree as ET
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..config import DPUConfig
from ..errors import Unreachable
from ..render import quote
from ..states import Phase
from ..store import Job
from ..transport.base import Completed, Gathered
from .accounting import Usage, pbs_figures
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observation,
    Observed,
    PollRequest,
    Scheduler,
    SubmitRequest,
    chunk_tag,
    index_chunks,
    job_tag,
    number_owners,
    tag_of,
    walltime,
)
from .depend import pbs_args
from .helpers import layout, runs
from .ranges import as_seen

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
Row = Tuple[str, str, str, str]   # job id, owner, job name, state
_ID = re.compile(r"^(\d+)(?:\[(\d*)\])?(?:\.\S*)?$")


def split_id(native: str) -> Tuple[str, Optional[int], bool]:
    """(sequence number, subjob index, is an array) of a PBS job id.

    '123[4].server' -> ('123', 4, True); '123[].s' -> ('123', None, True); '123' -> ('123', None, False).
    """
    m = _ID.match(native.strip())
    if not m:
        return native.strip(), None, False
    index = m.group(2)
    return m.group(1), (int(index) if index else None), "[" in native


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


def parse_json(text: str) -> List[Dict[str, str]]:
    """PBS Pro's ``qstat -f -F json``: {"Jobs": {id: {attribute: value}}} -> parse_full's blocks."""
    jobs = json.loads(text).get("Jobs") or {}
    return [{"Job Id": str(job_id), **{k: str(v) for k, v in attrs.items() if not isinstance(v, dict)}}
            for job_id, attrs in jobs.items() if isinstance(attrs, dict)]


def parse_torque_xml(text: str) -> List[Dict[str, str]]:
    """Torque's ``qstat -x``: <Data><Job><Job_Id>..</Job_Id><job_state>..</job_state>..</Job>."""
    blocks = []
    for elem in ET.fromstring(text).iter("Job"):  # noqa: S314 - our own qstat's output
        block = {child.tag: (child.text or "").strip() for child in elem if len(child) == 0}
        blocks.append({"Job Id": block.pop("Job_Id", ""), **block})
    return blocks


def is_structured(text: str) -> bool:
    """Whether qstat printed JSON or XML (not the text forms)."""
    return text.lstrip()[:1] in ("{", "<")


def parse_any(text: str) -> Optional[List[Dict[str, str]]]:
    """Blocks of any full listing (JSON, XML, ``qstat -f`` text); None for the alternative format."""
    head = text.lstrip()[:1]
    try:
        if head == "{":
            return parse_json(text)
        if head == "<":
            return parse_torque_xml(text)
    except (ValueError, ET.ParseError, AttributeError) as exc:
        raise Unreachable(f"qstat printed something unreadable: {exc}") from None
    if not text.strip() or "Job Id:" in text:
        return parse_full(text)
    return None


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
    """PBS Pro and Torque: qsub per chunk, one qstat per poll (JSON / XML, text as a fallback)."""

    name = "pbs"
    ORDER = 2
    RERUN = True
    STATE_MAP = STATE_MAP
    TRANSIENT = TRANSIENT
    GONE = _GONE

    # -- submit ---------------------------------------------------------------------------
    def script_context(self, req: SubmitRequest, k: int, offset: int, count: int) -> Dict[str, Any]:
        """Flavor, array range and flag, walltime and output path of chunk k."""
        throttle = f"%{self.dpu.array_throttle}" if self.dpu.array_throttle else ""
        # PBS Pro refuses a one-index array: a chunk of one process is a plain job.
        return {"flavor": self.dpu.flavor, "array_flag": _ARRAY_FLAG.get(self.dpu.flavor, "-t"),
                "array": f"0-{count - 1}{throttle}" if count > 1 else "",
                "walltime": walltime(req.time_limit), "output": f"{req.jobdir}/out/job-{k}.out"}

    def rerun_chunks(self, indices: Sequence[int]) -> List[Tuple[int, List[int]]]:
        """One array per run of consecutive indices (within a chunk), as for Grid Engine."""
        return [(a, list(range(a, b + 1))) for _, part in index_chunks(indices, self.dpu.max_array_size)
                for a, b in runs(part)]

    def rerun_context(self, req: SubmitRequest, offset: int, ids: List[int]) -> Dict[str, Any]:
        """The run is indices 0..len(ids)-1 at its offset, as a first submission's chunk."""
        return {**self.script_context(req, 0, offset, len(ids)),
                "output": f"{req.jobdir}/out/job-r{req.rerun}-{offset}.out"}

    @staticmethod
    def directive_args(script: str) -> List[str]:
        """The script's #PBS lines as qsub options. A real qsub reads them from the script;
        Slurm's Torque wrappers do not, so they also go on the command line (same text)."""
        args: List[str] = []
        for line in script.splitlines():
            if line.startswith("#PBS "):
                args += shlex.split(line[5:])
        return args

    def submit_argv(self, req: SubmitRequest, name: str, text: str) -> List[str]:
        """qsub with the script's #PBS options on the command line too."""
        return [self.cmd("qsub"), *self.directive_args(text), *pbs_args(req.after, name, self.dpu.flavor),
                f"{req.jobdir}/{name}"]

    def parse_id(self, out: str) -> str:
        """The job id qsub printed last ('' when it printed none)."""
        lines = out.strip().splitlines()
        last = lines[-1].strip() if lines else ""
        return last if _ID.match(last) else ""

    # -- poll -----------------------------------------------------------------------------
    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """PBS Pro: `qstat -f -F json`; Torque: `qstat -x` (XML), falling back to the text forms
        (Slurm's Torque wrappers have no -x). The command line is the same whatever the number
        of jobs; whole job names, except in `qstat -u` (the text fallback while no job waits to
        be found by its tag: it lists only this user's jobs, but cuts names short)."""
        if self.dpu.flavor == "pbspro":
            return PollRequest([self.cmd("qstat"), "-f", "-F", "json"])
        whole = self.all_users or any(j.phase == Phase.RECORDED for j in jobs)
        return PollRequest(self.fallback(["-x"], ["-f"] if whole else ["-u", self.user()]))

    def fallback(self, xml: List[str], text: List[str]) -> List[str]:
        """One command: `qstat XML-ARGS`, else (it failed: no -x) `qstat TEXT-ARGS`."""
        script = '"$0" "$@" 2>/dev/null || exec "$0" ' + " ".join(quote(a) for a in text)
        return ["/bin/sh", "-c", script, self.cmd("qstat"), *xml]

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """qstat's listing (JSON, XML or text) -> observations; remembers DPU job names."""
        res = self.polled(got, "qstat", ok=(0, 35, 153))
        # Slurm's wrappers exit 153 when there is no job to list; PBS when an id is gone.
        if res.returncode != 0 and res.stdout.strip() and not is_structured(res.stdout):
            raise Unreachable(f"qstat failed on DPU {self.dpu.name!r}: {(res.stderr or res.stdout).strip()}")
        blocks = parse_any(res.stdout)
        self.names = {}
        if blocks is None:  # `qstat -u`: the alternative format
            return self.observations(jobs, parse_alt(res.stdout))
        who = None if self.all_users else self.user()
        rows = [r for r in full_rows(blocks) if who is None or r[1] == who]
        for native, _user, name, _state in rows:
            self.remember(name, native)
        return self.observations(jobs, iter(rows))

    def observations(self, jobs: Sequence[Job], rows: Iterable[Row]) -> Observed:
        """Rows of (id, user, name, state) -> job id -> process index -> Observation."""
        own = number_owners(jobs)
        by_tag = {chunk_tag(tag_of(j), k): (j, off, max(ids) - off + 1)
                  for j in jobs for k, (off, ids) in enumerate(layout(j)) if ids}
        by_tag.update({job_tag(j.user, j.id): (j, 0, j.nproc) for j in jobs})  # jobs of older versions
        exact: Observed = {}
        alive: Observed = {}
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
                    continue  # ended: the worker's record or the history says how
                exact.setdefault(job.id, {})[indices[0]] = obs
            elif obs.state != ENDED or obs.letter == "U":
                agg = obs if obs.state == ENDED else _aggregate(state, obs)
                # An array's summary row: its queued subjobs stay one range (not one entry each).
                alive[job.id] = as_seen(alive.get(job.id))
                alive[job.id].add((indices[0], indices[-1], 1), agg)  # type: ignore[attr-defined]
        for job_id, seen in exact.items():
            alive[job_id] = as_seen(alive.get(job_id)).merged(seen)
        return alive

    # -- history --------------------------------------------------------------------------
    def history_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """PBS Pro: `qstat -f -F json -x -t` (its job history); Torque: `qstat -x`, else -f."""
        natives = [n for j in jobs for n in j.native_ids if n]
        if not natives:
            return None
        if self.dpu.flavor == "pbspro":
            return [self.cmd("qstat"), "-f", "-F", "json", "-x", "-t", *natives]
        return self.fallback(["-x", *natives], ["-f", *natives])

    def parse_history(self, jobs: Sequence[Job], res: Completed) -> Observed:
        """Ended processes, with their exit status, from the history qstat."""
        return self.ended(jobs, parse_any(res.stdout) or [])

    def ended(self, jobs: Sequence[Job], blocks: List[Dict[str, str]]) -> Observed:
        """Ended processes of `qstat -f` blocks, with how they ended (exit status)."""
        own = number_owners(jobs)
        out: Observed = {}
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

    # -- usage --------------------------------------------------------------------------
    USAGE_SOURCE = "pbs"

    def usage_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """The same history qstat: ended subjobs carry resources_used."""
        return self.history_request(jobs)

    def parse_usage(self, jobs: Sequence[Job], res: Completed) -> Usage:
        """resources_used of the ended processes of these jobs."""
        return self.used(jobs, parse_any(res.stdout) or [])

    def used(self, jobs: Sequence[Job], blocks: List[Dict[str, str]]) -> Usage:
        """resources_used (walltime, cput, mem) of `qstat -f` blocks, by process."""
        own = number_owners(jobs)
        out: Usage = {}
        for block in blocks:
            number, index, is_array = split_id(block.get("Job Id", ""))
            found = own.get(number)
            if found is None or (is_array and index is None) or (index is None and found[2] != 1):
                continue
            figures = pbs_figures(block)
            if figures.any():
                out.setdefault(found[0].id, {})[found[1] + (index or 0)] = figures
        return out

    # -- cancel ---------------------------------------------------------------------------
    def cancel_argv(self, job: Optional[Job], force: bool, natives: Sequence[str]) -> List[List[str]]:
        """qdel of the job's arrays: the session has checked nothing runs unless force is given."""
        return [[self.cmd("qdel"), *natives]]

    # -- DRMAA ----------------------------------------------------------------------------
    @classmethod
    def drmaa_spec(cls, dpu: DPUConfig, req: SubmitRequest) -> Optional[List[str]]:
        """walltime, mem, queue and account as qsub options."""
        parts = ["-l", f"walltime={walltime(req.time_limit)},mem={req.mem}mb"]
        parts += ["-q", req.partition] if req.partition else []
        return parts + (["-A", dpu.account] if dpu.account else [])

    @classmethod
    def drmaa_array_id(cls, task_id: str) -> str:
        """The array id of a subjob id ('12[1].s' -> '12[].s')."""
        return re.sub(r"\[\d+\]", "[]", task_id)  # '12[1].s' -> '12[].s'


def _aggregate(state: str, obs: Observation) -> Observation:
    """A whole-array row: every process of it is at least queued; its record says if it started."""
    return Observation(QUEUED, "", f"array {state}" if obs.state == RUNNING else "")
