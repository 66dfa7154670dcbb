"""Which sqlite journal the store uses: WAL on a local disk, DELETE on a network file system.

SQLite's WAL needs shared memory between every process that opens the file, which network file
systems (where cluster home folders live) do not give; DELETE only needs working file locks.
Env DPU_STORE_JOURNAL or the key ``store_journal`` of your environment.yaml overrides (wal,
delete or auto).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import ConfigError

log = logging.getLogger(__name__)

CHOICES = ("auto", "wal", "delete")
# File systems whose clients on several hosts share one file (or that fake shared memory badly).
NETWORK_FS = {"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph",
              "glusterfs", "beegfs", "panfs", "9p", "gfs2", "ocfs2", "orangefs", "pvfs2", "cvfs",
              "wekafs", "quobyte", "davfs", "virtiofs"}


def is_network(fstype: str) -> bool:
    """A network (or cluster) file system; FUSE ones (sshfs, s3fs, ...) count as network too."""
    return fstype in NETWORK_FS or fstype.startswith("fuse.") or fstype == "fuse"


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(mountinfo: str) -> List[Tuple[str, str]]:
    """(mount point, file system type) of each line of /proc/self/mountinfo."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if sep and len(parts) >= 5 and rest:
            out.append((_unescape(parts[4]), rest[0]))
    return out


def fs_type(folder: Path, mountinfo: Optional[str] = None) -> Optional[str]:
    """The type of the file system holding `folder` (the longest mount point above it)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    where = os.path.realpath(folder)
    best: Optional[Tuple[int, str]] = None
    for point, kind in mounts(mountinfo):
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):  # later lines mount over earlier
            best = (len(point), kind)
    return best[1] if best else None


def choose(folder: Path, setting: str = "auto", mountinfo: Optional[str] = None) -> Tuple[str, str]:
    """("wal" or "delete", why) for a store in `folder`."""
    if setting in ("wal", "delete"):
        return setting, "configured"
    kind = fs_type(folder, mountinfo)
    if kind is not None and is_network(kind):
        return "delete", f"{folder} is on {kind}, a network file system"
    return "wal", f"{folder} is on {kind or 'an unknown file system'}"


def setting() -> str:
    """DPU_STORE_JOURNAL, else store_journal in your environment.yaml, else auto."""
    from .config import environment_file, read_environment

    value = os.environ.get("DPU_STORE_JOURNAL", "").strip().lower()
    where = "the DPU_STORE_JOURNAL variable"
    if not value:
        try:
            value = str(read_environment().get("store_journal") or "auto").strip().lower()
        except ConfigError as exc:  # reported by the commands that need the file; the store goes on
            log.warning("%s; the store's journal is chosen automatically", exc)
            return "auto"
        where = f"store_journal in {environment_file()}"
    if value not in CHOICES:
        raise ConfigError(f"{where} is {value!r}; allowed: {', '.join(CHOICES)} "
                          "(wal on a local disk, delete on NFS, GPFS, Lustre and other network file systems)")
    return value
