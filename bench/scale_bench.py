"""Survey scale on the local SLURM (harness/slurm-up.sh): what the client adds to a bare sbatch.

Prints, in one run:
- for 10,000 and 100,000 processes: a bare `sbatch --array` and `dpu.run`, alternated, three
  times each, slurmctld idle (none of our jobs in squeue) before every round: until every element
  is visible in squeue, the median of each and their ratio; and the client's own share of dpu.run
  (its submit call minus the time spent in scheduler commands);
- get_status over 100 jobs / 100,000 processes, with its scheduler-call count;
- get_status over one job of 100,000 while elements run (as many as this node starts);
- the queue page (`dpu web`) serving those 100 jobs from its snapshot;
- the client's peak RSS.
Everything submitted is cancelled by job id. Figures are printed, never asserted.
"""
from __future__ import annotations

import http.client
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import yaml

from dpu_slurm import Processor
from dpu_slurm.errors import SchedulerError
from dpu_slurm.schedulers.ranges import parse_ranges
from dpu_slurm.transport.local import LocalTransport

HERE = Path(__file__).resolve().parent
SIZES = [int(n) for n in os.environ.get("BENCH_SCALE_SIZES", "10000,100000").split(",")]
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "3"))
JOBS = int(os.environ.get("BENCH_SCALE_JOBS", "100"))
TOTAL = int(os.environ.get("BENCH_SCALE_TOTAL", "100000"))
RUNNING = int(os.environ.get("BENCH_SCALE_RUNNING", "2000"))
LIMIT = 300.0   # seconds any one wait may take


def squeue(*args: str) -> List[str]:
    """squeue's lines ([] when it fails: ids it no longer knows)."""
    res = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=False)
    return res.stdout.split("\n") if res.returncode == 0 else []


