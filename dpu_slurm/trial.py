"""A DPU's job scripts rendered as a submission would, without submitting or connecting:
what ``dpu config check`` passes can be submitted."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Optional, Tuple

import jinja2

from .config import DPUConfig, current_user
from .errors import ConfigError, DPUError
from .plan import pick_partition
from .schedulers import SubmitRequest, for_dpu
from .transport.local import LocalTransport


def workdir(dpu: DPUConfig) -> str:
    """The DPU's workdir as a script will see it: ~ stands for /home/USER (the transport expands
    it on the target at submission; no connection is opened here)."""
    user = str((dpu.host or {}).get("user") or current_user())
    text = dpu.target_workdir()
    return f"/home/{user}" + text[1:] if text.startswith("~") else text


def request(dpu: DPUConfig, setup: Optional[list] = None, nproc: int = 2) -> SubmitRequest:
    """A dummy two-process job with the DPU's defaults (two: arrays render as arrays)."""
    user = str((dpu.host or {}).get("user") or current_user())
    limit = max(1, dpu.min_time, math.ceil(int(dpu.defaults.get("time", 600)) * dpu.time_factor))
    mem = int(dpu.defaults.get("mem", 2000))
    try:
        partition = pick_partition(dpu, limit, mem)
    except DPUError:  # the defaults fit no partition; a run's own time may: show the first
        partition = str(dpu.partitions[0]["name"])
    return SubmitRequest(job_id=0, user=user, dpu=dpu.name, sequence="Null",
                         jobdir=f"{workdir(dpu)}/jobs/0.check", nproc=nproc, time_limit=limit, mem=mem,
                         partition=partition, python=dpu.python_for_jobs(),
                         pythonpath="BUNDLE/worker:BUNDLE/code", setup=list(setup or []),
                         env=dict(dpu.env))


def _versions(dpu: DPUConfig) -> Iterator[Tuple[str, list]]:
    if not dpu.awe_versions:
        yield "", []
    for name, version in dpu.awe_versions.items():
        yield name, list(version.get("setup", []))


def render(dpu: DPUConfig) -> Dict[str, str]:
    """File name -> script of a trial job (one per awe version); ConfigError naming the DPU
    and, when it can be found, the key whose value cannot be rendered."""
    scheduler = for_dpu(dpu, LocalTransport())  # rendering only: no connection is opened
    out: Dict[str, str] = {}
    for version, setup in _versions(dpu):
        req = request(dpu, setup)
        try:
            for name, text in scheduler.scripts(req).items():
                out[f"{version}/{name}" if version else name] = text
            if dpu.submit == "drmaa":
                from .schedulers.drmaa import native_spec
                out["nativeSpecification"] = native_spec(dpu, req)
        except (ValueError, TypeError, jinja2.TemplateError, DPUError) as exc:
            key = _key_holding(dpu, str(exc))
            raise ConfigError(f"{dpu.path}: DPU {dpu.name!r}: a trial job script does not render"
                              f"{f' (key {key})' if key else ''}: {exc}") from None
    return out


def _key_holding(dpu: DPUConfig, message: str) -> str:
    """The config key whose value the message quotes (the longest such value wins)."""
    best: Tuple[int, str] = (0, "")

    def walk(value: Any, key: str) -> None:
        nonlocal best
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and value and repr(value) in message and len(value) > best[0]:
            best = (len(value), key)

    for name, value in vars(dpu).items():
        if name != "path":
            walk(value, name)
    return best[1]
