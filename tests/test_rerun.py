"""Rerunning what failed (issue 12, must-have 1) on the local DPU: only the matching processes,
one submission of exactly those indices, the same job id, an attempt number per process."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pytest

from dpu_slurm.cli import main
from dpu_slurm.errors import RerunRefused, SubmitError
from dpu_slurm.rerun import check_only
from dpu_slurm.schedulers import registry
from dpu_slurm.schedulers.helpers import index_chunks, layout
from dpu_slurm.schedulers.local import LocalScheduler
from dpu_slurm.schedulers.slurm import compact
from tests.conftest import Session, wait_until


def finish(s: Session, jid: int) -> None:
    view = s.dpu.wait(jid, timeout=60, interval=0.05)[0]
    assert view.status == "FINISHED", view


def runner_args(jobdir: str) -> List[str]:
    return json.loads((Path(jobdir) / "runner.json").read_text())["states"]


def test_rerun_only_e_resubmits_exactly_the_failed_processes(session: Session) -> None:
    s = session
    jid = s.dpu.run("Null", n=4, ff="1,3", return_jobid=True)
    assert isinstance(jid, int)
    finish(s, jid)
    first = s.dpu.get_status(jid)[0]
    assert first.counts.letters == (2, 2, 0, 0, 0)
    job = s.dpu._store.job(jid)
    old_status = (Path(job.jobdir) / "p" / "1" / "status.json").read_text()

    assert s.dpu.rerun(jid, only="E") == [1, 3]
    assert s.printed()[-1].endswith(f"Sending job with identifier {jid} to DPU again (2 processes: 1, 3)")
    job = s.dpu._store.job(jid)
    assert job.dpu_options["layout"] == [[0, [1, 3]]] and job.dpu_options["rerun"] == 2
    # The runner was given exactly [1, 3]: the others were never pending in this attempt.
    states = [st for st, _ in runner_args(job.jobdir)]
    assert states[0] == states[2] == "COMPLETED"
    # The first attempt's final record was moved aside, not read as the second's outcome.
    assert (Path(job.jobdir) / "p" / "1" / "attempt-1" / "status.json").read_text() == old_status
    finish(s, jid)
    view = s.dpu.get_status(jid)[0]
    assert (view.status, view.counts.letters) == ("FINISHED", (4, 0, 0, 0, 0))
    assert s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 2, 2: 1, 3: 2}
    history = s.dpu._store.attempts(jid)
    assert [(i, a, o) for i, a, o, _, _ in history] == [
        (0, 1, "N"), (1, 1, "E"), (1, 2, "N"), (2, 1, "N"), (3, 1, "E"), (3, 2, "N")]
    s.dpu.show_attempts(jid)
    lines = [ln.split(" - ", 1)[1] for ln in s.printed()[-2:]]
    assert lines[0].startswith("  process 1: attempt 1 E (") and lines[0].endswith("; attempt 2 N")
    assert lines[1].startswith("  process 3: attempt 1 E (")
    # Nothing failed any more: a second rerun is refused and changes nothing.
    with pytest.raises(RerunRefused, match="nothing to rerun"):
        s.dpu.rerun(jid)
    assert s.dpu._store.attempt_numbers(jid)[1] == 2


def test_rerun_refuses_a_running_job_and_bad_letters(session: Session) -> None:
    s = session
    jid = s.dpu.run("Null", n=2, s=30, return_jobid=True)
    assert isinstance(jid, int)
    wait_until(lambda: s.dpu.wait(jid, timeout=0)[0].counts.running > 0)
    with pytest.raises(RerunRefused, match=f"job {jid} is not finished yet; wait for it"):
        s.dpu.rerun(jid)
    assert s.dpu._store.attempts(jid) and s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1}
    with pytest.raises(RerunRefused, match=r"letters among N, E, A, S, U.*not X, Z"):
        s.dpu.rerun(jid, only="EXZ")
    with pytest.raises(RerunRefused, match="give letters"):
        check_only("")
    s.dpu.cancel_job(jid, force=True)


def test_cli_rerun_and_status_attempts(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    s = session
    jid = s.dpu.run("Null", n=3, ff="2", return_jobid=True)
    assert isinstance(jid, int)
    finish(s, jid)
    assert main(["rerun", str(jid), "--only", "ea", "--more-time", "2", "--dpu", "testlocal",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"jobid": jid, "indices": [2]}
    job = s.dpu._store.job(jid)
    assert job.dpu_options["time_limit"] == 2 * job.dpu_options["previous"]["time_limit"]
    finish(s, jid)
    assert main(["status", str(jid), "--attempts", "--dpu", "testlocal"]) == 0
    out = capsys.readouterr().out
    assert "N/E/A/S/U 3/0/0/0/0" in out and "process 2: attempt 1 E (" in out
    assert main(["rerun", str(jid), "--only", "Q", "--dpu", "testlocal"]) == 2
    assert "letters among N, E, A, S, U" in capsys.readouterr().err


def test_rerun_is_refused_on_a_scheduler_without_it(session: Session,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    jid = session.dpu.run("Null", n=2, ff="0", return_jobid=True)
    assert isinstance(jid, int)
    finish(session, jid)
    monkeypatch.setattr(LocalScheduler, "RERUN", False)
    with pytest.raises(RerunRefused, match="rerun is not yet supported on local"):
        session.dpu.rerun(jid)
    assert session.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1}


def test_index_chunks_respect_the_array_size() -> None:
    assert index_chunks([12, 3, 7, 4, 5], 10) == [(0, [3, 4, 5, 7]), (10, [12])]
    assert compact([3, 4, 5, 9, 12]) == "3-5,9,12"
    assert compact([2]) == "2"


def test_layout_of_a_first_attempt_is_its_chunks(session: Session) -> None:
    job = session.dpu._store.job(session.dpu._store.record("d", "u", "Null", {}, {"chunk": 2}, 5, 1))
    assert layout(job) == [(0, [0, 1]), (2, [2, 3]), (4, [4])]


def test_a_refused_rerun_gives_back_the_earlier_outcome(session: Session,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    s = session
    jid = s.dpu.run("Null", n=3, ff="1", return_jobid=True)
    assert isinstance(jid, int)
    finish(s, jid)
    before = s.dpu._store.job(jid)

    def refuse(self: LocalScheduler, req: object) -> List[str]:
        raise SubmitError("no slots today")

    monkeypatch.setattr(LocalScheduler, "submit", refuse)
    with pytest.raises(SubmitError, match=f"the rerun of job {jid} was not submitted: no slots today"):
        s.dpu.rerun(jid)
    after = s.dpu._store.job(jid)
    assert (after.phase, after.native_ids) == ("submitted", before.native_ids)
    assert after.finished == before.finished
    assert after.dpu_options == before.dpu_options
    assert s.dpu._store.attempt_numbers(jid) == {0: 1, 1: 1, 2: 1}
    assert s.dpu.get_status(jid)[0].counts.letters == (2, 1, 0, 0, 0)
    monkeypatch.undo()
    assert s.dpu.rerun(jid) == [1]  # nothing was lost: it can be rerun later
    finish(s, jid)
    assert s.dpu.get_status(jid)[0].counts.letters == (3, 0, 0, 0, 0)


def test_which_schedulers_rerun() -> None:
    """Every registered scheduler reruns (DRMAA by mapping its bulk's tasks: bulk_map.py)."""
    found = registry()
    assert {name for name, cls in found.items() if cls.RERUN} == {"local", "slurm", "sge", "pbs", "drmaa"}
