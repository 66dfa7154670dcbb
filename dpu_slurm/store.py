"""The sqlite job store: one private file per user, WAL (DELETE on network file systems), a busy
timeout and a schema version; every sqlite failure is a StoreError saying what to do. This is
the store layer with its store_*.py mixins: all SQL of dpu_slurm is in these modules.

A job is recorded (phase 'recorded') before it is submitted, then marked 'submitted' with its
native ids or 'not_submitted' with the scheduler's error: never lost, never half-recorded.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .errors import DPUError, JobNotFound, StoreError
from .files import PRIVATE_FILE, private_dir, private_file, tighten
from .journal import choose
from .sqlite_errors import Connection, store_error
from .states import Phase
from .store_attempts import ATTEMPT_TABLES, AttemptTables
from .store_extra import TABLES, SideTables
from .store_retries import RETRY_TABLES, RetryTables
from .store_scale import LETTERS as LETTERS  # Counts, LETTERS: store API
from .store_scale import Counts as Counts
from .store_scale import ScaleReads
from .store_usage import USAGE_TABLES, UsageTables

log = logging.getLogger(__name__)
SCHEMA_VERSION = 7
_V3 = TABLES  # what `dpu bulk` submitted and the web API's hashed tokens (store_extra.py)
_V4 = ["ALTER TABLE procs ADD COLUMN missing REAL"]  # v4: when first missing (grace before U)
# Version 5: reruns; each process's attempt number and the history of earlier attempts.
_V5 = ["ALTER TABLE procs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1", *ATTEMPT_TABLES]
MIGRATIONS = {1: ["ALTER TABLE jobs ADD COLUMN cancelled REAL"], 2: _V3, 3: _V4, 4: _V5,  # from -> next
              5: RETRY_TABLES, 6: USAGE_TABLES}  # v6 retry claims, v7 usage figures

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dpu         TEXT NOT NULL,
    user        TEXT NOT NULL,
    sequence    TEXT NOT NULL,
    options     TEXT NOT NULL,
    dpu_options TEXT NOT NULL,
    nproc       INTEGER NOT NULL,
    ntasks      INTEGER NOT NULL,
    phase       TEXT NOT NULL,
    native_ids  TEXT NOT NULL DEFAULT '[]',
    jobdir      TEXT NOT NULL DEFAULT '',
    bundle      TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    submitted   REAL,
    finished    REAL,
    cancelled   REAL
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (dpu, finished);
CREATE TABLE IF NOT EXISTS procs (
    job_id  INTEGER NOT NULL REFERENCES jobs(id),
    idx     INTEGER NOT NULL,
    state   TEXT NOT NULL DEFAULT 'QUEUED',
    outcome TEXT NOT NULL DEFAULT '',
    reason  TEXT NOT NULL DEFAULT '',
    missing REAL,
    attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
""" + ";\n".join(_V3 + ATTEMPT_TABLES + RETRY_TABLES + USAGE_TABLES) + ";\n"  # idempotent


@dataclass
class Job:
    """One submitted (or attempted) run as the store records it."""

    id: int
    dpu: str
    user: str
    sequence: str
    options: Dict[str, Any]
    dpu_options: Dict[str, Any]
    nproc: int
    ntasks: int
    phase: str
    native_ids: List[str]
    jobdir: str
    bundle: str
    error: str
    created: float
    submitted: Optional[float]
    finished: Optional[float]
    cancelled: Optional[float] = None


@dataclass
class Proc:
    """One process of a job: its state, task outcomes and why it ended so."""

    idx: int
    state: str      # QUEUED, RUNNING or DONE
    outcome: str    # one letter of NEASU per task once DONE
    reason: str
    missing: Optional[float] = None  # first time no one knew the process; None while known


