"""Target processing: ``dpu.run_target("HotPixels", ...)`` runs a task and, before it, the tasks
it requires (``Task(requires=...)``), as jobs joined by ``after`` edges, submitted in one go.

A process is skipped when an earlier job on this DPU ran the same task with the same options
(``commit`` aside) from the same code bundle (its tree hash, bundle.py), ended N and committed
its result: its result.json says so; one still queued or running in such a job (none of whose
processes failed) is waited for instead. Skipped processes are in no new job, so the new jobs'
N/E/A/S/U count only what runs; the jobs record which earlier jobs they reuse ("uses"). Each
process of a dependent gets the work folders of the prerequisite processes it needs (those
whose options agree with its own on the options both declare) as ``ctx.inputs[task]``.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from . import bundle as bundles
from .catalog import Catalog
from .config import dpu_home
from .errors import DPUError, OptionError
from .files import held_lock
from .plan import Plan, make_plan
from .processes import Processes
from .session import DPUSession
from .states import Phase, ProcState
from .store import Job
from .transport.owned import OwnedFile
from .worker import RESULT, own_options, process_dir

log = logging.getLogger(__name__)

LOCK_WAIT = 600.0              # seconds a run_target waits for another one to submit
MAX_READ = 1 << 28             # bytes of an earlier job's job.json or result.json
Where = Tuple[str, int]        # (job folder, process index) of a process's result
Say = Callable[[str], None]


@dataclass
class Step:
    """One task of a target run: every process it would have, and which of them must run."""

    task: str
    plan: Plan
    every: Processes                                       # all its processes, done or not
    keys: List[str]                                        # per process: its options as a key
    done: Dict[int, Tuple[int, Where]] = field(default_factory=dict)   # index -> (job, where)
    pending: Set[int] = field(default_factory=set)  # of done: still under way in an earlier job
    missing: List[int] = field(default_factory=list)
    position: Dict[int, int] = field(default_factory=dict)          # missing index -> in new job
    needs: List[Dict[str, List[int]]] = field(default_factory=list)  # per missing: required indices
    job_id: Optional[int] = None
    jobdir: str = ""

    def where(self, index: int) -> Where:
        """Where process `index`'s result is (or will be, once its new job runs)."""
        if index in self.done:
            return self.done[index][1]
        return self.jobdir, self.position[index]


def order(catalog: Catalog, target: str) -> List[str]:
    """The target and every task it requires, each after what it requires."""
    if not isinstance(target, str) or ">" in target:
        raise OptionError(f"run_target takes one task name (its requires= say what runs first), "
                          f"not {target!r}; a chain runs with dpu.run")
    name = catalog.sequence(target).identifier   # unknown: SequenceError with close matches
    out: List[str] = []

    def visit(task: str) -> None:
        for req in catalog.tasks[task].requires:   # no cycles: Catalog checked them at load
            visit(req)
        if task not in out:
            out.append(task)
    visit(name)
    return out


def key(options: Mapping[str, Any]) -> str:
    """A process's options as a comparable text; commit is how it was kept, not what it made."""
    return json.dumps({k: v for k, v in options.items() if k != "commit"}, sort_keys=True, default=str)


def plan_steps(session: DPUSession, catalog: Catalog, target: str,
               given: Mapping[str, Any]) -> List[Step]:
    """Each task's plan: the target's options (short or long names) given to every task that
    declares them, commit on (a target run keeps what it makes, so the next one can skip it)."""
    names = order(catalog, target)
    declared = {o.short for n in names for o in catalog.tasks[n].options} | \
        {o.long for n in names for o in catalog.tasks[n].options}
    unknown = [k for k in given if k not in declared]
    if unknown:
        raise OptionError(f"{target}: no task of this target ({', '.join(names)}) has option(s) "
                          f"{', '.join(unknown)}; dpu.show_sequence_options(TASK) (shell: dpu options "
                          "TASK) lists a task's options")
    longs: Dict[str, Any] = {}
    for name in names:
        for opt in catalog.tasks[name].options:
            for spelled in (opt.short, opt.long):
                if spelled in given:
                    longs[opt.long] = given[spelled]
    steps = []
    for name in names:
        mine = {o.long: longs[o.long] for o in catalog.tasks[name].options if o.long in longs}
        if any(o.long == "commit" for o in catalog.tasks[name].options):
            mine["commit"] = True
        plan = make_plan(catalog, session.dpu, name, mine)
        steps.append(Step(name, plan, plan.processes, [key(p) for p in plan.processes]))
    return steps


