"""The store is private, survives bad files with one clear message, and picks a safe journal."""
from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Sequence

import pytest
import yaml

from dpu_slurm import journal
from dpu_slurm.errors import ConfigError, StoreError
from dpu_slurm.session import open_store
from dpu_slurm.store import Store
from tests.conftest import REPO, Env


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def dpu(*argv: str, wrap: Sequence[str] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh interpreter (what a user runs)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*wrap, sys.executable, "-m", "dpu_slurm.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, env=environ)


def fill(store: Store, n: int = 20) -> List[int]:
    return [store.record("testlocal", "alice", "Null", {"m": "x" * 300}, {}, 3, 1) for _ in range(n)]


def assert_one_message(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "sqlite3." not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dpu: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


# -- privacy ----------------------------------------------------------------------------------

def test_store_and_dpu_home_are_private_whatever_the_umask(env: Env) -> None:
    shutil.rmtree(env.home)
    old = os.umask(0)  # the worst a user can have: everything would be world-writable
    try:
        store = open_store()
        fill(store, 2)  # the WAL and its index now exist too
        files = {p.name: mode(p) for p in env.home.iterdir()}
    finally:
        os.umask(old)
    store.close()
    assert mode(env.home) == 0o700
    assert files == {"jobs.sqlite": 0o600, "jobs.sqlite-wal": 0o600, "jobs.sqlite-shm": 0o600}


def test_loose_modes_are_tightened_on_open_with_a_warning(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    path = env.home / "jobs.sqlite"
    Store(path).close()
    os.chmod(env.home, 0o755)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        store = open_store()
    assert (mode(env.home), mode(path)) == (0o700, 0o600)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in w and "0644" in w and "0600" in w for w in warned), warned
    assert any(str(env.home) in w and "0755" in w and "0700" in w for w in warned), warned
    store.close()


def test_saved_settings_and_bundles_are_private_too(env: Env) -> None:
    env.write_dpu()
    shutil.rmtree(env.home)
    assert dpu("select", "testlocal").returncode == 0
    assert mode(env.home) == 0o700 and mode(env.home / "environment.yaml") == 0o600
    assert dpu("run", "--dpu", "testlocal", "--wait", "Null").returncode == 0
    assert mode(env.home / "bundles") == 0o700


# -- damaged, read-only, full -----------------------------------------------------------------

def test_garbage_store_is_one_message_and_stays_untouched(env: Env) -> None:
    env.write_dpu()
    path = env.home / "jobs.sqlite"
    garbage = bytes(range(256)) * 40
    path.write_bytes(garbage)
    (env.cwd / "night.yaml").write_text("runs: [{sequence: Null, dpu: testlocal}]\n")
    for argv in (["jobids"], ["status"], ["run", "--dpu", "testlocal", "Null"], ["bulk", "night.yaml"]):
        proc = dpu(*argv)
        assert_one_message(proc, str(path), f"mv {path} {path}.broken", "damaged")
    assert path.read_bytes() == garbage  # nothing deleted or overwritten


def test_truncated_store_is_one_message_and_stays_untouched(env: Env) -> None:
    path = env.home / "jobs.sqlite"
    store = Store(path)
    fill(store, 200)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    cut = path.read_bytes()
    proc = dpu("status")
    assert_one_message(proc, str(path), f"mv {path} {path}.broken")
    assert path.read_bytes() == cut


def test_a_store_damaged_after_opening_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path, journal="delete")
    ids = fill(store, 200)
    store.close()
    with open(path, "r+b") as fh:  # scribble over the pages of the tables, keep the header
        fh.seek(4096 * 3)
        fh.write(b"\xff" * 4096 * 4)
    again = Store(path, journal="delete")
    with pytest.raises(StoreError, match=rf"{path} is damaged.*mv {path} {path}.broken") as err:
        again.jobs(ids=ids)
        again.counts(ids)
    assert err.value.kind == "corrupt"


def without_root_powers() -> List[str]:
    """Root writes through any mode bits; drop that power so 0400 means what it says."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_store_is_one_message_and_loses_nothing(env: Env, what: str) -> None:
    path = env.home / "jobs.sqlite"
    store = Store(path)
    ids = fill(store, 5)
    store.close()
    os.chmod(path if what == "file" else env.home, 0o400 if what == "file" else 0o500)
    try:
        proc = dpu("jobids", wrap=without_root_powers())
    finally:
        os.chmod(path, 0o600)
        os.chmod(env.home, 0o700)
    assert_one_message(proc, str(path), "cannot be written", "chmod u+w")
    again = Store(path)
    assert [j.id for j in again.jobs()] == ids
    again.close()


def test_full_store_is_a_store_error_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    ids = fill(store, 3)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 1}")  # what a full disk looks like to sqlite
    with pytest.raises(StoreError, match=r"is full.*nothing recorded before was lost") as err:
        fill(store, 50)
    assert err.value.kind == "full"
    assert [j.id for j in store.jobs()][:3] == ids
    assert store.job(ids[0]).options == {"m": "x" * 300}
    store.close()


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a 1 MB tmpfs in a private mount namespace")
def test_full_disk_under_the_store_is_one_message(env: Env) -> None:
    env.write_dpu()
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=1m tmpfs {env.home}
        "$@" run --dpu testlocal --wait Null >/dev/null || exit 10
        dd if=/dev/zero of={env.home}/filler bs=4k 2>/dev/null
        "$@" run --dpu testlocal Null
        echo "rc=$?" >&2
        rm {env.home}/filler
        "$@" jobids --dpu testlocal
    """)
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "dpu_slurm.cli"],
                          capture_output=True, text=True, timeout=180, env=environ)
    assert "rc=2" in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("dpu: error:")]
    assert len(errors) == 1 and "is full" in errors[0] and str(env.home / "jobs.sqlite") in errors[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.split() == ["1"]  # the first job is still there once space is freed


# -- the journal --------------------------------------------------------------------------------

MOUNTINFO = textwrap.dedent("""\
    22 27 0:21 / /proc rw,relatime - proc proc rw
    27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
    30 27 0:40 / /home rw,relatime shared:5 - nfs4 fs1:/export/home rw,vers=4.2
    31 27 0:41 / /lustre rw - lustre 10.0.0.1@tcp:/scratch rw,flock
    32 27 0:42 / /gpfs/work rw - gpfs work rw
    33 27 0:43 / /tmp rw - tmpfs tmpfs rw
    34 27 8:1 / /data rw - xfs /dev/sdb1 rw
    35 27 0:44 / /var/lib/ctr/overlay rw - overlay overlay rw,lowerdir=/a,upperdir=/b
    36 30 8:2 / /home/alice/local\\040disk rw - ext4 /dev/sdc1 rw
    37 27 0:45 / /mnt/cifs rw - cifs //srv/share rw
    38 27 0:46 / /mnt/sshfs rw - fuse.sshfs alice@host: rw
""")


@pytest.mark.parametrize(("folder", "fstype", "mode_"), [
    ("/home/alice/.local/share/dpu_slurm", "nfs4", "delete"),
    ("/lustre/alice/dpu", "lustre", "delete"),
    ("/gpfs/work/alice", "gpfs", "delete"),
    ("/mnt/cifs/dpu", "cifs", "delete"),
    ("/mnt/sshfs/dpu", "fuse.sshfs", "delete"),
    ("/opt/dpu", "ext4", "wal"),
    ("/data/dpu", "xfs", "wal"),
    ("/tmp/dpu", "tmpfs", "wal"),
    ("/var/lib/ctr/overlay/x", "overlay", "wal"),
    ("/home/alice/local disk/dpu", "ext4", "wal"),  # a local disk mounted inside NFS home
    ("/homework", "ext4", "wal"),                   # /home is not a prefix of /homework
])
def test_journal_follows_the_file_system(folder: str, fstype: str, mode_: str) -> None:
    assert journal.fs_type(Path(folder), MOUNTINFO) == fstype
    assert journal.choose(Path(folder), "auto", MOUNTINFO)[0] == mode_
    # a setting wins over detection, both ways
    assert journal.choose(Path(folder), "wal", MOUNTINFO)[0] == "wal"
    assert journal.choose(Path(folder), "delete", MOUNTINFO)[0] == "delete"


def test_journal_setting_from_the_variable_and_the_environment_file(env: Env,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPU_STORE_JOURNAL", "delete")
    store = open_store()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (env.home / "jobs.sqlite-wal").exists()
    store.close()
    monkeypatch.delenv("DPU_STORE_JOURNAL")
    (env.home / "environment.yaml").write_text(yaml.safe_dump({"store_journal": "wal"}))
    store = open_store()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    monkeypatch.setenv("DPU_STORE_JOURNAL", "fast")
    with pytest.raises(ConfigError, match=r"DPU_STORE_JOURNAL variable is 'fast'; allowed: auto, wal"):
        open_store()


def test_delete_journal_store_keeps_ids_distinct_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    Store(path, journal="delete").close()
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from dpu_slurm.store import Store
        store = Store({str(path)!r}, journal="delete")
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.0005)
        ids = [store.record("d", sys.argv[1], "Null", {{}}, {{}}, 2, 1) for _ in range(100)]
        print(" ".join(map(str, ids)), store.db.execute("PRAGMA journal_mode").fetchone()[0])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for who in ("cron", "prompt")]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    ids: List[int] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        *numbers, journal_mode = out.split()
        assert journal_mode == "delete"
        ids += [int(x) for x in numbers]
    assert len(ids) == 200 and len(set(ids)) == 200
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM procs").fetchone()[0] == 400
    db.close()


