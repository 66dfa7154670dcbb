"""Job handles on the local DPU: dpu.submit, wait/result/logs, await, as_completed, the notebook view."""
from __future__ import annotations

import asyncio
import re
from typing import Callable

import nbformat
import pytest
from nbclient import NotebookClient

from dpu_slurm.futures import COLOURS, DPUJob, JobFailed, JobTimeout
from tests.conftest import REPO, Env, Session


def test_submit_returns_a_handle_whose_result_is_the_committed_objects(session: Session) -> None:
    job = session.dpu.submit("Null", n=2, m="kept", C=1)
    assert isinstance(job, DPUJob) and job.id == 1
    assert job.status().status in ("QUEUED", "RUNNING", "FINISHED")
    assert job.result(timeout=60, interval=0.05) == [
        {"class": "Null", "process": 0, "message": "kept"},
        {"class": "Null", "process": 1, "message": "kept"}]
    assert job.done() and repr(job) == "<DPUJob 1 FINISHED N/E/A/S/U 2/0/0/0/0>"
    printed = session.out.getvalue()
    lines = job.logs()
    assert any(line.endswith("Message: kept") for line in lines)
    assert session.out.getvalue() == printed  # the handle returns, it prints nothing
    assert "Sending job with identifier 1 to DPU" in printed  # submitting prints as run() does


def test_run_with_return_job_gives_the_handle_submit_gives(session: Session) -> None:
    job = session.dpu.run("DomeFlat", i="WFI", d="2000-04-28", f="#842", c="ccd50", C=1,
                          return_job=True)
    assert isinstance(job, DPUJob) and job.id == 1
    assert [(o["class"], o["chip"], o["filter"]) for o in job.result(timeout=60, interval=0.05)] == \
        [("DomeFlatFrame", "ccd50", "#842")]
    assert session.dpu.run("Null", return_job=True, return_jobid=True).id == 2  # the handle wins
    assert "Calling: dpu.run('DomeFlat', i='WFI', d='2000-04-28', f='#842', c='ccd50', C=1)" in \
        session.out.getvalue()  # return_job is no task option and not echoed as one


def test_result_of_a_failed_job_raises_and_says_what_to_do(session: Session) -> None:
    job = session.dpu.submit("Null", x=True)
    with pytest.raises(JobFailed, match=r"job 1 finished with N/E/A/S/U 0/1/0/0/0; job.logs\(\)"):
        job.result(timeout=60, interval=0.05)
    assert job.wait(timeout=0).status == "FINISHED"


def test_wait_and_result_give_up_after_the_timeout_and_the_job_goes_on(session: Session) -> None:
    job = session.dpu.submit("Null", s=30)
    assert job.wait(timeout=0.2, interval=0.05).status in ("QUEUED", "RUNNING")
    with pytest.raises(JobTimeout, match=r"job 1 is (QUEUED|RUNNING) after 0\.1 s"):
        job.result(timeout=0.1, interval=0.05)
    assert not job.done()
    assert "Cancelled job 1" in job.cancel(force=True)
    assert job.wait(timeout=30, interval=0.05).counts.letters == (0, 0, 1, 0, 0)


