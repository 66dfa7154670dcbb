"""Jobs that wait for jobs (issue 13, must-have 1): after=/after_mode on the local DPU, the
checks a run's edges get, and the scheduler options the edges become (golden argv)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from dpu_slurm.errors import OptionError
from dpu_slurm.graph import parse_after
from dpu_slurm.prereq import failed_prerequisite
from dpu_slurm.schedulers.depend import pbs_args, sge_args, slurm_args
from dpu_slurm.worker import STATUS, process_dir
from tests.conftest import Session


def run(sess: Session, **options: Any) -> int:
    jid = sess.dpu.run("Null", return_jobid=True, **options)
    assert isinstance(jid, int)
    return jid


def procs(sess: Session, jid: int) -> Dict[int, Any]:
    return {p.idx: p for p in sess.dpu._store.procs(jid)}


def record(sess: Session, jid: int, idx: int) -> Dict[str, Any]:
    job = sess.dpu._store.job(jid)
    return json.loads((process_dir(Path(job.jobdir), idx) / STATUS).read_text())


def test_each_runs_process_i_after_process_i_and_skips_the_one_whose_prerequisite_failed(
        session: Session) -> None:
    first = run(session, n=3, ff="1", s=0.5)
    second = run(session, n=3, after=first, after_mode="each")
    views = session.dpu.wait([first, second], timeout=60, interval=0.05)
    assert [v.counts.line() for v in views] == ["2/1/0/0/0", "2/0/0/1/0"]
    got = procs(session, second)
    assert got[1].outcome == "S"
    assert got[1].reason == f"prerequisite job {first} process 1 ended E"
    assert (got[0].outcome, got[2].outcome) == ("N", "N")
    for i in (0, 2):  # the runner held each one until its prerequisite had ended
        assert record(session, second, i)["started"] >= record(session, first, i)["ended"]


def test_ok_skips_every_process_when_one_prerequisite_process_failed_and_any_runs_them(
        session: Session) -> None:
    first = run(session, n=2, ff="0", s=0.3)
    ok = run(session, n=2, after=[first])
    anyway = run(session, n=2, after=str(first), after_mode="any")
    views = session.dpu.wait([first, ok, anyway], timeout=60, interval=0.05)
    assert [v.counts.line() for v in views] == ["1/1/0/0/0", "0/0/0/2/0", "2/0/0/0/0"]
    assert {p.reason for p in procs(session, ok).values()} == {f"prerequisite job {first} process 0 ended E"}
    for i in range(2):
        assert record(session, anyway, i)["started"] >= record(session, first, 1)["ended"]


def test_status_shows_the_after_edges(session: Session) -> None:
    first = run(session, n=1)
    second = run(session, n=1, after=first)
    session.dpu.wait([first, second], timeout=60, interval=0.05)
    session.dpu.get_status(second)
    assert f"after job {first} (ok)" in [ln.split(" - ", 1)[1].strip() for ln in session.printed()]
    assert session.dpu._store.job(second).dpu_options["after"] == {"jobs": [first], "mode": "ok"}


def test_bad_edges_are_refused_with_what_to_do(session: Session) -> None:
    first = run(session, n=2, ff="0")
    session.dpu.wait(first, timeout=60, interval=0.05)
    with pytest.raises(OptionError, match="no job with that identifier"):
        run(session, after=99999)
    with pytest.raises(OptionError, match="after_mode 'all' is not one of ok, any, each"):
        run(session, after=first, after_mode="all")
    with pytest.raises(OptionError, match=r"pairs process i with process i.*2 processes"):
        run(session, n=3, after=first, after_mode="each")
    with pytest.raises(OptionError, match=r"has finished and process 0 ended E.*rerun job"):
        run(session, n=2, after=first)
    with pytest.raises(OptionError, match="job identifiers"):
        run(session, after="3;rm")
    before = len(session.dpu._store.jobs())
    assert before == 1   # nothing refused was recorded


def test_a_prerequisite_on_another_dpu_is_refused(make_session: Any) -> None:
    one = make_session("graph_a")
    first = run(one, n=1)
    other = make_session("graph_b")
    with pytest.raises(OptionError, match=rf"job {first} is on DPU 'graph_a'.*its own DPU"):
        run(other, after=first)


def test_parse_after_forms() -> None:
    assert parse_after(None) is None
    assert parse_after("4, 3,4") == {"jobs": [3, 4], "mode": "ok"}
    assert parse_after([5], "each") == {"jobs": [5], "mode": "each"}
    with pytest.raises(OptionError):
        parse_after(True)


# -- the scheduler options (golden argv) ---------------------------------------------------------
def after(mode: str, *natives: List[str], pending: bool = True) -> Dict[str, Any]:
    return {"mode": mode, "prereqs": [{"job": 7 + k, "natives": n, "pending": pending}
                                      for k, n in enumerate(natives)]}


def test_slurm_dependency_options() -> None:
    assert slurm_args(after("ok", ["101", "102"], ["200"]), "job-0.sh") == [
        "--dependency=afterok:101:102:200", "--kill-on-invalid-dep=yes"]
    assert slurm_args(after("any", ["101"]), "job-0.sh") == [
        "--dependency=afterany:101", "--kill-on-invalid-dep=yes"]
    assert slurm_args(after("each", ["101", "102"]), "job-1.sh") == [
        "--dependency=aftercorr:102", "--kill-on-invalid-dep=yes"]
    assert slurm_args(after("ok", ["101"], pending=False), "job-0.sh") == []  # ended already
    assert slurm_args({}, "job-0.sh") == []


def test_sge_hold_options() -> None:
    assert sge_args(after("ok", ["11", "12"]), "job-0.sh") == ["-hold_jid", "11,12"]
    assert sge_args(after("each", ["11", "12"], ["31", "32"]), "job-1.sh") == ["-hold_jid_ad", "12,32"]


def test_pbs_depend_options_for_pbs_pro_and_torque() -> None:
    ok = after("ok", ["11[].srv", "12.srv"])
    assert pbs_args(ok, "job-0.sh", "pbspro") == ["-W", "depend=afterok:11[].srv:12.srv"]
    assert pbs_args(ok, "job-0.sh", "torque") == ["-W", "depend=afterokarray:11[].srv,afterok:12.srv"]
    assert pbs_args(after("any", ["11[].srv"]), "job-0.sh", "torque") == [
        "-W", "depend=afteranyarray:11[].srv"]


def test_the_sbatch_argv_carries_the_dependency(tmp_path: Path) -> None:
    from dpu_slurm.config import DPUConfig
    from dpu_slurm.schedulers.base import SubmitRequest
    from dpu_slurm.schedulers.slurm import SlurmScheduler
    from dpu_slurm.transport.local import LocalTransport
    dpu = DPUConfig(name="s", scheduler="slurm", path=tmp_path / "s.yaml")
    req = SubmitRequest(job_id=3, user="u", dpu="s", sequence="Null", jobdir="/w/j", nproc=2,
                        time_limit=60, mem=100, partition=None, python="python3", pythonpath="p",
                        after=after("each", ["101"]))
    argv = SlurmScheduler(dpu, LocalTransport()).submit_argv(req, "job-0.sh", "")
    assert argv == ["sbatch", "--parsable", "--chdir=/w/j", "--dependency=aftercorr:101",
                    "--kill-on-invalid-dep=yes", "/w/j/job-0.sh"]


def test_the_worker_skips_a_process_whose_prerequisite_did_not_end_n(tmp_path: Path) -> None:
    pre = tmp_path / "pre"
    for i, tasks in enumerate([["N"], ["E"]]):
        process_dir(pre, i).mkdir(parents=True)
        (process_dir(pre, i) / STATUS).write_text(json.dumps({"state": "DONE", "tasks": tasks}))
    job = {"after": {"mode": "each", "check": True, "jobs": [{"job": 4, "jobdir": str(pre), "nproc": 3}]}}
    assert failed_prerequisite(job, 0, process_dir, STATUS) == ""
    assert failed_prerequisite(job, 1, process_dir, STATUS) == "prerequisite job 4 process 1 ended E"
    assert failed_prerequisite(job, 2, process_dir, STATUS) == "prerequisite job 4 process 2 ended U"
    job["after"]["mode"] = "ok"
    assert failed_prerequisite(job, 0, process_dir, STATUS) == "prerequisite job 4 process 1 ended E"
    job["after"]["check"] = False
    assert failed_prerequisite(job, 0, process_dir, STATUS) == ""


# -- settling after a poll (no cluster) ---------------------------------------------------------
class FakeScheduler:
    all_users = False

    def __init__(self) -> None:
        self.never: Dict[int, Any] = {}
        self.cancelled: List[Any] = []

    def cancel_indices(self, job: Any, indices: List[int]) -> None:
        self.cancelled.append((job.id, sorted(indices)))

    def cancel(self, job: Any, force: bool) -> None:
        self.cancelled.append((job.id, "all", force))


class FakeSession:
    def __init__(self, store: Any) -> None:
        from types import SimpleNamespace
        self.store, self.dpu, self.scheduler = store, SimpleNamespace(name="s"), FakeScheduler()


def test_settle_ends_s_what_squeue_says_can_never_run_and_what_waits_for_a_failed_process(
        tmp_path: Path) -> None:
    from dpu_slurm.graph import settle
    from dpu_slurm.store import Store
    store = Store(tmp_path / "jobs.sqlite")
    pre = store.record("s", "u", "Null", {}, {"chunk": 1000}, 3, 1)
    store.submitted(pre, ["100"])
    dep = store.record("s", "u", "Null", {}, {"chunk": 1000, "after": {"jobs": [pre], "mode": "each"}}, 3, 1)
    store.submitted(dep, ["101"])
    session = FakeSession(store)
    session.scheduler.never = {dep: {2}}       # squeue: DependencyNeverSatisfied, store not told yet
    store.update(pre, [(1, "DONE", "E", "exit code 1", None)])
    assert settle(session, [pre, dep]) == 2  # type: ignore[arg-type]
    assert session.scheduler.cancelled == [(dep, [1, 2])]
    got = {p.idx: (p.state, p.outcome, p.reason) for p in store.procs(dep)}
    assert got[0] == ("QUEUED", "", "")
    assert got[1] == ("DONE", "S", f"prerequisite job {pre} process 1 ended E")
    assert got[2] == ("DONE", "S", "a prerequisite did not end as required (SLURM: DependencyNeverSatisfied)")
    store.update(pre, [(0, "DONE", "A", "TIMEOUT", None)])
    assert settle(session, [dep]) == 1  # type: ignore[arg-type]
    assert session.scheduler.cancelled[-1] == (dep, "all", False)  # nothing else is left of it
    store.close()


def test_squeue_dependency_never_satisfied_is_noted_and_scancel_names_the_array_tasks() -> None:
    from dpu_slurm.config import DPUConfig
    from dpu_slurm.schedulers.slurm import SlurmScheduler
    from dpu_slurm.store import Job
    from dpu_slurm.transport.base import Completed, Gathered

    class Transport:
        calls: List[List[str]] = []

        def run(self, argv: List[str], *a: Any, **k: Any) -> Completed:
            self.calls.append(list(argv))
            return Completed(argv, 0, "", "")

    job = Job(7, "s", "u", "Null", {}, {"chunk": 2}, 3, 1, "submitted", ["100", "101"], "/j", "", "",
              0.0, 1.0, None)
    sched = SlurmScheduler(DPUConfig(name="s", scheduler="slurm", path=None),  # type: ignore[arg-type]
                           Transport())  # type: ignore[arg-type]
    got = Gathered(Completed(["squeue"], 0, "100|1|PENDING|DependencyNeverSatisfied|n\n"
                                            "101|0|PENDING|Dependency|n\n", ""), {}, {})
    sched.parse_poll([job], got)
    assert sched.never == {7: {1}}
    sched.cancel_indices(job, [1, 2])
    assert Transport.calls == [["scancel", "--state=PENDING", "100_1", "101_0"]]


def test_dpu_run_after_on_the_command_line(env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from dpu_slurm import cli
    env.write_dpu()

    def run_json(argv: List[str], code: int = 0) -> Any:
        assert cli.main([*argv, "--json"]) == code
        return json.loads(capsys.readouterr().out)

    first = run_json(["run", "--dpu", "testlocal", "Null", "n=2", "ff=1"])["jobid"]
    [view] = run_json(["run", "--dpu", "testlocal", "--wait", "--after", str(first), "--after-mode", "each",
                       "Null", "n=2"], code=1)
    assert view["counters"] == {"N": 1, "E": 0, "A": 0, "S": 1, "U": 0}
    assert view["after"] == {"jobs": [first], "mode": "each"}
    assert cli.main(["run", "--dpu", "testlocal", "--after", "99", "Null"]) == 2
    assert "after=99: no job with that identifier" in capsys.readouterr().err
