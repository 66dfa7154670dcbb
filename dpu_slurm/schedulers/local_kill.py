"""Ending a local DPU worker whose runner died: only that worker's session, and only when the
process with that pid is still that worker and ours (runner.json may be another user's); and
waiting for a rerun's previous runner to exit."""
from __future__ import annotations

import os
import signal
import time
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


def runner_alive(pid: int, jobdir: Path) -> bool:
    """Whether `pid` is still a local runner of `jobdir` of ours (False once it exited)."""
    try:
        mine = os.stat(f"/proc/{pid}").st_uid == os.getuid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return mine and state != "Z" and b"dpu_slurm.schedulers.local" in argv \
        and os.fsencode(str(jobdir)) in argv


def wait_for_runner(pid_file: Path, jobdir: Path, timeout: float = 30.0) -> bool:
    """Wait until the runner named in `pid_file` (a rerun's last run) has exited: it may still be
    writing its final runner.json into the job folder. False if it still runs at the timeout."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return True
    deadline = time.monotonic() + timeout
    while runner_alive(pid, jobdir):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
