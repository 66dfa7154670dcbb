"""How much time and memory a rerun asks for: the user's factors, ``--auto`` (double the time of
processes killed by their time limit, double the memory of those killed for memory), and a
partition of the DPU that takes the result.

Growth stops at the largest limits the DPU's partitions allow (the most a process may ask for
when the DPU lists none), and the partition is the first that fits, as for a first run (plan.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from .config import DPUConfig
from .errors import OptionError, RerunRefused
from .plan import pick_partition
from .schema import MAX_MEM, MAX_TIME
from .store import Proc

AUTO = 2.0  # what --auto multiplies a limit by that a process ran into


@dataclass
class Limits:
    """A rerun's time limit (s), memory (MB) and partition, with what changed them, in words."""

    time_limit: int
    mem: int
    partition: Optional[str]
    notes: List[str]


def killed_by(procs: Iterable[Proc]) -> Tuple[List[int], List[int]]:
    """Indices of processes that ended A for their time limit, and for memory."""
    timed, oom = [], []
    for p in procs:
        reason = p.reason.strip().upper()
        if "A" in p.outcome and reason.startswith("TIMEOUT"):
            timed.append(p.idx)
        elif "A" in p.outcome and reason.startswith("OUT_OF_MEMORY"):
            oom.append(p.idx)
    return timed, oom


def largest(dpu: DPUConfig) -> Tuple[float, float]:
    """The largest time (s) and memory (MB) any partition of the DPU takes."""
    parts = dpu.partitions
    top_t = max((float(p.get("max_time", MAX_TIME)) for p in parts), default=float(MAX_TIME))
    top_m = max((float(p.get("max_mem", MAX_MEM)) for p in parts), default=float(MAX_MEM))
    return min(top_t, MAX_TIME), min(top_m, MAX_MEM)


def grow(dpu: DPUConfig, time_limit: int, mem: int, tf: float, mf: float, partition: Optional[str],
         clamp: bool) -> Limits:
    """The limits after multiplying by tf and mf. `clamp`: cap them at the DPU's largest (a retry,
    --auto); otherwise a rerun no partition takes is refused with what the partitions allow."""
    new_t, new_m = max(1, math.ceil(time_limit * tf)), max(1, math.ceil(mem * mf))
    notes = []
    if clamp:
        top_t, top_m = largest(dpu)
        if new_t > top_t:
            new_t = max(time_limit, int(top_t))
            notes.append(f"time capped at {new_t} s, the most DPU {dpu.name}'s partitions allow")
        if new_m > top_m:
            new_m = max(mem, int(top_m))
            notes.append(f"memory capped at {new_m} MB, the most DPU {dpu.name}'s partitions allow")
    if (tf == 1.0 and mf == 1.0) or not dpu.partitions:
        return Limits(new_t, new_m, partition, notes)
    try:
        part = pick_partition(dpu, new_t, new_m)
    except OptionError as exc:
        raise RerunRefused(f"a rerun with {new_t} s and {new_m} MB per process: {exc}; give smaller "
                           "factors (--more-time/--more-mem)") from None
    if part != partition:
        notes.append(f"partition {part} (takes {new_t} s and {new_m} MB)")
    return Limits(new_t, new_m, part, notes)


def auto_factors(dpu: DPUConfig, procs: List[Proc], time_limit: int, mem: int,
                 tf: Optional[float], mf: Optional[float]) -> Tuple[float, float]:
    """--auto: x2 time when a process timed out, x2 memory when one ran out of it (a factor the
    user gave wins). RerunRefused when what they ran into cannot grow on this DPU."""
    timed, oom = killed_by(procs)
    top_t, top_m = largest(dpu)
    stuck = []
    if timed and tf is None:
        if time_limit >= top_t:
            stuck.append(f"process(es) {_few(timed)} ran into the time limit of {time_limit} s, "
                         f"already the most DPU {dpu.name}'s partitions allow")
        tf = AUTO
    if oom and mf is None:
        if mem >= top_m:
            stuck.append(f"process(es) {_few(oom)} ran out of {mem} MB of memory, already the most "
                         f"DPU {dpu.name}'s partitions allow")
        mf = AUTO
    if stuck:
        raise RerunRefused("--auto cannot give more: " + "; ".join(stuck) + ". Make the tasks lighter "
                           "(e.g. split the job) or ask the DPU's admin for a larger partition")
    return (tf if tf is not None else 1.0), (mf if mf is not None else 1.0)


def _few(indices: List[int]) -> str:
    shown = ", ".join(map(str, indices[:10]))
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")
