"""A store written by an older dpu_slurm is migrated in place, keeping every job."""
import sqlite3

from dpu_slurm.store import SCHEMA_VERSION, Store

V1_JOBS = """CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, dpu TEXT NOT NULL,
 user TEXT NOT NULL, sequence TEXT NOT NULL, options TEXT NOT NULL, dpu_options TEXT NOT NULL,
 nproc INTEGER NOT NULL, ntasks INTEGER NOT NULL, phase TEXT NOT NULL,
 native_ids TEXT NOT NULL DEFAULT '[]', jobdir TEXT NOT NULL DEFAULT '',
 bundle TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '', created REAL NOT NULL,
 submitted REAL, finished REAL)"""


def test_version_1_store_gains_the_cancelled_column_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_JOBS + """;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE procs (job_id INTEGER NOT NULL, idx INTEGER NOT NULL,
            state TEXT NOT NULL DEFAULT 'QUEUED', outcome TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
        INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase, created)
            VALUES ('local', 'alice', 'Null', '{}', '{}', 1, 1, 'submitted', 1.0);
        INSERT INTO procs (job_id, idx) VALUES (1, 0);""")
    db.close()
    store = Store(path)
    job = store.job(1)
    assert (job.user, job.sequence, job.cancelled) == ("alice", "Null", None)
    store.cancelled(1)
    assert store.job(1).cancelled is not None
    assert store.meta_get("schema_version") == str(SCHEMA_VERSION)
    assert store.record("local", "alice", "Null", {}, {}, 1, 1) == 2
