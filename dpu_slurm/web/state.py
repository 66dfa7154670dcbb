"""The page's state: one background thread polls the DPU, requests read the last snapshot.

A request never waits for the scheduler: it filters the rows of the last snapshot (immutable,
replaced whole after each refresh) and says how old they are. The thread polls on the DPU's
back-off (config ``poll``: min_interval .. max_interval, doubling while nothing changes) and
wakes early when a submit asks it to.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from ..errors import Unreachable
from ..status import poll_settings
from ..store import LETTERS
from ..text import printable
from .mirror import Mirror
from .pages import json_safe, templates
from .rows import Row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One job of a snapshot: its table row as HTML at the snapshot's time, and its JSON as
    text once it no longer changes with the clock (else the data, timed at each request)."""

    key: str
    user: str
    status: str
    html: str
    text: Optional[str]
    data: Optional[Dict[str, Any]] = None

    def json_text(self, now: float) -> str:
        """The job's JSON text at time `now`."""
        if self.text is not None:
            return self.text
        return json.dumps(json_safe(with_running_time(self.data or {}, now)), ensure_ascii=False)


@dataclass(frozen=True)
class Snapshot:
    """Every user's jobs at `updated` (0: no refresh finished yet), newest first."""

    entries: Tuple[Entry, ...] = ()
    users: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()
    updated: float = 0.0
    keys: FrozenSet[str] = frozenset()
    summary: Tuple[Tuple[str, int], ...] = ()   # the overview's numbers: jobs, processes, N/E/A/S/U

    def age(self, now: float) -> Optional[float]:
        """Seconds since the snapshot was built, or None before the first one."""
        return max(0.0, now - self.updated) if self.updated else None

    def select(self, user: str = "", status: str = "") -> List[Entry]:
        """The jobs of one user and/or status, newest first."""
        if not user and not status:
            return list(self.entries)
        return [e for e in self.entries
                if (not user or e.user == user) and (not status or e.status == status)]


def with_running_time(row: Dict[str, Any], now: float) -> Dict[str, Any]:
    """A row with its running time as of `now` (the snapshot keeps the start and end)."""
    started, ended = row.get("started"), row.get("ended")
    running = None
    if isinstance(started, (int, float)):
        end = ended if isinstance(ended, (int, float)) else now
        running = max(0.0, end - started)
    return {**row, "running_time": running}


def entry(row: Row, now: float, base: str = "") -> Entry:
    """The snapshot entry of one mirror row at time `now`; its link under `base` (/dpu/NAME)."""
    data = json_safe(row.to_json(now))
    data.pop("running_time", None)
    data["url"] = base + data["url"]
    timed = with_running_time(data, now)
    html = templates().get_template("queue_row.html.j2").render(j=timed, letters=LETTERS)
    if data.get("started") is None or data.get("ended") is not None:   # not running
        return Entry(row.key, row.user, row.status, html, json.dumps(timed, ensure_ascii=False))
    return Entry(row.key, row.user, row.status, html, None, data)


class Builder:
    """Snapshots from the mirror; a row that did not change keeps its entry (no new JSON or
    HTML for the thousands of finished jobs at every refresh)."""

    def __init__(self, base: str = "") -> None:
        self.cache: Dict[str, Tuple[Row, Entry]] = {}
        self.base = base

    def build(self, mirror: Mirror, warnings: List[str]) -> Snapshot:
        """A new snapshot of the mirror's rows; a job that cannot be shown is skipped and warned about."""
        now = time.time()
        entries: List[Entry] = []
        cache: Dict[str, Tuple[Row, Entry]] = {}
        totals: Dict[str, int] = {}
        for row in mirror.rows():
            old = self.cache.get(row.key)
            try:
                made = old[1] if old is not None and old[0] is row else entry(row, now, self.base)
            except Exception as exc:  # one job, not the page
                if row.key not in mirror.broken:
                    mirror.broken.add(row.key)
                    log.warning("job %s cannot be shown (%s); skipped", printable(row.key), exc)
                continue
            cache[row.key] = (row, made)
            entries.append(made)
            add_up(totals, row)
        self.cache = cache
        keys = frozenset(cache)
        broken = sorted(k for k in mirror.broken if k not in keys)
        if broken:
            warnings = [*warnings, f"{len(broken)} job(s) cannot be shown (see the dpu web log): "
                                   f"{', '.join(printable(k) for k in broken[:3])}"]
        users = sorted({e.user for e in entries})
        return Snapshot(tuple(entries), tuple(users), tuple(warnings), now, keys, tuple(totals.items()))


