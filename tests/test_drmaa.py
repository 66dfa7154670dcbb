"""DRMAA DPU (submit: drmaa) against the real single-node Grid Engine that harness/sge-up.sh starts."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from dpu_slurm.errors import ConfigError
from dpu_slurm.schedulers.drmaa import DRMAAScheduler
from tests.conftest import SGE_ENV

pytestmark = pytest.mark.sge


@pytest.fixture
def dpu(sge_cluster, make_session, monkeypatch):
    # The user sets nothing: no GLIBC_TUNABLES, no DRMAA_LIBRARY_PATH, no SGE_ROOT.
    for var in ("GLIBC_TUNABLES", "DRMAA_LIBRARY_PATH", "SGE_ROOT", "SGE_CELL"):
        monkeypatch.delenv(var, raising=False)
    made = make_session("testdrmaa", scheduler="sge", submit="drmaa", min_time=60,
                        max_array_size=150, poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    yield made.dpu
    for job_id in made.dpu.get_jobids():  # leave the cluster empty for the next test
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["qdel", *job.native_ids], check=False, capture_output=True,
                           env={**os.environ, **SGE_ENV})


def finished(dpu, job_id, timeout=180):
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status} after {timeout} s"
    return view


def qstat_jobs():
    out = subprocess.run(["qstat", "-xml"], capture_output=True, text=True, check=True,
                         env={**os.environ, **SGE_ENV}).stdout
    return out


def test_success_is_N_with_results_and_logs(dpu):
    job_id = dpu.run("Null", n=3, m="hello from sge", C=1, dpu_mem=500, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 1 and job.native_ids[0].isdigit(), "one bulk job, its array id"
    view = finished(dpu, job_id)
    assert view.counts.letters == (3, 0, 0, 0, 0)
    assert [r["message"] for r in dpu.get_job_result(job_id)] == ["hello from sge"] * 3
    assert "hello from sge" in "\n".join(dpu.get_logs(job_id))
    # Each bulk task ran the process its index names (the worker wrote p/0, p/1, p/2).
    assert sorted(p.name for p in Path(job.jobdir, "p").iterdir()) == ["0", "1", "2"]


def test_task_error_is_E(dpu):
    job_id = dpu.run("Null>Null", x=True, n=2, dpu_mem=500, return_jobid=True)
    view = finished(dpu, job_id)
    assert view.counts.letters == (0, 2, 0, 2, 0)
    assert "RuntimeError: Null task asked to fail" in "\n".join(dpu.get_logs(job_id))


def test_resources_reach_grid_engine_as_native_specification(dpu):
    job_id = dpu.run("Null", s=30, dpu_time=90, dpu_mem=640, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    out = subprocess.run(["qstat", "-j", native], capture_output=True, text=True, check=True,
                         env={**os.environ, **SGE_ENV}).stdout
    assert f"job_name:                   dpu.{dpu._store.job(job_id).user}.{job_id}" in out
    assert "h_rt=120" in out and "h_vmem=640M" in out  # 90 s rounds up to whole minutes
    dpu.cancel_job(job_id, force=True)


def test_cancel_queued_is_S_and_running_needs_force(dpu):
    blocker = dpu.run("Null", s=120, n=8, dpu_mem=500, return_jobid=True)  # fills the 8 slots
    waiting = dpu.run("Null", n=3, dpu_mem=500, return_jobid=True)
    deadline = time.monotonic() + 60
    records = [Path(dpu._store.job(blocker).jobdir, "p", str(i), "status.json") for i in range(8)]
    while not all(r.exists() for r in records):  # every worker started: a kill now is A
        assert time.monotonic() < deadline, "blocker never filled the queue"
        time.sleep(0.2)
    assert dpu.get_status(waiting)[0].status == "QUEUED"
    dpu.cancel_job(waiting)
    assert finished(dpu, waiting, timeout=60).counts.letters == (0, 0, 0, 3, 0)
    left = dpu.cancel(blocker)  # running: a line saying how to kill them, no exception
    assert left.running >= 1 and "force=True" in left.line
    dpu.cancel_job(blocker, force=True)
    view = finished(dpu, blocker, timeout=60)
    assert view.counts.letters == (0, 0, 8, 0, 0)
    assert native_gone(dpu, blocker)


def native_gone(dpu, job_id, timeout=30):
    native = dpu._store.job(job_id).native_ids[0]
    deadline = time.monotonic() + timeout
    while f"<JB_job_number>{native}</JB_job_number>" in qstat_jobs():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_bulk_job_of_200_processes_in_two_chunks(dpu):
    job_id = dpu.run("Null", n=200, dpu_mem=300, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 2, "max_array_size 150: two bulk jobs (150 + 50)"
    view = finished(dpu, job_id, timeout=600)
    assert view.counts.letters == (200, 0, 0, 0, 0)
    assert Path(job.jobdir, "p", "199", "status.json").exists()
    assert Path(job.jobdir, "p", "150", "status.json").exists()


def test_status_is_one_qstat_call_and_no_per_job_drmaa_call(dpu, monkeypatch, commands):
    ids = [dpu.run("Null", n=4, dpu_mem=300, return_jobid=True) for _ in range(5)]
    helper_calls = []
    commands.clear()
    calls = commands
    scheduler = dpu._session_for(dpu._store.job(ids[0])).scheduler
    assert isinstance(scheduler, DRMAAScheduler)
    real_call = type(scheduler.helper).call
    monkeypatch.setattr(type(scheduler.helper), "call",
                        lambda self, op, **kw: helper_calls.append(op) or real_call(self, op, **kw))
    views = dpu.get_status(ids)
    assert [c[0] for c in calls].count("qstat") == 1
    assert all(len(c) < 6 for c in calls), "the command line must not grow with the job count"
    assert "status" not in helper_calls, "no jobStatus per process in a poll"
    assert {v.status for v in views} <= {"QUEUED", "RUNNING", "FINISHED"}
    for job_id in ids:
        assert finished(dpu, job_id).counts.letters == (4, 0, 0, 0, 0)


def test_jobstatus_mapping_of_a_live_and_an_ended_process(dpu):
    job_id = dpu.run("Null", s=20, dpu_mem=300, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    scheduler = dpu._session_for(dpu._store.job(job_id)).scheduler
    deadline = time.monotonic() + 60
    while (obs := scheduler.status([f"{native}.1"])[f"{native}.1"]).state == "QUEUED":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert obs.state == "RUNNING"
    record = Path(dpu._store.job(job_id).jobdir, "p", "0", "status.json")
    while not record.exists():  # killed before its worker started, it would count S, not A
        assert time.monotonic() < deadline
        time.sleep(0.1)
    dpu.cancel_job(job_id, force=True)
    while (ended := scheduler.status([f"{native}.1"])[f"{native}.1"]).state != "ENDED":
        assert time.monotonic() < deadline, f"still {ended} after the cancel"
        time.sleep(0.3)
    assert (ended.state, ended.letter) == ("ENDED", "S")  # DRMAA FAILED: killed -> S, or A with a record
    assert finished(dpu, job_id).counts.letters == (0, 0, 1, 0, 0)


def test_missing_libdrmaa_is_a_clear_config_error(make_session, monkeypatch):
    monkeypatch.delenv("DRMAA_LIBRARY_PATH", raising=False)
    made = make_session("nolib", scheduler="sge", submit="drmaa",
                        drmaa_library="/nonexistent/libdrmaa.so.1.0")
    with pytest.raises(ConfigError, match=r"libdrmaa.*drmaa_library.*DRMAA_LIBRARY_PATH.*submit: cli"):
        made.dpu.run("Null", dpu_mem=300)
    job = made.dpu._store.jobs(dpu="nolib")[-1]
    assert job.phase == "not_submitted"


def test_rerun_is_one_bulk_per_chunk_whose_tasks_run_exactly_the_failed_indices(dpu, monkeypatch):
    """Issue 12: a rerun over DRMAA submits, per chunk of max_array_size (150), one runBulkJobs of
    as many tasks as failed processes; task k runs the k-th of them (the script's positions)."""
    job_id = dpu.run("Null", n=155, ff="2,5,151,153", dpu_mem=500, return_jobid=True)
    first = finished(dpu, job_id, timeout=400)
    assert first.counts.letters == (151, 4, 0, 0, 0)
    from dpu_slurm.schedulers.drmaa import Helper
    calls = []
    real = Helper.call

    def counted(self, op, **kw):
        calls.append((op, kw.get("count")))
        return real(self, op, **kw)
    monkeypatch.setattr(Helper, "call", counted)
    assert dpu.rerun(job_id, only="E") == [2, 5, 151, 153]
    assert [c for c in calls if c[0] == "submit"] == [("submit", 2), ("submit", 2)]
    job = dpu._store.job(job_id)
    assert job.dpu_options["layout"] == [[0, [2, 5]], [150, [151, 153]]]
    assert "read -r -a positions <<< '151 153'" in Path(job.jobdir, "job-r2-1.sh").read_text()
    view = finished(dpu, job_id)
    assert (view.status, view.counts.letters) == ("FINISHED", (155, 0, 0, 0, 0))
    assert {i: a for i, a in dpu._store.attempt_numbers(job_id).items() if a > 1} == {
        2: 2, 5: 2, 151: 2, 153: 2}
    # Each retried process has its first attempt's record aside and a new one of its own.
    for idx in (2, 5, 151, 153):
        assert Path(job.jobdir, "p", str(idx), "attempt-1", "status.json").exists()
        assert '"N"' in Path(job.jobdir, "p", str(idx), "status.json").read_text()
