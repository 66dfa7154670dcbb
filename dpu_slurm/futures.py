"""Job handles for scripts and notebooks: ``job = dpu.submit(...)``, then ``job.wait()``,
``job.result()``, ``await job`` or ``dpu.as_completed(jobs)``; a notebook shows the job as a bar.

The handle prints nothing: it returns values and raises errors. Each status call polls the job's
DPU once, through the store's back-off (status.py), so many handles do not multiply the polls.
A poll runs in the caller's thread, also when awaited (the store's connection belongs to one
thread); between polls an awaiting task yields to the others.
"""
from __future__ import annotations

import asyncio
import html
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Generator, Iterable, Iterator, List, Optional

from .errors import DPUError
from .session import JobView
from .states import STATUS_TERMINAL, JobStatus

if TYPE_CHECKING:  # the Processor makes handles; the handle only calls it back
    from .processor import Processor

COLOURS = {"N": "#2e7d32", "E": "#c62828", "A": "#ef6c00", "S": "#9e9e9e", "U": "#6a1b9a"}
MEANING = {"N": "normal", "E": "error", "A": "aborted", "S": "skipped", "U": "unknown"}


class JobFailed(DPUError):
    """The job finished but not every task ended N, or it was never submitted."""

    exit_code = 1


class JobTimeout(DPUError):
    """The job did not finish within the time given; it goes on running."""

    exit_code = 3


class DPUJob:
    """A submitted job, as a future: ``status()``, ``wait()``, ``result()``, ``logs()``, and
    ``await job`` (its result) or ``await job.wait_async()`` in a notebook or asyncio code."""

    def __init__(self, processor: Processor, jobid: int) -> None:
        self.processor = processor   # whose store and DPU connections the handle uses
        self.id = jobid
        self.last: Optional[JobView] = None  # the view of the latest poll

    # -- blocking ---------------------------------------------------------------------------
    def status(self) -> JobView:
        """Poll the job's DPU once; the job's status word and N/E/A/S/U counters."""
        self.last = self.processor.poll(self.id)[0]
        return self.last

    def done(self) -> bool:
        """True once the job is FINISHED (or was never submitted)."""
        return self.status().status in STATUS_TERMINAL

    def wait(self, timeout: Optional[float] = None, interval: float = 1.0) -> JobView:
        """Block until the job is finished or `timeout` seconds passed; its last view either way."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.status()
            if view.status in STATUS_TERMINAL or (end is not None and time.monotonic() >= end):
                return view
            time.sleep(min(interval, max(0.0, end - time.monotonic())) if end is not None else interval)

    def result(self, timeout: Optional[float] = None, interval: float = 1.0) -> List[Any]:
        """Wait, then the committed result objects (run with C=1; [] when not committed).
        Raises JobTimeout when unfinished after `timeout`, JobFailed when a task did not end N."""
        return self._outcome(self.wait(timeout, interval), timeout)

    def logs(self) -> List[str]:
        """The log lines of every process so far (not printed)."""
        return self.processor.get_logs(self.id, echo=False)

    def cancel(self, force: bool = False) -> str:
        """Cancel the job's queued processes (force=True: running ones too); the line saying what
        was done."""
        return self.processor.cancel(self.id, force).line

    # -- asyncio ----------------------------------------------------------------------------
    async def wait_async(self, timeout: Optional[float] = None, interval: float = 1.0) -> JobView:
        """``wait`` for asyncio: other tasks run between the polls."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.status()
            if view.status in STATUS_TERMINAL or (end is not None and time.monotonic() >= end):
                return view
            await asyncio.sleep(min(interval, max(0.0, end - time.monotonic()))
                                if end is not None else interval)

    async def result_async(self, timeout: Optional[float] = None, interval: float = 1.0) -> List[Any]:
        """``result`` for asyncio; ``await job`` is this with no timeout."""
        return self._outcome(await self.wait_async(timeout, interval), timeout)

    def __await__(self) -> Generator[Any, None, List[Any]]:
        return self.result_async().__await__()

    # -- display ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        view = self.last
        return f"<DPUJob {self.id}" + (f" {view.status} N/E/A/S/U {view.counts.line()}>" if view else ">")

    def _repr_html_(self) -> str:
        """A notebook's view: polled at each display, N/E/A/S/U as a bar (all text escaped)."""
        try:
            view = self.status()
        except DPUError as exc:  # a display must not fail: the error, and the last view if any
            note = f'<div class="dpu-job">{html.escape(f"Jobid {self.id}: {exc}")}</div>'
            return note + (render_html(self.last, self.last.job.dpu) if self.last else "")
        return render_html(view, view.job.dpu)

    # -- helpers ----------------------------------------------------------------------------
    def _outcome(self, view: JobView, timeout: Optional[float]) -> List[Any]:
        if view.status not in STATUS_TERMINAL:
            raise JobTimeout(f"job {self.id} is {view.status} after {timeout:g} s "
                             f"(N/E/A/S/U {view.counts.line()}); it goes on: wait again, or "
                             f"job.cancel() (dpu.cancel_job({self.id}))")
        if view.status == JobStatus.NOT_SUBMITTED:
            raise JobFailed(f"job {self.id} was never submitted: {view.job.error}")
        if not view.ok:
            raise JobFailed(f"job {self.id} finished with N/E/A/S/U {view.counts.line()}; "
                            f"job.logs() (dpu.get_logs({self.id})) says why, and "
                            f"dpu.rerun({self.id}) runs the failed processes again")
        return self.processor.get_job_result(self.id, echo=False)


