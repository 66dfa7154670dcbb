"""The ``dpu`` object of the AWE prompt: the HOW-TO's methods and their printed lines."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, AsyncIterator, Dict, Iterable, Iterator, List, Optional, Union, cast

from . import routing
from .catalog import Catalog
from .config import (
    DPUConfig,
    current_user,
    default_dpu_name,
    discover,
    environment_file,
    get_dpu,
    write_environment,
)
from .environment import Environment
from .errors import ConfigError, DPUError, JobNotFound
from .estimates import Amount, estimate_lines, planner
from .futures import DPUJob, as_completed, as_completed_async
from .graph import AfterIds, after_lines, parse_after
from .index import own_job_ids
from .report import report_lines
from .rerun import history_lines
from .retries import retry_lines
from .retry_policy import run_policy
from .seed_lines import StatusViews, identifier_lines, job_logs, option_lines
from .session import Cancelled, DPUSession, JobView, awepipe_path, open_store
from .session_log import LogLines, SessionWriter, quiet
from .states import STATUS_TERMINAL, Phase
from .store import Job
from .target import run_target
from .text import printable

log = logging.getLogger(__name__)

JobIds = Union[int, Iterable[int], None]
RECENT = 24 * 3600


class Processor:
    """Runs task sequences on a Distributed Processing Unit (DPU).

    ``dpu = Processor()`` uses the DPU named by ``dpu_name`` (env DPU_NAME or ``dpu select``);
    see ``help(dpu.run)`` and the README for the rest.
    """

    def __init__(self, dpu_name: Optional[str] = None, awepipe: Optional[Union[str, Path]] = None,
                 out: Optional[IO[str]] = None, session_log: bool = True) -> None:
        self._store = open_store()
        self._awepipe = Path(awepipe) if awepipe is not None else awepipe_path()
        self._catalog: Optional[Catalog] = None
        self._others: Dict[str, DPUSession] = {}  # sessions of other DPUs your jobs are on
        self._started = time.time()
        logfile = Path.cwd() / time.strftime("%Y%m%d_%H%M%S.log") if session_log else None
        self._say = SessionWriter(current_user(), out or sys.stdout, logfile)
        self._session = DPUSession(self._initial_dpu(dpu_name), self._store)

    def _initial_dpu(self, asked: Optional[str]) -> DPUConfig:
        """The DPU asked for, else dpu_name; a saved default that is gone falls back to local."""
        if asked or os.environ.get("DPU_NAME"):
            name = asked or os.environ["DPU_NAME"]
            try:
                return get_dpu(name)
            except ConfigError as exc:
                if asked:
                    raise
                raise ConfigError(f"{exc} (the name comes from the DPU_NAME variable)") from None
        saved = default_dpu_name()
        try:
            return get_dpu(saved)
        except ConfigError as exc:
            if saved == "local":
                raise
            self._say(f"Your saved default DPU {saved!r} is not known any more ({environment_file()}); "
                      "using 'local'. dpu.select_dpu(NAME, persist=True) (shell: dpu select NAME) "
                      f"saves another. [{exc}]")
            return get_dpu("local")

    def __repr__(self) -> str:
        return f"<Processor dpu={self.dpu_name!r} user={self._session.user!r}>"

    @property
    def session_log(self) -> Optional[Path]:
        """This session's YYYYmmdd_HHMMSS.log (written from the first printed line on)."""
        return self._say.logfile

    @property
    def dpu_name(self) -> str:
        """The name of the DPU this processor submits to."""
        return self._session.dpu.name

    @property
    def user(self) -> str:
        """Whose jobs these are (the user name the store records them under)."""
        return self._session.user

    @property
    def catalog(self) -> Catalog:
        """The AWEPIPE task catalog, loaded when first needed."""
        if self._catalog is None:
            self._catalog = Catalog.load(self._awepipe)
        return self._catalog

    def close(self) -> None:
        """Close the DPU connections, the store and the session log."""
        for session in (self._session, *self._others.values()):
            session.close()
        self._store.close()
        self._say.close()

    # -- DPUs -------------------------------------------------------------------------------
    def get_dpu_identifiers(self) -> List[str]:
        """Names of all known DPUs."""
        return sorted(discover()[0])

    def show_dpu_identifiers(self) -> None:
        """Print every configured DPU (the current one marked ``*``)."""
        dpus, problems = discover()
        for name in sorted(dpus):
            cfg = dpus[name]
            mark = "*" if name == self.dpu_name else " "
            where = cfg.host["hostname"] if cfg.host else "this machine"
            self._say(f"{mark} {name:<16} {cfg.scheduler:<6} {where:<24} {cfg.description}")
        for problem in problems:
            self._say(f"  (skipped: {problem})")

    def select_dpu(self, name: Optional[str] = None, persist: bool = False) -> str:
        """Use DPU `name` from now on in this session (persist=True: also as your default)."""
        if name is None:
            names = self.get_dpu_identifiers()
            if not sys.stdin.isatty():
                raise DPUError(f"select_dpu() needs a name; known DPUs: {', '.join(names)}")
            self.show_dpu_identifiers()
            name = input("DPU name: ").strip()
        cfg: DPUConfig = get_dpu(name)
        self._session.close()
        self._session = DPUSession(cfg, self._store, self._session.user)
        if persist:
            write_environment(dpu_name=cfg.name)
        self._say(f"Selected DPU {cfg.name}" + (" (saved as your default)" if persist else ""))
        return cfg.name

    # -- sequences and options ---------------------------------------------------------------
    def get_sequence_identifiers(self) -> List[str]:
        """The task sequences this DPU recognises."""
        return self.catalog.identifiers()

    def show_sequence_identifiers(self, identifier: Optional[str] = None) -> None:
        """Print the known task sequences with a one-line description; `identifier` filters by
        name (a part of it will do), and an exact name also prints that sequence's options."""
        for line in identifier_lines(self.catalog, identifier):
            self._say.raw(printable(line))  # unprefixed, as the HOW-TO prints its listings

    def get_sequence_options(self, sequence: str) -> List[List[str]]:
        """``[[short names..., long names...]]`` of the options a sequence recognises."""
        opts = self.catalog.sequence(sequence).options
        return [[o.short for o in opts] + [o.long for o in opts]]

    def show_sequence_options(self, sequence: str, verbose: bool = False) -> None:
        """Print the options a sequence accepts with their defaults (verbose: and their help)."""
        for line in option_lines(self.catalog.sequence(sequence).options, verbose):
            self._say.raw(printable(line))  # the HOW-TO's lines, unprefixed

    # -- run --------------------------------------------------------------------------------
    def run(self, sequence: str, dpu_time: Amount = None, dpu_mem: Amount = None,
            dpu_aweversion: Optional[str] = None, send_code: bool = True,
            return_jobid: bool = False, retries: Union[int, Dict[str, Any], None] = None,
            dpu: Optional[str] = None, after: AfterIds = None, after_mode: str = "ok",
            return_job: bool = False, **options: Any) -> Union[int, DPUJob, None]:
        """Submit `sequence` with its options (short or long names) as one job.

        dpu_time: expected seconds per process (overrides the tasks' estimate; 'auto': learned
        from past runs); dpu_mem: MB per process (or 'auto'); dpu_aweversion: installed version
        to use on the DPU; send_code: ship your AWEPIPE code (default) or use the installed version;
        return_jobid: return the job identifier (return_job: a job handle, as submit); retries:
        this run's retry policy, a number (max) or {max, on, grow_time, grow_mem}, over the DPU's;
        dpu: another DPU for this run, or "auto": the one expected to start it first (routing.py).
        after: job id(s) this one waits for, after_mode: ok|any|each (README "Pipelines of jobs").
        """
        policy, edges = run_policy(retries), parse_after(after, after_mode)
        extra = {"dpu_time": dpu_time, "dpu_mem": dpu_mem, "dpu_aweversion": dpu_aweversion,
                 "retries": retries, "dpu": dpu, "after": after,
                 "after_mode": after_mode if edges else None}
        given = {**options, **{k: v for k, v in extra.items() if v is not None}}
        if not send_code:
            given["send_code"] = False
        args = ", ".join([repr(sequence)] + [f"{k}={v!r}" for k, v in given.items()])
        self._say(f"Calling: dpu.run({args})")
        planned, learned = planner(self._store, self.catalog, sequence, options, dpu_time, dpu_mem,
                                   dpu_aweversion, send_code)
        session, plan = routing.where(dpu, self._session, self._session_named, planned, self._say)
        plan.dpu_options.update(retries=policy, after=edges)
        history, note = learned[session.dpu.name]
        for line in estimate_lines(plan.estimate, history, note, extra):
            self._say(line)
        job_id = session.submit(plan, self._awepipe)
        suffix = f" ({plan.nproc} processes)" if plan.nproc > 1 else ""
        self._say(f"Sending job with identifier {job_id} to DPU{suffix}")
        return DPUJob(self, job_id) if return_job else job_id if return_jobid else None

    def run_target(self, target: str, force: bool = False, dry_run: bool = False,
                   **options: Any) -> Dict[str, Optional[int]]:
        """Run task `target` and the tasks it requires, skipping committed processes (target.py)."""
        return run_target(self._session, self.catalog, self._awepipe, self._say, target, force, dry_run,
                          **options)

    def submit(self, sequence: str, **options: Any) -> DPUJob:
        """``run`` returning a job handle (futures.py): ``.status()``, ``.wait(timeout)``,
        ``.result()``, ``.logs()``, ``await job``; a notebook shows it as a N/E/A/S/U bar."""
        return cast(DPUJob, self.run(sequence, return_job=True, **options))

    def as_completed(self, jobs: Iterable[DPUJob], timeout: Optional[float] = None,
                     interval: float = 1.0) -> Iterator[DPUJob]:
        """Yield the job handles as each finishes (JobTimeout after `timeout` seconds)."""
        return as_completed(jobs, timeout, interval)

    def as_completed_async(self, jobs: Iterable[DPUJob], timeout: Optional[float] = None,
                           interval: float = 1.0) -> AsyncIterator[DPUJob]:
        """``async for job in dpu.as_completed_async(jobs)``: as_completed for asyncio."""
        return as_completed_async(jobs, timeout, interval)

    def environment(self) -> Environment:
        """The HOW-TO's Environment (``Env`` in dpu shell): ``Env['dpu_name']`` reads and saves
        your default DPU."""
        return Environment(self._say, lambda: self.dpu_name)

    def rerun(self, jobid: int, only: str = "EAU", time_factor: Optional[float] = None,
              mem_factor: Optional[float] = None, auto: bool = False) -> List[int]:
        """Resubmit a finished job's processes with a task ending in `only` (rerun.py's rules);
        auto=True: double the time of those that timed out, the memory of those out of memory."""
        job = self._jobs(jobid)[0]
        given = {"only": only, "time_factor": time_factor, "mem_factor": mem_factor, "auto": auto or None}
        args = [repr(jobid)] + [f"{k}={v!r}" for k, v in given.items() if v is not None]
        self._say(f"Calling: dpu.rerun({', '.join(args)})")
        _, indices = self._session_for(job).rerun(job, only, time_factor, mem_factor, auto)
        grown = self._store.job(jobid).dpu_options
        self._say(f"Sending job with identifier {jobid} to DPU again ({len(indices)} "
                  f"process{'es' if len(indices) > 1 else ''}: {', '.join(map(str, indices))}"
                  f"{'; ' + grown['grown'] if grown.get('grown') else ''})")
        return indices

    def show_attempts(self, jobid: int) -> None:
        """Print each rerun process's attempts of a job (shell: dpu status --attempts)."""
        job = self._jobs(jobid)[0]
        for line in history_lines(self._session_for(job), job):
            self._say(line)

    def report(self, jobid: int) -> Dict[str, Any]:
        """Print how a job's processes used the time and memory they asked for; the figures as a
        dict (shell: dpu report JOBID [--json])."""
        job = self._jobs(jobid)[0]
        data = self._session_for(job).report(job)
        for line in report_lines(data):
            self._say(line)
        return data

    # -- jobs -------------------------------------------------------------------------------
    def get_jobids(self, everywhere: bool = False) -> List[int]:
        """Identifiers of your jobs on this DPU (everywhere=True: also those the DPU's job index
        holds from your other machines' stores; an id is unique within one store)."""
        ids = [j.id for j in self._store.jobs(dpu=self.dpu_name)]
        if everywhere:
            ids = sorted(set(ids) | set(own_job_ids(self._session.transport, self._session.dpu)))
        return ids

    def _jobs(self, jobids: JobIds, recent: bool = True) -> List[Job]:
        if jobids is None and not recent:
            return self._store.jobs(dpu=self.dpu_name)
        if jobids is None:
            since = time.time() - RECENT
            return [j for j in self._store.jobs(dpu=self.dpu_name)
                    if j.finished is None or j.finished >= since or j.created >= self._started]
        ids = [jobids] if isinstance(jobids, int) else list(jobids)
        for jid in ids:
            if isinstance(jid, bool) or not isinstance(jid, int):
                raise JobNotFound(f"job identifiers are integers, got {jid!r}")
        jobs = self._store.jobs(ids=ids)
        missing = sorted(set(ids) - {j.id for j in jobs})
        if missing:
            raise JobNotFound(f"no job with identifier {', '.join(map(str, missing))}; "
                              "dpu.get_jobids() (shell: dpu jobids) lists yours")
        return jobs

    def _session_for(self, job: Job) -> DPUSession:
        """The session of the job's DPU: one per DPU for the Processor's life (one connection)."""
        return self._session_named(job.dpu)

    def _session_named(self, name: str) -> DPUSession:
        if name == self.dpu_name:
            return self._session
        if name not in self._others:
            self._others[name] = DPUSession(get_dpu(name), self._store, self._session.user)
        return self._others[name]

    def _refresh(self, jobs: List[Job], say_unreachable: bool = False) -> List[JobView]:
        """Poll each DPU these jobs are on once; their views, as now known, in id order."""
        views: List[JobView] = []
        for dpu in sorted({j.dpu for j in jobs}):
            session = self._session_for(next(j for j in jobs if j.dpu == dpu))
            session.refresh()
            for line in session.retried:
                self._say(line)
            session.retried.clear()
            if say_unreachable and session.unreachable:
                self._say(f"{session.unreachable}; showing the last known states")
            views += session.views(self._store.jobs(ids=[j.id for j in jobs if j.dpu == dpu]))
        return sorted(views, key=lambda v: v.job.id)

    def get_status(self, jobids: JobIds = None) -> List[JobView]:
        """One line per job: status and N/E/A/S/U counters. No argument: active and recent jobs."""
        jobs = self._jobs(jobids)
        views = self._refresh(jobs, say_unreachable=True)
        if not views:
            self._say("No active or recent jobs on DPU " + self.dpu_name)
        for view in views:
            self._say(f"Jobid {view.job.id} has status {view.status} N/E/A/S/U {view.counts.line()}")
            if view.job.phase == Phase.NOT_SUBMITTED or (view.job.phase == Phase.RECORDED and view.job.error
                                                     and not view.job.error.startswith("submitting:")):
                self._say(f"  {view.job.error}")  # why not, or why it is still being settled
            for reason, count in self._session_for(view.job).reasons(view.job).items():
                self._say(f"  {count} process(es): {reason}")
            for line in after_lines(view.job) + retry_lines(self._store, view.job):
                self._say(line)
        return StatusViews(views)

    def poll(self, jobids: JobIds) -> List[JobView]:
        """Poll the jobs' DPUs once; their views, printing nothing."""
        return self._refresh(self._jobs(jobids))

    def wait(self, jobids: JobIds = None, timeout: Optional[float] = None,
             interval: float = 1.0) -> List[JobView]:
        """Block until the jobs are FINISHED (or the timeout passes); returns their views."""
        jobs = self._jobs(jobids)
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            views = self._refresh(jobs)
            if all(v.status in STATUS_TERMINAL for v in views):
                return views
            if end is not None and time.monotonic() >= end:
                left = [str(v.job.id) for v in views if v.status not in STATUS_TERMINAL]
                self._say(f"Timed out after {timeout:g} s; job(s) {', '.join(left)} not finished yet")
                return views
            time.sleep(interval)

    def get_logs(self, jobids: JobIds = None, recent: bool = False, echo: bool = True) -> List[str]:
        """The log lines of the jobs, also printed (echo=False: not). No argument: every job of
        yours on this DPU (recent=True: only active jobs and those ended in the last 24 h)."""
        jobs = self._jobs(jobids, recent)
        self._refresh(jobs)
        lines = [line for job in jobs for line in job_logs(self._session_for(job), job)]
        for line in lines if echo else []:
            self._say.raw(printable(line, keep="\t"))  # a task's escape sequences shown, not obeyed
        return LogLines(lines)

    def get_job_result(self, jobid: int, echo: bool = True) -> List[Any]:
        """The main objects a job created, if its results were committed (option C=1)."""
        say = self._say if echo else quiet
        job = self._jobs(jobid)[0]
        session = self._session_for(job)
        session.refresh()
        results = session.results(job)
        committed = [r for r in results.values() if r.get("committed")]
        if not results:
            say(f"Job {jobid} has no results yet (status: {session.views([job])[0].status})")
            return []
        if not committed:
            say(f"Results of job {jobid} were not committed; run it again with C=1 "
                "(commit=True) to keep them")
            return []
        objects = [obj for idx in sorted(results) for obj in results[idx].get("objects", [])]
        say(f"Job {jobid}: {len(objects)} committed object(s)")
        return objects

    def cancel_job(self, jobid: int, force: bool = False) -> None:
        """Cancel a job's queued processes (force=True also kills running ones). A finished job,
        or one partly running, gets a line saying so and what to do; no exception, so a loop
        over get_jobids() goes through every job."""
        self.cancel(jobid, force)

    def cancel(self, jobid: int, force: bool = False) -> Cancelled:
        """cancel_job, returning what was done (the command line's exit code comes from it)."""
        job = self._jobs(jobid)[0]
        outcome = self._session_for(job).cancel(job, force)
        self._say(outcome.line)
        return outcome

    def cleanup(self, older_than_days: float = 7.0) -> List[str]:
        """Remove the current DPU's code bundles no active job uses and none used lately."""
        return self._session.cleanup(older_than_days)


__all__ = ["Processor"]
