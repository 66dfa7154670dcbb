"""``Env``: the HOW-TO's "Environment" at the prompt; ``Env['dpu_name']`` is the default DPU."""
from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List, Optional

from .config import default_dpu_name, environment_file, get_dpu, write_environment
from .errors import ConfigError

KEYS = ("dpu_name",)


class Environment:
    """The user's settings as a mapping: reading gives the value in force, setting saves it
    in the environment file (as ``select_dpu(NAME, persist=True)`` does)."""

    def __init__(self, say: Optional[Callable[[str], None]] = None,
                 current: Optional[Callable[[], str]] = None) -> None:
        self._say = say or (lambda line: None)
        self._current = current  # the session's DPU, to say that setting the default keeps it

    def __getitem__(self, key: str) -> str:
        self._check(key)
        return default_dpu_name()

    def __setitem__(self, key: str, value: str) -> None:
        self._check(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"Env['dpu_name'] is a DPU name like 'local', not {value!r}; "
                              "dpu.get_dpu_identifiers() lists them")
        name = get_dpu(value).name  # an unknown DPU is refused before anything is saved
        write_environment(dpu_name=name)
        line = f"Default DPU is now {name!r} (saved in {environment_file()})"
        if os.environ.get("DPU_NAME") and os.environ["DPU_NAME"] != name:
            line += f"; the DPU_NAME variable ({os.environ['DPU_NAME']!r}) still overrides it"
        if self._current is not None and self._current() != name:
            line += (f"; this session keeps using DPU {self._current()!r}: "
                     f"dpu.select_dpu({name!r}) switches it now")
        self._say(line)

    def __delitem__(self, key: str) -> None:
        raise ConfigError(f"Env[{key!r}] cannot be removed; set another value instead")

    def __contains__(self, key: object) -> bool:
        return key in KEYS

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def keys(self) -> List[str]:
        """The settings' names."""
        return list(KEYS)

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The value of `key`, or `default` when there is no such setting."""
        return self[key] if key in KEYS else default

    def as_dict(self) -> Dict[str, str]:
        """Every setting with the value in force."""
        return {key: self[key] for key in KEYS}

    def __repr__(self) -> str:
        return f"Env({self.as_dict()!r})"

    def _check(self, key: str) -> None:
        if key not in KEYS:
            raise ConfigError(f"Env has no setting {key!r}; settings: {', '.join(KEYS)}")


__all__ = ["Environment", "KEYS"]
