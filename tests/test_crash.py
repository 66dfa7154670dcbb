"""Fault drills: the submitter is killed (or interrupted) at each step of submit, on the local DPU
and on the real SLURM; the next poll settles the job: nothing stays SUBMITTING past the grace,
nothing is queued twice, and the status is right (adopted and FINISHED, or NOT SUBMITTED).

The kill is deterministic: DPU_FAULT=<step>[:<signal>] makes session.submit signal itself there.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest
import yaml

from dpu_slurm import Processor, cli
from dpu_slurm.config import DPUConfig
from dpu_slurm.schedulers.base import PollRequest, Scheduler, tag_of
from dpu_slurm.schedulers.pbs import full_rows, parse_full
from dpu_slurm.schedulers.sge import SGEScheduler, parse_xml
from dpu_slurm.schedulers.slurm import SlurmScheduler
from dpu_slurm.session import JobView, open_store
from dpu_slurm.status import refresh
from dpu_slurm.store import Job, Store
from dpu_slurm.transport.base import Completed, Gathered
from dpu_slurm.transport.local import LocalTransport
from tests.conftest import SGE_ENV, Env, harness
from tests.test_pbs import BIN

GRACE = 2
# Steps of session.submit, in order; the first two are before any scheduler call.
BEFORE = ["record", "shipped"]
AFTER = ["accepted", "chunk", "stored"]


def prompt(env: Env, dpu: str, n: int, fault: str, sleep: int = 0) -> subprocess.CompletedProcess[str]:
    """A Python prompt that runs one job and is signalled at the fault step."""
    code = (f"from dpu_slurm import Processor\n"
            f"Processor({dpu!r}, session_log=False).run('Null', n={n}, s={sleep}, dpu_mem=100)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                          env=dict(os.environ, DPU_FAULT=fault), timeout=180)


def bulk_run(env: Env, manifest: Path, fault: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys\nfrom dpu_slurm import cli\nsys.exit(cli.main(['bulk', {str(manifest)!r}]))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                          env=dict(os.environ, DPU_FAULT=fault), timeout=180)


def all_jobs() -> List[Job]:
    store = open_store()
    try:
        return store.jobs()
    finally:
        store.close()


def settle(dpu: str, timeout: float = 120) -> List[JobView]:
    """Poll every job of the store until each is FINISHED or NOT SUBMITTED."""
    proc = Processor(dpu, out=io.StringIO(), session_log=False)
    try:
        views = proc.wait([j.id for j in all_jobs()], timeout=timeout, interval=0.2)
    finally:
        proc.close()
    stuck = [v.job.id for v in views if v.status not in ("FINISHED", "NOT SUBMITTED")]
    assert not stuck, f"jobs {stuck} still {[v.status for v in views]}"
    return views


def runners(env: Env, dpu: str) -> List[Path]:
    """The local DPU's own record of what it runs: one runner per queued job."""
    return sorted((env.work / dpu / "jobs").glob("*/runner.pid"))


def killed(res: subprocess.CompletedProcess[str], sig: str = "KILL") -> None:
    if sig == "KILL":
        assert res.returncode == -signal.SIGKILL, res.stderr
    else:  # Ctrl-C: KeyboardInterrupt ends the prompt with a traceback
        assert "KeyboardInterrupt" in res.stderr, res.stderr


# -- the local DPU -----------------------------------------------------------------------------
@pytest.mark.parametrize("step", BEFORE + AFTER)
def test_prompt_killed_at_each_step_on_the_local_dpu(env: Env, step: str) -> None:
    env.write_dpu(poll={"grace": GRACE})
    killed(prompt(env, "testlocal", 2, f"{step}:KILL"))
    [job] = all_jobs()
    # what a kill -9 leaves: SUBMITTING until the next poll (after the store write: submitted)
    assert job.phase == ("submitted" if step == "stored" else "recorded")
    [view] = settle("testlocal")
    if step in BEFORE:
        assert view.status == "NOT SUBMITTED"
        assert "nothing on DPU testlocal carries its tag" in view.job.error
        assert runners(env, "testlocal") == []
    else:
        assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 0, 0))
        assert len(runners(env, "testlocal")) == 1  # adopted, never queued twice
        assert view.job.native_ids == [runners(env, "testlocal")[0].read_text().strip()]


