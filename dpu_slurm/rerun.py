"""Rerunning what failed: the processes of a finished job whose outcome matches, resubmitted as
one array of exactly those indices under the same DPU job id, each with a new attempt number.

A process matches ``only`` when any of its task letters is in ``only`` (a process N/E matches
``only="E"``; N/N matches only ``"N"``). The earlier attempt's outcome goes to the store's
attempt history and its worker records to ``p/<idx>/attempt-<n>/`` before anything is queued, so
a stale final record is never read as the new attempt's outcome. The rerun is recorded like a
submit (phase 'recorded', its own tag ``...r<k>``, native ids stored per accepted chunk): a
submitter killed mid-rerun is settled by the next poll (reconcile.py), and a refused rerun gives
the processes back their previous attempt.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Collection, List, Optional, Tuple

from . import regrow
from .errors import ConfigError, DPUError, RerunRefused, SubmitError
from .index import earlier_of, write_card
from .reconcile import fault, submitter_note
from .schedulers import SubmitRequest
from .schedulers.helpers import chunk_size
from .states import Phase
from .store import LETTERS, Job
from .worker import LOG, RESULT, STATUS

if TYPE_CHECKING:  # pragma: no cover
    from .session import DPUSession

log = logging.getLogger(__name__)

# Moves the records of each process folder given as IDX:ATTEMPT into attempt-ATTEMPT/ (argv
# only: no value is ever part of the script's text).
_MOVE = ('cd "$1" || exit 1; shift; for pair; do d="p/${pair%%:*}"; a="$d/attempt-${pair#*:}"; '
         f'[ -d "$d" ] || continue; mkdir -p "$a" || exit 1; for f in {STATUS} {RESULT} {LOG}; do '
         '[ -e "$d/$f" ] && { mv -f "$d/$f" "$a/$f" || exit 1; }; done; done; exit 0')


_MOVE_JOB = ('cd "$1" || exit 1; d="$2"; shift 2; mkdir -p "$d" || exit 1; for f; do [ -e "$f" ] && '
             '{ mv -f "$f" "$d/$f" || exit 1; }; done; exit 0')


def check_only(only: str) -> str:
    """The letters asked for, upper case; RerunRefused for anything but N, E, A, S, U."""
    letters = str(only or "").upper()
    bad = sorted(set(letters) - set(LETTERS))
    if not letters or bad:
        raise RerunRefused(f"only={only!r}: give letters among N, E, A, S, U (e.g. only='EAU', shell: "
                           f"--only EAU){'; not ' + ', '.join(bad) if bad else ''}")
    return letters


def _factor(value: Optional[float], what: str) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise RerunRefused(f"{what}={value!r}: give a factor above 0 and at most 100 (e.g. 2)")
    return float(value)


def rerun(session: DPUSession, job: Job, only: str = "EAU", time_factor: Optional[float] = None,
          mem_factor: Optional[float] = None, auto: bool = False,
          among: Optional[Collection[int]] = None, clamp: bool = False) -> Tuple[int, List[int]]:
    """Resubmit the processes of a finished `job` with an outcome letter in `only` (and index in
    `among` when given); returns (this submission's number, the indices resubmitted).
    `auto`: more time/memory for what processes ran into (regrow.py); `clamp`: cap the growth
    at the DPU's largest partition instead of refusing. RerunRefused when it cannot."""
    letters = check_only(only)
    for value, what in ((time_factor, "time_factor"), (mem_factor, "mem_factor")):
        _factor(value, what)  # checked before anything else, so a bad one changes nothing
    if job.phase == Phase.NOT_SUBMITTED:
        raise RerunRefused(f"job {job.id} was never submitted ({job.error}); run it again instead")
    if not session.scheduler.RERUN:
        raise RerunRefused(f"rerun is not yet supported on {session.scheduler.name} (DPU "
                           f"{session.dpu.name}); run the failed part again as a new job")
    if job.finished is None:
        session.refresh(force=True)
        job = session.store.job(job.id)
    if job.finished is None or job.phase != Phase.SUBMITTED:
        raise RerunRefused(f"job {job.id} is not finished yet; wait for it (dpu.wait({job.id}), shell: "
                           f"dpu wait {job.id}) and rerun it then")
    old = dict(job.dpu_options)
    if not old.get("pythonpath"):
        raise RerunRefused(f"job {job.id} was submitted by an older dpu_slurm that did not keep what "
                           "a rerun needs; run it again as a new job")
    procs = session.store.procs(job.id)
    chosen = [p for p in procs if set(p.outcome) & set(letters) and (among is None or p.idx in among)]
    indices = [p.idx for p in chosen]
    if not indices:
        seen = "".join(sorted({x for p in procs for x in p.outcome}))
        raise RerunRefused(f"nothing to rerun: no process of job {job.id} has a task ending "
                           f"{'/'.join(letters)} (its tasks ended {'/'.join(seen) or 'nothing'})")
    number = int(old.get("rerun") or 1) + 1
    if auto:
        time_factor, mem_factor = regrow.auto_factors(session.dpu, chosen, int(old["time_limit"]),
                                                      int(old["mem"]), time_factor, mem_factor)
    limits = regrow.grow(session.dpu, int(old["time_limit"]), int(old["mem"]),
                         _factor(time_factor, "time_factor"), _factor(mem_factor, "mem_factor"),
                         old.get("partition"), clamp or auto)
    time_limit, mem = limits.time_limit, limits.mem
    parts = session.scheduler.rerun_chunks(indices)
    natives = dict(old.get("natives") or {})
    natives[str(number - 1)] = list(job.native_ids)  # every submission's ids stay known
    new = {**{k: v for k, v in old.items() if k != "previous"}, "rerun": number, "time_limit": time_limit,
           "mem": mem, "partition": limits.partition, "grown": "; ".join(limits.notes),
           "layout": [[o, ids] for o, ids in parts], "rerun_at": time.time(),
           "natives": natives, "previous": {k: v for k, v in old.items() if k != "previous"}}
    attempts = session.store.attempt_numbers(job.id)
    session.scheduler.before_rerun(job)   # e.g. the local runner of the last run has exited
    # First the old records aside (a kill here loses nothing: the store still has the outcome):
    # the processes' and the scheduler's own job files (a local runner's states) of the last run.
    moves = [["sh", "-c", _MOVE_JOB, "sh", job.jobdir, f"run-{number - 1}", *session.scheduler.RERUN_STALE]]
    for start in range(0, len(indices), 500):
        moves.append(["sh", "-c", _MOVE, "sh", job.jobdir,
                      *[f"{i}:{attempts.get(i, 1)}" for i in indices[start:start + 500]]])
    for argv in moves:
        res = session.transport.run(argv)
        if res.returncode != 0:
            raise DPUError(f"job {job.id}: could not keep the earlier attempts' records in "
                           f"{job.jobdir} ({(res.stderr or res.stdout).strip()}); nothing was resubmitted")
    if not session.store.begin_rerun(job.id, indices, new, submitter_note(), number - 1):
        raise RerunRefused(f"job {job.id} changed meanwhile (another dpu started it again); "
                           "look at dpu.get_status() and rerun it then")
    fault("record")

    def accepted(ids: List[str]) -> None:
        fault("accepted")
        session.store.accepted(job.id, ids)
        fault("chunk")
    req = SubmitRequest(job_id=job.id, user=job.user, dpu=job.dpu, sequence=job.sequence,
                        jobdir=job.jobdir, nproc=job.nproc, time_limit=time_limit, mem=mem,
                        partition=limits.partition, python=session.dpu.python_for_jobs(),
                        pythonpath=str(old["pythonpath"]), setup=list(old.get("setup") or []),
                        env=dict(session.dpu.env), store=str(old.get("store") or ""),
                        accepted=accepted,
                        indices=indices, rerun=number)
    try:
        native = session.scheduler.submit(req)
    except SubmitError as exc:  # refused: nothing queued; the processes keep their last attempt
        session.store.undo_rerun(job.id, indices, old, job.native_ids, job.finished)
        raise SubmitError(f"the rerun of job {job.id} was not submitted: {exc}; its processes keep "
                          "their earlier outcome", exc.transient) from None
    except BaseException as exc:
        why = str(exc) if isinstance(exc, DPUError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        if isinstance(exc, ConfigError):
            session.store.undo_rerun(job.id, indices, old, job.native_ids, job.finished)
        else:  # the scheduler may hold some of it: the next poll adopts it by its tag or ends it S
            session.store.note(job.id, f"rerun interrupted ({why}); the next poll adopts what the "
                                       "scheduler holds under its tag or ends those processes S")
        raise
    session.store.submitted(job.id, native)
    fault("stored")
    # The queue page maps a card's ids to chunks by position: each id at its chunk's place
    # (reruns that split a chunk, as Grid Engine's runs do, keep the first card: see README).
    size, now = chunk_size(job), session.store.job(job.id)
    places = [offset // size for offset, _ in parts]
    if all(o % size == 0 for o, _ in parts) and len(set(places)) == len(places):
        spots = [""] * (max(places) + 1)
        for place, native_id in zip(places, native, strict=False):
            spots[place] = native_id
        write_card(session.transport, session.dpu, replace(now, native_ids=spots),
                   str(old.get("store") or ""), earlier_of(session.store.attempts(job.id)))
    return number, indices


def history_lines(session: DPUSession, job: Job) -> List[str]:
    """The attempts of each process of `job` that has more than one, as printed lines."""
    rows = session.store.attempts(job.id)
    many = {i for i, a, *_ in rows if a > 1}
    lines = []
    for idx in sorted(many):
        mine = [r for r in rows if r[0] == idx]
        parts = [f"attempt {a} {o or '(running)'}" + (f" ({r})" if r and o and set(o) != {"N"} else "")
                 for _, a, o, r, _ in mine]
        lines.append(f"  process {idx}: " + "; ".join(parts))
    return lines or [f"  job {job.id}: no process was rerun (every process is at attempt 1)"]
