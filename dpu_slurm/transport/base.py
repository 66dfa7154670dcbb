"""The transport contract: run an argv, move files, read many small files in one go."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..bundle import Bundle
from .owned import IndexScan, OwnedFile, OwnedRead

RECORD_CAP = 64 << 10     # a worker's status record, a job card
FILE_CAP = 16 << 20       # a scheduler's file read for a poll (runner.json of a big job)


@dataclass
class Completed:
    """A finished command: its argv, exit status and decoded output."""

    argv: List[str]
    returncode: int
    stdout: str
    stderr: str


# A batch of process records to read: job folder -> process indices still open.
Records = Dict[str, List[int]]


@dataclass
class Gathered:
    """What one gather() round trip brought back."""

    completed: Optional[Completed]
    files: Dict[str, Optional[bytes]]
    records: Dict[Tuple[str, int], bytes]   # (job folder, index) -> record; absent if none yet


class Transport(ABC):
    """Commands are argv lists; the transport quotes them once if it needs a shell."""

    @abstractmethod
    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 120.0) -> Completed:
        """Run argv on the target (stdin from ``input``); 127: no such command, 124: timed out."""

    @abstractmethod
    def write_files(self, files: Dict[str, bytes]) -> None:
        """Write each file atomically, creating parent folders."""

    @abstractmethod
    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        """Many small files in one round trip; a missing file reads as None."""

    @abstractmethod
    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str, owners: Optional[Dict[str, int]] = None,
               caps: Optional[Dict[str, int]] = None) -> Gathered:
        """In ONE round trip: run argv (a scheduler's status command), read files, and read
        p/<index>/<record_name> of each listed process that has started. With `owners` (job
        folder -> uid) every file is read as read_owned does, and files outside those folders
        read as None: the queue page reads other users' folders so. `caps` (job folder ->
        bytes) lowers FILE_CAP for the files below a folder (a larger file reads as None)."""

    @abstractmethod
    def read_owned(self, files: Sequence[OwnedFile], cap: int, tail: bool = False,
                   private: bool = False) -> OwnedRead:
        """Many files of other users in one round trip, each only if it and every folder from
        its base down is owned by its uid, none a symlink, the file a regular one; at most `cap`
        bytes (the last ones when `tail`, else a bigger file is refused). `private` also refuses
        what group or others may write. See owned.py."""

    @abstractmethod
    def scan_index(self, root: str, since: float) -> IndexScan:
        """The job cards under root (owner-checked, see owned.scan_index), in one round trip."""

    @abstractmethod
    def write_own(self, root: str, folder: str, name: str, data: bytes) -> None:
        """Write root/folder/name into our own folder of a shared sticky root (owned.write_own);
        DPUError when the folder is not ours or others may write it."""

    @abstractmethod
    def own_workdir(self, path: str, subs: Sequence[str] = ()) -> None:
        """Make the workdir and its `subs`; DPUError when another user could change them
        (folders.workdir_problem): job scripts and code run from there."""

    @abstractmethod
    def account(self) -> Tuple[str, int]:
        """The name and uid the target runs our commands as (names a card folder there)."""

    @abstractmethod
    def user_ids(self, names: Sequence[str]) -> Dict[str, Optional[int]]:
        """The uids of these user names on the target (None: no such user)."""

    @abstractmethod
    def remove_bundles(self, root: str, keep: Set[str], older_than: float) -> List[str]:
        """Delete unpacked bundles under root not in keep and unused for older_than seconds."""

    @abstractmethod
    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        """Make the unpacked bundle exist at root/<digest>; return that folder."""

    @abstractmethod
    def expand(self, path: str) -> str:
        """A target path with ~ resolved on the target."""

    def close(self) -> None:
        """Release the connection, if any (a later call reconnects)."""
        return None


def job_file_cap(nproc: int) -> int:
    """Bytes a job's own files (runner.json) may need for `nproc` processes; the queue page
    reads no more of another user's (a card of one process must not cost FILE_CAP)."""
    return min(FILE_CAP, 4096 + 256 * max(1, nproc))


def started_indices(jobdir: str, wanted: List[int], listing: Sequence[str]) -> List[int]:
    """The wanted indices that have a process folder (only started processes have one)."""
    want = set(wanted)
    return sorted(int(n) for n in listing if n.isdigit() and int(n) in want)
