"""Jobs that wait for jobs: the ``after`` edges of a run, checked before it is submitted, and
settled after each poll (a dependent process whose prerequisite failed ends S, never hangs).

The edges live in the job's dpu_options as ``{"jobs": [ids], "mode": "ok"|"any"|"each"}``:
ok waits for every prerequisite process to end N, any for them to end at all, each pairs
process i with process i of each prerequisite (two arrays of the same size and chunking).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import DPUError, OptionError
from .states import Phase, ProcState
from .store import Job, Store

if TYPE_CHECKING:  # the session imports this module
    from .session import DPUSession

log = logging.getLogger(__name__)

MODES = ("ok", "any", "each")
AfterIds = Union[int, Iterable[int], str, None]


def parse_after(after: AfterIds, mode: str = "ok") -> Optional[Dict[str, Any]]:
    """``after`` (an id, ids, or "3,4") and the mode -> the stored edges; None when no after."""
    if after is None or after == [] or after == "":
        return None
    if mode not in MODES:
        raise OptionError(f"after_mode {mode!r} is not one of {', '.join(MODES)} (shell: --after-mode)")
    if isinstance(after, str):
        words = [w.strip() for w in after.split(",") if w.strip()]
        if not all(w.isdigit() for w in words):
            raise OptionError(f"--after takes job identifiers separated by commas, got {after!r}")
        ids = [int(w) for w in words]
    else:
        ids = [after] if isinstance(after, int) else list(after)
    for jid in ids:
        if isinstance(jid, bool) or not isinstance(jid, int):
            raise OptionError(f"after= takes job identifiers (integers), got {jid!r}")
    return {"jobs": sorted(set(ids)), "mode": mode}


def failed(job: Job, store: Store) -> List[Tuple[int, str]]:
    """(index, first letter not N) of each ended process of `job` that did not end N."""
    return [(p.idx, next(c for c in p.outcome if c != "N") if p.outcome.strip("N") else "U")
            for p in store.procs(job.id) if p.state == ProcState.DONE and set(p.outcome) != {"N"}]


def check_after(store: Store, dpu: Any, edges: Optional[Dict[str, Any]], nproc: int) -> None:
    """Refuse edges that cannot be kept: unknown job, other DPU, unsubmitted, a mode this
    scheduler lacks, 'each' between arrays of another size or chunking, ok after a failure."""
    if not edges:
        return
    mode = edges["mode"]
    if dpu.submit == "drmaa":
        raise OptionError(f"after= is not available on DPU {dpu.name!r} (submit: drmaa); submit the "
                          "dependent job after the first one has finished, or use a submit: cli DPU")
    if mode == "each" and dpu.scheduler == "pbs":
        raise OptionError("after_mode='each' needs per-element array dependencies, which PBS does not "
                          "offer; use after_mode='ok' (or 'any') on this DPU")
    known = {j.id: j for j in store.jobs(ids=edges["jobs"])}
    for jid in edges["jobs"]:
        job = known.get(jid)
        if job is None:
            raise OptionError(f"after={jid}: no job with that identifier in your store; "
                              "dpu.get_jobids() (shell: dpu jobids) lists yours")
        if job.dpu != dpu.name:
            raise OptionError(f"after={jid}: job {jid} is on DPU {job.dpu!r}, this run goes to "
                              f"{dpu.name!r}; a job can only wait for jobs on its own DPU")
        if job.phase != Phase.SUBMITTED or not any(job.native_ids):
            raise OptionError(f"after={jid}: job {jid} is not submitted ({job.phase}); "
                              "wait until 'dpu status' shows it queued")
        chunk = int(job.dpu_options.get("chunk") or job.nproc)
        mine = nproc if dpu.scheduler == "local" else dpu.max_array_size
        if mode == "each" and (job.nproc != nproc or (chunk != mine and nproc > min(chunk, mine))):
            raise OptionError(f"after_mode='each' pairs process i with process i of job {jid}: it has "
                              f"{job.nproc} processes in arrays of {chunk}, this run {nproc} in arrays "
                              f"of {mine}; make both the same size or use after_mode='ok'")
        bad = failed(job, store) if mode == "ok" and job.finished is not None else []
        if bad:
            raise OptionError(f"after={jid}: job {jid} has finished and process {bad[0][0]} ended "
                              f"{bad[0][1]}, so this run would never start; rerun job {jid} first "
                              "(dpu.rerun) or use after_mode='any'")


def prerequisites(store: Store, edges: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """What the schedulers and the worker need of each prerequisite: ids, folder, size, chunking;
    a job that has already ended is left out of the native dependency (``pending`` False)."""
    if not edges:
        return []
    out = []
    for job in store.jobs(ids=edges["jobs"]):
        out.append({"job": job.id, "natives": list(job.native_ids), "jobdir": job.jobdir,
                    "nproc": job.nproc, "chunk": int(job.dpu_options.get("chunk") or job.nproc),
                    "pending": job.finished is None})
    return out


def job_json(edges: Optional[Dict[str, Any]], prereqs: List[Dict[str, Any]], check: bool) -> Dict[str, Any]:
    """The ``after`` of job.json: the worker skips its process when a prerequisite failed (check)."""
    if not edges:
        return {}
    return {"after": {"mode": edges["mode"], "check": check and edges["mode"] != "any",
                      "jobs": [{"job": p["job"], "jobdir": p["jobdir"], "nproc": p["nproc"]}
                               for p in prereqs]}}


def for_submit(session: DPUSession, edges: Optional[Dict[str, Any]], nproc: int,
               options: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Check the edges; (what job.json adds for the worker, the SubmitRequest's ``after``).
    The worker checks its prerequisites where the scheduler's dependency does not (SGE's
    -hold_jid waits for the end whatever it was; the local runner; 'each' everywhere).
    A target run's (target.py) dpu `options` hold each process's required work folders
    ("inputs"): taken out for job.json, so the store does not keep them."""
    inputs = options.pop("inputs", None) if options is not None else None
    waits, after = _for_submit(session, edges, nproc)
    return ({**waits, "inputs": inputs} if inputs else waits), after