@pytest.mark.asyncio
async def test_await_job_and_wait_async_let_other_tasks_run(session: Session) -> None:
    slow = session.dpu.submit("Null", s=1, m="slow", C=1)
    quick = session.dpu.submit("Null", m="quick", C=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.create_task(ticker())
    results = await asyncio.gather(slow, quick.wait_async(interval=0.05))
    tick.cancel()
    assert results[0] == [{"class": "Null", "process": 0, "message": "slow"}]
    assert results[1].status == "FINISHED" and results[1].ok
    assert ticks > 5  # the loop was not blocked while the jobs ran
    with pytest.raises(JobFailed):
        await session.dpu.submit("Null", x=True)


def test_as_completed_yields_the_jobs_in_the_order_they_finish(session: Session) -> None:
    slow = session.dpu.submit("Null", s=60)  # ends only when cancelled below: no race
    quick = session.dpu.submit("Null")
    finished = session.dpu.as_completed([slow, quick], timeout=120, interval=0.05)
    assert next(finished) is quick
    slow.cancel(force=True)
    assert next(finished) is slow and slow.last is not None and slow.last.counts.letters[2] == 1
    assert list(finished) == []
    late = session.dpu.submit("Null", s=30)
    with pytest.raises(JobTimeout, match=f"1 job\\(s\\) not finished after 0.1 s: {late.id}"):
        list(session.dpu.as_completed([quick, late], timeout=0.1, interval=0.05))
    late.cancel(force=True)


@pytest.mark.asyncio
async def test_as_completed_async_yields_in_finishing_order_and_times_out(session: Session) -> None:
    slow = session.dpu.submit("Null", s=60)  # ends only when cancelled below: no race
    quick = session.dpu.submit("Null")
    order = []
    async for job in session.dpu.as_completed_async([slow, quick], timeout=120, interval=0.05):
        order.append(job.id)
        if job is quick:
            slow.cancel(force=True)
    assert order == [quick.id, slow.id]
    late = session.dpu.submit("Null", s=30)
    with pytest.raises(JobTimeout, match=f"1 job\\(s\\) not finished after 0.1 s: {late.id}"):
        async for _ in session.dpu.as_completed_async([late], timeout=0.1, interval=0.05):
            pass
    late.cancel(force=True)


def test_the_notebook_view_is_a_bar_refreshed_at_each_display(session: Session) -> None:
    job = session.dpu.submit("Null", n=2, s=30)
    before = job._repr_html_()
    assert "Jobid 1 Null on DPU testlocal: " in before and "N/E/A/S/U 0/0/0/0/0" in before
    assert "2 not ended yet" in before and COLOURS["N"] not in before
    assert re.search(r"processes: [0-2] running, [0-2] queued, 0 ended", before)
    job.cancel(force=True)
    job.wait(timeout=30, interval=0.05)
    after = job._repr_html_()  # displayed again: polled again
    assert "FINISHED N/E/A/S/U 0/0/2/0/0" in after and "processes:" not in after
    assert f'title="2 aborted (A)" style="width:100.00%;background:{COLOURS["A"]}"' in after


def test_the_notebook_view_escapes_what_it_shows(session: Session) -> None:
    store = session.dpu._store
    jid = store.record("testlocal", "alice", "Null", {}, {}, 1, 1)
    store.not_submitted(jid, "sbatch: <script>alert('x')</script> & more")
    view = DPUJob(session.dpu, jid)._repr_html_()
    assert "<script>" not in view
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in view
    with pytest.raises(JobFailed, match="never submitted"):
        DPUJob(session.dpu, jid).result()


@pytest.mark.slow
def test_a_notebook_run_headless_shows_the_job_and_awaits_its_result(
        make_session: Callable[..., Session], env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    make_session()
    cells = [
        "from dpu_slurm import Processor\ndpu = Processor('testlocal', session_log=False)",
        "job = dpu.submit('Null', n=3, m='from a notebook', C=1)\njob",
        "objects = await job\n[o['message'] for o in objects]",
        "job",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout, in this test's DPU_HOME
    NotebookClient(nb, timeout=120, startup_timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(env.cwd)}}
                   ).execute()
    shown = nb.cells[1].outputs[-1]["data"]["text/html"]
    assert "Jobid 1 Null on DPU testlocal: " in shown and "dpu-job" in shown
    assert nb.cells[2].outputs[-1]["data"]["text/plain"] == str(["from a notebook"] * 3)
    again = nb.cells[3].outputs[-1]["data"]["text/html"]
    assert "FINISHED N/E/A/S/U 3/0/0/0/0" in again  # re-displayed: the new state
    assert f"background:{COLOURS['N']}" in again


def test_a_view_that_cannot_be_polled_shows_why_instead_of_failing(session: Session) -> None:
    shown = DPUJob(session.dpu, 999)._repr_html_()
    assert "Jobid 999: no job with identifier 999" in shown and "<script" not in shown
