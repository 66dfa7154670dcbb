"""PBS DPU (flavor torque) through Slurm's Torque-compatible qsub/qstat/qdel, which
harness/torque-up.sh unpacks beside Grid Engine's client, over the harness's real SLURM.

This checks the command-line dialect for real; the parsing of real PBS Pro / Torque output is
checked on documented samples in test_pbs_sge_parsing.py.
"""
import subprocess
import time
from pathlib import Path

import pytest

from dpu_slurm.errors import SubmitError

pytestmark = pytest.mark.pbs
HARNESS = Path(__file__).resolve().parent.parent / "harness" / "torque-up.sh"
BIN = "/opt/dpu-torque/usr/bin"


@pytest.fixture(scope="session")
def torque_wrappers():
    """The harness installs the wrappers and brings SLURM up (no-ops when done already)."""
    subprocess.run(["bash", str(HARNESS)], check=True, timeout=600)
    return BIN


@pytest.fixture
def dpu(torque_wrappers, make_session):
    made = make_session("testpbs", scheduler="pbs", flavor="torque", bin_dir=torque_wrappers,
                        min_time=60, max_array_size=4,
                        poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                        partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    yield made.dpu
    for job_id in made.dpu.get_jobids():  # leave the cluster empty for the next test
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["scancel", *job.native_ids], check=False)


def finished(dpu, job_id, timeout=120):
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status} after {timeout} s"
    return view


def test_success_is_N_across_array_chunks(dpu):
    job_id = dpu.run("Null", n=6, m="hello from qsub", C=1, dpu_mem=100, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 2, "max_array_size 4: an array of 4 and one of 2"
    view = finished(dpu, job_id)
    assert view.counts.letters == (6, 0, 0, 0, 0)
    assert [r["message"] for r in dpu.get_job_result(job_id)] == ["hello from qsub"] * 6
    assert sorted(int(p.name) for p in Path(job.jobdir, "p").iterdir()) == list(range(6))
    assert "hello from qsub" in "\n".join(dpu.get_logs(job_id))


def test_directives_reach_the_scheduler(dpu):
    job_id = dpu.run("Null", s=60, dpu_time=90, dpu_mem=123, return_jobid=True)
    job = dpu._store.job(job_id)
    out = subprocess.run(["scontrol", "show", "job", job.native_ids[0]], capture_output=True,
                         text=True, check=True).stdout
    assert f"JobName=dpu.{job.user}.{job_id}" in out
    assert "TimeLimit=00:02:00" in out and "Partition=debug" in out and "mem=123M" in out
    dpu.cancel_job(job_id, force=True)


def test_task_error_is_E(dpu):
    job_id = dpu.run("Null>Null", x=True, n=2, dpu_mem=100, return_jobid=True)
    view = finished(dpu, job_id)
    assert view.counts.letters == (0, 2, 0, 2, 0)
    assert "RuntimeError: Null task asked to fail" in "\n".join(dpu.get_logs(job_id))


def test_cancel_queued_is_S_and_running_needs_force(dpu):
    job_id = dpu.run("Null", n=3, s=120, dpu_mem=100, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    subprocess.run(["scontrol", "hold", native], check=True)  # keep it queued, deterministically
    assert dpu.get_status(job_id)[0].status == "QUEUED"
    dpu.cancel_job(job_id)
    assert finished(dpu, job_id).counts.letters == (0, 0, 0, 3, 0)

    running = dpu.run("Null", n=2, s=120, dpu_mem=100, return_jobid=True)
    deadline = time.monotonic() + 60
    while sum(p.state == "RUNNING" for p in (dpu.get_status(running) and dpu._store.procs(running))) < 2:
        assert time.monotonic() < deadline, "the processes never started"
        time.sleep(0.5)
    left = dpu.cancel(running)  # running: a line saying how to kill them, no exception
    assert left.running >= 1 and "force=True" in left.line
    dpu.cancel_job(running, force=True)
    assert finished(dpu, running).counts.letters == (0, 0, 2, 0, 0)


def test_status_is_one_qstat_call_whatever_the_number_of_jobs(dpu, commands):
    ids = [dpu.run("Null", n=3, dpu_mem=50, return_jobid=True) for _ in range(6)]
    commands.clear()
    dpu.get_status(ids)
    # One transport call runs qstat (`qstat -x`, else its text form: the wrappers have no -x).
    assert len([c for c in commands if any(Path(a).name == "qstat" for a in c)]) == 1
    assert all(len(c) < 6 for c in commands), "the command line must not grow with the job count"
    for job_id in ids:
        assert finished(dpu, job_id).counts.letters == (3, 0, 0, 0, 0)


def test_job_that_left_qstat_gets_its_status_from_the_worker_record(dpu):
    job_id = dpu.run("Null", n=2, dpu_mem=50, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    deadline = time.monotonic() + 120
    while native in subprocess.run([f"{BIN}/qstat"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "job never left qstat"
        time.sleep(0.5)
    view = dpu.get_status(job_id)[0]
    assert view.status == "FINISHED" and view.counts.letters == (2, 0, 0, 0, 0)


def test_qsub_refusal_is_recorded_as_not_submitted(dpu, env):
    env.write_dpu("badqueue", scheduler="pbs", flavor="torque", bin_dir=BIN,
                  partitions=[{"name": "nosuchqueue"}])
    dpu.select_dpu("badqueue")
    with pytest.raises(SubmitError, match="qsub refused it"):
        dpu.run("Null", dpu_mem=50)
    job = dpu._store.jobs(dpu="badqueue")[-1]
    assert job.phase == "not_submitted" and "partition" in job.error.lower()


def test_rerun_sends_one_array_per_run_of_failed_indices(dpu):
    """Processes 1, 2 and 5 of 6 (chunks of 4) rerun as an array 0-1 at offset 1 and a plain
    job at offset 5, under the same DPU job id; then every process ended N."""
    job_id = dpu.run("Null", n=6, ff="1,2,5", dpu_mem=100, return_jobid=True)
    assert finished(dpu, job_id).counts.letters == (3, 3, 0, 0, 0)
    assert dpu.rerun(job_id, only="E") == [1, 2, 5]
    job = dpu._store.job(job_id)
    assert job.dpu_options["layout"] == [[1, [1, 2]], [5, [5]]] and len(job.native_ids) == 2
    view = finished(dpu, job_id)
    assert view.counts.letters == (6, 0, 0, 0, 0)
    assert dpu._store.attempt_numbers(job_id) == {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 2}
