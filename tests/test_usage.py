"""Usage accounting (issue 12, must-have 3): the worker's own figures, the schedulers'
accounting formats, `dpu report` and the page's data, on the local DPU and from samples."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpu_slurm.config import DPUConfig
from dpu_slurm.report import job_report, report_lines
from dpu_slurm.schedulers.accounting import (
    Figures,
    amount_bytes,
    duration,
    parse_qacct_usage,
    parse_sacct,
    pbs_figures,
)
from dpu_slurm.schedulers.pbs import PBSScheduler, parse_full
from dpu_slurm.schedulers.sge import parse_qacct
from dpu_slurm.store import Job, Store
from dpu_slurm.store_usage import UsageRow
from dpu_slurm.transport.local import LocalTransport
from dpu_slurm.usage import fill_in, wants_accounting, worker_figures
from tests.conftest import Env, Session

MB = 1024  # KB


def job(job_id: int = 7, natives=("501",), nproc: int = 5) -> Job:
    return Job(job_id, "d", "alice", "Null", {}, {"time_limit": 60, "mem": 400}, nproc, 1, "submitted",
               list(natives), "/w", "", "", 0.0, 1.0, None)


# -- the worker measures itself ---------------------------------------------------------------

def test_a_process_allocating_200_mb_reports_its_peak_from_the_worker(session: Session) -> None:
    jid = session.dpu.run("Null", mb=200, dpu_mem=1000, return_jobid=True)
    assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].ok
    data = session.dpu.report(jid)
    row = data["rows"][0]
    assert row["source"] == "worker" and 180 <= row["max_rss_mb"] <= 260, row
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["mem_used"] == pytest.approx(
        row["max_rss_mb"] / 1000, abs=0.001)
    printed = "\n".join(session.printed())
    assert f"Job {jid} (Null): 1/1 processes ended, figures for 1 (1 from worker)" in printed
    assert f"memory used       : max {row['max_rss_mb']:.0f} MB" in printed


def test_dpu_report_json_on_the_command_line(session: Session, env: Env) -> None:
    jid = session.dpu.run("Null", n=3, mb=20, return_jobid=True)
    assert session.dpu.wait(jid, timeout=60, interval=0.05)[0].ok
    out = subprocess.run([sys.executable, "-m", "dpu_slurm.cli", "report", str(jid), "--json",
                          "--dpu", "testlocal"], capture_output=True, text=True, cwd=env.cwd, check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout[out.stdout.index("{"):])
    assert (data["job"], data["processes"], data["measured"]) == (jid, 3, 3)
    assert all(20 <= r["max_rss_mb"] < 200 for r in data["rows"])
    assert len(data["worst"]["memory"]) == 3 and data["cpu_efficiency"] is not None


def test_a_report_of_an_unknown_job_is_a_clear_error(session: Session) -> None:
    with pytest.raises(Exception, match="no job with identifier 999"):
        session.dpu.report(999)


def test_worker_figures_are_typed_and_bounded() -> None:
    assert worker_figures({"wall_s": 1.5, "cpu_s": 1, "max_rss_kb": 2048}) == Figures(1.5, 1.0, 2048)
    assert worker_figures({"wall_s": "1", "cpu_s": -1, "max_rss_kb": float("nan")}) is None
    assert worker_figures({"wall_s": True, "max_rss_kb": 10 ** 30}) is None
    assert worker_figures(["x"]) is None and worker_figures(None) is None
    # Cut short or unmeasured: the scheduler's accounting is asked.
    assert wants_accounting("NA", Figures(1.0)) and wants_accounting("N", None)
    assert not wants_accounting("NE", Figures(1.0))


# -- the schedulers' accounting, from samples ---------------------------------------------------

SACCT = """501_0|COMPLETED||12|00:11.500
501_0.batch|COMPLETED|215040K||00:11.480
501_0.extern|COMPLETED|900K||00:00.002
501_1|TIMEOUT||61|01:00.250
501_1.batch|CANCELLED|1.5G||01:00.240
501_2|RUNNING||5|00:04.000
501_4|TIMEOUT||75|00:00:00
501_4.batch|FAILED||75|00:00:00
501_2.batch|RUNNING|1000K||00:04.000
501_[3]|PENDING||0|00:00:00
999_0|COMPLETED||3|00:01.000
"""


def test_sacct_gives_the_largest_step_peak_and_the_task_wall_and_cpu() -> None:
    got = parse_sacct([job()], SACCT)
    # A killed step's TotalCPU of 0 and empty MaxRSS are no figures (the worker's stay).
    assert got == {7: {0: Figures(12.0, 11.5, 215040), 1: Figures(61.0, 60.25, 1536 * MB),
                       4: Figures(75.0, None, None)}}


def test_sacct_of_a_rerun_chunk_maps_array_indices_by_its_offset() -> None:
    rerun = job(natives=("502",), nproc=2000)
    rerun.dpu_options["layout"] = [[1000, [1003, 1007]]]
    got = parse_sacct([rerun], "502_7|COMPLETED||4|00:02.000\n502_7.batch|COMPLETED|2048K||00:02.000\n")
    assert got == {7: {1007: Figures(4.0, 2.0, 2048)}}


QACCT = """==============================================================
qname        all.q
jobname      dpu.alice.7
jobnumber    88
taskid       2
ru_wallclock 5s
cpu          4.125s
ru_maxrss    214.804KB
maxvmem      0.000B
==============================================================
jobnumber    88
taskid       3
ru_wallclock 61
cpu          60.000s
ru_maxrss    0.000B
maxvmem      250.000M
==============================================================
jobnumber    77
taskid       1
ru_wallclock 1s
"""


def test_qacct_reads_ru_maxrss_as_kb_and_falls_back_to_maxvmem() -> None:
    got = parse_qacct_usage([job(natives=("88",))], parse_qacct(QACCT))
    assert got[7][1] == Figures(5.0, 4.125, round(214.804 * 1024))
    assert got[7][2] == Figures(61.0, 60.0, 250 * MB)
    assert set(got) == {7}


PBS = """Job Id: 300[1].server
    job_state = F
    resources_used.cput = 00:00:04
    resources_used.mem = 204800kb
    resources_used.walltime = 00:01:05
