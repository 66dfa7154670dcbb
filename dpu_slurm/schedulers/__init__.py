"""The schedulers, one module each; ``REGISTRY`` maps each name to its class (and so its template).

Defining a Scheduler subclass registers it under its ``name`` (base.Scheduler.__init_subclass__).
``registry()`` imports every module of this package once, and the modules other packages name
under the entry point group ``dpu_slurm.schedulers``, so a new scheduler is one module here plus
its template: config validation, ``for_dpu`` and DRMAA's per-DRM pieces all read the registry.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from typing import Dict, List, Tuple, Type

from ..config import DPUConfig
from ..errors import ConfigError
from ..transport import Transport
from .base import REGISTRY, Observation, PollRequest, Scheduler, SubmitRequest

log = logging.getLogger(__name__)
ENTRY_POINTS = "dpu_slurm.schedulers"
_found = False


def registry() -> Dict[str, Type[Scheduler]]:
    """name -> scheduler class, after importing this package's modules and the entry points."""
    global _found
    if not _found:
        _found = True
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        for point in entry_points(group=ENTRY_POINTS):
            try:
                point.load()
            except Exception as exc:  # a broken plug-in must not break the built-in schedulers
                log.warning("scheduler entry point %s failed to load: %s", point.name, exc)
    return REGISTRY


def names(kind: str = "scheduler") -> Tuple[str, ...]:
    """The registered names of this kind ('scheduler': `scheduler:` values; 'submit': `submit:`)."""
    found = [(cls.ORDER, name) for name, cls in registry().items() if getattr(cls, "KIND", "") == kind]
    return tuple(name for _, name in sorted(found))


def template_of(name: str) -> str:
    """The job script template a registered scheduler renders."""
    return str(registry()[name].template())


def for_dpu(dpu: DPUConfig, transport: Transport) -> Scheduler:
    """The scheduler a DPU config names (its `submit:` mode when that is not 'cli')."""
    name = dpu.scheduler if dpu.submit == "cli" else dpu.submit
    cls = registry().get(name)
    if cls is None:
        raise ConfigError(f"{dpu.path}: this dpu_slurm has no {name!r} scheduler; known: "
                          f"{', '.join(names() + names('submit'))}")
    scheduler: Scheduler = cls(dpu, transport)
    return scheduler


__all__: List[str] = ["REGISTRY", "Observation", "PollRequest", "Scheduler", "SubmitRequest", "for_dpu",
                      "names", "registry", "template_of"]
