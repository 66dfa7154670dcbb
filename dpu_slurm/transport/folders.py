"""Folders shared with other users, checked before we trust them: a DPU workdir (job scripts and
code run from it, so nobody but us and root may change it) and a shared job index root (1777, so
every user can add their own card folder and none can replace another's). The remote helper
(remote_owned.py) applies the same workdir rules on an SSH DPU.
"""
from __future__ import annotations

import os
import stat
from typing import List, Optional, Sequence

from ..errors import DPUError
from .owned import who


def own_workdir(path: str, subs: Sequence[str] = ()) -> None:
    """Make the workdir and its `subs` (0755 when new) and check nobody else can change them:
    job scripts and code run from there. DPUError says which folder is wrong and why."""
    try:
        os.makedirs(path, exist_ok=True)
        why = workdir_problem(path, subs)
    except OSError as exc:
        raise DPUError(f"cannot make or check the workdir {path}: {exc.strerror} "
                       f"({exc.filename}); name a folder of yours in the DPU's YAML") from None
    if why:
        raise DPUError(why)


def workdir_problem(path: str, subs: Sequence[str] = ()) -> Optional[str]:
    """Why another user could change what runs from `path` (None: nobody but us and root).
    Every folder on the way belongs to root or us and is writable by nobody else unless sticky
    (like /tmp or a shared scratch); no symlink on the way belongs to another user; the workdir
    and its `subs` (made 0755 here when missing) are ours and writable by nobody else."""
    me, gid = os.geteuid(), os.getegid()
    # The walk the kernel makes, symlinks resolved one by one: each folder it passes and each
    # link it follows is checked (a link's target may lead through other folders and links).
    bad = _shared_folder(os.stat("/"), me, gid, False)
    if bad:
        return _unsafe(path, "/", bad)
    todo = [p for p in path.split("/") if p]
    done, hops = "", 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            done = done.rsplit("/", 1)[0]
            continue
        step = f"{done}/{part}"
        st = os.lstat(step)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, me):
                return _unsafe(path, step, f"is a symbolic link of {who(st.st_uid)}")
            hops += 1
            if hops > 40:
                return _unsafe(path, step, "leads through too many symbolic links")
            target = os.readlink(step)
            done = "" if target.startswith("/") else done
            todo[:0] = [p for p in target.split("/") if p]
            continue
        bad = "is not a folder" if not stat.S_ISDIR(st.st_mode) else _shared_folder(st, me, gid, False)
        if bad:
            return _unsafe(path, step, bad)
        done = step
    real = done or "/"
    bad = _shared_folder(os.lstat(real), me, gid, True)
    if bad:
        return _unsafe(path, real, bad)
    for sub in subs:
        folder = f"{real}/{sub}"
        try:
            os.mkdir(folder, 0o700)
            os.chmod(folder, 0o755)  # noqa: S103 - the queue page (another user) reads job folders
        except FileExistsError:
            pass
        st = os.lstat(folder)
        bad = "is not a folder" if not stat.S_ISDIR(st.st_mode) else _shared_folder(st, me, gid, True)
        if bad:
            return _unsafe(path, folder, bad)
    return None


def _shared_folder(st: os.stat_result, me: int, gid: int, leaf: bool) -> str:
    if st.st_uid != me and (leaf or st.st_uid != 0):
        return f"belongs to {who(st.st_uid)}"
    others = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != gid)
    if others and (leaf or not st.st_mode & stat.S_ISVTX):
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


def _unsafe(path: str, folder: str, why: str) -> str:
    return (f"the workdir {path} is not safe for your jobs: {folder} {why}, so someone else could "
            "change your job scripts or code there. Use a folder of yours that only you can write "
            f"(chmod go-w; in a shared scratch: mkdir -m 755 {path} before anyone else), or name "
            "another workdir in the DPU's YAML")


def index_root_problems(root: str) -> List[str]:
    """What keeps an existing shared index root from working for every user (empty: fine)."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(st.st_mode):
        return [f"is a symbolic link (to {os.path.realpath(root)}); name the folder itself in job_index"]
    if not stat.S_ISDIR(st.st_mode):
        return ["is not a folder"]
    mode = stat.S_IMODE(st.st_mode)
    fix = f"fix: install -d -m 1777 {root}"
    out = []
    if not mode & stat.S_IWOTH:
        out.append(f"is not writable by other users (mode {mode:o}), so they cannot add their card "
                   f"folder; {fix}")
    if not mode & stat.S_ISVTX:
        out.append(f"is not sticky (mode {mode:o}), so a user could remove or replace another "
                   f"user's card folder; {fix}")
    return out
