"""The SLURM DPU against the real single-node SLURM that harness/slurm-up.sh starts."""
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from dpu_slurm.errors import SubmitError
from tests.conftest import slurm_processor, write_slurm

pytestmark = pytest.mark.slurm


def write_config(folder, name="testslurm", **extra):
    write_slurm(folder, name, **{"max_array_size": 400, **extra})


@pytest.fixture
def dpu(slurm_cluster, tmp_path, monkeypatch):
    with slurm_processor(tmp_path, monkeypatch, "testslurm", max_array_size=400) as proc:
        yield proc


def finished(dpu, job_id, timeout=120):
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status} after {timeout} s"
    return view


def squeue_ids():
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%F"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_readnoise_runs_as_one_array_job_and_ends_normal(dpu):
    job_id = dpu.run("ReadNoise", i="WFI", d="2000-04-28", C=1, dpu_mem=100, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 1, "8 processes must be one array job"
    view = finished(dpu, job_id)
    assert view.counts.letters == (8, 0, 0, 0, 0)
    dpu.get_status(job_id)
    assert f"Jobid {job_id} has status FINISHED N/E/A/S/U 8/0/0/0/0" in dpu.out.getvalue()
    chips = sorted(obj["chip"] for obj in dpu.get_job_result(job_id))
    assert chips == [f"ccd{n}" for n in range(50, 58)]
    logs = "\n".join(dpu.get_logs(job_id))
    assert re.search(r"The read noise \(ADU\) for ccd ccd53 is :\s+\d+\.\d\d", logs)


def test_script_carries_time_memory_partition_and_tag(dpu):
    job_id = dpu.run("Null", dpu_time=90, dpu_mem=123, return_jobid=True)
    job = dpu._store.job(job_id)
    out = subprocess.run(["scontrol", "show", "job", job.native_ids[0]], capture_output=True,
                         text=True, check=True).stdout
    assert f"JobName=dpu.{job.user}.{job_id}" in out
    assert "TimeLimit=00:02:00" in out  # 90 s rounds up to whole minutes
    assert "Partition=debug" in out
    assert re.search(r"mem=123M", out)
    finished(dpu, job_id)


def test_task_error_is_E_and_later_tasks_of_the_chain_S(dpu):
    job_id = dpu.run("Null>Null", x=True, n=3, dpu_mem=50, return_jobid=True)
    view = finished(dpu, job_id)
    assert view.counts.letters == (0, 3, 0, 3, 0)
    assert "RuntimeError: Null task asked to fail" in "\n".join(dpu.get_logs(job_id))


def test_job_that_left_squeue_gets_its_status_from_the_worker_record(dpu):
    job_id = dpu.run("Null", n=2, dpu_mem=50, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    deadline = time.monotonic() + 120
    while native in squeue_ids():  # MinJobAge is small in the harness: wait until slurm forgets it
        assert time.monotonic() < deadline, "job never left squeue"
        time.sleep(0.5)
    assert all(p.state == "QUEUED" for p in dpu._store.procs(job_id)), "nothing polled before"
    view = dpu.get_status(job_id)[0]
    assert view.status == "FINISHED" and view.counts.letters == (2, 0, 0, 0, 0)


def test_time_limit_kill_is_A_with_the_reason(dpu):
    job_id = dpu.run("Null", s=600, dpu_time=1, dpu_mem=50, return_jobid=True)
    view = finished(dpu, job_id, timeout=240)
    assert view.counts.letters == (0, 0, 1, 0, 0)
    reasons = " ".join(dpu._session.reasons(view.job))
    assert "TIMEOUT: killed after 00:01:00" in reasons


def test_cancel_queued_job_gives_S_and_running_needs_force(dpu):
    blocker = dpu.run("Null", s=120, n=40, dpu_mem=50, return_jobid=True)
    waiting = dpu.run("Null", n=3, dpu_mem=50, return_jobid=True)
    deadline = time.monotonic() + 60
    while not any(p.state == "RUNNING" for p in (dpu.get_status(blocker) and dpu._store.procs(blocker))):
        assert time.monotonic() < deadline, "blocker never started"
        time.sleep(0.5)
    assert dpu.get_status(waiting)[0].status == "QUEUED"
    dpu.cancel_job(waiting)
    assert finished(dpu, waiting).counts.letters == (0, 0, 0, 3, 0)
    left = dpu.cancel(blocker)  # running: a line saying how to kill them, no exception
    assert left.running >= 1 and "force=True" in left.line
    dpu.cancel_job(blocker, force=True)
    view = finished(dpu, blocker, timeout=60)
    n, e, a, s, u = view.counts.letters
    assert a >= 1 and n == e == u == 0 and a + s == 40
    assert "cancelled while running" in dpu._session.reasons(view.job)


def test_sbatch_refusal_is_recorded_as_not_submitted(dpu, tmp_path):
    write_config(tmp_path, name="badpart", partitions=[{"name": "nosuchpartition"}])
    dpu.select_dpu("badpart")
    with pytest.raises(SubmitError, match="sbatch refused it"):
        dpu.run("Null", dpu_mem=50)
    job = dpu._store.jobs(dpu="badpart")[-1]
    assert job.phase == "not_submitted" and "partition" in job.error.lower()
    assert dpu.get_status(job.id)[0].status == "NOT SUBMITTED"


HOSTILE = ("it's \"quoted\" $(touch {marker}) `touch {marker}`; touch {marker} \n"
           "newline\tand unicode: \u00e9\u4e2d\U0001f52d \\ back" + "x" * 10_000)


def test_hostile_option_values_reach_the_task_byte_exact(dpu, tmp_path):
    marker = tmp_path / "pwned"
    message = HOSTILE.format(marker=marker)
    job_id = dpu.run("Null", m=message, C=1, dpu_mem=50, return_jobid=True)
    assert finished(dpu, job_id).counts.letters == (1, 0, 0, 0, 0)
    assert dpu.get_job_result(job_id)[0]["message"] == message
    assert not marker.exists()


def test_thousand_processes_in_one_job(dpu):
    job_id = dpu.run("Null", n=1000, dpu_mem=20, return_jobid=True)
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 3  # max_array_size 400 -> chunks of 400, 400, 200
    view = finished(dpu, job_id, timeout=900)
    assert view.counts.letters == (1000, 0, 0, 0, 0)
    results = json.loads(Path(job.jobdir, "p", "999", "status.json").read_text())
    assert results["tasks"] == ["N"]


def test_one_squeue_call_per_poll_whatever_the_number_of_jobs(dpu, commands):
    ids = [dpu.run("Null", n=3, dpu_mem=20, return_jobid=True) for _ in range(12)]
    commands.clear()
    dpu.get_status(ids)
    assert [c[0] for c in commands].count("squeue") == 1
    assert all(len(c) < 10 for c in commands), "the command line must not grow with the job count"
    for job_id in ids:
        finished(dpu, job_id)


def test_poll_back_off_spaces_scheduler_calls(dpu, tmp_path, commands):
    write_config(tmp_path, name="slowpoll", poll={"min_interval": 30, "max_interval": 60})
    dpu.select_dpu("slowpoll")
    job_id = dpu.run("Null", dpu_mem=20, return_jobid=True)
    commands.clear()
    for _ in range(5):
        dpu.get_status(job_id)
    assert [c[0] for c in commands].count("squeue") == 1, "five polls within min_interval: one squeue"


def test_process_without_worker_record_gets_its_end_from_sacct(dpu, tmp_path):
    """The worker never ran (no such Python on the node): squeue forgets the job, no record
    exists, and the harness's accounting (slurmdbd) says FAILED -> E, not U."""
    write_config(tmp_path, name="nopython", python="/nonexistent/python3")
    dpu.select_dpu("nopython")
    job_id = dpu.run("Null", dpu_mem=50, return_jobid=True)
    native = dpu._store.job(job_id).native_ids[0]
    deadline = time.monotonic() + 120
    while native in squeue_ids():
        assert time.monotonic() < deadline, "job never left squeue"
        time.sleep(0.5)
    time.sleep(3)  # past the poll grace, and sacct has the end
    view = finished(dpu, job_id, timeout=60)
    assert view.counts.letters == (0, 1, 0, 0, 0)
    assert any("FAILED" in reason for reason in dpu._session.reasons(view.job))


def test_rerun_only_a_with_more_time_brings_a_night_of_8_to_7_1_0_0_0(dpu):
    """The issue's own case: of 8 processes, 2 run past the time limit (A, TIMEOUT) and 1 fails
    (E); rerun --only A --more-time 3 resubmits exactly those 2 under the same job id, with three
    times the limit, and they end N: 7/1/0/0/0 with attempt 2 on those two."""
    job_id = dpu.run("Null", n=8, sf="2,6", ff="5", dpu_mem=50, return_jobid=True)
    first = finished(dpu, job_id, timeout=400)
    # ff fails process 5 on its first attempt only; it is not rerun (only A), so it stays E.
    assert first.counts.letters == (5, 1, 2, 0, 0), first.counts.letters
    assert "TIMEOUT" in " ".join(dpu._session.reasons(first.job))
    job = dpu._store.job(job_id)
    limit = re.search(r"#SBATCH --time=(\S+)", (Path(job.jobdir) / "job-0.sh").read_text()).group(1)
    assert dpu.rerun(job_id, only="A", time_factor=3) == [2, 6]
    script = (Path(job.jobdir) / "job-r2-0.sh").read_text()
    assert "#SBATCH --array=2,6\n" in script
    again = re.search(r"#SBATCH --time=(\S+)", script).group(1)
    assert minutes(again) == 3 * minutes(limit), (limit, again)
    view = finished(dpu, job_id, timeout=300)
    assert (view.status, view.counts.letters) == ("FINISHED", (7, 1, 0, 0, 0))
    assert dpu._store.attempt_numbers(job_id) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 6: 2, 7: 1}
    dpu.get_status(job_id)
    assert f"Jobid {job_id} has status FINISHED N/E/A/S/U 7/1/0/0/0" in dpu.out.getvalue()


def minutes(text: str) -> int:
    """SLURM's --time as minutes ('3', '03:00', '0:03:00', '1-00:00:00')."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        return int(days or 0) * 1440 + parts[0]
    h, m = (parts[-3] if len(parts) == 3 else 0), parts[-2]
    return int(days or 0) * 1440 + h * 60 + m + (1 if parts[-1] else 0)


def test_rerun_only_e_resubmits_one_array_of_exactly_the_failed_indices(dpu):
    """Processes 1 and 3 of 4 fail on their first attempt; rerun --only E sends ONE sbatch with
    --array=1,3 under the same DPU job id, and the job ends 4/0/0/0/0 with attempt 2 on those."""
    job_id = dpu.run("Null", n=4, ff="1,3", dpu_mem=50, return_jobid=True)
    first = finished(dpu, job_id)
    assert first.counts.letters == (2, 2, 0, 0, 0)
    old_native = dpu._store.job(job_id).native_ids
    assert dpu.rerun(job_id, only="E") == [1, 3]
    job = dpu._store.job(job_id)
    assert len(job.native_ids) == 1 and job.native_ids != old_native
    assert job.dpu_options["natives"] == {"1": old_native}
    script = (Path(job.jobdir) / "job-r2-0.sh").read_text()
    assert "#SBATCH --array=1,3\n" in script and "export DPU_RERUN=2" in script
    view = finished(dpu, job_id)
    assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
    assert dpu._store.attempt_numbers(job_id) == {0: 1, 1: 2, 2: 1, 3: 2}
    # The scheduler's own accounting saw an array of exactly those two indices.
    deadline = time.monotonic() + 60
    while True:
        res = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job.native_ids[0], "-o", "JobID,State"],
                             capture_output=True, text=True, check=True)
        tasks = sorted(line.split("|")[0] for line in res.stdout.split())
        if tasks == [f"{job.native_ids[0]}_1", f"{job.native_ids[0]}_3"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert tasks == [f"{job.native_ids[0]}_1", f"{job.native_ids[0]}_3"], res.stdout
    dpu.get_status(job_id)
    assert f"Jobid {job_id} has status FINISHED N/E/A/S/U 4/0/0/0/0" in dpu.out.getvalue()
