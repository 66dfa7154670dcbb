"""SLURM figures on the local cluster (harness/slurm-up.sh): submission and status at scale.

Prints, in one run: dpu.run of a 10,000-process job until every task is visible in squeue,
beside a bare `sbatch --array` of 10,000 (the floor); one get_status over 100 jobs of 100
processes with the number of scheduler calls it made; the client's peak RSS.
"""
from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dpu_slurm import Processor
from dpu_slurm.transport.local import LocalTransport

N = int(os.environ.get("BENCH_PROCESSES", "10000"))
JOBS = int(os.environ.get("BENCH_JOBS", "100"))


def visible(array_id: str) -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%K"], capture_output=True,
                         text=True, check=False).stdout
    return len(out.split())


def wait_visible(array_ids: list[str], count: int, t0: float) -> float:
    while sum(visible(a) for a in array_ids) < count:
        if time.perf_counter() - t0 > 120:
            raise SystemExit("tasks never all showed in squeue")
    return time.perf_counter() - t0


def scancel(ids: list[str]) -> None:
    subprocess.run(["scancel", *ids], check=False)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dpu-bench-"))
    os.environ["DPU_HOME"] = str(root / "home")
    os.environ["DPU_CONFIG_PATH"] = str(root / "cfg")
    (root / "cfg").mkdir()
    (root / "cfg" / "bench.yaml").write_text(yaml.safe_dump({
        "name": "bench", "scheduler": "slurm", "workdir": str(root / "work"),
        "max_array_size": 100000, "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0},
        "partitions": [{"name": "long", "max_time": 86400, "max_mem": 4000}]}))
    os.chdir(root)
    script = root / "bare.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mem=10M\n#SBATCH --output=/dev/null\ntrue\n")

    # The floor: a bare sbatch of the same array size.
    t0 = time.perf_counter()
    bare = subprocess.run(["sbatch", "--parsable", f"--array=0-{N - 1}", "-p", "long",
                           str(script)], capture_output=True, text=True, check=True).stdout.strip()
    bare_s = wait_visible([bare], N, t0)
    scancel([bare])

    dpu = Processor("bench", out=io.StringIO(), session_log=False)
    # The catalog is loaded, as at a prompt where the user listed sequences first; the bundle
    # is built inside the timed run.
    assert dpu.get_sequence_identifiers()
    t0 = time.perf_counter()
    job_id = dpu.run("Null", n=N, dpu_mem=16, return_jobid=True)
    submit_s = time.perf_counter() - t0
    assert job_id is not None
    native = dpu._store.job(job_id).native_ids
    run_s = wait_visible(native, N, t0)
    scancel(native)

    per = max(1, N // JOBS)
    ids = [dpu.run("Null", n=per, dpu_mem=16, return_jobid=True) for _ in range(JOBS)]
    natives = [n for j in ids for n in dpu._store.job(j).native_ids]  # type: ignore[arg-type]
    calls: list[list[str]] = []
    real = LocalTransport.run

    def counting(self, argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return real(self, argv, *args, **kwargs)

    LocalTransport.run = counting  # type: ignore[method-assign]
    t0 = time.perf_counter()
    views = dpu.get_status(ids)
    status_s = time.perf_counter() - t0
    LocalTransport.run = real  # type: ignore[method-assign]
    scancel(natives)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    processes = sum(v.job.nproc for v in views)

    print(f"slurm: bare sbatch --array of {N}, until all visible in squeue: {bare_s:.3f} s")
    print(f"slurm: dpu.run of {N} processes (submit call {submit_s:.3f} s), until all visible: "
          f"{run_s:.3f} s  (+{run_s - bare_s:.3f} s over bare)")
    print(f"slurm: get_status over {len(views)} jobs / {processes} processes: {status_s:.3f} s, "
          f"scheduler calls: {len(calls)} ({', '.join(c[0] for c in calls)})")
    print(f"slurm: client peak RSS {rss_mb:.0f} MB")
    dpu.close()


if __name__ == "__main__":
    sys.exit(main())
