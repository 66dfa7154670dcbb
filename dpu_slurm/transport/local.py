"""This machine as a transport: subprocess for commands, the filesystem for files."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..bundle import Bundle, unpack
from ..files import atomic_write
from . import folders, owned
from .base import FILE_CAP, RECORD_CAP, Completed, Gathered, Records, Transport, started_indices
from .owned import IndexScan, OwnedFile, OwnedRead


class LocalTransport(Transport):
    """This machine: commands by subprocess, files read and written directly."""

    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 120.0) -> Completed:
        """Run argv; 127 when the command is missing, 124 at the timeout."""
        try:
            proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                  timeout=timeout, errors="backslashreplace")
        except FileNotFoundError:
            return Completed(list(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Completed(list(argv), 124, "", f"{argv[0]}: no answer within {timeout} s")
        return Completed(list(argv), proc.returncode, proc.stdout, proc.stderr)

    def write_files(self, files: Dict[str, bytes]) -> None:
        """Write each file through a unique temp name and a rename."""
        # No fsync (as the SSH helper): these are one job's inputs, written once per submit; a
        # killed submitter cannot leave a part-written one, and a power cut takes the job too.
        for name, data in files.items():
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            atomic_write(Path(name), data, 0o644, durable=False)

    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        """Each file's bytes, None when missing."""
        out: Dict[str, Optional[bytes]] = {}
        for name in paths:
            try:
                out[name] = Path(name).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                out[name] = None
        return out

    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str, owners: Optional[Dict[str, int]] = None,
               caps: Optional[Dict[str, int]] = None) -> Gathered:
        """The status command, the files and the started processes' records (see Transport.gather)."""
        completed = self.run(argv) if argv else None
        if owners is not None:
            return Gathered(completed, *_gather_owned(files, records, record_name, owners, caps or {}))
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

    def read_owned(self, files: Sequence[OwnedFile], cap: int, tail: bool = False,
                   private: bool = False) -> OwnedRead:
        """Owner-checked reads (owned.read_owned)."""
        return owned.read_owned(files, cap, tail, private)

    def scan_index(self, root: str, since: float) -> IndexScan:
        """The owner-checked job cards under root (owned.scan_index)."""
        return owned.scan_index(root, since)

    def write_own(self, root: str, folder: str, name: str, data: bytes) -> None:
        """Write into our own card folder (owned.write_own)."""
        owned.write_own(root, folder, name, data)

    def own_workdir(self, path: str, subs: Sequence[str] = ()) -> None:
        """Make the workdir and its subfolders; refuse one another user could change (folders.py)."""
        folders.own_workdir(path, subs)

    def account(self) -> Tuple[str, int]:
        """This process's user name and uid."""
        return owned.account()

    def user_ids(self, names: Sequence[str]) -> Dict[str, Optional[int]]:
        """The uids of these user names here (None: unknown)."""
        return owned.user_ids(names)

    def remove_bundles(self, root: str, keep: Set[str], older_than: float) -> List[str]:
        """Delete unpacked bundles under root not in keep and unused for older_than seconds."""
        removed: List[str] = []
        base = Path(root)
        if not base.is_dir():
            return removed
        for entry in base.iterdir():
            if LEFTOVER.match(entry.name):
                _remove_leftover(entry, older_than)
                continue
            if entry.name.startswith(".") or entry.name in keep or not entry.is_dir():
                continue
            if time.time() - entry.stat().st_mtime >= older_than:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return sorted(removed)

    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        """Unpack the bundle under root once and mark it used; its folder."""
        final = unpack(bundle, Path(root))
        os.utime(final)  # "last used": dpu cleanup keeps recently used bundles
        return str(final)

    def expand(self, path: str) -> str:
        """The path with ~ resolved."""
        return os.path.expanduser(path)


# What a killed unpack (.<digest>.<random>.tmp) or, through the SSH helper, a killed upload
# (.part), install (.unpack) or replacement (.bad.<random>) leaves beside the bundles.
LEFTOVER = re.compile(r"^\.[0-9a-f]{64}\.(?:[A-Za-z0-9_]+\.(?:tmp|part|unpack)|bad\.[0-9a-f]+)$")
LEFTOVER_AGE = 3600.0   # younger ones may belong to a submit at work right now


def _remove_leftover(entry: Path, older_than: float) -> None:
    try:
        st = entry.lstat()
        if time.time() - st.st_mtime < max(older_than, LEFTOVER_AGE):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
    except OSError:
        pass


def _gather_owned(files: Sequence[str], records: Records, record_name: str, owners: Dict[str, int],
                  caps: Dict[str, int]) -> Tuple[Dict[str, Optional[bytes]], Dict[Tuple[str, int], bytes]]:
    """gather's files and records, each read only from a folder of its owner (owned.py)."""
    got: Dict[str, Optional[bytes]] = {}
    for path in files:
        item = owned.owner_of(path, owners)
        cap = FILE_CAP if item is None else caps.get(item.base, FILE_CAP)
        got[path] = None if item is None else owned.read_owned([item], cap).data[item.path]
    found: Dict[Tuple[str, int], bytes] = {}
    for jobdir, wanted in records.items():
        uid = owners.get(jobdir)
        if uid is None:
            continue
        items = [OwnedFile(jobdir, f"p/{i}/{record_name}", uid)
                 for i in owned.started_owned(jobdir, uid, wanted)]
        for item, data in zip(items, owned.read_owned(items, RECORD_CAP).data.values(), strict=True):
            if data is not None:
                found[(jobdir, int(item.rel.split("/")[1]))] = data
    return got, found
