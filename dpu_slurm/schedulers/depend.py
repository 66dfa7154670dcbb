"""Job dependencies as each scheduler's submit options (graph.py decides what the edges are).

``req.after`` is ``{"mode": ok|any|each, "prereqs": [{"job", "natives", "pending", ...}]}``;
chunk k of an 'each' dependent waits for chunk k of each prerequisite (same size and chunking,
checked by graph.check_after). Prerequisites that have already ended are left out.
SLURM: https://slurm.schedmd.com/sbatch.html#OPT_dependency ; Grid Engine: qsub(1)
-hold_jid / -hold_jid_ad; PBS Pro and Torque: qsub -W depend=.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List

_CHUNK = re.compile(r"job-(\d+)\.sh$")
_SLURM = {"ok": "afterok", "any": "afterany", "each": "aftercorr"}


def chunk_of(name: str) -> int:
    """Chunk k of the script job-K.sh (0 for any other name: a one-chunk job)."""
    m = _CHUNK.search(name)
    return int(m.group(1)) if m else 0


def _natives(after: Dict[str, Any], name: str) -> List[str]:
    pending = [p for p in after.get("prereqs", []) if p["pending"]]
    if after.get("mode") == "each":
        k = chunk_of(name)
        return [p["natives"][k] for p in pending if k < len(p["natives"])]
    return [n for p in pending for n in p["natives"] if n]


def slurm_args(after: Dict[str, Any], name: str) -> List[str]:
    """--dependency=afterok|afterany|aftercorr:ID[:ID] and --kill-on-invalid-dep=yes."""
    ids = _natives(after, name) if after else []
    if not ids:
        return []
    return [f"--dependency={_SLURM[after['mode']]}:{':'.join(ids)}", "--kill-on-invalid-dep=yes"]


def sge_args(after: Dict[str, Any], name: str) -> List[str]:
    """-hold_jid_ad (task i after task i) for each, else -hold_jid (after the whole arrays end;
    for ok the worker then skips its process when a prerequisite failed)."""
    ids = _natives(after, name) if after else []
    if not ids:
        return []
    return ["-hold_jid_ad" if after["mode"] == "each" else "-hold_jid", ",".join(ids)]


def pbs_args(after: Dict[str, Any], name: str, flavor: str) -> List[str]:
    """-W depend=afterok:ID[:ID] (afterany for any); Torque names array prerequisites with
    afterokarray/afteranyarray, PBS Pro takes the array's own id (NNN[].server)."""
    ids = _natives(after, name) if after else []
    if not ids:
        return []
    base = "afterok" if after["mode"] == "ok" else "afterany"
    groups: Dict[str, List[str]] = {}
    for native in ids:
        kind = base + "array" if flavor == "torque" and "[" in native else base
        groups.setdefault(kind, []).append(native)
    return ["-W", "depend=" + ",".join(f"{kind}:{':'.join(n)}" for kind, n in groups.items())]


__all__ = ["chunk_of", "pbs_args", "sge_args", "slurm_args"]
