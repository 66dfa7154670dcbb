"""Ending a local DPU worker whose runner died: only that worker's session, and only when the
process with that pid is still that worker and ours (runner.json may be another user's)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from ..worker import proc_table


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_worker_session(pid: int, pstart: str, jobdir: Path) -> None:
    """SIGKILL the session of worker `pid` of `jobdir` if it is still that worker and ours:
    runner.json may be another user's (the queue page reads them), so /proc is checked first."""
    table = proc_table()
    if pid not in table or table[pid][4] != pstart or table[pid][3] != pid:
        return
    try:
        mine = os.stat(f"/proc/{pid}").st_uid == os.getuid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if not mine or b"dpu_slurm.worker" not in argv or os.fsencode(str(jobdir)) not in argv:
        return
    for other, row in table.items():
        if row[3] == pid:  # its session: pid numbers are not reused while it has members
            _kill(other, signal.SIGKILL)