def _for_submit(session: DPUSession, edges: Optional[Dict[str, Any]],
                nproc: int) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    store, dpu = session.store, session.dpu
    if edges and any(j.finished is None for j in store.jobs(ids=edges["jobs"])):
        # A scheduler forgets ended jobs (SLURM after MinJobAge) and refuses a dependency on
        # one it no longer knows: what has ended is left out, so the store must know it now.
        session.refresh(force=True)
    check_after(store, dpu, edges, nproc)
    if not edges:
        return {}, {}
    pre = prerequisites(store, edges)
    check = not (edges["mode"] == "ok" and dpu.scheduler in ("slurm", "pbs"))
    return job_json(edges, pre, check), {"mode": edges["mode"], "prereqs": pre}


def after_lines(job: Job) -> List[str]:
    """The status lines of a job's edges: ``after job N (ok)``; a target run's job also
    names the earlier jobs whose committed results it reuses (target.py)."""
    edges, uses = job.dpu_options.get("after") or {}, job.dpu_options.get("uses") or []
    return [f"  after job {jid} ({edges['mode']})" for jid in edges.get("jobs", [])] + (
        [f"  reuses committed results of job {', '.join(map(str, uses))}"] if uses else [])


def blocked(store: Store, job: Job) -> Dict[int, str]:
    """Process index -> why it can never run: its prerequisite process (any of them for ok) failed."""
    edges = job.dpu_options.get("after") or {}
    if not edges or edges.get("mode") == "any":
        return {}
    out: Dict[int, str] = {}
    for pre in store.jobs(ids=edges["jobs"]):
        for idx, letter in failed(pre, store):
            why = f"prerequisite job {pre.id} process {idx} ended {letter}"
            if edges["mode"] == "each":
                out.setdefault(idx, why)
            else:
                return {i: why for i in range(job.nproc)}
    return out


def settle(session: DPUSession, polled: Sequence[int]) -> int:
    """After a poll of the jobs `polled` (those active before it): end S the queued processes of
    dependents that can never run (cancelled at the scheduler), and give those the scheduler
    ended itself (SLURM's kill-on-invalid-dep) the reason; the number of processes changed."""
    store, changed = session.store, 0
    if session.scheduler.all_users or not polled:  # the queue page's copy of other users' jobs
        return 0
    never = session.scheduler.never
    for job in store.jobs(ids=polled):
        if not job.dpu_options.get("after"):
            continue
        why = blocked(store, job)
        for idx in never.get(job.id, set()) - set(why):
            why[idx] = "a prerequisite did not end as required (SLURM: DependencyNeverSatisfied)"
        if not why:
            continue
        procs = {p.idx: p for p in store.procs(job.id)}
        queued = [i for i in why if procs[i].state == ProcState.QUEUED]
        if queued:
            whole = len(queued) == sum(p.state != ProcState.DONE for p in procs.values())
            try:  # all that is left of it: the whole job (PBS, the local runner cancel no less)
                if whole:
                    session.scheduler.cancel(replace(job, native_ids=[n for n in job.native_ids if n]), False)
                else:
                    session.scheduler.cancel_indices(job, queued)
            except DPUError as exc:  # the worker skips them anyway when they start
                log.warning("job %s: cancelling processes whose prerequisite failed: %s", job.id, exc)
        fix = [i for i in why if i in queued or (procs[i].state == ProcState.DONE
               and set(procs[i].outcome) == {"S"} and procs[i].reason != why[i])]
        if fix:
            store.update(job.id, [(i, ProcState.DONE, "S" * job.ntasks, why[i], None) for i in fix])
            changed += len(fix)
    return changed


__all__ = ["MODES", "AfterIds", "after_lines", "blocked", "check_after", "failed", "job_json", "parse_after",
           "for_submit", "prerequisites", "settle"]
