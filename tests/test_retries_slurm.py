"""Retries and ``rerun --auto`` against the real SLURM of harness/slurm-up.sh: the policy applied
by the prompt's poll, by two cron-style ``dpu status`` processes at once (one sbatch), and
--auto giving a timed-out process twice the time in a partition that takes it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from dpu_slurm import Processor
from dpu_slurm.session import JobView
from tests.conftest import slurm_processor

pytestmark = pytest.mark.slurm


# Both exist in the harness (and take anything); the DPU file says what each is for.
PARTITIONS = [{"name": "debug", "max_time": 60, "max_mem": 4000},
              {"name": "long", "max_time": 600, "max_mem": 4000}]


@pytest.fixture
def dpu(slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Processor]:
    with slurm_processor(tmp_path, monkeypatch, "rslurm", partitions=PARTITIONS) as proc:
        yield proc


def settle(dpu: Processor, job_id: int, attempts: Dict[int, int], timeout: float = 240) -> JobView:
    """Poll as the prompt does until the job is finished with these attempt numbers."""
    end = time.monotonic() + timeout
    while True:
        view = dpu.wait(job_id, timeout=max(1.0, end - time.monotonic()), interval=0.5)[0]
        if view.status == "FINISHED" and dpu._store.attempt_numbers(job_id) == attempts:
            return view
        assert time.monotonic() < end, (view, dpu._store.attempt_numbers(job_id))
        time.sleep(0.5)


def arrays_of(dpu: Processor, job_id: int) -> List[str]:
    """The SLURM array jobs accounting holds for this DPU job (any of its submissions)."""
    job = dpu._store.job(job_id)
    tag = f"dpu.{job.user}.{job_id}.{job.dpu_options['store']}"
    res = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobID,JobName"],
                         capture_output=True, text=True, check=True)
    found = {line.split("|")[0].split("_")[0] for line in res.stdout.splitlines()
             if "|" in line and (line.split("|")[1] == tag or line.split("|")[1].startswith(tag + "."))}
    return sorted(found)


def wait_arrays(dpu: Processor, job_id: int, count: int) -> List[str]:
    end = time.monotonic() + 30   # accounting lags the submission a little
    while len(arrays_of(dpu, job_id)) < count and time.monotonic() < end:
        time.sleep(1)
    time.sleep(2)
    return arrays_of(dpu, job_id)


def test_the_prompts_poll_retries_the_failed_indices_with_more_time(dpu: Processor) -> None:
    job_id = dpu.run("Null", n=4, ff="1,3", dpu_mem=50, retries={"max": 2, "on": "E", "grow_time": 2.0},
                     return_jobid=True)
    assert isinstance(job_id, int)
    view = settle(dpu, job_id, {0: 1, 1: 2, 2: 1, 3: 2})
    assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
    job = dpu._store.job(job_id)
    script = (Path(job.jobdir) / "job-r2-0.sh").read_text()
    assert "#SBATCH --array=1,3\n" in script and "#SBATCH --time=00:02:00\n" in script
    assert "#SBATCH --partition=long\n" in script   # 120 s: debug (60 s) no longer takes it
    assert len(wait_arrays(dpu, job_id, 2)) == 2     # the run and one retry
    dpu.get_status(job_id)
    out = dpu.out.getvalue()  # type: ignore[attr-defined]
    assert f"Job {job_id}: retrying 2 process(es) (1, 3), 120 s" in out
    assert "retries: 1 used (up to 2 on E, time x2 each)" in out


CRON = """
import sys, time
from dpu_slurm import retries
from dpu_slurm.cli import main
real = retries.due
def slow(*args):  # both processes have claimed (or tried to) before either reruns
    time.sleep(2)
    return real(*args)
retries.due = slow
sys.exit(main(["status", sys.argv[1], "--dpu", "rslurm"]))
"""


def test_two_cron_status_processes_at_once_submit_one_retry(dpu: Processor, tmp_path: Path) -> None:
    job_id = dpu.run("Null", n=3, ff="0,2", dpu_mem=50, retries={"max": 1, "on": "E"},
                     return_jobid=True)
    assert isinstance(job_id, int)
    dpu._session.retries = False   # this prompt only watches; the two processes below retry
    view = settle(dpu, job_id, {0: 1, 1: 1, 2: 1})
    assert view.counts.letters == (1, 2, 0, 0, 0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", CRON, str(job_id)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    said = [o for o, _ in outs]
    assert sum(f"Job {job_id}: retrying 2 process(es) (0, 2)" in o for o in said) == 1, outs
    assert not any("not retried" in o for o in said), outs
    dpu._session.retries = True
    view = settle(dpu, job_id, {0: 2, 1: 1, 2: 2})
    assert view.counts.letters == (3, 0, 0, 0, 0)
    assert len(wait_arrays(dpu, job_id, 2)) == 2   # one sbatch for the retry, not two
    # Submission 1 was retried (2 processes); submission 2 ended all N: nothing to retry.
    assert [(sub, n) for sub, n, _ in dpu._store.retries_used(job_id)] == [(1, 2), (2, 0)]


def test_rerun_auto_doubles_the_time_of_a_timed_out_process_in_a_partition_that_fits(
        dpu: Processor) -> None:
    # Sleeps 105 s under a 60 s limit: SLURM ends it TIMEOUT (A) when it next checks limits
    # (every 30 s or so, so at 60-95 s); doubled to 120 s, it ends N (never killed before).
    job_id = dpu.run("Null", n=2, s=105, dpu_time=60, dpu_mem=50, return_jobid=True)
    assert isinstance(job_id, int)
    job = dpu._store.job(job_id)
    assert (job.dpu_options["time_limit"], job.dpu_options["partition"]) == (60, "debug")
    view = settle(dpu, job_id, {0: 1, 1: 1}, timeout=300)
    assert view.counts.letters == (0, 0, 2, 0, 0)
    reasons = dpu._session.reasons(view.job)
    assert all(r.startswith("TIMEOUT") for r in reasons), reasons
    assert dpu.rerun(job_id, only="A", auto=True) == [0, 1]
    job = dpu._store.job(job_id)
    assert (job.dpu_options["time_limit"], job.dpu_options["mem"]) == (120, 50)
    assert job.dpu_options["partition"] == "long"
    script = (Path(job.jobdir) / "job-r2-0.sh").read_text()
    assert "#SBATCH --time=00:02:00\n" in script and "#SBATCH --partition=long\n" in script
    assert "partition long (takes 120 s and 50 MB)" in dpu.out.getvalue()  # type: ignore[attr-defined]
    view = settle(dpu, job_id, {0: 2, 1: 2}, timeout=300)
    assert view.counts.letters == (2, 0, 0, 0, 0)
