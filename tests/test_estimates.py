"""Estimates learned from past runs (issue 12, must-have 4): from this DPU's history of the
sequence (and instrument), the prompt names the source, dpu_time='auto' / --time auto uses it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpu_slurm.errors import OptionError
from dpu_slurm.estimates import MARGIN, MIN_RUNS, Learned, learn, quantile, resolve
from dpu_slurm.store import Store
from dpu_slurm.store_usage import UsageRow
from tests.conftest import Env, Session

MB = 1024


def past(store: Store, sequence: str, options: dict, walls: list, outcome: str = "N",
         dpu: str = "d") -> int:
    jid = store.record(dpu, "alice", sequence, options, {}, len(walls), 1)
    store.submitted(jid, ["1"])
    store.update(jid, [(i, "DONE", outcome, "", None) for i in range(len(walls))])
    store.put_usage(jid, [UsageRow(i, 1, w, w, 100 * MB, "worker") for i, w in enumerate(walls)])
    return jid


def test_learned_from_the_90th_percentile_of_processes_that_ended_n(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    past(store, "Null", {}, [10.0, 20.0])
    assert learn(store, "d", "Null", {}) is None          # fewer than MIN_RUNS: the tasks' own
    past(store, "Null", {}, [1000.0, 2000.0], outcome="E")   # failures teach nothing
    past(store, "Null", {}, [30.0], dpu="other")             # nor another DPU's runs
    assert learn(store, "d", "Null", {}) is None
    past(store, "Null", {}, [30.0, 40.0, 50.0])
    got = learn(store, "d", "Null", {})
    assert got == Learned(round(quantile([10, 20, 30, 40, 50], 0.9) * MARGIN, 1), 150, 5)
    assert got.time_s == 69.0 and got.source() == "from 5 earlier runs"


def test_the_instrument_splits_the_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    past(store, "ReadNoise", {"instrument": "WFI"}, [100.0] * MIN_RUNS)
    past(store, "ReadNoise", {"instrument": "OCAM"}, [10.0] * MIN_RUNS)
    assert learn(store, "d", "ReadNoise", {"instrument": "WFI"}).time_s == 150.0
    assert learn(store, "d", "ReadNoise", {"instrument": "OCAM"}).time_s == 15.0
    assert learn(store, "d", "ReadNoise", {"instrument": "WFC"}) is None
    # The instrument is chosen before the newest-N cut: newer WFI runs do not crowd out OCAM's.
    past(store, "ReadNoise", {"instrument": "WFI"}, [100.0] * 5)
    rows = store.past_runs("d", "ReadNoise", limit=MIN_RUNS, keep=lambda opts: "OCAM" in opts)
    assert [r[2] for r in rows] == [10.0] * MIN_RUNS


def test_auto_takes_the_learned_figures_or_falls_back_to_the_declared_estimate() -> None:
    learned = Learned(42.0, 300, 120)
    assert resolve(learned, "auto", None) == (42.0, 300, "from 120 earlier runs")
    assert resolve(learned, "auto", 500) == (42.0, 500, "from 120 earlier runs")
    assert resolve(learned, 10, "auto") == (10, 300, "")
    assert resolve(None, "auto", None) == (None, None, "the tasks' estimate: fewer than 3 earlier runs")
    with pytest.raises(OptionError, match="dpu_time must be a number of seconds or 'auto'"):
        resolve(learned, "soon", None)


def estimate_line(session: Session) -> str:
    return [ln for ln in session.printed() if "Estimated process time" in ln][-1]


def test_after_five_runs_the_estimate_changes_and_names_its_source(session: Session, env: Env) -> None:
    for n in range(5):
        jid = session.dpu.run("Null", s=0.2, return_jobid=True)
        if n < MIN_RUNS:  # too few earlier runs: the task's own estimate (5 + s), said as before
            assert estimate_line(session).endswith("Estimated process time : 5 seconds")
        assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].ok
    session.dpu.run("Null", s=0.2)
    line = estimate_line(session)
    found = re.search(r"Estimated process time : (\d+) seconds \(from 5 earlier runs\)$", line)
    assert found and int(found.group(1)) < 5, line
    assert re.search(r"Suggested: dpu_time=\d+, dpu_mem=\d+ \(dpu_time='auto' uses them",
                     session.printed()[-2]), session.printed()[-2]
    # dpu_time='auto' asks for the learned time: the job records it as its dpu_time.
    jid = session.dpu.run("Null", s=0.2, dpu_time="auto", return_jobid=True)
    assert re.search(r"seconds \(from [56] earlier runs\)$", estimate_line(session))  # 6th may be done
    job = session.dpu._store.job(jid)
    assert job.dpu_options["dpu_time"] < 5 and job.dpu_options["dpu_mem"] >= 1
    # Another sequence has no history yet: --time auto says it used the tasks' estimate.
    out = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "run", "Null>Null", "--time", "auto",
                          "--dpu", "testlocal"], capture_output=True, text=True, cwd=env.cwd, check=False)
    assert out.returncode == 0, out.stderr
    assert ("Estimated process time : 10 seconds (the tasks' estimate: fewer than 3 earlier runs)"
            in out.stdout)
    bad = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "run", "Null", "--time", "soon",
                          "--dpu", "testlocal"], capture_output=True, text=True, cwd=env.cwd, check=False)
    assert bad.returncode == 2 and "a number or 'auto', not 'soon'" in bad.stderr
