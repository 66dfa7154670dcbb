"""One module per scheduler; ``for_dpu`` picks the one a DPU config names."""
from __future__ import annotations

import importlib

from ..config import DPUConfig
from ..errors import ConfigError
from ..transport import Transport
from .base import Observation, Scheduler, SubmitRequest

_MODULES = {"local": "local", "slurm": "slurm", "pbs": "pbs", "sge": "sge"}


def for_dpu(dpu: DPUConfig, transport: Transport) -> Scheduler:
    name = "drmaa" if dpu.submit == "drmaa" else _MODULES[dpu.scheduler]
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise ConfigError(f"{dpu.path}: this dpu_slurm has no {name!r} scheduler yet") from None
        raise
    cls = next(v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, Scheduler) and v is not Scheduler
               and v.__module__ == module.__name__)
    return cls(dpu, transport)


__all__ = ["Observation", "Scheduler", "SubmitRequest", "for_dpu"]
