"""Grid Engine on the command line (scheduler: sge, submit: cli) against the real Grid Engine
that harness/sge-up.sh starts: qsub -t, one qstat -xml per poll, qdel."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import sge_processor

pytestmark = pytest.mark.sge


@pytest.fixture
def dpu(sge_cluster, make_session, monkeypatch):
    with sge_processor(make_session, monkeypatch, "testsge") as proc:
        yield proc


def finished(dpu, job_id, timeout=180):
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status} after {timeout} s"
    return view


def test_success_in_array_chunks_with_one_qstat_per_poll(dpu, commands):
    job_id = dpu.run("Null", n=5, m="hi", C=1, dpu_mem=400, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 2 and all(n.isdigit() for n in job.native_ids)
    commands.clear()
    dpu.get_status(job_id)
    assert [c[0] for c in commands].count("qstat") == 1
    view = finished(dpu, job_id)
    assert view.counts.letters == (5, 0, 0, 0, 0)
    assert sorted(int(p.name) for p in Path(job.jobdir, "p").iterdir()) == list(range(5))
    assert [r["message"] for r in dpu.get_job_result(job_id)] == ["hi"] * 5


def test_task_error_is_E(dpu):
    job_id = dpu.run("Null", x=True, dpu_mem=400, return_jobid=True)
    assert finished(dpu, job_id).counts.letters == (0, 1, 0, 0, 0)


def test_cancel_held_job_is_S_and_running_needs_force(dpu):
    queue = f"all.q@{os.uname().nodename}"
    subprocess.run(["qmod", "-d", queue], check=True, capture_output=True)  # nothing starts
    try:
        job_id = dpu.run("Null", n=2, dpu_mem=400, return_jobid=True)
        assert dpu.get_status(job_id)[0].status == "QUEUED"
        dpu.cancel_job(job_id)
    finally:
        subprocess.run(["qmod", "-e", queue], check=True, capture_output=True)
    assert finished(dpu, job_id, timeout=60).counts.letters == (0, 0, 0, 2, 0)

    running = dpu.run("Null", s=120, dpu_mem=400, return_jobid=True)
    deadline = time.monotonic() + 60
    record = Path(dpu._store.job(running).jobdir, "p", "0", "status.json")
    while not record.exists():  # the worker started: a kill now is A
        assert time.monotonic() < deadline
        time.sleep(0.2)
    dpu.get_status(running)
    left = dpu.cancel(running)  # running: a line saying how to kill them, no exception
    assert left.running >= 1 and "force=True" in left.line
    dpu.cancel_job(running, force=True)
    assert finished(dpu, running, timeout=60).counts.letters == (0, 0, 1, 0, 0)


def test_history_reads_the_accounting_file(dpu):
    """A process the worker could not report on gets its end from qacct (one call)."""
    job_id = dpu.run("Null", x=True, dpu_mem=400, return_jobid=True)
    finished(dpu, job_id)
    job = dpu._store.job(job_id)
    scheduler = dpu._session_for(job).scheduler
    deadline = time.monotonic() + 60
    while not (seen := scheduler.history([job])).get(job_id):  # accounting is flushed every 15 s
        assert time.monotonic() < deadline, "qacct never listed the job"
        time.sleep(2)
    assert (seen[job_id][0].letter, seen[job_id][0].reason) == ("E", "exit status 1")


def test_rerun_sends_one_task_range_per_run_of_failed_indices(dpu, commands):
    """Grid Engine's -t takes one range: processes 0, 1 and 4 of 5 (chunks of 3) rerun as two
    arrays, tasks 1-2 at offset 0 and task 1 at offset 4, under the same DPU job id."""
    job_id = dpu.run("Null", n=5, ff="0,1,4", dpu_mem=400, return_jobid=True)
    assert finished(dpu, job_id).counts.letters == (2, 3, 0, 0, 0)
    commands.clear()
    assert dpu.rerun(job_id, only="E") == [0, 1, 4]
    assert [c[0] for c in commands].count("qsub") == 2
    job = dpu._store.job(job_id)
    assert job.dpu_options["layout"] == [[0, [0, 1]], [4, [4]]] and len(job.native_ids) == 2
    first, second = (Path(job.jobdir, f"job-r2-{k}.sh").read_text() for k in (0, 1))
    assert "#$ -t 1-2\n" in first and '"$(( 0 + SGE_TASK_ID - 1 ))"' in first
    assert "#$ -t 1-1\n" in second and '"$(( 4 + SGE_TASK_ID - 1 ))"' in second
    view = finished(dpu, job_id)
    assert view.counts.letters == (5, 0, 0, 0, 0)
    assert dpu._store.attempt_numbers(job_id) == {0: 2, 1: 2, 2: 1, 3: 1, 4: 2}
