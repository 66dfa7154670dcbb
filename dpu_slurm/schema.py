"""The one validation model: every input (cluster YAML, bulk manifest, API body, run options)
is checked here, against specs derived from type hints, with errors naming file:line:key.

A spec is written once as a type: a dataclass (``DPUConfig``) or a ``TypedDict`` is a record,
``Annotated[str, Rule(...)]`` narrows a scalar, ``Literal[...]`` is a choice, ``List``/``Dict``
nest, and ``Annotated[Dict[str, Any], As(Host)]`` keeps a plain runtime type while checking
against the record ``Host``. YAML is read by one loader (yaml_lines.py) that refuses aliases,
duplicate and non-scalar keys, and keeps the line of every key for the messages. The model of
one run request (prompt, command line, manifest entry, API body) is in run_request.py.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass
from functools import cache
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Literal,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)

from .errors import DPUError, OptionError

# -- bounds every input shares ---------------------------------------------------------------
MAX_TIME = 365 * 86400            # seconds: one process may ask for at most a year
MIN_MEM, MAX_MEM = 16, 64 << 20   # MB per process: 16 MB .. 64 TB
MAX_PROCESSES = 100_000           # processes of one job
MAX_ENTRIES = 100_000             # runs of one manifest, all templates together
MAX_TEXT = 32 << 10               # characters of one string (what the queue page's cards show)
MAX_RUN_TEXT = 64 << 10           # characters of all of a run's option values together
MAX_DEPTH = 4                     # nesting of list/dict option values
MAX_ITEMS = 10_000                # items of all list/dict option values of a run
MAX_INT = 2 ** 63 - 1             # what the store, JSON readers and schedulers agree on
MAX_YAML_BYTES = 64 << 20         # a manifest or DPU file larger than this is refused unread


@dataclass(frozen=True)
class Rule:
    """What a scalar may be beyond its type: a full-match pattern and/or bounds."""

    pattern: str = ""
    what: str = ""          # the allowed values in words, for the message
    lo: Optional[float] = None
    hi: Optional[float] = None
    multiline: bool = False


@dataclass(frozen=True)
class As:
    """``Annotated[RuntimeType, As(SchemaType)]``: check against SchemaType, keep RuntimeType."""

    schema: Any


@dataclass(frozen=True)
class OneOf:
    """``Annotated[str, OneOf(fn)]``: a choice among the names fn() gives when a value is checked
    (the registered schedulers: known only once their modules are imported)."""

    names: Callable[[], Tuple[str, ...]]


def bounded(lo: Optional[float], hi: Optional[float], unit: str = "") -> Rule:
    """A Rule for a number between lo and hi (either may be None), with its unit in messages."""
    parts = [f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else ""]
    return Rule(lo=lo, hi=hi, what=" and ".join(p for p in parts if p) + (f" {unit}" if unit else ""))


# Shared field rules (what a scheduler directive or a file name can carry).
WORD = Rule(r"[A-Za-z0-9_.+-]+", "letters, digits and _.+- (what scheduler directives accept)")
NAME = Rule(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}",
            "1-64 letters, digits and _.+-, starting with a letter or digit")
IDENT = Rule(r"[A-Za-z_][A-Za-z0-9_]*", "a shell variable name: letters, digits and _, not starting "
                                        "with a digit")
CLUSTERS = Rule(r"[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*", "SLURM cluster names, comma-separated")
COMMAND = Rule(r"[^\s]+", "a command name or path without spaces")
TEXT = Rule(what="one line of text")
SECONDS = bounded(1, MAX_TIME, "seconds")
MEGABYTES = bounded(MIN_MEM, MAX_MEM, "MB")
VERSION = Rule(r"[A-Za-z0-9_.+-]{1,64}", "1-64 letters, digits and _.+-")


# -- errors ---------------------------------------------------------------------------------------
@dataclass
class At:
    """Where a value came from: the file (None for a JSON body or the prompt), line and key."""

    file: Optional[str] = None
    line: Optional[int] = None
    key: str = ""
    error: Type[DPUError] = OptionError

    def child(self, key: str, container: Any = None, index: Any = None) -> At:
        """The place of item ``key`` of ``container`` (its line when the YAML loader recorded one)."""
        line = self.line
        lines = getattr(container, "lines", None)
        if lines is not None and index in lines:
            line = lines[index]
        name = f"{self.key}[{key}]" if isinstance(index, int) else (
            f"{self.key}.{key}" if self.key else key)
        return At(self.file, line, name, self.error)

    def where(self) -> str:
        """``file:line``, or what is known of it, or ''."""
        place = self.file or ""
        if place and self.line:
            place += f":{self.line}"
        return place

    def fail(self, message: str, key: Optional[str] = None) -> DPUError:
        """The error to raise for a bad value here, prefixed by its place and key."""
        label = self.key if key is None else key
        head = ": ".join(p for p in (self.where(), label) if p)
        return self.error(f"{head}: {message}" if head else message)


def short(value: Any) -> str:
    """A value's repr cut to 60 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- specs derived from types ------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """What a value must be, derived from a type: its kind, rule, choices and nested specs."""

    kind: str                       # str int float bool choice list map record any
    rule: Rule = Rule()
    nullable: bool = False
    choices: Tuple[str, ...] = ()
    choices_from: Optional[Callable[[], Tuple[str, ...]]] = None   # OneOf: asked at check time
    item: Optional[Spec] = None     # list items, map values
    key: Optional[Spec] = None      # map keys
    fields: Tuple[Tuple[str, Spec], ...] = ()
    required: FrozenSet[str] = frozenset()

    @property
    def field_map(self) -> Dict[str, Spec]:
        """The record's fields by name."""
        return dict(self.fields)


