"""after= on the real Grid Engine (scheduler: sge, submit: cli) of harness/sge-up.sh: qsub
-hold_jid_ad pairs the tasks of two arrays, -hold_jid waits for the whole array; the process whose
prerequisite failed ends S with the reason (the worker checks, as -hold_jid waits for any end)."""
import json
from pathlib import Path

import pytest

from dpu_slurm.worker import STATUS, process_dir
from tests.conftest import sge_processor

pytestmark = pytest.mark.sge


@pytest.fixture
def dpu(sge_cluster, make_session, monkeypatch):
    with sge_processor(make_session, monkeypatch, "graphsge") as proc:
        yield proc


def record(dpu, jid, idx):
    return json.loads((process_dir(Path(dpu._store.job(jid).jobdir), idx) / STATUS).read_text())


def test_hold_jid_ad_chains_the_tasks_and_skips_the_one_whose_prerequisite_failed(dpu, commands):
    first = dpu.run("Null", n=3, ff="1", s=3, dpu_mem=400, return_jobid=True)
    second = dpu.run("Null", n=3, after=first, after_mode="each", dpu_mem=400, return_jobid=True)
    native = dpu._store.job(first).native_ids[0]
    qsubs = [c for c in commands if Path(c[0]).name == "qsub"]
    assert qsubs[-1][2:4] == ["-hold_jid_ad", native], qsubs[-1]
    views = dpu.wait([first, second], timeout=240, interval=0.5)
    assert [v.counts.line() for v in views] == ["2/1/0/0/0", "2/0/0/1/0"], views
    procs = {p.idx: p for p in dpu._store.procs(second)}
    assert procs[1].reason == f"prerequisite job {first} process 1 ended E"
    for i in (0, 2):
        assert record(dpu, second, i)["started"] >= record(dpu, first, i)["ended"]


def test_hold_jid_with_ok_skips_every_process_after_a_failure(dpu, commands):
    first = dpu.run("Null", n=2, ff="0", s=2, dpu_mem=400, return_jobid=True)
    second = dpu.run("Null", n=2, after=first, dpu_mem=400, return_jobid=True)
    qsubs = [c for c in commands if Path(c[0]).name == "qsub"]
    assert qsubs[-1][2:4] == ["-hold_jid", dpu._store.job(first).native_ids[0]], qsubs[-1]
    views = dpu.wait([first, second], timeout=240, interval=0.5)
    assert [v.counts.line() for v in views] == ["1/1/0/0/0", "0/0/0/2/0"], views
    assert {p.reason for p in dpu._store.procs(second)} == {f"prerequisite job {first} process 0 ended E"}
