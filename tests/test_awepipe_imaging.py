"""The example pipeline's DomeFlat and Reduce: the HOW-TO's run lines have tasks to run."""
from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import pytest

from dpu_slurm.catalog import Catalog
from dpu_slurm.errors import OptionError
from tests.conftest import EXAMPLE, Session

FLAT = {"i": "WFI", "d": "2000-04-28", "f": "#842"}
REDUCE = {"i": "WFI", "o": "CDF4_B_?", "d": "2000-04-29", "f": "#845"}
WFI = [f"ccd{n}" for n in range(50, 58)]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE)


@pytest.fixture
def awepipe() -> Iterator[Any]:
    """The example pipeline's task code, imported as a job imports it."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from awepipe import imaging
        yield imaging
    finally:
        sys.path.remove(str(EXAMPLE))


def run_task(func: Any, options: Dict[str, Any], tmp: Path) -> List[Dict[str, Any]]:
    lines: List[str] = []
    tmp.mkdir(parents=True, exist_ok=True)
    ctx = SimpleNamespace(options=options, workdir=tmp, log=lines.append, index=0, job_id=1, task="")
    out: List[Dict[str, Any]] = func(ctx)
    assert lines and all(isinstance(line, str) for line in lines)
    return out


def test_the_options_and_one_process_per_ccd(catalog: Catalog) -> None:
    flat = [o.short for o in catalog.sequence("DomeFlat").options]
    assert flat == ["i", "c", "d", "f", "tpl", "p", "C"]
    assert [o.short for o in catalog.sequence("Reduce").options] == \
        ["i", "c", "o", "d", "f", "tpl", "p", "C"]
    values = catalog.parse("DomeFlat", FLAT)
    assert [catalog.split("DomeFlat", values).own(i)["chip"] for i in range(8)] == WFI
    assert catalog.split("DomeFlat", catalog.parse("DomeFlat", {**FLAT, "c": "ccd50"})).size == 1
    assert catalog.split("Reduce", catalog.parse("Reduce", REDUCE)).size == 8
    assert catalog.estimate("Reduce", catalog.parse("Reduce", REDUCE)) == 25  # 4 fields match


@pytest.mark.parametrize(("sequence", "given", "message"), [
    ("DomeFlat", {**FLAT, "f": "#999"}, "WFI has no filter '#999'; give one of #842, "),
    ("DomeFlat", {**FLAT, "d": ""}, "give the night of the observations as d='YYYY-MM-DD'"),
    ("DomeFlat", {**FLAT, "c": "ccd99"}, "WFI has no CCD 'ccd99'; its CCDs: ccd50"),
    ("Reduce", {**REDUCE, "o": "CDF9_?"}, "no observed field matches o='CDF9_?'; fields: CDF4_A_1"),
    ("Reduce", {**REDUCE, "o": ""},
     "give the field name (a pattern: ? is one character) with o=..., e.g. o='CDF4_B_?'"),
])
def test_bad_options_say_what_to_give_and_submit_nothing(session: Session, sequence: str,
                                                         given: Dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match="^" + re.escape(f"{sequence}: {message}")):
        session.dpu.run(sequence, **given)
    assert session.dpu.get_jobids() == []


def test_dome_flat_and_reduce_are_deterministic_and_plausible(awepipe: Any, catalog: Catalog,
                                                              tmp_path: Path) -> None:
    flat_opts = {**catalog.parse("DomeFlat", FLAT), "chip": "ccd50"}
    first = run_task(awepipe.dome_flat, flat_opts, tmp_path / "a")
    assert run_task(awepipe.dome_flat, flat_opts, tmp_path / "b") == first
    [flat] = first
    assert flat["class"] == "DomeFlatFrame" and 0.005 < flat["rms"] < 0.1  # a 1% pixel noise, a gradient
    assert (tmp_path / "a" / flat["filename"]).is_file()
    frames = run_task(awepipe.reduce, {**catalog.parse("Reduce", REDUCE), "chip": "ccd50"}, tmp_path / "c")
    assert [f["object"] for f in frames] == ["CDF4_B_1", "CDF4_B_2", "CDF4_B_3", "CDF4_B_4"]
    for frame in frames:  # sky 800-1500 ADU on a flat-fielded frame; 5-25 stars put in
        assert 700 < frame["sky"] < 1700 and 1 <= frame["sources"] <= 30, frame


def test_the_howto_runs_commit_their_results_on_the_local_dpu(session: Session) -> None:
    plain = session.dpu.run("DomeFlat", **FLAT, return_jobid=True)
    kept = session.dpu.run("Reduce", **REDUCE, C=1, return_jobid=True)
    views = session.dpu.wait([plain, kept], timeout=180, interval=0.1)
    assert [v.counts.line() for v in views] == ["8/0/0/0/0", "8/0/0/0/0"]
    assert session.dpu.get_job_result(plain) == []   # not committed: C was not given
    objects = session.dpu.get_job_result(kept)
    assert len(objects) == 32 and {o["chip"] for o in objects} == set(WFI)
    assert {o["class"] for o in objects} == {"ReducedScienceFrame"}
    printed = session.out.getvalue()
    assert "Results of job 1 were not committed; run it again with C=1" in printed
    assert "Job 2: 32 committed object(s)" in printed
