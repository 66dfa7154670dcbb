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

import yaml

from .errors import DPUError
from .plan import Plan

DPU_OPTIONS = ("dpu_time", "dpu_mem", "dpu_aweversion", "send_code")
ENTRY_KEYS = ("key", "sequence", "options", "dpu", *DPU_OPTIONS)
TOP_KEYS = ("dpu", "max_queued", "defaults", "runs", "templates")
MAX_EXPANSION = 100_000
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class ManifestError(DPUError):
    """The manifest as a whole cannot be used."""


class _Map(dict):
    line = 0


class _Loader(yaml.SafeLoader):
    """Safe YAML with line numbers that keeps 2000-04-28 and Null as text: a date option and a
    task name (YAML 1.1 would make them a date and nothing); only ~, null and empty are null."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:null")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|)$"), ["~", "n", ""])


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Map:
    out = _Map(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


@dataclass
class Entry:
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
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ManifestError(f"{where}: malformed YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a mapping with 'runs' and/or 'templates'")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ManifestError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    cap = data.get("max_queued")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ManifestError(f"{path}: max_queued must be a positive integer, got {cap!r}")
    defaults = data.get("defaults") or {}
    allowed = ("options", "dpu", *DPU_OPTIONS)
    if not isinstance(defaults, dict) or set(defaults) - set(allowed) or \
            not isinstance(defaults.get("options") or {}, dict):
        raise ManifestError(f"{path}: defaults must be a mapping of {', '.join(allowed)} "
                            f"(options itself a mapping), got {defaults!r}")
    dpu = str(data.get("dpu") or default_dpu)
    runs, templates = data.get("runs") or [], data.get("templates") or []
    if not isinstance(runs, list) or not isinstance(templates, list):
        raise ManifestError(f"{path}: 'runs' and 'templates' are lists")
    if not runs and not templates:
        raise ManifestError(f"{path}: no entries; list them under 'runs' or 'templates'")
    entries = [_entry(f"runs[{i}]{_line(raw)}", raw, defaults, dpu, {}) for i, raw in enumerate(runs)]
    for i, raw in enumerate(templates):
        entries += _expand(f"templates[{i}]", raw, defaults, dpu)
    return cap, entries


def _line(raw: Any) -> str:
    return f" (line {raw.line})" if isinstance(raw, _Map) else ""


def _expand(where: str, raw: Any, defaults: Dict[str, Any], dpu: str) -> List[Entry]:
    where += _line(raw)
    params = raw.get("parameters") if isinstance(raw, dict) else None
    if not isinstance(params, dict) or not params:
        return [Entry(where, error="a template needs 'parameters': a mapping of name -> list of values")]
    for name, values in params.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            return [Entry(where, error=f"parameter {name!r} must be a non-empty list of plain values")]
    count = math.prod(len(values) for values in params.values())
    if count > MAX_EXPANSION:
        return [Entry(where, error=f"expands to {count} runs; at most {MAX_EXPANSION} per template")]
    body = {k: v for k, v in raw.items() if k != "parameters"}
    combos = [dict(zip(params, combo, strict=True)) for combo in itertools.product(*params.values())]
    return [_entry(f"{where} {' '.join(f'{k}={v}' for k, v in values.items())}", body, defaults, dpu, values)
            for values in combos]


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


def _entry(where: str, raw: Any, defaults: Dict[str, Any], dpu: str, params: Dict[str, Any]) -> Entry:
    entry = Entry(where)
    if not isinstance(raw, dict):
        entry.error = "an entry is a mapping with at least 'sequence'"
        return entry
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        entry.error = f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(ENTRY_KEYS)}"
        return entry
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        entry.error = "'options' must be a mapping like {i: WFI, d: 2000-04-28}"
        return entry
    merged = {**{k: v for k, v in defaults.items() if k != "options"}, **raw}
    merged["options"] = {**(defaults.get("options") or {}), **options}
    try:
        merged = _fill(merged, params)
    except ValueError as exc:
        entry.error = str(exc)
        return entry
    if not isinstance(merged.get("sequence"), str) or not merged["sequence"]:
        entry.error = "'sequence' is required, e.g. sequence: ReadNoise"
        return entry
    entry.sequence = ">".join(p.strip() for p in merged["sequence"].split(">"))
    entry.dpu = str(merged.get("dpu") or dpu)
    entry.options = merged["options"]
    entry.dpu_options = {k: merged[k] for k in DPU_OPTIONS if k in merged}
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
