"""``dpu report JOBID``: how well a job's processes used what they asked for.

Per job (its sequence runs whole in each process): time used / asked, memory used / asked, CPU
efficiency (CPU time / wall time), and the worst processes by each, from the usage figures of
each process's current attempt (store_usage.py). A plain dict for ``--json`` and the page.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .states import ProcState
from .store import Job, Store

WORST = 3   # processes listed per measure


def _ratio(used: Optional[float], asked: Optional[float]) -> Optional[float]:
    return round(used / asked, 3) if used is not None and asked else None


def job_report(store: Store, job: Job) -> Dict[str, Any]:
    """The report of one job as plain data (JSON-ready)."""
    asked_time = float(job.dpu_options.get("time_limit") or 0) or None
    asked_mem = float(job.dpu_options.get("mem") or 0) or None
    procs = {p.idx: p for p in store.procs(job.id)}
    rows: List[Dict[str, Any]] = []
    for (idx, attempt), u in sorted(store.usage(job.id).items()):
        mem_mb = None if u.max_rss_kb is None else round(u.max_rss_kb / 1024, 1)
        proc = procs.get(idx)
        rows.append({
            "process": idx, "attempt": attempt, "outcome": proc.outcome if proc else "",
            "wall_s": u.wall_s, "cpu_s": u.cpu_s, "max_rss_mb": mem_mb, "source": u.source,
            "time_used": _ratio(u.wall_s, asked_time), "mem_used": _ratio(mem_mb, asked_mem),
            "cpu_efficiency": _ratio(u.cpu_s, u.wall_s),
        })
    walls = [r["wall_s"] for r in rows if r["wall_s"] is not None]
    mems = [r["max_rss_mb"] for r in rows if r["max_rss_mb"] is not None]
    cpus = [(r["cpu_s"], r["wall_s"]) for r in rows if r["cpu_s"] is not None and r["wall_s"]]
    sources: Dict[str, int] = {}
    for r in rows:
        sources[r["source"]] = sources.get(r["source"], 0) + 1

    def worst(key: str, reverse: bool = True) -> List[Dict[str, Any]]:
        have = [r for r in rows if r[key] is not None]
        return sorted(have, key=lambda r: r[key], reverse=reverse)[:WORST]

    return {
        "job": job.id, "sequence": job.sequence, "dpu": job.dpu, "processes": job.nproc,
        "ended": sum(1 for p in procs.values() if p.state == ProcState.DONE),
        "measured": len(rows), "sources": sources,
        "asked": {"time_s": asked_time, "mem_mb": asked_mem},
        "time": {"max_s": max(walls, default=None),
                 "mean_s": round(sum(walls) / len(walls), 3) if walls else None,
                 "max_used": _ratio(max(walls, default=None), asked_time)},
        "memory": {"max_mb": max(mems, default=None),
                   "mean_mb": round(sum(mems) / len(mems), 1) if mems else None,
                   "max_used": _ratio(max(mems, default=None), asked_mem)},
        "cpu_efficiency": _ratio(sum(c for c, _ in cpus), sum(w for _, w in cpus)) if cpus else None,
        "worst": {"time": worst("wall_s"), "memory": worst("max_rss_mb"),
                  "cpu": worst("cpu_efficiency", reverse=False)},
        "rows": rows,
    }


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: Optional[float], unit: str) -> str:
    return "-" if x is None else f"{x:.0f} {unit}" if x >= 10 else f"{x:.1f} {unit}"


def report_lines(data: Dict[str, Any]) -> List[str]:
    """The report as the prompt and the shell print it."""
    asked, t, m = data["asked"], data["time"], data["memory"]
    src = ", ".join(f"{n} from {s}" for s, n in sorted(data["sources"].items())) or "none yet"
    lines = [f"Job {data['job']} ({data['sequence']}): {data['ended']}/{data['processes']} processes ended, "
             f"figures for {data['measured']} ({src})",
             f"  asked per process : {_num(asked['time_s'], 's')}, {_num(asked['mem_mb'], 'MB')}",
             f"  time used         : max {_num(t['max_s'], 's')} ({_pct(t['max_used'])} of asked), "
             f"mean {_num(t['mean_s'], 's')}",
             f"  memory used       : max {_num(m['max_mb'], 'MB')} ({_pct(m['max_used'])} of asked), "
             f"mean {_num(m['mean_mb'], 'MB')}",
             f"  CPU efficiency    : {_pct(data['cpu_efficiency'])} (CPU time / wall time)"]
    worst = data["worst"]
    for title, key, show in (("longest", "time", lambda r: _num(r["wall_s"], "s")),
                             ("largest", "memory", lambda r: _num(r["max_rss_mb"], "MB")),
                             ("least CPU-busy", "cpu", lambda r: _pct(r["cpu_efficiency"]))):
        if worst[key]:
            lines.append(f"  {title:<17} : " + ", ".join(
                f"process {r['process']} {show(r)}" for r in worst[key]))
    return lines
