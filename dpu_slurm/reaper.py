"""Inside the job: ending the processes a task leaves behind (Linux; elsewhere these do nothing).
Standard library only: it travels in the bundle with the worker."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl_function() -> Optional[Callable[..., int]]:
    """libc's prctl, loaded up front (a forked child about to exec must not load libraries)."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def set_subreaper() -> bool:
    """Orphans below this process (daemonized, or gone with setsid) become its children, so
    whoever ends this process can end them too."""
    prctl = prctl_function()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def proc_stat(pid: int) -> Optional[Tuple[str, int, int, int, str]]:
    """(state, ppid, process group, session, start time) from /proc, None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[19]


def proc_table() -> Dict[int, Tuple[str, int, int, int, str]]:
    """proc_stat of every process (empty without /proc)."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit():
            row = proc_stat(int(name))
            if row is not None:
                out[int(name)] = row
    return out


def end_descendants(root: int, rounds: int = 100) -> int:
    """SIGKILL every process below `root` (by parent links, again until none is left: a killed
    parent's children come back to a subreaper root) and reap those that became ours."""
    killed = 0
    for _ in range(rounds):
        table = proc_table()
        below, todo = [], [root]
        while todo:
            parent = todo.pop()
            kids = [pid for pid, row in table.items() if row[1] == parent]
            below += kids
            todo += kids
        if not below:
            break
        for pid in below:
            if table[pid][0] != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            if table[pid][1] == os.getpid():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.005)
    return killed
