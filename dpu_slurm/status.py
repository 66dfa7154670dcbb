"""Polling: one scheduler call for all active jobs of a DPU, merged with the workers' own records.

Per process, the worker's final status record is the truth; what the scheduler says fills in
when the worker could not write one (killed, never started, node lost).
"""
from __future__ import annotations

import bisect
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .config import DPUConfig
from .reconcile import found_chunks, nchunks, reconcile, submitter_alive
from .schedulers.accounting import Figures
from .schedulers.base import ENDED, Observation, Scheduler
from .schedulers.ranges import as_seen
from .states import JobStatus, ObsState, Phase, ProcState
from .store import Job, Proc, Store
from .text import printable
from .transport.base import Records
from .usage import record_usage, worker_figures
from .worker import STATUS

log = logging.getLogger(__name__)

DONE, QUEUED, RUNNING = ProcState.DONE, ProcState.QUEUED, ProcState.RUNNING
Change = Tuple[int, str, str, str, Optional[float]]


@dataclass
class Record:
    """A worker's status.json."""

    state: str                  # RUNNING or DONE
    tasks: List[Optional[str]]  # per task: None (not started), RUNNING, or a letter
    reason: str = ""
    usage: Optional[Figures] = None  # the worker's own figures, in its final record
    attempt: int = 1                 # the attempt this record is of (requeue.py)
    requeues: List[List[Any]] = field(default_factory=list)  # earlier attempts the scheduler requeued
    requeued: bool = False           # between two attempts: the next one has not started yet


def poll_settings(dpu: DPUConfig) -> Tuple[float, float, float]:
    """(min interval, max interval, grace) in seconds; the local DPU is cheap to poll."""
    cheap = dpu.scheduler == "local" and not dpu.is_remote
    poll = dpu.poll
    return (float(poll.get("min_interval", 0.0 if cheap else 5.0)),
            float(poll.get("max_interval", 0.0 if cheap else 60.0)),
            float(poll.get("grace", 30.0)))


def due(store: Store, dpu: DPUConfig, now: float) -> bool:
    """Whether the back-off allows a scheduler call now (shared by every client of this store)."""
    last = float(store.meta_get(f"poll:{dpu.name}:last") or 0)
    interval = float(store.meta_get(f"poll:{dpu.name}:interval") or 0)
    return now - last >= interval


def _backoff(store: Store, dpu: DPUConfig, changed: bool, now: float) -> None:
    low, high, _ = poll_settings(dpu)
    old = float(store.meta_get(f"poll:{dpu.name}:interval") or low)
    interval = low if changed else min(high, max(low, old * 2 if old else low))
    store.meta_set(f"poll:{dpu.name}:last", repr(now))
    store.meta_set(f"poll:{dpu.name}:interval", repr(interval))


