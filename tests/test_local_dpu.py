"""The embedded local DPU end to end, through the Processor and real detached runners."""
from __future__ import annotations

import importlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest

from dpu_slurm.errors import DPUError, JobNotFound
from dpu_slurm.processor import Processor
from dpu_slurm.session import JobView
from tests.conftest import EXAMPLE, REPO, Env, Session, wait_until

STAMP = r"\d\d:\d\d:\d\d"
LOG_LINE = re.compile(rf"^{STAMP} - ")


def finish(sess: Session, sequence: str, /, **options: Any) -> Tuple[int, JobView]:
    jid = sess.dpu.run(sequence, return_jobid=True, **options)
    assert isinstance(jid, int)
    views = sess.dpu.wait(jid, timeout=30, interval=0.05)
    assert views[0].status == "FINISHED", views
    return jid, views[0]


def status_line(s: Session, jid: int) -> str:
    s.dpu.get_status(jid)
    lines = [ln for ln in s.printed() if f" - Jobid {jid} has status " in ln]
    return lines[-1]


def running(s: Session, jid: int) -> Callable[[], bool]:
    return lambda: s.dpu.wait(jid, timeout=0)[0].counts.running > 0


def proc_records(s: Session, jid: int) -> List[dict[str, Any]]:
    job = s.dpu._store.job(jid)
    return [json.loads((Path(job.jobdir) / "p" / str(i) / "status.json").read_text())
            for i in range(job.nproc)]