def render_html(view: JobView, dpu: str) -> str:
    """The job as one line of escaped text over a bar of its N/E/A/S/U counters."""
    total = max(1, view.job.nproc * view.job.ntasks)
    letters: Dict[str, int] = dict(zip("NEASU", view.counts.letters, strict=True))
    left = max(0, total - sum(letters.values()))
    parts = []
    for letter, count in [*letters.items(), ("", left)]:
        if not count:
            continue
        colour = COLOURS.get(letter, "#e0e0e0")
        what = f"{count} {MEANING[letter]} ({letter})" if letter else f"{count} not ended yet"
        parts.append(f'<div title="{html.escape(what)}" style="width:{100 * count / total:.2f}%;'
                     f'background:{colour}"></div>')
    head = (f"Jobid {view.job.id} {view.job.sequence} on DPU {dpu}: {view.status} "
            f"N/E/A/S/U {view.counts.line()}")
    counts = view.counts
    procs = "" if view.status in STATUS_TERMINAL else \
        f"<div>processes: {counts.running} running, {counts.queued} queued, {counts.done} ended</div>"
    note = procs + (f"<div>{html.escape(view.job.error)}</div>" if view.job.error else "")
    return (f'<div class="dpu-job"><div>{html.escape(head)}</div>'
            '<div style="display:flex;width:24em;height:0.9em;border:1px solid #888">'
            f'{"".join(parts)}</div>{note}</div>')


def as_completed(jobs: Iterable[DPUJob], timeout: Optional[float] = None,
                 interval: float = 1.0) -> Iterator[DPUJob]:
    """Yield the jobs as each finishes (the finished ones first); JobTimeout when `timeout`
    seconds pass with some unfinished. One poll per DPU per round, not one per job."""
    pending = list(dict.fromkeys(jobs))
    end = None if timeout is None else time.monotonic() + timeout
    while pending:
        yield from _settled(pending)
        if pending:
            time.sleep(_pause(pending, timeout, end, interval))


async def as_completed_async(jobs: Iterable[DPUJob], timeout: Optional[float] = None,
                             interval: float = 1.0) -> AsyncIterator[DPUJob]:
    """``async for job in as_completed_async(jobs)``: as_completed for asyncio."""
    pending = list(dict.fromkeys(jobs))
    end = None if timeout is None else time.monotonic() + timeout
    while pending:
        for job in _settled(pending):
            yield job
        if pending:
            await asyncio.sleep(_pause(pending, timeout, end, interval))


def _settled(pending: List[DPUJob]) -> List[DPUJob]:
    """Poll each DPU of the pending jobs once; take the finished ones out of `pending`."""
    groups: Dict[int, List[DPUJob]] = {}
    for job in pending:
        groups.setdefault(id(job.processor), []).append(job)
    finished: List[DPUJob] = []
    for group in groups.values():
        views = {v.job.id: v for v in group[0].processor.poll([j.id for j in group])}
        for job in group:
            job.last = views[job.id]
            if job.last.status in STATUS_TERMINAL:
                finished.append(job)
    for job in finished:
        pending.remove(job)
    return finished


def _pause(pending: List[DPUJob], timeout: Optional[float], end: Optional[float],
           interval: float) -> float:
    """Seconds to wait before the next round; JobTimeout when the time is up."""
    if end is None:
        return interval
    left = end - time.monotonic()
    if left <= 0:
        raise JobTimeout(f"{len(pending)} job(s) not finished after {timeout:g} s: "
                         f"{', '.join(str(j.id) for j in pending)}; they go on running")
    return min(interval, left)


__all__ = ["DPUJob", "JobFailed", "JobTimeout", "as_completed", "as_completed_async", "render_html"]
