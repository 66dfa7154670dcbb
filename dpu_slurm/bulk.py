"""``dpu bulk MANIFEST.yaml``: many runs (e.g. a night's data from cron), each submitted once.

A manifest lists runs and/or templates whose parameter lists expand to runs (dates x CCDs).
Every run has a key (``key:``, or derived from DPU, sequence and options); the keys submitted
are kept in the user's store, so a rerun skips them. A lock file in DPU_HOME makes overlapping
runs take turns; ``max_queued`` leaves what is over the cap for the next run. The README
shows a manifest and a crontab line.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from . import routing
from .catalog import Catalog
from .config import default_dpu_name, dpu_home, get_dpu
from .errors import DPUError
from .files import held_lock
from .manifest import Entry, load
from .plan import make_plan
from .session import DPUSession, awepipe_path, open_store, render_scripts
from .states import Phase
from .status import poll_settings
from .store import Store

OK, FAILED, USAGE, DEFERRED, BAD, LOCKED = 0, 1, 2, 3, 4, 75
EXIT_CODES = """exit codes: 0 every entry is submitted (now or by an earlier run); 1 the scheduler refused
some entries (they are retried by the next run); 2 the manifest cannot be used (nothing
submitted); 3 max_queued was reached, or a killed run's job is not settled yet: the rest waits
for the next run; 4 bad entries were
reported and the others submitted (with --strict: nothing submitted); 75 another dpu bulk
held the lock for longer than --lock-timeout"""


class Locked(DPUError):
    """Another ``dpu bulk`` holds this manifest's lock (exit status LOCKED)."""

    exit_code = LOCKED


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
            render_scripts(configs[e.dpu], e.plan)  # template problems show now, not at submit
        except (DPUError, ValueError, TypeError) as exc:  # TypeError: a dpu option of a wrong type
            e.state, e.error = "bad", str(exc)


def _config_or_error(name: str) -> Any:
    try:
        return get_dpu(name)
    except DPUError as exc:
        return exc


# -- running it --------------------------------------------------------------------------------
@contextmanager
def bulk_lock(timeout: float, say: IO[str]) -> Iterator[None]:
    """One dpu bulk at a time per DPU_HOME (flock: released by the kernel if a run dies)."""
    path = dpu_home() / "bulk.lock"   # in DPU_HOME: 0700, like the store in it
    with held_lock(path, timeout,
                   lambda: print(f"waiting for another dpu bulk run to finish (lock {path})", file=say,
                                 flush=True),
                   lambda: Locked(f"another dpu bulk held {path} for more than {timeout:g} s; "
                                  "nothing was submitted (raise --lock-timeout)")):
        yield


def _mark(store: Store, e: Entry, manifest: str, state: str, attempt: bool = False) -> None:
    """Keep the entry's state; `started` is when this attempt began (before its job existed)."""
    store.bulk_mark(e.key, e.dpu, manifest, state, e.job_id, e.error, attempt)


def _interrupted(store: Store, e: Entry, started: float) -> Tuple[str, Optional[int]]:
    """The phase and id of the job a killed run made for this entry; ("", None) if none."""
    assert e.plan is not None
    options = json.loads(json.dumps(e.plan.options))
    for job in reversed(store.jobs(dpu=e.dpu)):  # the newest: the attempt that was killed
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
        """Count one finished entry and print its line (skips only with --verbose)."""
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
            detail = e.error or (f"job {e.job_id}" if e.job_id else "")
            self._print(f"{e.state} {e.key}: {detail}")
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
    catalog = Catalog.load(awepipe)
    store = open_store()
    try:
        routing.route_entries(entries, catalog, store, say)   # dpu: auto
        validate(entries, catalog)
        report = Reporter(len(entries), say, args.verbose)
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


def _preview(entries: List[Entry], store: Store, state: str, report: Reporter) -> None:
    """--dry-run, or --strict with bad entries: say what would happen, submit nothing."""
    previous = store.bulk_entries()
    for e in entries:
        if e.state == "pending":
            state_, e.job_id, _ = previous.get(e.key, ("", None, 0.0))
            e.state = "skipped" if state_ == "submitted" else state
        report.entry(e)


