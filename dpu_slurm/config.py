"""Cluster configs (one YAML file per DPU), their validation, the search path and ``dpu_name``."""
from __future__ import annotations

import getpass
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from .errors import ConfigError

SCHEDULERS = ("local", "slurm", "pbs", "sge")
_STR, _INT, _NUM, _BOOL = "a string", "an integer", "a number", "true or false"


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "scalar"


# A schema is {key: spec}; spec is a scalar kind, ("enum", values), ("list", spec),
# ("map", spec) for free keys, or a nested schema dict.
_HOST = {"hostname": _STR, "port": _INT, "user": _STR, "identity_file": _STR,
         "known_hosts": _STR, "proxy_jump": _STR, "connect_timeout": _NUM, "keepalive": _INT}
_PARTITION = {"name": _STR, "max_time": _INT, "max_mem": _INT}
SCHEMA: Dict[str, Any] = {
    "name": _STR,
    "description": _STR,
    "scheduler": ("enum", SCHEDULERS),
    "submit": ("enum", ("cli", "drmaa")),
    "flavor": ("enum", ("torque", "pbspro")),
    "host": _HOST,
    "workdir": _STR,
    "job_index": _STR,
    "python": _STR,
    "awe_versions": ("map", {"setup": ("list", _STR), "path": _STR}),
    "default_aweversion": _STR,
    "defaults": {"time": _INT, "mem": _INT},
    "time_factor": _NUM,
    "min_time": _INT,
    "partitions": ("list", _PARTITION),
    "max_array_size": _INT,
    "array_throttle": _INT,
    "account": _STR,
    "qos": _STR,
    "extra_directives": ("list", _STR),
    "env": ("map", _STR),
    "slots": _INT,
    "drmaa_library": _STR,
    "bin_dir": _STR,
    "poll": {"min_interval": _NUM, "max_interval": _NUM, "grace": _NUM},
    "web": {"max_nproc": _INT},   # the queue page: most processes one job card may claim
}
REQUIRED = ("name", "scheduler")
_REQUIRED_NESTED = {"host": ("hostname",), "partitions": ("name",)}


