"""The store's side tables: what ``dpu bulk`` submitted and the web API's hashed tokens.

Part of the store layer: all SQL of dpu_slurm lives in store.py and here (tests/test_layers.py
checks it). ``Store`` inherits these methods, so callers only ever see named methods; the tables
are created and migrated by store.py (schema version 3).
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Dict, List, Optional, Sequence, Tuple

# Schema version 3 (store.MIGRATIONS); every statement idempotent.
TABLES = [
    "CREATE TABLE IF NOT EXISTS bulk_entries (key TEXT PRIMARY KEY, dpu TEXT NOT NULL,"
    " manifest TEXT NOT NULL, state TEXT NOT NULL, job_id INTEGER, error TEXT NOT NULL DEFAULT '',"
    " started REAL NOT NULL, updated REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, user TEXT NOT NULL,"
    " label TEXT NOT NULL, hash TEXT NOT NULL, created REAL NOT NULL, last_used REAL)",
]

BulkEntry = Tuple[str, Optional[int], float]    # state, job id, when its last attempt began
TokenRow = Tuple[str, str, str, str, float, Optional[float]]  # id, user, label, hash, created, last used


class SideTables:
    """Bulk entries and tokens; mixed into ``store.Store`` (which gives `db` and `transaction`)."""

    db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction (given by Store)."""
        raise NotImplementedError  # pragma: no cover - Store's own

    # -- dpu bulk ---------------------------------------------------------------------------
    def bulk_mark(self, key: str, dpu: str, manifest: str, state: str, job_id: Optional[int],
                  error: str, attempt: bool = False) -> None:
        """Keep a manifest entry's state; `attempt` starts a new attempt (its `started` is now)."""
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO bulk_entries (key, dpu, manifest, state, job_id, error, started,"
                       " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                       " dpu=excluded.dpu, manifest=excluded.manifest, state=excluded.state,"
                       " job_id=excluded.job_id, error=excluded.error, updated=excluded.updated,"
                       " started=CASE WHEN ? THEN excluded.started ELSE started END",
                       (key, dpu, manifest, state, job_id, error, now, now, attempt))

    def bulk_entries(self) -> Dict[str, BulkEntry]:
        """Key -> (state, job id, when its last attempt began) of every entry kept."""
        rows = self.db.execute("SELECT key, state, job_id, started FROM bulk_entries")
        return {k: (s, j, t) for k, s, j, t in rows}

    def bulk_forget(self, keys: Sequence[str]) -> None:
        """Forget these entries: the next ``dpu bulk`` submits them again."""
        with self.transaction() as db:
            db.executemany("DELETE FROM bulk_entries WHERE key=?", [(k,) for k in keys])

    # -- web API tokens ---------------------------------------------------------------------
    def token_add(self, token_id: str, user: str, label: str, digest: str, created: float) -> bool:
        """Keep a token's hash; False when the id is taken (the caller draws another)."""
        try:
            with self.transaction() as db:
                db.execute("INSERT INTO tokens (id, user, label, hash, created) VALUES (?, ?, ?, ?, ?)",
                           (token_id, user, label, digest, created))
        except sqlite3.IntegrityError:
            return False
        return True

    def token(self, token_id: str) -> Optional[TokenRow]:
        """The token's row (id, user, label, hash, created, last_used), or None."""
        row = self.db.execute("SELECT id, user, label, hash, created, last_used FROM tokens WHERE id=?",
                              (token_id,)).fetchone()
        return None if row is None else tuple(row)

    def token_used(self, token_id: str, when: float) -> None:
        """Record when a token was last used."""
        with self.transaction() as db:
            db.execute("UPDATE tokens SET last_used=? WHERE id=?", (when, token_id))

    def tokens(self) -> List[TokenRow]:
        """Every token's row, oldest first."""
        rows = self.db.execute("SELECT id, user, label, hash, created, last_used FROM tokens "
                               "ORDER BY created")
        return [tuple(r) for r in rows]

    def token_delete(self, token_id: str) -> bool:
        """Revoke a token; False when there is none with this id."""
        with self.transaction() as db:
            return db.execute("DELETE FROM tokens WHERE id=?", (token_id,)).rowcount > 0
