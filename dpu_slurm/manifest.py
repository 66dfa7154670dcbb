"""The bulk manifest: runs and templates (parameter lists expanded) read into entries.

Dates and the task name ``Null`` stay text: a safe YAML reader where only ``~``, ``null`` and an
empty value mean "nothing", with each mapping's line kept for error messages.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import DPUError
from .plan import Plan
from .run_request import DPU_OPTIONS, RunRequest, check_dpu_options
from .schema import MAX_ENTRIES, At, check, check_options, spec_of
from .yaml_lines import LMap, load_yaml

ENTRY_KEYS = ("key", "sequence", "options", "dpu", *DPU_OPTIONS)
TOP_KEYS = ("dpu", "max_queued", "defaults", "runs", "templates")
MAX_EXPANSION = MAX_ENTRIES
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_RUN = spec_of(RunRequest).field_map


class ManifestError(DPUError):
    """The manifest as a whole cannot be used."""


@dataclass
class Entry:
    """One run of a bulk manifest: where it was written, what it asks, and what became of it."""

    where: str
    key: str = ""
    dpu: str = ""
    sequence: str = ""
    options: Dict[str, Any] = field(default_factory=dict)
    dpu_options: Dict[str, Any] = field(default_factory=dict)
    plan: Optional[Plan] = None
    state: str = "bad"      # bad, skipped, deferred, failed, submitted, would-submit, pending
    error: str = ""
    job_id: Optional[int] = None


# -- the manifest ----------------------------------------------------------------------------
def load(path: Path, default_dpu: str) -> Tuple[Optional[int], List[Entry]]:
    """(max_queued, entries) of a manifest; ManifestError when it cannot be used at all."""
    data = load_yaml(Path(path), ManifestError, "manifest")
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a mapping with 'runs' and/or 'templates'")
    top = At(str(path), 1, "", ManifestError)
    unknown = sorted(str(k) for k in set(data) - set(TOP_KEYS))
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    cap = data.get("max_queued")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ManifestError(f"{path}: max_queued must be a positive integer, got {cap!r}")
    defaults = data.get("defaults") or LMap()
    allowed = ("options", "dpu", *DPU_OPTIONS)
    if not isinstance(defaults, dict) or set(defaults) - set(allowed) or \
            not isinstance(defaults.get("options") or {}, dict):
        raise ManifestError(f"{path}: defaults must be a mapping of {', '.join(allowed)} "
                            f"(options itself a mapping), got {defaults!r}")
    dpu = data.get("dpu") or default_dpu
    if data.get("dpu") is not None:
        dpu = check(dpu, _RUN["dpu"], top.child("dpu", data, "dpu"))
    runs, templates = data.get("runs") or [], data.get("templates") or []
    if not isinstance(runs, list) or not isinstance(templates, list):
        raise ManifestError(f"{path}: 'runs' and 'templates' are lists")
    if not runs and not templates:
        raise ManifestError(f"{path}: no entries; list them under 'runs' or 'templates'")
    _count(path, runs, templates)
    entries = [_entry(f"runs[{i}]{_line(raw)}", raw, defaults, dpu, {}, _at(path, raw))
               for i, raw in enumerate(runs)]
    for i, raw in enumerate(templates):
        entries += _expand(f"templates[{i}]", raw, defaults, dpu, _at(path, raw))
    return cap, entries


def _at(path: Path, raw: Any) -> At:
    return At(str(path), getattr(raw, "line", None), "", ManifestError)


def _count(path: Path, runs: List[Any], templates: List[Any]) -> None:
    """Refuse a manifest of more than MAX_ENTRIES runs in all, before anything is expanded."""
    counts = []
    for raw in templates:
        params = raw.get("parameters") if isinstance(raw, dict) else None
        lists = [v for v in params.values() if isinstance(v, list)] if isinstance(params, dict) else []
        counts.append(math.prod(len(v) for v in lists) if lists else 1)
    total = len(runs) + sum(counts)
    if total > MAX_ENTRIES:
        each = ", ".join(f"templates[{i}]{_line(t)}: {n}" for i, (t, n) in enumerate(
            zip(templates, counts, strict=True)) if n > 1)
        raise ManifestError(f"{path}: expands to {total} runs ({len(runs)} runs, {each}); at most "
                            f"{MAX_ENTRIES} in all: split it into several manifests")


def _line(raw: Any) -> str:
    return f" (line {raw.line})" if isinstance(raw, LMap) else ""


def _expand(where: str, raw: Any, defaults: Dict[str, Any], dpu: str, at: At) -> List[Entry]:
    where += _line(raw)
    params = raw.get("parameters") if isinstance(raw, dict) else None
    if not isinstance(params, dict) or not params:
        return [Entry(where, error="a template needs 'parameters': a mapping of name -> list of values")]
    for name, values in params.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            return [Entry(where, error=f"parameter {name!r} must be a non-empty list of plain values")]
    body = LMap((k, v) for k, v in raw.items() if k != "parameters")
    body.line, body.lines = raw.line, raw.lines
    combos = [dict(zip(params, combo, strict=True)) for combo in itertools.product(*params.values())]
    return [_entry(f"{where} {' '.join(f'{k}={v}' for k, v in values.items())}", body, defaults, dpu,
                   values, at) for values in combos]


def _fill(value: Any, params: Dict[str, Any]) -> Any:
    """Put parameter values into {name} placeholders; "{name}" alone keeps the value's type."""
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    if not isinstance(value, str):
        return value
    for name in _PLACEHOLDER.findall(value):
        if name not in params:
            known = ", ".join(params) or "none (only templates have parameters)"
            raise ValueError(f"placeholder {{{name}}} is not a parameter; parameters: {known}")
    whole = _PLACEHOLDER.fullmatch(value)
    if whole:
        return params[whole.group(1)]
    return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), value)


