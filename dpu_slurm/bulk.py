"""``dpu bulk MANIFEST.yaml``: many runs (e.g. a night's data from cron), each submitted once.

A manifest lists runs and/or templates whose parameter lists expand to runs (dates x CCDs).
Every run has a key (``key:``, or derived from DPU, sequence and options); the keys submitted
are kept in the user's store, so a rerun skips them. A lock file in DPU_HOME makes overlapping
runs take turns; ``max_queued`` leaves what is over the cap for the next run. docs/bulk-and-web.md
shows a manifest and a crontab line.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import math
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

import yaml

from .catalog import Catalog
from .config import DPUConfig, current_user, default_dpu_name, dpu_home, get_dpu
from .errors import DPUError
from .plan import Plan, make_plan
from .schedulers import SubmitRequest, for_dpu
from .session import DPUSession, awepipe_path, open_store
from .store import Store
from .transport.local import LocalTransport

OK, FAILED, USAGE, DEFERRED, BAD, LOCKED = 0, 1, 2, 3, 4, 75
EXIT_CODES = """exit codes: 0 every entry is submitted (now or by an earlier run); 1 the scheduler refused
some entries (they are retried by the next run); 2 the manifest cannot be used (nothing
submitted); 3 max_queued was reached: the rest waits for the next run; 4 bad entries were
reported and the others submitted (with --strict: nothing submitted); 75 another dpu bulk
held the lock for longer than --lock-timeout"""
DPU_OPTIONS = ("dpu_time", "dpu_mem", "dpu_aweversion", "send_code")
ENTRY_KEYS = ("key", "sequence", "options", "dpu", *DPU_OPTIONS)
TOP_KEYS = ("dpu", "max_queued", "defaults", "runs", "templates")
MAX_EXPANSION = 100_000
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class ManifestError(DPUError):
    """The manifest as a whole cannot be used."""


class Locked(DPUError):
    exit_code = LOCKED


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


def validate(entries: List[Entry], catalog: Catalog) -> None:
    """Plan each entry and render its job script; a problem makes that entry bad."""
    first: Dict[str, str] = {}
    configs: Dict[str, Any] = {}   # DPU name -> its config, or why there is none
    for e in (e for e in entries if e.state != "bad"):
        if e.key in first:
            e.state, e.error = "bad", f"key {e.key!r} is also the key of {first[e.key]}; keys are unique"
            continue
        first[e.key] = e.where
        try:
            if e.dpu not in configs:
                configs[e.dpu] = _config_or_error(e.dpu)
            if isinstance(configs[e.dpu], DPUError):
                raise configs[e.dpu]
            e.plan = make_plan(catalog, configs[e.dpu], e.sequence, e.options, **e.dpu_options)
            _render(configs[e.dpu], e.plan)
        except (DPUError, ValueError, TypeError) as exc:  # TypeError: a dpu option of a wrong type
            e.state, e.error = "bad", str(exc)


def _config_or_error(name: str) -> Any:
    try:
        return get_dpu(name)
    except DPUError as exc:
        return exc


def _render(dpu: DPUConfig, plan: Plan) -> None:
    """Render the job script(s) as the submission will, so template problems show now."""
    version = dpu.awe_versions.get(plan.aweversion, {}) if plan.aweversion else {}
    req = SubmitRequest(job_id=0, user=current_user(), dpu=dpu.name, sequence=plan.sequence,
                        jobdir=f"{dpu.target_workdir()}/jobs/0.check", nproc=plan.nproc,
                        time_limit=plan.time_limit, mem=plan.mem, partition=plan.partition,
                        python=dpu.python_for_jobs(), pythonpath="BUNDLE/worker:BUNDLE/code",
                        setup=list(version.get("setup", [])), env=dict(dpu.env))
    scheduler = for_dpu(dpu, LocalTransport())  # rendering touches no transport
    scripts = getattr(scheduler, "scripts", None)
    scripts(req) if scripts is not None else scheduler.script(req)


# -- running it --------------------------------------------------------------------------------
@contextmanager
def bulk_lock(timeout: float, say: IO[str]) -> Iterator[None]:
    """One dpu bulk at a time per DPU_HOME (flock: released by the kernel if a run dies)."""
    path = dpu_home() / "bulk.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Locked(f"another dpu bulk held {path} for more than {timeout:g} s; "
                                 "nothing was submitted (raise --lock-timeout)") from None
                if not told:
                    print(f"waiting for another dpu bulk run to finish (lock {path})", file=say, flush=True)
                told = True
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mark(store: Store, e: Entry, manifest: str, state: str) -> None:
    now = time.time()
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO bulk_entries (key, dpu, manifest, state, job_id, error,"
                   " started, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (e.key, e.dpu, manifest, state, e.job_id, e.error, now, now))


def _interrupted(store: Store, e: Entry, started: float) -> Tuple[str, Optional[int]]:
    """The phase and id of the job a killed run made for this entry; ("", None) if none."""
    assert e.plan is not None
    options = json.loads(json.dumps(e.plan.options))
    for job in store.jobs(dpu=e.dpu):
        if job.created >= started - 1 and job.sequence == e.plan.sequence and job.options == options:
            return job.phase, job.id
    return "", None


class Reporter:
    """Plain lines when not on a TTY; a progress bar on one (lines then print above it)."""

    def __init__(self, total: int, out: IO[str], verbose: bool) -> None:
        self.total, self.out, self.verbose, self.tty = total, out, verbose, out.isatty()
        self.done, self.drawn = 0, 0.0
        self.counts: Dict[str, int] = {}

    def entry(self, e: Entry) -> None:
        self.done += 1
        self.counts[e.state] = self.counts.get(e.state, 0) + 1
        line = {"submitted": lambda: f"submitted {e.key} -> job {e.job_id} on {e.dpu} "
                                     f"({e.plan.nproc if e.plan else '?'} processes)",
                "failed": lambda: f"failed {e.key}: {e.error}",
                "bad": lambda: f"bad entry {e.where}: {e.error}",
                "would-submit": lambda: f"would submit {e.key}: {_describe(e)}"}.get(e.state)
        if line is not None:
            self._print(line())
        elif self.verbose:  # skipped, deferred, not submitted
            self._print(f"{e.state} {e.key}: {e.error or f'job {e.job_id}' if e.job_id else ''}")
        if self.tty and (time.monotonic() - self.drawn > 0.1 or self.done == self.total):
            self._bar()

    def _print(self, line: str) -> None:
        self.out.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self.out.flush()

    def _bar(self) -> None:
        filled = 30 * self.done // max(1, self.total)
        counts = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self.out.write(f"\r\x1b[K[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {counts}")
        self.out.flush()
        self.drawn = time.monotonic()

    summary = _print


def _describe(e: Entry) -> str:
    assert e.plan is not None
    opts = " ".join(f"{k}={v}" for k, v in e.options.items())
    part = f", partition {e.plan.partition}" if e.plan.partition else ""
    return (f"{e.sequence} {opts} on {e.dpu} ({e.plan.nproc} processes, {e.plan.time_limit} s, "
            f"{e.plan.mem} MB{part})")


def run(args: Any) -> int:
    """``dpu bulk``: the command's whole flow; returns the exit code."""
    started, say = time.monotonic(), (sys.stderr if args.json else sys.stdout)
    cap, entries = load(Path(args.manifest), args.dpu or default_dpu_name())
    cap = cap if args.max_queued is None else args.max_queued
    awepipe = awepipe_path()
    validate(entries, Catalog.load(awepipe))
    report = Reporter(len(entries), say, args.verbose)
    store = open_store()
    try:
        if args.dry_run or (args.strict and any(e.state == "bad" for e in entries)):
            _preview(entries, store, "would-submit" if args.dry_run else "not-submitted", report)
        else:
            with bulk_lock(args.lock_timeout, say):
                _submit(entries, store, cap, awepipe, str(Path(args.manifest).resolve()), args.forget,
                        report)
    finally:
        store.close()
    code = _exit_code(entries)
    counts = {s: sum(e.state == s for e in entries) for s in (
        "submitted", "would-submit", "skipped", "deferred", "failed", "bad", "not-submitted")}
    text = ", ".join(f"{n} {s.replace('-', ' ')}" for s, n in counts.items()
                     if n or s in ("submitted", "skipped"))
    report.summary(f"dpu bulk{' --dry-run' if args.dry_run else ''}: {len(entries)} entries: {text} "
                   f"in {time.monotonic() - started:.1f} s (exit {code})")
    if args.json:
        print(json.dumps({"exit": code, "counts": counts, "entries": [
            {"key": e.key, "where": e.where, "dpu": e.dpu, "state": e.state, "jobid": e.job_id,
             "error": e.error or None} for e in entries]}, indent=1))
    return code


