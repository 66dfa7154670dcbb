"""Tasks, options and sequences declared by the AWEPIPE code, and the options parser.

An AWEPIPE tree declares its tasks in a file ``dpu_tasks.py`` at its root::

    TASKS = [Task("ReadNoise", run="awepipe.calib:read_noise", options=(...), split=per_ccd)]
    SEQUENCES = ["Bias>HotPixels"]

The declarations are loaded on the client; the task code itself (``run``) is imported only
inside the job, so a broken task module fails its job, never the prompt.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

from .errors import CatalogError, OptionError, SequenceError
from .processes import Processes
from .schema import At, check_options, check_value

DECLARATIONS = "dpu_tasks.py"
Overrides = Dict[str, Any]
SplitFn = Callable[[Mapping[str, Any]], List[Overrides]]
Estimate = Union[float, Callable[[Mapping[str, Any]], float]]

_TYPES: Tuple[type, ...] = (str, int, float, bool, dict, list)
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


@dataclass(frozen=True)
class Option:
    """One task argument: a short and a long name, a type and a default."""

    short: str
    long: str
    type: type = str
    default: Any = ""
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise CatalogError(f"option {self.long!r}: type must be one of "
                               f"{', '.join(t.__name__ for t in _TYPES)}")

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this option's type, or raise OptionError saying what fits."""
        if value is None:  # None means "not given": the default (which may itself be None)
            return self.default
        at = At(key=f"option {self.short!r}/{self.long!r}")
        if isinstance(value, str):
            check_value(value, at)  # bounded text before it is parsed
        try:
            out = _coerce(self.type, value)
        except (ValueError, SyntaxError, TypeError, OverflowError):
            out = _BAD
        except (RecursionError, MemoryError):
            raise at.fail(f"{_short_repr(value)} is nested too deeply") from None
        if out is _BAD:
            raise OptionError(
                f"option {self.short!r}/{self.long!r} takes {_a(self.type.__name__)}; "
                f"got {type(value).__name__} {_short_repr(value)}")
        # finite numbers, text without NUL or lone surrogates, small nesting: schema.py
        return check_value(out, at)


_BAD = object()


def _coerce(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        return _BAD
    if kind is int:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        return _BAD
    if kind is float:
        if isinstance(value, bool):
            return _BAD
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        return _BAD
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _BAD
    # dict and list: Python objects as they are; strings (from the command line) as literals.
    if isinstance(value, str):
        value = ast.literal_eval(value.strip()) if value.strip() else kind()
    if kind is list and isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, kind) else _BAD


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Task:
    """One pipeline step: its options, how it splits into processes, its time estimate."""

    name: str
    run: str
    options: Tuple[Option, ...] = ()
    split: SplitFn | None = None
    estimate: Estimate = 10.0
    doc: str = ""
    requires: Tuple[str, ...] = ()   # tasks whose committed results this one reads (target.py)
    makes: str = ""                  # what it makes, e.g. "BiasFrame" (shown by dpu sequences)

    def seconds(self, values: Mapping[str, Any]) -> float:
        """Expected seconds per process for these option values (the estimate, called if callable)."""
        return float(self.estimate(values) if callable(self.estimate) else self.estimate)


@dataclass(frozen=True)
class Sequence_:
    """A task or a chain of tasks run in order inside each process."""

    identifier: str
    tasks: Tuple[Task, ...]
    options: Tuple[Option, ...] = field(default=())


