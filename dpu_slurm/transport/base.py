"""The transport contract: run an argv, move files, read many small files in one go."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..bundle import Bundle


@dataclass
class Completed:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str


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
    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        """Make the unpacked bundle exist at root/<digest>; return that folder."""

    @abstractmethod
    def expand(self, path: str) -> str:
        """A target path with ~ resolved on the target."""

    def close(self) -> None:
        return None
