"""Usage figures against the real services (issue 12, must-have 3 and 5): a process allocating
200 MB reports a 180-260 MB peak on SLURM and on Grid Engine (qsub and DRMAA), from the worker
and from the scheduler's own accounting; a process killed at its time limit gets sacct's."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import pytest

from dpu_slurm import Processor
from tests.conftest import SGE_ENV, slurm_processor

PEAK = (180, 260)   # MB, for a task holding 200 MB


def until(get: Callable[[], Any], what: str, timeout: float = 90, step: float = 2) -> Any:
    """get() once it is truthy (the accounting is written a little after a job ends)."""
    deadline = time.monotonic() + timeout
    while not (value := get()):
        assert time.monotonic() < deadline, f"{what} never came"
        time.sleep(step)
    return value


def finished(dpu: Processor, job_id: int, timeout: float = 240) -> Any:
    view = dpu.wait(job_id, timeout=timeout, interval=0.5)[0]
    assert view.status == "FINISHED", f"job {job_id} still {view.status} after {timeout} s"
    return view


def accounted(dpu: Processor, job_id: int) -> Dict[int, Any]:
    """What the scheduler's accounting alone says of the job's processes (one call)."""
    job = dpu._store.job(job_id)
    return dpu._session_for(job).scheduler.usage([job]).get(job_id, {})


def peak_mb(kb: int) -> float:
    return kb / 1024


# -- SLURM ------------------------------------------------------------------------------------

@pytest.fixture
def slurm(slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Processor]:
    with slurm_processor(tmp_path, monkeypatch, "acctslurm") as proc:
        yield proc


@pytest.mark.slurm
def test_slurm_a_200_mb_process_peaks_at_about_200_mb_by_worker_and_by_sacct(slurm: Processor) -> None:
    job_id = slurm.run("Null", mb=200, s=3, dpu_mem=1000, return_jobid=True)
    assert finished(slurm, job_id).ok
    row = slurm.report(job_id)["rows"][0]
    assert row["source"] == "worker" and PEAK[0] <= row["max_rss_mb"] <= PEAK[1], row
    # jobacct_gather/linux (harness/slurm-up.sh) measured the same process on its own.
    figures = until(lambda: accounted(slurm, job_id).get(0), "sacct's figures")
    assert PEAK[0] <= peak_mb(figures.max_rss_kb) <= PEAK[1], figures
    assert figures.wall_s >= 3 and figures.cpu_s is not None


@pytest.mark.slurm
def test_slurm_a_process_killed_at_its_time_limit_gets_sacct_figures(slurm: Processor) -> None:
    job_id = slurm.run("Null", s=600, mb=100, dpu_time=1, dpu_mem=1000, return_jobid=True)
    view = finished(slurm, job_id)
    assert view.counts.letters == (0, 0, 1, 0, 0)
    # The poll that saw it end asked sacct; a report asks again while sacct lags behind.
    row = until(lambda: (r := slurm.report(job_id)["rows"]) and r[0]["source"] == "sacct" and r[0],
                "sacct's figures of the killed process")
    assert row["wall_s"] >= 60 and row["time_used"] >= 1.0, row   # it ran into its 60 s limit
    assert 80 <= row["max_rss_mb"] <= 180, row


# -- Grid Engine: qsub and DRMAA --------------------------------------------------------------

@pytest.fixture(params=["cli", "drmaa"])
def sge(request: pytest.FixtureRequest, sge_cluster: None, make_session: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Processor]:
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    made = make_session(f"acct{request.param}", scheduler="sge", submit=request.param, min_time=60,
                        poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    yield made.dpu
    for job_id in made.dpu.get_jobids():
        job = made.dpu._store.job(job_id)
        if job.native_ids:
            subprocess.run(["qdel", *job.native_ids], check=False, capture_output=True,
                           env={**os.environ, **SGE_ENV})


@pytest.mark.sge
def test_sge_a_200_mb_process_peaks_at_about_200_mb_by_worker_and_by_qacct(sge: Processor) -> None:
    job_id = sge.run("Null", mb=200, dpu_mem=2000, return_jobid=True)
    assert finished(sge, job_id).ok
    data = sge.report(job_id)
    row = data["rows"][0]
    assert row["source"] == "worker" and PEAK[0] <= row["max_rss_mb"] <= PEAK[1], row
    assert row["mem_used"] == pytest.approx(row["max_rss_mb"] / 2000, abs=0.001)
    figures = until(lambda: accounted(sge, job_id).get(0), "qacct's figures")  # flushed every 15 s
    assert PEAK[0] <= peak_mb(figures.max_rss_kb) <= PEAK[1], figures
    assert figures.wall_s is not None and figures.cpu_s is not None