class Store(SideTables, AttemptTables, RetryTables, UsageTables, ScaleReads):
    """A user's jobs and processes (store_*.py: bulk, tokens, reruns, retries, usage, polls)."""

    def __init__(self, path: Path, journal: str = "auto") -> None:
        """Open (creating when missing) the store; `journal` is auto, wal or delete (journal.py)."""
        self.path = Path(path)
        memory = str(path) == ":memory:"
        try:
            if not memory:
                private_dir(self.path.parent)
                for extra in ("", "-wal", "-shm", "-journal"):  # sqlite gives these the file's mode
                    name = Path(f"{self.path}{extra}")
                    if not extra:
                        private_file(name)
                    elif name.exists():
                        tighten(name, PRIVATE_FILE)
            self.journal, why = ("memory", "in memory") if memory else choose(self.path.parent, journal)
            log.debug("store %s: journal %s (%s)", self.path, self.journal, why)
            db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                 check_same_thread=False, factory=Connection)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        except OSError as exc:
            raise StoreError(f"cannot open the job store {self.path} ({exc.strerror or exc}); give "
                             "yourself read and write access to it and its folder, or set DPU_HOME "
                             "to a folder you can write", "readonly") from None
        db.store_path = self.path
        self.db: sqlite3.Connection = db
        self.db.execute("PRAGMA busy_timeout = 30000")
        self._setup()
        # WAL is safe with NORMAL; a rollback journal needs FULL to survive a power cut.
        self.db.execute(f"PRAGMA synchronous = {'NORMAL' if self.journal == 'wal' else 'FULL'}")
        with self.transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise DPUError(f"{self.path} was written by a newer dpu_slurm (schema {row[0]}, "
                               f"this one knows {SCHEMA_VERSION}); upgrade dpu_slurm")
            else:
                for version in range(int(row[0]), SCHEMA_VERSION):
                    for statement in MIGRATIONS[version]:
                        self.db.execute(statement)
                self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                                (str(SCHEMA_VERSION),))

    def _setup(self) -> None:
        """The journal mode and the tables. Switching a new file's journal does not wait on the
        busy timeout, so two clients creating the store at once retry here instead of failing.
        An existing store another client holds open keeps its mode for now (with a warning)."""
        start = time.monotonic()
        while True:
            try:
                exists = self._has_schema()
                if self.journal != "memory":
                    got = self.db.execute(f"PRAGMA journal_mode = {self.journal.upper()}").fetchone()[0]
                    if exists and str(got).lower() != self.journal:
                        raise StoreError("busy", "locked")  # the PRAGMA answers the old mode when busy
                if not exists:
                    self.db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
                return
            except StoreError as exc:
                if exc.kind != "locked":
                    raise
                waited = time.monotonic() - start
                if waited > 2.0 and self._has_schema():
                    log.warning("%s is open in another dpu process; it stays in journal mode %s until "
                                "none is (wanted: %s)", self.path, self._mode(), self.journal)
                    self.journal = self._mode()
                    return
                if waited > 30.0:
                    raise
                time.sleep(0.01)

    def _mode(self) -> str:
        return str(self.db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def _has_schema(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name='procs'").fetchone() is not None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: writers queue on the busy timeout instead of failing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # sqlite itself rolls back on a full disk or an I/O error
                try:
                    self.db.execute("ROLLBACK")
                except StoreError:
                    pass  # the error being raised says more than this one
            raise
        self.db.execute("COMMIT")

    # -- writing --------------------------------------------------------------------------
    def record(self, dpu: str, user: str, sequence: str, options: Dict[str, Any],
               dpu_options: Dict[str, Any], nproc: int, ntasks: int) -> int:
        """Record the intent to submit; returns the new job id (unique and increasing)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, 'recorded', ?)",
                (dpu, user, sequence, json.dumps(options), json.dumps(dpu_options), nproc, ntasks,
                 time.time()))
            job_id = int(cur.lastrowid or 0)
            self.insert_procs(db, job_id, nproc)
        return job_id

    def record_mirrored(self, dpu: str, user: str, sequence: str, options: Dict[str, Any],
                        dpu_options: Dict[str, Any], nproc: int, ntasks: int, jobdir: str,
                        native_ids: Sequence[str], created: float, submitted: float) -> int:
        """A submitted job copied from elsewhere (the queue page's view of another store), with
        its own created/submitted times; one transaction, so a bad copy leaves nothing behind."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase,"
                " native_ids, jobdir, created, submitted) VALUES (?, ?, ?, ?, ?, ?, ?, 'submitted',"
                " ?, ?, ?, ?)",
                (dpu, user, sequence, json.dumps(options), json.dumps(dpu_options), int(nproc),
                 int(ntasks), json.dumps(list(native_ids)), jobdir, float(created), float(submitted)))
            job_id = int(cur.lastrowid or 0)
            self.insert_procs(db, job_id, int(nproc))
        return job_id

    def set_jobdir(self, job_id: int, jobdir: str, bundle: str) -> None:
        """Record where the job's folder and code bundle are on the target."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET jobdir=?, bundle=? WHERE id=?", (jobdir, bundle, job_id))

    def submitted(self, job_id: int, native_ids: Sequence[str]) -> None:
        """Record that the scheduler accepted the job under `native_ids`."""
        # The submitter's own word wins over a reconciliation that gave up on it meanwhile
        # (another host's client cannot see that the submitter is still alive).
        with self.transaction() as db:
            db.execute("UPDATE jobs SET phase='submitted', native_ids=?, submitted=?, error='',"
                       " finished=NULL WHERE id=?", (json.dumps(list(native_ids)), time.time(), job_id))

    def accepted(self, job_id: int, native_ids: Sequence[str]) -> None:
        """Native ids of the chunks the scheduler accepted so far (the job stays 'recorded')."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET native_ids=? WHERE id=? AND phase='recorded'",
                       (json.dumps(list(native_ids)), job_id))

    def note(self, job_id: int, text: str) -> None:
        """What is known of a submission in progress (who submits it, or why it stopped)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET error=? WHERE id=? AND phase='recorded'", (text, job_id))

    def adopt(self, job_id: int, native_ids: Sequence[str], never: Sequence[int], reason: str) -> bool:
        """A recorded job found on the scheduler: submitted with these ids; the processes in
        `never` (chunks nothing carries) end skipped with `reason`. False if already settled."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET phase='submitted', native_ids=?, submitted=?, error=''"
                             " WHERE id=? AND phase='recorded'",
                             (json.dumps(list(native_ids)), time.time(), job_id))
            if cur.rowcount == 0:
                return False
            ntasks = db.execute("SELECT ntasks FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
            db.executemany("UPDATE procs SET state='DONE', outcome=?, reason=? WHERE job_id=? AND idx=?",
                           (("S" * ntasks, reason, job_id, i) for i in never))
            left = db.execute("SELECT COUNT(*) FROM procs WHERE job_id=? AND state!='DONE'",
                              (job_id,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE jobs SET finished=? WHERE id=?", (time.time(), job_id))
        return True

    def given_up(self, job_id: int, error: str) -> bool:
        """A recorded job nothing on the scheduler carries: not submitted (False if settled)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET phase='not_submitted', error=?, finished=? "
                             "WHERE id=? AND phase='recorded'", (error, time.time(), job_id))
            return cur.rowcount > 0

    def not_submitted(self, job_id: int, error: str) -> None:
        """Record that the job never reached the scheduler, and why."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET phase='not_submitted', error=?, finished=? WHERE id=?",
                       (error, time.time(), job_id))

    def cancelled(self, job_id: int) -> None:
        """Remember that the user cancelled: a queued process that then vanishes was skipped."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET cancelled=? WHERE id=?", (time.time(), job_id))

    def update(self, job_id: int,
               changes: Iterable[Tuple[int, str, str, str, Optional[float]]]) -> None:
        """Apply (idx, state, outcome, reason, missing) changes; close the job when all are DONE."""
        with self.transaction() as db:
            db.executemany("UPDATE procs SET state=?, outcome=?, reason=?, missing=? "
                           "WHERE job_id=? AND idx=?",
                           ((s, o, r, m, job_id, i) for i, s, o, r, m in changes))
            left = db.execute("SELECT COUNT(*) FROM procs WHERE job_id=? AND state!='DONE'",
                              (job_id,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE jobs SET finished=? WHERE id=? AND finished IS NULL",
                           (time.time(), job_id))

    def forget(self, job_ids: Sequence[int]) -> None:
        """Drop jobs and their processes (the queue page's copy of a job whose card is gone)."""
        ids = [(int(j),) for j in job_ids]
        with self.transaction() as db:
            db.executemany("DELETE FROM procs WHERE job_id=?", ids)
            db.executemany("DELETE FROM jobs WHERE id=?", ids)

    def meta_get(self, key: str) -> Optional[str]:
        """A stored setting, or None."""
        return next((str(r[0]) for r in self.db.execute("SELECT value FROM meta WHERE key=?", (key,))), None)

    def meta_set(self, key: str, value: str) -> None:
        """Keep a setting."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reading --------------------------------------------------------------------------
    def job(self, job_id: int) -> Job:
        """One job; raises JobNotFound for an unknown id."""
        rows = self.jobs(ids=[job_id])
        if not rows:
            raise JobNotFound(f"no job with identifier {job_id!r} in {self.path}; "
                              "dpu.get_jobids() (shell: dpu jobids) lists yours")
        return rows[0]

    def jobs(self, ids: Optional[Sequence[int]] = None, dpu: Optional[str] = None,
             active: bool = False) -> List[Job]:
        """The jobs by id, DPU and/or still active (not finished), in id order."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []  # type: Tuple[str, List[Any]]
        if ids is not None:
            ids = [int(i) for i in ids]
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args += ids
        if dpu is not None:
            sql += " AND dpu=?"
            args.append(dpu)
        if active:
            sql += " AND finished IS NULL AND phase IN ('recorded', 'submitted')"
        rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return [_job(r) for r in rows]

    def jobs_since(self, dpu: str, since: float, phase: str = Phase.SUBMITTED) -> List[Job]:
        """The DPU's jobs in `phase` created at or after `since`, oldest first."""
        return [_job(r) for r in self.db.execute(
            "SELECT * FROM jobs WHERE dpu=? AND phase=? AND created>=? ORDER BY id", (dpu, phase, since))]

    def procs(self, job_id: int, open_only: bool = False) -> List[Proc]:
        """A job's processes in index order (`open_only`: those not DONE)."""
        sql = "SELECT idx, state, outcome, reason, missing FROM procs WHERE job_id=?"
        if open_only:
            sql += " AND state!='DONE'"
        return [Proc(*row) for row in self.db.execute(sql + " ORDER BY idx", (job_id,)).fetchall()]


def _job(row: Sequence[Any]) -> Job:
    (jid, dpu, user, seq, opts, dopts, nproc, ntasks, phase, native, jobdir, bundle, error,
     created, submitted, finished, cancelled) = row
    return Job(jid, dpu, user, seq, json.loads(opts), json.loads(dopts), nproc, ntasks, phase,
               json.loads(native), jobdir, bundle, error, created, submitted, finished, cancelled)
