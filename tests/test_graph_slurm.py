"""after= on the real SLURM of harness/slurm-up.sh: aftercorr pairs the processes of two arrays
(the one whose prerequisite failed ends S with the reason, the others N), afterok skips the whole
dependent when a prerequisite process fails, and sbatch got the dependency."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from dpu_slurm import Processor
from dpu_slurm.worker import STATUS, process_dir
from tests.conftest import slurm_processor

pytestmark = pytest.mark.slurm


@pytest.fixture
def dpu(slurm_cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Processor]:
    with slurm_processor(tmp_path, monkeypatch, "gslurm",
                         partitions=[{"name": "debug", "max_time": 600, "max_mem": 4000}]) as proc:
        yield proc


def run(dpu: Processor, **options: Any) -> int:
    jid = dpu.run("Null", return_jobid=True, **options)
    assert isinstance(jid, int)
    return jid


def record(dpu: Processor, jid: int, idx: int) -> Dict[str, Any]:
    import json
    job = dpu._store.job(jid)
    return json.loads((process_dir(Path(job.jobdir), idx) / STATUS).read_text())


def dependency(native: str) -> str:
    """What slurmctld holds as the array's dependency (scontrol, while the job is known)."""
    out = subprocess.run(["scontrol", "show", "job", native], capture_output=True, text=True).stdout
    return next((w for w in out.split() if w.startswith("Dependency=")), "")


def test_each_process_waits_for_its_own_and_the_one_whose_prerequisite_failed_ends_s(
        dpu: Processor, commands: List[List[str]]) -> None:
    first = run(dpu, n=3, ff="1", s=4)
    second = run(dpu, n=3, after=first, after_mode="each")
    native = dpu._store.job(first).native_ids[0]
    held = dependency(dpu._store.job(second).native_ids[0])
    commands.clear()
    dpu.get_status([first, second])   # the edges cost a poll no scheduler call of its own
    assert [Path(c[0]).name for c in commands] == ["squeue"], commands
    views = dpu.wait([first, second], timeout=240, interval=0.5)
    assert held.startswith(f"Dependency=aftercorr:{native}_*"), held
    assert [v.counts.line() for v in views] == ["2/1/0/0/0", "2/0/0/1/0"], views
    procs = {p.idx: p for p in dpu._store.procs(second)}
    assert procs[1].reason == f"prerequisite job {first} process 1 ended E"
    assert (procs[0].outcome, procs[2].outcome) == ("N", "N")
    for i in (0, 2):
        assert record(dpu, second, i)["started"] >= record(dpu, first, i)["ended"]


def test_ok_cancels_the_dependent_when_a_prerequisite_process_fails(dpu: Processor) -> None:
    first = run(dpu, n=2, ff="0", s=3)
    second = run(dpu, n=2, after=[first])
    views = dpu.wait([first, second], timeout=240, interval=0.5)
    assert [v.counts.line() for v in views] == ["1/1/0/0/0", "0/0/0/2/0"], views
    reasons: List[str] = [p.reason for p in dpu._store.procs(second)]
    assert reasons == [f"prerequisite job {first} process 0 ended E"] * 2
    dpu.get_status(second)
    printed = dpu._say.out.getvalue().splitlines()  # type: ignore[attr-defined]
    assert any(line.endswith(f"after job {first} (ok)") for line in printed)
