"""Processes that differ only by index are stored as runs: O(1) per job, in the plan and in
the job.json the worker reads (format 2), and each worker still gets its own values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpu_slurm.catalog import Catalog, Task
from dpu_slurm.config import DPUConfig
from dpu_slurm.errors import OptionError
from dpu_slurm.plan import make_plan
from dpu_slurm.processes import Processes
from dpu_slurm.worker import own_options
from tests.conftest import EXAMPLE
from tests.test_worker import make_job, outputs, run_worker


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE)


def cluster() -> DPUConfig:
    return DPUConfig(name="c", scheduler="slurm", path=Path("c.yaml"), min_time=60)


def test_100k_null_processes_are_one_small_job_file(catalog: Catalog) -> None:
    plan = make_plan(catalog, cluster(), "Null", {"n": 100000})
    assert plan.nproc == 100000
    doc = plan.overrides()
    assert doc == {"format": 2, "count": 100000, "runs": []}, "no dict per process"
    assert not isinstance(plan.processes, list)
    assert len(json.dumps(doc)) < 100
    assert plan.processes[99999]["count"] == 100000 and plan.processes[-1] == plan.processes[99999]


def test_fail_first_indices_are_runs_of_their_own(catalog: Catalog) -> None:
    plan = make_plan(catalog, cluster(), "Null", {"n": 10, "ff": "1,3,99"})
    assert plan.overrides() == {"format": 2, "count": 10, "base": {"fail_first": ""},
                                "runs": [[1, 1, {"fail_first": "yes"}], [3, 3, {"fail_first": "yes"}]]}
    assert [p["fail_first"] for p in plan.processes] == ["", "yes", "", "yes"] + [""] * 6


def test_a_list_split_is_compacted_into_runs_of_equal_neighbours() -> None:
    procs = Processes.of_list([{"a": 1}, {"a": 1}, {}, {"b": 2}, {"b": 2}, {"b": 3}])
    assert procs.runs == [(0, 1, {"a": 1}), (3, 4, {"b": 2}), (5, 5, {"b": 3})]
    shared = procs.with_shared({"a": 0, "b": 2, "c": 9})
    assert [shared.own(i) for i in range(6)] == [{"a": 1}, {"a": 1}, {}, {"b": 2}, {"b": 2}, {"b": 3}]
    assert shared[2] == {"a": 0, "b": 2, "c": 9} and shared[5]["b"] == 3
    # What equals the shared options is left out of the job file.
    assert shared.job_file()["runs"] == [[0, 1, {"a": 1}], [5, 5, {"b": 3}]]


def test_overlapping_runs_from_a_split_are_an_option_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without overlap"):
        Processes(10, [(0, 5, {"a": 1}), (5, 6, {"a": 2})])
    with pytest.raises(ValueError, match="without overlap"):
        Processes(10, [(8, 10, {"a": 1})])
    cat = Catalog([Task("T", run="m:f", split=lambda o: Processes(3, [(0, 3, {})]))], [])
    with pytest.raises(OptionError, match=r"T: .*without overlap"):
        cat.split("T", {})


def test_the_worker_reads_both_job_file_formats() -> None:
    doc = {"format": 2, "count": 100000, "runs": [[1, 1, {"x": 1}], [50, 99998, {"x": 2}]]}
    assert own_options(doc, 0) == {} and own_options(doc, 1) == {"x": 1}
    assert own_options(doc, 77777) == {"x": 2} and own_options(doc, 99999) == {}
    assert own_options({**doc, "base": {"x": 0, "y": 1}}, 1) == {"x": 1, "y": 1}
    assert own_options({**doc, "base": {"x": 0}}, 99999) == {"x": 0}
    assert own_options([{"x": 5}, {}], 0) == {"x": 5}
    with pytest.raises(IndexError):
        own_options(doc, 100000)
    with pytest.raises(ValueError, match="formats 1 and 2"):
        own_options({"format": 3}, 0)


def test_a_worker_gets_its_own_values_from_a_format_2_job_file(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, [{"name": "A", "run": "wtasks:ok"}], options={"commit": True})
    job = json.loads((jobdir / "job.json").read_text())
    job["processes"] = {"format": 2, "count": 3, "runs": [[2, 2, {"value": 20}]]}
    (jobdir / "job.json").write_text(json.dumps(job))
    for index, value in ((0, 1), (2, 20)):
        assert run_worker(tmp_path, jobdir, index).returncode == 0
        status, result, _ = outputs(jobdir, index)
        assert status["tasks"] == ["N"] and result["objects"] == [{"task": "A", "index": index,
                                                                   "value": value}]
