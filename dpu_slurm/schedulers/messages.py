"""The scheduler contract's requests and answers: a submit request, a poll request and what the
scheduler says of one process (base.py re-exports them; every scheduler module uses them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .helpers import chunk_tag, job_tag


@dataclass
class Observation:
    """What the scheduler says of one process."""

    state: str            # an ObsState: QUEUED, RUNNING or ENDED
    letter: str = ""      # when ENDED, the scheduler's verdict: N, E, A, S or U
    reason: str = ""


@dataclass
class PollRequest:
    """A poll: the status command (None: none) and files to read, in the gather's round trip."""

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
    indices: Optional[List[int]] = None  # a rerun: only these processes (None: all nproc)
    rerun: int = 1                       # which submission of the job this is (1: the first)
    after: Dict[str, Any] = field(default_factory=dict)  # prerequisite jobs (schedulers/depend.py)

    @property
    def tag(self) -> str:
        """The job's tag (job_tag)."""
        return job_tag(self.user, self.job_id, self.store, self.rerun)

    def chunk_tag(self, k: int) -> str:
        """The job name of chunk k."""
        return chunk_tag(self.tag, k)


__all__ = ["Observation", "PollRequest", "SubmitRequest"]
