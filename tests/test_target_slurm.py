"""dpu.run_target on the real SLURM of harness/slurm-up.sh: 6 of 8 CCDs have a committed master
bias (the result records of the other 2 are gone), so only 2 Bias processes run, then HotPixels
for all 8 behind an afterok dependency; each HotPixels process reads its own CCD's master bias,
and the graph ends N."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest

from dpu_slurm import Processor
from dpu_slurm.worker import RESULT, process_dir
from tests.conftest import slurm_processor

pytestmark = pytest.mark.slurm

WFI = {"i": "WFI", "d": "2000-04-28"}
CCDS = [f"ccd{n}" for n in range(50, 58)]


@pytest.fixture
def dpu(slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Processor]:
    with slurm_processor(tmp_path, monkeypatch, "tslurm",
                         partitions=[{"name": "debug", "max_time": 600, "max_mem": 4000}]) as proc:
        yield proc


def test_a_target_run_skips_the_six_committed_ccds_and_the_graph_ends_n(
        dpu: Processor, commands: List[List[str]]) -> None:
    first = dpu.run("Bias", C=1, return_jobid=True, **WFI)   # all 8, then 2 results lost
    assert isinstance(first, int)
    dpu.wait(first, timeout=300, interval=0.5)
    assert dpu.get_status(first)[0].counts.line() == "8/0/0/0/0"
    for i in (3, 6):
        (process_dir(Path(dpu._store.job(first).jobdir), i) / RESULT).unlink()

    commands.clear()
    jobs = dpu.run_target("HotPixels", **WFI)
    bias, hot = jobs["Bias"], jobs["HotPixels"]
    assert isinstance(bias, int) and isinstance(hot, int)
    store = dpu._store
    assert (store.job(bias).nproc, store.job(hot).nproc) == (2, 8)
    sbatch = [c for c in commands if Path(c[0]).name == "sbatch"]
    assert len(sbatch) == 2, commands
    wanted = f"--dependency=afterok:{store.job(bias).native_ids[0]}"
    assert any(wanted in arg for arg in sbatch[1]), sbatch[1]
    views = dpu.wait([bias, hot], timeout=400, interval=0.5)
    assert [v.counts.line() for v in views] == ["2/0/0/0/0", "8/0/0/0/0"], views
    assert [o["chip"] for o in dpu.get_job_result(bias, echo=False)] == ["ccd53", "ccd56"]
    assert [o["chip"] for o in dpu.get_job_result(hot, echo=False)] == CCDS
    logs = "\n".join(dpu.get_logs(hot, echo=False))
    for folder, idx, ccd in ((first, 0, "ccd50"), (bias, 0, "ccd53"), (bias, 1, "ccd56")):
        name = Path(store.job(folder).jobdir).name
        assert f"MasterBias_WFI_{ccd}_2000-04-28.json of {name} process {idx}" in logs, logs
    dpu.get_status(hot)
    printed = dpu._say.out.getvalue().splitlines()  # type: ignore[attr-defined]
    assert any(line.endswith(f"after job {bias} (ok)") for line in printed)
    assert any(line.endswith(f"reuses committed results of job {first}") for line in printed)

    commands.clear()
    assert dpu.run_target("HotPixels", **WFI) == {"Bias": None, "HotPixels": None}
    assert not [c for c in commands if Path(c[0]).name == "sbatch"]
