"""A store written by an older dpu_slurm is migrated in place, keeping every job."""
import sqlite3

from dpu_slurm.store import SCHEMA_VERSION, Store
from dpu_slurm.store_usage import UsageRow

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


V4_PROCS = """CREATE TABLE procs (job_id INTEGER NOT NULL, idx INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'QUEUED', outcome TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '', missing REAL, PRIMARY KEY (job_id, idx)) WITHOUT ROWID"""


def test_version_4_store_gains_attempts_and_keeps_its_outcomes(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_JOBS.replace("finished REAL)", "finished REAL, cancelled REAL)") + ";\n"
                     + V4_PROCS + """;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '4');
        INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase, created,
            finished) VALUES ('local', 'alice', 'Null', '{}', '{}', 2, 1, 'submitted', 1.0, 2.0);
        INSERT INTO procs (job_id, idx, state, outcome, reason) VALUES (1, 0, 'DONE', 'N', ''),
                                                                       (1, 1, 'DONE', 'E', 'boom');""")
    db.close()
    store = Store(path)
    assert store.meta_get("schema_version") == str(SCHEMA_VERSION) == "7"
    assert store.attempt_numbers(1) == {0: 1, 1: 1}
    assert store.attempts(1) == [(0, 1, "N", "", 2.0), (1, 1, "E", "boom", 2.0)]
    assert store.counts([1])[1].letters == (1, 1, 0, 0, 0)
    # The migrated store takes a rerun: the history keeps attempt 1, the process is at 2.
    assert store.begin_rerun(1, [1], {"rerun": 2}, "submitting: test")
    assert store.attempt_numbers(1) == {0: 1, 1: 2}
    assert store.attempts(1)[1:] == [(1, 1, "E", "boom", 2.0), (1, 2, "", "", None)]
    assert store.job(1).phase == "recorded" and store.job(1).finished is None
    # Refused by the scheduler: attempt 1 comes back whole.
    store.undo_rerun(1, [1], {}, ["7"], 2.0)
    assert store.attempts(1) == [(0, 1, "N", "", 2.0), (1, 1, "E", "boom", 2.0)]
    assert (store.job(1).phase, store.job(1).native_ids) == ("submitted", ["7"])


def test_version_5_store_gains_retry_claims_and_keeps_its_attempts(tmp_path):
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_JOBS.replace("finished REAL)", "finished REAL, cancelled REAL)") + ";\n"
                     + V4_PROCS.replace("missing REAL,", "missing REAL, attempt INTEGER NOT NULL DEFAULT 1,")
                     + """;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '5');
        CREATE TABLE attempts (job_id INTEGER NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL, reason TEXT NOT NULL, ended REAL,
            PRIMARY KEY (job_id, idx, attempt)) WITHOUT ROWID;
        INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase, created,
            finished) VALUES ('local', 'alice', 'Null', '{}', '{"retries": {"max": 1}}', 1, 1,
            'submitted', 1.0, 2.0);
        INSERT INTO procs (job_id, idx, state, outcome, reason, attempt)
            VALUES (1, 0, 'DONE', 'A', 'x', 1);""")
    db.close()
    store = Store(path)
    assert store.meta_get("schema_version") == str(SCHEMA_VERSION) == "7"
    assert store.attempt_numbers(1) == {0: 1}
    assert store.retry_candidates("local", 600) == [1]
    assert store.claim_retry(1, 1, "me", 600) and not store.claim_retry(1, 1, "other", 600)
    assert store.retry_candidates("local", 600) == []


def test_version_5_store_gains_usage_figures_and_keeps_its_attempts(tmp_path):
    """Version 7 (store_usage.py): a usage table per (job, process, attempt); the figures of the
    current attempt are the job's, an earlier attempt's stay in the history."""
    path = tmp_path / "jobs.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_JOBS.replace("finished REAL)", "finished REAL, cancelled REAL)") + ";\n"
                     + V4_PROCS.replace("missing REAL,", "missing REAL, attempt INTEGER NOT NULL DEFAULT 1,")
                     + """;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '5');
        CREATE TABLE attempts (job_id INTEGER NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
            outcome TEXT NOT NULL, reason TEXT NOT NULL, ended REAL, PRIMARY KEY (job_id, idx, attempt))
            WITHOUT ROWID;
        INSERT INTO jobs (dpu, user, sequence, options, dpu_options, nproc, ntasks, phase, created,
            finished) VALUES ('local', 'alice', 'Null', '{}', '{}', 1, 1, 'submitted', 1.0, 2.0);
        INSERT INTO procs (job_id, idx, state, outcome, reason, attempt) VALUES (1, 0, 'DONE', 'N', '', 2);
        INSERT INTO attempts VALUES (1, 0, 1, 'A', 'TIMEOUT', 1.5);""")
    db.close()
    store = Store(path)
    assert store.meta_get("schema_version") == str(SCHEMA_VERSION) == "7"
    assert store.attempts(1) == [(0, 1, "A", "TIMEOUT", 1.5), (0, 2, "N", "", 2.0)]
    store.put_usage(1, [UsageRow(0, 1, 60.0, 1.0, 1000, "sacct"), UsageRow(0, 2, 5.0, 4.0, 2048, "worker")])
    assert {k: v.source for k, v in store.usage(1).items()} == {(0, 2): "worker"}
    assert set(store.usage(1, current_only=False)) == {(0, 1), (0, 2)}
    # The accounting fills in only what it knows: the worker's peak stays where sacct has none.
    store.put_usage(1, [UsageRow(0, 2, 6.0, None, None, "sacct")])
    got = store.usage(1)[(0, 2)]
    assert (got.wall_s, got.cpu_s, got.max_rss_kb, got.source) == (6.0, 4.0, 2048, "sacct")
    # Only the attempt that ended N counts as a past run.
    assert [r[2] for r in store.past_runs("local", "Null")] == [6.0]
