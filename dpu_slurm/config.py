"""Cluster configs (one YAML file per DPU), their validation, the search path and ``dpu_name``."""
from __future__ import annotations

import functools
import getpass
import logging
import math
import os
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Set, Tuple, TypedDict

import yaml

from . import config_trust
from .errors import ConfigError, DPUError
from .files import atomic_write, private_dir
from .retry_policy import Requeue, Retries, yaml_on
from .schema import (
    CLUSTERS,
    COMMAND,
    IDENT,
    MAX_TIME,
    MEGABYTES,
    NAME,
    SECONDS,
    TEXT,
    VERSION,
    WORD,
    As,
    At,
    OneOf,
    Rule,
    bounded,
    check,
    spec_of,
)
from .yaml_lines import load_yaml

log = logging.getLogger(__name__)



def scheduler_names() -> Tuple[str, ...]:
    """The allowed `scheduler:` values: the registered schedulers (schedulers.REGISTRY)."""
    from .schedulers import names  # imported when asked: the schedulers import this module
    return names("scheduler")


def submit_names() -> Tuple[str, ...]:
    """The allowed `submit:` values: cli, and the registered submit modes (drmaa)."""
    from .schedulers import names
    return ("cli", *names("submit"))


# -- the schema: written once, as types (dpu_slurm/schema.py derives the checks) ---------------
_PATH = Rule(what="a folder path on one line")
_FILE = Rule(what="a file path on one line")
_ABS = Rule(r"/.*", "an absolute path")
_HOSTNAME = Rule(r"[A-Za-z0-9_.:%\[\]-]+", "a host name, address or ~/.ssh/config alias")
_LOGIN = Rule(r"[A-Za-z0-9_.@-]+", "a login name: letters, digits and _.@-")
_HOPS = Rule(r"[A-Za-z0-9_.@:%,\[\]-]+", "user@host[:port] hops separated by commas")


class _HostRequired(TypedDict):
    hostname: Annotated[str, _HOSTNAME]


class Host(_HostRequired, total=False):
    """The ``host:`` section: how to reach a remote DPU over SSH."""

    port: Annotated[int, bounded(1, 65535)]
    user: Annotated[str, _LOGIN]
    identity_file: Annotated[str, _FILE]
    known_hosts: Annotated[str, _FILE]
    proxy_jump: Annotated[str, _HOPS]
    connect_timeout: Annotated[float, bounded(0.1, 3600, "seconds")]
    keepalive: Annotated[int, bounded(0, 3600, "seconds")]


class _PartitionRequired(TypedDict):
    name: Annotated[str, WORD]


class Partition(_PartitionRequired, total=False):
    """One entry of ``partitions:``: the largest time and memory it takes."""

    max_time: Annotated[int, SECONDS]
    max_mem: Annotated[int, MEGABYTES]


class AweVersion(TypedDict, total=False):
    """One entry of ``awe_versions:``: shell setup lines and/or the installed AWEPIPE path."""

    setup: List[Annotated[str, Rule(what="shell lines, one per item")]]
    path: Annotated[str, _PATH]


class Defaults(TypedDict, total=False):
    """The ``defaults:`` section: time (seconds) and memory (MB) per process."""

    time: Annotated[int, SECONDS]
    mem: Annotated[int, MEGABYTES]


class Web(TypedDict, total=False):
    """The ``web:`` section: limits of the queue page."""
    max_nproc: Annotated[int, bounded(1, 10_000_000)]   # the queue page: most processes a card may claim


class Poll(TypedDict, total=False):
    """The ``poll:`` section: how often status asks the scheduler; the grace of a vanished job."""

    min_interval: Annotated[float, bounded(0, 86400, "seconds")]
    max_interval: Annotated[float, bounded(0, 86400, "seconds")]
    grace: Annotated[float, bounded(0, 86400, "seconds")]