def refresh(store: Store, scheduler: Scheduler, dpu: DPUConfig, force: bool = False) -> bool:
    """Bring the store up to date for the DPU's active jobs; False when the back-off said wait.
    Jobs left 'recorded' by a submitter that stopped are settled in the same poll (reconcile.py)."""
    now = time.time()
    active = store.jobs(dpu=dpu.name, active=True)
    if not active or (not force and not due(store, dpu, now)):
        return False
    jobs = [j for j in active if j.phase == Phase.SUBMITTED]
    ended: List[Tuple[Job, int, str]] = []  # (job, index, outcome) of processes ending in this poll
    recorded = [j for j in active if j.phase == Phase.RECORDED]
    opened = {j.id: store.open_indices(j.id) for j in active}
    # A recorded job's folder is asked for every process: a record there means it ran.
    wanted: Records = {j.jobdir: opened[j.id] for j in active if j.jobdir}
    # ONE round trip: the scheduler's status command and every started process's record.
    # A job recorded without a folder was stopped before anything reached the DPU: the poll
    # has nothing to look at for it (reconcile gives it up after the grace).
    polled = [j for j in active if j.jobdir]
    request = scheduler.poll_request(polled)
    got = scheduler.transport.gather(request.argv, request.files, wanted, STATUS)
    observed = scheduler.parse_poll(polled, got)
    # Each record parsed once: (job id, index) -> what the worker wrote.
    by_dir = {j.jobdir: j for j in active if j.jobdir}
    records = {(by_dir[d].id, i): _parse(data) for (d, i), data in got.records.items() if d in by_dir}
    _, _, grace = poll_settings(dpu)
    ran_by_job: Dict[int, List[int]] = {}
    for job_id, idx in records:
        ran_by_job.setdefault(job_id, []).append(idx)
    changed = _follow_requeues(store, records)
    open_procs = {j.id: candidates(store, j.id, opened[j.id], observed.get(j.id), ran_by_job.get(j.id, []))
                  for j in active}

    def missing_since(job: Job, proc: Proc) -> Optional[float]:
        """When nobody knew this process first (None: the scheduler or a final record does).
        A just-submitted process not yet listed, accounting or a shared file system that lag:
        nothing is concluded before the grace has passed."""
        record = records.get((job.id, proc.idx))
        if proc.idx in observed.get(job.id, {}) or (record is not None and record.state == DONE):
            return None
        return proc.missing if proc.missing is not None else now

    def overdue(since: Optional[float]) -> bool:
        return since is not None and now - since >= grace

    # Accounting is asked (one more call) only about processes missing for longer than the
    # grace, and about recorded jobs the poll did not find whole once the grace has passed.
    late = [job for job in jobs if any(overdue(missing_since(job, p)) for p in open_procs[job.id])]
    late += [job for job in recorded if job.jobdir and now - job.created >= grace
             and not submitter_alive(job.error)
             and len(found_chunks(job, scheduler.names, ran_by_job.get(job.id, []))) < nchunks(job)]
    if late:
        for job_id, seen in scheduler.history(late).items():
            observed[job_id] = as_seen(observed.get(job_id)).merged(seen, keep=True)
    if recorded:
        adopted, settled = reconcile(store, recorded, scheduler.names, records, now, grace, dpu.name)
        changed = settled > 0
        if adopted:
            for job_id, seen in scheduler.reparse(adopted, got).items():
                observed[job_id] = as_seen(observed.get(job_id)).merged(seen)
            for job in adopted:
                open_procs[job.id] = candidates(store, job.id, store.open_indices(job.id),
                                                observed.get(job.id), ran_by_job.get(job.id, []))
            jobs += adopted
    for job in jobs:
        seen = observed.get(job.id, {})
        changes: List[Change] = []
        for proc in open_procs[job.id]:
            record = records.get((job.id, proc.idx))
            since = missing_since(job, proc)
            state, outcome, reason = decide(seen.get(proc.idx), record, job.ntasks, not overdue(since),
                                            job.cancelled is not None)
            if (state, outcome, reason, since) != (proc.state, proc.outcome, proc.reason, proc.missing):
                changes.append((proc.idx, state, outcome, reason, since))
        if changes:
            changed = True
            store.update(job.id, changes)
            ended += [(job, c[0], c[2]) for c in changes if c[1] == DONE]
    if ended:  # their figures: the workers' own, the scheduler's accounting for killed ones
        record_usage(store, scheduler, ended, {k: r.usage for k, r in records.items() if r and r.usage})
    _backoff(store, dpu, changed, now)
    return True


def _follow_requeues(store: Store, records: Dict[Tuple[int, int], Optional[Record]]) -> bool:
    """Requeued processes' attempts into the store (their history shows with show_attempts)."""
    by_job: Dict[int, Dict[int, Tuple[int, List[List[Any]]]]] = {}
    for (job_id, idx), rec in records.items():
        if rec is not None and rec.requeues:
            by_job.setdefault(job_id, {})[idx] = (rec.attempt, rec.requeues)
    return sum(store.follow_requeues(job_id, seen) for job_id, seen in by_job.items()) > 0


def candidates(store: Store, job_id: int, opened: List[int], seen: Optional[Dict[int, Observation]],
               ran: List[int]) -> List[Proc]:
    """The open processes whose state may have changed: all but those stored as plainly queued
    that the scheduler still lists in a queued range (they stay queued whatever else is true:
    no record was found for them). What the poll costs grows with what changed, not with the job."""
    busy = store.busy_rows(job_id)
    listed = as_seen(seen)
    picked = set(listed.unranged(opened)).union(busy, ran)
    picked.update(i for i in listed if _holds(opened, i))  # single entries inside a range
    return [Proc(*busy[i]) if i in busy else Proc(i, QUEUED, "", "", None) for i in sorted(picked)]


def _holds(ordered: List[int], value: int) -> bool:
    at = bisect.bisect_left(ordered, value)
    return at < len(ordered) and ordered[at] == value