# -- atomic writes ------------------------------------------------------------------------------

def test_twelve_concurrent_selects_all_succeed(env: Env) -> None:
    for name in ("alpha", "beta", "gamma"):
        env.write_dpu(name)
    Store(env.home / "jobs.sqlite").close()  # the race is on the settings file, not the store
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    names = ["alpha", "beta", "gamma"] * 4
    procs = [subprocess.Popen([sys.executable, "-m", "dpu_slurm.cli", "select", name], env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0] * 12, results
    saved = yaml.safe_load((env.home / "environment.yaml").read_text())
    assert saved["dpu_name"] in names
    assert [p.name for p in env.home.iterdir() if p.name.endswith(".tmp")] == []


def test_records_written_by_many_threads_at_once_stay_whole(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dpu_slurm.worker import write_json
    (tmp_path / "p").mkdir()
    target = tmp_path / "p" / "status.json"

    def write(k: int) -> None:
        for n in range(30):
            write_json(target, {"writer": k, "n": n, "pad": "x" * 2000})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))  # a shared pid-based temp name loses renames here
    assert set(json.loads(target.read_text())) == {"writer", "n", "pad"}
    assert [p.name for p in target.parent.iterdir()] == ["status.json"]


def test_the_prompt_prints_a_store_error_in_one_line(env: Env) -> None:
    env.write_dpu()
    lines = ["pages = dpu._store.db.execute('PRAGMA page_count').fetchone()[0]",
             "dpu._store.db.execute(f'PRAGMA max_page_count = {pages}')",  # the disk is now full
             "dpu.run('Null', m='x' * 30000)",
             "print('still here')"]
    proc = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", "testlocal"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "StoreError:" in ln]
    assert len(errors) == 1 and "is full" in errors[0], proc.stderr
    assert "still here" in proc.stdout


