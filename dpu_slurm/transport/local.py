"""This machine as a transport: subprocess for commands, the filesystem for files."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..bundle import Bundle, unpack
from .base import Completed, Gathered, Records, Transport, started_indices


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

    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str) -> Gathered:
        completed = self.run(argv) if argv else None
        found: Dict[Tuple[str, int], bytes] = {}
        for jobdir, wanted in records.items():
            try:
                listing = os.listdir(os.path.join(jobdir, "p"))
            except OSError:
                continue
            for idx in started_indices(jobdir, wanted, listing):
                try:
                    found[(jobdir, idx)] = Path(jobdir, "p", str(idx), record_name).read_bytes()
                except OSError:
                    pass
        return Gathered(completed, self.read_files(files), found)

    def remove_bundles(self, root: str, keep: Set[str], older_than: float) -> List[str]:
        removed: List[str] = []
        base = Path(root)
        if not base.is_dir():
            return removed
        for entry in base.iterdir():
            if entry.name.startswith(".") or entry.name in keep or not entry.is_dir():
                continue
            if time.time() - entry.stat().st_mtime >= older_than:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return sorted(removed)

    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        final = unpack(bundle, Path(root))
        os.utime(final)  # "last used": dpu cleanup keeps recently used bundles
        return str(final)

    def expand(self, path: str) -> str:
        return os.path.expanduser(path)
