"""dpu_slurm: the Distributed Processing Unit front-end for SLURM, PBS, Grid Engine and this machine.

``from dpu_slurm import Processor; dpu = Processor()``. Imports are lazy so the worker, which
travels alone inside job bundles, needs nothing but the standard library.
"""
from typing import Any

__version__ = "0.2.0.dev0"  # the one version source (setup.cfg reads it)


def __getattr__(name: str) -> Any:
    if name == "Processor":
        from .processor import Processor
        return Processor
    raise AttributeError(f"module 'dpu_slurm' has no attribute {name!r}")
