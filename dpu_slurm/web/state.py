"""The page's state: one background thread polls the DPU, requests read the last snapshot.

A request never waits for the scheduler: it filters the rows of the last snapshot (immutable,
replaced whole after each refresh) and says how old they are. The thread polls on the DPU's
back-off (config ``poll``: min_interval .. max_interval, doubling while nothing changes) and
wakes early when a submit asks it to.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..status import poll_settings
from .mirror import Mirror
from .pages import clean, printable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Every user's jobs at `updated` (0: no refresh finished yet), as JSON-ready rows."""

    rows: Tuple[Dict[str, Any], ...] = ()
    users: Tuple[str, ...] = ()
    warnings: Tuple[str, ...] = ()
    updated: float = 0.0
    by_key: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def age(self, now: float) -> Optional[float]:
        return max(0.0, now - self.updated) if self.updated else None

    def select(self, user: str = "", status: str = "") -> List[Dict[str, Any]]:
        """The rows of one user and/or status, newest first."""
        return [r for r in self.rows
                if (not user or r["user"] == user) and (not status or r["status"] == status)]


def with_running_time(row: Dict[str, Any], now: float) -> Dict[str, Any]:
    """A row with its running time as of `now` (the snapshot keeps the start and end)."""
    started, ended = row.get("started"), row.get("ended")
    running = None
    if isinstance(started, (int, float)):
        end = ended if isinstance(ended, (int, float)) else now
        running = max(0.0, end - started)
    return {**row, "running_time": running}


def build(mirror: Mirror, warnings: List[str]) -> Snapshot:
    """Rows from the mirror's store; a row that cannot be turned into JSON is left out."""
    rows = []
    for row in mirror.rows():
        try:
            data = clean(row.to_json(0.0))
            data.pop("running_time", None)
            rows.append(data)
        except Exception as exc:  # one job, not the page
            if row.key not in mirror.broken:
                mirror.broken.add(row.key)
                log.warning("job %s cannot be shown (%s); skipped", printable(row.key), exc)
    shown = {r["key"] for r in rows}
    broken = sorted(k for k in mirror.broken if k not in shown)
    if broken:
        warnings = [*warnings, f"{len(broken)} job(s) cannot be shown (see the dpu web log): "
                               f"{', '.join(printable(k) for k in broken[:3])}"]
    users = sorted({r["user"] for r in rows})
    return Snapshot(tuple(rows), tuple(users), tuple(warnings), time.time(),
                    {r["key"]: r for r in rows})


class Refresher:
    """The one thread that talks to the DPU for the page."""

    def __init__(self, mirror: Mirror, floor: float = 1.0) -> None:
        self.mirror = mirror
        self.floor = floor          # never poll more often than this (a local DPU says 0)
        self.snapshot = Snapshot()
        self.refreshes = 0          # finished refreshes, for whoever waits for a fresh one
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dpu-web-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Refresh soon (after a submit), without waiting for it."""
        self._wake.set()

    def refresh_once(self) -> None:
        """One refresh and a new snapshot; a failure keeps the last rows and says why."""
        try:
            self.mirror.refresh(force=True)
            self.snapshot = build(self.mirror, list(self.mirror.warnings))
        except Exception as exc:  # the page keeps serving the last snapshot
            log.exception("refreshing the queue failed")
            old = self.snapshot
            since = time.strftime("%H:%M:%S", time.localtime(old.updated)) if old.updated else "never"
            warning = (f"refreshing failed ({type(exc).__name__}: {printable(str(exc), 200)}); "
                       f"showing the states of {since}")
            self.snapshot = Snapshot(old.rows, old.users, (warning,), old.updated, old.by_key)
        self.refreshes += 1

    def delay(self) -> float:
        """Seconds to the next poll: the DPU's back-off, at least `floor`."""
        low, high, _ = poll_settings(self.mirror.dpu)
        try:
            with self.mirror.lock:
                current = float(self.mirror.db.meta_get(f"poll:{self.mirror.dpu.name}:interval") or low)
        except (ValueError, TypeError):
            current = low
        return max(self.floor, min(max(current, low), max(high, low)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh_once()
            self._wake.wait(self.delay())
            self._wake.clear()
