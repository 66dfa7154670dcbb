"""The store's reads for polls of large jobs: only the rows whose state can change.

Part of the store layer (all SQL is in store.py, store_extra.py, store_attempts.py and here);
``Store`` inherits these methods. A job of 100,000 processes mostly has processes that are
queued and known to the scheduler: a poll reads their indices, not their rows, and builds
objects only for the few that run, ended or went missing (status.refresh).
"""
from __future__ import annotations

import sqlite3
from typing import Dict, List, Optional, Tuple

ProcRow = Tuple[int, str, str, str, Optional[float]]   # idx, state, outcome, reason, missing


class ScaleReads:
    """Open-process reads that stay cheap at 100,000 processes; mixed into ``store.Store``."""

    db: sqlite3.Connection

    def open_indices(self, job_id: int) -> List[int]:
        """The indices of a job's processes not DONE, in order (ints only: no row objects)."""
        rows = self.db.execute("SELECT idx FROM procs WHERE job_id=? AND state!='DONE' ORDER BY idx",
                               (job_id,)).fetchall()
        return [r[0] for r in rows]

    def busy_rows(self, job_id: int) -> Dict[int, ProcRow]:
        """Open processes that are not plainly queued (running, with a note, or missing since
        some time): index -> (idx, state, outcome, reason, missing). Every other open process
        is QUEUED with nothing recorded."""
        rows = self.db.execute(
            "SELECT idx, state, outcome, reason, missing FROM procs WHERE job_id=? AND state!='DONE'"
            " AND (state!='QUEUED' OR outcome!='' OR reason!='' OR missing IS NOT NULL)",
            (job_id,)).fetchall()
        return {r[0]: tuple(r) for r in rows}
