"""Whose DPU files are used: a DPU file says where a user's jobs, code and data go, so one that
another user wrote (a file of theirs in a shared folder on the search path, one anybody may
rewrite) is not used; the DPU files installed with dpu_slurm are as trusted as its code."""
from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from .errors import ConfigError


def owner_name(uid: int) -> str:
    """A uid's user name, else the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_owner(path: Path, installed: Path) -> None:
    """ConfigError unless `path` is a regular file owned by this user or root and not writable
    by every user (the files in `installed`, dpu_slurm's own folder, go unchecked)."""
    try:
        info = os.stat(path)
        if Path(path).resolve().parent == installed.resolve():
            return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file; a DPU file is a plain YAML file")
    if info.st_uid not in (os.getuid(), 0):
        raise ConfigError(f"{path}: owned by {owner_name(info.st_uid)}, not by you or root, so it is not "
                          "used (a DPU file says where your jobs and code go); if you trust it, copy "
                          "it to ~/.config/dpu")
    if info.st_mode & stat.S_IWOTH:
        raise ConfigError(f"{path}: writable by every user, so it is not used; chmod o-w {path}")


def read_text(path: Path) -> str:
    """A DPU file's text without waiting on a FIFO or reading a device ('' for those)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return fh.read(1 << 20).decode("utf-8", errors="replace")


__all__ = ["check_owner", "owner_name", "read_text"]
