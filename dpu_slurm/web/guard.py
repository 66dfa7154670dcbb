"""The queue page's transport: every file under a job folder is read as its owner's.

The page polls every user's jobs with the same status code as ``dpu status`` (status.refresh and
the schedulers), which read job files through the transport. Wrapped in OwnersOnly, those reads
happen only below the job folders the page has accepted (folder -> the card owner's uid), with
the checks of transport/owned.py; anything else reads as missing.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..bundle import Bundle
from ..errors import DPUError
from ..transport import Transport
from ..transport.base import FILE_CAP, Completed, Gathered, Records
from ..transport.owned import IndexScan, OwnedFile, OwnedRead, owner_of


class OwnersOnly(Transport):
    """A transport that reads other users' job files only as read_owned does; writes nothing."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.owners: Dict[str, int] = {}   # accepted job folder -> its owner's uid
        self.caps: Dict[str, int] = {}     # accepted job folder -> bytes its files may have

    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 120.0) -> Completed:
        """Run a command on the target."""
        return self.inner.run(argv, input, timeout)

    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str, owners: Optional[Dict[str, int]] = None,
               caps: Optional[Dict[str, int]] = None) -> Gathered:
        """Gather records, reading only files owned by the job's owner."""
        return self.inner.gather(argv, files, records, record_name, dict(self.owners), dict(self.caps))

    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        """Read files whose owner is known; others read as None."""
        items = {p: owner_of(p, self.owners) for p in paths}
        got = self.inner.read_owned([i for i in items.values() if i is not None], FILE_CAP)
        return {p: None if i is None else got.data.get(i.path) for p, i in items.items()}

    def read_owned(self, files: Sequence[OwnedFile], cap: int, tail: bool = False,
                   private: bool = False) -> OwnedRead:
        """Read files checked against their owner."""
        return self.inner.read_owned(files, cap, tail, private)

    def scan_index(self, root: str, since: float) -> IndexScan:
        """The job index cards changed since `since`."""
        return self.inner.scan_index(root, since)

    def account(self) -> Tuple[str, int]:
        """The target account's name and uid."""
        return self.inner.account()

    def user_ids(self, names: Sequence[str]) -> Dict[str, Optional[int]]:
        """The uid of each user name (None when unknown)."""
        return self.inner.user_ids(names)

    def expand(self, path: str) -> str:
        """The path with ``~`` expanded on the target."""
        return self.inner.expand(path)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()

    def write_files(self, files: Dict[str, bytes]) -> None:
        """Refused: raises DPUError (the page writes nothing)."""
        raise DPUError("the queue page writes no files on the DPU")

    def write_own(self, root: str, folder: str, name: str, data: bytes) -> None:
        """Refused: raises DPUError (the page writes nothing)."""
        raise DPUError("the queue page writes no files on the DPU")

    def own_workdir(self, path: str, subs: Sequence[str] = ()) -> None:
        """Refused: raises DPUError (the page writes nothing)."""
        raise DPUError("the queue page writes no files on the DPU")

    def remove_bundles(self, root: str, keep: Set[str], older_than: float) -> List[str]:
        """Refused: raises DPUError (the page removes nothing)."""
        raise DPUError("the queue page removes nothing on the DPU")

    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        """Refused: raises DPUError (the page ships no code)."""
        raise DPUError("the queue page ships no code")
