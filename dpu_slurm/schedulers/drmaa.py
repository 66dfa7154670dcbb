"""DRMAA 1.0 (PyPI ``drmaa``): one bulk job per chunk through runBulkJobs (a rerun's: bulk_map.py),
control(TERMINATE) to cancel. Two choices, both forced by facts (README, "Grid Engine through DRMAA"):

* The DRMAA calls run in a helper process (``python -m dpu_slurm.schedulers.drmaa_helper``), one per
  scheduler instance and so one DRMAA session. Grid Engine's libdrmaa loads libjemalloc, which
  fails in an already running Python ("cannot allocate memory in static TLS block") unless
  GLIBC_TUNABLES=glibc.rtld.optional_static_tls=... was set when the process started: the helper
  is started with it, so the user sets nothing.
* Polling is not DRMAA. DRMAA 1.0 has no call listing many jobs: jobStatus is one round trip to
  the scheduler per process (the per-job polling sites ban), and synchronize(JOB_IDS_SESSION_ALL,
  0) says only whether everything of *this session* ended (a cron run is a new session). So the
  poll is the DRM's own one-call listing (qstat for Grid Engine and PBS, squeue for Slurm), done
  by that scheduler's CLI module; DRMAA's own end-of-job data (wait() of this session: exit
  status, signal, aborted) fills in ``history`` at no scheduler cost; usage figures are the DRM's.
"""
from __future__ import annotations

import json
import logging
import os
import re
import selectors
import subprocess
import sys
import weakref
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Type

from ..config import DPUConfig, dpu_home
from ..errors import ConfigError, SchedulerError, SubmitError
from ..files import private_dir
from ..render import directive
from ..store import Job
from ..transport import Transport
from ..transport.base import Gathered
from .base import (
    ENDED,
    QUEUED,
    RUNNING,
    Observation,
    Observed,
    PollRequest,
    Scheduler,
    SubmitRequest,
    Usage,
    chunks,
    number_owners,
)
from .bulk_map import positions, remap
from .ranges import as_seen

log = logging.getLogger(__name__)

# drmaa.JobState values (DRMAA 1.0 drmaa_job_ps) -> (state, letter). DONE is "ended" whatever
# the exit code (the worker's record says how); FAILED is "ended abnormally": S when it never
# started, A when its worker had (status.decide looks at the record).
STATE_MAP = {
    "UNDETERMINED": (ENDED, "U"),
    "QUEUED_ACTIVE": (QUEUED, ""),
    "SYSTEM_ON_HOLD": (QUEUED, ""),
    "USER_ON_HOLD": (QUEUED, ""),
    "USER_SYSTEM_ON_HOLD": (QUEUED, ""),
    "RUNNING": (RUNNING, ""),
    "SYSTEM_SUSPENDED": (RUNNING, ""),
    "USER_SUSPENDED": (RUNNING, ""),
    "USER_SYSTEM_SUSPENDED": (RUNNING, ""),
    "DONE": (ENDED, "N"),
    "FAILED": (ENDED, "S"),
}
TLS_TUNABLE = "glibc.rtld.optional_static_tls=4096"
LIBRARIES = ("/usr/lib/gridengine-drmaa/lib/libdrmaa.so.1.0", "/usr/lib/libdrmaa.so.1.0",
             "/usr/lib64/libdrmaa.so.1", "/usr/local/lib/libdrmaa.so", "/usr/lib/slurm-drmaa/lib/libdrmaa.so",
             "/usr/local/lib/pbs-drmaa/libdrmaa.so")
_TASK = re.compile(r"^(\d+)(?:[._\[](\d+)\]?)?")
CALL_TIMEOUT = 120.0


def native_spec(dpu: DPUConfig, req: SubmitRequest) -> str:
    """The job template's nativeSpecification, in the syntax of the DRM named by ``scheduler``."""
    parts = drm_class(dpu).drmaa_spec(dpu, req) or []
    try:  # libdrmaa splits on blanks and unquotes nothing: only plain words may pass
        words = [str(directive(p)) for p in parts]
    except ValueError as exc:
        raise ConfigError(f"{dpu.path}: {exc}") from None
    return " ".join(words + list(dpu.extra_directives))


def drm_class(dpu: DPUConfig) -> Type[Scheduler]:
    """The registered command-line scheduler of the DRM behind DRMAA (its poll, its syntax)."""
    def able(cls: Type[Scheduler]) -> bool:
        return cls.KIND == "scheduler" and cls.drmaa_spec.__func__ is not Scheduler.drmaa_spec.__func__  # type: ignore[attr-defined]

    from . import registry  # every scheduler module imported (this one is one of them)

    cls = registry().get(dpu.scheduler)
    if cls is None or not able(cls):
        known = sorted((c.ORDER, n) for n, c in registry().items() if able(c))
        words = [n for _, n in known]
        listed = ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else "".join(words)
        raise ConfigError(f"{dpu.path}: submit: drmaa works with scheduler {listed}, not {dpu.scheduler!r}")
    return cls