def test_ctrl_c_before_the_scheduler_call_is_not_submitted_at_once(env: Env) -> None:
    env.write_dpu(poll={"grace": 3600})  # no grace needed: nothing reached the scheduler
    killed(prompt(env, "testlocal", 1, "shipped:INT"), "INT")
    [job] = all_jobs()
    assert job.phase == "not_submitted" and "KeyboardInterrupt" in job.error
    assert runners(env, "testlocal") == []


def test_ctrl_c_after_the_scheduler_accepted_keeps_the_job(env: Env) -> None:
    env.write_dpu(poll={"grace": GRACE})
    killed(prompt(env, "testlocal", 2, "accepted:INT"), "INT")
    [job] = all_jobs()
    assert job.phase == "recorded" and "submission interrupted (KeyboardInterrupt" in job.error
    [view] = settle("testlocal")
    assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 0, 0))


def test_a_job_recorded_by_a_live_submitter_is_left_to_it(env: Env) -> None:
    """Past the grace, a job whose submitter still runs (a slow upload) is not given up."""
    env.write_dpu(poll={"grace": 0})
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    store = dpu._store
    job_id = store.record("testlocal", "alice", "Null", {}, {"store": "x"}, 1, 1)
    from dpu_slurm.reconcile import submitter_note
    store.note(job_id, submitter_note())  # this very process: alive
    dpu.get_status(job_id)
    assert store.job(job_id).phase == "recorded"
    store.note(job_id, "submitting: pid 999999999 on nowhere started 1")  # gone
    dpu.get_status(job_id)
    assert store.job(job_id).phase == "not_submitted"
    dpu.close()


NIGHT = """\
    dpu: {dpu}
    defaults: {{dpu_mem: 100}}
    runs:
      - {{key: a, sequence: Null, options: {{m: a, n: {n}}}}}
      - {{key: b, sequence: Null, options: {{m: b, n: {n}}}}}
    """


