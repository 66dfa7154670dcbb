"""Rerun figures on the local SLURM (harness/slurm-up.sh): 100 failed processes of a 10,000-process
job resubmitted by dpu.rerun, with the scheduler calls it made (one sbatch per chunk holding a
failed index), beside a bare ``sbatch --array=<the same list>``.

The 10,000 processes are submitted for real and cancelled at once; their outcomes (100 E, the
rest N) are then written to the store, as a poll would after a night's run, so the figure is the
rerun's own cost: moving the failed processes' records aside, rendering, sbatch, the store.
"""
from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import yaml

from dpu_slurm import Processor
from dpu_slurm.schedulers.slurm import compact
from dpu_slurm.states import ProcState
from dpu_slurm.transport.local import LocalTransport

N = int(os.environ.get("BENCH_PROCESSES", "10000"))
FAILED = int(os.environ.get("BENCH_FAILED", "100"))


def visible(array_ids: List[str]) -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(array_ids), "-o", "%K"],
                         capture_output=True, text=True, check=False).stdout
    return len(out.split())


def wait_visible(array_ids: List[str], count: int, t0: float) -> float:
    while visible(array_ids) < count:
        if time.perf_counter() - t0 > 120:
            raise SystemExit("tasks never all showed in squeue")
        time.sleep(0.01)
    return time.perf_counter() - t0


def scancel(ids: List[str]) -> None:
    subprocess.run(["scancel", *ids], check=False)


def dpu_file(root: Path, name: str, chunk: int) -> None:
    (root / "cfg" / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "scheduler": "slurm", "workdir": str(root / "work"), "max_array_size": chunk,
        "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0},
        "partitions": [{"name": "long", "max_time": 86400, "max_mem": 4000}]}))


def rerun_once(name: str, failed: List[int]) -> Tuple[float, float, int, int]:
    """(rerun call s, until its tasks show in squeue s, sbatch calls, all commands it ran)."""
    dpu = Processor(name, out=io.StringIO(), session_log=False)
    job_id = dpu.run("Null", n=N, dpu_mem=16, return_jobid=True)
    assert job_id is not None
    scancel(dpu._store.job(job_id).native_ids)
    bad = set(failed)
    dpu._store.update(job_id, [(i, ProcState.DONE, "E" if i in bad else "N",
                                "exit code 1" if i in bad else "", None) for i in range(N)])
    calls: List[List[str]] = []
    real = LocalTransport.run

    def counting(self, argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return real(self, argv, *args, **kwargs)

    LocalTransport.run = counting  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        indices = dpu.rerun(job_id, only="E")
        rerun_s = time.perf_counter() - t0
    finally:
        LocalTransport.run = real  # type: ignore[method-assign]
    assert indices == failed
    native = dpu._store.job(job_id).native_ids
    shown_s = wait_visible(native, len(failed), t0)
    scancel(native)
    dpu.close()
    return rerun_s, shown_s, sum(Path(c[0]).name == "sbatch" for c in calls), len(calls)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dpu-rerun-bench-"))
    os.environ["DPU_HOME"] = str(root / "home")
    os.environ["DPU_CONFIG_PATH"] = str(root / "cfg")
    (root / "cfg").mkdir()
    os.chdir(root)
    failed = sorted(random.Random(12).sample(range(N), FAILED))
    dpu_file(root, "one", 100000)    # the whole job is one array
    dpu_file(root, "chunked", 1000)  # SLURM's default MaxArraySize is 1001
    script = root / "bare.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mem=16M\n#SBATCH --output=/dev/null\ntrue\n")

    t0 = time.perf_counter()
    bare = subprocess.run(["sbatch", "--parsable", f"--array={compact(failed)}", "-p", "long", str(script)],
                          capture_output=True, text=True, check=True).stdout.strip()
    bare_call = time.perf_counter() - t0
    bare_s = wait_visible([bare], FAILED, t0)
    scancel([bare])
    one = rerun_once("one", failed)
    chunked = rerun_once("chunked", failed)
    chunks = len({i // 1000 for i in failed})

    print(f"rerun: bare sbatch --array=<{FAILED} indices of {N}>: call {bare_call:.3f} s, until all "
          f"visible in squeue {bare_s:.3f} s")
    print(f"rerun: dpu.rerun of {FAILED} failed of {N} (one array): call {one[0]:.3f} s, until all "
          f"visible {one[1]:.3f} s (+{one[1] - bare_s:.3f} s over bare); sbatch calls {one[2]}, "
          f"commands in all {one[3]}")
    print(f"rerun: same with max_array_size 1000 ({chunks} chunks hold a failed index): call "
          f"{chunked[0]:.3f} s, until all visible {chunked[1]:.3f} s; sbatch calls {chunked[2]}, "
          f"commands in all {chunked[3]}")


if __name__ == "__main__":
    sys.exit(main())
