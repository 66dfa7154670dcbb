"""This machine as a transport: subprocess for commands, the filesystem for files."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..bundle import Bundle, unpack
from .base import Completed, Transport


class LocalTransport(Transport):
    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 120.0) -> Completed:
        try:
            proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                  timeout=timeout, errors="backslashreplace")
        except FileNotFoundError:
            return Completed(list(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Completed(list(argv), 124, "", f"{argv[0]}: no answer within {timeout} s")
        return Completed(list(argv), proc.returncode, proc.stdout, proc.stderr)

    def write_files(self, files: Dict[str, bytes]) -> None:
        for name, data in files.items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        out: Dict[str, Optional[bytes]] = {}
        for name in paths:
            try:
                out[name] = Path(name).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                out[name] = None
        return out

    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        return str(unpack(bundle, Path(root)))

    def expand(self, path: str) -> str:
        return os.path.expanduser(path)
