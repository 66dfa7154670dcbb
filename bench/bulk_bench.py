"""`dpu bulk` of 1,000 entries on the local SLURM (harness/slurm-up.sh): wall time and scheduler calls.

Prints, in one run: the floor (1,000 bare `sbatch` calls of a trivial script); `dpu bulk` of a
manifest whose template expands to 1,000 one-process runs, with its validation share and every
command it ran; the cron rerun of the same manifest (all skipped); and a 100-entry manifest with
max_queued, which adds one squeue call. Every job is cancelled at the end.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, List

import yaml

from dpu_slurm import bulk, cli
from dpu_slurm.catalog import Catalog
from dpu_slurm.session import awepipe_path, open_store
from dpu_slurm.transport.local import LocalTransport

N = int(os.environ.get("BENCH_BULK", "1000"))
SCHEDULER = {"sbatch", "squeue", "sacct", "scancel", "scontrol"}
calls: List[List[str]] = []
_real_run = LocalTransport.run


def _counting(self: LocalTransport, argv: Any, *args: Any, **kwargs: Any) -> Any:
    calls.append(list(argv))
    return _real_run(self, argv, *args, **kwargs)


def manifest(path: Path, count: int, tag: str, cap: int = 0) -> Path:
    data: dict = {"dpu": "benchbulk", "defaults": {"dpu_mem": 16},
                  "templates": [{"sequence": "Null", "options": {"m": f"{tag} {{n}}"},
                                 "key": f"{tag}-{{n}}", "parameters": {"n": list(range(count))}}]}
    if cap:
        data["max_queued"] = cap
    path.write_text(yaml.safe_dump(data))
    return path


def timed_bulk(path: Path) -> tuple[float, float, int, Counter]:
    """Wall time, this process's CPU time (sbatch children not counted), exit code, calls."""
    calls.clear()
    out = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with redirect_stdout(out):
        code = cli.main(["bulk", str(path)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, code, Counter(c[0] for c in calls)


def describe(counter: Counter) -> str:
    sched = sum(n for cmd, n in counter.items() if cmd in SCHEDULER)
    detail = ", ".join(f"{cmd} x{n}" for cmd, n in sorted(counter.items())) or "none"
    return f"{sched} scheduler calls ({detail})"


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="dpu-bulk-bench-"))
    os.environ.update(DPU_HOME=str(root / "home"), DPU_CONFIG_PATH=str(root / "cfg"))
    (root / "cfg").mkdir()
    (root / "cfg" / "benchbulk.yaml").write_text(yaml.safe_dump({
        # The jobs run /bin/true, as the floor's do: the bench measures submitting, not 1,000 Python
        # workers starting on the same cores as the submitting loop (which the floor never pays).
        "name": "benchbulk", "scheduler": "slurm", "workdir": str(root / "work"), "min_time": 60,
        "python": "/bin/true",
        "poll": {"min_interval": 0, "max_interval": 0},
        "partitions": [{"name": "long", "max_time": 86400, "max_mem": 4000}]}))
    os.chdir(root)

    # The floor: N bare sbatch calls of a trivial script (what any per-entry submitter pays).
    script = root / "bare.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mem=10M\n#SBATCH --output=/dev/null\ntrue\n")
    t0, c0 = time.perf_counter(), time.process_time()
    bare = [subprocess.run(["sbatch", "--parsable", "-p", "long", str(script)], capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(N)]
    bare_s, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    subprocess.run(["scancel", *bare], check=False)

    big = manifest(root / "night.yaml", N, "night")
    t0 = time.perf_counter()
    _, entries = bulk.load(big, "benchbulk")
    bulk.validate(entries, Catalog.load(awepipe_path()))
    validate_s = time.perf_counter() - t0

    LocalTransport.run = _counting  # type: ignore[method-assign]
    first_s, first_cpu, first_code, first = timed_bulk(big)
    again_s, _, again_code, again = timed_bulk(big)
    capped_s, _, capped_code, capped = timed_bulk(manifest(root / "extra.yaml", 100, "extra", cap=100_000))
    LocalTransport.run = _real_run  # type: ignore[method-assign]

    store = open_store()
    natives = [n for job in store.jobs() for n in job.native_ids]
    submitted = len(store.jobs())
    store.close()
    for start in range(0, len(natives), 500):
        subprocess.run(["scancel", *natives[start:start + 500]], check=False)

    print(f"bulk: {N} bare sbatch calls (the floor): {bare_s:.2f} s ({1000 * bare_s / N:.1f} ms each)")
    print(f"bulk: dpu bulk of {N} entries: {first_s:.2f} s ({1000 * first_s / N:.1f} ms/entry, "
          f"of which load+validate+render {validate_s:.2f} s), exit {first_code}, {describe(first)}")
    # The submitter's own CPU (sbatch's not counted) is what the client costs; unlike the wall
    # times above it barely moves with the load other users put on a shared machine.
    print(f"bulk: submitter CPU per entry: dpu bulk {1000 * first_cpu / N:.2f} ms, bare loop "
          f"{1000 * bare_cpu / N:.2f} ms (client work {1000 * (first_cpu - bare_cpu) / N:.2f} ms/entry)")
    print(f"bulk: cron rerun of the same manifest (all skipped): {again_s:.2f} s, exit {again_code}, "
          f"{describe(again)}")
    print(f"bulk: 100 more entries with max_queued: {capped_s:.2f} s, exit {capped_code}, {describe(capped)}")
    print(f"bulk: jobs in the store: {submitted} (expected {N + 100})")
    return 0 if (first_code, again_code, capped_code, submitted) == (0, 0, 0, N + 100) else 1


if __name__ == "__main__":
    sys.exit(main())