def bulk_drill(env: Env, dpu: str, step: str, n: int, capsys: pytest.CaptureFixture[str]) -> Dict[str, Any]:
    manifest = env.cwd / "night.yaml"
    manifest.write_text(textwrap.dedent(NIGHT.format(dpu=dpu, n=n)), encoding="utf-8")
    killed(bulk_run(env, manifest, f"{step}:KILL"))
    # killed at the first entry
    assert [j.phase for j in all_jobs()] == ["submitted" if step == "stored" else "recorded"]
    capsys.readouterr()
    assert cli.main(["bulk", str(manifest), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return {e["key"]: e for e in out["entries"]}


@pytest.mark.parametrize("step", BEFORE + AFTER)
def test_bulk_killed_at_each_step_then_rerun_submits_each_entry_once(
        env: Env, step: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.write_dpu(poll={"grace": GRACE})
    entries = bulk_drill(env, "testlocal", step, 1, capsys)
    # the killed entry is adopted (skipped: already submitted) or, proved not submitted, submitted now
    assert entries["a"]["state"] == ("submitted" if step in BEFORE else "skipped")
    assert entries["b"]["state"] == "submitted"
    views = settle("testlocal")
    assert len(runners(env, "testlocal")) == 2  # one queued job per entry, none twice
    by_id = {v.job.id: v for v in views}
    for key in "ab":
        assert (by_id[entries[key]["jobid"]].status, by_id[entries[key]["jobid"]].counts.letters) == \
            ("FINISHED", (1, 0, 0, 0, 0))
    assert sum(v.status == "NOT SUBMITTED" for v in views) == (1 if step in BEFORE else 0)


def test_forget_of_an_entry_whose_job_runs_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.write_dpu(poll={"grace": GRACE})
    manifest = env.cwd / "night.yaml"
    manifest.write_text("dpu: testlocal\nruns: [{key: slow, sequence: Null, options: {s: 30}}]\n")
    assert cli.main(["bulk", str(manifest)]) == 0
    capsys.readouterr()
    assert cli.main(["bulk", str(manifest), "--forget", "slow", "--json"]) == 1
    [entry] = json.loads(capsys.readouterr().out)["entries"]
    assert entry["state"] == "failed" and "--forget slow refused: its job" in entry["error"]
    assert len(all_jobs()) == 1 and len(runners(env, "testlocal")) == 1  # not submitted twice
    [job] = all_jobs()
    assert cli.main(["cancel", "--dpu", "testlocal", "--force", str(job.id)]) == 0
    settle("testlocal")
    assert cli.main(["bulk", str(manifest), "--forget", "slow"]) == 0  # ended: forgetting is fine
    assert len(all_jobs()) == 2


# -- cancel_job goes through every job (the seed's loop) -----------------------------------------
def test_the_seeds_cancel_loop_goes_through_finished_running_and_queued_jobs(env: Env) -> None:
    env.write_dpu(slots=2)
    out = io.StringIO()
    dpu = Processor("testlocal", out=out, session_log=False)
    done = dpu.run("Null", return_jobid=True)
    dpu.wait(done, timeout=30, interval=0.05)
    partly = dpu.run("Null", n=3, s=30, return_jobid=True)  # 2 slots: 2 run, 1 queued
    queued = dpu.run("Null", n=2, return_jobid=True)
    deadline = time.monotonic() + 30
    while dpu.wait(partly, timeout=0)[0].counts.running < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for jobid in dpu.get_jobids():  # the seed's loop: no exception stops it
        dpu.cancel_job(jobid)
    lines = out.getvalue().splitlines()
    assert any(f"Job {done} is finished (status FINISHED" in ln for ln in lines)
    assert any(f"Cancelled the 1 queued process(es) of job {partly}; 2 running process(es) go on: "
               f"dpu.cancel_job({partly}, force=True)" in ln for ln in lines)
    view = dpu.wait(queued, timeout=30, interval=0.05)[0]
    assert view.counts.letters == (0, 0, 0, 2, 0)  # reached and cancelled: skipped
    assert dpu.wait(partly, timeout=0)[0].counts.running == 2  # still running
    assert [p.outcome for p in dpu._store.procs(partly) if p.state == "DONE"] == ["S"]
    dpu.cancel_job(partly, force=True)
    assert dpu.wait(partly, timeout=30, interval=0.05)[0].counts.letters == (0, 0, 2, 1, 0)
    dpu.close()


# -- the real SLURM ----------------------------------------------------------------------------
def slurm_dpu(env: Env, name: str = "crashslurm", **extra: Any) -> str:
    cfg = {"name": name, "scheduler": "slurm", "workdir": str(env.work / name), "time_factor": 1,
           "min_time": 60, "max_array_size": 2,
           "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
           "partitions": [{"name": "debug", "max_time": 86400, "max_mem": 4000}]}
    cfg.update(extra)
    (env.config / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return name


def carrying(job: Job, since: float, expected: int = 0) -> Set[str]:
    """The SLURM jobs (array ids) whose name carries this job's tag: queue and accounting (which
    lags behind the queue: asked again until the `expected` number shows, for at most 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        found = _carrying(job, since)
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _carrying(job: Job, since: float) -> Set[str]:
    prefix = tag_of(job) + "."
    queue = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%F|%j"], capture_output=True,
                           text=True, check=True).stdout
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 60))
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-S", start, "-o", "JobID,JobName"],
                          capture_output=True, text=True, check=True).stdout
    ids = set()
    for line in (queue + acct).splitlines():
        native, _, name = line.partition("|")
        if name.startswith(prefix):
            ids.add(native.split("_")[0])
    return ids


@pytest.fixture
def slurm_env(slurm_cluster: None, env: Env) -> Env:
    return env


@pytest.mark.slurm
@pytest.mark.parametrize("step", BEFORE + AFTER)
def test_prompt_killed_at_each_step_on_slurm(slurm_env: Env, step: str) -> None:
    """A two-chunk job (max_array_size 2, 4 processes): killed after chunk 0 was accepted, it is
    adopted with chunk 0 and chunk 1's processes end S; killed before, it is not submitted."""
    env, t0 = slurm_env, time.time()
    name = slurm_dpu(env)
    # Between the chunks the tasks run a while, so the first poll finds chunk 0 by its tag in the
    # queue (a job that is already gone is found through sacct, which may lag on a busy machine).
    killed(prompt(env, name, 4, f"{step}:KILL", sleep=20 if step in ("accepted", "chunk") else 0))
    [job] = all_jobs()
    assert job.phase == ("submitted" if step == "stored" else "recorded")
    [view] = settle(name)
    found = carrying(view.job, t0, {"stored": 2, "record": 0, "shipped": 0}.get(step, 1))
    if step in BEFORE:
        assert view.status == "NOT SUBMITTED" and found == set()
    elif step == "stored":
        assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
        assert found == set(view.job.native_ids) and len(found) == 2
    else:  # killed between the chunks: chunk 0 adopted, chunk 1 never submitted (S), never twice
        assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 2, 0))
        assert found == {view.job.native_ids[0]} and view.job.native_ids[1] == ""
        reasons = [p.reason for p in open_store().procs(view.job.id)]
        assert all(r.startswith("never submitted") for r in reasons[2:])


@pytest.mark.slurm
def test_ctrl_c_after_the_first_chunk_on_slurm_is_adopted_not_lost(slurm_env: Env) -> None:
    env, t0 = slurm_env, time.time()
    name = slurm_dpu(env)
    killed(prompt(env, name, 4, "chunk:INT", sleep=20), "INT")
    [job] = all_jobs()
    assert job.phase == "recorded" and len(job.native_ids) == 1  # what is known is kept
    [view] = settle(name)
    assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 2, 0))
    assert carrying(view.job, t0, 1) == {job.native_ids[0]}


