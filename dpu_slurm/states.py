"""The state vocabularies, as str-valued Enums: stored and JSON values stay the plain strings."""
from __future__ import annotations

from enum import Enum
from typing import FrozenSet


class ObsState(str, Enum):
    """What a scheduler says of one process (an Observation's state)."""

    QUEUED = "QUEUED"    #: waiting to start
    RUNNING = "RUNNING"  #: started, not ended
    ENDED = "ENDED"      #: left the scheduler; the letter says how

    def __str__(self) -> str:
        return self.value


class ProcState(str, Enum):
    """A process's state in the store."""

    QUEUED = "QUEUED"    #: not started
    RUNNING = "RUNNING"  #: started
    DONE = "DONE"        #: ended; its outcome letters are final

    def __str__(self) -> str:
        return self.value


class Phase(str, Enum):
    """Where a job's submission stands in the store."""

    RECORDED = "recorded"            #: written before the scheduler was called
    SUBMITTED = "submitted"          #: the scheduler accepted it (native ids stored)
    NOT_SUBMITTED = "not_submitted"  #: refused, or its submitter stopped before anything queued

    def __str__(self) -> str:
        return self.value


class JobStatus(str, Enum):
    """A job's status as the user sees it."""

    QUEUED = "QUEUED"                #: nothing started yet
    RUNNING = "RUNNING"              #: something started, not everything ended
    FINISHED = "FINISHED"            #: every process ended
    SUBMITTING = "SUBMITTING"        #: recorded, its submission still going on
    NOT_SUBMITTED = "NOT SUBMITTED"  #: never reached the scheduler

    def __str__(self) -> str:
        return self.value


OBS_TERMINAL: FrozenSet[ObsState] = frozenset({ObsState.ENDED})
PROC_TERMINAL: FrozenSet[ProcState] = frozenset({ProcState.DONE})
PHASE_TERMINAL: FrozenSet[Phase] = frozenset({Phase.NOT_SUBMITTED})
STATUS_TERMINAL: FrozenSet[JobStatus] = frozenset({JobStatus.FINISHED, JobStatus.NOT_SUBMITTED})
