"""One DPU in use: its config, transport, scheduler and the user's store wired together.

This is the flow of DESIGN.md (plan -> bundle -> transport -> render -> scheduler -> store);
the Processor, the command line and the web page all go through it.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import bundle as bundles
from . import graph, journal, trial
from .config import DPUConfig, current_user, dpu_home, packaged
from .errors import CatalogError, ConfigError, DPUError, SubmitError, Unreachable
from .files import private_dir
from .index import write_card
from .plan import Plan
from .reconcile import fault, found_chunks, submitter_note
from .report import job_report
from .rerun import rerun
from .retries import apply_retries
from .retry_policy import resolve
from .schedulers import Scheduler, SubmitRequest, for_dpu
from .states import JobStatus, Phase, ProcState
from .status import poll_settings, refresh
from .store import Counts, Job, Proc, Store
from .transport import Transport, connect
from .transport.local import LocalTransport
from .usage import fill_in
from .worker import LOG, RESULT, process_dir, write_json

log = logging.getLogger(__name__)


def awepipe_path() -> Path:
    """The user's AWEPIPE checkout (env AWEPIPE), else the example pipeline."""
    if os.environ.get("AWEPIPE"):
        path = Path(os.environ["AWEPIPE"]).expanduser()
        if not path.is_dir():
            raise CatalogError(f"AWEPIPE={os.environ['AWEPIPE']} is not a directory; point it at "
                               "your pipeline checkout, or unset it to use the example pipeline")
        return path
    return packaged("examples") / "awepipe"


def open_store() -> Store:
    """The user's store in DPU_HOME (made 0700), its journal as configured or detected."""
    return Store(private_dir(dpu_home()) / "jobs.sqlite", journal=journal.setting())


def store_id(store: Store) -> str:
    """A short id of this store, so two stores never share a job folder on a DPU."""
    value = store.meta_get("store_id")
    if value is None:
        value = uuid.uuid4().hex[:8]
        store.meta_set("store_id", value)
    return value


def submit_request(dpu: DPUConfig, plan: Plan, job_id: int, user: str, jobdir: str,
                   pythonpath: str, store: str = "",
                   accepted: Optional[Callable[[List[str]], None]] = None) -> SubmitRequest:
    """The scheduler's request for a plan: the one place a plan becomes a SubmitRequest."""
    version = dpu.awe_versions.get(plan.aweversion, {}) if plan.aweversion else {}
    return SubmitRequest(job_id=job_id, user=user, dpu=dpu.name, sequence=plan.sequence,
                         jobdir=jobdir, nproc=plan.nproc, time_limit=plan.time_limit, mem=plan.mem,
                         partition=plan.partition, python=dpu.python_for_jobs(),
                         pythonpath=pythonpath, setup=list(version.get("setup", [])),
                         env=dict(dpu.env), store=store, accepted=accepted)


def render_scripts(dpu: DPUConfig, plan: Plan) -> Dict[str, str]:
    """The job scripts a submission of `plan` would render, with placeholder folders; opens no
    connection (``dpu bulk`` checks every entry with it before submitting any)."""
    req = submit_request(dpu, plan, 0, current_user(), f"{trial.workdir(dpu)}/jobs/0.check",
                         "BUNDLE/worker:BUNDLE/code")
    return for_dpu(dpu, LocalTransport()).scripts(req)


@dataclass
class Cancelled:
    """What a cancel did, as the line the user sees; `running` processes were left running."""

    line: str
    running: int = 0
    unsettled: bool = False


@dataclass
class JobView:
    """A job as the user sees it: status word and counters."""

    job: Job
    counts: Counts

    def __repr__(self) -> str:  # what the prompt echoes: the seed's line, not the whole record
        return f"<Jobid {self.job.id} {self.status} N/E/A/S/U {self.counts.line()}>"

    @property
    def status(self) -> JobStatus:
        """NOT SUBMITTED, SUBMITTING, QUEUED, RUNNING or FINISHED."""
        if self.job.phase == Phase.NOT_SUBMITTED:
            return JobStatus.NOT_SUBMITTED
        if self.job.phase == Phase.RECORDED:
            return JobStatus.SUBMITTING
        if self.counts.done == self.job.nproc:
            return JobStatus.FINISHED
        if self.counts.running or self.counts.done:
            return JobStatus.RUNNING
        return JobStatus.QUEUED

    @property
    def ok(self) -> bool:
        """True when the job finished and every task of every process ended N."""
        return (self.status == JobStatus.FINISHED
                and self.counts.letters[0] == self.job.nproc * self.job.ntasks)


