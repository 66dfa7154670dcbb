"""The store's attempt history (schema version 5): each process's earlier attempts of a rerun.

Part of the store layer (all SQL is in store.py, store_extra.py and here); ``Store`` inherits
these methods. ``procs.attempt`` is the attempt a process row describes (1 for a first run);
``attempts`` keeps one row per earlier attempt, written when a rerun begins.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# Schema version 5 (store.MIGRATIONS[4] adds procs.attempt too); every statement idempotent.
ATTEMPT_TABLES = [
    "CREATE TABLE IF NOT EXISTS attempts (job_id INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL, ended REAL,"
    " PRIMARY KEY (job_id, idx, attempt)) WITHOUT ROWID",
]
Attempt = Tuple[int, int, str, str, float]   # idx, attempt, outcome, reason, ended (None: current)


class AttemptTables:
    """Rerun bookkeeping; mixed into ``store.Store`` (which gives `db` and `transaction`)."""

    db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction (given by Store)."""
        raise NotImplementedError  # pragma: no cover - Store's own

    def begin_rerun(self, job_id: int, indices: Sequence[int], dpu_options: Dict[str, Any],
                    note: str, seen: Optional[int] = None) -> bool:
        """Start a new attempt of these processes of a finished job, in one transaction: their
        current outcome goes to the history, they are queued again, and the job is 'recorded'
        (with `note`, no native ids) until the scheduler takes them. False if the job is not
        finished and submitted any more, or (given `seen`) no longer at submission `seen`:
        another client started something."""
        with self.transaction() as db:
            row = db.execute("SELECT finished, ifnull(json_extract(dpu_options, '$.rerun'), 1) FROM jobs"
                             " WHERE id=? AND phase='submitted' AND finished IS NOT NULL",
                             (job_id,)).fetchone()
            if row is None or (seen is not None and int(row[1]) != seen):
                return False
            db.executemany("INSERT OR REPLACE INTO attempts SELECT job_id, idx, attempt, outcome, reason,"
                           " ? FROM procs WHERE job_id=? AND idx=?", ((row[0], job_id, i) for i in indices))
            db.executemany("UPDATE procs SET attempt=attempt+1, state='QUEUED', outcome='', reason='',"
                           " missing=NULL WHERE job_id=? AND idx=?", ((job_id, i) for i in indices))
            db.execute("UPDATE jobs SET phase='recorded', native_ids='[]', finished=NULL, cancelled=NULL,"
                       " error=?, dpu_options=? WHERE id=?", (note, json.dumps(dpu_options), job_id))
        return True

    def undo_rerun(self, job_id: int, indices: Sequence[int], dpu_options: Dict[str, Any],
                   native_ids: Sequence[str], finished: float) -> None:
        """A rerun the scheduler refused: the processes get back their previous attempt."""
        with self.transaction() as db:
            for i in indices:
                db.execute("UPDATE procs SET (attempt, state, outcome, reason) = (SELECT attempt, 'DONE',"
                           " outcome, reason FROM attempts WHERE job_id=? AND idx=? ORDER BY attempt DESC"
                           " LIMIT 1) WHERE job_id=? AND idx=?", (job_id, i, job_id, i))
                db.execute("DELETE FROM attempts WHERE job_id=? AND idx=? AND attempt=(SELECT attempt"
                           " FROM procs WHERE job_id=? AND idx=?)", (job_id, i, job_id, i))
            db.execute("UPDATE jobs SET phase='submitted', native_ids=?, finished=?, error='',"
                       " dpu_options=? WHERE id=?",
                       (json.dumps(list(native_ids)), finished, json.dumps(dpu_options), job_id))

    def set_options(self, job_id: int, extra: Dict[str, Any]) -> None:
        """Merge `extra` into a job's resolved dpu options (what a rerun needs to resubmit)."""
        with self.transaction() as db:
            row = db.execute("SELECT dpu_options FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET dpu_options=? WHERE id=?",
                           (json.dumps({**json.loads(row[0]), **extra}), job_id))

    def attempt_numbers(self, job_id: int) -> Dict[int, int]:
        """Process index -> the attempt its row describes (1: never rerun)."""
        return dict(self.db.execute("SELECT idx, attempt FROM procs WHERE job_id=?", (job_id,)))

    def attempts(self, job_id: int) -> List[Attempt]:
        """Every attempt of every process, earlier ones first (the current one's `ended` is the
        job's finish time, or None while it runs), in (index, attempt) order."""
        rows = self.db.execute(
            "SELECT idx, attempt, outcome, reason, ended FROM attempts WHERE job_id=? UNION ALL"
            " SELECT p.idx, p.attempt, p.outcome, p.reason, j.finished FROM procs p JOIN jobs j"
            " ON j.id=p.job_id WHERE p.job_id=? ORDER BY 1, 2", (job_id, job_id))
        return [tuple(r) for r in rows]

    def follow_requeues(self, job_id: int, seen: Mapping[int, Tuple[int, Sequence[Sequence[Any]]]]) -> int:
        """What workers wrote of processes the scheduler requeued (requeue.py), in one
        transaction: per index, its current attempt and the earlier attempts of its chain
        [attempt, letters, reason, ended] (kept in the history); a process row behind takes the
        attempt. Returns how many rows moved on."""
        moved = 0
        with self.transaction() as db:
            for idx, (attempt, earlier) in seen.items():
                db.executemany("INSERT OR IGNORE INTO attempts VALUES (?, ?, ?, ?, ?, ?)",
                               ((job_id, idx, int(a), str(o), str(r), e) for a, o, r, e in earlier))
                moved += db.execute("UPDATE procs SET attempt=? WHERE job_id=? AND idx=? AND attempt<?",
                                    (attempt, job_id, idx, attempt)).rowcount
        return moved

    def follow_rerun(self, job_id: int, native_ids: Sequence[str], current: Dict[int, int],
                     earlier: Sequence[Sequence[Any]], time_limit: Optional[int] = None) -> int:
        """The queue page's copy of a job that was rerun elsewhere (its card changed), in one
        transaction: the `earlier` attempts [idx, attempt, outcome, reason] go to the history,
        each process behind its `current` attempt is queued again at that attempt, and the job
        takes the new native ids and time limit (unfinished when a process went back). Returns
        how many processes went back."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?, ?, NULL)",
                           ((job_id, int(i), int(a), str(o), str(r)) for i, a, o, r in earlier))
            back = 0
            for idx, attempt in current.items():
                back += db.execute("UPDATE procs SET attempt=?, state='QUEUED', outcome='', reason='',"
                                   " missing=NULL WHERE job_id=? AND idx=? AND attempt<?",
                                   (attempt, job_id, idx, attempt)).rowcount
            db.execute("UPDATE jobs SET native_ids=? WHERE id=?", (json.dumps(list(native_ids)), job_id))
            if time_limit is not None:
                db.execute("UPDATE jobs SET dpu_options=json_set(dpu_options, '$.time_limit', ?) WHERE id=?",
                           (int(time_limit), job_id))
            if back:
                db.execute("UPDATE jobs SET phase='submitted', finished=NULL, cancelled=NULL WHERE id=?",
                           (job_id,))
        return back