def find_done(session: DPUSession, step: Step, digest: str) -> None:
    """Fill step.done from earlier jobs of this task on this DPU with the same code and commit
    on: processes that ended N and committed (their result.json says so), else processes still
    queued or running in a job none of whose processes failed (step.pending: waited for). The
    earlier jobs' job.json gives each process's options, compared with this step's."""
    wanted = {k: i for i, k in enumerate(step.keys)}
    store = session.store
    usable: Dict[int, Tuple[Job, List[int], List[int]]] = {}   # job id -> (job, ended N, under way)
    for job in store.jobs(dpu=session.dpu.name):
        if job.sequence != step.task or job.bundle != digest or not job.options.get("commit") \
                or job.phase != Phase.SUBMITTED or not job.jobdir:
            continue
        procs = store.procs(job.id)
        ended = [p.idx for p in procs if p.state == ProcState.DONE and set(p.outcome) == {"N"}]
        failed = len(ended) < sum(p.state == ProcState.DONE for p in procs)
        open_ = [p.idx for p in procs if p.state != ProcState.DONE]
        going = [] if failed or job.finished is not None else open_
        if ended or going:
            usable[job.id] = (job, ended, going)
    if not usable:
        return
    uid = session.transport.account()[1]
    raw = _read_own(session, uid, [(job.jobdir, "job.json") for job, _, _ in usable.values()])
    ended_at: Dict[int, List[Tuple[Job, int]]] = {}   # step index -> its N-ended twins, newest first
    going_at: Dict[int, Tuple[Job, int]] = {}
    for jid in sorted(usable, reverse=True):
        job, ended, going = usable[jid]
        try:
            doc: Any = json.loads(raw.get(f"{job.jobdir}/job.json") or b"{}")
            for idx in ended + going if isinstance(doc, dict) and doc else []:
                at = wanted.get(key({**doc["options"], **own_options(doc["processes"], idx)}))
                if at is not None and idx in ended:
                    ended_at.setdefault(at, []).append((job, idx))
                elif at is not None:
                    going_at.setdefault(at, (job, idx))
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # not ours to trust: not reused
            log.warning("job %s: its job.json cannot be read (%s); its results are not reused", jid, exc)
    paths = {(job.id, idx): str(process_dir(Path(job.jobdir), idx) / RESULT)
             for twins in ended_at.values() for job, idx in twins}
    results = _read_own(session, uid, [(job.jobdir, paths[(job.id, idx)][len(job.jobdir) + 1:])
                                       for twins in ended_at.values() for job, idx in twins])
    for at, twins in ended_at.items():
        for job, idx in twins:
            try:
                committed = json.loads(results.get(paths[(job.id, idx)]) or b"{}").get("committed") is True
            except (ValueError, AttributeError):
                committed = False
            if committed:
                step.done[at] = (job.id, (job.jobdir, idx))
                break
    for at, (job, idx) in going_at.items():
        if at not in step.done:
            step.done[at] = (job.id, (job.jobdir, idx))
            step.pending.add(at)


def _read_own(session: DPUSession, uid: int, files: List[Tuple[str, str]]) -> Dict[str, Optional[bytes]]:
    """Files of earlier jobs, each only if its job folder and everything down to it is ours and
    no symlink: a folder someone else made where an earlier job was (its workdir moved or
    purged from a shared scratch) must not pass for that job's committed results."""
    if not files:
        return {}
    got = session.transport.read_owned([OwnedFile(base, rel, uid) for base, rel in files], MAX_READ)
    for path, why in got.refused.items():
        log.warning("%s is not reused: %s", path, why)
    return got.data


def matches(steps: Dict[str, Step], step: Step, catalog: Catalog) -> None:
    """step.needs: for each process to run, the processes of each required task it reads (those
    whose options agree with its own on every option both tasks declare); none is an error.
    The required processes are grouped by those values once, so this is linear in processes."""
    step.needs = []
    groups: Dict[Tuple[str, Tuple[str, ...]], Dict[str, List[int]]] = {}
    for index in step.missing:
        mine, need = step.every[index], {}
        for req in catalog.tasks[step.task].requires:
            common = tuple(sorted({o.long for o in catalog.tasks[req].options} & set(mine) - {"commit"}))
            if (req, common) not in groups:
                by: Dict[str, List[int]] = {}
                for j, opts in enumerate(steps[req].every):
                    by.setdefault(key({k: opts.get(k) for k in common}), []).append(j)
                groups[(req, common)] = by
            need[req] = groups[(req, common)].get(key({k: mine[k] for k in common}), [])
            if not need[req]:
                raise OptionError(f"{step.task} process {index} ({key(mine)}) finds no process of "
                                  f"{req} with the same option values; give options that select both")
        step.needs.append(need)


def inputs(steps: Dict[str, Step], step: Step) -> List[Dict[str, List[str]]]:
    """Per process to run: the work folders of the required processes it reads (job.json)."""
    out = []
    for need in step.needs:
        out.append({req: [str(process_dir(Path(d), i) / "work") for d, i in map(steps[req].where, js)]
                    for req, js in need.items()})
    return out


def edges(steps: Dict[str, Step], step: Step, scheduler: str) -> Optional[Dict[str, Any]]:
    """The after edges of a step's job: the new jobs whose processes it reads; 'each' when
    process k reads exactly process k of each of them (and the scheduler has it), else 'ok'."""
    used: Set[int] = set()
    aligned = scheduler != "pbs"
    for k, need in enumerate(step.needs):
        for req, js in need.items():
            fresh = [steps[req].where(j)[1] for j in js if j not in steps[req].done]
            if fresh:
                used.add(steps[req].job_id)  # type: ignore[arg-type]  # submitted before this step
                aligned = aligned and fresh == [k] and len(js) == 1
            going = {steps[req].done[j][0] for j in js if j in steps[req].pending}
            used |= going
            aligned = aligned and not going   # an earlier job's indices are not this one's
    if not used:
        return None
    aligned = aligned and all(len(s.missing) == len(step.missing) for s in steps.values() if s.job_id in used)
    return {"jobs": sorted(used), "mode": "each" if aligned else "ok"}


