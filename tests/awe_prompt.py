"""`dpu shell` on a real terminal (a pty), typed at line by line as a user does."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Optional, Type

from tests.conftest import REPO

PROMPT, MORE = "awe> ", "...  "


class AwePrompt:
    """A `dpu shell --dpu DPU` on a pty: ``type(line)`` returns what the line printed, up to the
    next prompt (``awe> ``, or ``...  `` inside a block). Every wait is bounded."""

    def __init__(self, cwd: Path, dpu: str, timeout: float = 60) -> None:
        self.timeout = timeout
        self.transcript = ""   # everything the terminal showed, for the failure messages
        self.prompt = ""       # the prompt the last read ended at
        master, slave = pty.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dpu_slurm.cli", "shell", "--dpu", dpu],
            stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"})
        os.close(slave)
        self._seen = b""

    def upto(self, *markers: str, timeout: Optional[float] = None) -> str:
        """What the terminal shows until the first of `markers` (default: either prompt)."""
        wanted = [m.encode() for m in markers or (PROMPT, MORE)]
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            found = [(self._seen.find(m), m) for m in wanted if m in self._seen]
            if found:
                at, marker = min(found)
                break
            assert time.monotonic() < end, f"no prompt in time; the terminal shows:\n" \
                f"{self.transcript}{self._seen.decode(errors='replace')}"
            if select.select([self.master], [], [], 1)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the shell ended: the terminal is closed
                    chunk = b""
                assert chunk, f"the shell ended; the terminal shows:\n{self.transcript}" \
                    f"{self._seen.decode(errors='replace')}"
                self._seen += chunk
        text = self._seen[:at].decode(errors="replace").replace("\r\n", "\n")
        self._seen = self._seen[at + len(marker):]
        self.prompt = marker.decode()
        self.transcript += text + self.prompt
        return text

    def type(self, line: str, timeout: Optional[float] = None) -> str:
        """Type `line` and Enter; what it printed (the terminal's echo of it left out)."""
        os.write(self.master, (line + "\n").encode())
        text = self.upto(timeout=timeout)
        echo = line + "\n"
        return text[len(echo):] if text.startswith(echo) else text

    def close(self) -> int:
        """End of input (a user's Ctrl-D) at the prompt; the shell's exit status."""
        if self.proc.poll() is None:
            os.write(self.master, b"\x04")
            try:
                return self.proc.wait(timeout=30)
            finally:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """Stop the shell (this test's own child, by its handle) and close the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def __enter__(self) -> AwePrompt:
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.kill()


