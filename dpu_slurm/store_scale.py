"""The store's reads for polls of large jobs: only the rows whose state can change.

Part of the store layer (all SQL is in store.py, store_extra.py, store_attempts.py and here);
``Store`` inherits these methods. A job of 100,000 processes mostly has processes that are
queued and known to the scheduler: a poll reads their indices, not their rows, and builds
objects only for the few that run, ended or went missing (status.refresh).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

LETTERS = "NEASU"
ProcRow = Tuple[int, str, str, str, Optional[float]]   # idx, state, outcome, reason, missing


@dataclass
class Counts:
    """How many of a job's processes are queued, running, done, and the NEASU letter counts."""

    queued: int = 0
    running: int = 0
    done: int = 0
    letters: Tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    def line(self) -> str:
        """The letter counts as ``N/E/A/S/U``."""
        return "/".join(str(n) for n in self.letters)


class ScaleReads:
    """Open-process reads that stay cheap at 100,000 processes; mixed into ``store.Store``."""

    db: sqlite3.Connection

    @staticmethod
    def insert_procs(db: sqlite3.Connection, job_id: int, nproc: int) -> None:
        """The rows of processes 0..nproc-1, made inside sqlite (a counting CTE): three times
        faster at 100,000 than binding a row at a time from Python."""
        if nproc > 0:
            db.execute("INSERT INTO procs (job_id, idx) WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL"
                       " SELECT i + 1 FROM n WHERE i + 1 < ?) SELECT ?, i FROM n", (nproc, job_id))

    def open_indices(self, job_id: int) -> List[int]:
        """The indices of a job's processes not DONE, in order (ints only: no row objects).
        Rows are counted in SQL first and the smaller side is fetched: a job just submitted
        (nothing DONE) costs a count and a range, not 100,000 rows."""
        total, done, top = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(state='DONE'), 0), MAX(idx) FROM procs WHERE job_id=?",
            (job_id,)).fetchone()
        if total and top == total - 1 and 2 * done <= total:   # indices 0..N-1, mostly open
            ended = self.db.execute("SELECT idx FROM procs WHERE job_id=? AND state='DONE'",
                                    (job_id,)).fetchall() if done else []
            if not ended:
                return list(range(total))
            gone = {r[0] for r in ended}
            return [i for i in range(total) if i not in gone]
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

    def counts(self, job_ids: Sequence[int]) -> Dict[int, Counts]:
        """Per job: processes queued/running/done and the N/E/A/S/U counters over task runs.
        One GROUP BY (job, state, outcome): a handful of rows per job, whatever its size; the
        letters are counted in the few distinct outcomes, not in every row."""
        out = {int(j): Counts() for j in job_ids}
        if not out:
            return out
        tally = {j: [0, 0, 0, 0, 0, 0, 0, 0] for j in out}   # queued, running, done, N, E, A, S, U
        sql = ("SELECT job_id, state, outcome, COUNT(*) FROM procs WHERE job_id IN "  # noqa: S608
               f"({','.join('?' * len(out))}) GROUP BY job_id, state, outcome")    # only ? vary
        for job_id, state, outcome, n in self.db.execute(sql, list(out)).fetchall():
            row = tally[job_id]
            slot = {"QUEUED": 0, "RUNNING": 1, "DONE": 2}.get(state)
            if slot is not None:
                row[slot] += n
            for k, letter in enumerate(LETTERS):
                row[3 + k] += n * outcome.count(letter)
        for job_id, row in tally.items():
            out[job_id] = Counts(row[0], row[1], row[2], (row[3], row[4], row[5], row[6], row[7]))
        return out

    def reason_counts(self, job_id: int) -> Dict[str, int]:
        """Distinct reasons of processes that ended other than all N, with how many share each
        (in the order of their first process)."""
        rows = self.db.execute(
            "SELECT reason, COUNT(*) FROM procs WHERE job_id=? AND state='DONE' AND reason!=''"
            " AND (outcome='' OR outcome GLOB '*[^N]*') GROUP BY reason ORDER BY MIN(idx)", (job_id,))
        return {str(r): int(n) for r, n in rows.fetchall()}

    def started_indices(self, job_id: int, limit: int) -> List[int]:
        """The first `limit` indices of a job's processes that are no longer queued."""
        rows = self.db.execute("SELECT idx FROM procs WHERE job_id=? AND state!='QUEUED' ORDER BY idx"
                               " LIMIT ?", (job_id, int(limit))).fetchall()
        return [r[0] for r in rows]