"""


def test_pbs_resources_used() -> None:
    block = parse_full(PBS)[0]
    assert pbs_figures(block) == Figures(65.0, 4.0, 204800)
    assert amount_bytes("2gb") == 2 * 1024 ** 3 and amount_bytes("12") == 12.0
    assert amount_bytes("lots") is None and duration("1-00:00:01") == 86401.0 and duration("x") is None


def test_the_pbs_scheduler_maps_subjobs_to_processes() -> None:
    sched = PBSScheduler(DPUConfig(name="d", scheduler="pbs", path=Path("d.yaml")), LocalTransport())
    got = sched.used([job(natives=("300[].server",))], parse_full(PBS))
    assert got == {7: {1: Figures(65.0, 4.0, 204800)}}


# -- the report, from stored figures ------------------------------------------------------------

def test_the_report_names_the_worst_processes_and_the_ratios(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "alice", "Null", {}, {"time_limit": 100, "mem": 1000}, 4, 1)
    store.submitted(jid, ["1"])
    store.update(jid, [(i, "DONE", "N", "", None) for i in range(4)])
    store.put_usage(jid, [UsageRow(0, 1, 10.0, 10.0, 100 * MB, "worker"),
                          UsageRow(1, 1, 90.0, 9.0, 900 * MB, "sacct"),
                          UsageRow(2, 1, 50.0, 25.0, None, "worker")])
    data = job_report(store, store.job(jid))
    assert data["time"] == {"max_s": 90.0, "mean_s": 50.0, "max_used": 0.9}
    assert data["memory"]["max_mb"] == 900.0 and data["memory"]["max_used"] == 0.9
    assert data["cpu_efficiency"] == round(44 / 150, 3)
    assert [r["process"] for r in data["worst"]["time"]] == [1, 2, 0]
    assert [r["process"] for r in data["worst"]["cpu"]] == [1, 2, 0]   # 10%, 50%, 100%
    assert data["sources"] == {"worker": 2, "sacct": 1} and data["measured"] == 3
    lines = report_lines(data)
    assert "4/4 processes ended, figures for 3 (1 from sacct, 2 from worker)" in lines[0]
    assert lines[3].startswith("  memory used       : max 900 MB (90% of asked)")
    assert lines[-1] == "  least CPU-busy    : process 1 10%, process 2 50%, process 0 100%"


class FakeAccounting:
    """A scheduler's usage() only: counts the calls, answers what it was given."""

    USAGE_SOURCE = "sacct"

    def __init__(self, answer: dict) -> None:
        self.answer, self.calls = answer, 0

    def usage(self, jobs: list) -> dict:
        self.calls += 1
        return self.answer


def test_report_asks_the_accounting_only_for_aborted_or_unmeasured_processes(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "alice", "Null", {}, {"time_limit": 60, "mem": 100}, 3, 1)
    store.submitted(jid, ["1"])
    store.update(jid, [(0, "DONE", "N", "", None), (1, "DONE", "A", "TIMEOUT", None),
                       (2, "DONE", "U", "", None)])
    store.put_usage(jid, [UsageRow(0, 1, 5.0, 4.0, 2048, "worker"),
                          UsageRow(1, 1, 59.0, 50.0, 4096, "worker")])
    lagging = FakeAccounting({jid: {1: Figures(61.0, None, None)}})   # sacct not final yet
    assert fill_in(store, lagging, store.job(jid)) == 1 and lagging.calls == 1
    row = store.usage(jid)[(1, 1)]
    assert (row.wall_s, row.cpu_s, row.max_rss_kb, row.source) == (61.0, 50.0, 4096, "sacct")
    # Process 1 now has every figure (sacct's wall time, the worker's CPU and peak); process 2
    # none yet: only it is asked for; process 0 ended N with the worker's figures: never.
    final = FakeAccounting({jid: {1: Figures(61.0, 55.0, 8192), 2: Figures(3.0, 1.0, 1024), 0: Figures(9.0)}})
    assert fill_in(store, final, store.job(jid)) == 1 and final.calls == 1
    got = store.usage(jid)
    assert got[(0, 1)].wall_s == 5.0 and got[(1, 1)].max_rss_kb == 4096
    assert (got[(2, 1)].wall_s, got[(2, 1)].source) == (3.0, "sacct")
    done = FakeAccounting({})
    assert fill_in(store, done, store.job(jid)) == 0 and done.calls == 0   # nothing left to ask