def info_observation(info: Dict[str, Any]) -> Observation:
    """An ended process from DRMAA's JobInfo (wait() of this session)."""
    if info.get("wasAborted"):
        return Observation(ENDED, "S", "aborted by the DRM (cancelled or killed)")
    if info.get("hasSignal"):
        return Observation(ENDED, "A", f"killed by signal {info.get('terminatedSignal') or '?'}")
    if info.get("hasExited"):
        code = int(info.get("exitStatus") or 0)
        if code == 0:
            return Observation(ENDED, "N", "exit status 0")
        if code > 128:
            return Observation(ENDED, "A", f"killed by signal {code - 128}")
        return Observation(ENDED, "E", f"exit status {code}")
    return Observation(ENDED, "U", "the DRM gave no exit status")


def find_library(dpu: DPUConfig) -> str:
    """The libdrmaa to load: the config's, DRMAA_LIBRARY_PATH's, else a known path; ConfigError
    when there is none."""
    lib = dpu.drmaa_library or os.environ.get("DRMAA_LIBRARY_PATH", "")
    if not lib:
        lib = next((p for p in LIBRARIES if Path(p).exists()), "")
    if not lib or not Path(lib).exists():
        where = f"'{lib}' does not exist" if lib else "no libdrmaa found in " + ", ".join(LIBRARIES)
        raise ConfigError(f"{dpu.path}: submit: drmaa needs the DRM's libdrmaa: {where}. Install it "
                          "(Grid Engine on Debian: apt-get install gridengine-drmaa1.0) and name it "
                          "with 'drmaa_library: /path/libdrmaa.so' in the DPU config (or set "
                          "DRMAA_LIBRARY_PATH), or use 'submit: cli'")
    return lib


def helper_env(dpu: DPUConfig) -> Dict[str, str]:
    """The helper's environment: libdrmaa's path, the static-TLS tunable, the SGE cell."""
    env = dict(os.environ)
    env["DRMAA_LIBRARY_PATH"] = find_library(dpu)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.rtld.optional_static_tls" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, TLS_TUNABLE) if t)
    drm_class(dpu).drmaa_env(env)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


