"""Helpers every scheduler shares: chunks, job tags, time limits, accounting's start stamp."""
from __future__ import annotations

import math
import re
import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from ..store import Job
from ..transport.base import Completed


def chunks(nproc: int, size: int) -> List[Tuple[int, int]]:
    """(offset, count) per array job: array indices stay below the site's maximum array size."""
    size = max(1, size)
    return [(start, min(size, nproc - start)) for start in range(0, nproc, size)]


def index_chunks(indices: Sequence[int], size: int) -> List[Tuple[int, List[int]]]:
    """A rerun's processes as (offset, indices) per array job: grouped by the chunk of the first
    attempt, so every array index (index - offset) stays below the site's maximum array size."""
    out: Dict[int, List[int]] = {}
    for i in sorted(set(indices)):
        out.setdefault(i // max(1, size) * max(1, size), []).append(i)
    return list(out.items())


def layout(job: Job) -> List[Tuple[int, List[int]]]:
    """(offset, process indices) of each chunk of the job's current attempt, in native id order."""
    rerun = job.dpu_options.get("layout")
    if rerun:
        return [(int(o), [int(i) for i in ids]) for o, ids in rerun]
    return [(o, list(range(o, o + n))) for o, n in chunks(job.nproc, chunk_size(job))]


def chunk_owners(jobs: Sequence[Job], key: Callable[[str], str] = str
                 ) -> Dict[str, Tuple[Job, int, int]]:
    """Native id of each chunk -> (job, index offset of that chunk, array index span of the chunk)."""
    out: Dict[str, Tuple[Job, int, int]] = {}
    for job in jobs:
        parts = layout(job)
        for k, native in enumerate(job.native_ids):
            if k < len(parts):
                offset, ids = parts[k]
                out[key(native)] = (job, offset, max(ids) - offset + 1 if ids else 0)
    return out


def number_owners(jobs: Sequence[Job]) -> Dict[str, Tuple[Job, int, int]]:
    """chunk_owners keyed by the leading number of each id ('123' of '123[].server', '123.4')."""
    def number(native: str) -> str:
        m = re.match(r"\d+", native.strip())
        return m.group(0) if m else native.strip()
    return chunk_owners(jobs, number)


def minutes(seconds: int) -> int:
    """A time limit in the whole minutes schedulers enforce, rounded up (at least one)."""
    return max(1, math.ceil(seconds / 60))


def minute_limit(seconds: int) -> int:
    """The time limit schedulers enforce, in seconds (what the worker is told)."""
    return 60 * minutes(seconds)


def walltime(seconds: int) -> str:
    """HH:MM:SS (hours may pass 24) of the enforced limit: PBS walltime, Grid Engine h_rt."""
    m = minutes(seconds)
    return f"{m // 60:02d}:{m % 60:02d}:00"


def job_tag(user: str, job_id: int, store: str = "", rerun: int = 1) -> str:
    """A job's tag: `dpu.<user>.<job id>.<store id>`, unique across a user's stores (`.r<n>`
    added for the n-th submission of a rerun). Each chunk carries it with its index as the
    scheduler's job name (chunk_tag), so a job whose submitter died can be found and its native
    ids put in chunk order (reconcile.py)."""
    tag = f"dpu.{user}.{job_id}.{store}" if store else f"dpu.{user}.{job_id}"
    return f"{tag}.r{rerun}" if rerun > 1 else tag


def chunk_tag(tag: str, k: int) -> str:
    """The job name of chunk k of the job tagged `tag`."""
    return f"{tag}.{k}"


def tag_of(job: Job) -> str:
    """The tag a stored job was submitted with (jobs recorded before store ids: the old one)."""
    return job_tag(job.user, job.id, str(job.dpu_options.get("store") or ""),
                   int(job.dpu_options.get("rerun") or 1))


def chunk_size(job: Job) -> int:
    """Processes per chunk of a stored job."""
    return max(1, int(job.dpu_options.get("chunk") or job.nproc))


def tagged(jobs: Sequence[Job], names: Mapping[str, str]) -> Dict[int, Dict[int, str]]:
    """Job id -> chunk index -> native id, for these jobs' chunks found among job names."""
    wanted = {tag_of(j): j.id for j in jobs}
    out: Dict[int, Dict[int, str]] = {}
    for name, native in names.items():
        base, _, k = name.rpartition(".")
        if base in wanted and k.isdigit():
            out.setdefault(wanted[base], {})[int(k)] = native
        elif name in wanted:  # dpu.<user>.<id>: a job of an older version, one name for all
            out.setdefault(wanted[name], {}).setdefault(0, native)
    return out


def one_line(res: Completed) -> str:
    """A command's complaint on one line (stderr, else stdout, else its exit code)."""
    return " ".join((res.stderr + " " + res.stdout).split()) or f"exit code {res.returncode}"


def since(jobs: Sequence[Job], fmt: str) -> str:
    """A local time stamp a minute before the oldest of these jobs was submitted (accounting's
    start time: its clock and ours may differ by seconds)."""
    return time.strftime(fmt, time.localtime(min(j.submitted or j.created for j in jobs) - 60))


def runs(numbers: Sequence[int]) -> List[Tuple[int, int]]:
    """Sorted numbers -> (first, last) of each run of consecutive ones."""
    out: List[Tuple[int, int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out
