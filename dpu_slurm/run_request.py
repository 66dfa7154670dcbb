"""The run request, one model for ``Processor.run``, ``dpu run``, manifest entries and the API
body: its dpu_* options with the bounds every input shares, checked by schema.py."""
from __future__ import annotations

import math
from typing import Annotated, Any, Dict, Mapping, Tuple, TypedDict

from .schema import (
    MAX_MEM,
    MAX_TIME,
    MIN_MEM,
    NAME,
    VERSION,
    At,
    Rule,
    check_options,
    check_record,
    short,
)


class DpuOptions(TypedDict, total=False):
    """The dpu_* options of one run, with the bounds every input shares."""

    dpu_time: float     # bounds: check_dpu_options (its messages name the unit)
    dpu_mem: float
    dpu_aweversion: Annotated[str, VERSION]
    send_code: bool


DPU_OPTIONS: Tuple[str, ...] = tuple(DpuOptions.__annotations__)
# Each step: blanks, then its first visible character, then the rest up to the next '>'. One way
# to match only: the old [^<>]*[^\s<>][^<>]* could split a step many ways, and a near miss
# ('Null>' * 14) backtracked for minutes holding the GIL.
SEQUENCE = Rule(r"\s*[^\s<>][^<>]*(?:>\s*[^\s<>][^<>]*)*",
                "a sequence identifier like 'ReadNoise' or 'Bias>HotPixels'")


class _RunRequired(TypedDict):
    sequence: Annotated[str, SEQUENCE]


class RunRequest(_RunRequired, total=False):
    """The API body: what to run, with which options, on which DPU."""

    options: Dict[str, Any]
    dpu_options: DpuOptions
    dpu: Annotated[str, NAME]


_AMOUNTS = {
    "dpu_time": (0.0, MAX_TIME, f"a positive number of seconds, at most {MAX_TIME} (365 days)"),
    "dpu_mem": (MIN_MEM, MAX_MEM, f"a positive number of MB from {MIN_MEM} to {MAX_MEM} (64 TB)"),
}


def check_dpu_options(values: Mapping[str, Any], at: At) -> Dict[str, Any]:
    """dpu_time, dpu_mem, dpu_aweversion, send_code: None means not given; amounts bounded."""
    given = {k: v for k, v in values.items() if v is not None}
    for name, (lo, hi, what) in _AMOUNTS.items():
        value = given.get(name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        # dpu_time: above 0; dpu_mem: at least MIN_MEM (0.5 would be rounded to 1 MB and crash)
        if not number or not math.isfinite(value) or value > hi or value < lo or (
                name == "dpu_time" and value <= lo):
            line = getattr(values, "lines", {}).get(name, at.line)
            raise At(at.file, line, at.key, at.error).fail(f"{name} must be {what}; got {short(value)}")
    return check_record(given, DpuOptions, at)


def check_run(data: Any, at: At) -> Dict[str, Any]:
    """A RunRequest (the API body): structure, option values and dpu options."""
    out = check_record(data, RunRequest, at)
    out["options"] = check_options(out.get("options") or {}, at.child("options", data, "options"))
    return out

