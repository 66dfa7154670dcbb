"""The local DPU's runner: nothing a process starts outlives it, a dead runner is accounted, slots hold."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from dpu_slurm.processor import Processor
from dpu_slurm.worker import proc_stat
from tests.conftest import Env, wait_until

TASKS = '''
from dpu_slurm.catalog import Option, Task

OUT = Option("o", "out", str, "", "folder for pid and stamp files")
COUNT = Option("n", "count", int, 1, "number of processes")
SLEEP = Option("s", "sleep", float, 0.0, "seconds to sleep")
TASKS = [
    Task("Leave", run="leftovers:leave", options=(OUT, COUNT, SLEEP), estimate=60,
         split=lambda o: [{} for _ in range(o["count"])]),
    Task("Stamp", run="leftovers:stamp", options=(OUT, COUNT, SLEEP), estimate=60,
         split=lambda o: [{} for _ in range(o["count"])]),
]
SEQUENCES = []
'''

CODE = '''
import os, shlex, subprocess, time


def leave(ctx):
    """Start three sleepers and return (or sleep) without waiting for them."""
    out = ctx.options["out"]
    tag = f"{ctx.job_id}.{ctx.index}"
    q = shlex.quote
    # a plain child, a double-forked one (same group and session) and one gone with setsid
    subprocess.Popen(["sh", "-c", f"echo $$ > {q(out)}/child.{tag}; exec sleep 300"])
    subprocess.run(["sh", "-c", f"(sh -c 'echo $$ > {q(out)}/double.{tag}; exec sleep 300' &) &"])
    subprocess.run(["sh", "-c", f"setsid sh -c 'echo $$ > {q(out)}/escaped.{tag}; exec sleep 300' &"])
    for name in ("child", "double", "escaped"):
        while not os.path.exists(f"{out}/{name}.{tag}") or not open(f"{out}/{name}.{tag}").read():
            time.sleep(0.01)
    ctx.log("left three sleepers behind")
    time.sleep(ctx.options["sleep"])
    return []


def _stamp(out, word):
    line = f"{word} {time.time():.6f} {os.getpid()}\\n".encode()
    fd = os.open(os.path.join(out, "stamps"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, line)
    os.close(fd)


def stamp(ctx):
    _stamp(ctx.options["out"], "start")
    try:
        time.sleep(ctx.options["sleep"])
    finally:
        _stamp(ctx.options["out"], "end")
    return []
'''


@pytest.fixture
def pipeline(env: Env) -> Path:
    tree = env.root / "pipeline"
    tree.mkdir()
    (tree / "dpu_tasks.py").write_text(textwrap.dedent(TASKS))
    (tree / "leftovers.py").write_text(textwrap.dedent(CODE))
    return tree


@pytest.fixture
def runner(env: Env, pipeline: Path) -> Iterator[Callable[..., Processor]]:
    made: List[Processor] = []

    def make(**fields: Any) -> Processor:
        env.write_dpu(**fields)
        dpu = Processor("testlocal", awepipe=pipeline, out=io.StringIO(), session_log=False)
        made.append(dpu)
        return dpu

    yield make
    for dpu in made:
        dpu.close()


def alive(pid: int) -> bool:
    row = proc_stat(pid)
    return row is not None and row[0] != "Z"


def sleepers(out: Path, jid: int, idx: int = 0) -> List[int]:
    return [int((out / f"{name}.{jid}.{idx}").read_text()) for name in ("child", "double", "escaped")]


@pytest.fixture
def out(env: Env) -> Iterator[Path]:
    folder = env.root / "out"
    folder.mkdir()
    yield folder
    for pid_file in folder.glob("*.*"):  # never leave a sleeper behind, whatever the outcome
        pid = int(pid_file.read_text() or 0)
        row = proc_stat(pid) if pid else None
        if row is not None and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def test_what_a_process_leaves_behind_is_gone_when_it_finished(runner: Callable[..., Processor],
                                                               out: Path) -> None:
    dpu = runner()
    jid = dpu.run("Leave", o=str(out), return_jobid=True)
    view = dpu.wait(jid, timeout=60, interval=0.05)[0]
    assert (view.status, view.counts.letters) == ("FINISHED", (1, 0, 0, 0, 0))
    pids = sleepers(out, jid)
    assert [pid for pid in pids if alive(pid)] == []  # none of the three, at the moment it says FINISHED


@pytest.mark.parametrize("how", ["time limit", "cancel"])
def test_what_a_process_leaves_behind_is_gone_when_it_is_killed(runner: Callable[..., Processor],
                                                                out: Path, how: str) -> None:
    dpu = runner(time_factor=1, min_time=1)
    options = {"dpu_time": 2} if how == "time limit" else {}
    jid = dpu.run("Leave", o=str(out), s=120, return_jobid=True, **options)
    wait_until(lambda: (out / f"escaped.{jid}.0").exists() and (out / f"escaped.{jid}.0").read_text() != "",
               timeout=60)
    pids = sleepers(out, jid)
    if how == "cancel":
        dpu.cancel_job(jid, force=True)
    view = dpu.wait(jid, timeout=60, interval=0.05)[0]
    assert (view.status, view.counts.letters) == ("FINISHED", (0, 0, 1, 0, 0))
    assert [pid for pid in pids if alive(pid)] == []


def test_a_dead_runner_is_accounted_and_slots_still_hold(runner: Callable[..., Processor], out: Path) -> None:
    dpu = runner(slots=2)
    first = dpu.run("Stamp", o=str(out), n=4, s=120, return_jobid=True)
    stamps = out / "stamps"

    def lines() -> List[Tuple[str, float, int]]:
        text = stamps.read_text() if stamps.exists() else ""
        return [(w, float(t), int(p)) for w, t, p in (ln.split() for ln in text.splitlines())]

    wait_until(lambda: len(lines()) == 2, timeout=60)  # two run, two wait for a slot
    runner_pid = int((Path(dpu._store.job(first).jobdir) / "runner.pid").read_text())
    os.kill(runner_pid, signal.SIGKILL)
    second = dpu.run("Stamp", o=str(out), n=3, s=0.2, return_jobid=True)
    views = dpu.wait([first, second], timeout=90, interval=0.1)
    assert [v.status for v in views] == ["FINISHED", "FINISHED"]
    # the dead runner's running processes are A, its queued ones S (never U), with the reason
    assert views[0].counts.letters == (0, 0, 2, 2, 0)
    reasons = sorted(p.reason for p in dpu._store.procs(first))
    why = f"the local runner died (pid {runner_pid})"
    assert reasons == sorted([why, why, f"never started: {why}", f"never started: {why}"])
    assert views[1].counts.letters == (3, 0, 0, 0, 0)
    # never more than two at once: every start/end pair, in time order
    events = sorted(lines(), key=lambda e: e[1])
    assert [w for w, _, _ in events].count("start") == 5 and [w for w, _, _ in events].count("end") == 5
    running, most = 0, 0
    for word, _, _ in events:
        running += 1 if word == "start" else -1
        most = max(most, running)
    assert most <= 2, events


def test_a_rerun_waits_for_the_last_runs_runner_to_exit(tmp_path: Path) -> None:
    """A rerun moves the last run's runner files to run-N while that runner may still be saving
    its final states into the job folder: the rerun waits until it is gone first (else a poll
    would read the old runner's file as the rerun's and end it E)."""
    from dpu_slurm.schedulers.local_kill import runner_alive, wait_for_runner

    jobdir = tmp_path / "jobs" / "1.s"
    jobdir.mkdir(parents=True)
    old = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))",
                            "1.5", "dpu_slurm.schedulers.local", str(jobdir)])
    try:
        (jobdir / "runner.pid").write_text(f"{old.pid}\n")
        assert runner_alive(old.pid, jobdir)
        assert not runner_alive(old.pid, tmp_path / "other")      # not that job's runner
        assert wait_for_runner(jobdir / "runner.pid", jobdir, timeout=0.1) is False
        assert wait_for_runner(jobdir / "runner.pid", jobdir, timeout=30) is True
        assert old.poll() is not None or not runner_alive(old.pid, jobdir)
    finally:
        old.kill()
        old.wait()
    assert wait_for_runner(jobdir / "run-2" / "runner.pid", jobdir) is True   # no such run
