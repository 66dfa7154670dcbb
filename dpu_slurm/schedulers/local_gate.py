"""The local runner's side of ``after``: hold a job's processes until those they wait for end.

The prerequisite jobs' runners keep runner.json in their folders; a process counts as ended once
its state is final and it is not live any more (its worker has written its final record, which
the dependent's worker then reads: prereq.py decides whether it runs or is skipped).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

RUNNER_FILE = "runner.json"
EVERY = 0.25  # seconds between reads of the prerequisites' runner files


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def ended(jobdir: Path, nproc: int, open_states: Set[str]) -> Set[int]:
    """The processes of a local job that have ended (all of them once its runner is gone)."""
    try:
        data = json.loads((jobdir / RUNNER_FILE).read_text(encoding="utf-8"))
        states, live = data["states"], {int(i) for i in data.get("live", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if data.get("pid") and not _alive(data["pid"]):  # its runner died: nothing more will end
        return set(range(nproc))
    return {i for i, (state, _) in enumerate(states) if state not in open_states and i not in live}


class Gate:
    """Which pending processes of a job may start now, after its job.json's ``after``."""

    def __init__(self, jobdir: Path, open_states: Set[str]) -> None:
        self.open = open_states  # the runner's states of a process not ended yet
        try:
            after = json.loads((jobdir / "job.json").read_text(encoding="utf-8")).get("after") or {}
        except (OSError, ValueError):
            after = {}
        self.each = after.get("mode") == "each"
        self.jobs = [(Path(p["jobdir"]), int(p["nproc"])) for p in after.get("jobs", [])]
        self.seen: Dict[Path, Set[int]] = {}
        self.read = 0.0

    def ready(self, pending: Sequence[int]) -> List[int]:
        """The pending processes whose prerequisites have ended, in order."""
        if not self.jobs:
            return list(pending)
        now = time.monotonic()
        if now - self.read >= EVERY:
            self.seen = {d: ended(d, n, self.open) for d, n in self.jobs}
            self.read = now
        if self.each:
            return [i for i in pending if all(i in self.seen.get(d, ()) for d, _ in self.jobs)]
        whole = all(len(self.seen.get(d, ())) >= n for d, n in self.jobs)
        return list(pending) if whole else []
