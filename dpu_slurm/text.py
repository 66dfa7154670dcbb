"""Text from jobs and other users, made safe to show: for a terminal and for an encoder."""
from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str, width: int = 0, keep: str = "") -> str:
    """Text for a terminal: control characters (escape sequences, \\r, lone surrogates) shown
    as escapes, not obeyed; characters in `keep` (e.g. a tab in a log line) pass as they are."""
    out = "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)
    return out if not width or len(out) <= width else out[:width - 3] + "..."


def clean(value: Any) -> Any:
    """A value whose strings (also in lists and dict keys) encode as UTF-8: what cannot (a lone
    surrogate) becomes U+FFFD, so rendering a page never fails on it."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean(v) for v in value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value