@dataclass
class DPUConfig:
    """One DPU: where and how its jobs run."""

    name: str
    scheduler: str
    path: Path
    description: str = ""
    submit: str = "cli"
    flavor: str = "torque"
    host: Optional[Dict[str, Any]] = None
    workdir: str = ""
    # shared folder of job cards the queue page reads (dpu_slurm/web/cards.py); {name}, {dpu_home}
    job_index: str = ""
    python: str = ""
    awe_versions: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    default_aweversion: str = ""
    defaults: Dict[str, int] = field(default_factory=lambda: {"time": 600, "mem": 2000})
    time_factor: float = 1.5
    min_time: int = 60
    partitions: List[Dict[str, Any]] = field(default_factory=list)
    max_array_size: int = 1000
    array_throttle: int = 0
    account: str = ""
    qos: str = ""
    extra_directives: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    slots: int = 0
    drmaa_library: str = ""
    bin_dir: str = ""   # folder of the scheduler's commands (qsub, qstat...) when not on PATH
    poll: Dict[str, float] = field(default_factory=dict)
    web: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def target_workdir(self) -> str:
        """The workdir with {user}, {name}, {dpu_home} filled in (~ left for the target)."""
        user = (self.host or {}).get("user") or current_user()
        text = self.workdir or ("{dpu_home}/work/{name}" if not self.is_remote else "dpu/{name}")
        return text.format(user=user, name=self.name, dpu_home=dpu_home())

    def python_for_jobs(self) -> str:
        return self.python or (sys.executable if not self.is_remote else "python3")


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def dpu_home() -> Path:
    """Where the job store and the local DPU's jobs live (DPU_HOME overrides)."""
    if os.environ.get("DPU_HOME"):
        return Path(os.environ["DPU_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dpu_slurm"


def packaged(name: str) -> Path:
    """A data folder shipped with the package (templates, cluster_configs, examples)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"the installed dpu_slurm lacks its {name}/ folder; reinstall it with pip")


def search_path() -> List[Path]:
    """Folders searched for DPU configs, first match of a name wins."""
    dirs = [Path(p).expanduser() for p in os.environ.get("DPU_CONFIG_PATH", "").split(os.pathsep) if p]
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs += [Path(xdg) / "dpu", Path("/etc/dpu"), packaged("cluster_configs")]
    return dirs


def _config_files() -> List[Path]:
    files: List[Path] = []
    for folder in search_path():
        if folder.is_file():
            files.append(folder)
        elif folder.is_dir():
            # Commented examples ship beside local.yaml; they are templates, not DPUs.
            files += sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("example-"))
    return files


def _discover() -> Tuple[Dict[str, DPUConfig], List[Tuple[Path, str]]]:
    found: Dict[str, DPUConfig] = {}
    problems: List[Tuple[Path, str]] = []
    for path in _config_files():
        try:
            cfg = load_file(path)
        except ConfigError as exc:
            problems.append((path, str(exc)))
            continue
        found.setdefault(cfg.name, cfg)
    return found, problems


def discover() -> Tuple[Dict[str, DPUConfig], List[str]]:
    """All DPUs on the search path, and one warning per file that could not be used."""
    found, problems = _discover()
    return found, [message for _, message in problems]


def _declares(path: Path, name: str) -> bool:
    """Whether a (broken) DPU file is about DPU `name`: by its file name or its name line."""
    if path.stem == name:
        return True
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(rf"^name:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$", text, re.M) is not None


def get_dpu(name: str) -> DPUConfig:
    dpus, problems = _discover()
    if name in dpus:
        return dpus[name]
    for path, problem in problems:  # a broken file may be the one the user means
        if _declares(path, name):
            raise ConfigError(problem)
    known = ", ".join(sorted(dpus)) or "none"
    raise ConfigError(f"unknown DPU {name!r}; known DPUs: {known}. Add a YAML file for it to one of: "
                      + ", ".join(str(p) for p in search_path()[:-1]))


def environment_file() -> Path:
    return dpu_home() / "environment.yaml"


def default_dpu_name() -> str:
    """The environment key dpu_name: DPU_NAME, else the user's environment file, else 'local'."""
    if os.environ.get("DPU_NAME"):
        return os.environ["DPU_NAME"]
    env = read_environment()
    return str(env.get("dpu_name") or "local")


def read_environment() -> Dict[str, Any]:
    path = environment_file()
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix or delete the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping like 'dpu_name: local'")
    return data


def write_environment(**values: Any) -> Path:
    data = read_environment()
    data.update(values)
    path = environment_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(yaml.safe_dump(data, sort_keys=True))
    os.replace(tmp, path)
    return path


# -- loading and validation ---------------------------------------------------------------------

def load_file(path: Path) -> DPUConfig:
    """Parse and validate one DPU file; errors name the file, line, key and what is allowed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if node is None:
        raise ConfigError(f"{path}: empty; a DPU file needs at least 'name' and 'scheduler'")
    _check(path, node, SCHEMA, "")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a !!python tag on a key: safe_load refuses to build it
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {getattr(exc, 'problem', None) or exc}") from None
    for key in REQUIRED:
        if key not in data:
            raise ConfigError(f"{path}:1: missing key '{key}' (required: {', '.join(REQUIRED)})")
    cfg = DPUConfig(path=path, **data)
    try:
        cfg.workdir.format(user="u", name="n", dpu_home="h")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{path}:{_line_of(node, 'workdir')}: workdir: {cfg.workdir!r} holds an "
                          f"unknown or broken placeholder ({exc}); allowed: {{user}}, {{name}}, "
                          "{dpu_home}") from None
    # Jobs find the bundle and installed code through PYTHONPATH, which cannot carry a ':'.
    for where, folder in [("workdir", cfg.workdir)] + [
            (f"awe_versions.{name}.path", str(v.get("path", ""))) for name, v in cfg.awe_versions.items()]:
        if ":" in folder:
            line = _line_of(node, where.split(".")[0])
            raise ConfigError(f"{path}:{line}: {where}: {folder!r} holds a ':', which PYTHONPATH "
                              "cannot carry; choose a folder without ':'")
    if cfg.awe_versions and cfg.default_aweversion and cfg.default_aweversion not in cfg.awe_versions:
        raise ConfigError(f"{path}: default_aweversion {cfg.default_aweversion!r} is not one of "
                          f"awe_versions: {', '.join(cfg.awe_versions)}")
    if cfg.submit == "drmaa" and cfg.is_remote:
        raise ConfigError(f"{path}: 'submit: drmaa' needs the scheduler's client library on this "
                          "machine, so it cannot be combined with 'host'; use 'submit: cli' for a "
                          "remote DPU")
    return cfg


def _check(path: Path, node: yaml.Node, spec: Any, where: str) -> None:
    line = node.start_mark.line + 1
    label = where or "the file"

    def fail(msg: str) -> None:
        raise ConfigError(f"{path}:{line}: {label}: {msg}")

    if isinstance(spec, dict):
        if not isinstance(node, yaml.MappingNode):
            fail(f"must be a mapping with keys {', '.join(spec)}, not a {_kind(node)}")
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in spec:
                line = key_node.start_mark.line + 1
                label = f"key '{_join(where, key)}'"
                fail(f"unknown key; allowed here: {', '.join(spec)}")
            if key in seen:
                line = key_node.start_mark.line + 1
                label = f"key '{_join(where, key)}'"
                fail("given twice")
            seen.add(key)
            _check(path, value_node, spec[key], _join(where, key))
        for key in _REQUIRED_NESTED.get(where.split("[")[0], ()):
            if key not in seen:
                fail(f"missing key '{key}'")
        return
    if isinstance(spec, tuple):
        kind, inner = spec
        if kind == "enum":
            if not isinstance(node, yaml.ScalarNode) or node.value not in inner:
                fail(f"is {node.value if isinstance(node, yaml.ScalarNode) else _kind(node)!r}; "
                     f"allowed: {', '.join(inner)}")
        elif kind == "list":
            if not isinstance(node, yaml.SequenceNode):
                fail(f"must be a list, not a {_kind(node)}")
            for i, item in enumerate(node.value):
                _check(path, item, inner, f"{where}[{i}]")
        elif kind == "map":
            if not isinstance(node, yaml.MappingNode):
                fail(f"must be a mapping, not a {_kind(node)}")
            for key_node, value_node in node.value:
                _check(path, value_node, inner, _join(where, key_node.value))
        return
    if not isinstance(node, yaml.ScalarNode):
        fail(f"must be {spec}, not a {_kind(node)}")
    try:
        value = yaml.safe_load(yaml.serialize(node))
    except yaml.YAMLError:
        fail(f"must be {spec}; tags like {node.tag!r} are not allowed")
    ok = {
        _STR: isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
    }[spec]
    if not ok:
        fail(f"must be {spec}, got {node.value!r}")


def _line_of(node: yaml.Node, key: str) -> int:
    for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
        if key_node.value == key:
            return int(key_node.start_mark.line) + 1
    return 1


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