def test_settings_written_by_many_writers_at_once_stay_whole(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dpu_slurm.config import read_environment, write_environment

    def write(k: int) -> None:
        for _ in range(20):
            write_environment(dpu_name=f"dpu{k}")

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(write, range(12)))  # one fixed temp name (environment.tmp) loses renames here
    assert read_environment()["dpu_name"] in {f"dpu{k}" for k in range(12)}
    assert sorted(p.name for p in env.home.iterdir()) == ["environment.yaml"]


def test_a_delete_journal_store_runs_jobs_end_to_end(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_dpu()
    monkeypatch.setenv("DPU_STORE_JOURNAL", "delete")
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "dpu_slurm.cli", "run", "--dpu", "testlocal", "--wait", "--json",
            "Null", "n=2"]
    procs = [subprocess.Popen(argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    views = [json.loads(out)[0] for out, _ in results]
    assert views[0]["jobid"] != views[1]["jobid"]
    assert all(v["counters"]["N"] == 2 for v in views)
    assert not (env.home / "jobs.sqlite-wal").exists()
    store = open_store()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    store.close()


def test_settings_are_fsynced_and_job_inputs_are_only_renamed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting written by atomic_write survives a power cut (fsync before the rename); a job's
    input files are renamed into place whole but not fsynced, as the SSH helper writes them
    (a killed submitter still leaves no part-written file: the temp name is never the file's)."""
    from dpu_slurm import files
    from dpu_slurm.transport.local import LocalTransport

    synced: List[int] = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    files.atomic_write(tmp_path / "environment.yaml", b"dpu_name: x\n")
    assert len(synced) == 1
    LocalTransport().write_files({str(tmp_path / "jobs" / "1" / "job.json"): b"{}"})
    assert len(synced) == 1
    assert (tmp_path / "jobs" / "1" / "job.json").read_bytes() == b"{}"
    assert [p.name for p in (tmp_path / "jobs" / "1").iterdir()] == ["job.json"]