@dataclass
class DPUConfig:
    """One DPU: where and how its jobs run. The field types are also the file's schema."""

    name: Annotated[str, NAME]
    scheduler: Annotated[str, OneOf(scheduler_names)]
    path: Path = field(default=Path(), metadata={"schema": False})
    description: Annotated[str, TEXT] = ""
    submit: Annotated[str, OneOf(submit_names)] = "cli"
    flavor: Annotated[str, As(Literal["torque", "pbspro"])] = "torque"
    host: Annotated[Optional[Dict[str, Any]], As(Host)] = None
    workdir: Annotated[str, Rule(what="a folder path")] = ""
    # shared folder of job cards the queue page reads (dpu_slurm/index.py); {name}, {dpu_home}
    job_index: Annotated[str, _FILE] = ""
    python: Annotated[str, COMMAND] = ""
    awe_versions: Annotated[Dict[str, Dict[str, Any]],
                            As(Dict[Annotated[str, VERSION], AweVersion])] = field(default_factory=dict)
    default_aweversion: Annotated[str, VERSION] = ""
    defaults: Annotated[Dict[str, int], As(Defaults)] = field(
        default_factory=lambda: {"time": 600, "mem": 2000})
    time_factor: Annotated[float, bounded(0.01, 1000)] = 1.5
    min_time: Annotated[int, bounded(0, MAX_TIME, "seconds")] = 60
    partitions: Annotated[List[Dict[str, Any]], As(List[Partition])] = field(default_factory=list)
    max_array_size: Annotated[int, bounded(1, 10_000_000)] = 1000
    array_throttle: Annotated[int, bounded(0, 10_000_000)] = 0
    account: Annotated[str, WORD] = ""
    qos: Annotated[str, WORD] = ""
    clusters: Annotated[str, CLUSTERS] = ""   # SLURM multi-cluster: -M on sbatch/squeue/sacct/scancel
    # '#SBATCH <line>' (cli), or words of DRMAA's nativeSpecification; checked per submit mode
    extra_directives: List[Annotated[str, TEXT]] = field(default_factory=list)
    env: Annotated[Dict[str, str], As(Dict[Annotated[str, IDENT], str])] = field(default_factory=dict)
    # processes run at once on the local DPU; 0 (left out): the number of cores
    slots: Annotated[int, bounded(1, 100_000)] = 0
    drmaa_library: Annotated[str, _ABS] = ""
    bin_dir: Annotated[str, _ABS] = ""   # folder of the scheduler's commands when not on PATH
    poll: Annotated[Dict[str, float], As(Poll)] = field(default_factory=dict)
    web: Annotated[Dict[str, Any], As(Web)] = field(default_factory=dict)
    retries: Annotated[Dict[str, Any], As(Retries)] = field(default_factory=dict)  # retry_policy.py
    requeue: Annotated[Dict[str, int], As(Requeue)] = field(default_factory=dict)   # requeue.py

    @property
    def is_remote(self) -> bool:
        """True when the DPU is reached over SSH (it has a host section)."""
        return self.host is not None

    def target_workdir(self) -> str:
        """The workdir with {user}, {name}, {dpu_home} filled in (~ left for the target)."""
        user = (self.host or {}).get("user") or current_user()
        text = self.workdir or ("{dpu_home}/work/{name}" if not self.is_remote else "dpu/{name}")
        return fill(text, user=user, name=self.name, dpu_home=dpu_home())

    def python_for_jobs(self) -> str:
        """The Python the job scripts run the worker with."""
        return self.python or (sys.executable if not self.is_remote else "python3")


def fill(text: str, **values: Any) -> str:
    """`text` with its {name} placeholders filled. Only plain names: str.format would also
    follow attributes and indexes ({dpu_home.parent}, {name[0]}), run conversions and formats,
    and raise what they raise. ValueError names the placeholder that is not allowed."""
    out: List[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        out.append(literal)
        if name is None:
            continue
        if name not in values or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"{{{shown}}} is not a placeholder")
        out.append(str(values[name]))
    return "".join(out)