@pytest.mark.slurm
@pytest.mark.parametrize("step", ["shipped", "accepted", "stored"])
def test_bulk_killed_on_slurm_then_rerun_submits_each_entry_once(
        slurm_env: Env, step: str, capsys: pytest.CaptureFixture[str]) -> None:
    env, t0 = slurm_env, time.time()
    name = slurm_dpu(env)
    entries = bulk_drill(env, name, step, 2, capsys)  # 2 processes: one chunk each
    assert entries["a"]["state"] == ("submitted" if step in BEFORE else "skipped")
    views = {v.job.id: v for v in settle(name)}
    for key in "ab":
        view = views[entries[key]["jobid"]]
        assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 0, 0))
        assert len(carrying(view.job, t0, 1)) == 1  # queued once
    assert sum(v.status == "NOT SUBMITTED" for v in views.values()) == (1 if step in BEFORE else 0)


# -- reconciliation without a cluster: what each scheduler's one poll carries, and the grace ------
class Listing(Scheduler, registered=False):
    """A scheduler whose one poll lists `listed` (job name -> native id) and nothing else."""

    name = "listing"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listed: Dict[str, str] = {}

    def submit(self, req: Any) -> List[str]:
        raise NotImplementedError

    def cancel(self, job: Any, force: bool) -> None:
        raise NotImplementedError

    def poll_request(self, jobs: Any) -> PollRequest:
        return PollRequest(None, [])

    def parse_poll(self, jobs: Any, got: Any) -> Dict[int, Dict[int, Any]]:
        self.names = dict(self.listed)
        return {}


def recorded_job(tmp_path: Path, nproc: int = 4, chunk: int = 2) -> Any:
    cfg = DPUConfig(name="d", scheduler="slurm", path=tmp_path / "d.yaml",
                    poll={"min_interval": 0, "max_interval": 0, "grace": 30})
    store = Store(tmp_path / "jobs.sqlite")
    job_id = store.record("d", "alice", "Null", {}, {"chunk": chunk, "store": "s1"}, nproc, 1)
    store.set_jobdir(job_id, str(tmp_path / "job"), "")
    store.note(job_id, "submitting: pid 999999999 on nowhere started 1")  # a submitter gone
    return cfg, store, job_id, Listing(cfg, LocalTransport())


