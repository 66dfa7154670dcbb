"""Correctness at scale (not time) on the real SLURM of harness/slurm-up.sh: a job whose odd
indices fail ends with exactly half N and half E.

The issue asks for 20,000 processes: `DPU_SCALE_PROCESSES=20000`. The harness node starts about
9 array elements a second (measured: 1,000 processes in 116 s on the shared 2-core machine),
so 20,000 take over half an hour; `make test` runs 2,000 (about 4 minutes), bounded by
DPU_SCALE_TIMEOUT seconds (default 1,500). DPU_SCALE_THROTTLE=K caps the elements running at
once (`--array=...%K`) so a full-size run leaves some of the node's 32 slots to other jobs.
Markers: slurm and slow.
"""
import io
import os
import subprocess

import pytest

from dpu_slurm import Processor
from tests.test_slurm import write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

N = int(os.environ.get("DPU_SCALE_PROCESSES", "2000"))
TIMEOUT = float(os.environ.get("DPU_SCALE_TIMEOUT", "1500"))
THROTTLE = int(os.environ.get("DPU_SCALE_THROTTLE", "0"))


def test_a_large_job_with_odd_failures_ends_half_N_half_E(slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("DPU_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DPU_CONFIG_PATH", str(tmp_path / "cfg"))
    monkeypatch.delenv("DPU_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    # Polls as a user would make them (every few seconds), each reading only what changed.
    write_config(tmp_path, name="scaleslurm", max_array_size=100000, array_throttle=THROTTLE,
                 poll={"min_interval": 0, "max_interval": 0, "grace": 30})
    out = io.StringIO()
    dpu = Processor("scaleslurm", out=out, session_log=False)
    # A generous limit: on the loaded shared machine 31 of 2,000 once ran past a 60 s limit
    # (TIMEOUT, counted A, rightly); this test is about the counting, not about the load.
    job_id = dpu.run("Null", n=N, xo=True, dpu_mem=16, dpu_time=900, return_jobid=True)
    assert job_id is not None
    native = dpu._store.job(job_id).native_ids
    try:
        assert len(native) == 1, f"{N} processes are one array job"
        view = dpu.wait(job_id, timeout=TIMEOUT, interval=5.0)[0]
        assert view.status == "FINISHED", f"job {job_id} still {view.status} after {TIMEOUT:.0f} s"
        half = N // 2
        assert view.counts.letters == (N - half, half, 0, 0, 0), view.counts.line()
        dpu.get_status(job_id)
        line = next(x for x in out.getvalue().splitlines() if f"Jobid {job_id} has status" in x)
        assert line.endswith(f"Jobid {job_id} has status FINISHED N/E/A/S/U {N - half}/{half}/0/0/0"), line
        # Each process got its own index: exactly the odd ones failed.
        failed = {p.idx for p in dpu._store.procs(job_id) if p.outcome == "E"}
        assert failed == set(range(1, N, 2))
    finally:
        subprocess.run(["scancel", *native], check=False)
        dpu.close()
