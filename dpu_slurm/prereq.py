"""Inside the job: does one of this process's prerequisites say it failed? (standard library only;
it travels in the bundle with the worker).

job.json's ``after`` names the prerequisite jobs' folders; their workers' final records say how
each process ended. Where the scheduler's own dependency does not look at the outcome (Grid
Engine's -hold_jid, the local runner, 'each'), the worker asks this before running its tasks.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Dict


def ended(path: Path) -> str:
    """The first letter other than N of a final status record; U when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "U"
    if not isinstance(data, dict) or data.get("state") != "DONE" or not isinstance(data.get("tasks"), list):
        return "U"
    return next((str(t) for t in data["tasks"] if t != "N"), "N")


def failed_prerequisite(job: Dict[str, Any], index: int, folder: Callable[[Path, int], Path],
                        status: str) -> str:
    """Why process `index` must not run ("prerequisite job N process i ended E"), or ''."""
    after = job.get("after") or {}
    if not after.get("check"):
        return ""
    for pre in after.get("jobs", []):
        wanted = [index] if after.get("mode") == "each" else range(int(pre["nproc"]))
        for i in wanted:
            letter = ended(folder(Path(pre["jobdir"]), i) / status)
            if letter != "N":
                return f"prerequisite job {pre['job']} process {i} ended {letter}"
    return ""


def foreign_input(folder: Path, depth: int = 4) -> str:
    """Why a required work folder (ctx.inputs: JOBDIR/p/i/work) must not be read, or '': it and
    the folders up to its job folder must be real folders of this user. One that another user
    made where an earlier job was (a moved or purged workdir) is not that job's output."""
    me, path = os.geteuid(), folder
    for _ in range(depth):
        try:
            info = os.lstat(path)
        except OSError as exc:
            return f"{path} cannot be read ({exc.strerror})"
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != me:
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "no folder (a link or a file)"
            return f"{path} is {kind} of uid {info.st_uid}, not a folder of this user (uid {me})"
        path = path.parent
    return ""
