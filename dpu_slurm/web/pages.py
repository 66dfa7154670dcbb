"""Rendering that cannot fail a page: HTML templates, JSON bodies and log text.

Job text comes from other users' cards and from workers' logs, so it may hold anything JSON can
carry: lone surrogates, non-finite numbers, deep nesting. Everything here replaces what it
cannot encode instead of raising (text.printable escapes control characters for terminals and
logs). Needs only jinja2 (``dpu queue`` uses it too).
"""
from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from typing import Any, Optional

import jinja2

from ..config import packaged

MAX_DEPTH = 32   # nesting kept in a JSON answer; deeper values are cut


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    """HTML only (render.py's environment is for shell scripts): autoescape everything."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(packaged("templates") / "web")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["ago"] = ago
    env.filters["tojson_text"] = lambda v: json.dumps(json_safe(v), ensure_ascii=False)
    return env


def html(name: str, **context: Any) -> bytes:
    """A page as UTF-8; text that cannot be encoded (lone surrogates) becomes '?'."""
    return templates().get_template(name).render(**context).encode("utf-8", "replace")


def json_bytes(data: Any) -> bytes:
    """A JSON body that always encodes: see json_safe()."""
    return json.dumps(json_safe(data), ensure_ascii=False, allow_nan=False).encode("utf-8", "replace")


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` made safe for JSON: non-finite numbers become strings ("inf"), keys strings,
    unknown types their str(), nesting deeper than MAX_DEPTH "...". Strings are kept as they
    are; the encoder replaces what UTF-8 cannot carry."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)


def when(stamp: Optional[float]) -> str:
    """A time stamp as local date and time ('' for None, '?' when out of range)."""
    try:
        return "" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def duration(seconds: Optional[float]) -> str:
    """Seconds as ``[Nd ]HH:MM:SS`` ('' for None, '?' when not a number)."""
    if seconds is None:
        return ""
    try:
        days, rest = divmod(int(seconds), 86400)
    except (TypeError, ValueError, OverflowError):
        return "?"
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def ago(seconds: Optional[float]) -> str:
    """How old the page's data is, in words."""
    if seconds is None:
        return "not yet (the first refresh is running)"
    seconds = max(0, int(seconds))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"

