"""Estimates learned from past runs: a sequence's process time and memory on one DPU.

From the latest processes of the same sequence (and the same instrument, when the sequence has
that option) that ended N: the 90th percentile of their wall time and peak memory, times a
margin. Fewer than MIN_RUNS such processes: no learned estimate, the tasks' declared one stands.
``dpu_time='auto'`` (shell: ``--time auto``) asks for the learned time (and memory, unless
dpu_mem is given).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .catalog import Catalog
from .config import DPUConfig
from .errors import OptionError
from .plan import Plan, make_plan
from .store import Store

MIN_RUNS = 3
QUANTILE = 0.9
MARGIN = 1.5
HISTORY = 500            # the latest processes looked at
AUTO = "auto"
KEY = "instrument"       # the option that splits a sequence's history, when it has one


@dataclass
class Learned:
    """A learned estimate and what it came from."""

    time_s: float
    mem_mb: Optional[int]    # None: too few runs with memory figures
    runs: int

    def source(self) -> str:
        """Where the number came from, as the prompt says it."""
        return f"from {self.runs} earlier run{'s' if self.runs != 1 else ''}"


def quantile(values: List[float], q: float) -> float:
    """The q-quantile (linear between the two nearest ranks) of a non-empty list."""
    data = sorted(values)
    pos = (len(data) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def learn(store: Store, dpu: str, sequence: str, options: Mapping[str, Any]) -> Optional[Learned]:
    """The learned estimate of `sequence` (an identifier) with these option values on `dpu`;
    None with fewer than MIN_RUNS past processes that ended N."""
    wanted = options.get(KEY)
    same = (lambda opts: _option(opts, KEY) == wanted) if KEY in options else None
    walls: List[float] = []
    peaks: List[float] = []
    for _, _, wall, rss in store.past_runs(dpu, sequence, HISTORY, same):
        if wall is not None:
            walls.append(float(wall))
        if rss is not None and rss > 0:
            peaks.append(rss / 1024.0)
    if len(walls) < MIN_RUNS:
        return None
    mem = math.ceil(quantile(peaks, QUANTILE) * MARGIN) if len(peaks) >= MIN_RUNS else None
    return Learned(max(1.0, round(quantile(walls, QUANTILE) * MARGIN, 1)), mem, len(walls))


def _option(text: str, key: str) -> Any:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get(key) if isinstance(data, dict) else None


Amount = Union[float, int, str, None]


def learn_for(store: Store, catalog: Catalog, dpu: str, sequence: str,
              given: Mapping[str, Any]) -> Optional[Learned]:
    """learn() for a run request as the user typed it (short or long option names)."""
    identifier = catalog.sequence(sequence).identifier
    return learn(store, dpu, identifier, catalog.parse(identifier, given))


def resolve(learned: Optional[Learned], dpu_time: Amount, dpu_mem: Amount) -> Tuple[Any, Any, str]:
    """dpu_time/dpu_mem with 'auto' replaced by the learned figures (None: the tasks' declared
    time, the DPU's default memory, when nothing is learned yet) and the source to print."""
    for name, value in (("dpu_time", dpu_time), ("dpu_mem", dpu_mem)):
        if isinstance(value, str) and value != AUTO:
            raise OptionError(f"{name} must be a number of {'seconds' if name == 'dpu_time' else 'MB'}"
                              f" or 'auto' (learned from past runs); got {value!r}")
    mem = (learned.mem_mb if learned is not None else None) if dpu_mem == AUTO else dpu_mem
    if dpu_time != AUTO:
        return dpu_time, mem, ""  # anything else: make_plan checks it
    if learned is None:
        return None, mem, f"the tasks' estimate: fewer than {MIN_RUNS} earlier runs"
    if dpu_mem is None:
        mem = learned.mem_mb
    return learned.time_s, mem, learned.source()


def estimate_lines(estimate: float, learned: Optional[Learned], note: str,
                   given: Dict[str, Any]) -> List[str]:
    """The prompt's 'Estimated process time' line (with where a learned number came from) and,
    when history suggests other dpu_time/dpu_mem than asked, the suggestion."""
    if note:   # dpu_time='auto': the plan's own estimate is the learned one (or the declared)
        return [f"Estimated process time : {estimate:.0f} seconds ({note})"]
    if learned is None or given.get("dpu_time") is not None:
        return [f"Estimated process time : {estimate:.0f} seconds"]
    mem = f", dpu_mem={learned.mem_mb}" if learned.mem_mb and given.get("dpu_mem") is None else ""
    return [f"Estimated process time : {learned.time_s:.0f} seconds ({learned.source()})",
            f"Suggested: dpu_time={learned.time_s:.0f}{mem} (dpu_time='auto' uses them; "
            f"this run asks for the tasks' estimate, {estimate:.0f} seconds)"]


Planner = Callable[[DPUConfig], Plan]


def planner(store: Store, catalog: Catalog, sequence: str, options: Mapping[str, Any],
            dpu_time: Amount, dpu_mem: Amount, aweversion: Optional[str],
            send_code: bool) -> Tuple[Planner, Dict[str, Tuple[Optional[Learned], str]]]:
    """A run's plan for any DPU (routing may weigh several), each from that DPU's own history;
    and, per DPU planned, what was learned there and the note saying so."""
    learned: Dict[str, Tuple[Optional[Learned], str]] = {}

    def planned(cfg: DPUConfig) -> Plan:
        history = learn_for(store, catalog, cfg.name, sequence, dict(options))
        asked_time, asked_mem, note = resolve(history, dpu_time, dpu_mem)
        learned[cfg.name] = (history, note)
        return make_plan(catalog, cfg, sequence, dict(options), asked_time, asked_mem, aweversion,
                         send_code)
    return planned, learned
