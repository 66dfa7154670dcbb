"""The retry policy's shape: ``retries: {max: 2, on: [A, U], grow_time: 2.0, grow_mem: 1.5}`` in a
DPU's YAML file or given to one run; checked here (schema.py) and resolved into what a job keeps.

``max`` is how many times a process may be resubmitted after its first attempt (0: never); a
process qualifies when one of its task letters is in ``on``; each retry multiplies the time limit
by ``grow_time`` and the memory by ``grow_mem``.
"""
from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Mapping, Optional, TypedDict

from .errors import OptionError
from .schema import At, bounded, check_record

DEFAULT_ON = "AU"   # killed or lost; an E is the task's own error and usually fails again


class Retries(TypedDict, total=False):
    """The ``retries:`` mapping of a DPU file or of one run."""

    max: Annotated[int, bounded(0, 20, "retries")]
    on: List[Literal["N", "E", "A", "S", "U"]]
    grow_time: Annotated[float, bounded(1, 100, "(factor)")]
    grow_mem: Annotated[float, bounded(1, 100, "(factor)")]


class Requeue(TypedDict, total=False):
    """The ``requeue:`` mapping of a DPU file: a process warned of its end (preemption, time
    limit) saves its checkpoint and is requeued up to ``max`` times (requeue.py); ``warn``:
    seconds of warning asked of the scheduler (SLURM --signal; Grid Engine's comes from its queue)."""

    max: Annotated[int, bounded(0, 100, "requeues")]
    warn: Annotated[int, bounded(10, 3600, "seconds")]


def yaml_on(value: Any) -> Any:
    """YAML 1.1 reads the key ``on`` as true: give it back its name, in place (keeps the line
    numbers the loader recorded), and take ``on: AU`` as the list of its letters."""
    if isinstance(value, dict):
        if True in value and "on" not in value:
            value["on"] = value.pop(True)
            lines = getattr(value, "lines", None)
            if lines is not None and True in lines:
                lines["on"] = lines.pop(True)
        if isinstance(value.get("on"), str):
            value["on"] = list(value["on"].upper())
    return value


def check_retries(value: Any, at: At) -> Dict[str, Any]:
    """A checked ``retries`` mapping (``on`` may be a string of letters, "AU")."""
    return check_record(yaml_on(dict(value) if isinstance(value, Mapping) else value), Retries, at)


def resolve(dpu_policy: Mapping[str, Any], run_policy: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The policy a job keeps: the run's keys over the DPU's, then the defaults; {} when off."""
    merged = {**dpu_policy, **(run_policy or {})}
    if int(merged.get("max", 0)) <= 0:
        return {}
    on = "".join(sorted(set(merged.get("on") or DEFAULT_ON), key="NEASU".index))
    return {"max": int(merged["max"]), "on": on, "grow_time": float(merged.get("grow_time", 1.0)),
            "grow_mem": float(merged.get("grow_mem", 1.0))}


def describe(policy: Mapping[str, Any]) -> str:
    """The policy in a few words, for status lines."""
    grow = [f"{what} x{policy[key]:g}" for what, key in (("time", "grow_time"), ("memory", "grow_mem"))
            if float(policy.get(key, 1.0)) != 1.0]
    return (f"up to {policy['max']} on {'/'.join(policy['on'])}" + (f", {', '.join(grow)} each"
                                                                     if grow else ""))


def run_policy(value: Any) -> Optional[Dict[str, Any]]:
    """One run's ``retries=``: None (the DPU's policy), a number (its max) or a mapping;
    OptionError saying what is allowed otherwise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"max": value}
    if not isinstance(value, Mapping):
        raise OptionError(f"retries={value!r}: give a number of retries (e.g. retries=2) or a mapping "
                          "like {'max': 2, 'on': 'AU', 'grow_time': 2.0, 'grow_mem': 1.5}")
    return check_retries(value, At(key="retries", error=OptionError))
