"""The scheduler contract: each scheduler gives request/parse pairs, this base class runs them.

A scheduler module gives: its template (and extra context per chunk), the submit argv of a chunk
and how to read the id it prints, the poll request (argv + files) and how to read what came
back, optionally a history request and its parser, and the cancel argv. The base class renders
and chunks, submits chunk by chunk (a job is queued whole or not at all), sends the poll with the
workers' records in ONE transport round trip (status.refresh), and reports failures. What every
scheduler must give is checked when its class is defined; defining it registers it by ``name``.
"""
from __future__ import annotations

import logging
import re
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Type

from ..config import DPUConfig, current_user
from ..errors import SchedulerError, SubmitError, Unreachable
from ..render import render
from ..states import ObsState
from ..store import Job
from ..transport import Transport
from ..transport.base import Completed, Gathered
from .accounting import Usage
from .helpers import (
    chunk_owners,
    chunk_size,
    chunk_tag,
    chunks,
    index_chunks,
    job_tag,
    minute_limit,
    minutes,
    number_owners,
    one_line,
    since,
    tag_of,
    tagged,
    walltime,
)
from .messages import Observation, PollRequest, SubmitRequest

log = logging.getLogger(__name__)

QUEUED, RUNNING, ENDED = ObsState.QUEUED, ObsState.RUNNING, ObsState.ENDED
Observed = Dict[int, Dict[int, "Observation"]]   # job id -> process index -> Observation


__all__ = ["ENDED", "QUEUED", "REGISTRY", "RUNNING", "Observation", "Observed", "PollRequest",
           "Scheduler", "SubmitRequest", "Usage", "chunk_owners", "chunk_size", "chunk_tag", "chunks",
           "index_chunks", "job_tag", "minute_limit", "minutes", "number_owners", "one_line", "since",
           "tag_of", "tagged", "walltime"]


# -- the contract ------------------------------------------------------------------------------
# name -> scheduler class, filled as classes are defined (schedulers/__init__ finds the modules).
REGISTRY: Dict[str, Type[Scheduler]] = {}
# Methods a scheduler must give, and pairs where it gives one or the other.
REQUIRED = ("poll_request", "parse_poll")
EITHER = (("submit", "submit_argv"), ("cancel", "cancel_argv"))


