"""``dpu="auto"``: which configured DPU is expected to start a run first, and why.

A DPU is a candidate when the run's plan fits it (plan.py: its ``dpu_aweversion`` is installed
there and a partition takes the time and memory). Among the candidates the one with the
earliest expected start wins: SLURM answers ``sbatch --test-only`` with "to start at ..."; the
other schedulers (or a SLURM that does not answer) are judged by the backlog per slot of this
user's queued and running processes there. Ties go to the DPU listed first (sorted names).
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .catalog import Catalog
from .config import DPUConfig
from .errors import DPUError, Unreachable
from .manifest import Entry
from .plan import Plan, make_plan
from .schedulers.base import minutes
from .session import DPUSession
from .store import Store

log = logging.getLogger(__name__)

AUTO = "auto"
START_AT = re.compile(r"to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
TEST_ONLY_TIMEOUT = 60.0


@dataclass
class Estimate:
    """One DPU's answer: the seconds until the run would start (inf: not a candidate), and why."""

    dpu: str
    wait: float
    why: str
    plan: Optional[Plan] = None


@dataclass
class Choice:
    """The chosen DPU, its plan, and every DPU's estimate (best first)."""

    dpu: DPUConfig
    plan: Plan
    estimates: List[Estimate]

    def lines(self) -> List[str]:
        """What the prompt prints: the choice and the reason for each other DPU."""
        best = self.estimates[0]
        out = [f"DPU auto: chose {best.dpu} ({best.why})"]
        out += [f"DPU auto:   not {e.dpu} ({e.why})" for e in self.estimates[1:]]
        return out


def parse_test_only(text: str) -> Optional[float]:
    """The start time (epoch seconds) in ``sbatch --test-only`` output, or None.
    SLURM prints the controller's local time without a zone; read as this machine's."""
    match = START_AT.search(text)
    if match is None:
        return None
    try:
        return time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def test_only_argv(dpu: DPUConfig, plan: Plan, sbatch: str, clusters: Sequence[str]) -> List[str]:
    """``sbatch --test-only`` of an array like the run's (a one-word --wrap: nothing runs)."""
    argv = [sbatch, *clusters, "--test-only", f"--time={minutes(plan.time_limit)}", f"--mem={plan.mem}M",
            f"--array=0-{max(1, plan.nproc) - 1}"]
    argv += [f"--partition={plan.partition}"] if plan.partition else []
    argv += [f"--account={dpu.account}"] if dpu.account else []
    argv += [f"--qos={dpu.qos}"] if dpu.qos else []
    return [*argv, "--wrap=true"]


def slurm_estimate(session: DPUSession, plan: Plan) -> Optional[Tuple[float, str]]:
    """(seconds to start, why) from ``sbatch --test-only``; None when SLURM gives no answer."""
    sched = session.scheduler
    clusters = sched.clusters() if hasattr(sched, "clusters") else []
    res = session.transport.run(test_only_argv(session.dpu, plan, sched.cmd("sbatch"), clusters),
                                timeout=TEST_ONLY_TIMEOUT)
    start = parse_test_only(res.stderr + "\n" + res.stdout)
    if start is None:
        log.info("sbatch --test-only on %s gave no start time: %s", session.dpu.name,
                 (res.stderr or res.stdout).strip()[:200])
        return None
    wait = max(0.0, start - time.time())
    when = time.strftime("%H:%M:%S", time.localtime(start))
    return wait, f"sbatch --test-only: starts at {when}" + (", now" if wait < 1 else "")


def slots_of(dpu: DPUConfig) -> int:
    """Processes the DPU runs at once as far as we know: ``slots:``, else the cores of a local DPU, else 1."""
    if dpu.slots:
        return dpu.slots
    return (os.cpu_count() or 1) if dpu.scheduler == "local" and not dpu.is_remote else 1


def backlog_estimate(store: Store, dpu: DPUConfig, plan: Plan, extra: int = 0) -> Tuple[float, str]:
    """(seconds to start, why) from this user's processes ahead of the run, per slot;
    `extra`: processes chosen for this DPU but not submitted yet (a bulk run's earlier entries)."""
    jobs = store.jobs(dpu=dpu.name, active=True)
    counts = store.counts([j.id for j in jobs]).values()
    queued = sum(c.queued for c in counts) + extra
    running = sum(c.running for c in counts)
    slots = slots_of(dpu)
    ahead = queued + running - slots + 1          # processes that must end before ours starts
    typical = float(dpu.defaults.get("time", 600))
    wait = 0.0 if ahead <= 0 else math.ceil(ahead / slots) * typical
    text = f"backlog: {queued} queued + {running} running on {slots} slot{'s' if slots != 1 else ''}"
    return wait, text + (", starts now" if wait == 0 else f", starts in about {wait:.0f} s")


