"""Issue 13: preemption on the real SLURM of harness/slurm-up.sh. A slow Bias asks for every CPU
of the node in partition scavenger (preempt/partition_prio, PreemptMode=REQUEUE); a job in
partition urgent preempts it. The worker, warned by SIGUSR1, saves its checkpoint and requeues
itself; the next attempt resumes from the step it reached and the process ends N at attempt 2,
never A. A requeued job waits for the whole node again (other tests' jobs share it): the waits
are bounded generously, nothing asserts on time."""
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import slurm_processor, text_of
from tests.conftest import until as shared_until
from tests.test_slurm import write_config

pytestmark = pytest.mark.slurm
WAIT = 600.0   # bound of each wait (s)


@pytest.fixture
def dpu(slurm_cluster, tmp_path, monkeypatch):
    # The victim holds every CPU of the node, so the urgent job can start only by preempting it.
    cpus = subprocess.run(["sinfo", "-h", "-p", "scavenger", "-o", "%c"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    # A DPU whose jobs are never preempted: only their time limit warns them.
    write_config(tmp_path, name="limited", time_factor=1, requeue={"max": 4, "warn": 60})
    with slurm_processor(tmp_path, monkeypatch, "scav",
                         partitions=[{"name": "scavenger", "max_time": 86400, "max_mem": 4000}],
                         extra_directives=[f"--cpus-per-task={cpus}"],
                         requeue={"max": 3, "warn": 60}) as proc:
        proc.extra_slurm_jobs = []  # the urgent jobs a test queues, cancelled at the end
        try:
            yield proc
        finally:
            if proc.extra_slurm_jobs:
                subprocess.run(["scancel", *proc.extra_slurm_jobs], check=False)


def until(cond, what):
    shared_until(cond, what, WAIT)


def test_a_preempted_bias_resumes_from_its_checkpoint_and_ends_N_at_attempt_2(dpu):
    job_id = dpu.run("Bias", i="WFI", c="ccd50", d="2000-04-28", p={"steps": 40}, C=True,
                     dpu_time=900, dpu_mem=200, return_jobid=True)
    job = dpu._store.job(job_id)
    log = Path(job.jobdir) / "p" / "0" / "log"
    until(lambda: "Stacked step 10 of 40" in text_of(log), "the Bias did not get to step 10")
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", "1", "-J", "dpu-test-urgent",
                             "-o", "/dev/null", "--wrap", "sleep 5"],
                            capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    dpu.extra_slurm_jobs.append(urgent)
    seen = []
    def ended():
        view = dpu.poll(job_id)[0]
        seen.append((view.status, view.counts.letters))
        return view.status == "FINISHED"
    until(ended, "the preempted Bias did not finish")
    # Queued or running between the attempts, never counted A.
    assert all(letters[2] == 0 for _, letters in seen), seen
    assert seen[-1][1] == (1, 0, 0, 0, 0)
    text = text_of(log)
    assert "SIGUSR1 before preemption" in text and "scontrol requeue" in text
    resumed = re.search(r"Resuming from checkpoint at step (\d+) of 40", text)
    assert resumed and int(resumed.group(1)) >= 10, text
    attempts = dpu._store.attempts(job_id)
    assert [(a, o) for _, a, o, _, _ in attempts] == [(1, "A"), (2, "N")], attempts
    assert attempts[0][3].startswith("requeued: SIGUSR1 before preemption")
    dpu.show_attempts(job_id)
    assert re.search(r"process 0: attempt 1 A \(requeued: SIGUSR1 before preemption[^)]*\); attempt 2 N",
                     dpu.out.getvalue()), dpu.out.getvalue()
    [bias] = dpu.get_job_result(job_id)
    assert bias["class"] == "BiasFrame" and bias["chip"] == "ccd50"
    restarts = subprocess.run(["scontrol", "show", "job", job.native_ids[0]], capture_output=True,
                              text=True).stdout
    assert "Restarts=1" in restarts or not restarts, restarts   # SLURM ran it twice (when it still knows it)


def test_a_bias_warned_before_its_time_limit_requeues_itself_and_ends_N(dpu):
    dpu.select_dpu("limited")
    # --time=00:02:00 and 75 s of work: SLURM warns about 60 s before the limit (its signal
    # may come up to a minute early), so it takes two attempts or more.
    job_id = dpu.run("Bias", i="WFI", c="ccd51", d="2000-04-28", p={"steps": 75}, C=True,
                     dpu_time=120, dpu_mem=200, return_jobid=True)
    job = dpu._store.job(job_id)
    seen = []

    def ended():
        view = dpu.poll(job_id)[0]
        seen.append(view.counts.letters)
        return view.status == "FINISHED"
    until(ended, "the Bias did not finish")
    assert all(letters[2] == 0 for letters in seen) and seen[-1] == (1, 0, 0, 0, 0), seen
    attempts = dpu._store.attempts(job_id)
    assert len(attempts) >= 2 and attempts[-1][2] == "N", attempts
    assert all(r[3].startswith("requeued: SIGUSR1 before the time limit") for r in attempts[:-1]), attempts
    text = text_of(Path(job.jobdir) / "p" / "0" / "log")
    assert "scontrol requeue" in text and re.search(r"Resuming from checkpoint at step [1-9]\d* of 75", text)


def test_a_target_whose_bias_is_preempted_resumes_it_and_then_builds_the_hot_pixels(dpu, tmp_path):
    """Issue 13's "done when" in one flow: run_target plans Bias and HotPixels as two jobs with an
    edge, the Bias is preempted halfway and resumes from its checkpoint, HotPixels then runs on
    its master bias, and a second run_target finds everything done."""
    cpus = subprocess.run(["sinfo", "-h", "-p", "scavenger", "-o", "%c"], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    # Limits of 15 min (min_time): a 1-minute limit would bring the warning at once.
    write_config(tmp_path, name="scavtarget", min_time=900,
                 partitions=[{"name": "scavenger", "max_time": 86400, "max_mem": 4000}],
                 extra_directives=[f"--cpus-per-task={cpus}"], requeue={"max": 3, "warn": 60})
    dpu.select_dpu("scavtarget")
    jobs = dpu.run_target("HotPixels", i="WFI", c="ccd52", d="2000-04-28", p={"steps": 40})
    bias, hot = jobs["Bias"], jobs["HotPixels"]
    assert bias and hot and dpu._store.job(hot).dpu_options["after"]["jobs"] == [bias]
    log = Path(dpu._store.job(bias).jobdir) / "p" / "0" / "log"
    until(lambda: "Stacked step 10 of 40" in text_of(log), "the Bias did not get to step 10")
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-c", "1", "-J", "dpu-test-urgent",
                             "-o", "/dev/null", "--wrap", "sleep 5"],
                            capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    dpu.extra_slurm_jobs.append(urgent)
    views = dpu.wait([bias, hot], timeout=2 * WAIT, interval=1.0)
    assert [v.counts.line() for v in views] == ["1/0/0/0/0", "1/0/0/0/0"], views
    assert [(a, o) for _, a, o, _, _ in dpu._store.attempts(bias)] == [(1, "A"), (2, "N")]
    assert re.search(r"Resuming from checkpoint at step \d+ of 40", text_of(log)), text_of(log)
    hot_log = text_of(Path(dpu._store.job(hot).jobdir) / "p" / "0" / "log")
    assert f"Using master bias MasterBias_WFI_ccd52_2000-04-28.json of {bias}." in hot_log, hot_log
    before = dpu.get_jobids()
    again = dpu.run_target("HotPixels", i="WFI", c="ccd52", d="2000-04-28", p={"steps": 40})
    assert not any(again.values()) and dpu.get_jobids() == before   # all done: nothing submitted
