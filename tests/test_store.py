"""The sqlite job store: ids, concurrent writers, counters, schema version."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpu_slurm.errors import DPUError, JobNotFound
from dpu_slurm.session import open_store
from dpu_slurm.store import SCHEMA_VERSION, Store
from tests.conftest import REPO, Env


def record(store: Store, nproc: int = 1, ntasks: int = 1) -> int:
    return store.record("testlocal", "alice", "Null", {"sleep": 0}, {}, nproc, ntasks)


def test_store_lives_in_dpu_home(env: Env) -> None:
    store = open_store()
    assert store.path == env.home / "jobs.sqlite"
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    store.close()


def test_ids_are_unique_and_increasing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    ids = [record(store) for _ in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    # a deleted newest job never gives its id away again (AUTOINCREMENT)
    store.db.execute("DELETE FROM procs WHERE job_id=?", (ids[-1],))
    store.db.execute("DELETE FROM jobs WHERE id=?", (ids[-1],))
    assert record(store) > ids[-1]
    store.close()


def test_a_job_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "alice", "Bias>HotPixels", {"pars": {"a": [1, 2]}}, {"dpu_mem": 10}, 3, 2)
    job = store.job(jid)
    assert (job.dpu, job.user, job.sequence, job.nproc, job.ntasks, job.phase) == (
        "d", "alice", "Bias>HotPixels", 3, 2, "recorded")
    assert job.options == {"pars": {"a": [1, 2]}}
    assert [p.state for p in store.procs(jid)] == ["QUEUED"] * 3
    store.submitted(jid, ["123"])
    assert store.job(jid).phase == "submitted" and store.job(jid).native_ids == ["123"]
    assert [j.id for j in store.jobs(dpu="d", active=True)] == [jid]
    with pytest.raises(JobNotFound, match="no job with identifier 999"):
        store.job(999)
    store.close()


def test_concurrent_writer_processes_never_collide(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"  # created by the racing writers themselves
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from dpu_slurm.store import Store
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):  # start together, to the millisecond
            time.sleep(0.0005)
        store = Store({str(path)!r})
        ids = [store.record("d", sys.argv[1], "Null", {{}}, {{}}, 2, 1) for _ in range(200)]
        print(" ".join(map(str, ids)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("cron", "prompt")]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    per_writer = [[int(x) for x in out.split()] for out, _ in outputs]
    for ids in per_writer:
        assert len(ids) == 200 and ids == sorted(ids)
    everything = per_writer[0] + per_writer[1]
    assert len(set(everything)) == 400
    store = Store(path)
    jobs = store.jobs()
    assert len(jobs) == 400 and {j.id for j in jobs} == set(everything)
    assert {j.user for j in jobs} == {"cron", "prompt"}
    assert store.db.execute("SELECT COUNT(*) FROM procs").fetchone()[0] == 800
    store.close()


def test_counters_over_hand_built_outcomes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = record(store, nproc=7, ntasks=2)
    other = record(store, nproc=1, ntasks=2)
    store.update(jid, [(0, "DONE", "NN", "", None), (1, "DONE", "ES", "task failed", None),
                       (2, "DONE", "AS", "TIMEOUT", None), (3, "DONE", "SS", "cancelled", None),
                       (4, "DONE", "UU", "lost", None), (5, "RUNNING", "", "", None)])
    store.update(other, [(0, "DONE", "NE", "", None)])
    counts = store.counts([jid, other])
    c = counts[jid]
    assert (c.queued, c.running, c.done) == (1, 1, 5)
    assert c.letters == (2, 1, 1, 4, 2)
    assert c.line() == "2/1/1/4/2"
    assert counts[other].letters == (1, 1, 0, 0, 0)
    assert store.job(jid).finished is None  # two processes are still open
    store.update(jid, [(5, "DONE", "NN", "", None), (6, "DONE", "SS", "", None)])
    assert store.counts([jid])[jid].letters == (4, 1, 1, 6, 2)
    assert store.job(jid).finished is not None
    assert store.jobs(active=True) == []
    store.close()


def test_counts_of_a_job_without_updates_are_zero(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = record(store, nproc=3)
    c = store.counts([jid])[jid]
    assert (c.queued, c.running, c.done, c.line()) == (3, 0, 0, "0/0/0/0/0")
    store.close()


def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.meta_set("schema_version", str(SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(DPUError, match=rf"newer dpu_slurm \(schema {SCHEMA_VERSION + 1}.*upgrade dpu_slurm"):
        Store(path)


def test_reopening_keeps_jobs_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    jid = record(store)
    store.close()
    again = Store(path)
    assert again.job(jid).sequence == "Null"
    assert again.meta_get("schema_version") == str(SCHEMA_VERSION)
    again.close()


def test_jobs_since_and_a_mirrored_job_with_its_own_times(tmp_path: Path) -> None:
    """What the queue page's mirror uses instead of SQL of its own (web/mirror.py)."""
    store = Store(tmp_path / "s.sqlite")
    old, new = record(store), record(store)
    store.submitted(new, ["7"])
    store.db.execute("UPDATE jobs SET created=0 WHERE id=?", (old,))
    assert [j.id for j in store.jobs_since("testlocal", 0.0)] == [new]        # only submitted ones
    assert [j.id for j in store.jobs_since("testlocal", 0.0, "recorded")] == [old]
    store.submitted(old, ["6"])
    assert [j.id for j in store.jobs_since("testlocal", 1.0)] == [new]        # only young ones
    assert [j.id for j in store.jobs_since("testlocal", 0.0)] == [old, new]
    assert store.jobs_since("elsewhere", 0.0) == []
    jid = store.record_mirrored("testlocal", "bob", "Bias", {"i": "WFI"}, {"chunk": 10}, 3, 2,
                                "/jobs/4.cafe", ["11", "12"], created=100.0, submitted=101.5)
    job = store.job(jid)
    assert (job.user, job.phase, job.created, job.submitted, job.native_ids, job.jobdir, job.nproc) == \
        ("bob", "submitted", 100.0, 101.5, ["11", "12"], "/jobs/4.cafe", 3)
    assert [p.state for p in store.procs(jid)] == ["QUEUED"] * 3
    with pytest.raises(ValueError):   # a bad copy leaves nothing behind
        store.record_mirrored("testlocal", "bob", "Bias", {}, {}, 2, 1, "/j", [], "soon", 1.0)  # type: ignore[arg-type]
    assert [j.id for j in store.jobs()] == [old, new, jid]
    store.close()