def _parse(raw: Optional[bytes]) -> Optional[Record]:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        tasks, reason = data["tasks"], data.get("reason", "")
        # Typed before use: the queue page also reads records from other users' folders.
        if not isinstance(data["state"], str) or not isinstance(tasks, list) \
                or not all(t is None or isinstance(t, str) for t in tasks) or not isinstance(reason, str):
            raise TypeError("a field of the wrong type")
        attempt, requeues = data.get("attempt", 1), data.get("requeues") or []
        if not _count(attempt) or not 1 <= attempt <= 10_000 or not isinstance(requeues, list) \
                or len(requeues) > 1000 or not all(_requeue_row(r) for r in requeues) \
                or [r[0] for r in requeues] != sorted({r[0] for r in requeues}) \
                or (requeues and requeues[-1][0] >= attempt) \
                or (data.get("requeued") is True and data["state"] == DONE):
            # earlier attempts come once each, in order, before this one (red13b: an attempt 7
            # of a process at attempt 3 went to the history)
            raise TypeError("attempt or requeues of the wrong type")
        return Record(data["state"], list(tasks), reason[:2000], worker_figures(data.get("usage")),
                      attempt, [[r[0], r[1][:50], printable(r[2], 2000), r[3]] for r in requeues],
                      data.get("requeued") is True)
    except (ValueError, KeyError, TypeError, OverflowError):
        log.warning("unreadable worker status record; ignoring it")
        return None


def _count(value: Any) -> bool:
    """An int that is not a bool (JSON true would pass as attempt 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _requeue_row(row: Any) -> bool:
    """[attempt, letters, reason, ended or None], typed (a record is a claim until checked)."""
    return isinstance(row, list) and len(row) == 4 and _count(row[0]) and 1 <= row[0] <= 10_000 \
        and isinstance(row[1], str) and set(row[1]) <= set("NEASU") and isinstance(row[2], str) \
        and (row[3] is None or (isinstance(row[3], (int, float)) and not isinstance(row[3], bool)
                                and 0 <= row[3] < 1e11))


def decide(obs: Optional[Observation], record: Optional[Record], ntasks: int,
           young: bool, cancelled: bool = False) -> Tuple[str, str, str]:
    """(state, outcome letters, reason) of one process from the scheduler and the worker."""
    if record is not None and record.state == DONE:
        letters = "".join(t if t in ("N", "E", "A", "S") else "S" for t in record.tasks)
        # A worker killed by the scheduler knows only that; the scheduler knows why (TIMEOUT...).
        better = obs is not None and obs.state == ENDED and obs.letter == "A" and "A" in letters
        if better and obs is not None:
            return DONE, letters, obs.reason
        if cancelled and "A" in letters and "TIMEOUT" not in record.reason:
            return DONE, letters, "cancelled while running"
        return DONE, letters, record.reason
    # A process the scheduler requeued (requeue.py) is queued again until its next run starts.
    started = record is not None and not record.requeued
    if obs is not None and obs.state == ObsState.RUNNING:
        return RUNNING, "", ""
    if obs is not None and obs.state == ObsState.QUEUED:
        return (RUNNING if started else QUEUED), "", ""
    if obs is None:
        if cancelled:  # the user cancelled and the scheduler dropped it: we know why
            if record is None:
                return DONE, "S" * ntasks, "cancelled while queued"
            return DONE, _fill(record, ntasks, "A", "S"), "cancelled while running"
        if young:
            return (RUNNING if started else QUEUED), "", ""
        reason = "the scheduler no longer knows this process and its worker wrote no final status"
        return DONE, _fill(record, ntasks, "U", "U"), reason
    # The scheduler says it ended, but the worker did not finish its record.
    if obs.letter == "S":  # cancelled: skipped if it never started, aborted if it had
        if record is None:
            return DONE, "S" * ntasks, obs.reason
        return DONE, _fill(record, ntasks, "A", "S"), obs.reason
    if obs.letter == "N":  # "completed" with no record from the worker: cannot tell
        return DONE, _fill(record, ntasks, "U", "U"), f"{obs.reason}; the worker wrote no final status"
    letter = obs.letter if obs.letter in ("E", "A", "U") else "A"
    return DONE, _fill(record, ntasks, letter, "S" if letter != "U" else "U"), obs.reason


def _fill(record: Optional[Record], ntasks: int, current: str, rest: str) -> str:
    """Finished tasks keep their letter; the one that was running gets `current`, later ones `rest`."""
    tasks = list(record.tasks) if record is not None else [None] * ntasks
    tasks += [None] * (ntasks - len(tasks))
    out = []
    placed = False
    for t in tasks[:ntasks]:
        if t in ("N", "E", "A", "S"):
            out.append(str(t))
        elif not placed:
            out.append(current)
            placed = True
        else:
            out.append(rest)
    return "".join(out)


def job_status(counts_done: int, running: int, nproc: int) -> JobStatus:
    """QUEUED (nothing started), RUNNING (something started), FINISHED (every process ended)."""
    if counts_done == nproc:
        return JobStatus.FINISHED
    if running or counts_done:
        return JobStatus.RUNNING
    return JobStatus.QUEUED

