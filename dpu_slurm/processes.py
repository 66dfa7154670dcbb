"""A job's processes as runs of indices sharing their options: O(runs), not O(processes).

100,000 processes that differ only by their index are one run ``(0, 99999, {})``; a task's
split may return a ``Processes`` itself (no list of dicts is ever built), or a list of dicts
that is compacted here. The worker's job.json carries the same runs (``job_file``, format 2);
worker.own_options is how the worker finds its own.
"""
from __future__ import annotations

import bisect
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

Run = Tuple[int, int, Dict[str, Any]]   # first index, last index (inclusive), options over the shared
JOB_FORMAT = 2                          # job.json's "processes": {"format": 2, "count", "runs"}


class Processes(Sequence[Dict[str, Any]]):
    """`count` processes; those in a run get its options over the shared ones, others `base`."""

    def __init__(self, count: int, runs: Sequence[Run] = (), shared: Optional[Mapping[str, Any]] = None,
                 base: Optional[Mapping[str, Any]] = None):
        self.size = int(count)
        self.base: Dict[str, Any] = dict(base or {})
        ordered = sorted(((int(a), int(b), dict(o)) for a, b, o in runs), key=lambda r: r[0])
        ends = [r[0] for r in ordered[1:]] + [self.size]
        for (a, b, _), end in zip(ordered, ends, strict=False):  # ends: one more when empty
            if not 0 <= a <= b < end:
                raise ValueError(f"process runs must lie in 0..{self.size - 1} without overlap: "
                                 f"({a}, {b}) does not")
        self.runs: List[Run] = ordered
        self.shared: Dict[str, Any] = dict(shared or {})
        self._firsts = [a for a, _, _ in ordered]

    @classmethod
    def indexed(cls, count: int, some: Optional[Mapping[int, Dict[str, Any]]] = None,
                base: Optional[Mapping[str, Any]] = None) -> Processes:
        """`count` processes that differ only by index, but for the options in `some` (index ->
        options); those not in `some` get `base`."""
        return cls(count, [(i, i, o) for i, o in sorted((some or {}).items()) if o], base=base)

    @classmethod
    def of_list(cls, parts: Sequence[Mapping[str, Any]]) -> Processes:
        """A split's list of per-process dicts, equal neighbours joined into one run."""
        runs: List[Run] = []
        prev: Optional[Mapping[str, Any]] = None
        for i, part in enumerate(parts):
            if runs and part == prev:
                runs[-1] = (runs[-1][0], i, runs[-1][2])
            elif part:
                runs.append((i, i, dict(part)))
            prev = part if part else None
        return cls(len(parts), runs)

    def with_shared(self, shared: Mapping[str, Any]) -> Processes:
        """The same runs over these shared options (the request's values)."""
        return Processes(self.size, self.runs, shared, self.base)

    def __len__(self) -> int:
        return self.size

    def own(self, index: int) -> Dict[str, Any]:
        """The options of one process that its run sets ({} when it is in none)."""
        at = bisect.bisect_right(self._firsts, index) - 1
        if at >= 0 and self.runs[at][0] <= index <= self.runs[at][1]:
            return {**self.base, **self.runs[at][2]}
        return dict(self.base)

    def __getitem__(self, index: int) -> Dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError("processes are indexed by int")
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return {**self.shared, **self.own(index)}

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return (self[i] for i in range(self.size))

    def overrides(self) -> List[Run]:
        """The runs with what a process would get anyway (shared options, then base) left out;
        runs left empty are dropped."""
        anyway = {**self.shared, **self.base}
        out: List[Run] = []
        for a, b, opts in self.runs:
            own = {k: v for k, v in opts.items() if k not in anyway or anyway[k] != v}
            if own:
                out.append((a, b, own))
        return out

    def job_file(self) -> Dict[str, Any]:
        """job.json's "processes": readable, versioned, as small as the runs. A process in no
        run takes `base`; one in a run takes `base` updated by the run's options."""
        doc: Dict[str, Any] = {"format": JOB_FORMAT, "count": self.size}
        base = {k: v for k, v in self.base.items() if k not in self.shared or self.shared[k] != v}
        if base:
            doc["base"] = base
        doc["runs"] = [[a, b, o] for a, b, o in self.overrides()]
        return doc