def current_user() -> str:
    """The login name of this process's user (the uid as text when it has none)."""
    # getpass looks these up in this order, then the password database (slow, so remembered).
    key = (os.getuid(), *(os.environ.get(n) for n in ("LOGNAME", "USER", "LNAME", "USERNAME")))
    if key not in _USERS:
        try:
            _USERS[key] = getpass.getuser()
        except (KeyError, OSError):
            _USERS[key] = str(os.getuid())
    return _USERS[key]


_USERS: Dict[Tuple[Optional[str] | int, ...], str] = {}


def dpu_home() -> Path:
    """Where the job store and the local DPU's jobs live (DPU_HOME overrides)."""
    if os.environ.get("DPU_HOME"):
        return Path(os.environ["DPU_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dpu_slurm"


@functools.cache  # the package does not move while it runs (resolve is slow)
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


def config_files() -> List[Path]:
    """Every DPU file on the search path, in search order."""
    files: List[Path] = []
    for folder in search_path():
        if folder.is_file():
            files.append(folder)
        elif folder.is_dir():
            # Commented examples ship beside local.yaml; they are templates, not DPUs.
            files += sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("example-"))
    return files


_warned: Set[Tuple[str, str]] = set()   # (file, problem) already logged by this process


def _discover() -> Tuple[Dict[str, DPUConfig], List[Tuple[Path, str]]]:
    found: Dict[str, DPUConfig] = {}
    problems: List[Tuple[Path, str]] = []
    for path in config_files():
        try:
            cfg = load_file(path)
        except ConfigError as exc:
            problems.append((path, str(exc)))
            # One warning per broken file: the other DPUs keep working.
            if (str(path), str(exc)) not in _warned:
                _warned.add((str(path), str(exc)))
                log.warning("skipping DPU file %s: %s", path, exc)
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
    text = config_trust.read_text(path)   # a FIFO named like a DPU file must not hang this
    return re.search(rf"^name:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$", text, re.M) is not None


def get_dpu(name: str) -> DPUConfig:
    """The DPU config named ``name``; ConfigError listing the known ones, or the broken file naming it."""
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
    """The user's environment file (DPU_HOME/environment.yaml), which holds dpu_name."""
    return dpu_home() / "environment.yaml"


def default_dpu_name() -> str:
    """The environment key dpu_name: DPU_NAME, else the user's environment file, else 'local'."""
    if os.environ.get("DPU_NAME"):
        return os.environ["DPU_NAME"]
    env = read_environment()
    return str(env.get("dpu_name") or "local")


def read_environment() -> Dict[str, Any]:
    """The user's environment file as a dict ({} when there is none)."""
    path = environment_file()
    if not path.exists():
        return {}
    data = load_yaml(path, ConfigError, "environment file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping like 'dpu_name: local'")
    return dict(data)


def write_environment(**values: Any) -> Path:
    """Update the user's environment file with these keys (written atomically); return its path."""
    data = read_environment()
    data.update(values)
    path = environment_file()
    private_dir(path.parent)
    atomic_write(path, yaml.safe_dump(data, sort_keys=True).encode("utf-8"))  # unique temp name
    return path


# -- loading and validation ---------------------------------------------------------------------
SPEC = spec_of(DPUConfig)
SCHEMA: Dict[str, Any] = SPEC.field_map   # key -> spec, in the order the file's messages list them
REQUIRED = tuple(k for k in SCHEMA if k in SPEC.required)


def load_file(path: Path) -> DPUConfig:
    """Parse and validate one DPU file; errors name the file, line, key and what is allowed."""
    path = Path(path)
    config_trust.check_owner(path, packaged("cluster_configs"))   # another user's file is not used
    data = load_yaml(path, ConfigError, "DPU file")
    if data is None:
        raise ConfigError(f"{path}: empty; a DPU file needs at least 'name' and 'scheduler'")
    at = At(str(path), 1, "", ConfigError)
    if not isinstance(data, dict):
        raise at.fail(f"must be a mapping with keys {', '.join(SCHEMA)}, not a list or a value")
    yaml_on(data.get("retries"))
    values = check(data, SPEC, at)
    cfg = DPUConfig(path=path, **values)
    _cross_check(cfg, data, at)
    return cfg


def _cross_check(cfg: DPUConfig, data: Any, at: At) -> None:
    """What one key alone cannot say: placeholders, the scheduler's alphabet, key combinations."""
    def fail(key: str, message: str) -> DPUError:
        return at.child(key, data, key).fail(message)

    try:
        workdir = cfg.target_workdir()
    except (KeyError, IndexError, ValueError) as exc:
        raise fail("workdir", f"{cfg.workdir!r} holds an unknown or broken placeholder ({exc}); "
                   "allowed: {user}, {name}, {dpu_home}") from None
    try:
        fill(cfg.job_index, name=cfg.name, dpu_home="h")
    except (KeyError, IndexError, ValueError) as exc:
        raise fail("job_index", f"{cfg.job_index!r} holds an unknown or broken placeholder ({exc}); "
                   "allowed: {name}, {dpu_home}") from None
    # Jobs find the bundle and installed code through PYTHONPATH, which cannot carry a ':'.
    if ":" in cfg.workdir:
        raise fail("workdir", f"{cfg.workdir!r} holds a ':', which PYTHONPATH cannot carry; "
                   "choose a folder without ':'")
    for name, version in cfg.awe_versions.items():
        if ":" in str(version.get("path", "")):
            raw = data["awe_versions"][name]
            sub = at.child("awe_versions", data, "awe_versions").child(name, data["awe_versions"], name)
            raise sub.child("path", raw, "path").fail(
                f"{version['path']!r} holds a ':', which PYTHONPATH cannot carry; choose a folder "
                "without ':'")
    if cfg.workdir and not cfg.is_remote and not cfg.workdir.startswith(("/", "~", "{dpu_home}")):
        raise fail("workdir", f"{cfg.workdir!r} is relative, so each working folder would get its "
                   "own jobs; use an absolute path, ~/... or {dpu_home}/...")
    if cfg.scheduler in ("sge", "pbs") and not re.fullmatch(r"[A-Za-z0-9_.,%=+@/~-]*", workdir):
        # The job folder reaches '#$ -o DIR' / '#PBS -o DIR', which take no quoting.
        raise fail("workdir", f"{workdir!r} cannot go into a {cfg.scheduler} '-o' directive; "
                   "allowed: letters, digits and _.,%=+@/~- (no spaces or quotes)")
    for i, line in enumerate(cfg.extra_directives):
        first = cfg.submit == "cli" or i == 0  # DRMAA: words of one spec, option arguments follow
        if first and not re.fullmatch(r"-\S.*", line):
            raise at.child("extra_directives", data, "extra_directives").child(
                str(i), data["extra_directives"], i).fail(
                f"{line!r} is not allowed; allowed: a directive starting with '-', e.g. "
                "--constraint=avx2 or -l place=pack" + (" (one per item)" if cfg.submit == "cli" else ""))
    if cfg.awe_versions and cfg.default_aweversion and cfg.default_aweversion not in cfg.awe_versions:
        raise fail("default_aweversion", f"{cfg.default_aweversion!r} is not one of awe_versions: "
                   f"{', '.join(cfg.awe_versions)}")
    if cfg.submit == "drmaa" and cfg.is_remote:
        raise fail("submit", "'submit: drmaa' needs the scheduler's client library on this machine, "
                   "so it cannot be combined with 'host'; use 'submit: cli' for a remote DPU")
    poll = cfg.poll
    if poll.get("max_interval", math.inf) < poll.get("min_interval", 0):
        raise fail("poll", "max_interval is below min_interval")
