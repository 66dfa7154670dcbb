"""YAML for user files (DPU files, environment files, manifests): one safe loader that refuses
aliases, duplicate and non-scalar keys, and keeps the line of every key, so the checks of
schema.py can name file:line:key.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Dict, List, Type

import yaml

from .errors import DPUError
from .schema import MAX_YAML_BYTES, short


# -- YAML with lines, no aliases, no duplicate keys ---------------------------------------------
class LMap(Dict[Any, Any]):
    """A YAML mapping that knows its line and the line of each key."""

    line = 0
    lines: Dict[Any, int]


class LList(List[Any]):
    """A YAML sequence that knows its line and the line of each item."""

    line = 0
    lines: Dict[int, int]


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed


class Loader(_Base):
    """Safe YAML for user files: aliases, duplicate keys and non-scalar keys are errors; dates and
    ``Null`` stay text (a date option, a task name); only ``~``, ``null`` and empty mean nothing."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Build one node; refuses a node met again (an alias)."""
        # Without aliases every node is built once; a node met again is an alias, which could
        # make a few hundred bytes expand to gigabytes: refuse it at its first reuse.
        if node in self.constructed_objects or node in self.recursive_objects:
            raise yaml.constructor.ConstructorError(
                None, None, "this value is used again through an alias (*name); write the "
                "values out: aliases are refused so a small file cannot expand without bound",
                node.start_mark)
        return super().construct_object(node, deep)


Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:null")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|)$"), ["~", "n", ""])


def _construct_map(loader: Loader, node: yaml.MappingNode) -> LMap:
    out = LMap()
    out.line, out.lines = node.start_mark.line + 1, {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not a {kind}", key_node.start_mark)
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not {type(key).__name__}",
                key_node.start_mark) from None
        if key in out.lines:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {short(key)}: given twice (lines {out.lines[key]} and {line}); "
                "keep one", key_node.start_mark)
        out.lines[key] = line
        out[key] = loader.construct_object(value_node, deep=True)
    return out


def _construct_list(loader: Loader, node: yaml.SequenceNode) -> LList:
    out = LList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return out


Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
Loader.add_constructor("tag:yaml.org,2002:seq", _construct_list)


def load_yaml(path: Path, error: Type[DPUError], what: str = "file") -> Any:
    """Read a YAML file as UTF-8 with the Loader; every problem is `error` naming path:line."""
    try:  # non-blocking: a FIFO in the file's place must not hang the reader
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise error(f"{path}: not a regular file; a {what} is a plain YAML file")
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise error(f"{path}: larger than {MAX_YAML_BYTES >> 20} MB; split the {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 (byte {raw[exc.start]:#04x}); save the {what} as "
                    "UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise error(f"{path}:{line}: holds a NUL character; a {what} is plain text")
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "" if isinstance(exc, yaml.constructor.ConstructorError) or "alias" in problem \
            else "malformed YAML: "
        raise error(f"{where}: {kind}{problem}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply; flatten the {what}") from None
