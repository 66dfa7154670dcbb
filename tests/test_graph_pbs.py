"""after= on a PBS DPU (flavor torque) through Slurm's Torque wrappers (harness/torque-up.sh):
qsub -W depend=afterok: reaches the scheduler, a dependent of a job that failed ends S (cancelled
by the poll, never left pending), and one after a job that ended N runs."""
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.pbs
HARNESS = Path(__file__).resolve().parent.parent / "harness" / "torque-up.sh"
BIN = "/opt/dpu-torque/usr/bin"


@pytest.fixture
def dpu(make_session):
    subprocess.run(["bash", str(HARNESS)], check=True, timeout=600)
    made = make_session("graphpbs", scheduler="pbs", flavor="torque", bin_dir=BIN, min_time=60,
                        max_array_size=4, poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                        partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    yield made.dpu
    for job_id in made.dpu.get_jobids():
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["scancel", *job.native_ids], check=False)


def test_depend_afterok_through_the_torque_wrappers(dpu, commands):
    bad = dpu.run("Null", n=2, ff="0", s=3, dpu_mem=100, return_jobid=True)
    good = dpu.run("Null", n=2, s=3, dpu_mem=100, return_jobid=True)
    skipped = dpu.run("Null", n=2, after=bad, dpu_mem=100, return_jobid=True)
    ran = dpu.run("Null", n=2, after=good, dpu_mem=100, return_jobid=True)
    qsubs = [c for c in commands if Path(c[0]).name == "qsub"]
    assert ["-W", f"depend=afterok:{dpu._store.job(bad).native_ids[0]}"] == qsubs[-2][-3:-1], qsubs[-2]
    views = dpu.wait([bad, good, skipped, ran], timeout=240, interval=0.5)
    assert [v.counts.line() for v in views] == ["1/1/0/0/0", "2/0/0/0/0", "0/0/0/2/0", "2/0/0/0/0"], views
    assert {p.reason for p in dpu._store.procs(skipped)} == {f"prerequisite job {bad} process 0 ended E"}
    native = dpu._store.job(skipped).native_ids[0]
    out = subprocess.run(["squeue", "-h", "-j", native], capture_output=True, text=True).stdout
    assert out.strip() == "", f"the dependent still waits in SLURM: {out}"