def estimate(session: DPUSession, plan: Plan, extra: int = 0) -> Estimate:
    """One DPU's expected start for the plan (polls it first, on its own back-off)."""
    name = session.dpu.name
    session.refresh()
    if session.unreachable:
        return Estimate(name, math.inf, f"unreachable: {session.unreachable}")
    try:
        if session.dpu.is_remote:   # no job of ours there to poll: is its host up at all?
            session.transport.account()
    except Unreachable as exc:
        return Estimate(name, math.inf, f"unreachable: {exc}")
    if session.dpu.scheduler == "slurm" and session.dpu.submit == "cli":
        try:
            got = slurm_estimate(session, plan)
        except Unreachable as exc:
            return Estimate(name, math.inf, f"unreachable: {exc}")
        if got is not None:
            return Estimate(name, got[0], got[1], plan)
    wait, why = backlog_estimate(session.store, session.dpu, plan, extra)
    return Estimate(name, wait, why, plan)


def choose(dpus: Mapping[str, DPUConfig], plan_for: Callable[[DPUConfig], Plan],
           session_for: Callable[[str], DPUSession],
           extra: Optional[Dict[str, int]] = None) -> Choice:
    """The DPU expected to start the run first; DPUError listing every DPU's reason when none fits.
    `plan_for` raises (OptionError) for a DPU that lacks the version or a fitting partition."""
    estimates: List[Estimate] = []
    for name in sorted(dpus):
        try:
            plan = plan_for(dpus[name])
        except DPUError as exc:
            estimates.append(Estimate(name, math.inf, f"does not fit: {exc}"))
            continue
        try:
            estimates.append(estimate(session_for(name), plan, (extra or {}).get(name, 0)))
        except DPUError as exc:
            estimates.append(Estimate(name, math.inf, f"cannot ask it: {exc}"))
    estimates.sort(key=lambda e: e.wait)   # stable: ties keep the sorted names' order
    if not estimates or estimates[0].plan is None or not math.isfinite(estimates[0].wait):
        reasons = "; ".join(f"{e.dpu}: {e.why}" for e in estimates) or "no DPU is configured"
        raise DPUError(f"dpu auto: no DPU can take this run ({reasons}); fix the run's "
                       "dpu_aweversion/dpu_time/dpu_mem or name a DPU")
    best = estimates[0]
    assert best.plan is not None
    return Choice(dpus[best.dpu], best.plan, estimates)


def where(asked: Optional[str], current: DPUSession, session_for: Callable[[str], DPUSession],
          plan_for: Callable[[DPUConfig], Plan], say: Callable[[str], None]) -> Tuple[DPUSession, Plan]:
    """The session and plan of a run: the current DPU (`asked` None), a named one, or with
    ``auto`` the one expected to start first (its reasons said through `say`)."""
    if not asked or asked == current.dpu.name:
        return current, plan_for(current.dpu)
    if asked != AUTO:
        session = session_for(asked)
        return session, plan_for(session.dpu)
    from .config import discover  # the configured DPUs as they are now
    choice = choose(discover()[0], plan_for, session_for)
    for line in choice.lines():
        say(line)
    return session_for(choice.dpu.name), choice.plan


def route_entries(entries: Sequence[Entry], catalog: Catalog, store: Store, say: IO[str]) -> None:
    """A bulk manifest's ``dpu: auto`` entries get their DPU (each chosen entry adds its processes
    to that DPU's backlog for the next); an entry submitted by an earlier run keeps its job's DPU;
    one no DPU can take becomes bad with every DPU's reason."""
    auto = [e for e in entries if e.state != "bad" and e.dpu == AUTO]
    if not auto:
        return
    from .config import discover
    dpus = discover()[0]
    previous = store.bulk_entries()
    sessions: Dict[str, DPUSession] = {}
    extra: Dict[str, int] = {}

    def session_for(name: str) -> DPUSession:
        if name not in sessions:
            sessions[name] = DPUSession(dpus[name], store)
        return sessions[name]

    try:
        for e in auto:
            job_id = previous.get(e.key, ("", None, 0.0))[1]
            done = store.jobs(ids=[job_id]) if job_id is not None else []
            if done:
                e.dpu = done[0].dpu
                continue
            def plan_for(cfg: DPUConfig, e: Entry = e) -> Plan:
                return make_plan(catalog, cfg, e.sequence, e.options, **e.dpu_options)

            try:
                choice = choose(dpus, plan_for, session_for, extra)
            except (DPUError, ValueError, TypeError) as exc:
                e.state, e.error = "bad", str(exc)
                continue
            e.dpu = choice.dpu.name
            extra[e.dpu] = extra.get(e.dpu, 0) + choice.plan.nproc
            print(f"{e.key}: {choice.lines()[0]}", file=say, flush=True)
    finally:
        for session in sessions.values():
            session.close()
