"""The content-addressed tarball of an AWEPIPE tree plus the worker.

The hash covers paths, executable bits and file contents only, so the same tree gives the same
hash whatever the mtimes, owners or umask; the tarball is built only when that hash is new.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache",
             ".tox", ".venv", ".eggs", "node_modules"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp")
WORKER_FILES = ("__init__.py", "worker.py", "prereq.py", "proclock.py", "reaper.py", "requeue.py")


@dataclass(frozen=True)
class Bundle:
    """A built bundle: its tree hash, the cached tarball and its size in bytes."""

    digest: str   # sha256 of the tree: the bundle's name everywhere
    path: Path    # the .tar.gz in the local cache
    size: int


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(SKIP_SUFFIXES):
                yield Path(dirpath) / name


def members(awepipe: Optional[Path]) -> List[Tuple[str, Path]]:
    """(name in the tarball, source file): code/ holds AWEPIPE, worker/ the job's entry point."""
    here = Path(__file__).resolve().parent
    out = [(f"worker/dpu_slurm/{name}", here / name) for name in WORKER_FILES]
    if awepipe is not None:
        root = Path(awepipe)
        out += [(f"code/{p.relative_to(root).as_posix()}", p) for p in _walk(root)
                if p.is_file() and not p.is_symlink()]
    return sorted(out)


def tree_hash(files: List[Tuple[str, Path]]) -> str:
    """The sha256 over each member's name, executable bit and content hash, in the given order.

    The remote helper computes the same hash of an unpacked tree (remote_helper.tree_hash);
    tests/test_bundle.py checks that the two agree.
    """
    outer = hashlib.sha256()
    for name, path in files:
        inner = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        mode = "x" if os.access(path, os.X_OK) else "-"
        outer.update(f"{name}\0{mode}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def build(awepipe: Optional[Path], cache: Path) -> Bundle:
    """The bundle for this tree, from the cache when its hash was built before."""
    files = members(awepipe)
    digest = tree_hash(files)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{digest}.tar.gz"
    if not target.exists():
        _sweep(cache)
        fd, name = tempfile.mkstemp(dir=cache, prefix=f".{digest}.", suffix=".tmp")
        tmp = Path(name)
        os.fchmod(fd, 0o644)
        # filename="": gzip would otherwise record the temp file's name in its header.
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0,
                                                   compresslevel=1) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, path in files:
                    info = tarfile.TarInfo(name)
                    data = path.read_bytes()
                    info.size = len(data)
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
    return Bundle(digest, target, target.stat().st_size)


# The temp file of a build killed midway (mkstemp below); younger ones may be a build at work.
_LEFTOVER = re.compile(r"^\.[0-9a-f]{64}\.[A-Za-z0-9_]+\.tmp$")
LEFTOVER_AGE = 3600.0


def _sweep(cache: Path) -> None:
    now = time.time()
    for entry in cache.iterdir():
        if _LEFTOVER.match(entry.name):
            try:
                if now - entry.lstat().st_mtime >= LEFTOVER_AGE:
                    entry.unlink()
            except OSError:
                pass


def unpack(bundle: Bundle, dest: Path) -> Path:
    """Unpack into dest/<digest> once; concurrent unpackers race to a rename, never a mix."""
    final = dest / bundle.digest
    if final.is_dir():
        return final
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{bundle.digest}.", suffix=".tmp"))
    os.chmod(tmp, 0o755)  # noqa: S103 - mkdtemp makes 0700; the unpacked bundle keeps the usual mode
    with tarfile.open(bundle.path, "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.startswith("/") or ".." in Path(member.name).parts or not member.isfile():
                raise ValueError(f"bundle {bundle.digest}: unsafe member {member.name!r}")
        tar.extractall(tmp, **_SAFE)  # noqa: S202 - members checked above
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        _rmtree(tmp)  # another process won the race with the same content
    return final


_SAFE: Dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
