"""Usage figures of ended processes: the worker's own, and the scheduler's accounting for the
processes the worker could not measure to the end (killed at a time or memory limit).

A poll (status.refresh) keeps the figures of the processes that ended in it; the accounting is
asked (one more call, only then) when one of them was aborted, is unknown or has no figures.
``dpu report`` asks again for the ones still missing: accounting may lag the end of a job.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import DPUError
from .schedulers.accounting import Figures
from .schedulers.base import Scheduler
from .states import ProcState
from .store import Job, Store
from .store_usage import UsageRow

log = logging.getLogger(__name__)

WORKER = "worker"
_MAX = {"wall_s": 10.0 ** 9, "cpu_s": 10.0 ** 11, "max_rss_kb": 2.0 ** 50}  # bounds of a sane record


def worker_figures(raw: Any) -> Optional[Figures]:
    """The `usage` of a worker's status record, typed and bounded (another user may have
    written it: the queue page reads every user's records); None when absent or unreadable."""
    if not isinstance(raw, dict):
        return None
    values: Dict[str, Optional[float]] = {}
    for key, bound in _MAX.items():
        value = raw.get(key)
        # The bound first: a 400-digit int compares fine but cannot become a float (isfinite).
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and 0 <= value <= bound and math.isfinite(value)
        values[key] = float(value) if ok and value is not None else None
    rss = values["max_rss_kb"]
    figures = Figures(values["wall_s"], values["cpu_s"], None if rss is None else int(rss))
    return figures if figures.any() else None


def wants_accounting(outcome: str, figures: Optional[Figures]) -> bool:
    """Whether the scheduler's word is needed: the worker was cut short or left nothing."""
    return figures is None or "A" in outcome or "U" in outcome


def record_usage(store: Store, scheduler: Scheduler, ended: Sequence[Tuple[Job, int, str]],
                 figures: Dict[Tuple[int, int], Figures]) -> None:
    """Keep the figures of processes that just ended ((job, index, outcome) each): the workers'
    own, then the accounting's for those that want it, in one scheduler call."""
    by_job: Dict[int, Job] = {}
    rows: Dict[int, List[UsageRow]] = {}
    want: Dict[int, List[int]] = {}
    attempts: Dict[int, Dict[int, int]] = {}
    for job, idx, outcome in ended:
        by_job[job.id] = job
        if job.id not in attempts:
            attempts[job.id] = store.attempt_numbers(job.id)
        own = figures.get((job.id, idx))
        if own is not None:
            rows.setdefault(job.id, []).append(
                UsageRow(idx, attempts[job.id].get(idx, 1), own.wall_s, own.cpu_s, own.max_rss_kb, WORKER))
        if wants_accounting(outcome, own):
            want.setdefault(job.id, []).append(idx)
    for job_id, extra in ask(scheduler, [by_job[j] for j in want], want, attempts).items():
        rows.setdefault(job_id, []).extend(extra)
    for job_id, got in rows.items():
        store.put_usage(job_id, got)


def ask(scheduler: Scheduler, jobs: Sequence[Job], want: Dict[int, List[int]],
        attempts: Dict[int, Dict[int, int]]) -> Dict[int, List[UsageRow]]:
    """The accounting's figures of these processes (job id -> rows); nothing when the scheduler
    keeps none or cannot be asked now (a later `dpu report` asks again)."""
    if not jobs:
        return {}
    try:
        got = scheduler.usage(jobs)
    except DPUError as exc:
        log.warning("usage figures from %s's accounting not read now: %s", scheduler.name, exc)
        return {}
    out: Dict[int, List[UsageRow]] = {}
    for job_id, indices in want.items():
        for idx in indices:
            f = got.get(job_id, {}).get(idx)
            if f is not None and f.any():
                out.setdefault(job_id, []).append(UsageRow(
                    idx, attempts[job_id].get(idx, 1), f.wall_s, f.cpu_s, f.max_rss_kb,
                    scheduler.USAGE_SOURCE or "scheduler"))
    return out


def fill_in(store: Store, scheduler: Scheduler, job: Job) -> int:
    """Ask the accounting (one call) for the ended processes of `job` whose figures are
    missing, or after an abort the worker's own or incomplete; how many rows it filled in."""
    have = store.usage(job.id)
    attempts = store.attempt_numbers(job.id)
    want = []
    for p in store.procs(job.id):
        row = have.get((p.idx, attempts.get(p.idx, 1)))
        if p.state != ProcState.DONE:
            continue
        if row is None:
            want.append(p.idx)
        elif row.source == WORKER or None in (row.wall_s, row.cpu_s, row.max_rss_kb):
            if wants_accounting(p.outcome, Figures(row.wall_s, row.cpu_s, row.max_rss_kb)):
                want.append(p.idx)
    if not want:
        return 0
    rows = ask(scheduler, [job], {job.id: want}, {job.id: attempts}).get(job.id, [])
    if rows:
        store.put_usage(job.id, rows)
    return len(rows)