def test_readnoise_wfi_computes_the_read_noise_of_each_ccd(session: Session,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    jid, view = finish(session, "ReadNoise", i="WFI", d="2000-04-28", C=1)
    assert (view.counts.letters, view.ok) == ((8, 0, 0, 0, 0), True)
    printed = session.printed()
    user = session.dpu._session.user
    assert re.fullmatch(rf"\[{re.escape(user)}\] {STAMP} - Calling: dpu.run\('ReadNoise', i='WFI', "
                        r"d='2000-04-28', C=1\)", printed[0])
    assert re.fullmatch(rf"\[{re.escape(user)}\] {STAMP} - Estimated process time : 10 seconds", printed[1])
    assert re.fullmatch(rf"\[{re.escape(user)}\] {STAMP} - Sending job with identifier {jid} to DPU"
                        r" \(8 processes\)", printed[2])
    assert re.fullmatch(rf"\[{re.escape(user)}\] {STAMP} - Jobid {jid} has status FINISHED "
                        r"N/E/A/S/U 8/0/0/0/0", status_line(session, jid))

    objects = session.dpu.get_job_result(jid)
    assert sorted(o["chip"] for o in objects) == [f"ccd{n}" for n in range(50, 58)]
    monkeypatch.syspath_prepend(str(EXAMPLE))
    synthetic = importlib.import_module("awepipe.synthetic")
    truths = []
    for obj in objects:
        _, truth, _ = synthetic.ccd_properties("WFI", obj["chip"])
        truths.append(truth)
        assert abs(obj["read_noise"] - truth) <= 0.10 * truth, (obj, truth)
    assert max(truths) - min(truths) > 0.5  # the CCDs differ, so matching each one means something

    logs = session.dpu.get_logs(jid)
    assert all(LOG_LINE.match(line) for line in logs)
    for obj in objects:
        assert any(f"The read noise (ADU) for ccd {obj['chip']} is : " in ln for ln in logs)


def test_bias_then_hotpixels_finds_the_synthetic_hot_pixels(session: Session,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    jid, view = finish(session, "Bias>HotPixels", i="WFI", c="ccd53", d="2000-04-28", C=1)
    assert view.counts.letters == (2, 0, 0, 0, 0)  # one process, two tasks
    bias, hot = session.dpu.get_job_result(jid)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    synthetic = importlib.import_module("awepipe.synthetic")
    level, noise, truth = synthetic.ccd_properties("WFI", "ccd53")
    assert bias["class"] == "BiasFrame" and abs(bias["level"] - level) < noise
    assert hot["class"] == "HotPixelMap"
    assert sorted(y * synthetic.SIZE + x for x, y in hot["pixels"]) == truth
    # the second task of the chain used what the first one made in the same process
    assert "made earlier in this process" in "\n".join(session.dpu.get_logs(jid))


def test_session_log_file_is_written_in_the_working_directory(make_session: Callable[..., Session],
                                                              env: Env) -> None:
    s = make_session(session_log=True)
    s.dpu.get_sequence_identifiers()
    s.dpu.show_sequence_options("Null")
    files = [p for p in env.cwd.iterdir() if re.fullmatch(r"\d{8}_\d{6}\.log", p.name)]
    assert len(files) == 1
    assert files[0].read_text().splitlines() == s.printed()
    assert len(s.printed()) > 1


def test_an_unwritable_working_folder_does_not_break_the_session(env: Env,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env.write_dpu()
    monkeypatch.chdir("/proc")  # no file can be created here, not even by root
    out = io.StringIO()
    dpu = Processor("testlocal", out=out, session_log=True)
    try:
        dpu.show_sequence_options("Null")
        dpu.show_sequence_identifiers()
    finally:
        dpu.close()
    assert "Recognized options for the OptionsParser are:" in out.getvalue()
    assert "Null>Null" in out.getvalue()


def test_failing_first_task_of_a_chain_counts_E_then_S(session: Session) -> None:
    jid, view = finish(session, "Null>Null", x=1)
    assert re.fullmatch(rf"\[\S+\] {STAMP} - Sending job with identifier {jid} to DPU", session.printed()[2])
    assert view.counts.letters == (0, 1, 0, 1, 0) and not view.ok
    assert status_line(session, jid).endswith(f"Jobid {jid} has status FINISHED N/E/A/S/U 0/1/0/1/0")
    reason = "1 process(es): task Null failed: RuntimeError: Null task asked to fail (fail=True)"
    assert any(ln.endswith(reason) for ln in session.printed())
    assert "RuntimeError: Null task asked to fail" in "\n".join(session.dpu.get_logs(jid))


def test_time_limit_exceeded_is_A_with_a_timeout_reason(session: Session) -> None:
    t0 = time.monotonic()
    jid, view = finish(session, "Null", s=30, dpu_time=1)  # time_factor 1, min_time 1: limit 1 s
    assert time.monotonic() - t0 < 15
    assert view.counts.letters == (0, 0, 1, 0, 0)
    [proc] = session.dpu._store.procs(jid)
    assert "TIMEOUT" in proc.reason


def test_memory_limit_exceeded_is_A(session: Session) -> None:
    jid, view = finish(session, "Null", mb=400, dpu_mem=150)
    assert view.counts.letters == (0, 0, 1, 0, 0)
    [proc] = session.dpu._store.procs(jid)
    assert "OUT_OF_MEMORY" in proc.reason
    # the same allocation fits when the job asks for enough memory
    _, ok = finish(session, "Null", mb=50, dpu_mem=600)
    assert ok.counts.letters == (1, 0, 0, 0, 0)


def test_a_process_killed_from_outside_is_A(session: Session) -> None:
    jid = session.dpu.run("Null", s=20, return_jobid=True)
    assert jid is not None
    record = Path(session.dpu._store.job(jid).jobdir) / "p" / "0" / "status.json"
    wait_until(record.exists)  # the worker is up and has said so
    os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)  # what the OOM killer does
    view = session.dpu.wait(jid, timeout=10, interval=0.05)[0]
    assert view.counts.letters == (0, 0, 1, 0, 0)
    assert "SIGKILL" in session.dpu._store.procs(jid)[0].reason


def test_a_dead_runners_processes_are_A_and_S_not_U(make_session: Callable[..., Session]) -> None:
    s = make_session(slots=1, poll={"grace": 1})
    jid = s.dpu.run("Null", n=2, s=20, return_jobid=True)
    assert jid is not None
    wait_until(running(s, jid))
    jobdir = Path(s.dpu._store.job(jid).jobdir)
    pid = int((jobdir / "runner.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the runner dies: nobody would time, end or start its processes
    view = s.dpu.wait(jid, timeout=20, interval=0.1)[0]
    # process 0 was running: aborted; process 1 never started: skipped (see test_local_runner.py)
    assert (view.status, view.counts.letters) == ("FINISHED", (0, 0, 1, 1, 0))
    assert [p.reason for p in s.dpu._store.procs(jid)] == [
        f"the local runner died (pid {pid})", f"never started: the local runner died (pid {pid})"]


def test_no_more_than_slots_processes_run_at_once(make_session: Callable[..., Session]) -> None:
    s = make_session(slots=1)
    first = s.dpu.run("Null", n=3, s=0.2, return_jobid=True)
    second = s.dpu.run("Null", n=2, s=0.2, return_jobid=True)
    views = s.dpu.wait([first, second], timeout=30, interval=0.05)
    assert [v.counts.letters for v in views] == [(3, 0, 0, 0, 0), (2, 0, 0, 0, 0)]
    spans = sorted((r["started"], r["ended"]) for jid in (first, second) for r in proc_records(s, jid))
    assert len(spans) == 5
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_processes_do_run_side_by_side_when_slots_allow(make_session: Callable[..., Session]) -> None:
    s = make_session(slots=3)
    jid, _ = finish(s, "Null", n=3, s=1.0)
    spans = sorted((r["started"], r["ended"]) for r in proc_records(s, jid))
    assert spans[-1][0] < spans[0][1]  # the last one started before the first one ended


def test_cancel_a_queued_job_skips_its_processes(make_session: Callable[..., Session]) -> None:
    s = make_session(slots=1)
    blocker = s.dpu.run("Null", s=20, return_jobid=True)
    assert blocker is not None
    wait_until(running(s, blocker))
    queued = s.dpu.run("Null", n=2, return_jobid=True)
    assert queued is not None
    s.dpu.cancel_job(queued)
    view = s.dpu.wait(queued, timeout=10, interval=0.05)[0]
    assert (view.status, view.counts.letters) == ("FINISHED", (0, 0, 0, 2, 0))
    assert any(re.search(rf" - Cancelled job {queued}: status FINISHED N/E/A/S/U 0/0/0/2/0$", ln)
               for ln in s.printed())
    assert not any((Path(s.dpu._store.job(queued).jobdir) / "p").glob("*/status.json"))  # never ran
    s.dpu.cancel_job(blocker, force=True)


def test_cancel_of_a_running_job_needs_force(session: Session) -> None:
    jid = session.dpu.run("Null", s=20, return_jobid=True)
    assert jid is not None
    wait_until(running(session, jid))
    session.dpu.cancel_job(jid)  # running, no force: says how to kill it, raises nothing
    assert re.search(rf"Job {jid} has 1 running process\(es\) and none queued; nothing cancelled\. "
                     rf"dpu\.cancel_job\({jid}, force=True\)", session.printed()[-1])
    assert session.dpu.wait(jid, timeout=0)[0].status == "RUNNING"
    t0 = time.monotonic()
    session.dpu.cancel_job(jid, force=True)
    view = session.dpu.wait(jid, timeout=10, interval=0.05)[0]
    assert time.monotonic() - t0 < 10
    assert (view.status, view.counts.letters) == ("FINISHED", (0, 0, 1, 0, 0))
    assert "cancelled while running" in session.dpu._store.procs(jid)[0].reason
    session.dpu.cancel_job(jid)  # finished: a line, no exception
    assert session.printed()[-1].endswith(f"Job {jid} is finished (status FINISHED N/E/A/S/U 0/0/1/0/0); "
                                          "nothing to cancel")


def test_a_job_outlives_the_python_that_submitted_it(session: Session, env: Env) -> None:
    script = textwrap.dedent("""
        from dpu_slurm import Processor
        dpu = Processor("testlocal", session_log=False)
        print(dpu.run("Null", s=2.0, m="detached", return_jobid=True))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=env.cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    jid = int(proc.stdout.strip().splitlines()[-1])
    out = io.StringIO()
    fresh = Processor("testlocal", out=out, session_log=False)
    try:
        assert fresh.wait(jid, timeout=0)[0].status in ("QUEUED", "RUNNING")  # submitter gone, job not
        view = fresh.wait(jid, timeout=30, interval=0.05)[0]
        assert (view.status, view.counts.letters) == ("FINISHED", (1, 0, 0, 0, 0))
        fresh.get_status(jid)
        assert out.getvalue().rstrip().endswith(f"Jobid {jid} has status FINISHED N/E/A/S/U 1/0/0/0/0")
        assert "Message: detached" in "\n".join(fresh.get_logs(jid))
    finally:
        fresh.close()


def test_get_logs_with_and_without_ids(session: Session) -> None:
    one, _ = finish(session, "Null", m="first job")
    two, _ = finish(session, "Null", m="second job")
    mine = session.dpu.get_logs(one)
    assert all(LOG_LINE.match(line) for line in mine)
    text = "\n".join(mine)
    assert "Message: first job" in text and "second job" not in text
    assert re.search(rf"^{STAMP} - Jobid {one} process 0\n{STAMP} - \+{{44}}\n{STAMP} - job_status = 0\n"
                     rf"{STAMP} - \+{{44}}$", text, re.M)  # the seed's three header lines
    everything = "\n".join(session.dpu.get_logs())
    assert "Message: first job" in everything and "Message: second job" in everything
    assert "\n".join(session.dpu.get_logs([two])) in everything
    assert f"{text}\n" in session.out.getvalue()  # also printed, unprefixed as in the seed


def test_status_and_logs_before_anything_ran(make_session: Callable[..., Session]) -> None:
    s = make_session(slots=1)
    assert s.dpu.get_status() == []
    assert s.printed()[-1].endswith(" - No active or recent jobs on DPU testlocal")
    blocker = s.dpu.run("Null", s=20, return_jobid=True)
    waiting = s.dpu.run("Null", return_jobid=True)
    assert blocker is not None and waiting is not None
    wait_until(running(s, blocker))
    assert s.dpu.get_status(waiting)[0].status == "QUEUED"
    assert s.dpu.get_logs(waiting)[-1].endswith(" - (no log yet: process is queued)")
    assert s.dpu.get_job_result(waiting) == []
    assert s.printed()[-1].endswith(f" - Job {waiting} has no results yet (status: QUEUED)")
    s.dpu.cancel_job(blocker, force=True)


def test_get_job_result_without_commit_says_so_and_returns_nothing(session: Session) -> None:
    jid, _ = finish(session, "Null", m="keep me?")
    assert session.dpu.get_job_result(jid) == []
    assert any(f"Results of job {jid} were not committed" in ln for ln in session.printed())
    committed, _ = finish(session, "Null", n=2, m="keep me", C=1)
    objects = session.dpu.get_job_result(committed)
    assert objects == [{"class": "Null", "process": 0, "message": "keep me"},
                       {"class": "Null", "process": 1, "message": "keep me"}]


@pytest.mark.parametrize("call", ["get_status", "get_logs", "get_job_result", "cancel_job"])
def test_unknown_job_id_is_job_not_found(session: Session, call: str) -> None:
    with pytest.raises(JobNotFound, match="9999"):
        getattr(session.dpu, call)(9999)
    with pytest.raises(JobNotFound):
        getattr(session.dpu, call)("abc")


def test_get_jobids_lists_this_dpus_jobs(make_session: Callable[..., Session]) -> None:
    s = make_session()
    a, _ = finish(s, "Null")
    b, _ = finish(s, "Null")
    assert s.dpu.get_jobids() == [a, b]
    other = make_session("otherlocal")
    assert other.dpu.get_jobids() == []


def test_a_task_module_that_fails_to_import_fails_the_job_not_the_client(env: Env, tmp_path: Path) -> None:
    tree = tmp_path / "brokenpipe"
    tree.mkdir()
    (tree / "dpu_tasks.py").write_text(
        "from dpu_slurm.catalog import Task\nTASKS = [Task('Broken', run='broken_tasks:run')]\n")
    (tree / "broken_tasks.py").write_text("import module_that_does_not_exist_anywhere\n")
    env.write_dpu()
    out = io.StringIO()
    dpu = Processor("testlocal", awepipe=tree, out=out, session_log=False)
    try:
        jid = dpu.run("Broken", return_jobid=True)
        view = dpu.wait(jid, timeout=30, interval=0.05)[0]
        assert (view.status, view.counts.letters) == ("FINISHED", (0, 1, 0, 0, 0))
        log = "\n".join(dpu.get_logs(jid))
        assert "Traceback (most recent call last)" in log
        assert "ModuleNotFoundError: No module named 'module_that_does_not_exist_anywhere'" in log
    finally:
        dpu.close()


def test_jobs_of_the_same_code_share_one_unpacked_bundle(session: Session, env: Env) -> None:
    a, _ = finish(session, "Null")
    b, _ = finish(session, "Null")
    ja, jb = session.dpu._store.job(a), session.dpu._store.job(b)
    assert ja.bundle == jb.bundle and len(ja.bundle) == 64
    unpacked = [p.name for p in (env.work / "testlocal" / "bundles").iterdir()]
    assert unpacked == [ja.bundle]


def test_send_code_false_runs_the_installed_version(make_session: Callable[..., Session]) -> None:
    s = make_session(awe_versions={"master": {"path": str(EXAMPLE)}})
    jid, view = finish(s, "Null", send_code=False, dpu_aweversion="master", m="installed")
    assert view.counts.letters == (1, 0, 0, 0, 0)
    bundle_dir = Path(s.dpu._store.job(jid).jobdir).parent.parent / "bundles" / s.dpu._store.job(jid).bundle
    assert not (bundle_dir / "code").exists()  # only the worker was shipped


def test_send_code_false_without_an_installed_path_is_refused(session: Session) -> None:
    with pytest.raises(DPUError, match="send_code=False"):
        session.dpu.run("Null", send_code=False)
    assert session.dpu.get_jobids() == []


def test_return_jobid_false_returns_none(session: Session) -> None:
    assert session.dpu.run("Null") is None
    assert len(session.dpu.get_jobids()) == 1