def test_a_recorded_job_nothing_carries_is_not_submitted_once_the_grace_has_passed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, store, job_id, sched = recorded_job(tmp_path)
    created = store.job(job_id).created
    clock = [created + 29.0]
    monkeypatch.setattr("dpu_slurm.status.time.time", lambda: clock[0])
    refresh(store, sched, cfg, force=True)
    assert store.job(job_id).phase == "recorded", "nothing is concluded within the grace"
    clock[0] = created + 31.0
    refresh(store, sched, cfg, force=True)
    job = store.job(job_id)
    assert job.phase == "not_submitted" and job.finished is not None
    assert "stopped before the scheduler accepted it" in job.error
    assert "dpu.alice.1.s1.0" in job.error


def test_a_recorded_job_found_whole_by_its_tags_is_adopted_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, store, job_id, sched = recorded_job(tmp_path)
    sched.listed = {"dpu.alice.1.s1.1": "702", "dpu.alice.1.s1.0": "701", "dpu.alice.1.other.0": "9"}
    refresh(store, sched, cfg, force=True)
    job = store.job(job_id)
    assert (job.phase, job.native_ids) == ("submitted", ["701", "702"])  # in chunk order


def test_a_partly_submitted_job_is_adopted_with_what_is_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, store, job_id, sched = recorded_job(tmp_path)
    store.accepted(job_id, ["701"])  # chunk 0 stored; the submitter died before chunk 1
    created = store.job(job_id).created
    monkeypatch.setattr("dpu_slurm.status.time.time", lambda: created + 31.0)
    sched.listed = {"dpu.alice.1.s1.0": "701"}
    refresh(store, sched, cfg, force=True)
    job = store.job(job_id)
    assert (job.phase, job.native_ids) == ("submitted", ["701", ""])
    procs = store.procs(job_id)
    assert [(p.state, p.outcome) for p in procs[2:]] == [("DONE", "S"), ("DONE", "S")]
    assert procs[2].reason.startswith("never submitted")
    assert [p.state for p in procs[:2]] == ["QUEUED", "QUEUED"]


def test_slurm_poll_carries_job_names() -> None:
    cfg = DPUConfig(name="s", scheduler="slurm", path=None)  # type: ignore[arg-type]
    sched = SlurmScheduler(cfg, LocalTransport())
    assert sched.poll_request([]).argv == ["squeue", "--me", "-h", "-o", "%F|%K|%T|%r|%j"]
    out = "801|0|PENDING|None|dpu.alice.7.s1.0\n802|0|RUNNING|None|a|name with | bars\n"
    sched.parse_poll([], Gathered(Completed(["squeue"], 0, out, ""), {}, {}))
    assert sched.names == {"dpu.alice.7.s1.0": "801"}


def test_sge_and_pbs_polls_carry_whole_job_names() -> None:
    xml = ("<job_info><queue_info><job_list><JB_job_number>31</JB_job_number>"
           "<JB_name>dpu.alice.7.s1.0</JB_name><state>qw</state><tasks>1-2:1</tasks>"
           "</job_list></queue_info></job_info>")
    sge = SGEScheduler(DPUConfig(name="g", scheduler="sge", path=None), LocalTransport())  # type: ignore[arg-type]
    sge.observations([], list(parse_xml(xml)))
    assert sge.names == {"dpu.alice.7.s1.0": "31"}
    full = ("Job Id: 55[].server\n    Job_Name = dpu.alice.7.s1.0\n    Job_Owner = alice@login\n"
            "    job_state = Q\n")
    assert list(full_rows(parse_full(full))) == [("55[].server", "alice", "dpu.alice.7.s1.0", "Q")]


# -- PBS (Slurm's Torque wrappers) and Grid Engine: the same drill between two chunks ----------
def two_chunk_drill(env: Env, name: str) -> JobView:
    """Killed after chunk 0 was accepted, before its id was stored: found by its tag (qstat -f on
    PBS, qstat -xml on Grid Engine) or its workers' records, adopted; chunk 1 ends S."""
    killed(prompt(env, name, 4, "accepted:KILL", sleep=8))  # still listed when the grace ends
    [job] = all_jobs()
    assert job.phase == "recorded" and job.native_ids == []
    [view] = settle(name, timeout=180)
    assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 2, 0))
    first, second = view.job.native_ids
    assert first[:1].isdigit() and second == ""  # chunk 0's id came from the tag in the listing
    return view


