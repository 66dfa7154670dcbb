"""Applying a job's retry policy (retry_policy.py) after a poll, by whoever polls: the prompt's
get_status/wait, cron's ``dpu status``, the queue page's refresh.

Each finished submission of a job is retried at most once: the store's claim (store_retries.py)
lets exactly one of several pollers have it, and the rerun itself starts only if the job is
still at that submission (begin_rerun). A claim whose poller died before the rerun began is
taken over after STALE seconds; a job that finished more than WINDOW ago is left alone. A
process is retried while its attempt number is at most the policy's ``max``; each retry grows
the time and memory by the policy's factors, capped at the DPU's largest partition (regrow.py).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List

from .errors import DPUError, SubmitError, Unreachable
from .reconcile import submitter_note
from .rerun import rerun
from .retry_policy import describe
from .store import Job, Store

if TYPE_CHECKING:  # pragma: no cover
    from .session import DPUSession

log = logging.getLogger(__name__)

STALE = 600.0  # seconds after which an unfinished claim is taken over (its poller died)
WINDOW = 7 * 86400.0  # a job that finished longer ago is not retried any more


def submission(job: Job) -> int:
    """Which submission of the job its processes' current outcomes come from (1: the first)."""
    return int(job.dpu_options.get("rerun") or 1)


def due(store: Store, job: Job, policy: Dict[str, Any]) -> List[int]:
    """The processes the policy retries now: an outcome letter in `on`, attempt at most `max`."""
    attempts = store.attempt_numbers(job.id)
    return [p.idx for p in store.procs(job.id)
            if set(p.outcome) & set(policy["on"]) and attempts.get(p.idx, 1) <= int(policy["max"])]


def apply_retries(session: DPUSession) -> List[str]:
    """Retry the failed processes of this DPU's finished jobs whose policy asks for it; the
    lines to show the user (one per job retried or that could not be)."""
    store, lines = session.store, []
    for job_id in store.retry_candidates(session.dpu.name, STALE, time.time() - WINDOW):
        job = store.job(job_id)
        policy, seen = job.dpu_options.get("retries") or {}, submission(job)
        if not store.claim_retry(job.id, seen, submitter_note(), STALE):
            continue  # another poller has it, or the job moved on meanwhile
        among = due(store, job, policy)
        if not among:
            store.retry_done(job.id, seen, 0, "nothing to retry")
            continue
        try:
            number, indices = rerun(session, store.job(job.id), policy["on"], policy["grow_time"],
                                    policy["grow_mem"], among=set(among), clamp=True)
        except (SubmitError, Unreachable) as exc:
            if isinstance(exc, Unreachable) or exc.transient:  # busy or away: the next poll tries again
                store.release_retry(job.id, seen)
            else:
                store.retry_done(job.id, seen, 0, f"not retried: {exc}")
            lines.append(f"Job {job.id}: the retry was not submitted ({exc})")
            continue
        except DPUError as exc:
            store.retry_done(job.id, seen, 0, f"not retried: {exc}")
            lines.append(f"Job {job.id}: not retried: {exc}")
            continue
        store.retry_done(job.id, seen, len(indices), f"submission {number}")
        grown = store.job(job.id).dpu_options
        lines.append(f"Job {job.id}: retrying {len(indices)} process(es) ({_few(indices)}), "
                     f"{grown['time_limit']} s and {grown['mem']} MB each"
                     + (f"; {grown['grown']}" if grown.get("grown") else ""))
        log.info("job %s: retry submitted for %s process(es)", job.id, len(indices))
    return lines


def retry_lines(store: Store, job: Job) -> List[str]:
    """What the job's retry policy did so far, as status lines ([] without a policy)."""
    policy = job.dpu_options.get("retries") or {}
    if not policy:
        return []
    used = store.retries_used(job.id)
    out = [f"  retries: {sum(1 for _, n, _ in used if n)} used ({describe(policy)})"]
    return out + [f"  retry of submission {s}: {note}" for s, n, note in used
                  if not n and note.startswith("not retried")]


def _few(indices: List[int]) -> str:
    shown = ", ".join(map(str, indices[:10]))
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")
