"""Shared fixtures: every test runs in its own DPU_HOME, config path and working directory."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import yaml

from dpu_slurm.processor import Processor
from dpu_slurm.transport.local import LocalTransport

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "awepipe"


@dataclass
class Env:
    root: Path
    home: Path      # DPU_HOME
    config: Path    # DPU_CONFIG_PATH
    cwd: Path
    work: Path      # workdir of the test DPU

    def write_dpu(self, name: str = "testlocal", **fields: Any) -> Path:
        """A local DPU with quick limits; `fields` override or add keys."""
        data: Dict[str, Any] = {"name": name, "scheduler": "local", "slots": 2, "time_factor": 1,
                                "min_time": 1, "workdir": str(self.work / name)}
        data.update(fields)
        path = self.config / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = Env(tmp_path, tmp_path / "dpuhome", tmp_path / "config", tmp_path / "cwd", tmp_path / "work")
    for folder in (e.home, e.config, e.cwd, e.work):
        folder.mkdir()
    monkeypatch.setenv("DPU_HOME", str(e.home))
    monkeypatch.setenv("DPU_CONFIG_PATH", str(e.config))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))  # keep ~/.config/dpu out
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("DPU_NAME", raising=False)
    monkeypatch.delenv("AWEPIPE", raising=False)
    monkeypatch.chdir(e.cwd)
    yield e
    _stop_runners(tmp_path)


def _stop_runners(root: Path) -> None:
    """Stop local runners this test left alive (by their recorded pid, never by name)."""
    pids: List[int] = []
    for pid_file in root.rglob("runner.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"dpu_slurm.schedulers.local" in cmdline and str(pid_file.parent).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)  # the runner kills its running processes, then exits
            pids.append(pid)
    end = time.monotonic() + 8
    while pids and time.monotonic() < end:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Session:
    """A Processor on the test DPU and what it printed."""

    dpu: Processor
    out: io.StringIO

    def printed(self) -> List[str]:
        return self.out.getvalue().splitlines()


@pytest.fixture
def make_session(env: Env) -> Iterator[Callable[..., Session]]:
    made: List[Processor] = []

    def make(name: str = "testlocal", session_log: bool = False, **fields: Any) -> Session:
        env.write_dpu(name, **fields)
        out = io.StringIO()
        proc = Processor(name, out=out, session_log=session_log)
        made.append(proc)
        return Session(proc, out)

    yield make
    for proc in made:
        proc.close()


@pytest.fixture
def session(make_session: Callable[..., Session]) -> Session:
    return make_session()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def until(cond: Callable[[], bool], what: str, wait: float = 240.0, step: float = 0.5) -> None:
    """Poll `cond` until true; fail saying `what` did not happen within `wait` seconds (a bound on
    a real service's pace, never a figure the test checks)."""
    end = time.monotonic() + wait
    while not cond():
        assert time.monotonic() < end, f"{what}: not within {wait:g} s"
        time.sleep(step)


def text_of(path: Path) -> str:
    """A file's text, or "" while it does not exist (a log a job has not written yet)."""
    try:
        return path.read_text()
    except OSError:
        return ""


# -- real services and what is asked of them ----------------------------------------------------
def harness(script: str) -> None:
    """Bring a real service up with its harness script (idempotent: a no-op when it runs)."""
    subprocess.run(["bash", str(REPO / "harness" / script)], check=True, timeout=600)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    harness("slurm-up.sh")


def write_slurm(folder: Path, name: str, **fields: Any) -> Path:
    """A DPU file for the harness SLURM in folder/cfg with quick limits; `fields` override."""
    data: Dict[str, Any] = {"name": name, "scheduler": "slurm", "workdir": str(folder / "work"),
                            "time_factor": 1, "min_time": 60,
                            "poll": {"min_interval": 0, "max_interval": 0, "grace": 3},
                            "partitions": [{"name": "debug", "max_time": 86400, "max_mem": 4000}]}
    data.update(fields)
    (folder / "cfg").mkdir(exist_ok=True)
    path = folder / "cfg" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextmanager
def slurm_processor(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                    **fields: Any) -> Iterator[Processor]:
    """`dpu` on the harness SLURM (home, configs and workdir under folder), printing into
    `dpu.out`; every job it queued is cancelled afterwards, leaving the cluster empty."""
    monkeypatch.setenv("DPU_HOME", str(folder / "home"))
    monkeypatch.setenv("DPU_CONFIG_PATH", str(folder / "cfg"))
    monkeypatch.chdir(folder)
    write_slurm(folder, name, **fields)
    out = io.StringIO()
    proc = Processor(name, out=out, session_log=False)
    proc.out = out  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        for job_id in proc.get_jobids():
            natives = [n for n in proc._store.job(job_id).native_ids if n]
            if natives:
                subprocess.run(["scancel", *natives], check=False)
        proc.close()


SGE_ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"}


@contextmanager
def sge_processor(make_session: Callable[..., Session], monkeypatch: pytest.MonkeyPatch, name: str,
                  **fields: Any) -> Iterator[Processor]:
    """`dpu` on the harness Grid Engine (scheduler: sge, qsub on the command line, chunks of 3);
    every job it queued is deleted afterwards."""
    for key, value in SGE_ENV.items():
        monkeypatch.setenv(key, value)
    made = make_session(name, **{"scheduler": "sge", "min_time": 60, "max_array_size": 3,
                                 "poll": {"min_interval": 0, "max_interval": 0, "grace": 3}, **fields})
    try:
        yield made.dpu
    finally:
        for job_id in made.dpu.get_jobids():
            natives = made.dpu._store.job(job_id).native_ids
            if natives:
                subprocess.run(["qdel", *natives], check=False, capture_output=True)


@pytest.fixture(scope="session")
def sge_cluster() -> None:
    harness("sge-up.sh")


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> List[List[str]]:
    """The argv of every command run through the local transport from now on."""
    calls: List[List[str]] = []
    real = LocalTransport.run

    def spy(self: LocalTransport, argv: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(list(argv))
        return real(self, argv, *args, **kwargs)

    monkeypatch.setattr(LocalTransport, "run", spy)
    return calls


# One headless Chromium for the whole run (Debian's, installed by harness/chromium-up.sh): the
# browser tests of every module share it, since two sync Playwright instances cannot be open at
# once in one thread ("Sync API inside the asyncio loop").
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The shared headless Chromium (playwright is imported here: the browser extra)."""
    from playwright.sync_api import sync_playwright

    subprocess.run(["bash", str(REPO / "harness" / "chromium-up.sh")], check=True, timeout=900)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab in its own context; the test fails if the page raised a script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    errors: List[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], f"the page raised: {errors}"