class Helper:
    """The helper process of one DRMAA session: JSON lines in, JSON lines out."""

    def __init__(self, dpu: DPUConfig) -> None:
        if find_spec("drmaa") is None:
            raise ConfigError(f"{dpu.path}: submit: drmaa needs the Python package 'drmaa': "
                              "pip install 'dpu_slurm[drmaa]', or use 'submit: cli'")
        env = helper_env(dpu)
        log_path = dpu_home() / "drmaa-helper.log"
        private_dir(log_path.parent)  # DPU_HOME: 0700
        self.log_path = log_path
        with open(log_path, "ab") as err:
            argv = [sys.executable, "-m", f"{__package__}.drmaa_helper"]
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, env=env, text=True, bufsize=1,
                                         start_new_session=True)
        self._finalizer = weakref.finalize(self, _stop, self.proc)
        hello = self._read()
        if "error" in hello:
            self.close()
            raise ConfigError(f"{dpu.path}: {hello['error']}")
        self.drms = str(hello.get("drms", ""))

    def call(self, op: str, **args: Any) -> Dict[str, Any]:
        """Send one operation to the helper; return its reply. SubmitError or SchedulerError if it fails."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SchedulerError(f"the DRMAA helper has exited; see {self.log_path}") from None
        reply = self._read()
        if "error" in reply:
            if reply.get("kind") == "submit":
                raise SubmitError(str(reply["error"]), transient=bool(reply.get("transient")))
            raise SchedulerError(f"DRMAA {op}: {reply['error']}")
        return reply

    def _read(self) -> Dict[str, Any]:
        stdout: Optional[IO[str]] = self.proc.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            if not sel.select(CALL_TIMEOUT):
                raise SchedulerError(f"the DRMAA helper gave no answer in {CALL_TIMEOUT:.0f} s")
        line = stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SchedulerError("the DRMAA helper exited: " + " / ".join(tail))
        return dict(json.loads(line))

    @property
    def alive(self) -> bool:
        """Whether the helper process still runs."""
        return self.proc.poll() is None

    def close(self) -> None:
        """End the helper (and its DRMAA session); safe to call twice."""
        self._finalizer()


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the helper: EOF makes it exit its DRMAA session; our own child, by its pid, if it hangs."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=5)


class DRMAAScheduler(Scheduler):
    """submit: drmaa: bulk jobs through libdrmaa; polled by the DRM's own command-line module."""

    name = "drmaa"
    KIND = "submit"
    STATE_MAP = STATE_MAP
    RERUN = True

    def __init__(self, dpu: DPUConfig, transport: Transport) -> None:
        super().__init__(dpu, transport)
        self.cli = drm_class(dpu)(dpu, transport)
        self._helper: Optional[Helper] = None
        self._ended: Dict[str, Observation] = {}  # native task id -> how it ended (this session)

    @property
    def helper(self) -> Helper:
        """The session, opened at the first submit or cancel (a poll needs none)."""
        if self._helper is None or not self._helper.alive:
            self._helper = Helper(self.dpu)
        return self._helper

    def close(self) -> None:
        """End the DRMAA session helper, if one was opened."""
        if self._helper is not None:
            self._helper.close()
            self._helper = None

    # -- submit ---------------------------------------------------------------------------
    def submit(self, req: SubmitRequest) -> List[str]:
        """Queue each chunk as a DRMAA bulk job; return their ids. A refused chunk: SubmitError, after
        the chunks already queued are taken back."""
        scripts = self.stage(req)
        spec = native_spec(self.dpu, req)
        native: List[str] = []
        try:
            sizes = [n for _, n in chunks(req.nproc, self.dpu.max_array_size)] if req.indices is None \
                else [len(ids) for _, ids in self.rerun_chunks(req.indices)]
            for k, (name, count) in enumerate(zip(scripts, sizes, strict=True)):
                reply = self.helper.call(
                    "submit", command="/bin/bash", args=[f"{req.jobdir}/{name}"],
                    name=req.chunk_tag(k), native=spec, workdir=req.jobdir,
                    output=f":{req.jobdir}/out/job-{k}.", count=count)
                native.append(self.cli.drmaa_array_id(reply["ids"][0]))
                if req.accepted is not None:
                    req.accepted(list(native))
        except SchedulerError as exc:
            if native:  # a later chunk failed: take back the ones already queued
                self.helper.call("control", ids=native, action="terminate")
            raise SubmitError(f"DRMAA refused it: {exc}") from None
        return native

    def rerun_context(self, req: SubmitRequest, offset: int, ids: List[int]) -> Dict[str, Any]:
        """The chunk's indices for its script to pick from by task number."""
        return positions(offset, ids)

    # -- poll: the DRM's own one-call listing, in the gather's round trip ------------------
    def poll_request(self, jobs: Sequence[Job]) -> PollRequest:
        """The DRM's own command-line poll (DRMAA has no one-call listing)."""
        return self.cli.poll_request(jobs)

    def parse_poll(self, jobs: Sequence[Job], got: Gathered) -> Observed:
        """The DRM module's observations, indices shifted to count from 0."""
        seen = self.cli.parse_poll(jobs, got)
        self.names = self.cli.names  # the DRM's listing carries the job names (tags) too
        shift = self.cli.DRMAA_INDEX_SHIFT
        return remap(jobs, {j: as_seen(procs).shifted(-shift) for j, procs in seen.items()})

    def history(self, jobs: Sequence[Job]) -> Dict[int, Dict[int, Observation]]:
        """How processes ended: this session's wait() data, then the DRM's accounting."""
        if self._helper is not None and self._helper.alive:
            for info in self._helper.call("reap")["infos"]:
                self._ended[str(info["jobId"])] = info_observation(info)
        out: Dict[int, Dict[int, Observation]] = {}
        own = number_owners(jobs)
        for task_id, obs in self._ended.items():
            m = _TASK.match(task_id)
            if m and m.group(1) in own and m.group(2):
                job, offset, count = own[m.group(1)]
                if 1 <= int(m.group(2)) <= count:
                    out.setdefault(job.id, {})[offset + int(m.group(2)) - 1] = obs
        history = self.cli.drmaa_history(jobs)
        self.names.update(self.cli.names)  # accounting's job names too
        for job_id, procs in history.items():
            for idx, obs in procs.items():
                out.setdefault(job_id, {}).setdefault(idx, obs)
        return remap(jobs, out)

    def usage(self, jobs: Sequence[Job]) -> Usage:
        """The DRM's own accounting figures (qacct for Grid Engine), named as its own."""
        self.USAGE_SOURCE = self.cli.USAGE_SOURCE
        return self.cli.usage(jobs)

    def status(self, native_ids: Sequence[str]) -> Dict[str, Observation]:
        """jobStatus of a few named processes (diagnosis: one DRM round trip each, never in a poll)."""
        states = self.helper.call("status", ids=list(native_ids))["states"]
        return {k: self.observe(v) for k, v in states.items()}

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self, job: Job, force: bool) -> None:
        """control(TERMINATE) of each bulk job: the session has checked nothing runs unless force."""
        self.helper.call("control", ids=list(job.native_ids), action="terminate")