def _merge(base: Any, over: Any) -> LMap:
    """base updated by over, keeping the line of each key from where it was written."""
    out = LMap({**(base or {}), **(over or {})})
    out.line = getattr(over, "line", 0) or getattr(base, "line", 0)
    out.lines = {**getattr(base, "lines", {}), **getattr(over, "lines", {})}
    return out


def _entry(where: str, raw: Any, defaults: Dict[str, Any], dpu: str, params: Dict[str, Any],
           at: At) -> Entry:
    entry = Entry(where)
    if not isinstance(raw, dict):
        entry.error = "an entry is a mapping with at least 'sequence'"
        return entry
    unknown = sorted(str(k) for k in set(raw) - set(ENTRY_KEYS))
    if unknown:
        entry.error = f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(ENTRY_KEYS)}"
        return entry
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        entry.error = "'options' must be a mapping like {i: WFI, d: 2000-04-28}"
        return entry
    merged = _merge({k: v for k, v in defaults.items() if k != "options"}, raw)
    merged.lines.update({k: n for k, n in getattr(defaults, "lines", {}).items()
                         if k not in raw and k != "options"})
    opts = _merge(defaults.get("options"), options)
    try:
        for key in merged:
            merged[key] = _fill(merged[key], params)
        for key in opts:
            opts[key] = _fill(opts[key], params)
    except ValueError as exc:
        entry.error = str(exc)
        return entry
    try:
        # The same model as the API body (run_request.RunRequest), dpu_* written flat here.
        if not isinstance(merged.get("sequence"), str) or not merged["sequence"]:
            raise at.fail("'sequence' is required, e.g. sequence: ReadNoise")
        entry.sequence = ">".join(p.strip() for p in check(
            merged["sequence"], _RUN["sequence"], at.child("sequence", merged, "sequence")).split(">"))
        entry.dpu = check(merged.get("dpu") or dpu, _RUN["dpu"], at.child("dpu", merged, "dpu"))
        entry.options = check_options(opts, at.child("options", merged, "options"))
        entry.dpu_options = check_dpu_options(_only(merged, DPU_OPTIONS), at)
    except DPUError as exc:
        entry.error = str(exc)
        return entry
    key = merged.get("key")
    if key is None:
        canon = json.dumps([entry.dpu, entry.sequence, entry.options], sort_keys=True, default=str)
        key = "auto-" + hashlib.sha256(canon.encode()).hexdigest()[:16]
    key = str(key)
    if not key or len(key) > 200 or not key.isprintable():
        entry.error = f"key {key[:60]!r} must be 1-200 printable characters"
        return entry
    entry.key, entry.state = key, "pending"
    return entry


def _only(values: LMap, keys: Tuple[str, ...]) -> LMap:
    out = LMap((k, v) for k, v in values.items() if k in keys)
    out.line, out.lines = values.line, values.lines
    return out
