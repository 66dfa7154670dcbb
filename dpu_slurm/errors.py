"""The one error hierarchy: every message says what to do next."""
from __future__ import annotations


class DPUError(Exception):
    """Base of every error dpu_slurm raises on purpose."""

    exit_code = 2


class ConfigError(DPUError):
    """A cluster config or user environment file is wrong."""


class CatalogError(DPUError):
    """The AWEPIPE task declarations cannot be loaded."""


class SequenceError(DPUError):
    """Unknown sequence identifier."""


class OptionError(DPUError):
    """Unknown option or a value of the wrong type."""


class JobNotFound(DPUError):
    """The job id is not known to this store."""


class SubmitError(DPUError):
    """The scheduler refused the job; nothing was queued."""

    exit_code = 1

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CancelRefused(DPUError):
    """Cancelling would kill running processes and force was not given."""


class RerunRefused(DPUError):
    """A rerun that cannot be done: the job is not finished, nothing matches, bad letters."""


class SchedulerError(DPUError):
    """A scheduler command failed (other than at submission)."""


class Unreachable(DPUError):
    """The DPU cannot be reached right now; nothing was changed."""

    exit_code = 1


class HostKeyError(DPUError):
    """The SSH server's host key is unknown or changed; nothing was sent to it."""


class StoreError(DPUError):
    """The job store cannot be read or written (damaged, read-only, full, locked); nothing was lost."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind  # corrupt, readonly, full, locked, io or other
