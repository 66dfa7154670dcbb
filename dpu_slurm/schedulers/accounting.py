"""Usage figures from a scheduler's accounting: wall time, CPU time and peak memory per process.

The worker measures itself; these fill in when it was killed before it could (time or memory
limit). One parser per accounting format, each reading only what it understands: a figure the
scheduler does not give stays None, never 0.

SLURM: https://slurm.schedmd.com/sacct.html (MaxRSS, ElapsedRaw, TotalCPU);
Grid Engine: accounting(5) (ru_wallclock, cpu, ru_maxrss, maxvmem);
PBS: qstat(1B) ``resources_used.walltime``, ``.cput``, ``.mem``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

from ..store import Job
from .helpers import chunk_owners, number_owners

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}
_AMOUNT = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGTP]?)(I?B?)\s*$", re.IGNORECASE)
# SLURM states of an array task that has ended: only then are its figures final.
SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
               "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}


@dataclass
class Figures:
    """What the accounting says of one ended process; None where it says nothing."""

    wall_s: Optional[float] = None
    cpu_s: Optional[float] = None
    max_rss_kb: Optional[int] = None

    def any(self) -> bool:
        """Whether there is at least one figure."""
        return (self.wall_s, self.cpu_s, self.max_rss_kb) != (None, None, None)


Usage = Dict[int, Dict[int, Figures]]   # job id -> process index -> figures


def amount_bytes(text: str, unit: str = "") -> Optional[float]:
    """'205200K', '1.5G', '204800kb', '210.500M' -> bytes; `unit` for a bare number; None if unreadable."""
    m = _AMOUNT.match(text or "")
    if not m or not text.strip():
        return None
    letter = (m.group(2) or unit).upper()
    return float(m.group(1)) * _UNITS[letter]


def duration(text: str) -> Optional[float]:
    """``[DD-][HH:]MM:SS[.mmm]``, ``12.5s`` or ``12`` -> seconds; None if unreadable."""
    text = (text or "").strip()
    if not text:
        return None
    days = 0.0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = float(head)
    try:
        if ":" in text:
            total = 0.0
            for part in text.split(":"):
                total = total * 60 + float(part)
            return days * 86400 + total
        return days * 86400 + float(text.rstrip("s"))
    except ValueError:
        return None


def _kb(value: Optional[float]) -> Optional[int]:
    return None if value is None else round(value / 1024)


def parse_sacct(jobs: Sequence[Job], text: str) -> Usage:
    """``sacct -P -n -o JobID,State,MaxRSS,ElapsedRaw,TotalCPU`` lines -> figures of ended array
    tasks: wall and CPU from the task's own line, the peak from its largest step (batch, extern)."""
    owners = chunk_owners(jobs)
    out: Usage = {}
    running: Set[Tuple[int, int]] = set()   # (job id, index) of tasks not ended yet: no final figures
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        jobid, state, rss, elapsed, cpu = parts[:5]
        base, _, step = jobid.partition(".")
        array_id, _, task = base.partition("_")
        found = owners.get(array_id)
        if found is None or not task.isdigit():
            continue
        job, offset, _ = found
        figures = out.setdefault(job.id, {}).setdefault(offset + int(task), Figures())
        peak = _kb(amount_bytes(rss, "K"))
        if peak is not None and peak > (figures.max_rss_kb or 0):
            figures.max_rss_kb = peak
        if not step:
            if (state.split() or [""])[0] not in SLURM_ENDED:
                running.add((job.id, offset + int(task)))
            figures.wall_s = float(elapsed) if elapsed.strip().isdigit() else None
            figures.cpu_s = duration(cpu) or None  # 0: not gathered (a killed step), not idle
    return {j: {i: f for i, f in procs.items() if f.any() and (j, i) not in running}
            for j, procs in out.items()}


def qacct_figures(record: Dict[str, str]) -> Figures:
    """One ``qacct -j`` record's figures. Grid Engine prints ru_maxrss (KB) with byte units
    ('14.402KB' is 14402 KB); maxvmem (bytes) is the fallback when the host reports no maxrss."""
    rss = amount_bytes(record.get("ru_maxrss", ""))
    peak = round(rss) if rss else None
    if not peak:
        peak = _kb(amount_bytes(record.get("maxvmem", ""))) or None
    return Figures(duration(record.get("ru_wallclock", "")), duration(record.get("cpu", "")), peak)


def parse_qacct_usage(jobs: Sequence[Job], records: Iterable[Dict[str, str]]) -> Usage:
    """qacct records -> figures of the processes of these jobs."""
    own = number_owners(jobs)
    out: Usage = {}
    for record in records:
        found = own.get(record.get("jobnumber", ""))
        if found is None:
            continue
        job, offset, count = found
        task = (record.get("taskid") or "undefined").strip()
        index = int(task) if task.isdigit() else 1
        figures = qacct_figures(record)
        if 1 <= index <= count and figures.any():
            out.setdefault(job.id, {})[offset + index - 1] = figures
    return out


def pbs_figures(block: Dict[str, str]) -> Figures:
    """A ``qstat -f`` block's resources_used (mem in kb unless a unit says otherwise)."""
    mem = amount_bytes(block.get("resources_used.mem", ""), "K")
    return Figures(duration(block.get("resources_used.walltime", "")),
                   duration(block.get("resources_used.cput", "")), _kb(mem))