def _submit(entries: List[Entry], store: Store, cap: Optional[int], awepipe: Path, manifest: str,
            forget: List[str], report: Reporter) -> None:
    """Under the lock: what an overlapping run did is in the store when it is read here."""
    sessions: Dict[str, DPUSession] = {}
    active: Dict[str, int] = {}   # DPU -> this user's unfinished jobs there (with max_queued)
    try:
        # A job a killed run left half-submitted is settled first (adopted if the scheduler has
        # it under its tag, else not submitted): an entry is decided by its job, never guessed.
        _settle(store, [j for _, j, _ in store.bulk_entries().values() if j is not None], sessions)
        kept = _forget(store, forget) if forget else {}
        previous = store.bulk_entries()
        for e in entries:
            if e.state == "pending" and e.key in kept:
                e.state, e.error = "failed", kept[e.key]
            elif e.state == "pending":
                _submit_one(e, store, previous, sessions, active, cap, awepipe, manifest)
            report.entry(e)
    finally:
        for session in sessions.values():
            session.close()


def _session(store: Store, sessions: Dict[str, DPUSession], dpu: str) -> DPUSession:
    if dpu not in sessions:
        sessions[dpu] = DPUSession(get_dpu(dpu), store)
        sessions[dpu].freeze_code = True   # one run ships the code as it was at its start
    return sessions[dpu]


def _settle(store: Store, job_ids: List[int], sessions: Dict[str, DPUSession]) -> None:
    """Poll until these jobs are no longer 'recorded' (at most the DPU's grace and a little)."""
    wanted = set(job_ids)
    recorded = [j for j in store.jobs(active=True) if j.phase == Phase.RECORDED and j.id in wanted]
    for dpu in sorted({j.dpu for j in recorded}):
        try:
            session = _session(store, sessions, dpu)
        except DPUError:
            continue  # the DPU is gone from the config: its entries say so when submitted
        grace = poll_settings(session.dpu)[2]
        ids = [j.id for j in recorded if j.dpu == dpu]
        deadline = time.monotonic() + grace + 30
        while True:
            session.refresh(force=True)
            if all(j.phase != Phase.RECORDED for j in store.jobs(ids=ids)) or time.monotonic() >= deadline:
                break
            time.sleep(min(2.0, max(0.1, grace / 10)))


def _forget(store: Store, keys: List[str]) -> Dict[str, str]:
    """Forget these keys, except those whose job may still run (forgetting them would submit
    it twice): key -> why it was kept."""
    kept: Dict[str, str] = {}
    previous = store.bulk_entries()
    for key in keys:
        job_id = previous.get(key, ("", None, 0.0))[1]
        job = store.jobs(ids=[job_id]) if job_id is not None else []
        if job and job[0].finished is None and job[0].phase in (Phase.RECORDED, Phase.SUBMITTED):
            kept[key] = (f"--forget {key} refused: its job {job_id} is still "
                         f"{'being submitted' if job[0].phase == Phase.RECORDED else 'queued or running'}; "
                         f"cancel it (dpu cancel {job_id} --force), wait until `dpu status {job_id}` "
                         f"says FINISHED, then rerun with --forget {key}")
    store.bulk_forget([k for k in keys if k not in kept])
    return kept


def _submit_one(e: Entry, store: Store, previous: Dict[str, Tuple[str, Optional[int], float]],
                sessions: Dict[str, DPUSession], active: Dict[str, int], cap: Optional[int],
                awepipe: Path, manifest: str) -> None:
    assert e.plan is not None
    state, e.job_id, when = previous.get(e.key, ("", None, 0.0))
    if state == "submitting" and e.job_id is None:  # killed before its job was recorded
        state, e.job_id = _interrupted(store, e, when)
    job = store.jobs(ids=[e.job_id]) if e.job_id is not None else []
    if job:  # the entry's job decides: it was submitted, is still unsettled, or never was
        state = job[0].phase
    if state == "submitted":
        e.state = "skipped"
        _mark(store, e, manifest, "submitted")
        return
    if state == Phase.RECORDED:
        e.state, e.error = "deferred", (
            f"job {e.job_id} of a killed run is not settled yet (the scheduler may still report "
            "it under its tag); the next run adopts it or submits the entry, never both")
        return
    e.job_id = None
    session = _session(store, sessions, e.dpu)
    if cap is not None and e.dpu not in active:
        session.refresh(force=True)  # one scheduler call per DPU: which jobs are still queued
        active[e.dpu] = len(store.jobs(dpu=e.dpu, active=True))
    if cap is not None and active[e.dpu] >= cap:
        e.state, e.error = "deferred", f"max_queued {cap} reached on {e.dpu}; left for the next run"
        return
    _mark(store, e, manifest, "submitting", attempt=True)

    def recorded(job_id: int) -> None:  # the entry knows its job before the scheduler is called
        e.job_id = job_id
        _mark(store, e, manifest, "submitting")

    try:
        e.job_id = session.submit(e.plan, awepipe, recorded=recorded)
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
