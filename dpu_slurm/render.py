"""The one Jinja environment: StrictUndefined, and every value shell-quoted in exactly one place.

Templates write ``{{ value }}`` and get a shell-safe word. Only text a sysadmin wrote in a cluster
config (setup lines, extra directives) may pass unquoted, by the explicit ``|raw`` filter.
"""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from typing import Any

import jinja2

from .config import packaged


class Raw(str):
    """Text that goes into the script as written (trusted: from the cluster config)."""


def quote(value: Any) -> str:
    """The project's only shell-quoting step."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        value = int(value)
    return shlex.quote(str(value))


_WORD = re.compile(r"^[A-Za-z0-9_.,:%=+@/-]+$")


def directive(value: Any) -> Raw:
    """A scheduler directive value: scheduler parsers do not unquote, so only plain words pass."""
    text = str(value)
    if not _WORD.match(text):
        raise ValueError(f"{text!r} cannot go into a scheduler directive; use letters, digits "
                         "and _.,:%=+@/- only")
    return Raw(text)


@lru_cache(maxsize=8)
def environment(search: str = "") -> jinja2.Environment:
    """The environment over the packaged templates, then `search` (a scheduler module's folder:
    a scheduler added outside this package keeps its template beside its module)."""
    folders = [str(packaged("templates"))] + ([search] if search else [])
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        finalize=quote,
        autoescape=False,  # noqa: S701 - shell scripts, not HTML: finalize quotes instead
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["raw"] = Raw
    env.filters["directive"] = directive
    return env


def render(template: str, search: str = "", **context: Any) -> str:
    """Render a template with the one quoting finalizer; `search`: one more template folder."""
    return environment(search).get_template(template).render(**context)
