"""Split and plan: processes per request, time and memory, partitions, installed versions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dpu_slurm.catalog import Catalog, Task
from dpu_slurm.config import DPUConfig
from dpu_slurm.errors import OptionError
from dpu_slurm.plan import make_plan, pick_partition
from tests.conftest import EXAMPLE

PARTITIONS = [{"name": "short", "max_time": 3600, "max_mem": 4000},
              {"name": "long", "max_time": 86400, "max_mem": 16000}]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE)


def cluster(**fields: Any) -> DPUConfig:
    base: dict[str, Any] = {"name": "c", "scheduler": "slurm", "path": Path("c.yaml"),
                            "time_factor": 1.5, "min_time": 60}
    base.update(fields)
    return DPUConfig(**base)


def test_wfi_splits_into_its_eight_ccds(catalog: Catalog) -> None:
    plan = make_plan(catalog, cluster(), "ReadNoise", {"i": "WFI", "d": "2000-04-28"})
    assert plan.nproc == 8
    assert [p["chip"] for p in plan.processes] == [f"ccd{n}" for n in range(50, 58)]
    assert all(p["date"] == "2000-04-28" for p in plan.processes)
    # job.json carries only what differs per process.
    assert plan.overrides() == {"format": 2, "count": 8,
                                "runs": [[i, i, {"chip": p["chip"]}] for i, p in enumerate(plan.processes)]}


def test_omegacam_splits_into_32_processes(catalog: Catalog) -> None:
    plan = make_plan(catalog, cluster(), "Bias>HotPixels", {"instrument": "OMEGACAM"})
    assert plan.nproc == 32
    assert len({p["chip"] for p in plan.processes}) == 32
    assert [t["name"] for t in plan.tasks] == ["Bias", "HotPixels"]


def test_a_given_chip_is_one_process(catalog: Catalog) -> None:
    plan = make_plan(catalog, cluster(), "ReadNoise", {"i": "WFI", "c": "ccd53"})
    assert plan.nproc == 1
    assert plan.processes[0]["chip"] == "ccd53"


def test_unknown_instrument_is_an_option_error_listing_known_ones(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match=r"ReadNoise: unknown instrument 'XYZ'.*WFI, OMEGACAM"):
        make_plan(catalog, cluster(), "ReadNoise", {"i": "XYZ"})


def test_unknown_chip_of_an_instrument_is_an_option_error(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match="has no CCD 'ccd99'"):
        make_plan(catalog, cluster(), "ReadNoise", {"i": "WFI", "c": "ccd99"})


def test_null_count_sets_the_number_of_processes(catalog: Catalog) -> None:
    assert make_plan(catalog, cluster(), "Null", {"n": "5"}).nproc == 5


def test_time_limit_is_estimate_times_factor_but_not_below_min_time(catalog: Catalog) -> None:
    dpu = cluster(time_factor=1.5, min_time=60)
    assert make_plan(catalog, dpu, "ReadNoise", {"i": "WFI"}).time_limit == 60  # 10 s x 1.5 < 60
    plan = make_plan(catalog, dpu, "ReadNoise", {"i": "WFI"}, dpu_time=1000)
    assert plan.estimate == 1000
    assert plan.time_limit == 1500


def test_chain_estimate_is_the_sum_of_its_tasks(catalog: Catalog) -> None:
    one = make_plan(catalog, cluster(), "Bias", {"i": "WFI"}).estimate
    two = make_plan(catalog, cluster(), "Bias>HotPixels", {"i": "WFI"}).estimate
    assert two > one
    assert two == one + make_plan(catalog, cluster(), "HotPixels", {"i": "WFI"}).estimate


@pytest.mark.parametrize("bad", [0, -5, "10", True, float("nan"), float("inf")])
def test_dpu_time_must_be_a_positive_number(catalog: Catalog, bad: Any) -> None:
    with pytest.raises(OptionError, match="dpu_time must be a positive number of seconds"):
        make_plan(catalog, cluster(), "Null", {}, dpu_time=bad)


@pytest.mark.parametrize("bad", [0, -1, "2000", False, float("nan")])
def test_dpu_mem_must_be_a_positive_number(catalog: Catalog, bad: Any) -> None:
    with pytest.raises(OptionError, match="dpu_mem must be a positive number of MB"):
        make_plan(catalog, cluster(), "Null", {}, dpu_mem=bad)


def test_dpu_mem_default_comes_from_the_config_and_is_never_rounded_to_zero(catalog: Catalog) -> None:
    dpu = cluster(defaults={"time": 600, "mem": 1234})
    assert make_plan(catalog, dpu, "Null", {}).mem == 1234
    assert make_plan(catalog, dpu, "Null", {}, dpu_mem=3000).mem == 3000
    assert make_plan(catalog, dpu, "Null", {}, dpu_mem=100.5).mem == 101  # rounded up, never down


@pytest.mark.parametrize("bad", [0.5, 15, 1e18, float("inf"), 64 * 1024 * 1024 + 1])
def test_dpu_mem_outside_16_mb_to_64_tb_is_refused_not_rounded(catalog: Catalog, bad: Any) -> None:
    # 0.5 used to become 1 MB (the process died in its pre-exec); 1e18 was queued as is
    with pytest.raises(OptionError, match=r"dpu_mem must be a positive number of MB from 16 to "
                                          r"67108864 \(64 TB\); got "):
        make_plan(catalog, cluster(), "Null", {}, dpu_mem=bad)


@pytest.mark.parametrize("bad", [1e308, 365 * 86400 + 1, float("-inf")])
def test_dpu_time_beyond_a_year_is_refused(catalog: Catalog, bad: Any) -> None:
    with pytest.raises(OptionError, match="dpu_time must be a positive number of seconds, at most "
                                          "31536000"):
        make_plan(catalog, cluster(), "Null", {}, dpu_time=bad)


@pytest.mark.parametrize("sleep", ["inf", "1e308", "nan", "-inf", float("inf"), 1e308])
def test_option_values_that_overflow_the_time_limit_are_option_errors(catalog: Catalog,
                                                                      sleep: Any) -> None:
    # s=inf and s=1e308 used to end in OverflowError/ValueError tracebacks
    with pytest.raises(OptionError, match=r"option 's'/'sleep': must be a finite number|"
                                          r"more than 31536000 s \(365 days\)"):
        make_plan(catalog, cluster(), "Null", {"s": sleep})


def test_a_task_split_that_raises_anything_is_an_option_error(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match="count must be at least 1 and at most 100000"):
        make_plan(catalog, cluster(), "Null", {"n": 10 ** 9})
    broken = Catalog([Task("T", run="m:f", estimate=lambda o: 1 / 0)])
    with pytest.raises(OptionError, match="T: the time estimate failed with these options: "
                                          "ZeroDivisionError"):
        make_plan(broken, cluster(), "T", {})


def test_send_code_must_be_a_boolean(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match=r"send_code: must be true or false .*got 'no'"):
        make_plan(catalog, cluster(), "Null", {}, send_code="no")  # type: ignore[arg-type]


def test_partition_is_the_first_that_fits(catalog: Catalog) -> None:
    dpu = cluster(partitions=PARTITIONS, time_factor=1.0, min_time=1)
    assert make_plan(catalog, dpu, "Null", {}, dpu_time=100).partition == "short"
    assert make_plan(catalog, dpu, "Null", {}, dpu_time=7200).partition == "long"
    assert make_plan(catalog, dpu, "Null", {}, dpu_time=100, dpu_mem=8000).partition == "long"
    assert make_plan(catalog, cluster(), "Null", {}).partition is None  # no partitions configured


def test_no_partition_fits_is_an_error_listing_the_partitions() -> None:
    dpu = cluster(partitions=PARTITIONS)
    with pytest.raises(OptionError) as err:
        pick_partition(dpu, 100000, 1000)
    text = str(err.value)
    assert "no partition of DPU 'c' takes 100000 s and 1000 MB" in text
    assert "short (time <= 3600 s, mem <= 4000 MB)" in text and "long (time <= 86400 s" in text
    with pytest.raises(OptionError):
        pick_partition(dpu, 60, 20000)


def test_partition_without_a_limit_takes_anything() -> None:
    dpu = cluster(partitions=[{"name": "tiny", "max_time": 10}, {"name": "any"}])
    assert pick_partition(dpu, 5, 10**6) == "tiny"
    assert pick_partition(dpu, 10**6, 10**6) == "any"


def test_aweversion_must_be_installed_on_the_dpu(catalog: Catalog) -> None:
    dpu = cluster(awe_versions={"master": {"setup": []}, "develop": {"setup": []}})
    with pytest.raises(OptionError, match=r"dpu_aweversion 'nightly'.*versions there: master, develop"):
        make_plan(catalog, dpu, "Null", {}, dpu_aweversion="nightly")
    assert make_plan(catalog, dpu, "Null", {}, dpu_aweversion="develop").aweversion == "develop"
    assert make_plan(catalog, dpu, "Null", {}).aweversion == "master"
    assert make_plan(catalog, cluster(awe_versions={"a": {}, "b": {}}, default_aweversion="b"),
                     "Null", {}).aweversion == "b"


def test_aweversion_on_a_dpu_without_versions_says_none_configured(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match="none configured"):
        make_plan(catalog, cluster(), "Null", {}, dpu_aweversion="master")