_ANY = Spec("any")
_KIND_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list": "a list", "map": "a mapping", "record": "a mapping"}


def _hints(cls: Any) -> Dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None, include_extras=True)


@cache
def spec_of(tp: Any) -> Spec:
    """The Spec of a type annotation (cached: each schema is derived once)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        base, extras = args[0], args[1:]
        for extra in extras:
            if isinstance(extra, As):
                return spec_of(extra.schema)
            if isinstance(extra, OneOf):
                return Spec("choice", choices_from=extra.names)
        spec = spec_of(base)
        for extra in extras:
            if isinstance(extra, Rule):
                spec = dataclasses.replace(spec, rule=extra)
        return spec
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        spec = spec_of(inner[0]) if len(inner) == 1 else _ANY
        return dataclasses.replace(spec, nullable=True)
    if origin is Literal:
        return Spec("choice", choices=tuple(str(a) for a in args))
    if origin in (list, List):
        return Spec("list", item=spec_of(args[0]) if args else _ANY)
    if origin in (dict, Dict):
        return Spec("map", key=spec_of(args[0]), item=spec_of(args[1])) if args else Spec("map", item=_ANY)
    if tp in (str, int, float, bool):
        return Spec(tp.__name__)
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        fields = tuple((f.name, spec_of(hints[f.name])) for f in dataclasses.fields(tp)
                       if f.metadata.get("schema", True))
        required = frozenset(f.name for f in dataclasses.fields(tp) if f.metadata.get("schema", True)
                             and f.default is dataclasses.MISSING
                             and f.default_factory is dataclasses.MISSING)
        return Spec("record", fields=fields, required=required)
    if isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__"):  # TypedDict
        hints = _hints(tp)
        return Spec("record", fields=tuple((k, spec_of(v)) for k, v in hints.items()),
                    required=frozenset(tp.__required_keys__))
    return _ANY


# -- checking ------------------------------------------------------------------------------------
def _text(value: str, at: At, multiline: bool = False) -> None:
    bad = "\x00" if multiline else "\x00\n\r"
    for ch in bad:
        if ch in value:
            name = {"\x00": "a NUL character", "\n": "a newline", "\r": "a carriage return"}[ch]
            raise at.fail(f"{short(value)} holds {name}, which is never allowed here")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise at.fail(f"{short(value)} holds a lone surrogate (half of a UTF-16 pair); "
                      "send real characters") from None
    if len(value) > MAX_TEXT:
        raise at.fail(f"text of {len(value)} characters; at most {MAX_TEXT}")


def _number(value: Any, at: At, rule: Rule) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise at.fail(f"must be a finite number, got {value!r}")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise at.fail(f"{short(value)} is out of range")
    if (rule.lo is not None and value < rule.lo) or (rule.hi is not None and value > rule.hi):
        raise at.fail(f"{value!r} is out of range; allowed: {rule.what}")


def check(value: Any, spec: Spec, at: At) -> Any:
    """The value as plain Python (dict, list, scalars) if it fits `spec`, else at.error."""
    if value is None:
        if spec.nullable or spec.kind == "any":
            return None
        if spec.kind == "record":
            return check({}, spec, at)
        raise at.fail(f"must be {_KIND_WORDS.get(spec.kind, 'a value')}, not empty")
    kind = spec.kind
    if kind == "record":
        return _record(value, spec, at)
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise at.fail(f"must be a list, not {_what(value)}")
        assert spec.item is not None
        return [check(v, spec.item, at.child(str(i), value, i)) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise at.fail(f"must be a mapping, not {_what(value)}")
        assert spec.item is not None
        out = {}
        for k, v in value.items():
            sub = at.child(str(k), value, k)
            key = check(k, spec.key, sub) if spec.key is not None else k
            out[key] = check(v, spec.item, sub)
        return out
    if kind == "any":
        return value
    if kind == "choice":
        choices = spec.choices_from() if spec.choices_from is not None else spec.choices
        if not isinstance(value, str) or value not in choices:
            raise at.fail(f"is {short(value) if isinstance(value, str) else _what(value)}; "
                          f"allowed: {', '.join(choices)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise at.fail(f"must be true or false (a YAML/JSON boolean, unquoted), got {short(value)}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind == "int" and not isinstance(value, int)):
            raise at.fail(f"must be {_KIND_WORDS[kind]}, got {short(value)}")
        _number(value, at, spec.rule)
        return value
    # str: numbers are written as text (a partition called 1, a version 2)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise at.fail(f"must be a string, not {_what(value)}")
    text = value if isinstance(value, str) else str(value)
    _text(text, at, spec.rule.multiline)
    if spec.rule.pattern and not re.fullmatch(spec.rule.pattern, text):
        raise at.fail(f"{short(text)} is not allowed; allowed: {spec.rule.what}")
    return text


def _record(value: Any, spec: Spec, at: At) -> Dict[str, Any]:
    fields = spec.field_map
    if not isinstance(value, dict):
        raise at.fail(f"must be a mapping with keys {', '.join(fields)}, not {_what(value)}")
    out: Dict[str, Any] = {}
    for k, v in value.items():
        if k not in fields:
            sub = at.child(str(k), value, k)
            raise sub.fail(f"unknown key; allowed here: {', '.join(fields)}", f"key '{sub.key}'")
        out[k] = check(v, fields[k], at.child(k, value, k))
    missing = [k for k, _ in spec.fields if k in spec.required and k not in value]
    if missing:
        line = getattr(value, "line", None) or at.line
        required = ", ".join(k for k, _ in spec.fields if k in spec.required)
        raise At(at.file, line, at.key, at.error).fail(f"missing key '{missing[0]}' (required: {required})")
    return out


def _what(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {short(value)}"


def check_record(value: Any, tp: Any, at: At) -> Dict[str, Any]:
    """Check ``value`` against the TypedDict or dataclass type ``tp``; the checked mapping."""
    out = check(value, spec_of(tp), at)
    assert isinstance(out, dict)
    return out


# -- task option values (the prompt, CLI, manifests and the API alike) ---------------------------
class _Budget:
    def __init__(self) -> None:
        self.chars = 0
        self.items = 0


def check_value(value: Any, at: At, budget: Optional[_Budget] = None, depth: int = 0) -> Any:
    """A task option value: text without NUL or lone surrogates (newlines are data here), finite
    numbers, lists/dicts nested at most MAX_DEPTH deep; sizes bounded per value and per run."""
    budget = budget or _Budget()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _text(value, at, multiline=True)
        budget.chars += len(value)
    elif isinstance(value, (int, float)):
        _number(value, at, Rule())
    elif isinstance(value, (list, tuple, dict)):
        if depth >= MAX_DEPTH:
            raise at.fail(f"nested more than {MAX_DEPTH} deep; flatten the value")
        budget.items += len(value)
        if budget.items > MAX_ITEMS:
            raise at.fail(f"more than {MAX_ITEMS} list/dict items in all; pass a file name instead")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise at.fail(f"dict keys must be strings, got {short(k)}")
                _text(k, at)
                check_value(v, at.child(k), budget, depth + 1)
        else:
            for i, v in enumerate(value):
                check_value(v, At(at.file, at.line, f"{at.key}[{i}]", at.error), budget, depth + 1)
    else:
        raise at.fail(f"{short(value)} must be made of str, int, float, bool, list and dict")
    if budget.chars > MAX_RUN_TEXT:
        raise at.fail(f"more than {MAX_RUN_TEXT} characters of text in all; pass a file name instead")
    return value


def check_options(options: Mapping[str, Any], at: At) -> Dict[str, Any]:
    """A run's task options: names are one-line text, values as check_value (one shared budget)."""
    if not isinstance(options, dict):
        raise at.fail(f"must be a mapping of option name -> value, not {_what(options)}")
    budget = _Budget()
    out: Dict[str, Any] = {}
    for name, value in options.items():
        sub = at.child(str(name), options, name)
        if not isinstance(name, str):
            raise sub.fail(f"option names are text, got {short(name)}")
        _text(name, sub)
        out[name] = check_value(value, sub, budget)
    return out
