"""The retry policy (issue 12, must-have 2): checked in a DPU file and per run, applied by
whoever polls, exactly once per failed attempt even with two pollers at once."""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from dpu_slurm import retries
from dpu_slurm.cli import main
from dpu_slurm.config import load_file
from dpu_slurm.errors import ConfigError, OptionError
from dpu_slurm.retries import apply_retries
from dpu_slurm.retry_policy import resolve, run_policy
from dpu_slurm.schedulers.local import LocalScheduler
from dpu_slurm.session import DPUSession, JobView, open_store
from dpu_slurm.store import Store
from tests.conftest import Session


def dpu_file(tmp_path: Path, retries: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nscheduler: local\nworkdir: {tmp_path}/w\nretries:\n{retries}")
    return path


def test_a_dpu_file_retry_policy_is_checked_with_file_line_and_key(tmp_path: Path) -> None:
    cfg = load_file(dpu_file(tmp_path, "  max: 2\n  on: [A, U]\n  grow_time: 2.0\n  grow_mem: 1.5\n"))
    assert cfg.retries == {"max": 2, "on": ["A", "U"], "grow_time": 2.0, "grow_mem": 1.5}
    with pytest.raises(ConfigError, match=r"r\.yaml:8: retries\.on\[1\]: is 'X'; allowed: N, E, A, S, U"):
        load_file(dpu_file(tmp_path, "  max: 2\n  on:\n    - A\n    - X\n"))
    with pytest.raises(ConfigError, match=r"r\.yaml:6: retries\.grow_mem: 0\.5 is out of range"):
        load_file(dpu_file(tmp_path, "  max: 2\n  grow_mem: 0.5\n"))
    with pytest.raises(ConfigError, match=r"key 'retries.tries': unknown key; allowed here: max, on"):
        load_file(dpu_file(tmp_path, "  tries: 2\n"))
    assert load_file(dpu_file(tmp_path, "  max: 1\n  on: eu\n")).retries["on"] == ["E", "U"]


def test_a_run_policy_is_checked_and_merged_over_the_dpus() -> None:
    assert run_policy(3) == {"max": 3}
    assert run_policy(None) is None
    with pytest.raises(OptionError, match="retries=True: give a number of retries"):
        run_policy(True)
    with pytest.raises(OptionError, match=r"retries\.max: 99 is out of range"):
        run_policy(99)
    dpu = {"max": 2, "on": ["A"], "grow_time": 2.0}
    assert resolve(dpu, {"grow_mem": 1.5}) == {"max": 2, "on": "A", "grow_time": 2.0, "grow_mem": 1.5}
    assert resolve(dpu, {"max": 0}) == {}   # a run can turn the DPU's policy off
    assert resolve({}, None) == {}


def counting_submits(monkeypatch: pytest.MonkeyPatch) -> List[object]:
    """Every scheduler submission of the local DPU, counted (the real one still runs)."""
    calls: List[object] = []
    real = LocalScheduler.submit

    def submit(self: LocalScheduler, req: object) -> List[str]:
        calls.append(req)
        return real(self, req)  # type: ignore[arg-type]
    monkeypatch.setattr(LocalScheduler, "submit", submit)
    return calls


def finish_retrying(s: Session, jid: int, attempts: Dict[int, int]) -> JobView:
    """Poll (as the prompt's wait does) until the job is finished at these attempt numbers."""
    view = s.dpu.wait(jid, timeout=90, interval=0.05)[0]
    for _ in range(200):   # each wait that finds it finished applies its policy once
        if s.dpu._store.attempt_numbers(jid) == attempts and view.status == "FINISHED":
            return view
        view = s.dpu.wait(jid, timeout=90, interval=0.05)[0]
    raise AssertionError(f"attempts {s.dpu._store.attempt_numbers(jid)}, status {view.status}")


def test_a_run_with_retries_is_retried_by_the_poll_up_to_max_with_growing_limits(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    s = session
    calls = counting_submits(monkeypatch)
    # Every process fails (x=True): with on=E and max=2 each is tried 3 times, then left E.
    jid = s.dpu.run("Null", n=2, x=True, retries={"max": 2, "on": "E", "grow_time": 2.0,
                                                  "grow_mem": 1.5}, return_jobid=True)
    assert isinstance(jid, int)
    first = s.dpu._store.job(jid).dpu_options
    assert first["retries"] == {"max": 2, "on": "E", "grow_time": 2.0, "grow_mem": 1.5}
    view = finish_retrying(s, jid, {0: 3, 1: 3})
    assert view.counts.letters == (0, 2, 0, 0, 0)
    assert len(calls) == 3                                   # the run and two retries, nothing more
    assert [r.indices for r in calls[1:]] == [[0, 1], [0, 1]]  # type: ignore[attr-defined]
    job = s.dpu._store.job(jid)
    assert job.dpu_options["time_limit"] == first["time_limit"] * 4
    assert job.dpu_options["mem"] == math.ceil(math.ceil(first["mem"] * 1.5) * 1.5)
    printed = "\n".join(s.printed())
    assert f"Job {jid}: retrying 2 process(es) (0, 1), {first['time_limit'] * 2} s" in printed
    s.dpu.get_status(jid)
    assert s.printed()[-1].endswith("retries: 2 used (up to 2 on E, time x2, memory x1.5 each)")
    s.dpu.get_status(jid)   # the next polls find nothing more to do
    assert len(calls) == 3


def test_a_retry_brings_a_job_to_all_n_under_the_same_id(session: Session,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s = session
    calls = counting_submits(monkeypatch)
    jid = s.dpu.run("Null", n=4, ff="1,3", retries={"max": 2, "on": "E"}, return_jobid=True)
    assert isinstance(jid, int)
    view = finish_retrying(s, jid, {0: 1, 1: 2, 2: 1, 3: 2})
    assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
    assert [r.indices for r in calls] == [None, [1, 3]]  # type: ignore[attr-defined]
    s.dpu.show_attempts(jid)
    assert s.printed()[-1].split(" - ", 1)[1].startswith("  process 3: attempt 1 E (")


def test_the_dpu_policy_applies_and_a_cancelled_job_is_never_retried(
        make_session: Callable[..., Session], monkeypatch: pytest.MonkeyPatch) -> None:
    s = make_session(retries={"max": 1, "on": ["S", "A"]})
    calls = counting_submits(monkeypatch)
    jid = s.dpu.run("Null", n=2, s=30, return_jobid=True)
    assert isinstance(jid, int)
    assert s.dpu._store.job(jid).dpu_options["retries"]["on"] == "AS"
    s.dpu.cancel_job(jid, force=True)
    s.dpu.wait(jid, timeout=60, interval=0.05)
    s.dpu.get_status(jid)
    assert len(calls) == 1 and s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1}


def poll_in_thread(name: str, barrier: threading.Barrier, out: List[List[str]]) -> None:
    store = open_store()   # each poller its own connection, as two processes would have
    from dpu_slurm.config import get_dpu
    session = DPUSession(get_dpu(name), store, retries=False)
    try:
        barrier.wait(timeout=30)
        out.append(apply_retries(session))
    finally:
        session.close()
        store.close()


def test_two_pollers_at_once_resubmit_exactly_once(session: Session,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    s = session
    jid = s.dpu.run("Null", n=4, ff="0,2", retries=1, return_jobid=True)
    assert isinstance(jid, int)
    monkeypatch.setattr(s.dpu._session, "retries", False)   # only the two pollers below retry
    s.dpu.wait(jid, timeout=60, interval=0.05)
    assert s.dpu._store.job(jid).finished is not None
    s.dpu._store.set_options(jid, {"retries": {"max": 1, "on": "E", "grow_time": 1.0, "grow_mem": 1.0}})
    calls = counting_submits(monkeypatch)
    real_due = retries.due

    def slow_due(*args: object) -> List[int]:   # widens the window between a claim and the rerun
        time.sleep(0.3)
        return real_due(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(retries, "due", slow_due)
    for _ in range(3):   # several rounds: a lucky interleaving must not hide a double submit
        out: List[List[str]] = []
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=poll_in_thread, args=(s.dpu.dpu_name, barrier, out))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(out) == 2
        if _ == 0:   # one poller retried, the other stood back without an error
            assert sorted(len(lines) for lines in out) == [0, 1], out
            assert "retrying 2 process(es) (0, 2)" in "".join(out[0] + out[1])
    assert len(calls) == 1 and calls[0].indices == [0, 2]  # type: ignore[attr-defined]
    assert s.dpu._store.attempt_numbers(jid) == {0: 2, 1: 1, 2: 2, 3: 1}
    assert [n for _, n, _ in s.dpu._store.retries_used(jid)] == [2]


def test_a_claim_left_by_a_dead_poller_is_taken_over_after_the_stale_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "u", "Null", {}, {"retries": {"max": 1}}, 1, 1)
    store.submitted(jid, ["1"])
    store.update(jid, [(0, "DONE", "A", "", None)])
    assert store.claim_retry(jid, 1, "a", 600)
    assert store.retry_candidates("d", 600) == [] and not store.claim_retry(jid, 1, "b", 600)
    assert store.retry_candidates("d", 0) == [jid] and store.claim_retry(jid, 1, "b", 0)
    store.retry_done(jid, 1, 1)
    assert not store.claim_retry(jid, 1, "c", 0)   # a finished claim is never taken again


def test_cli_run_retries(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "Null", "n=1", "--retries", "2", "--retry-on", "ae", "--grow-time", "3",
                 "--dpu", "testlocal", "--json"]) == 0
    import json
    jid = json.loads(capsys.readouterr().out)["jobid"]
    assert session.dpu._store.job(jid).dpu_options["retries"] == {
        "max": 2, "on": "EA", "grow_time": 3.0, "grow_mem": 1.0}
    assert main(["run", "Null", "--retries", "-1", "--dpu", "testlocal"]) == 2
    assert "retries.max: -1 is out of range" in capsys.readouterr().err


def test_a_rerun_begins_only_from_the_submission_its_caller_saw(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    jid = store.record("d", "u", "Null", {}, {"rerun": 2}, 1, 1)
    store.submitted(jid, ["1"])
    store.update(jid, [(0, "DONE", "E", "", None)])
    assert not store.begin_rerun(jid, [0], {"rerun": 3}, "x", seen=1)   # it moved on to 2 meanwhile
    assert store.attempt_numbers(jid) == {0: 1}
    assert store.begin_rerun(jid, [0], {"rerun": 3}, "x", seen=2)
    assert store.attempt_numbers(jid) == {0: 2}


def test_the_queue_page_refresh_applies_its_users_retry_policy(session: Session) -> None:
    from dpu_slurm.config import get_dpu
    from dpu_slurm.web.mirror import Mirror
    s = session
    jid = s.dpu.run("Null", n=2, ff="1", retries={"max": 1, "on": "E"}, return_jobid=True)
    assert isinstance(jid, int)
    s.dpu._session.retries = False   # the prompt only watches: the page is the poller here
    s.dpu.wait(jid, timeout=60, interval=0.05)
    assert s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1}
    page = Mirror(get_dpu("testlocal"), s.dpu._store)
    try:
        page.refresh(force=True)
    finally:
        page.close()
    assert s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 2}
    s.dpu._session.retries = True
    view = finish_retrying(s, jid, {0: 1, 1: 2})
    assert view.counts.letters == (2, 0, 0, 0, 0)