class DPUSession:
    """One user's work on one DPU: submitting, refreshing and reading the jobs' files."""

    def __init__(self, dpu: DPUConfig, store: Store, user: Optional[str] = None,
                 transport: Optional[Transport] = None, retries: bool = True) -> None:
        self.dpu = dpu
        self.store = store
        self.retries = retries  # apply the jobs' retry policies after each poll (retries.py)
        self.retried: List[str] = []  # what they did, for the caller to show
        self.user = user or current_user()
        self._transport: Optional[Transport] = transport   # None: connect when first needed
        self._scheduler: Optional[Scheduler] = None
        self.unreachable = ""  # why the last poll could not reach the DPU, if it could not
        # A run of many submits (dpu bulk) ships the code as it was at the first one: its bundle
        # is built and sent once, not hashed again per entry.
        self.freeze_code = False
        self._built: Dict[Optional[Path], bundles.Bundle] = {}     # code folder -> its bundle
        self._shipped: Dict[Tuple[str, str], str] = {}     # (digest, bundles folder) -> unpacked
        # Workdirs found ours: once they are, only we and root can change that (folders.py).
        self._owned: Set[str] = set()

    @property
    def transport(self) -> Transport:
        """The connection to the DPU, opened when first needed."""
        if self._transport is None:
            self._transport = connect(self.dpu)
        return self._transport

    @property
    def scheduler(self) -> Scheduler:
        """The DPU's scheduler, made when first needed."""
        if self._scheduler is None:
            self._scheduler = for_dpu(self.dpu, self.transport)
        return self._scheduler

    def close(self) -> None:
        """Close the scheduler and the connection, if they were opened."""
        if self._scheduler is not None:
            self._scheduler.close()
        if self._transport is not None:
            self._transport.close()

    def workdir(self) -> str:
        """The DPU's working folder as an absolute path on its target."""
        return self.transport.expand(self.dpu.target_workdir())

    # -- submit -----------------------------------------------------------------------------
    def submit(self, plan: Plan, awepipe: Path,
               recorded: Optional[Callable[[int], None]] = None) -> int:
        """Record, ship, render, submit; `recorded` is told the job id as soon as it exists.

        The record (with its tag and job folder) is written before the scheduler is called and
        the native ids as each chunk is accepted, so a submitter killed at any point leaves a
        job the next poll can settle (reconcile.py): adopted if the scheduler knows its tag,
        not submitted otherwise. A job the scheduler refused is recorded as 'not submitted'.
        """
        version = self.dpu.awe_versions.get(plan.aweversion, {}) if plan.aweversion else {}
        if not plan.send_code and not version.get("path"):
            raise DPUError(f"send_code=False runs the code installed on DPU {self.dpu.name!r}, but "
                           f"its config names no path for version {plan.aweversion or '(none)'}; "
                           "add awe_versions: {NAME: {path: ...}} or ship your code (send_code=True; "
                           "shell: leave out --no-send-code)")
        code = awepipe if plan.send_code else None
        bundle = self._built.get(code) if self.freeze_code else None
        if bundle is None:
            bundle = bundles.build(code, private_dir(dpu_home() / "bundles"))
            if self.freeze_code:
                self._built[code] = bundle
        sid = store_id(self.store)
        waits, after = graph.for_submit(self, plan.dpu_options.get("after"), plan.nproc, plan.dpu_options)
        # Processes per array job; the local runner takes a whole job at once (one "chunk").
        chunk = plan.nproc if self.dpu.scheduler == "local" else self.dpu.max_array_size
        resolved = {**plan.dpu_options, "time_limit": plan.time_limit, "mem": plan.mem,
                    "partition": plan.partition, "chunk": chunk, "store": sid,
                    "retries": resolve(self.dpu.retries, plan.dpu_options.get("retries"))}
        job_id = self.store.record(self.dpu.name, self.user, plan.sequence, plan.options,
                                   resolved, plan.nproc, len(plan.tasks))
        self.store.note(job_id, submitter_note())
        calling = False  # True from the moment the scheduler may have queued something
        try:
            if recorded is not None:
                recorded(job_id)
            workdir = self.workdir()
            # Job scripts and code run from there: nobody else may be able to change them.
            if workdir not in self._owned:
                self.transport.own_workdir(workdir, ("jobs", "bundles"))
                self._owned.add(workdir)
            jobdir = f"{workdir}/jobs/{job_id}.{sid}"
            self.store.set_jobdir(job_id, jobdir, bundle.digest)
            fault("record")
            unpacked = self._ship(bundle, f"{workdir}/bundles")
            paths = [f"{unpacked}/worker"]
            # {examples}: the example pipeline installed with dpu_slurm (the local DPU's "master")
            installed = str(version.get("path", "")).replace("{examples}", str(packaged("examples")))
            paths.append(f"{unpacked}/code" if plan.send_code else installed)
            # What a rerun resubmits with (rerun.py): the same code and setup as this attempt.
            self.store.set_options(job_id, {"pythonpath": ":".join(paths),
                                            "setup": list(version.get("setup", []))})
            job_json = {"job_id": job_id, "user": self.user, "dpu": self.dpu.name,
                        "sequence": plan.sequence, "tasks": plan.tasks, "options": plan.options,
                        "processes": plan.overrides(), "created": time.time(), **waits}
            self.transport.write_files({f"{jobdir}/job.json": json.dumps(job_json).encode()})
            fault("shipped")

            def accepted(native_ids: List[str]) -> None:
                fault("accepted")   # the scheduler took a chunk; the store does not know yet
                self.store.accepted(job_id, native_ids)
                fault("chunk")      # this chunk's id is stored; later chunks are not submitted

            req = submit_request(self.dpu, plan, job_id, self.user, jobdir, ":".join(paths), sid,
                                 accepted)
            req.after = after
            scheduler = self.scheduler
            calling = True
            native = scheduler.submit(req)
        except SubmitError as exc:  # refused: nothing of it stays queued (submit_chunks)
            self.store.not_submitted(job_id, str(exc))
            raise SubmitError(f"job {job_id} was not submitted: {exc}", exc.transient) from None
        except BaseException as exc:
            why = str(exc) if isinstance(exc, DPUError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
            if not calling or isinstance(exc, ConfigError):  # a config error: nothing was sent
                self.store.not_submitted(job_id, why)
            else:  # the scheduler may hold some of it: what is known stays, the next poll settles it
                self.store.note(job_id, f"submission interrupted ({why}); the next poll adopts what "
                                        "the scheduler holds under its tag or marks it not submitted")
                log.warning("job %s: submission interrupted (%s); it is settled at the next poll",
                            job_id, why)
            raise
        self.store.submitted(job_id, native)
        fault("stored")
        # The queue page's view of the job (every user's, see index.py); never fails the submit.
        write_card(self.transport, self.dpu, self.store.job(job_id), store_id(self.store))
        return job_id

    def _ship(self, bundle: bundles.Bundle, root: str) -> str:
        """The bundle unpacked on the target (sent once per session when the code is frozen)."""
        key = (bundle.digest, root)
        if not self.freeze_code or key not in self._shipped:
            self._shipped[key] = self.transport.ensure_bundle(bundle, root)
        return self._shipped[key]

    # -- status ---------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Poll the DPU; when it cannot be reached, keep the last known states and say so."""
        active = self.store.jobs(dpu=self.dpu.name, active=True)
        settling = [j.id for j in active if j.phase == Phase.RECORDED]
        try:
            polled = refresh(self.store, self.scheduler, self.dpu, force=force)
        except Unreachable as exc:
            self.unreachable = str(exc)
            return False
        self.unreachable = ""
        graph.settle(self, [j.id for j in active])  # dependents of a failed prerequisite end S
        for job in self.store.jobs(ids=settling) if settling and polled else []:
            if job.phase == Phase.SUBMITTED:  # adopted: its submitter died before writing the card
                write_card(self.transport, self.dpu, job, store_id(self.store))
        if self.retries:  # also when this poll was skipped: another one may have ended a job
            self.retries = False   # a retry's own refreshes do not retry again
            try:
                self.retried += apply_retries(self)
            finally:
                self.retries = True
        return polled

    def views(self, jobs: Sequence[Job]) -> List[JobView]:
        """The jobs with their process counters."""
        counts = self.store.counts([j.id for j in jobs])
        return [JobView(j, counts[j.id]) for j in jobs]

    def reasons(self, job: Job) -> Dict[str, int]:
        """Distinct reasons of processes that did not end N, with how many share each."""
        return self.store.reason_counts(job.id)  # one GROUP BY, not a row per process

    def rerun(self, job: Job, only: str = "EAU", time_factor: Optional[float] = None,
              mem_factor: Optional[float] = None, auto: bool = False) -> Tuple[int, List[int]]:
        """Resubmit the failed processes of a finished job (rerun.py): (submission, indices)."""
        return rerun(self, job, only, time_factor, mem_factor, auto)

    def report(self, job: Job) -> Dict[str, Any]:
        """A job's usage report (report.py), after asking the accounting for missing figures."""
        self.refresh()
        if self.store.job(job.id).finished is not None:   # the figures are final only then
            fill_in(self.store, self.scheduler, job)
        return job_report(self.store, self.store.job(job.id))

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self, job: Job, force: bool = False) -> Cancelled:
        """Cancel what can be cancelled; never raises for a job that is over or partly running.

        Finished or never submitted: nothing to do, said so. Partly running without force: the
        queued processes are cancelled where the scheduler can single them out (SLURM, local),
        and the line says how to kill the rest. A job still being submitted: what its tag finds.
        """
        if job.phase == Phase.RECORDED:
            self.refresh(force=True)  # settles it when its submitter is gone and the grace passed
            job = self.store.job(job.id)
        if job.phase == Phase.RECORDED:
            return self._cancel_recorded(job, force)
        if job.phase == Phase.NOT_SUBMITTED:
            return Cancelled(f"Job {job.id} was never submitted ({job.error}); nothing to cancel")
        if job.finished is None:
            self.refresh(force=True)
            job = self.store.job(job.id)
        if job.finished is not None:
            view = self.views([job])[0]
            return Cancelled(f"Job {job.id} is finished (status {view.status} N/E/A/S/U "
                             f"{view.counts.line()}); nothing to cancel")
        procs = self.store.procs(job.id, open_only=True)
        running = sum(p.state == ProcState.RUNNING for p in procs)
        queued = len(procs) - running
        target = replace(job, native_ids=[n for n in job.native_ids if n])
        kill = (f"dpu.cancel_job({job.id}, force=True) (shell: dpu cancel {job.id} --force) kills "
                "them (they end as A)")
        if running and not force:
            if not queued:
                return Cancelled(f"Job {job.id} has {running} running process(es) and none queued; "
                                 f"nothing cancelled. {kill}", running)
            waiting = [p.idx for p in procs if p.state != ProcState.RUNNING]
            if not self.scheduler.cancel_queued(target, waiting):
                return Cancelled(f"Job {job.id} has {running} running and {queued} queued process(es); "
                                 f"{self.dpu.scheduler} cancels an array only whole, so nothing was "
                                 f"cancelled. {kill}", running)
            self.store.cancelled(job.id)
            self.refresh(force=True)
            return Cancelled(f"Cancelled the {queued} queued process(es) of job {job.id}; {running} "
                             f"running process(es) go on: {kill}", running)
        self.store.cancelled(job.id)
        self.scheduler.cancel(target, force)
        self.refresh(force=True)
        view = self.views(self.store.jobs(ids=[job.id]))[0]
        return Cancelled(f"Cancelled job {job.id}: status {view.status} N/E/A/S/U {view.counts.line()}")

    def _cancel_recorded(self, job: Job, force: bool) -> Cancelled:
        """A job whose submission is not settled yet: cancel the chunks its tag finds."""
        natives = [n for n in found_chunks(job, self.scheduler.names, []).values() if n]
        _, _, grace = poll_settings(self.dpu)
        if not natives:
            return Cancelled(f"Job {job.id} is still being submitted and nothing on DPU {self.dpu.name} "
                             f"carries its tag yet; nothing cancelled. Its submission is settled within "
                             f"{grace:g} s (poll.grace) of its record: cancel it again then", unsettled=True)
        self.store.cancelled(job.id)
        self.scheduler.cancel(replace(job, native_ids=natives), force)
        self.refresh(force=True)
        return Cancelled(f"Job {job.id} was still being submitted; cancelled what carries its tag "
                         f"({' '.join(natives)})" + ("" if force else " (queued processes only)"))

    # -- housekeeping ---------------------------------------------------------------------
    def cleanup(self, older_than_days: float = 7.0) -> List[str]:
        """Remove code bundles on the DPU that no active job uses and none used lately."""
        self.refresh()
        keep = {j.bundle for j in self.store.jobs(dpu=self.dpu.name, active=True) if j.bundle}
        return self.transport.remove_bundles(f"{self.workdir()}/bundles", keep,
                                             older_than_days * 86400)

    # -- logs and results -----------------------------------------------------------------
    def read_process_files(self, job: Job, name: str,
                           procs: Optional[List[Proc]] = None) -> Dict[int, Optional[bytes]]:
        """The file `name` of each process (None where it is missing)."""
        indices = [p.idx for p in (procs if procs is not None else self.store.procs(job.id))]
        paths = {i: str(process_dir(job.jobdir, i) / name) for i in indices}  # type: ignore[arg-type]
        raw = self.transport.read_files(list(paths.values())) if job.jobdir else {}
        return {i: raw.get(p) for i, p in paths.items()}

    def logs(self, job: Job) -> Dict[int, List[str]]:
        """Each process's log lines."""
        return {i: (data.decode("utf-8", "replace").splitlines() if data else [])
                for i, data in self.read_process_files(job, LOG).items()}

    def results(self, job: Job) -> Dict[int, Any]:
        """Each process's decoded result, for the processes that wrote one."""
        return {i: json.loads(data) for i, data in self.read_process_files(job, RESULT).items() if data}


__all__ = ["Cancelled", "DPUSession", "JobView", "awepipe_path", "open_store", "render_scripts",
           "submit_request", "write_json"]
