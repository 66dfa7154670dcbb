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


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared Jinja environment over the packaged templates (built once)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(packaged("templates"))),
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


def render(template: str, **context: Any) -> str:
    """Render one template of templates/ with these values, each shell-quoted unless marked raw."""
    return environment().get_template(template).render(**context)
