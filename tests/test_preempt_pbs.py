"""Issue 13 on PBS (flavor torque, Slurm's Torque wrappers of harness/torque-up.sh): PBS has no
warning signal, so a task ended by the scheduler (SIGTERM) saves its checkpoint and the process
ends A with it kept; the DPU's retries policy reruns it and the new attempt resumes from it."""
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import text_of
from tests.conftest import until as shared_until
from tests.test_pbs import torque_wrappers  # noqa: F401 - the fixture

pytestmark = pytest.mark.pbs
WAIT = 240.0


@pytest.fixture
def dpu(torque_wrappers, make_session):  # noqa: F811 - the fixture imported above
    made = make_session("pbsq", scheduler="pbs", flavor="torque", bin_dir=torque_wrappers,
                        min_time=60, time_factor=1, poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                        partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}],
                        requeue={"max": 3, "warn": 60}, retries={"max": 1, "on": ["A"]})
    yield made.dpu
    for job_id in made.dpu.get_jobids():
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["scancel", *job.native_ids], check=False)


def until(cond, what):
    shared_until(cond, what, WAIT)


def test_a_killed_bias_keeps_its_checkpoint_and_its_retry_resumes_from_it(dpu):
    jid = dpu.run("Bias", i="WFI", c="ccd50", d="2000-04-28", p={"steps": 40}, C=True,
                  dpu_time=600, dpu_mem=200, return_jobid=True)
    job = dpu._store.job(jid)
    assert "#PBS -r n\n" in next(Path(job.jobdir).glob("job-*.sh")).read_text()
    pdir = Path(job.jobdir) / "p" / "0"
    until(lambda: "Stacked step 10 of 40" in text_of(pdir / "log"), "the Bias did not get to step 10")
    subprocess.run(["scancel", *job.native_ids], check=True)   # the scheduler ends it: SIGTERM

    def second_attempt_ended():
        dpu.poll(jid)
        return [(a, o) for _, a, o, _, _ in dpu._store.attempts(jid)] == [(1, "A"), (2, "N")]
    until(second_attempt_ended, "the retry did not end N")
    first = text_of(pdir / "attempt-1" / "log")
    assert "Checkpoint of task Bias saved" in first
    resumed = re.search(r"Resuming from checkpoint at step (\d+) of 40", text_of(pdir / "log"))
    assert resumed and int(resumed.group(1)) >= 10
    assert not (pdir / "checkpoint").exists()   # ended N: nothing resumes from it any more
