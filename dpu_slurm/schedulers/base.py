"""The scheduler contract: render a script, submit, poll MANY jobs in one call, cancel.

A new scheduler is one module here plus one template in templates/.
"""
from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import DPUConfig, current_user
from ..errors import SchedulerError, SubmitError
from ..render import render
from ..store import Job
from ..transport import Transport
from ..transport.base import Gathered

log = logging.getLogger(__name__)

QUEUED, RUNNING, ENDED = "QUEUED", "RUNNING", "ENDED"


@dataclass
class Observation:
    """What the scheduler says of one process."""

    state: str            # QUEUED, RUNNING or ENDED
    letter: str = ""      # when ENDED, the scheduler's verdict: N, E, A, S or U
    reason: str = ""


@dataclass
class PollRequest:
    argv: Optional[List[str]]
    files: List[str] = field(default_factory=list)


@dataclass
class SubmitRequest:
    """Everything a template and a submit command need; values are quoted by render."""

    job_id: int
    user: str
    dpu: str
    sequence: str
    jobdir: str
    nproc: int
    time_limit: int
    mem: int
    partition: str | None
    python: str
    pythonpath: str
    setup: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    store: str = ""   # the store's id: job ids are per store, the tag must be unique per user
    # Called with the native ids accepted so far, after each chunk: the store keeps them at once,
    # so a submitter killed between chunks loses at most the id of the chunk in flight.
    accepted: Optional[Callable[[List[str]], None]] = None

    @property
    def tag(self) -> str:
        return job_tag(self.user, self.job_id, self.store)

    def chunk_tag(self, k: int) -> str:
        return chunk_tag(self.tag, k)


def chunks(nproc: int, size: int) -> List[Tuple[int, int]]:
    """(offset, count) per array job: array indices stay below the site's maximum array size."""
    size = max(1, size)
    return [(start, min(size, nproc - start)) for start in range(0, nproc, size)]


def chunk_owners(jobs: Sequence[Job], key: Callable[[str], str] = str
                 ) -> Dict[str, Tuple[Job, int, int]]:
    """Native id of each chunk -> (job, index offset of that chunk, process count of the chunk)."""
    out: Dict[str, Tuple[Job, int, int]] = {}
    for job in jobs:
        size = max(1, int(job.dpu_options.get("chunk") or job.nproc))
        for k, native in enumerate(job.native_ids):
            offset = k * size
            out[key(native)] = (job, offset, min(size, job.nproc - offset))
    return out


def minute_limit(seconds: int) -> int:
    """The time limit schedulers enforce: whole minutes, rounded up (what the worker is told)."""
    return 60 * max(1, math.ceil(seconds / 60))


def job_tag(user: str, job_id: int, store: str = "") -> str:
    """A job's tag: `dpu.<user>.<job id>.<store id>`, unique across a user's stores. Each chunk
    carries it with its index as the scheduler's job name (chunk_tag), so a job whose submitter
    died can be found and its native ids put in chunk order (reconcile.py)."""
    return f"dpu.{user}.{job_id}.{store}" if store else f"dpu.{user}.{job_id}"


def chunk_tag(tag: str, k: int) -> str:
    return f"{tag}.{k}"


def tag_of(job: Job) -> str:
    """The tag a stored job was submitted with (jobs recorded before store ids: the old one)."""
    return job_tag(job.user, job.id, str(job.dpu_options.get("store") or ""))


def chunk_size(job: Job) -> int:
    return max(1, int(job.dpu_options.get("chunk") or job.nproc))


def tagged(jobs: Sequence[Job], names: Mapping[str, str]) -> Dict[int, Dict[int, str]]:
    """Job id -> chunk index -> native id, for these jobs' chunks found among job names."""
    wanted = {tag_of(j): j.id for j in jobs}
    out: Dict[int, Dict[int, str]] = {}
    for name, native in names.items():
        base, _, k = name.rpartition(".")
        if base in wanted and k.isdigit():
            out.setdefault(wanted[base], {})[int(k)] = native
        elif name in wanted:  # dpu.<user>.<id>: a job of an older version, one name for all
            out.setdefault(wanted[name], {}).setdefault(0, native)
    return out


