"""Job cards: the small record of every submitted job that the queue page of a DPU reads.

Each user's store is private, so ``session.submit`` also drops a card per job into the DPU's job
index folder (config key ``job_index``; default ``<workdir>/index``, which only its user sees):
``INDEX/<user>/<jobid>.<store>.json``. A sysadmin makes a shared index once with
``install -d -m 1777 /shared/dpu/index`` (sticky, like /tmp: each user creates and owns only
their own folder). The page lists the index in one ``find`` call that also prints each card's
owner, so a card is believed only when its folder, its owner and its ``user`` field agree.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..config import DPUConfig, dpu_home
from ..errors import ConfigError, Unreachable
from ..store import Job
from ..transport import Transport

log = logging.getLogger(__name__)

CARD_VERSION = 1


@dataclass
class Card:
    """What the page needs of one job; ``jobdir`` is read by the server, never shown."""

    user: str
    store: str
    job_id: int
    dpu: str
    sequence: str
    options: Dict[str, Any]
    nproc: int
    ntasks: int
    created: float
    submitted: float
    jobdir: str
    native_ids: List[str]
    chunk: int
    time_limit: int

    @property
    def key(self) -> str:
        """Job ids are per store: user, id and store name a job on the page."""
        return f"{self.user}/{self.job_id}.{self.store}"

    @classmethod
    def from_job(cls, job: Job, store: str) -> Card:
        return cls(user=job.user, store=store, job_id=job.id, dpu=job.dpu, sequence=job.sequence,
                   options=job.options, nproc=job.nproc, ntasks=job.ntasks, created=job.created,
                   submitted=job.submitted or job.created, jobdir=job.jobdir,
                   native_ids=list(job.native_ids), chunk=int(job.dpu_options.get("chunk") or 0),
                   time_limit=int(job.dpu_options.get("time_limit") or 0))

    @classmethod
    def parse(cls, raw: bytes) -> Card:
        data = json.loads(raw)
        if data.get("v") != CARD_VERSION:
            raise ValueError(f"card version {data.get('v')!r}, this dpu_slurm reads {CARD_VERSION}")
        return cls(**{k: v for k, v in data.items() if k != "v"})

    def dump(self) -> bytes:
        return json.dumps({"v": CARD_VERSION, **vars(self)}).encode()


def index_dir(dpu: DPUConfig, transport: Transport) -> str:
    """The DPU's job index folder on its target."""
    if not dpu.job_index:
        return transport.expand(dpu.target_workdir()).rstrip("/") + "/index"
    try:
        text = dpu.job_index.format(name=dpu.name, dpu_home=dpu_home())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{dpu.path}: job_index: {dpu.job_index!r} holds an unknown or broken "
                          f"placeholder ({exc}); allowed: {{name}}, {{dpu_home}} (the index is "
                          "shared by every user, so not {user})") from None
    return transport.expand(text).rstrip("/")


def card_path(root: str, user: str, job_id: int, store: str) -> str:
    return f"{root}/{user}/{job_id}.{store}.json"


def write_card(transport: Transport, dpu: DPUConfig, job: Job, store: str) -> Optional[str]:
    """Drop the job's card; a failure is logged, never raised (the job is already queued)."""
    try:
        path = card_path(index_dir(dpu, transport), job.user, job.id, store)
        transport.write_files({path: Card.from_job(job, store).dump()})
        return path
    except Exception as exc:
        log.warning("could not write the job card of job %s on DPU %s (%s: %s); the queue page "
                    "will not list it", job.id, dpu.name, type(exc).__name__, exc)
        return None


@dataclass
class Listed:
    """One card file found in the index."""

    path: str
    user: str     # the folder it is in, checked against the file's owner
    mtime: float


def list_cards(transport: Transport, root: str, since: float) -> Tuple[List[Listed], List[str]]:
    """Cards modified after `since` (one ``find`` call) and the ones refused, with why."""
    res = transport.run(["find", root, "-mindepth", "2", "-maxdepth", "2", "-type", "f",
                         "-name", "*.json", "-printf", "%u\\t%T@\\t%P\\n"], timeout=60)
    if res.returncode != 0 and "No such file" in res.stderr:
        return [], []   # no job was submitted with a card yet
    if res.returncode != 0:
        raise Unreachable(f"cannot list the job index {root}: {(res.stderr or res.stdout).strip()}")
    found: List[Listed] = []
    refused: List[str] = []
    for line in res.stdout.splitlines():
        owner, _, rest = line.partition("\t")
        stamp, _, rel = rest.partition("\t")
        folder, _, name = rel.partition("/")
        if not name or "/" in name:
            continue
        if owner != folder:
            refused.append(f"a card in the folder of {folder!r} belongs to {owner!r}")
            continue
        try:
            mtime = float(stamp)
        except ValueError:
            continue
        if mtime >= since:
            found.append(Listed(f"{root}/{rel}", folder, mtime))
    return found, refused