class Catalog:
    """The tasks and sequences one AWEPIPE tree declares."""

    def __init__(self, tasks: Sequence[Task], chains: Sequence[str] = (), source: str = "") -> None:
        self.source = source
        self.tasks: Dict[str, Task] = {}
        for task in tasks:
            if not isinstance(task, Task):
                raise CatalogError(f"{source}: TASKS holds {task!r}, not a Task")
            if task.name in self.tasks:
                raise CatalogError(f"{source}: task {task.name!r} is declared twice")
            if ">" in task.name or not task.name:
                raise CatalogError(f"{source}: task name {task.name!r} may not be empty or hold '>'")
            if ":" not in task.run:
                raise CatalogError(f"{source}: task {task.name!r}: run must be 'module:function', "
                                   f"got {task.run!r}")
            _merge_options(task.name, [task], source)
            self.tasks[task.name] = task
        _check_requires(self.tasks, source)
        self.sequences: Dict[str, Sequence_] = {}
        for name, task in self.tasks.items():
            self.sequences[name] = Sequence_(name, (task,), task.options)
        for chain in chains:
            names = [n.strip() for n in chain.split(">")]
            unknown = [n for n in names if n not in self.tasks]
            if unknown:
                raise CatalogError(f"{source}: sequence {chain!r} names unknown task(s) "
                                   f"{', '.join(unknown)}; declared tasks: {', '.join(self.tasks)}")
            ident = ">".join(names)
            members = tuple(self.tasks[n] for n in names)
            self.sequences[ident] = Sequence_(ident, members, _merge_options(ident, members, source))

    @classmethod
    def load(cls, awepipe: Path) -> Catalog:
        """Load ``dpu_tasks.py`` from an AWEPIPE tree without importing any task code."""
        path = Path(awepipe) / DECLARATIONS
        if not Path(awepipe).is_dir():
            raise CatalogError(f"AWEPIPE path {awepipe} is not a directory; set AWEPIPE to your "
                               "checkout of the pipeline code, or unset it to use the example pipeline")
        if not path.is_file():
            raise CatalogError(f"{awepipe} holds no {DECLARATIONS}; an AWEPIPE tree declares its "
                               f"tasks there (see the README, 'Writing a task')")
        spec = importlib.util.spec_from_file_location(f"_dpu_tasks_{abs(hash(str(path)))}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(awepipe))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: report any failure as a catalog error
            raise CatalogError(f"{path}: cannot load the task declarations: "
                               f"{type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(str(awepipe))
        tasks = getattr(module, "TASKS", None)
        if not isinstance(tasks, (list, tuple)):
            raise CatalogError(f"{path}: must define TASKS, a list of dpu_slurm.catalog.Task")
        return cls(tasks, getattr(module, "SEQUENCES", ()), str(path))

    # -- look-ups --------------------------------------------------------------------------
    def identifiers(self) -> List[str]:
        """Every sequence identifier: each task's name, then the declared chains."""
        return list(self.sequences)

    def sequence(self, identifier: str) -> Sequence_:
        """The sequence ``identifier`` (spaces around ``>`` allowed); SequenceError with close matches."""
        if not isinstance(identifier, str):
            raise SequenceError(f"a sequence identifier is a string like 'ReadNoise' or "
                                f"'Bias>HotPixels', not {identifier!r}")
        ident = ">".join(part.strip() for part in identifier.split(">"))
        if ident in self.sequences:
            return self.sequences[ident]
        close = difflib.get_close_matches(ident, self.sequences, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise SequenceError(f"unknown sequence {identifier!r}; {hint}"
                            "dpu.get_sequence_identifiers() (shell: dpu sequences) lists them all")

    def parse(self, identifier: str, given: Mapping[str, Any]) -> Dict[str, Any]:
        """Resolve short and long names, check types, fill defaults; keyed by long name."""
        seq = self.sequence(identifier)
        by_name: Dict[str, Option] = {}
        for opt in seq.options:
            by_name[opt.short] = opt
            by_name[opt.long] = opt
        values: Dict[str, Any] = {}
        spelled: Dict[str, str] = {}
        for key, value in given.items():
            if key not in by_name:
                valid = ", ".join(f"{o.short}/{o.long}" for o in seq.options) or "none"
                close = difflib.get_close_matches(key, by_name, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise OptionError(f"sequence {seq.identifier!r} has no option {key!r}{hint}; "
                                  f"valid options: {valid}")
            opt = by_name[key]
            if opt.long in spelled:
                raise OptionError(f"option {opt.long!r} given twice, as {spelled[opt.long]!r} "
                                  f"and {key!r}; give it once")
            spelled[opt.long] = key
            values[opt.long] = opt.coerce(value)
        for opt in seq.options:
            values.setdefault(opt.long, opt.default)
        return check_options(values, At())  # sizes bounded for the run as a whole

    def split(self, identifier: str, values: Mapping[str, Any]) -> Processes:
        """The options of each process: the first task's split decides for the chain."""
        seq = self.sequence(identifier)
        splitter = seq.tasks[0].split
        if splitter is None:
            return Processes(1, shared=values)
        try:
            parts = splitter(values)
        except (ValueError, KeyError) as exc:
            msg = exc.args[0] if exc.args else exc
            raise OptionError(f"{seq.identifier}: {msg}") from None
        except Exception as exc:  # the pipeline's own code: its failure is this run's bad options
            raise OptionError(f"{seq.identifier}: splitting into processes failed with these "
                              f"options: {type(exc).__name__}: {exc}") from None
        if isinstance(parts, Processes):  # processes that differ by index: no dict per process
            return parts.with_shared(values)
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            raise OptionError(f"{seq.identifier}: the task's split must return a list of dicts "
                              "or a dpu_slurm.processes.Processes")
        return Processes.of_list(parts).with_shared(values)

    def estimate(self, identifier: str, values: Mapping[str, Any]) -> float:
        """Expected seconds for one process: the sum over the chain."""
        seq = self.sequence(identifier)
        try:
            total = sum(task.seconds(values) for task in seq.tasks)
        except Exception as exc:  # the pipeline's own code, as in split
            raise OptionError(f"{seq.identifier}: the time estimate failed with these options: "
                              f"{type(exc).__name__}: {exc}") from None
        if not math.isfinite(total) or total < 0:
            raise OptionError(f"{seq.identifier}: the tasks' time estimate for these options is "
                              f"{total} s; give dpu_time (shell: --time) or other option values")
        return total


def _check_requires(tasks: Mapping[str, Task], source: str) -> None:
    """Every task a task requires is declared, and no task requires itself through others."""
    for task in tasks.values():
        if isinstance(task.requires, str) or not all(isinstance(r, str) for r in task.requires):
            raise CatalogError(f"{source}: task {task.name!r}: requires must be a tuple of task "
                               f"names, e.g. requires=(\"Bias\",), got {task.requires!r}")
        unknown = [r for r in task.requires if r not in tasks]
        if unknown:
            raise CatalogError(f"{source}: task {task.name!r} requires unknown task(s) "
                               f"{', '.join(unknown)}; declared tasks: {', '.join(tasks)}")

    def visit(name: str, path: Tuple[str, ...]) -> None:
        if name in path:
            loop = " -> ".join((*path[path.index(name):], name))
            raise CatalogError(f"{source}: requires makes a cycle: {loop}; a task cannot need "
                               "its own result, remove one of these requires")
        for req in tasks[name].requires:
            visit(req, (*path, name))

    for name in tasks:
        visit(name, ())


def _merge_options(ident: str, tasks: Sequence[Task], source: str) -> Tuple[Option, ...]:
    """The union of the tasks' options; the same name declared two ways is an error."""
    by_short: Dict[str, Option] = {}
    by_long: Dict[str, Option] = {}
    merged: List[Option] = []
    for task in tasks:
        for opt in task.options:
            for seen in (by_short.get(opt.short), by_long.get(opt.long),
                         by_long.get(opt.short), by_short.get(opt.long)):
                if seen is not None and (seen.short, seen.long, seen.type, seen.default) != (
                        opt.short, opt.long, opt.type, opt.default):
                    raise CatalogError(
                        f"{source}: {ident}: option {opt.short!r}/{opt.long!r} "
                        f"({opt.type.__name__}, default {opt.default!r}) of task {task.name!r} "
                        f"conflicts with {seen.short!r}/{seen.long!r} ({seen.type.__name__}, "
                        f"default {seen.default!r}); declare it the same way in every task")
            if opt.long not in by_long:
                merged.append(opt)
                by_short[opt.short] = opt
                by_long[opt.long] = opt
    return tuple(merged)