def test_cli_rerun_auto_doubles_the_time_of_processes_that_timed_out(
        session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    s = session
    # The local runner ends a process at its limit (4 s) as TIMEOUT; --auto gives it 8 s.
    jid = s.dpu.run("Null", n=2, s=6, dpu_time=4, return_jobid=True)
    assert isinstance(jid, int)
    view = s.dpu.wait(jid, timeout=90, interval=0.1)[0]
    assert view.counts.letters == (0, 0, 2, 0, 0)
    assert all(r.startswith("TIMEOUT") for r in s.dpu._session.reasons(view.job))
    assert main(["rerun", str(jid), "--only", "A", "--auto", "--dpu", "testlocal", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"jobid": jid, "indices": [0, 1]}
    job = s.dpu._store.job(jid)
    assert (job.dpu_options["time_limit"], job.dpu_options["mem"]) == (8, job.dpu_options["previous"]["mem"])
    view = s.dpu.wait(jid, timeout=90, interval=0.1)[0]
    assert view.counts.letters == (2, 0, 0, 0, 0)
    # Nothing timed out now: --auto has nothing to grow and a rerun of N is refused anyway.
    assert main(["rerun", str(jid), "--auto", "--dpu", "testlocal"]) == 2
    assert "nothing to rerun" in capsys.readouterr().err


def test_a_retry_the_scheduler_refuses_for_now_is_tried_again_by_the_next_poll(
        session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    from dpu_slurm.errors import SubmitError
    s = session
    jid = s.dpu.run("Null", n=2, ff="0", retries={"max": 1, "on": "E"}, return_jobid=True)
    assert isinstance(jid, int)
    real = LocalScheduler.submit

    def busy(self: LocalScheduler, req: object) -> List[str]:
        raise SubmitError("too many jobs queued, try later", transient=True)
    monkeypatch.setattr(LocalScheduler, "submit", busy)
    s.dpu.wait(jid, timeout=60, interval=0.05)
    s.dpu.get_status(jid)
    assert f"Job {jid}: the retry was not submitted (the rerun of job {jid} was not submitted" \
        in "\n".join(s.printed())
    assert s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1}   # given back whole
    monkeypatch.setattr(LocalScheduler, "submit", real)
    view = finish_retrying(s, jid, {0: 2, 1: 1})
    assert view.counts.letters == (2, 0, 0, 0, 0)