def _submitted(store: Store) -> Dict[str, Tuple[str, Optional[int], float]]:
    """Key -> (state, job id, when) of what earlier runs did."""
    rows = store.db.execute("SELECT key, state, job_id, started FROM bulk_entries")
    return {k: (s, j, t) for k, s, j, t in rows}


def _preview(entries: List[Entry], store: Store, state: str, report: Reporter) -> None:
    """--dry-run, or --strict with bad entries: say what would happen, submit nothing."""
    previous = _submitted(store)
    for e in entries:
        if e.state == "pending":
            state_, e.job_id, _ = previous.get(e.key, ("", None, 0.0))
            e.state = "skipped" if state_ == "submitted" else state
        report.entry(e)


def _submit(entries: List[Entry], store: Store, cap: Optional[int], awepipe: Path, manifest: str,
            forget: List[str], report: Reporter) -> None:
    """Under the lock: what an overlapping run did is in the store when it is read here."""
    if forget:
        with store.transaction() as db:
            db.executemany("DELETE FROM bulk_entries WHERE key=?", [(k,) for k in forget])
    previous = _submitted(store)
    sessions: Dict[str, DPUSession] = {}
    active: Dict[str, int] = {}   # DPU -> this user's unfinished jobs there (with max_queued)
    try:
        for e in entries:
            if e.state == "pending":
                _submit_one(e, store, previous, sessions, active, cap, awepipe, manifest)
            report.entry(e)
    finally:
        for session in sessions.values():
            session.close()