def elements(ids: Sequence[str], state: str = "") -> int:
    """How many array elements of these jobs squeue lists (pending ranges counted, not expanded)."""
    lines = squeue("-j", ",".join(ids), "-o", "%K", *(["-t", state] if state else []))
    total = 0
    for line in filter(None, (x.strip() for x in lines)):
        try:
            total += sum((b - a) // s + 1 for a, b, s in parse_ranges(line))
        except SchedulerError:
            total += 1   # not an array (N/A)
    return total


def wait_for(test: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + LIMIT
    while not test():
        if time.monotonic() > end:
            raise SystemExit(f"scale bench: {what} did not happen within {LIMIT:.0f} s")
        time.sleep(0.05)


def forgotten(native: str) -> bool:
    """True once slurmctld has purged the job's records (after MinJobAge): until then, a cancelled
    array of 100,000 keeps slurmctld busy and the next sbatch waits behind it."""
    res = subprocess.run(["scontrol", "-o", "show", "job", native], capture_output=True, text=True,
                         check=False)
    return res.returncode != 0


def cancel(ids: Sequence[str]) -> None:
    """Cancel these jobs by id; wait until squeue no longer lists them and slurmctld forgot them."""
    if ids:
        subprocess.run(["scancel", *ids], check=False)
        wait_for(lambda: not [x for x in squeue("-j", ",".join(ids), "-o", "%F") if x.strip()],
                 "the cancelled jobs leaving squeue")
        wait_for(lambda: all(forgotten(n) for n in ids), "slurmctld purging the cancelled jobs")


def idle() -> int:
    """Wait (a bounded time) for an empty squeue; how many jobs of others were left in it."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        left = [x for x in squeue("-o", "%F") if x.strip()]
        if not left:
            return 0
        time.sleep(0.2)
    return len(left)


def setup() -> Path:
    root = Path(tempfile.mkdtemp(prefix="dpu-scale-bench-"))
    os.environ["DPU_HOME"] = str(root / "home")
    os.environ["DPU_CONFIG_PATH"] = str(root / "cfg")
    (root / "cfg").mkdir()
    # One DPU per phase: a phase's get_status polls only its own jobs (the cancelled arrays of
    # the submit rounds would otherwise be settled, 330,000 vanished processes, in its timing).
    for name, part in (("scale", "long"), ("scalestatus", "long"), ("scalerun", "debug")):
        (root / "cfg" / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "scheduler": "slurm", "workdir": str(root / "work"),
            "max_array_size": 100000, "min_time": 60, "poll": {"min_interval": 0, "max_interval": 0},
            "partitions": [{"name": part, "max_time": 86400, "max_mem": 4000}]}))
    os.chdir(root)
    (root / "bare.sh").write_text("#!/bin/bash\n#SBATCH --mem=10M\n#SBATCH --output=/dev/null\ntrue\n")
    return root


class Counting:
    """Counts (and times) the commands the client runs on the target."""

    def __init__(self) -> None:
        self.calls: List[List[str]] = []
        self.seconds = 0.0
        self.real = LocalTransport.run

    def __enter__(self) -> Counting:
        real = self.real

        def run(transport, argv, *args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return real(transport, argv, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls.append(list(argv))

        LocalTransport.run = run  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        LocalTransport.run = self.real  # type: ignore[method-assign]


def submit_rounds(dpu: Processor, root: Path, n: int) -> None:
    bare_s: List[float] = []
    run_s: List[float] = []
    call_s: List[float] = []
    client_s: List[float] = []
    others = 0
    for _ in range(ROUNDS):
        others = max(others, idle())
        t0 = time.perf_counter()
        argv = ["sbatch", "--parsable", f"--array=0-{n - 1}", "-p", "long", str(root / "bare.sh")]
        bare = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        wait_for(lambda b=bare: elements([b]) >= n, "the bare array showing whole")
        bare_s.append(time.perf_counter() - t0)
        cancel([bare])
        others = max(others, idle())
        with Counting() as counted:
            t0 = time.perf_counter()
            job_id = dpu.run("Null", n=n, dpu_mem=16, return_jobid=True)
            call_s.append(time.perf_counter() - t0)
        client_s.append(call_s[-1] - counted.seconds)
        assert job_id is not None
        native = dpu._store.job(job_id).native_ids
        wait_for(lambda ids=native: elements(ids) >= n, "dpu.run's array showing whole")
        run_s.append(time.perf_counter() - t0)
        cancel(native)
    bare_m, run_m = statistics.median(bare_s), statistics.median(run_s)
    runs = ", ".join(f"{b:.2f}/{r:.2f}" for b, r in zip(bare_s, run_s, strict=True))
    print(f"scale: {n} processes, until all visible in squeue (median of {ROUNDS}, alternated, bare/dpu "
          f"{runs}): bare sbatch {bare_m:.2f} s, dpu.run {run_m:.2f} s = +{run_m - bare_m:.2f} s, "
          f"{run_m / bare_m:.2f}x bare" + (f" ({others} jobs of others in squeue)" if others else ""))
    print(f"scale: {n} processes, dpu.run's submit call {statistics.median(call_s):.2f} s, of which the "
          f"client itself (not in scheduler commands) {statistics.median(client_s):.2f} s")


def status_of(dpu: Processor, ids: List[int]) -> Tuple[float, List[str], int]:
    with Counting() as counted:
        t0 = time.perf_counter()
        views = dpu.get_status(ids)
        took = time.perf_counter() - t0
    return took, [Path(c[0]).name for c in counted.calls], sum(v.job.nproc for v in views)


def many_jobs(dpu: Processor) -> Tuple[List[int], List[str]]:
    per = max(1, TOTAL // JOBS)
    ids = [int(dpu.run("Null", n=per, dpu_mem=16, return_jobid=True) or 0) for _ in range(JOBS)]
    natives = [n for j in ids for n in dpu._store.job(j).native_ids]
    for label in ("first", "again"):
        took, calls, procs = status_of(dpu, ids)
        print(f"scale: get_status over {len(ids)} jobs / {procs} processes ({label}): {took:.3f} s, "
              f"scheduler calls: {len(calls)} ({', '.join(calls)})")
    return ids, natives


def page(root: Path, jobs: int) -> None:
    """`dpu web` over the store holding the 100 jobs: time to its first snapshot, then GETs."""
    argv = [sys.executable, "-m", "dpu_slurm.cli", "web", "--dpu", "scalestatus", "--port", "0"]
    server = subprocess.Popen(argv,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=str(root),
                              env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    try:
        assert server.stdout is not None
        found = re.search(r":(\d+)/", server.stdout.readline())
        if found is None:
            print("scale: the queue page did not start")
            return
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=120)

        def get(path: str) -> bytes:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.read()

        t0 = time.perf_counter()
        wait_for(lambda: json.loads(get("/api/queue"))["total"] >= jobs, "the page's first snapshot")
        first = time.perf_counter() - t0
        for path in ("/", "/api/queue"):
            times = []
            for _ in range(50):
                t1 = time.perf_counter()
                get(path)
                times.append(1000 * (time.perf_counter() - t1))
            times.sort()
            print(f"scale: queue page GET {path} over {jobs} jobs / {TOTAL} processes: p50 "
                  f"{times[len(times) // 2]:.1f} ms, p95 {times[int(len(times) * 0.95)]:.1f} ms "
                  f"(first snapshot after {first:.1f} s)")
    finally:
        server.terminate()
        server.wait(30)


def running_job() -> None:
    dpu = Processor("scalerun", out=io.StringIO(), session_log=False)
    job_id = int(dpu.run("Null", n=TOTAL, s=600, dpu_mem=16, return_jobid=True) or 0)
    native = dpu._store.job(job_id).native_ids
    try:
        end = time.monotonic() + 60
        best, stable = 0, 0
        while time.monotonic() < end and best < RUNNING and stable < 20:
            now = elements(native, "RUNNING")
            best, stable = (now, 0) if now > best else (best, stable + 1)
            time.sleep(0.25)
        # the workers write their records: give them a moment
        time.sleep(3)
        for label in ("first", "again"):
            took, calls, procs = status_of(dpu, [job_id])
            print(f"scale: get_status over 1 job of {procs} processes with {best} running ({label}; "
                  f"this node runs at most that many at once, not {RUNNING}): {took:.3f} s, "
                  f"scheduler calls: {len(calls)} ({', '.join(calls)})")
    finally:
        cancel(native)
        dpu.close()


def main() -> int:
    root = setup()
    dpu = Processor("scale", out=io.StringIO(), session_log=False)
    assert dpu.get_sequence_identifiers()  # the catalog loaded, as at a prompt
    for n in SIZES:
        submit_rounds(dpu, root, n)
    dpu.close()
    dpu = Processor("scalestatus", out=io.StringIO(), session_log=False)
    ids, natives = many_jobs(dpu)
    try:
        page(root, len(ids))
    finally:
        cancel(natives)
    dpu.close()
    running_job()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scale: client peak RSS {rss_mb:.0f} MB (over the whole run: at most {TOTAL} processes "
          "tracked at once, 100 jobs or one)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
