"""Index ranges in scheduler listings, and what a poll saw of one job's processes.

A scheduler lists the pending elements of an array as one line with a range (squeue without
``-r``: ``123_[5-99999%50]``; qstat ``-xml``: ``<tasks>2-100:1</tasks>``). Such a range is kept
as a range (``Seen``), never expanded: a poll of 100,000 pending processes costs one line,
and status.refresh looks only at the processes whose state can have changed.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from ..errors import SchedulerError
from ..states import ObsState

if TYPE_CHECKING:  # base.py imports this module: the Observation type only for the checker
    from .base import Observation

Span = Tuple[int, int, int]   # first, last (inclusive), step


def parse_ranges(text: str) -> List[Span]:
    """'5-99999%50', '[1-99:2,120]', '7' -> [(first, last, step), ...]; a throttle (%N) is
    dropped; a SchedulerError names the part that is not a range."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    body = body.split("%", 1)[0]
    out: List[Span] = []
    for part in filter(None, (p.strip() for p in body.split(","))):
        span, _, step = part.partition(":")
        first, dash, last = span.partition("-")
        if not first.isdigit() or not (last if dash else first).isdigit() or not (step or "1").isdigit():
            raise SchedulerError(f"not an index range: {part!r} in {text!r}")
        a, b, s = int(first), int(last or first), int(step or 1)
        if b < a or s < 1:
            raise SchedulerError(f"an empty index range: {part!r} in {text!r}")
        out.append((a, b - (b - a) % s, s))
    return out


def clip(span: Span, low: int, high: int) -> Optional[Span]:
    """The part of a span within [low, high] (None when nothing is)."""
    a, b, s = span
    if a < low:
        a += -(-(low - a) // s) * s
    b = min(b, high)
    if a > b:
        return None
    return a, b - (b - a) % s, s


class Seen(Dict[int, "Observation"]):
    """Process index -> Observation of one job, with runs of queued indices kept as ranges.

    ``get``, ``in`` and ``[]`` see the ranges; iteration and ``len`` see only the single
    entries (a range stands for processes that are queued and, unless known otherwise, unchanged).
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._starts: List[int] = []
        self._spans: List[Tuple[Span, Observation]] = []

    def add(self, span: Span, obs: Observation) -> None:
        """All indices of span have this observation; only a queued run stays a range."""
        a, b, s = span
        if a == b or obs.state != ObsState.QUEUED or self._overlaps(a, b):
            self.update(dict.fromkeys(range(a, b + 1, s), obs))
            return
        at = bisect.bisect_left(self._starts, a)
        self._starts.insert(at, a)
        self._spans.insert(at, (span, obs))

    def _overlaps(self, a: int, b: int) -> bool:
        at = bisect.bisect_right(self._starts, b)
        return at > 0 and self._spans[at - 1][0][1] >= a

    def _ranged(self, idx: int) -> Optional[Observation]:
        at = bisect.bisect_right(self._starts, idx)
        if at == 0:
            return None
        (a, b, s), obs = self._spans[at - 1]
        return obs if idx <= b and (idx - a) % s == 0 else None

    def get(self, idx: int, default: Optional[Observation] = None) -> Optional[Observation]:  # type: ignore[override]
        """The observation of a process, from a single entry or a range."""
        found = dict.get(self, idx)
        if found is not None:
            return found
        ranged = self._ranged(idx)
        return default if ranged is None else ranged

    def __contains__(self, idx: object) -> bool:
        return dict.__contains__(self, idx) or (isinstance(idx, int) and self._ranged(idx) is not None)

    def __missing__(self, idx: int) -> Observation:
        ranged = self._ranged(idx)
        if ranged is None:
            raise KeyError(idx)
        return ranged

    @property
    def spans(self) -> List[Tuple[Span, Observation]]:
        """The queued ranges, in index order."""
        return list(self._spans)

    def total(self) -> int:
        """How many processes this holds (single entries and the ranges' members)."""
        return len(self) + sum((b - a) // s + 1 for (a, b, s), _ in self._spans)

    def expanded(self) -> Dict[int, Observation]:
        """Every index, ranges written out (for callers that need a plain dict)."""
        out: Dict[int, Observation] = {}
        for (a, b, s), obs in self._spans:
            out.update(dict.fromkeys(range(a, b + 1, s), obs))
        out.update(self)
        return out

    def shifted(self, by: int) -> Seen:
        """The same with every index moved by `by`."""
        out = Seen({i + by: o for i, o in self.items()})
        for (a, b, s), obs in self._spans:
            out.add((a + by, b + by, s), obs)
        return out

    def merged(self, more: Dict[int, Observation], keep: bool = False) -> Seen:
        """A copy with `more`'s entries (and ranges) added; `keep`: existing entries win."""
        out = self.shifted(0)
        for span, obs in (more.spans if isinstance(more, Seen) else []):
            out.add(span, obs)
        for idx, obs in more.items():
            if not keep or idx not in out:
                dict.__setitem__(out, idx, obs)
        return out

    def unranged(self, indices: Sequence[int]) -> List[int]:
        """Of these sorted indices, those no queued range covers."""
        out: List[int] = []
        pos = 0
        for (a, b, s), _ in self._spans:
            lo = bisect.bisect_left(indices, a, pos)
            hi = bisect.bisect_right(indices, b, lo)
            out.extend(indices[pos:lo])
            if s > 1:
                out.extend(i for i in indices[lo:hi] if (i - a) % s)
            pos = hi
        out.extend(indices[pos:])
        return out


def as_seen(seen: Optional[Dict[int, Observation]]) -> Seen:
    """A poll's observations of a job as a Seen (schedulers without ranges give plain dicts)."""
    return seen if isinstance(seen, Seen) else Seen(seen or {})
