"""Issue 13 on the real Grid Engine of harness/sge-up.sh (submit: cli): with requeue on, qsub
gets -notify and -r y; a suspended task is warned by SIGUSR1, saves its checkpoint and exits 99,
Grid Engine requeues it (Rq), and the next attempt resumes from its checkpoint and ends N."""
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SGE_ENV, text_of
from tests.conftest import until as shared_until

pytestmark = pytest.mark.sge
WAIT = 240.0


@pytest.fixture
def dpu(sge_cluster, make_session, monkeypatch):
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    made = make_session("sgeq", scheduler="sge", min_time=60, time_factor=1,
                        poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                        requeue={"max": 3, "warn": 60})
    yield made
    for job_id in made.dpu.get_jobids():
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["qdel", *job.native_ids], check=False, capture_output=True)


def until(cond, what):
    shared_until(cond, what, WAIT)


def test_a_suspended_bias_exits_99_is_requeued_and_resumes_from_its_checkpoint(dpu):
    jid = dpu.dpu.run("Bias", i="WFI", c="ccd50", d="2000-04-28", p={"steps": 40}, C=True,
                      dpu_time=600, dpu_mem=400, return_jobid=True)
    job = dpu.dpu._store.job(jid)
    script = next(Path(job.jobdir).glob("job-*.sh")).read_text()
    assert "#$ -notify\n" in script and "#$ -r y\n" in script
    log = Path(job.jobdir) / "p" / "0" / "log"
    until(lambda: "Stacked step 10 of 40" in text_of(log), "the Bias did not get to step 10")
    subprocess.run(["qmod", "-sj", f"{job.native_ids[0]}.1"], check=True, capture_output=True)
    seen = []

    def ended():
        view = dpu.dpu.poll(jid)[0]
        seen.append(view.counts.letters)
        return view.status == "FINISHED"
    until(ended, "the requeued Bias did not finish")
    assert all(letters[2] == 0 for letters in seen) and seen[-1] == (1, 0, 0, 0, 0), seen
    text = text_of(log)
    assert "SIGUSR1 before a suspend; exit status 99" in text
    resumed = re.search(r"Resuming from checkpoint at step (\d+) of 40", text)
    assert resumed and int(resumed.group(1)) >= 10, text
    attempts = dpu.dpu._store.attempts(jid)
    assert [(a, o) for _, a, o, _, _ in attempts] == [(1, "A"), (2, "N")], attempts