def _submit_one(e: Entry, store: Store, previous: Dict[str, Tuple[str, Optional[int], float]],
                sessions: Dict[str, DPUSession], active: Dict[str, int], cap: Optional[int],
                awepipe: Path, manifest: str) -> None:
    assert e.plan is not None
    state, e.job_id, when = previous.get(e.key, ("", None, 0.0))
    if state == "submitting":  # a run was killed around this entry's submission
        state, e.job_id = _interrupted(store, e, when)
    if state == "submitted":
        e.state = "skipped"
        return
    if state == "recorded":
        e.state, e.error = "failed", (
            f"a killed dpu bulk run left job {e.job_id} half-submitted; check `dpu status "
            f"{e.job_id}`, cancel it if needed, then rerun with --forget {e.key}")
        return
    session = sessions.get(e.dpu) or sessions.setdefault(e.dpu, DPUSession(get_dpu(e.dpu), store))
    if cap is not None and e.dpu not in active:
        session.refresh(force=True)  # one scheduler call per DPU: which jobs are still queued
        active[e.dpu] = len(store.jobs(dpu=e.dpu, active=True))
    if cap is not None and active[e.dpu] >= cap:
        e.state, e.error = "deferred", f"max_queued {cap} reached on {e.dpu}; left for the next run"
        return
    _mark(store, e, manifest, "submitting")
    try:
        e.job_id = session.submit(e.plan, awepipe)
        e.state = "submitted"
        active[e.dpu] = active.get(e.dpu, 0) + 1
    except Exception as exc:  # reported per entry; the next run retries it
        e.state = "failed"
        e.error = str(exc) if isinstance(exc, DPUError) else f"{type(exc).__name__}: {exc}"
    _mark(store, e, manifest, e.state)


def _exit_code(entries: List[Entry]) -> int:
    states = {e.state for e in entries}
    if "bad" in states:
        return BAD
    if "failed" in states:
        return FAILED
    return DEFERRED if "deferred" in states else OK
