"""Every user's jobs on one DPU, as the queue page and ``dpu queue`` show them.

The jobs come from the job cards (cards.py) and from the server user's own store; their states
from one scheduler call for every user's jobs plus the workers' status records, merged by the
same code as ``dpu.get_status()`` (status.refresh) in an in-memory store that only this page uses.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..config import DPUConfig
from ..errors import DPUError, Unreachable
from ..session import DPUSession, JobView
from ..status import poll_settings
from ..store import LETTERS, Job, Store
from ..transport import Transport
from ..worker import LOG, STATUS, process_dir
from .cards import Card, Listed, index_dir, list_cards
from .pages import printable

log = logging.getLogger(__name__)

MAX_TIMED = 200     # worker records read per job to find when it started and ended
LOG_TAIL = 200      # log lines per process on the job page
LOG_PROCESSES = 50  # processes whose logs the job page shows
STATUSES = ("QUEUED", "RUNNING", "FINISHED")


@dataclass
class Row:
    """One job as the page shows it: no paths, nothing but what the table and job page need."""

    key: str
    job_id: int
    user: str
    sequence: str
    options: Dict[str, Any]
    status: str
    ok: bool
    counters: Tuple[int, ...]
    processes: int
    queued: int
    running: int
    submitted: float
    started: Optional[float]
    ended: Optional[float]

    def running_time(self, now: float) -> Optional[float]:
        if self.started is None:
            return None
        return max(0.0, (self.ended or now) - self.started)

    def summary(self) -> str:
        """The options that say something, for the table (the job page shows all of them)."""
        return " ".join(f"{k}={v}" for k, v in self.options.items() if v not in (None, "", {}, [], False))

    def to_json(self, now: float) -> Dict[str, Any]:
        return {"key": self.key, "url": job_url(self.key), "jobid": self.job_id, "user": self.user,
                "sequence": self.sequence, "options": self.options, "summary": self.summary(),
                "status": self.status, "ok": self.ok,
                "counters": dict(zip(LETTERS, self.counters, strict=True)),
                "processes": self.processes, "queued": self.queued, "running": self.running,
                "submitted": self.submitted, "started": self.started, "ended": self.ended,
                "running_time": self.running_time(now)}


def job_url(key: str) -> str:
    from urllib.parse import quote
    return "/job/" + quote(key, safe="/")


class Mirror:
    """Every user's jobs on one DPU; thread-safe, refreshed at most every `interval` seconds."""

    def __init__(self, dpu: DPUConfig, own: Optional[Store] = None, days: float = 7.0,
                 transport: Optional[Transport] = None) -> None:
        self.dpu = dpu
        self.own = own            # the server user's store: its jobs show even without a card
        self.days = days
        # The page's own session on an in-memory store: polled like any user's, for all users.
        self.session = DPUSession(dpu, Store(Path(":memory:")), transport=transport)
        self.db = self.session.store
        self.transport = self.session.transport
        self.scheduler = self.session.scheduler
        self.scheduler.all_users = True
        self.cards: Dict[int, Card] = {}      # mirror id -> card
        self.ids: Dict[str, int] = {}         # card key -> mirror id
        self.read: Dict[str, float] = {}      # card path -> mtime when read
        self.times: Dict[int, Tuple[Optional[float], Optional[float]]] = {}
        self.lock = threading.RLock()         # the store, the transport and the maps above
        self.updated = 0.0
        self.warnings: List[str] = []
        self.broken: Set[str] = set()         # card keys that cannot be shown (logged once)
        self.settled: Dict[int, Row] = {}     # rows that no longer change: finished, times known
        self.interval = max(1.0, poll_settings(dpu)[0])

    def close(self) -> None:
        self.session.close()
        self.db.close()

    # -- refreshing -----------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        with self.lock:
            if not force and time.time() - self.updated < self.interval:
                return
            warnings: List[str] = []
            try:
                self._add_cards(warnings)
            except (Unreachable, DPUError) as exc:
                warnings.append(str(exc))
            self._add_own()
            self.session.refresh(force=True)
            if self.session.unreachable:
                warnings.append(f"{self.session.unreachable}; showing the last known states")
            else:
                try:
                    self._times()
                except Unreachable as exc:
                    warnings.append(f"{exc}; showing the last known states")
            self.warnings = warnings
            self.updated = time.time()

    def _add_cards(self, warnings: List[str]) -> None:
        root = index_dir(self.dpu, self.transport)
        listed, refused = list_cards(self.transport, root, time.time() - self.days * 86400)
        if refused:
            warnings.append(f"{len(refused)} job card(s) ignored: {refused[0]}")
        new: List[Listed] = [c for c in listed if self.read.get(c.path) != c.mtime]
        raw = self.transport.read_files([c.path for c in new]) if new else {}
        for item in new:
            self.read[item.path] = item.mtime
            try:
                card = Card.parse(raw.get(item.path) or b"")
            except (ValueError, TypeError) as exc:
                log.warning("unreadable job card %s: %s", item.path, exc)
                continue
            if card.user != item.user or card.dpu != self.dpu.name:
                log.warning("job card %s names user %r / DPU %r; ignored", item.path, card.user, card.dpu)
                continue
            self._add(card)

    def _add_own(self) -> None:
        if self.own is None:
            return
        store = self.own.meta_get("store_id")
        if store is None:
            return  # this user never submitted a job
        for job in self.own.jobs_since(self.dpu.name, time.time() - self.days * 86400):
            if f"{job.user}/{job.id}.{store}" not in self.ids:
                self._add(Card.from_job(job, store))

    def _add(self, card: Card) -> None:
        """Copy a card's job into the page's store; a card that does not fit is skipped, once."""
        if card.key in self.ids:
            return
        try:
            jid = self.db.record_mirrored(
                self.dpu.name, card.user, card.sequence, card.options,
                {"chunk": card.chunk, "time_limit": card.time_limit}, card.nproc, card.ntasks,
                card.jobdir, card.native_ids, card.created, card.submitted)
        except (TypeError, ValueError, OverflowError, sqlite3.Error) as exc:
            if card.key not in self.broken:   # said once, not at every refresh
                self.broken.add(card.key)
                log.warning("job %s cannot be shown (%s: %s); skipped", printable(card.key),
                            type(exc).__name__, printable(str(exc)))
            return
        self.broken.discard(card.key)
        self.cards[jid] = card
        self.ids[card.key] = jid

    def _times(self) -> None:
        """When each job started (its first process) and ended (its last), from worker records."""
        wanted: Dict[int, List[str]] = {}
        unsettled = [jid for jid in self.cards if self.times.get(jid, (None, None))[1] is None]
        for job in self.db.jobs(ids=unsettled) if unsettled else []:
            start, end = self.times.get(job.id, (None, None))
            if start is not None and job.finished is None:
                continue
            procs = [p for p in self.db.procs(job.id) if p.state != "QUEUED"][:MAX_TIMED]
            wanted[job.id] = [str(process_dir(Path(job.jobdir), p.idx) / STATUS) for p in procs]
        paths = [p for group in wanted.values() for p in group]
        raw = self.transport.read_files(paths) if paths else {}
        jobs = {j.id: j for j in self.db.jobs(ids=list(wanted))} if wanted else {}
        for jid, group in wanted.items():
            records = [_record(raw.get(p)) for p in group]
            starts = [r["started"] for r in records if r.get("started")]
            ends = [r["ended"] for r in records if r.get("ended")]
            start = min(starts) if starts else self.times.get(jid, (None, None))[0]
            finished = jobs[jid].finished
            end = (max(ends) if ends else finished) if finished is not None else None
            self.times[jid] = (start, end)

    # -- reading --------------------------------------------------------------------------
    def rows(self, user: str = "", status: str = "") -> List[Row]:
        """Newest first, filtered by user and status; a job whose row cannot be made is left
        out with a warning (one broken card must not take the page down for everyone).
        A finished job whose times are known keeps its row: only the others are read again."""
        out = []
        with self.lock:
            todo = [jid for jid in self.cards if jid not in self.settled]
            jobs = (self.db.jobs() if len(todo) > 500 else self.db.jobs(ids=todo)) if todo else []
            wanted = set(todo)
            jobs = [j for j in jobs if j.id in wanted]
            counts = self.db.counts([j.id for j in jobs])
            fresh: Dict[int, Row] = {}
            for job in jobs:
                try:
                    fresh[job.id] = row = self._row(job, JobView(job, counts[job.id]))
                except Exception as exc:  # any bad field: skip this row only
                    key = self.cards[job.id].key if job.id in self.cards else str(job.id)
                    if key not in self.broken:   # said once, not at every refresh
                        self.broken.add(key)
                        log.warning("job %s cannot be shown (%s: %s); skipped", printable(key),
                                    type(exc).__name__, printable(str(exc)))
                    continue
                if job.finished is not None and row.ended is not None:
                    self.settled[job.id] = row
            for jid in self.cards:
                made = self.settled.get(jid) or fresh.get(jid)
                if made is None or (user and made.user != user) or (status and made.status != status):
                    continue
                out.append(made)
        out.sort(key=_newest, reverse=True)
        return out

    def users(self) -> List[str]:
        with self.lock:
            return sorted({c.user for c in self.cards.values()})

    def _row(self, job: Job, view: JobView) -> Row:
        card = self.cards[job.id]
        start, end = self.times.get(job.id, (None, None))
        mask = _masker(card.jobdir)
        options = {k: _masked(v, mask) for k, v in card.options.items()}
        return Row(card.key, card.job_id, card.user, card.sequence, options, view.status,
                   view.ok, view.counts.letters, job.nproc, view.counts.queued, view.counts.running,
                   card.submitted, start, end)

    def job(self, key: str) -> Optional[Dict[str, Any]]:
        """One job with its processes and the tail of their logs (paths masked), or None."""
        with self.lock:
            jid = self.ids.get(key)
            if jid is None:
                return None
            job = self.db.job(jid)
            row = self._row(job, JobView(job, self.db.counts([jid])[jid]))
            procs = self.db.procs(jid)
            paths = {p.idx: str(process_dir(Path(job.jobdir), p.idx) / LOG) for p in procs[:LOG_PROCESSES]}
            raw = self.transport.read_files(list(paths.values()))  # an SSH transport is not thread-safe
        mask = _masker(self.cards[jid].jobdir)
        logs = {idx: [mask(line) for line in _tail(raw.get(path))] for idx, path in paths.items()}
        return {"job": row, "processes": [
            {"index": p.idx, "state": p.state, "outcome": p.outcome, "reason": mask(p.reason),
             "log": logs.get(p.idx)} for p in procs],
            "logs_cut": max(0, len(procs) - len(paths))}


def _newest(row: Row) -> Tuple[float, str]:
    try:
        return float(row.submitted), row.key
    except (TypeError, ValueError):
        return 0.0, row.key


def _record(raw: Optional[bytes]) -> Dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(raw: Optional[bytes]) -> List[str]:
    return raw.decode("utf-8", "replace").splitlines()[-LOG_TAIL:] if raw else []


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    return value


def _masker(jobdir: str) -> Callable[[str], str]:
    """Hide where a user keeps their jobs: the workdir (which names them) becomes $WORKDIR."""
    workdir = jobdir.rsplit("/jobs/", 1)[0] if "/jobs/" in jobdir else jobdir

    def mask(text: str) -> str:
        return text.replace(jobdir, "$JOBDIR").replace(workdir, "$WORKDIR") if workdir else text
    return mask
