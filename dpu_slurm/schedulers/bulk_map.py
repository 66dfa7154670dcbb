"""A DRMAA rerun's bulk jobs: runBulkJobs takes one range 1..n, so each chunk of a rerun is a
bulk of as many tasks as it has processes to rerun, and task k runs the chunk's k-th index.

The job script carries the chunk's indices (``positions``) and picks its own by the DRM's task
number; the poll and the history, which see task k of a chunk at ``offset + k - 1`` (as for a
first submission's chunk), are mapped back to the real indices here.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from ..store import Job
from .helpers import layout
from .ranges import Seen


def positions(offset: int, ids: Sequence[int]) -> Dict[str, Any]:
    """The rerun chunk template's context: its indices, space-separated (task k: the k-th)."""
    return {"positions": " ".join(str(offset + i) for i in ids)}


def remap(jobs: Sequence[Job], seen: Dict[int, Dict[int, Any]]) -> Dict[int, Dict[int, Any]]:
    """Observations keyed ``offset + task - 1`` -> keyed by the process that task ran (a job
    without a rerun's layout keeps its keys: its chunks' tasks are consecutive)."""
    for job in jobs:
        if job.id not in seen or not job.dpu_options.get("layout"):
            continue
        out: Dict[int, Any] = {}
        parts = layout(job)
        got = seen[job.id]
        for key, obs in (got.expanded() if isinstance(got, Seen) else got).items():
            for offset, ids in parts:
                if offset <= key < offset + len(ids):
                    out[ids[key - offset]] = obs
                    break
        seen[job.id] = out
    return seen
