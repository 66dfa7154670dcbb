"""The content-addressed AWEPIPE bundle: stable hash, deterministic tarball, unpack once."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict

import pytest

from dpu_slurm import bundle
from tests.conftest import REPO

TREE: Dict[str, str] = {
    "dpu_tasks.py": "TASKS = []\n",
    "pipe/__init__.py": "",
    "pipe/task.py": "def run(ctx):\n    return []\n",
    "data/table.txt": "1 2 3\n",
}


def make_tree(root: Path, files: Dict[str, str] = TREE, order: int = 1) -> Path:
    for name in list(files)[::order]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[name])
    return root


def digest(root: Path) -> str:
    return bundle.tree_hash(bundle.members(root))


def test_same_tree_same_hash_whatever_the_mtimes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    before = digest(root)
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, (1_000_000 + i, 2_000_000 + 7 * i))
    assert digest(root) == before


def test_same_tree_same_hash_whatever_the_creation_order_and_location(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one", order=1)
    second = make_tree(tmp_path / "elsewhere" / "two", order=-1)
    assert digest(first) == digest(second)


def test_a_content_change_gives_a_new_hash(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    before = digest(root)
    (root / "pipe" / "task.py").write_text("def run(ctx):\n    return [1]\n")
    changed = digest(root)
    assert changed != before
    (root / "pipe" / "task.py").rename(root / "pipe" / "renamed.py")
    assert digest(root) not in (before, changed)  # a path is part of the content


def test_the_executable_bit_is_part_of_the_hash(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    before = digest(root)
    (root / "data" / "table.txt").chmod(0o755)
    assert digest(root) != before


def test_vcs_folders_caches_and_bytecode_are_left_out(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    before = digest(root)
    junk = [".git/config", ".git/objects/ab/cdef", "pipe/__pycache__/task.cpython-311.pyc",
            "pipe/stray.pyc", ".mypy_cache/x.json", ".pytest_cache/v/cache", "x.egg-info/PKG-INFO"]
    for name in junk:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("junk")
    assert digest(root) == before
    built = bundle.build(root, tmp_path / "cache")
    with tarfile.open(built.path) as tar:
        names = tar.getnames()
    assert sorted(names) == sorted([f"code/{n}" for n in TREE] +
                                   [f"worker/dpu_slurm/{m}.py" for m in ("__init__", "prereq", "proclock",
                                                                          "reaper", "requeue", "worker")])


def test_the_bundle_carries_the_worker_as_it_is(tmp_path: Path) -> None:
    built = bundle.build(make_tree(tmp_path / "a"), tmp_path / "cache")
    with tarfile.open(built.path) as tar:
        member = tar.extractfile("worker/dpu_slurm/worker.py")
        assert member is not None
        assert member.read() == (REPO / "dpu_slurm" / "worker.py").read_bytes()
    assert built.path.name == f"{built.digest}.tar.gz"
    assert built.size == built.path.stat().st_size


def test_the_tarball_is_byte_identical_when_rebuilt_by_another_process(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    cache = tmp_path / "cache"
    code = ("import sys; from pathlib import Path; from dpu_slurm import bundle; "
            "print(bundle.build(Path(sys.argv[1]), Path(sys.argv[2])).path)")
    blobs = []
    for _ in range(2):
        for path in root.rglob("*"):  # new mtimes each round: they must not leak into the bytes
            os.utime(path, None)
        out = subprocess.run([sys.executable, "-c", code, str(root), str(cache)], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        blobs.append(Path(out).read_bytes())
        Path(out).unlink()  # delete the cache: the second round builds from scratch
    assert blobs[0] == blobs[1]


def test_build_reuses_the_cached_tarball(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    first = bundle.build(root, tmp_path / "cache")
    stamp = first.path.stat().st_mtime_ns
    os.utime(first.path, ns=(stamp - 10**9, stamp - 10**9))
    second = bundle.build(root, tmp_path / "cache")
    assert second == bundle.Bundle(first.digest, first.path, first.size)
    assert second.path.stat().st_mtime_ns == stamp - 10**9  # not rewritten


def test_unpack_happens_once_per_hash(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    built = bundle.build(root, tmp_path / "cache")
    dest = tmp_path / "unpacked"
    first = bundle.unpack(built, dest)
    assert first == dest / built.digest
    assert (first / "code" / "pipe" / "task.py").read_text() == TREE["pipe/task.py"]
    assert (first / "worker" / "dpu_slurm" / "worker.py").is_file()
    (first / "marker").write_text("still here")
    assert bundle.unpack(built, dest) == first
    assert (first / "marker").read_text() == "still here"  # reused, not unpacked again
    assert sorted(p.name for p in dest.iterdir()) == [built.digest]  # no temp folders left


def test_unpack_refuses_members_outside_the_bundle(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="unsafe member"):
        bundle.unpack(bundle.Bundle("f" * 64, evil, evil.stat().st_size), tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()


def _helper_remove(root: Path, keep: list, older: float) -> list:
    """remove_bundles of the SSH helper, run here (the request an SSH DPU gets)."""
    import json
    import subprocess
    import sys

    from dpu_slurm.transport import remote_helper
    proc = subprocess.run([sys.executable, "-S", "-c", remote_helper.SOURCE], capture_output=True,
                          input=json.dumps({"remove_bundles": [str(root), keep, older]}).encode(),
                          timeout=60, check=True)
    return list(json.loads(proc.stdout)["removed"])


@pytest.mark.parametrize("where", ["local", "helper"])
def test_cleanup_removes_what_a_killed_unpack_or_upload_left_once_it_is_an_hour_old(
        tmp_path: Path, where: str) -> None:
    import os
    import time

    from dpu_slurm.transport.local import LocalTransport
    root = tmp_path / "bundles"
    root.mkdir()
    digest = "ab" * 32
    leftovers = [f".{digest}.f0qfhmja.tmp", f".{digest}.1a2b3c4d.part", f".{digest}.1a2b3c4d.unpack",
                 f".{digest}.bad.1a2b3c4d"]
    for name in leftovers:
        (root / name).mkdir() if not name.endswith(".part") else (root / name).write_bytes(b"x")
    (root / ".keepme").mkdir()                 # not ours: left alone
    (root / f".{digest}.young.tmp").mkdir()     # a submit unpacking right now: left alone
    old = time.time() - 7200
    for name in [*leftovers, ".keepme"]:
        os.utime(root / name, (old, old))
    remove = (LocalTransport().remove_bundles if where == "local"
              else lambda root, keep, older: _helper_remove(Path(root), sorted(keep), older))
    removed = remove(str(root), set(), 0.0)
    assert sorted(os.listdir(root)) == sorted([".keepme", f".{digest}.young.tmp"])
    assert removed == []   # leftovers are not bundles: the count the user sees is unchanged


def test_a_build_killed_midway_leaves_no_tarball_and_its_temp_file_goes_later(tmp_path: Path) -> None:
    """kill -9 while the tarball is written: the next build makes it whole, and the temp file
    of the killed one is removed once it is an hour old (a younger one may be another build's)."""
    import signal
    import time
    cache = tmp_path / "cache"
    code = ("import gzip, os, signal, sys\nfrom pathlib import Path\nfrom dpu_slurm import bundle\n"
            "real = gzip.GzipFile.write\n"
            "def die(self, data):\n    real(self, data)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "gzip.GzipFile.write = die\nbundle.build(None, Path(sys.argv[1]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(cache)], timeout=60, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    left = [p for p in cache.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".") and left[0].name.endswith(".tmp")
    young = cache / f".{'cd' * 32}.abcdefgh.tmp"
    young.write_bytes(b"another build at work")
    os.utime(left[0], (time.time() - 7200, time.time() - 7200))
    made = bundle.build(None, cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([made.path.name, young.name])
    with tarfile.open(made.path, "r:gz") as tar:
        assert "worker/dpu_slurm/worker.py" in tar.getnames()