@pytest.mark.pbs
def test_prompt_killed_between_chunks_on_pbs(env: Env) -> None:
    harness("torque-up.sh")  # a no-op when the wrappers and SLURM are up
    env.write_dpu("crashpbs", scheduler="pbs", flavor="torque", bin_dir=BIN, min_time=60,
                  max_array_size=2, poll={"min_interval": 0, "max_interval": 0, "grace": 3},
                  partitions=[{"name": "debug", "max_time": 86400, "max_mem": 4000}])
    view = two_chunk_drill(env, "crashpbs")
    subprocess.run(["scancel", *[n.split(".")[0].split("[")[0] for n in view.job.native_ids if n]],
                   check=False)


@pytest.mark.sge
def test_prompt_killed_between_chunks_on_sge(sge_cluster: None, env: Env,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    env.write_dpu("crashsge", scheduler="sge", min_time=60, max_array_size=2,
                  poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    two_chunk_drill(env, "crashsge")


def test_cancel_of_a_job_left_submitting_cancels_what_its_tag_finds_or_says_why_not(
        env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.write_dpu(poll={"grace": 3600})  # the grace never passes here: only the tag decides
    killed(prompt(env, "testlocal", 1, "shipped:KILL"))  # nothing reached the runner
    [lost] = all_jobs()
    assert cli.main(["cancel", "--dpu", "testlocal", str(lost.id)]) == 2
    captured = capsys.readouterr()
    said = f"Job {lost.id} is still being submitted and nothing on DPU testlocal carries its tag"
    assert said in captured.out
    assert "still being submitted; try again after poll.grace" in captured.err
    code = ("from dpu_slurm import Processor\n"
            "Processor('testlocal', session_log=False).run('Null', s=30, dpu_mem=100)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                         env=dict(os.environ, DPU_FAULT="accepted:KILL"), timeout=120)
    killed(res)
    running = max(all_jobs(), key=lambda j: j.id)
    assert running.phase == "recorded"
    assert cli.main(["cancel", "--dpu", "testlocal", "--force", str(running.id)]) == 0
    proc = Processor("testlocal", out=io.StringIO(), session_log=False)
    view = proc.wait(running.id, timeout=30, interval=0.1)[0]
    proc.close()
    assert view.status == "FINISHED" and view.counts.letters[0] == 0  # adopted, then cancelled
    assert view.job.native_ids == [runners(env, "testlocal")[0].read_text().strip()]


@pytest.mark.sge
def test_prompt_killed_between_chunks_through_drmaa(sge_cluster: None, env: Env,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """runBulkJobs named the chunk with its tag; the DRM's one-call qstat finds it."""
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    env.write_dpu("crashdrmaa", scheduler="sge", submit="drmaa", min_time=60, max_array_size=2,
                  poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    two_chunk_drill(env, "crashdrmaa")


@pytest.mark.sge
def test_cancel_of_a_partly_running_sge_job_deletes_only_its_queued_tasks(
        sge_cluster: None, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    env.write_dpu("partsge", scheduler="sge", min_time=60, max_array_size=20,
                  poll={"min_interval": 0, "max_interval": 0, "grace": 3})
    out = io.StringIO()
    dpu = Processor("partsge", out=out, session_log=False)
    job_id = dpu.run("Null", n=12, s=40, dpu_mem=100, return_jobid=True)  # 8 slots: some wait
    deadline = time.monotonic() + 90
    while True:
        counts = dpu.wait(job_id, timeout=0)[0].counts
        if counts.running and counts.queued:
            break
        assert time.monotonic() < deadline and not counts.done, f"never partly running: {counts}"
        time.sleep(0.5)
    dpu.cancel_job(job_id)
    assert "queued process(es) of job" in out.getvalue() and "go on" in out.getvalue()
    deadline = time.monotonic() + 60
    while dpu.wait(job_id, timeout=0)[0].counts.queued:
        assert time.monotonic() < deadline, "the queued tasks were not deleted"
        time.sleep(0.5)
    view = dpu.wait(job_id, timeout=0)[0]
    assert view.counts.running >= 1 and view.counts.letters[3] >= 1  # running ones go on, queued S
    dpu.cancel_job(job_id, force=True)
    view = dpu.wait(job_id, timeout=60, interval=0.5)[0]
    _, _, a, s, _ = view.counts.letters
    assert view.status == "FINISHED" and a >= 1 and s >= 1 and a + s == 12
    dpu.close()


# -- a rerun killed mid-submit --------------------------------------------------------------------
@pytest.mark.parametrize("step", ["record", "accepted", "chunk", "stored"])
def test_rerun_killed_at_each_step_on_the_local_dpu_is_settled(env: Env, step: str) -> None:
    """A rerun is recorded like a submit, under its own tag (.r2): killed before its runner
    started, its processes end S (the first attempt stays in the history, nothing is lost);
    killed after, it is adopted by that tag and finishes, never queued twice."""
    env.write_dpu(poll={"grace": GRACE})
    dpu = Processor("testlocal", out=io.StringIO(), session_log=False)
    try:
        jid = dpu.run("Null", n=4, ff="1,3", dpu_mem=100, return_jobid=True)
        assert dpu.wait(jid, timeout=60, interval=0.05)[0].counts.letters == (2, 2, 0, 0, 0)
    finally:
        dpu.close()
    code = f"from dpu_slurm import Processor\nProcessor('testlocal', session_log=False).rerun({jid}, 'E')\n"
    killed(subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                          env=dict(os.environ, DPU_FAULT=f"{step}:KILL"), timeout=180))
    [job] = all_jobs()
    assert job.phase == ("submitted" if step == "stored" else "recorded")
    [view] = settle("testlocal")
    store = open_store()
    try:
        history = [(i, a, o) for i, a, o, _, _ in store.attempts(jid)]
        reasons = {p.idx: p.reason for p in store.procs(jid)}
    finally:
        store.close()
    assert (1, 1, "E") in history and (3, 1, "E") in history  # the first attempt is kept
    if step == "record":
        assert (view.status, view.counts.letters) == ("FINISHED", (2, 0, 0, 2, 0))
        assert reasons[1].startswith("never submitted") and (1, 2, "S") in history
    else:
        assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
        assert (1, 2, "N") in history and (3, 2, "N") in history


@pytest.mark.slurm
@pytest.mark.parametrize("step", ["record", "chunk", "stored"])
def test_rerun_in_two_chunks_killed_on_slurm_is_settled(slurm_env: Env, step: str) -> None:
    """max_array_size 2: processes 1 and 3 rerun as two arrays (--array=1 at offset 0 and 2).
    Killed after the first was accepted and stored, the rerun is adopted by its .r2 tags with
    that chunk and process 3 ends S (never submitted); before any, both end S; after, both N."""
    env, t0 = slurm_env, time.time()
    name = slurm_dpu(env)
    dpu = Processor(name, out=io.StringIO(), session_log=False)
    try:
        jid = dpu.run("Null", n=4, ff="1,3", dpu_mem=50, return_jobid=True)
        assert dpu.wait(jid, timeout=120, interval=0.5)[0].counts.letters == (2, 2, 0, 0, 0)
    finally:
        dpu.close()
    code = f"from dpu_slurm import Processor\nProcessor({name!r}, session_log=False).rerun({jid}, 'E')\n"
    killed(subprocess.run([sys.executable, "-c", code], cwd=env.cwd, capture_output=True, text=True,
                          env=dict(os.environ, DPU_FAULT=f"{step}:KILL"), timeout=180))
    [view] = settle(name)
    expected = {"record": (2, 0, 0, 2, 0), "chunk": (3, 0, 0, 1, 0), "stored": (4, 0, 0, 0, 0)}[step]
    assert (view.status, view.counts.letters) == ("FINISHED", expected)
    tag = tag_of(view.job)
    assert tag.endswith(".r2")
    # What SLURM holds under the rerun's tag: each chunk queued once, exactly those kept.
    found = carrying(view.job, t0, {"record": 0, "chunk": 1, "stored": 2}[step])
    assert found == {n for n in view.job.native_ids if n}
    assert len(found) == {"record": 0, "chunk": 1, "stored": 2}[step]
    store = open_store()
    try:
        assert store.attempt_numbers(jid) == {0: 1, 1: 2, 2: 1, 3: 2}
    finally:
        store.close()