class Scheduler(ABC):
    name: ClassVar[str]
    # native state -> (QUEUED/RUNNING/ENDED, letter when ENDED)
    STATE_MAP: ClassVar[Mapping[str, Tuple[str, str]]] = {}
    # The queue page sets this: its polls cover every user's jobs, not only the caller's.
    all_users: bool = False
    # cancel(job, force=False) leaves running processes alone and cancels the queued ones of the
    # same array; schedulers that can only delete an array whole say False (see cancel_queued).
    CANCELS_QUEUED_ONLY: ClassVar[bool] = False

    def __init__(self, dpu: DPUConfig, transport: Transport) -> None:
        self.dpu = dpu
        self.transport = transport
        # Job name -> native id of the DPU jobs the last poll listed: how a job whose submitter
        # died before recording its ids is found (status.reconcile); filled by each poll.
        self.names: Dict[str, str] = {}
        self._polled: Optional[Gathered] = None

    def script(self, req: SubmitRequest, **extra: object) -> str:
        extra.setdefault("tag", req.tag)
        return render(f"{self.name}.sh.j2", **vars(req), dpu_config=self.dpu, **extra)

    def scripts(self, req: SubmitRequest) -> Dict[str, str]:
        """File name -> job script; schedulers that chunk arrays render one per chunk."""
        return {"job.sh": self.script(req)}

    def stage(self, req: SubmitRequest) -> Dict[str, str]:
        """Render the job's scripts and write them, with its output folder, in one transport call."""
        scripts = self.scripts(req)
        files = {f"{req.jobdir}/{name}": text.encode() for name, text in scripts.items()}
        files[f"{req.jobdir}/out/.keep"] = b""
        self.transport.write_files(files)
        return scripts

    # Scheduler messages that mean "try again later" rather than "this job is wrong".
    TRANSIENT: ClassVar[Tuple[str, ...]] = ()

    def submit_chunks(self, scripts: Dict[str, str], argv: Callable[[str, str], List[str]],
                      parse_id: Callable[[str], str], cancel: str,
                      accepted: Optional[Callable[[List[str]], None]] = None) -> List[str]:
        """Submit each chunk's script; if one is refused, cancel those already queued and raise
        SubmitError with the scheduler's message: a job is queued whole or not at all."""
        native: List[str] = []
        for name, text in scripts.items():
            res = self.transport.run(argv(name, text))
            job_id = parse_id(res.stdout) if res.returncode == 0 else ""
            if not job_id:
                msg = " ".join((res.stderr + " " + res.stdout).split()) or f"exit code {res.returncode}"
                if native:
                    back = self.transport.run([self.cmd(cancel), *native])
                    if back.returncode != 0:  # not "nothing queued": the next poll adopts what runs
                        raise SchedulerError(
                            f"{Path(argv(name, text)[0]).name} refused chunk {len(native)} ({msg}) and "
                            f"{cancel} of the chunks already queued ({' '.join(native)}) failed: "
                            f"{' '.join((back.stderr + back.stdout).split())}")
                raise SubmitError(f"{Path(argv(name, text)[0]).name} refused it: {msg}",
                                  transient=any(t in msg for t in self.TRANSIENT))
            native.append(job_id)
            if accepted is not None:
                accepted(list(native))
        return native

    def cmd(self, name: str) -> str:
        """A scheduler command, from the config's bin_dir when it names one."""
        return f"{self.dpu.bin_dir.rstrip('/')}/{name}" if self.dpu.bin_dir else name

    def user(self) -> str:
        """Whose jobs a poll lists: the login on the DPU's host, else this user."""
        return str((self.dpu.host or {}).get("user") or current_user())

    def observe(self, native: str, reason: str = "") -> Observation:
        """Native state -> Observation; an unmapped state is U with a warning, never a crash."""
        key = native.split()[0].rstrip("+").upper() if native.strip() else ""
        mapped = self.STATE_MAP.get(key)
        if mapped is None:
            log.warning("%s: unknown native state %r; counting the process as U", self.name, native)
            return Observation(ENDED, "U", f"unknown {self.name} state {native}")
        state, letter = mapped
        text = native if not reason else f"{native}: {reason}"
        return Observation(state, letter, text if state == ENDED or reason else "")

    @abstractmethod
    def submit(self, req: SubmitRequest) -> List[str]:
        """Queue every process of the job; return the native ids. Raise SubmitError."""

    def poll_request(self, jobs: Sequence[Job]) -> Optional[PollRequest]:
        """The status command and files that tell about all these jobs at once, so the
        transport can fetch them with the workers' records in one round trip. None: this
        scheduler polls by itself (poll() is called instead)."""
        return None

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Dict[int, Dict[int, Observation]]:
        raise NotImplementedError

    def poll(self, jobs: Sequence[Job]) -> Dict[int, Dict[int, Observation]]:
        """One scheduler call for all these jobs: job id -> process index -> Observation.
        Processes the scheduler no longer knows are left out."""
        req = self.poll_request(jobs)
        if req is None:
            raise NotImplementedError(f"{type(self).__name__} must define poll or poll_request")
        self._polled = self.transport.gather(req.argv, req.files, {}, "")
        return self.parse_poll(jobs, self._polled)

    def close(self) -> None:
        """Release what the scheduler holds (a DRMAA session helper); most hold nothing."""
        return None

    def history(self, jobs: Sequence[Job]) -> Dict[int, Dict[int, Observation]]:
        """What the scheduler's accounting remembers of ended processes (default: nothing);
        the names of the DPU jobs it lists are remembered too (a job whose submitter died)."""
        return {}

    def reparse(self, jobs: Sequence[Job], got: Gathered) -> Dict[int, Dict[int, Observation]]:
        """Observations of jobs adopted after the poll, from that same poll (no new call)."""
        if self.poll_request(jobs) is None:
            return {}
        last = got if got.completed is not None else self._polled
        return self.parse_poll(jobs, last) if last is not None else {}

    def remember(self, name: str, native: str) -> None:
        """Note a DPU job's name from a poll (only names of this package's tags are kept)."""
        if name.startswith("dpu."):
            self.names[name] = native

    def cancel_queued(self, job: Job, queued: Sequence[int]) -> bool:
        """Cancel these queued processes of a partly running job, leaving the running ones;
        False when this scheduler cannot single them out (nothing is done then)."""
        if not self.CANCELS_QUEUED_ONLY:
            return False
        self.cancel(job, False)
        return True

    @abstractmethod
    def cancel(self, job: Job, force: bool) -> None:
        """Cancel queued processes; also kill running ones when force."""
