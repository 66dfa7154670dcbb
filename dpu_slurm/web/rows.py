"""What the page shows of one job: a Row (no paths), its processes' attempts, and the masking
of paths in texts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from ..store import LETTERS, Proc
from ..store_attempts import Attempt
from ..text import clean


@dataclass
class Row:
    """One job as the page shows it: no paths, nothing but what the table and job page need."""

    key: str
    job_id: int
    user: str
    sequence: str
    options: Dict[str, Any]
    status: str
    ok: bool
    counters: Tuple[int, ...]
    processes: int
    queued: int
    running: int
    submitted: float
    started: Optional[float]
    ended: Optional[float]
    after: Optional[Dict[str, Any]] = None   # the jobs this one waits for (index.Card.after)

    def running_time(self, now: float) -> Optional[float]:
        """Seconds the job has run (until it ended), or None before it started."""
        if self.started is None:
            return None
        return max(0.0, (self.ended or now) - self.started)

    def summary(self) -> str:
        """The options that say something, for the table (the job page shows all of them)."""
        return " ".join(f"{k}={v}" for k, v in self.options.items() if v not in (None, "", {}, [], False))

    def to_json(self, now: float) -> Dict[str, Any]:
        """The row as the page's JSON."""
        return {"key": self.key, "url": job_url(self.key), "jobid": self.job_id, "user": self.user,
                "sequence": self.sequence, "options": self.options, "summary": self.summary(),
                "status": self.status, "ok": self.ok,
                "counters": dict(zip(LETTERS, self.counters, strict=True)),
                "processes": self.processes, "queued": self.queued, "running": self.running,
                "submitted": self.submitted, "started": self.started, "ended": self.ended,
                "running_time": self.running_time(now), "after": self.edges()}

    def edges(self) -> List[Dict[str, Any]]:
        """The jobs this one waits for, each with its page (the same user's store): jobid, url, mode."""
        after, store = self.after or {}, self.key.rsplit(".", 1)[-1]
        return [{"jobid": jid, "url": job_url(f"{self.user}/{jid}.{store}"), "mode": after["mode"]}
                for jid in after.get("jobs", [])]


def job_url(key: str) -> str:
    """The job page's path for a job key."""
    return "/job/" + quote(key, safe="/")


def masked(value: Any, mask: Callable[[str], str]) -> Any:
    """`value` with `mask` applied to every text in it (lists and mappings walked)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: masked(v, mask) for k, v in value.items()}
    return value


def masker(jobdir: str) -> Callable[[str], str]:
    """Hide where a user keeps their jobs: the workdir (which names them) becomes $WORKDIR."""
    workdir = jobdir.rsplit("/jobs/", 1)[0] if "/jobs/" in jobdir else jobdir

    def mask(text: str) -> str:
        return text.replace(jobdir, "$JOBDIR").replace(workdir, "$WORKDIR") if workdir else text
    return mask


def process_rows(procs: Sequence[Proc], logs: Dict[int, List[str]], current: Dict[int, int],
                 history: Sequence[Attempt], mask: Callable[[str], str]
                 ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The job page's processes (with their current attempt) and their earlier attempts, the
    reasons masked like every text of the page."""
    rows = [{"index": p.idx, "attempt": current.get(p.idx, 1), "state": p.state, "outcome": p.outcome,
             "reason": clean(mask(p.reason)), "log": logs.get(p.idx)} for p in procs]
    earlier = [{"index": i, "attempt": a, "outcome": o, "reason": clean(mask(r or ""))}
               for i, a, o, r, _ in history if a < current.get(i, 1)]
    return rows, earlier
