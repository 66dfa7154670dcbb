"""The transport contract: run an argv, move files, read many small files in one go."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..bundle import Bundle


@dataclass
class Completed:
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
            timeout: Optional[float] = 120.0) -> Completed: ...

    @abstractmethod
    def write_files(self, files: Dict[str, bytes]) -> None:
        """Write each file atomically, creating parent folders."""

    @abstractmethod
    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        """Many small files in one round trip; a missing file reads as None."""

    @abstractmethod
    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str) -> Gathered:
        """In ONE round trip: run argv (a scheduler's status command), read files, and read
        p/<index>/<record_name> of each listed process that has started."""

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
        return None


def started_indices(jobdir: str, wanted: List[int], listing: Sequence[str]) -> List[int]:
    """The wanted indices that have a process folder (only started processes have one)."""
    want = set(wanted)
    return sorted(int(n) for n in listing if n.isdigit() and int(n) in want)
