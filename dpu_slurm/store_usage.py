"""The store's usage figures (schema version 7): wall time, CPU time and peak memory per attempt.

Part of the store layer (all SQL is in store*.py); ``Store`` inherits these methods. One row per
(job, process, attempt), from the worker's own record or, when the worker was killed, from the
scheduler's accounting (`source` says which). The history of a sequence's figures on a DPU is
what learned estimates read (estimates.py).
"""
from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

# Schema version 7; every statement idempotent.
USAGE_TABLES = [
    "CREATE TABLE IF NOT EXISTS usage (job_id INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL, wall_s REAL, cpu_s REAL, max_rss_kb INTEGER,"
    " source TEXT NOT NULL, PRIMARY KEY (job_id, idx, attempt)) WITHOUT ROWID",
]


@dataclass
class UsageRow:
    """One attempt's figures; None where nobody measured that one."""

    idx: int
    attempt: int
    wall_s: Optional[float]
    cpu_s: Optional[float]
    max_rss_kb: Optional[int]
    source: str            # "worker", or the accounting command: "sacct", "qacct", "pbs"


# (sequence, options JSON, wall seconds, peak KB) of one ended-N process of the past
PastRun = Tuple[str, str, Optional[float], Optional[int]]


class UsageTables:
    """Usage figures; mixed into ``store.Store`` (which gives `db` and `transaction`)."""

    db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction (given by Store)."""
        raise NotImplementedError  # pragma: no cover - Store's own

    def put_usage(self, job_id: int, rows: Iterable[UsageRow]) -> None:
        """Keep these figures; a field a row leaves None keeps what was there (the worker's
        figure stays where the accounting has none), the source is the latest writer's."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id, idx, attempt)"
                " DO UPDATE SET wall_s=coalesce(excluded.wall_s, wall_s),"
                " cpu_s=coalesce(excluded.cpu_s, cpu_s),"
                " max_rss_kb=coalesce(excluded.max_rss_kb, max_rss_kb), source=excluded.source",
                [(job_id, r.idx, r.attempt, r.wall_s, r.cpu_s, r.max_rss_kb, r.source) for r in rows])

    def usage(self, job_id: int, current_only: bool = True) -> Dict[Tuple[int, int], UsageRow]:
        """(index, attempt) -> figures of a job; only each process's current attempt by default."""
        rows = self.db.execute(
            "SELECT u.idx, u.attempt, u.wall_s, u.cpu_s, u.max_rss_kb, u.source FROM usage u"
            " LEFT JOIN procs p ON p.job_id=u.job_id AND p.idx=u.idx AND p.attempt=u.attempt"
            " WHERE u.job_id=? AND (p.idx IS NOT NULL OR NOT ?)", (job_id, current_only))
        return {(r[0], r[1]): UsageRow(*r) for r in rows}

    def past_runs(self, dpu: str, sequence: str, limit: int = 500,
                  keep: Optional[Callable[[str], bool]] = None) -> List[PastRun]:
        """The latest processes of `sequence` on `dpu` that ended N in every task (any attempt),
        with their figures: what a learned estimate is made of. Newest jobs first; job by job,
        so a long history (or a job of 10,000 processes) is never read whole. `keep`: which
        jobs count, by their options' JSON (e.g. the same instrument)."""
        out: List[PastRun] = []
        jobs = self.db.execute("SELECT id, sequence, options FROM jobs WHERE dpu=? AND sequence=?"
                               " ORDER BY created DESC, id DESC", (dpu, sequence)).fetchall()
        for job_id, seq, options in jobs:
            if len(out) >= limit:
                break
            if keep is not None and not keep(options):
                continue
            rows = self.db.execute(
                "SELECT u.wall_s, u.max_rss_kb FROM usage u"
                " LEFT JOIN procs p ON p.job_id=u.job_id AND p.idx=u.idx AND p.attempt=u.attempt"
                " LEFT JOIN attempts a ON a.job_id=u.job_id AND a.idx=u.idx AND a.attempt=u.attempt"
                " WHERE u.job_id=? AND coalesce(p.outcome, a.outcome) <> ''"
                " AND coalesce(p.outcome, a.outcome) NOT GLOB '*[^N]*' ORDER BY u.idx LIMIT ?",
                (job_id, limit - len(out)))
            out += [(seq, options, wall, rss) for wall, rss in rows]
        return out
