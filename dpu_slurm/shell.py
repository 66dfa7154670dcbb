"""``dpu shell``: the AWE prompt, with the HOW-TO's banner, ``awe>`` and ``dpu``/``Env`` ready."""
from __future__ import annotations

import code
import sys
from typing import Any, Dict, List

from .config import dpu_home, get_dpu
from .errors import DPUError
from .processor import Processor

PROMPT = "awe> "
WELCOME = "               Welcome to the Astro-WISE Environment"


def banner(dpu: Processor) -> List[str]:
    """The start-up lines of the HOW-TO's AWE session, with this project's profile: the user,
    the job store, the DPU and the pipeline code in use."""
    lines = [f"Python {sys.version} on {sys.platform}", "",
             'Type "help", "copyright", "credits" or "license" for more information.', "",
             WELCOME, "", "Importing Astro-WISE packages. Please wait..."]
    try:  # the AWEPIPE task declarations: this project's "packages"
        pipeline = f"{dpu.catalog.source} ({len(dpu.catalog.sequences)} sequences)"
    except DPUError as exc:  # the prompt still starts, so the user can fix AWEPIPE and retry
        pipeline = f"not loaded: {exc}"
    cfg = get_dpu(dpu.dpu_name)
    where = cfg.host["hostname"] if cfg.host else "this machine"
    lines += ["", "Initializing Distributed Processing Unit...", "", "Current profile:",
              f"- username : {dpu.user}",
              f"- DPU      : {dpu.dpu_name} ({cfg.scheduler}, {where})",
              f"- store    : {dpu_home() / 'jobs.sqlite'}",
              f"- AWEPIPE  : {pipeline}", ""]
    return lines


def interact(dpu: Processor) -> None:
    """Run the prompt until end of input; `dpu` and `Env` are in its namespace."""
    print("\n".join(banner(dpu)))
    old = getattr(sys, "ps1", None), getattr(sys, "ps2", None)
    sys.ps1, sys.ps2 = PROMPT, "...  "
    namespace: Dict[str, Any] = {"dpu": dpu, "Env": dpu.environment(), "__name__": "__console__"}
    try:
        Console(namespace).interact(banner="", exitmsg="")
    finally:
        for name, value in zip(("ps1", "ps2"), old, strict=True):
            if value is None:
                delattr(sys, name)
            else:
                setattr(sys, name, value)


class Console(code.InteractiveConsole):
    """The prompt: a DPUError (a bad option, an unknown job...) is one line saying what to do,
    as in the seed's session, not a traceback."""

    def showtraceback(self) -> None:
        """One line for a DPUError, the usual traceback for anything else."""
        exc = sys.exc_info()[1]
        if isinstance(exc, DPUError):
            self.write(f"{type(exc).__name__}: {exc}\n")
        else:
            super().showtraceback()


__all__ = ["Console", "PROMPT", "banner", "interact"]
