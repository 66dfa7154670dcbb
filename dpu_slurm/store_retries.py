"""The store's retry claims (schema version 6): who applies a job's retry policy, once.

Part of the store layer; ``Store`` inherits these methods. A row (job, submission) says that the
retry of that submission's failures was claimed (``retried`` NULL while it is being submitted)
and how many processes it resubmitted (0: nothing qualified). The row is inserted in the same
transaction that checks the job still ended at that submission, so of two pollers that saw the
same finished job, only one gets the claim.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any, List, Optional

# Schema version 6; every statement idempotent.
RETRY_TABLES = [
    "CREATE TABLE IF NOT EXISTS retry_claims (job_id INTEGER NOT NULL, submission INTEGER NOT NULL,"
    " claimed REAL NOT NULL, retried INTEGER, note TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (job_id, submission)) WITHOUT ROWID",
]


class RetryTables:
    """Retry claims; mixed into ``store.Store`` (which gives `db`, `transaction` and rows)."""

    db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction (given by Store)."""
        raise NotImplementedError  # pragma: no cover - Store's own

    def retry_candidates(self, dpu: str, stale: float, since: float = 0.0) -> List[Any]:
        """Ids of the DPU's not cancelled jobs finished at or after `since` (the index on
        (dpu, finished) keeps old jobs out of every poll) with a retry policy whose current
        submission has no claim yet, or one left unfinished for `stale` seconds."""
        return [r[0] for r in self.db.execute(
            "SELECT j.id FROM jobs j WHERE j.dpu=? AND j.finished >= ? AND j.phase='submitted'"
            " AND j.cancelled IS NULL AND json_extract(j.dpu_options, '$.retries.max') > 0"
            " AND NOT EXISTS (SELECT 1 FROM retry_claims c WHERE c.job_id=j.id AND"
            " c.submission=ifnull(json_extract(j.dpu_options, '$.rerun'), 1)"
            " AND (c.retried IS NOT NULL OR c.claimed >= ?)) ORDER BY j.id",
            (dpu, since, time.time() - stale)).fetchall()]

    def claim_retry(self, job_id: int, submission: int, note: str, stale: float) -> bool:
        """Claim the retry of `submission` of a job, in one transaction: True only for the one
        caller that finds the job still finished at that submission and no claim yet (or one
        left unfinished for `stale` seconds: its claimant died before the rerun began)."""
        now = time.time()
        with self.transaction() as db:
            # A job's current submission: 1, then the number of its latest rerun (rerun.py).
            row = db.execute("SELECT ifnull(json_extract(j.dpu_options, '$.rerun'), 1) FROM jobs j"
                             " WHERE j.id=? AND j.phase='submitted' AND j.finished IS NOT NULL"
                             " AND j.cancelled IS NULL", (job_id,)).fetchone()
            if row is None or int(row[0]) != submission:
                return False
            cur = db.execute("INSERT OR IGNORE INTO retry_claims (job_id, submission, claimed, note)"
                             " VALUES (?, ?, ?, ?)", (job_id, submission, now, note))
            if cur.rowcount == 0:
                cur = db.execute("UPDATE retry_claims SET claimed=?, note=? WHERE job_id=? AND"
                                 " submission=? AND retried IS NULL AND claimed < ?",
                                 (now, note, job_id, submission, now - stale))
            return cur.rowcount == 1

    def release_retry(self, job_id: int, submission: int) -> None:
        """Give a claim back (the scheduler was busy): the next poll may claim it again."""
        with self.transaction() as db:
            db.execute("DELETE FROM retry_claims WHERE job_id=? AND submission=? AND retried IS NULL",
                       (job_id, submission))

    def retry_done(self, job_id: int, submission: int, retried: int, note: str = "") -> None:
        """What the claimed retry did: how many processes it resubmitted, and why not if none."""
        with self.transaction() as db:
            db.execute("UPDATE retry_claims SET retried=?, note=? WHERE job_id=? AND submission=?",
                       (retried, note, job_id, submission))

    def retries_used(self, job_id: int) -> List[Any]:
        """(submission, processes resubmitted or None while claimed, note) per claim, in order."""
        return [tuple(r) for r in self.db.execute(
            "SELECT submission, retried, note FROM retry_claims WHERE job_id=? ORDER BY submission",
            (job_id,)).fetchall()]

    def retry_claim(self, job_id: int, submission: int) -> Optional[Any]:
        """(claimed at, retried, note) of one claim, or None."""
        row = self.db.execute("SELECT claimed, retried, note FROM retry_claims WHERE job_id=? AND"
                              " submission=?", (job_id, submission)).fetchone()
        return tuple(row) if row is not None else None
