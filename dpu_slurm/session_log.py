"""The prompt's printed lines: ``[user] HH:MM:SS - message`` kept in the session's log file."""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path
from typing import IO, List, Optional

log = logging.getLogger(__name__)


class LogLines(List[str]):
    """get_logs' lines: a list, shown at the prompt as a count (they were printed already)."""

    def __repr__(self) -> str:
        return f"<{len(self)} log lines>"


def open_log(path: Path) -> IO[str]:
    """The session log for appending, never through a planted name (the working folder may be
    shared): no symlink followed, no FIFO blocks, an existing file is a regular one of ours."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | getattr(os, "O_CLOEXEC", 0), 0o644)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EPERM, "it is not a regular file of yours; someone else may have "
                                   "put it there", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


class SessionWriter:
    """Prints ``[user] HH:MM:SS - message`` and keeps every line in the session's log file."""

    def __init__(self, user: str, out: IO[str], logfile: Optional[Path]) -> None:
        self.user, self.out, self.logfile = user, out, logfile
        self._fh: Optional[IO[str]] = None

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in message.splitlines() or [""]:
            self.raw(f"[{self.user}] {stamp} - {line}")

    def raw(self, line: str) -> None:
        """Print one line as is and append it to the session log."""
        print(line, file=self.out, flush=True)
        if self.logfile is not None:
            if self._fh is None:
                try:
                    self._fh = open_log(self.logfile)
                except OSError as exc:  # a read-only working folder must not break the session
                    log.warning("cannot write the session log %s (%s); going on without it",
                                self.logfile, exc.strerror)
                    self.logfile = None
                    return
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the session log file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def quiet(line: str) -> None:
    """A writer that prints nothing (for the job handles' calls)."""


__all__ = ["LogLines", "SessionWriter", "open_log", "quiet"]