def add_up(totals: Dict[str, int], row: Row) -> None:
    """Count a job into the overview's numbers: jobs per status, queued and running processes
    (the queue depth) and the N/E/A/S/U counters over every job."""
    for name, n in ((row.status, 1), ("queued", row.queued), ("running", row.running),
                    *zip(LETTERS, row.counters, strict=True)):
        totals[name] = totals.get(name, 0) + int(n)


class Refresher:
    """The one thread that talks to the DPU for the page."""

    def __init__(self, mirror: Mirror, floor: float = 1.0, base: str = "") -> None:
        self.mirror = mirror
        self.floor = floor          # never poll more often than this (a local DPU says 0)
        self.snapshot = Snapshot()
        self.builder = Builder(base)
        self.refreshes = 0          # finished refreshes, for whoever waits for a fresh one
        self.failures = 0           # refreshes in a row that could not reach the DPU
        self.problem = ""           # why the last refresh could not reach it ("" when it could)
        self.polling_since: Optional[float] = None   # a refresh is on its way since then
        self.reached = 0.0          # when a refresh last reached the DPU
        self.tried = 0.0            # when the last refresh ended, whether it reached the DPU or not
        self._failing = ""          # the last refresh's error, logged once
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dpu-web-refresh", daemon=True)

    def start(self) -> None:
        """Start the refresh thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the refresh thread, waiting at most `timeout` seconds."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Refresh soon (after a submit), without waiting for it."""
        self._wake.set()

    def refresh_once(self) -> None:
        """One refresh and a new snapshot; a failure keeps the last rows and says why."""
        self.polling_since = time.time()
        try:
            self.mirror.refresh(force=True)
            self.snapshot = self.builder.build(self.mirror, list(self.mirror.warnings))
            self._failing = ""
            self.problem = self.mirror.unreachable
            self.reached = self.reached if self.problem else time.time()
        except Exception as exc:  # the page keeps serving the last snapshot
            self.problem = printable(str(exc), 300) if isinstance(exc, Unreachable) else \
                f"{type(exc).__name__}: {printable(str(exc), 200)}"
            if repr(exc) != self._failing:   # once per distinct failure, not at every poll
                self._failing = repr(exc)
                log.exception("refreshing the queue failed")
            old = self.snapshot
            since = time.strftime("%H:%M:%S", time.localtime(old.updated)) if old.updated else "never"
            warning = (f"refreshing failed ({type(exc).__name__}: {printable(str(exc), 200)}); "
                       f"showing the states of {since}")
            self.snapshot = Snapshot(old.entries, old.users, (warning,), old.updated, old.keys, old.summary)
        self.failures = self.failures + 1 if self.problem else 0
        self.polling_since = None
        self.tried = time.time()
        self.refreshes += 1

    def delay(self) -> float:
        """Seconds to the next poll: the DPU's back-off, at least `floor`."""
        low, high, _ = poll_settings(self.mirror.dpu)
        try:
            with self.mirror.lock:
                current = float(self.mirror.store.meta_get(f"poll:{self.mirror.dpu.name}:interval") or low)
        except (ValueError, TypeError):
            current = low
        delay = max(self.floor, min(max(current, low), max(high, low)))
        if self.failures:   # unreachable: ask less often, up to max_interval (at least a minute)
            delay = max(delay, min(max(high, 60.0), self.floor * 2 ** min(self.failures, 16)))
        return delay

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.refresh_once()
            self._wake.wait(self.delay())
            # woken by submits: still at most one refresh per `floor` seconds
            self._stop.wait(max(0.0, started + self.floor - time.monotonic()))
            self._wake.clear()
