"""Jobs whose submitter stopped mid-submit (kill -9, Ctrl-C, a crash) are settled by the next poll.

A job is recorded with its tag and job folder before the scheduler is called, and each chunk's
native id is stored as soon as the scheduler accepts it. A job still 'recorded' at a poll is
looked up by its tag among the job names of that same poll (and of the accounting when it already
left the queue), and by its workers' records (a status.json means the process ran). Found: it is
adopted (phase submitted, native ids in chunk order); chunks nothing carries end S with a reason.
Nothing found once the grace (poll.grace) has passed since the record: not submitted, with why.
While the submitting process is alive on this host, a job still in submission is left to it.
"""
from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from .schedulers.base import chunk_tag, tag_of, tagged
from .schedulers.helpers import layout
from .store import Job, Store

SUBMITTING = "submitting:"
_NOTE = re.compile(r"^submitting: pid (\d+) on (\S+) started (\S+)$")


def fault(step: str) -> None:
    """Fault drill for tests only: DPU_FAULT=<step>[:<SIGNAL>] sends this process the signal
    (default KILL) at that step of a submit or a rerun (record, shipped, accepted, chunk, stored),
    so a test can kill a submitter at an exact point. Unset, as everywhere but in tests: nothing."""
    wanted = os.environ.get("DPU_FAULT")
    if not wanted:
        return
    name, _, sig = wanted.partition(":")
    if name == step:
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))


def process_start(pid: int) -> Optional[str]:
    """A process's start time in clock ticks since boot (with its pid, its identity); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def submitter_note() -> str:
    """The note a recorded job carries while this process submits it."""
    pid = os.getpid()
    if pid not in _NOTES:   # a process's start time never changes: read /proc once
        _NOTES[pid] = f"{SUBMITTING} pid {pid} on {socket.gethostname()} started {process_start(pid) or '?'}"
    return _NOTES[pid]


_NOTES: Dict[int, str] = {}


def submitter_alive(note: str) -> bool:
    """Whether the process named by the note still runs (only knowable on the same host)."""
    m = _NOTE.match(note)
    if m is None:
        return False
    pid, host, start = m.groups()
    return host == socket.gethostname() and start != "?" and process_start(int(pid)) == start


def found_chunks(job: Job, names: Mapping[str, str], ran: Iterable[int]) -> Dict[int, str]:
    """Chunk index -> native id ('' when only a worker's record shows the chunk ran)."""
    chunk_of = {i: k for k, (_, ids) in enumerate(layout(job)) for i in ids}
    out = {k: n for k, n in enumerate(job.native_ids) if n}
    for k, native in tagged([job], names).get(job.id, {}).items():
        out.setdefault(k, native)
    for idx in ran:
        if idx in chunk_of:
            out.setdefault(chunk_of[idx], "")
    return out


def nchunks(job: Job) -> int:
    """How many chunks (array jobs) the job (its current attempt) was split into."""
    return len(layout(job))


def waiting(job: Job, names: Mapping[str, str], ran: Iterable[int], now: float, grace: float) -> bool:
    """Whether the job must be left as it is for now: incomplete, within the grace, or its
    submitter still at work."""
    if len(found_chunks(job, names, ran)) >= nchunks(job):
        return False
    recorded = float(job.dpu_options.get("rerun_at") or job.created)  # a rerun: its own record
    return now - recorded < grace or submitter_alive(job.error)


def reconcile(store: Store, jobs: List[Job], names: Mapping[str, str],
              records: Iterable[Tuple[int, int]], now: float, grace: float,
              dpu: str) -> Tuple[List[Job], int]:
    """Settle these recorded jobs: (the adopted ones as now stored, how many were settled)."""
    ran: Dict[int, Set[int]] = {}
    for job_id, idx in records:
        ran.setdefault(job_id, set()).add(idx)
    adopted: List[int] = []
    settled = 0
    for job in jobs:
        started = ran.get(job.id, set())
        if waiting(job, names, started, now, grace):
            continue
        have = found_chunks(job, names, started)
        tag = tag_of(job)
        rerun = int(job.dpu_options.get("rerun") or 1) > 1  # a rerun keeps its earlier attempts
        if not have and not rerun:
            settled += store.given_up(job.id, _not_submitted(job, tag, grace, dpu))
            continue
        parts = layout(job)
        n = len(parts)
        never = [i for k in range(n) if k not in have for i in parts[k][1]]
        reason = ("never submitted: the submission stopped before this part reached the scheduler "
                  f"(nothing on DPU {dpu} carries its tag)")
        if store.adopt(job.id, [have.get(k, "") for k in range(n)], never, reason):
            adopted.append(job.id)
            settled += 1
    return (store.jobs(ids=adopted) if adopted else []), settled


def _not_submitted(job: Job, tag: str, grace: float, dpu: str) -> str:
    if job.error.startswith(SUBMITTING):
        why = "the process that submitted it stopped before the scheduler accepted it"
    else:
        why = job.error or "its submission stopped"
    return (f"not submitted: {why}; {grace:g} s after it was recorded nothing on DPU {dpu} carries "
            f"its tag {chunk_tag(tag, 0)}. Run it again if you still need it")
