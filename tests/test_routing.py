"""``dpu="auto"``: the DPU expected to start a run first (routing.py), and SLURM's ``-M``.

The multi-cluster flag is checked on golden argv lists: a second slurmctld sharing the
harness's slurmdbd is more than this 2-core machine can carry next to the other services.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

import pytest

from dpu_slurm import cli, routing
from dpu_slurm.catalog import Catalog
from dpu_slurm.config import DPUConfig, get_dpu, load_file
from dpu_slurm.errors import ConfigError, DPUError
from dpu_slurm.plan import make_plan
from dpu_slurm.schedulers.slurm import SlurmScheduler
from dpu_slurm.session import DPUSession, awepipe_path, open_store
from dpu_slurm.store import Job
from tests.conftest import EXAMPLE, Env, Session, wait_until

DATA = Path(__file__).parent / "data"
NIGHT = {"night": {"path": str(EXAMPLE)}}   # a version only the test DPUs have ('local' lacks it)
Capture = pytest.CaptureFixture[str]


# -- sbatch --test-only ---------------------------------------------------------------------------
def test_the_start_time_of_sbatch_test_only_is_read_from_its_captured_output() -> None:
    text = (DATA / "slurm_test_only.txt").read_text()   # what the harness's SLURM printed
    start = routing.parse_test_only(text)
    assert start == time.mktime(time.strptime("2026-12-01T13:50:28", "%Y-%m-%dT%H:%M:%S"))
    later = ("sbatch: Job 9 to start at 2031-01-02T03:04:05 using 4 processors on nodes n[1-2] "
             "in partition long")
    assert routing.parse_test_only(later) == time.mktime((2031, 1, 2, 3, 4, 5, 0, 0, -1))
    for refused in ("sbatch: error: Batch job submission failed: Requested node configuration is "
                    "not available", "", "to start at soon"):
        assert routing.parse_test_only(refused) is None


def slurm_cfg(**fields: Any) -> DPUConfig:
    return DPUConfig(name="s", scheduler="slurm", path=Path(), **fields)


def plan_on(cfg: DPUConfig, **dpu_options: Any) -> Any:
    return make_plan(Catalog.load(awepipe_path()), cfg, "Null", {"n": 3}, **dpu_options)


def test_the_test_only_argv_asks_for_the_runs_array_time_memory_and_partition() -> None:
    cfg = slurm_cfg(account="astro", partitions=[{"name": "short", "max_time": 3600, "max_mem": 4000}])
    argv = routing.test_only_argv(cfg, plan_on(cfg, dpu_time=100, dpu_mem=500), "sbatch", [])
    assert argv == ["sbatch", "--test-only", "--time=3", "--mem=500M", "--array=0-2", "--partition=short",
                    "--account=astro", "--wrap=true"]


# -- SLURM multi-cluster: -M on every command (golden argv) ----------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.calls: List[List[str]] = []


def job() -> Job:
    return Job(1, "s", "alice", "Null", {}, {"chunk": 1000, "time_limit": 600}, 2, 1, "submitted",
               ["77"], "/jobs/x", "", "", 0.0, 1.0, None)


def test_clusters_put_dash_M_on_sbatch_squeue_sacct_scancel() -> None:
    sched = SlurmScheduler(slurm_cfg(clusters="north,south"), Recorder())  # type: ignore[arg-type]
    req = SimpleNamespace(jobdir="/w/jobs/1", after={})
    assert sched.submit_argv(req, "job-0.sh", "") == [  # type: ignore[arg-type]
        "sbatch", "-M", "north,south", "--parsable", "--chdir=/w/jobs/1", "/w/jobs/1/job-0.sh"]
    assert sched.poll_request([job()]).argv[:4] == ["squeue", "-M", "north,south", "--me"]
    history = sched.history_request([job()])
    assert history is not None and history[:4] == ["sacct", "-M", "north,south", "-X"]
    assert sched.cancel_argv(job(), False, ["77"]) == [
        ["scancel", "-M", "north,south", "--state=PENDING", "77"]]
    sched.all_users = True
    assert sched.poll_request([job()]).argv[:4] == ["squeue", "-M", "north,south", "-h"]
    assert sched.parse_id("41903;north\n") == "41903"       # sbatch -M --parsable: id;cluster


def test_without_clusters_the_commands_are_as_before() -> None:
    sched = SlurmScheduler(slurm_cfg(), Recorder())  # type: ignore[arg-type]
    assert sched.poll_request([job()]).argv[:2] == ["squeue", "--me"]
    assert sched.cancel_argv(job(), True, ["77"]) == [["scancel", "77"]]


def test_a_clusters_value_that_is_not_a_name_list_is_a_config_error(env: Env) -> None:
    path = env.write_dpu("multi", scheduler="slurm", clusters="north; rm -rf /")
    with pytest.raises(ConfigError, match="clusters"):
        load_file(path)
    env.write_dpu("multi", scheduler="slurm", clusters="north,south")
    assert get_dpu("multi").clusters == "north,south"


# -- choosing between local DPUs -------------------------------------------------------------------
def busy_and_free(make_session: Callable[..., Session]) -> Session:
    """DPU 'busy' (1 slot, a long job running and one queued) and 'free' (2 idle slots); the
    session is on 'busy'."""
    make_session("free", slots=2, awe_versions=NIGHT)
    s = make_session("busy", slots=1, awe_versions=NIGHT)
    jid = s.dpu.run("Null", n=2, s=60, return_jobid=True)
    wait_until(lambda: s.dpu.get_status(jid)[0].status == "RUNNING", timeout=30, step=0.2)
    return s


def test_auto_picks_the_free_dpu_and_says_why(make_session: Callable[..., Session]) -> None:
    s = busy_and_free(make_session)
    jid = s.dpu.run("Null", m="routed", dpu="auto", dpu_aweversion="night", return_jobid=True)
    assert jid is not None
    assert s.dpu._store.job(jid).dpu == "free"
    lines = "\n".join(s.printed())
    assert "DPU auto: chose free (backlog: 0 queued + 0 running on 2 slots, starts now)" in lines
    assert "not busy (backlog: 1 queued + 1 running on 1 slot, starts in about" in lines
    assert "not local (does not fit: dpu_aweversion 'night' is not installed" in lines
    assert s.dpu.wait(jid, timeout=60, interval=0.1)[0].ok


def test_auto_skips_a_free_dpu_without_the_version_or_a_fitting_partition(
        make_session: Callable[..., Session]) -> None:
    make_session("small", slots=4, awe_versions=NIGHT,
                 partitions=[{"name": "tiny", "max_time": 3600, "max_mem": 100}])
    s = busy_and_free(make_session)
    make_session("free", slots=2)                         # now without the version
    jid = s.dpu.run("Null", dpu="auto", dpu_aweversion="night", dpu_mem=500, return_jobid=True)
    assert jid is not None and s.dpu._store.job(jid).dpu == "busy"
    text = "\n".join(s.printed())
    assert "not small (does not fit: no partition of DPU 'small' takes" in text
    assert "not free (does not fit: dpu_aweversion 'night' is not installed on DPU 'free'" in text


def test_auto_leaves_out_a_dpu_whose_host_cannot_be_reached(make_session: Callable[..., Session],
                                                           env: Env) -> None:
    from tests.test_web_hub import closed_port
    known = env.root / "known_hosts"
    known.write_text("")
    env.write_dpu("aaa-far", scheduler="pbs", awe_versions=NIGHT, host={
        "hostname": "127.0.0.1", "port": closed_port(), "user": "dpuuser", "known_hosts": str(known),
        "connect_timeout": 2})                               # sorts first: would win a tie
    s = make_session(awe_versions=NIGHT)
    jid = s.dpu.run("Null", dpu="auto", dpu_aweversion="night", return_jobid=True)
    assert jid is not None and s.dpu._store.job(jid).dpu == "testlocal"
    printed = "\n".join(s.printed())
    assert "DPU auto:   not aaa-far (unreachable: DPU 'aaa-far' is unreachable over SSH" in printed


def test_auto_with_no_dpu_that_fits_is_a_clear_error_and_submits_nothing(session: Session) -> None:
    with pytest.raises(DPUError, match=r"dpu auto: no DPU can take this run .*testlocal: does not fit"):
        session.dpu.run("Null", dpu="auto", dpu_aweversion="nowhere")
    assert session.dpu._store.jobs() == []


def test_dpu_run_dash_dash_dpu_auto_on_the_command_line(make_session: Callable[..., Session],
                                                       capsys: Capture) -> None:
    s = busy_and_free(make_session)
    capsys.readouterr()
    assert cli.main(["run", "Null", "m=cli", "--aweversion", "night", "--dpu", "auto", "--json"]) == 0
    out = capsys.readouterr()
    jid = json.loads(out.out)["jobid"]
    assert "DPU auto: chose free" in out.err
    assert s.dpu._store.job(jid).dpu == "free"


def test_a_bulk_manifest_with_dpu_auto_spreads_its_entries(make_session: Callable[..., Session],
                                                         env: Env, capsys: Capture) -> None:
    make_session("one", slots=1, awe_versions=NIGHT)
    make_session("two", slots=1, awe_versions=NIGHT)
    path = env.cwd / "auto.yaml"
    path.write_text("dpu: auto\ndefaults: {dpu_aweversion: night}\nruns:\n"
                    "  - {key: a, sequence: Null, options: {m: a}}\n"
                    "  - {key: b, sequence: Null, options: {m: b}}\n")
    assert cli.main(["bulk", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the first entry takes 'one' (a tie goes to the first name); its process then makes 'two' earlier
    assert [(e["key"], e["dpu"], e["state"]) for e in data["entries"]] == [
        ("a", "one", "submitted"), ("b", "two", "submitted")]
    assert cli.main(["bulk", str(path), "--json"]) == 0           # run again: both skipped, same DPUs
    again = json.loads(capsys.readouterr().out)
    assert [(e["dpu"], e["state"]) for e in again["entries"]] == [("one", "skipped"), ("two", "skipped")]


# -- the real SLURM of the harness ------------------------------------------------------------------
@pytest.mark.slurm
def test_the_harness_slurm_answers_sbatch_test_only(slurm_cluster: None, env: Env) -> None:
    env.write_dpu("testslurm", scheduler="slurm", min_time=60, awe_versions=NIGHT,
                  partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    store = open_store()
    session = DPUSession(get_dpu("testslurm"), store)
    try:
        got = routing.estimate(session, plan_on(session.dpu, dpu_mem=100))
    finally:
        session.close()
        store.close()
    assert got.why.startswith("sbatch --test-only: starts at "), got.why
    assert 0 <= got.wait < 86400 and got.plan is not None


@pytest.mark.slurm
def test_auto_picks_the_harness_slurm_when_the_local_dpu_is_full(
        slurm_cluster: None, make_session: Callable[..., Session], env: Env) -> None:
    """Issue 14's test with a real cluster on one side: the local DPU full, the SLURM one free."""
    env.write_dpu("testslurm", scheduler="slurm", min_time=60, awe_versions=NIGHT,
                  poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                  partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    s = make_session("busy", slots=1, awe_versions=NIGHT)
    full = s.dpu.run("Null", n=2, s=300, return_jobid=True)
    routed = None
    try:
        wait_until(lambda: s.dpu.get_status(full)[0].status == "RUNNING", timeout=30, step=0.2)
        routed = s.dpu.run("Null", m="routed", dpu="auto", dpu_aweversion="night", dpu_mem=100,
                           return_jobid=True)
        assert routed is not None and s.dpu._store.job(routed).dpu == "testslurm"
        lines = "\n".join(s.printed())
        assert "DPU auto: chose testslurm (sbatch --test-only: starts at " in lines
        assert "not busy (backlog: 1 queued + 1 running on 1 slot, starts in about" in lines
        view = s.dpu.wait(routed, timeout=180, interval=0.5)[0]
        assert view.ok and "Message: routed" in "\n".join(s.dpu.get_logs(routed, echo=False))
    finally:
        s.dpu.cancel_job(full, force=True)
        if routed is not None:
            natives = s.dpu.poll(routed)[0].job.native_ids
            if natives:  # leave the shared cluster as it was
                subprocess.run(["scancel", *natives], check=False)


def test_choice_lines_list_every_dpu() -> None:
    cfg = DPUConfig(name="a", scheduler="local", path=Path())
    est: Dict[str, routing.Estimate] = {n: routing.Estimate(n, w, f"why {n}")
                                        for n, w in (("a", 0), ("b", 5))}
    choice = routing.Choice(cfg, None, list(est.values()))  # type: ignore[arg-type]
    assert choice.lines() == ["DPU auto: chose a (why a)", "DPU auto:   not b (why b)"]