def run_target(session: DPUSession, catalog: Catalog, awepipe: Path, say: Say, target: str,
               force: bool = False, dry_run: bool = False,
               **given: Any) -> Dict[str, Optional[int]]:
    """Plan the target's steps, skip what is committed (force: nothing), submit the rest as
    jobs with after edges; each task's job id (None when nothing of it runs)."""
    args = ", ".join([repr(target)] + [f"{k}={v!r}" for k, v in given.items()] +
                     [f"{k}=True" for k, v in (("force", force), ("dry_run", dry_run)) if v])
    say(f"Calling: dpu.run_target({args})")
    if dry_run:
        return _run_target(session, catalog, awepipe, say, target, force, dry_run, given)
    with one_at_a_time(say):   # two at once would both plan, then both submit the same processes
        return _run_target(session, catalog, awepipe, say, target, force, dry_run, given)


@contextmanager
def one_at_a_time(say: Say, wait: float = LOCK_WAIT) -> Iterator[None]:
    """One target run plans and submits at a time per DPU_HOME (flock: the kernel releases it
    when a run dies); the next one then finds the first one's jobs under way and waits for them."""
    path = dpu_home() / "target.lock"
    with held_lock(path, wait,
                   lambda: say(f"Waiting for another run_target of this store to submit (lock {path})"),
                   lambda: DPUError(f"another run_target held {path} for more than {wait:g} s; nothing "
                                    "was submitted: run it again once that one has submitted")):
        yield


def _run_target(session: DPUSession, catalog: Catalog, awepipe: Path, say: Say, target: str,
                force: bool, dry_run: bool, given: Mapping[str, Any]) -> Dict[str, Optional[int]]:
    steps = plan_steps(session, catalog, target, given)
    by_name = {s.task: s for s in steps}
    digest = bundles.tree_hash(bundles.members(awepipe))
    if not force:
        session.refresh(force=True)   # what ended since the last poll counts as done
    for step in steps:
        if not force:
            find_done(session, step, digest)
        step.missing = [i for i in range(step.plan.nproc) if i not in step.done]
        step.position = {i: k for k, i in enumerate(step.missing)}
        matches(by_name, step, catalog)   # before anything is submitted: a mismatch submits nothing
        reused = sorted({jid for i, (jid, _) in step.done.items() if i not in step.pending})
        going = sorted({step.done[i][0] for i in step.pending})
        said = f" (job {', '.join(map(str, reused))})" if reused else ""
        said += f", {len(step.pending)} under way (job {', '.join(map(str, going))})" if going else ""
        say(f"{step.task}: {len(step.done) - len(step.pending)} of {step.plan.nproc} process(es) committed "
            f"earlier with these options and code{said}; {len(step.missing)} to run")
    if dry_run:
        return {s.task: None for s in steps}
    out: Dict[str, Optional[int]] = {}
    for step in steps:
        out[step.task] = None
        if step.missing:
            try:
                out[step.task] = submit(session, catalog, awepipe, by_name, step, target, say)
            except DPUError as exc:
                sent = ", ".join(f"{t} job {j}" for t, j in out.items() if j is not None)
                exc.args = (f"{step.task}: {exc}" + (f" (already submitted: {sent}; run_target again "
                            "once they have run: it skips what they commit)" if sent else ""),)
                raise
    if not any(out.values()):
        say(f"Nothing to run: every process of {target} and what it requires is committed or under way "
            "(force=True, shell: --force, redoes them)")
    return out


def submit(session: DPUSession, catalog: Catalog, awepipe: Path, steps: Dict[str, Step], step: Step,
           target: str, say: Say) -> int:
    """Submit a step's missing processes as one job after the new jobs it reads; its id."""
    after = edges(steps, step, session.dpu.scheduler)
    plan = step.plan
    plan.processes = Processes.of_list([step.every.own(i) for i in step.missing]).with_shared(
        step.every.shared)
    uses = sorted({jid for s in steps.values() for i, (jid, _) in s.done.items()
                   if (s.task in catalog.tasks[step.task].requires or s is step) and i not in s.pending})
    plan.dpu_options.update(after=after, inputs=inputs(steps, step), target=target, uses=uses)
    step.job_id = session.submit(plan, awepipe)
    step.jobdir = session.store.job(step.job_id).jobdir
    waits = f" after job {', '.join(map(str, after['jobs']))} ({after['mode']})" if after else ""
    say(f"Sending job with identifier {step.job_id} to DPU ({plan.nproc} process"
        f"{'es' if plan.nproc > 1 else ''} of {step.task}){waits}")
    return step.job_id


__all__ = ["Step", "edges", "find_done", "inputs", "key", "matches", "one_at_a_time", "order", "plan_steps",
           "run_target", "submit"]