class Scheduler(ABC):
    """A batch scheduler as request/parse pairs. Subclasses set ``name`` (the config's
    ``scheduler:`` value) and give poll_request/parse_poll, submit_argv/parse_id (or submit) and
    cancel_argv (or cancel); ``class X(Scheduler, abstract=True)`` is a partial one."""

    name: ClassVar[str]
    TEMPLATE: ClassVar[str] = ""          # file in templates/ (or beside the module): <name>.sh.j2
    KIND: ClassVar[str] = "scheduler"     # "scheduler": a `scheduler:` value; "submit": a `submit:` one
    ORDER: ClassVar[int] = 100            # place among the names config messages list
    # native state -> (QUEUED/RUNNING/ENDED, letter when ENDED)
    STATE_MAP: ClassVar[Mapping[str, Tuple[str, str]]] = {}
    # Scheduler messages that mean "try again later" rather than "this job is wrong".
    TRANSIENT: ClassVar[Tuple[str, ...]] = ()
    # Lines of a failed cancel that only say the job is gone already.
    GONE: ClassVar[Tuple[str, ...]] = ()
    # cancel(job, force=False) leaves running processes alone and cancels the queued ones of the
    # same array; schedulers that can only delete an array whole say False (see cancel_queued).
    CANCELS_QUEUED_ONLY: ClassVar[bool] = False
    CHUNKED: ClassVar[bool] = True        # one array job per chunk of max_array_size processes
    RERUN: ClassVar[bool] = False         # can submit an explicit list of indices (rerun_context)
    REQUEUE: ClassVar[str] = ""           # how a warned worker requeues itself here (requeue.py)
    RERUN_STALE: ClassVar[Tuple[str, ...]] = ()  # job files a rerun moves aside (the runner's own)
    # The queue page sets this: its polls cover every user's jobs, not only the caller's.
    all_users: bool = False

    def __init_subclass__(cls, abstract: bool = False, registered: bool = True, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if abstract:
            return
        missing = [m for m in REQUIRED if getattr(getattr(cls, m), "__isabstractmethod__", False)]
        missing += [f"{a} or {b}" for a, b in EITHER
                    if getattr(cls, a) is getattr(Scheduler, a) and getattr(cls, b) is getattr(Scheduler, b)]
        if not isinstance(cls.__dict__.get("name", getattr(cls, "name", None)), str):
            missing.append("name")
        if missing:
            raise TypeError(f"scheduler {cls.__qualname__} must define {', '.join(missing)}")
        if registered:
            REGISTRY[cls.name] = cls

    def __init__(self, dpu: DPUConfig, transport: Transport) -> None:
        self.dpu = dpu
        self.transport = transport
        # Job name -> native id of the DPU jobs the last poll listed: how a job whose submitter
        # died before recording its ids is found (status.reconcile); filled by each poll.
        self.names: Dict[str, str] = {}
        self.never: Dict[int, Set[int]] = {}  # job id -> processes whose dependency cannot be met
        self._polled: Optional[Gathered] = None

    @classmethod
    def template(cls) -> str:
        """The job script template's file name."""
        return cls.TEMPLATE or f"{cls.name}.sh.j2"

    # -- scripts --------------------------------------------------------------------------
    def script_context(self, req: SubmitRequest, k: int, offset: int, count: int) -> Dict[str, Any]:
        """What chunk k's template needs beyond the request (default: nothing)."""
        return {}

    def rerun_chunks(self, indices: Sequence[int]) -> List[Tuple[int, List[int]]]:
        """A rerun's (offset, indices) per array job: by max_array_size chunk (one when not CHUNKED)."""
        if not self.CHUNKED:
            return [(0, sorted(set(indices)))]
        return index_chunks(indices, self.dpu.max_array_size)

    def before_rerun(self, job: Job) -> None:
        """Called before a rerun moves the last run's files aside (default: nothing to wait for)."""
        return None

    def rerun_context(self, req: SubmitRequest, offset: int, ids: List[int]) -> Dict[str, Any]:
        """What a rerun chunk's template needs for these array indices (RERUN schedulers)."""
        raise NotImplementedError

    def script(self, req: SubmitRequest, **extra: object) -> str:
        """One script from the template: the request's fields, the DPU config and `extra`."""
        extra.setdefault("tag", req.tag)
        extra.setdefault("requeue_how", self.REQUEUE)
        folder = Path(getattr(sys.modules.get(type(self).__module__), "__file__", None) or ".").parent
        return render(self.template(), search=str(folder), **vars(req), dpu_config=self.dpu, **extra)

    def scripts(self, req: SubmitRequest) -> Dict[str, str]:
        """File name -> job script: one per chunk (job-K.sh), or job.sh when not CHUNKED."""
        if not self.CHUNKED:
            return {"job.sh": self.script(req)}
        out: Dict[str, str] = {}
        if req.indices is not None:  # a rerun: one array per chunk holding some of the indices
            for k, (offset, ids) in enumerate(self.rerun_chunks(req.indices)):
                extra = {"tag": req.chunk_tag(k), "time_limit_enforced": minute_limit(req.time_limit),
                         **self.rerun_context(req, offset, [i - offset for i in ids])}
                out[f"job-r{req.rerun}-{k}.sh"] = self.script(req, offset=offset, count=len(ids), **extra)
            return out
        for k, (offset, count) in enumerate(chunks(req.nproc, self.dpu.max_array_size)):
            extra = {"tag": req.chunk_tag(k), "time_limit_enforced": minute_limit(req.time_limit),
                     **self.script_context(req, k, offset, count)}
            out[f"job-{k}.sh"] = self.script(req, offset=offset, count=count, **extra)
        return out

    def stage(self, req: SubmitRequest) -> Dict[str, str]:
        """Render the job's scripts and write them, with its output folder, in one transport call."""
        scripts = self.scripts(req)
        files = {f"{req.jobdir}/{name}": text.encode() for name, text in scripts.items()}
        files[f"{req.jobdir}/out/.keep"] = b""
        self.transport.write_files(files)
        return scripts

    # -- submit ---------------------------------------------------------------------------
    def submit_argv(self, req: SubmitRequest, name: str, text: str) -> List[str]:
        """The command queuing the chunk script `name` (its text: `text`)."""
        raise NotImplementedError

    def parse_id(self, out: str) -> str:
        """The native id in the submit command's output; '' when there is none."""
        return out.strip()

    def submit(self, req: SubmitRequest) -> List[str]:
        """Queue every process of the job; return the native ids. Raise SubmitError."""
        return self.submit_chunks(self.stage(req), lambda n, t: self.submit_argv(req, n, t),
                                  self.parse_id, req.accepted)

    def submit_chunks(self, scripts: Dict[str, str], argv: Callable[[str, str], List[str]],
                      parse_id: Callable[[str], str],
                      accepted: Optional[Callable[[List[str]], None]] = None) -> List[str]:
        """Submit each chunk's script; if one is refused, cancel those already queued and raise
        SubmitError with the scheduler's message: a job is queued whole or not at all."""
        native: List[str] = []
        for name, text in scripts.items():
            command = argv(name, text)
            res = self.transport.run(command)
            job_id = parse_id(res.stdout) if res.returncode == 0 else ""
            if not job_id:
                msg = one_line(res)
                if native:
                    for back in self.cancel_argv(None, True, native):
                        got = self.transport.run(back)
                        if got.returncode != 0:  # not "nothing queued": the next poll adopts what runs
                            raise SchedulerError(
                                f"{Path(command[0]).name} refused chunk {len(native)} ({msg}) and "
                                f"{Path(back[0]).name} of the chunks already queued "
                                f"({' '.join(native)}) failed: {one_line(got)}")
                raise SubmitError(f"{Path(command[0]).name} refused it: {msg}",
                                  transient=any(t in msg for t in self.TRANSIENT))
            native.append(job_id)
            if accepted is not None:
                accepted(list(native))
        return native

    # -- poll -----------------------------------------------------------------------------
    @abstractmethod
    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """The status command and files that tell about all these jobs at once: the transport
        fetches them with the workers' records in one round trip."""

    @abstractmethod
    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """What the poll brought back -> job id -> process index -> Observation (processes the
        scheduler no longer knows are left out); fills self.names with the DPU jobs listed."""

    def poll(self, jobs: Sequence[Job]) -> Observed:
        """poll_request and parse_poll in a gather of its own (status.refresh shares one)."""
        req = self.poll_request(jobs)
        self._polled = self.transport.gather(req.argv, req.files, {}, "")
        return self.parse_poll(jobs, self._polled)

    def reparse(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """Observations of jobs adopted after the poll, from that same poll (no new call)."""
        last = got if got.completed is not None or got.files else self._polled
        return self.parse_poll(jobs, last) if last is not None else {}

    def polled(self, got: Gathered, what: str, ok: Tuple[int, ...] = (0,)) -> Completed:
        """The poll's command result; Unreachable when it failed."""
        self._polled = got
        res = got.completed
        if res is None:
            raise Unreachable(f"{what} was not run on DPU {self.dpu.name!r}")
        if res.returncode not in ok:
            raise Unreachable(f"{what} failed on DPU {self.dpu.name!r}: "
                              f"{(res.stderr or res.stdout).strip()}")
        return res

    # -- history --------------------------------------------------------------------------
    def history_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """The accounting command for these ended jobs (default: None, no accounting)."""
        return None

    def parse_history(self, jobs: Sequence[Job], res: Completed) -> Observed:
        """The accounting command's answer -> observations of ended processes."""
        return {}

    def history(self, jobs: Sequence[Job]) -> Observed:
        """What the scheduler's accounting remembers of ended processes, in one call; the
        names of the DPU jobs it lists are remembered too (a job whose submitter died)."""
        argv = self.history_request(jobs) if jobs else None
        if not argv:
            return {}
        return self.parse_history(jobs, self.transport.run(argv, timeout=60))

    # -- usage: accounting figures of ended processes (schedulers/accounting.py) -----------
    USAGE_SOURCE: str = ""   # what `dpu report` names as the figures' source

    def usage_request(self, jobs: Sequence[Job]) -> Optional[List[str]]:
        """The accounting command giving usage figures of these jobs (default: None, none)."""
        return None

    def parse_usage(self, jobs: Sequence[Job], res: Completed) -> Usage:
        """The accounting command's answer -> figures of ended processes."""
        return {}

    def usage(self, jobs: Sequence[Job]) -> Usage:
        """Usage figures the scheduler's accounting keeps of these jobs' ended processes, in one call."""
        argv = self.usage_request(jobs) if jobs else None
        return self.parse_usage(jobs, self.transport.run(argv, timeout=60)) if argv else {}

    # -- cancel ---------------------------------------------------------------------------
    def cancel_argv(self, job: Optional[Job], force: bool, natives: Sequence[str]) -> List[List[str]]:
        """The commands cancelling these native ids of the job (its queued processes; also the
        running ones when force)."""
        raise NotImplementedError

    def cancel(self, job: Job, force: bool) -> None:
        """Cancel queued processes; also kill running ones when force."""
        for argv in self.cancel_argv(job, force, list(job.native_ids)):
            self.check_cancel(self.transport.run(argv))

    def check_cancel(self, res: Completed) -> None:
        """A failed cancel is a SchedulerError unless each line only says the job is gone."""
        text = (res.stderr + res.stdout).strip()
        if res.returncode != 0 and not (self.GONE and all(
                any(g in line for g in self.GONE) for line in text.splitlines() if line.strip())):
            raise SchedulerError(f"{Path(res.argv[0]).name} failed: {text}")

    def cancel_queued(self, job: Job, queued: Sequence[int]) -> bool:
        """Cancel these queued processes of a partly running job, leaving the running ones;
        False when this scheduler cannot single them out (nothing is done then)."""
        if not self.CANCELS_QUEUED_ONLY:
            return False
        self.cancel(job, False)
        return True

    def cancel_indices(self, job: Job, indices: Sequence[int]) -> None:
        """Cancel these queued processes whose prerequisite failed (default: none; the worker
        skips them when they start)."""
        return None

    # -- plumbing -------------------------------------------------------------------------
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

    def remember(self, name: str, native: str) -> None:
        """Note a DPU job's name from a poll (only names of this package's tags are kept)."""
        if name.startswith("dpu."):
            self.names[name] = native

    def close(self) -> None:
        """Release what the scheduler holds (a DRMAA session helper); most hold nothing."""
        return None

    # -- DRMAA: what submit: drmaa needs of the DRM this scheduler drives (None: not offered) ---
    DRMAA_INDEX_SHIFT: ClassVar[int] = 0  # bulk tasks count from 1: what the poll's indices lose

    @classmethod
    def drmaa_spec(cls, dpu: DPUConfig, req: SubmitRequest) -> Optional[List[str]]:
        """Words of DRMAA's nativeSpecification in this DRM's syntax; None: no DRMAA."""
        return None

    @classmethod
    def drmaa_array_id(cls, task_id: str) -> str:
        """A bulk job's id from one of its task ids ('12.1' / '12_1' -> '12')."""
        m = re.match(r"\d+", task_id)
        return m.group(0) if m else task_id

    @classmethod
    def drmaa_env(cls, env: Dict[str, str]) -> None:
        """Fill in what this DRM's libdrmaa needs in the helper's environment (default: nothing)."""
        return None

    def drmaa_history(self, jobs: Sequence[Job]) -> Observed:
        """Accounting the DRMAA module adds to its own wait() data (default: none)."""
        return {}
