"""Grid Engine figures (harness/sge-up.sh), in one run: a DRMAA bulk submit of 1,000 processes
beside `qsub -t 1-1000` of the same script, then the same through dpu.run on a DRMAA DPU and on a
command-line SGE DPU, each until every task shows in qstat.

The queue instance is disabled while it runs, so nothing starts and every submission is timed
against the same empty cluster; the jobs are deleted after each measurement.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import yaml

from dpu_slurm import Processor
from dpu_slurm.config import load_file
from dpu_slurm.schedulers.drmaa import Helper
from dpu_slurm.schedulers.sge import parse_xml, task_ids

N = int(os.environ.get("BENCH_PROCESSES", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
os.environ.setdefault("SGE_ROOT", "/var/lib/gridengine")
os.environ.setdefault("SGE_CELL", "default")
QUEUE = f"all.q@{socket.gethostname()}"


def visible(ids: List[str]) -> int:
    out = subprocess.run(["qstat", "-xml"], capture_output=True, text=True, check=True).stdout
    return sum(len(task_ids(t)) if t else 1 for number, _, _, t in parse_xml(out) if number in ids)


def until_visible(ids: List[str], t0: float) -> float:
    while visible(ids) < N:
        if time.perf_counter() - t0 > 120:
            raise SystemExit("tasks never all showed in qstat")
        time.sleep(0.01)
    return time.perf_counter() - t0


def qdel(ids: List[str]) -> None:
    subprocess.run(["qdel", *ids], check=False, capture_output=True)
    while visible(ids):
        time.sleep(0.2)


def median(xs: List[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dpu-drmaa-bench-"))
    os.environ["DPU_HOME"] = str(root / "home")
    os.environ["DPU_CONFIG_PATH"] = str(root / "cfg")
    (root / "cfg").mkdir()
    (root / "out").mkdir()
    common = {"workdir": str(root / "work"), "max_array_size": 100000, "min_time": 60,
              "poll": {"min_interval": 0, "max_interval": 0}}
    for name, extra in (("benchdrmaa", {"submit": "drmaa"}), ("benchsge", {})):
        (root / "cfg" / f"{name}.yaml").write_text(yaml.safe_dump(
            {"name": name, "scheduler": "sge", **common, **extra}))
    os.chdir(root)
    script = root / "bare.sh"
    script.write_text(f"#!/bin/bash\n#$ -o {root}/out/\n#$ -j y\n#$ -S /bin/bash\ntrue\n")

    subprocess.run(["qmod", "-d", QUEUE], check=True, capture_output=True)
    try:
        qsub_s, qsub_vis, bulk_s, bulk_vis = [], [], [], []
        helper = Helper(load_file(root / "cfg" / "benchdrmaa.yaml"))  # the session opens once
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            out = subprocess.run(["qsub", "-terse", "-t", f"1-{N}", str(script)],
                                 capture_output=True, text=True, check=True).stdout
            qsub_s.append(time.perf_counter() - t0)
            qsub_vis.append(until_visible([out.split(".")[0]], t0))
            qdel([out.split(".")[0]])

            t0 = time.perf_counter()
            reply = helper.call("submit", command="/bin/bash", args=[str(script)], name="bare",
                                native="", workdir=str(root), output=f":{root}/out/bulk.", count=N)
            bulk_s.append(time.perf_counter() - t0)
            array = reply["ids"][0].split(".")[0]
            bulk_vis.append(until_visible([array], t0))
            qdel([array])
        helper.close()

        runs = {}
        for name in ("benchdrmaa", "benchsge"):
            dpu = Processor(name, out=io.StringIO(), session_log=False)
            assert dpu.get_sequence_identifiers()  # catalog loaded, as at a prompt
            times, vis = [], []
            for _ in range(ROUNDS):
                t0 = time.perf_counter()
                job_id = dpu.run("Null", n=N, dpu_mem=300, return_jobid=True)
                times.append(time.perf_counter() - t0)
                assert job_id is not None
                natives = dpu._store.job(job_id).native_ids
                vis.append(until_visible(natives, t0))
                qdel(natives)
            runs[name] = (times, vis)
            dpu.close()
    finally:
        subprocess.run(["qmod", "-e", QUEUE], check=False, capture_output=True)

    print(f"sge: {ROUNDS} rounds of {N} processes each, medians; "
          "'visible' = until every task shows in qstat")
    print(f"sge: qsub -t 1-{N} (bare)            : {median(qsub_s):.3f} s, visible {median(qsub_vis):.3f} s")
    print(f"sge: DRMAA runBulkJobs({N}) (bare)    : {median(bulk_s):.3f} s, visible {median(bulk_vis):.3f} s")
    for name, label in (("benchdrmaa", "dpu.run via DRMAA       "), ("benchsge", "dpu.run via qsub (cli)  ")):
        times, vis = runs[name]
        first = "bundle build, DRMAA helper start" if "drmaa" in name else "bundle build"
        print(f"sge: {label}          : {median(times):.3f} s, visible {median(vis):.3f} s "
              f"(first call {times[0]:.3f} s: {first})")


if __name__ == "__main__":
    sys.exit(main())
