"""Inside the job: the lock file that keeps two copies of one process from running at once
(standard library only; it travels in the bundle with the worker).

Each run of a process holds ``p/<idx>/lock`` (created O_EXCL|O_NOFOLLOW, owner and type checked,
its time refreshed while it runs). A second copy finding the lock held refuses and leaves every
record alone. A lock is stale, and taken over, when its holder is gone: on the same host its pid
no longer runs with the same start time; from another host it has not been refreshed for STALE
seconds (the second copy waits that long before deciding, so a requeued run on another node
follows a killed one without a person clearing anything).
"""
from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

LOCK = "lock"
HEARTBEAT = 20.0   # seconds between refreshes of a held lock's time
STALE = 90.0       # a lock from another host not refreshed for this long is its dead holder's
MAX_BYTES = 4096


class LockRefused(Exception):
    """Another live copy of this process holds its lock (or the lock is not this user's)."""


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot ('' when it is gone): with the pid it
    names one process, not a later one that reused the number."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _read(path: Path) -> Optional[Dict[str, Any]]:
    """The lock's fields and its inode/mtime; None when it vanished. LockRefused when it is not
    a regular file of this user's (a symlink is never followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockRefused(f"{path} cannot be read as a lock ({exc.strerror}); remove it if it is "
                          "not a dpu_slurm lock") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise LockRefused(f"{path} is not a regular file owned by you; remove it and run again")
        raw = os.read(fd, MAX_BYTES)
    finally:
        os.close(fd)
    same = (st.st_ino, st.st_ctime_ns, st.st_size, raw)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        data = {}   # a holder killed while writing it: judged by its age alone
    return {**data, "_same": same, "_mtime": st.st_mtime}


def holder_alive(data: Dict[str, Any], now: float, stale: float) -> bool:
    """Whether the copy that wrote this lock may still run."""
    pid, start = data.get("pid"), data.get("start")
    if data.get("host") == socket.gethostname() and isinstance(pid, int) and isinstance(start, str) \
            and start:
        return _start_time(pid) == start
    return now - float(data["_mtime"]) < stale


class ProcessLock:
    """The lock of one process folder, held from acquire() to release()."""

    def __init__(self, folder: Path, stale: float = STALE, heartbeat: float = HEARTBEAT) -> None:
        self.path = Path(folder) / LOCK
        self.stale, self.heartbeat = stale, heartbeat
        self.fd: Optional[int] = None
        self._stop = threading.Event()

    def acquire(self, wait: Optional[float] = None) -> None:
        """Take the lock for this run; LockRefused when a live copy holds it. A lock from
        another host is watched for up to `wait` seconds (default: the stale age) first."""
        deadline = time.time() + (self.stale + 5 if wait is None else wait)
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                data = _read(self.path)
                if data is None:
                    continue   # released meanwhile: try again
                now = time.time()
                if not holder_alive(data, now, self.stale):
                    self._take_over(data)
                    continue
                if data.get("host") == socket.gethostname() or now >= deadline:
                    raise LockRefused(f"process already running (pid {data.get('pid')} on "
                                      f"{data.get('host')}; lock "
                                      f"{self.path})") from None
                time.sleep(min(5.0, max(0.1, deadline - now)))
                continue
            break
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
              "at": time.time()}
        os.write(fd, json.dumps(me).encode())
        self.fd = fd
        if self.heartbeat > 0:
            threading.Thread(target=self._beat, name="dpu-lock", daemon=True).start()

    def _take_over(self, data: Dict[str, Any]) -> None:
        # Removed only if it is still the very file judged stale: another copy may have taken
        # it over meanwhile, and its fresh lock often gets the freed inode number back, so the
        # inode alone cannot tell (red13b); its change time and contents differ.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if (st.st_ino, st.st_ctime_ns, st.st_size, os.read(fd, MAX_BYTES)) == data["_same"]:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            fd = self.fd
            if fd is None:
                return
            try:
                os.utime(fd)
            except OSError:
                return

    def release(self) -> None:
        """Give the lock up (removing the file only if it is still ours)."""
        self._stop.set()
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)
