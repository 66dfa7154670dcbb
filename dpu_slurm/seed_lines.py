"""The lines the prompt prints in the HOW-TO's own formats: options, sequences, log headers."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Sequence

from .catalog import Catalog, Option, Sequence_
from .errors import SequenceError
from .session import DPUSession, JobView
from .states import PROC_TERMINAL
from .store import Job, Proc

RULE = "+" * 44


def option_lines(options: Sequence[Option], verbose: bool = False) -> List[str]:
    """``"i" or "instrument" (default: )`` per option, as the HOW-TO prints them; verbose adds
    each option's help text on its own indented line after it."""
    lines = ["Recognized options for the OptionsParser are:"]
    for opt in options:
        lines.append(f'"{opt.short}" or "{opt.long}" (default: {_default(opt.default)})')
        if verbose and opt.help:
            lines.append(f"    {opt.help}")
    return lines


def sequence_doc(seq: Sequence_) -> str:
    """A sequence's one-line description: its task's docstring, or the chain's members."""
    if len(seq.tasks) == 1:
        return seq.tasks[0].doc
    return "chain of " + ", ".join(t.name for t in seq.tasks)


def identifier_lines(catalog: Catalog, identifier: Optional[str] = None) -> List[str]:
    """One line per sequence; `identifier` filters by name (case-blind, a part of the name
    matches), and an exact name also lists that sequence's options."""
    if identifier is not None and not isinstance(identifier, str):
        raise SequenceError(f"show_sequence_identifiers takes a name like 'HotPixels' (or a part of "
                            f"one), not {identifier!r}")
    wanted = (identifier or "").strip().lower()
    found = [s for ident, s in catalog.sequences.items() if wanted in ident.lower()]
    if not found:
        return [f"No sequence identifier matches {identifier!r}; dpu.show_sequence_identifiers() "
                "lists them all"]
    lines = [f"{s.identifier:<24} {sequence_doc(s)}".rstrip() for s in found]
    exact = [s for s in found if s.identifier.lower() == wanted]
    if exact:
        lines += option_lines(exact[0].options)
    return lines


def job_status_code(outcome: str) -> int:
    """The seed's ``job_status``: 0 when every task of the process ended N, else 1."""
    return 0 if outcome and set(outcome) == {"N"} else 1


def process_log(job: Job, proc: Proc, text: List[str], stamp: Optional[str] = None) -> List[str]:
    """One process's block: which job and process, the seed's three header lines, its log."""
    stamp = stamp or time.strftime("%H:%M:%S")
    status: Any = job_status_code(proc.outcome) if proc.state in PROC_TERMINAL else proc.state
    lines = [f"{stamp} - Jobid {job.id} process {proc.idx}",
             f"{stamp} - {RULE}", f"{stamp} - job_status = {status}", f"{stamp} - {RULE}"]
    lines += text
    if not text:
        never = proc.state in PROC_TERMINAL and set(proc.outcome) <= {"S"}
        lines.append(f"{stamp} - " + ("(no log: the process never ran)" if never
                                      else f"(no log yet: process is {proc.state.lower()})"))
    return lines


def job_logs(session: DPUSession, job: Job) -> List[str]:
    """Every process block of a job, in process order, read in one go from its DPU."""
    procs: Dict[int, Proc] = {p.idx: p for p in session.store.procs(job.id)}
    lines: List[str] = []
    for idx, text in sorted(session.logs(job).items()):
        lines += process_log(job, procs[idx], text)
    return lines


class StatusViews(List[JobView]):
    """get_status' job views: a list, echoed at the prompt as a summary, not a second copy of
    the lines it printed."""

    def __repr__(self) -> str:
        words: Dict[str, int] = {}
        for view in self:
            words[str(view.status)] = words.get(str(view.status), 0) + 1
        summary = ", ".join(f"{n} {word}" for word, n in words.items())
        return f"<status of {len(self)} job(s)" + (f": {summary}>" if summary else ">")


def _default(value: Any) -> str:
    return "" if value == "" else str(value)


__all__ = ["RULE", "StatusViews", "identifier_lines", "job_logs", "job_status_code", "option_lines",
           "process_log", "sequence_doc"]
