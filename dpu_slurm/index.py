"""The job index: job cards, the small record of every submitted job that the queue page of a DPU reads.

Each user's store is private, so ``session.submit`` also drops a card per job into the DPU's job
index folder (config key ``job_index``; default ``<workdir>/index``, which only its user sees):
``INDEX/<user>/<jobid>.<store>.json``. A sysadmin makes a shared index once with
``install -d -m 1777 /shared/dpu/index`` (sticky, like /tmp: each user creates and owns only
their own folder); when the first submit creates it, it is made 1777 too.

A card is a claim, not a fact: the page reads it only from the folder of the user it names,
owned by that user's uid and writable by nobody else, as a regular file of that uid (see
transport/owned.py); every field is checked (types, ranges, lengths) before it is used, and the
job folder it names must belong to the same uid. A card that fails is skipped with a warning.

The session writes cards and the page (web/mirror.py) reads them: this module sits below both,
so the session never imports the web layer.
"""
from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import DPUConfig, dpu_home, fill
from .errors import ConfigError
from .graph import MODES
from .store import Job
from .transport import Transport

log = logging.getLogger(__name__)

CARD_VERSION = 1
CARD_CAP = 64 << 10          # bytes of one card
MAX_NPROC = 100_000          # processes a card may claim; config: web: {max_nproc: N}
MAX_TEXT = 4096              # characters of one path or name in a card
MAX_VALUE = 32768            # characters of one option value (the whole card: CARD_CAP bytes)
MAX_OPTIONS = 200            # options of one card
MAX_LIST = 1000              # items of one option value that is a list
MAX_NATIVE = 10_000          # native scheduler ids of one card
MAX_EARLIER = 1000           # earlier attempts of one card (the newest are kept)
MAX_REASON = 300             # characters of the reason of one earlier attempt (cut on write)
MAX_ATTEMPT = 10**6
OUTCOME_LETTERS = frozenset("NEASU")
OPTIONAL = ("earlier", "after")   # fields older cards do not have
MAX_AFTER = 100              # jobs one card may say it waits for
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@$-]{0,255}")   # user names, also of SSSD/LDAP


class BadCard(ValueError):
    """A card that fails a check; the message says which field and why."""


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
    # Each process's earlier attempts of a rerun: [index, attempt, outcome letters, reason].
    earlier: List[List[Any]] = field(default_factory=list)
    # The jobs of the same store this one waits for (graph.py): {"jobs": [ids], "mode": "ok"}.
    after: Dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Job ids are per store: user, id and store name a job on the page."""
        return f"{self.user}/{self.job_id}.{self.store}"

    @classmethod
    def from_job(cls, job: Job, store: str) -> Card:
        """The card of a job just submitted from `store`."""
        return cls(user=job.user, store=store, job_id=job.id, dpu=job.dpu, sequence=job.sequence,
                   options=job.options, nproc=job.nproc, ntasks=job.ntasks, created=job.created,
                   submitted=job.submitted or job.created, jobdir=job.jobdir,
                   native_ids=list(job.native_ids), chunk=int(job.dpu_options.get("chunk") or 0),
                   time_limit=int(job.dpu_options.get("time_limit") or 0),
                   after=dict(job.dpu_options.get("after") or {}))

    @classmethod
    def parse(cls, raw: bytes, max_nproc: int = MAX_NPROC) -> Card:
        """A checked card, or BadCard saying what is wrong with it."""
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise BadCard(f"not a JSON card ({str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise BadCard("not a JSON object")
        if data.get("v") != CARD_VERSION:
            raise BadCard(f"card version {_short(data.get('v'))}, this dpu_slurm reads {CARD_VERSION}")
        fields = {k: v for k, v in data.items() if k != "v"}
        wanted = set(cls.__dataclass_fields__)
        if not set(wanted) - set(OPTIONAL) <= set(fields) <= wanted:
            odd = sorted((set(fields) ^ wanted) - (set(OPTIONAL) - set(fields)))
            raise BadCard(f"fields missing or unknown: {', '.join(map(str, odd))[:80]}")
        card = cls(**fields)
        card.check(max_nproc)
        return card

    def check(self, max_nproc: int) -> None:
        """Refuse a card read from the shared index whose fields are out of range (raises BadCard)."""
        _text("user", self.user, 256)
        if not _NAME.fullmatch(self.user):
            raise BadCard(f"user {_short(self.user)} is not a user name")
        if not isinstance(self.store, str) or not _NAME.fullmatch(self.store):
            raise BadCard(f"store {_short(self.store)} is not a store id")
        _int("job_id", self.job_id, 1, 2**62)
        _text("dpu", self.dpu, 200)
        _text("sequence", self.sequence, 1000)
        _options(self.options)
        _int("nproc", self.nproc, 1, max_nproc)
        _int("ntasks", self.ntasks, 1, 1000)
        for name in ("created", "submitted"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not 0 <= value < 1e11:
                raise BadCard(f"{name} {_short(value)} is not a time")
        _text("jobdir", self.jobdir, MAX_TEXT)
        if not self.jobdir.startswith("/") or posixpath.normpath(self.jobdir) != self.jobdir \
                or "\0" in self.jobdir:
            raise BadCard("jobdir is not a plain absolute path")
        if not isinstance(self.native_ids, list) or len(self.native_ids) > MAX_NATIVE:
            raise BadCard(f"native_ids must be a list of at most {MAX_NATIVE} ids")
        for native in self.native_ids:
            if native != "":  # "": a chunk that was never submitted (reconcile.py)
                _text("native id", native, 200)
        _int("chunk", self.chunk, 0, 10**9)
        _int("time_limit", self.time_limit, 0, 10**9)
        _earlier(self.earlier, self.nproc, self.ntasks)
        _after(self.after)

    def follows(self, old: Card) -> bool:
        """Whether this card may replace `old` (a rerun rewrote it): the same job, job folder
        and size; only its ids, times, limits and attempts may change."""
        return all(getattr(self, k) == getattr(old, k) for k in ("key", "jobdir", "nproc", "ntasks"))

    def current_attempts(self) -> Dict[int, int]:
        """Process index -> its current attempt, for the processes that were rerun."""
        out: Dict[int, int] = {}
        for idx, attempt, _, _ in self.earlier:
            out[idx] = max(out.get(idx, 1), attempt + 1)
        return out

    def dump(self) -> bytes:
        """The card as JSON bytes with its format version (no `earlier` when there is none, so
        a page of an older dpu_slurm still reads it)."""
        data = {"v": CARD_VERSION, **vars(self)}
        for name in OPTIONAL:
            if not data[name]:
                del data[name]
        return json.dumps(data).encode()


def earlier_of(rows: Sequence[Tuple[Any, ...]]) -> List[List[Any]]:
    """A card's `earlier` from store.attempts() rows: every attempt but each process's latest,
    reasons cut to MAX_REASON; the newest MAX_EARLIER of them."""
    latest: Dict[int, int] = {}
    for row in rows:
        latest[row[0]] = max(latest.get(row[0], 0), row[1])
    out = [[int(i), int(a), str(o), str(r or "")[:MAX_REASON]] for i, a, o, r, *_ in rows
           if a < latest[i] and o]
    return _newest(out, MAX_EARLIER) if len(out) > MAX_EARLIER else out


def _newest(entries: List[List[Any]], keep: int) -> List[List[Any]]:
    """The `keep` latest attempts, in (index, attempt) order: the oldest go first, so each
    process keeps its last ones (and the page still knows its current attempt)."""
    kept = sorted(entries, key=lambda e: e[1])[len(entries) - keep:] if keep > 0 else []
    return sorted(kept, key=lambda e: (e[0], e[1]))


def index_dir(dpu: DPUConfig, transport: Transport) -> str:
    """The DPU's job index folder on its target."""
    if not dpu.job_index:
        return transport.expand(dpu.target_workdir()).rstrip("/") + "/index"
    try:
        text = fill(dpu.job_index, name=dpu.name, dpu_home=dpu_home())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{dpu.path}: job_index: {dpu.job_index!r} holds an unknown or broken "
                          f"placeholder ({exc}); allowed: {{name}}, {{dpu_home}} (the index is "
                          "shared by every user, so not {user})") from None
    return transport.expand(text).rstrip("/")


def card_path(root: str, user: str, job_id: int, store: str) -> str:
    """Where the card of one user's job lies under the index root."""
    return f"{root}/{user}/{job_id}.{store}.json"


def write_card(transport: Transport, dpu: DPUConfig, job: Job, store: str,
               earlier: Optional[List[List[Any]]] = None) -> Optional[str]:
    """Drop the job's card (with the processes' `earlier` attempts, see earlier_of); a failure
    is logged, never raised (the job is already queued)."""
    try:
        root = index_dir(dpu, transport)
        card = Card.from_job(job, store)
        card.earlier = list(earlier or [])
        card.user = transport.account()[0]   # the folder is the target account's (SSH: its login)
        card.check(max_nproc(dpu))           # what the page would refuse is not written
        data = card.dump()
        while len(data) > CARD_CAP and card.earlier:   # history is the part a page can do without
            card.earlier = _newest(card.earlier, len(card.earlier) // 2)
            data = card.dump()
        if len(data) > CARD_CAP:
            raise BadCard(f"the card would have {len(data)} bytes, more than the {CARD_CAP} a page reads")
        transport.write_own(root, card.user, f"{job.id}.{store}.json", data)
        return card_path(root, card.user, job.id, store)
    except Exception as exc:
        log.warning("could not write the job card of job %s on DPU %s (%s); the job is submitted, "
                    "but the queue page will not list it", job.id, dpu.name, exc)
        return None


def own_job_ids(transport: Transport, dpu: DPUConfig) -> List[int]:
    """The job ids of this account's cards in the DPU's index: its jobs from every store (every
    machine it submits from), as far as their cards were written."""
    name, uid = transport.account()
    ids = set()
    for card in transport.scan_index(index_dir(dpu, transport), 0.0).cards:
        head, _, rest = posixpath.basename(card.path).partition(".")
        if card.user == name and card.uid == uid and head.isdigit() and rest.endswith(".json"):
            ids.add(int(head))
    return sorted(ids)


def max_nproc(dpu: DPUConfig) -> int:
    """The most processes a card may claim: config ``web: {max_nproc: N}``, else MAX_NPROC."""
    value = int((dpu.web or {}).get("max_nproc") or 0)
    return value if value > 0 else MAX_NPROC


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a card may hold")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(name: str, value: Any, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadCard(f"{name} must be a text of 1 to {limit} characters, not {_short(value)}")
    _encodable(name, value)


def _encodable(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadCard(f"{name} holds a lone surrogate (text that is not Unicode)") from None


def _int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadCard(f"{name} must be an integer from {low} to {high}, not {_short(value)}")


def _earlier(earlier: Any, nproc: int, ntasks: int) -> None:
    if not isinstance(earlier, list) or len(earlier) > MAX_EARLIER:
        raise BadCard(f"earlier must be a list of at most {MAX_EARLIER} attempts, not {_short(earlier)}")
    seen = set()
    for entry in earlier:
        if not isinstance(entry, list) or len(entry) != 4:
            raise BadCard(f"earlier holds {_short(entry)}; each attempt is [index, attempt, outcome, reason]")
        idx, attempt, outcome, reason = entry
        _int("earlier index", idx, 0, nproc - 1)
        _int("earlier attempt", attempt, 1, MAX_ATTEMPT)
        if (idx, attempt) in seen:
            raise BadCard(f"earlier lists attempt {attempt} of process {idx} twice")
        seen.add((idx, attempt))
        if not isinstance(outcome, str) or not 1 <= len(outcome) <= ntasks \
                or not set(outcome) <= OUTCOME_LETTERS:
            raise BadCard(f"earlier outcome {_short(outcome)} of process {idx} must be 1 to {ntasks} "
                          "letters among N, E, A, S, U")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise BadCard(f"earlier reason of process {idx} must be a text of at most {MAX_REASON} "
                          f"characters, not {_short(reason)}")
        _encodable("earlier reason", reason)


def _after(after: Any) -> None:
    if after == {}:
        return
    if not isinstance(after, dict) or set(after) != {"jobs", "mode"} or after["mode"] not in MODES \
            or not isinstance(after["jobs"], list) or not 1 <= len(after["jobs"]) <= MAX_AFTER:
        raise BadCard(f"after must be {{jobs: [1 to {MAX_AFTER} ids], mode: ok|any|each}}, "
                      f"not {_short(after)}")
    for jid in after["jobs"]:
        _int("after job", jid, 1, 2**62)


def _scalar(name: str, value: Any) -> None:
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadCard(f"option {name} is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise BadCard(f"option {name} is longer than {MAX_VALUE} characters")
        _encodable(f"option {name}", value)
        return
    raise BadCard(f"option {name} is a {type(value).__name__}; options are texts, numbers, "
                  "true/false, null, lists of those or one level of names to those (like pars)")


def _flat(name: str, value: Any) -> None:
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise BadCard(f"option {name} lists more than {MAX_LIST} values")
        for item in value:
            _scalar(name, item)
    else:
        _scalar(name, value)


def _options(options: Any) -> None:
    if not isinstance(options, dict) or len(options) > MAX_OPTIONS:
        raise BadCard(f"options must be a mapping of at most {MAX_OPTIONS} names to values, "
                      f"not {_short(options)}")
    for key, value in options.items():
        _text("option name", key, 200)
        if isinstance(value, dict):  # a parameter set such as pars={'max_iter': 5}: one level
            if len(value) > MAX_LIST:
                raise BadCard(f"option {_short(key)} holds more than {MAX_LIST} names")
            for sub, item in value.items():
                _text(f"a name in option {_short(key)}", sub, 200)
                _flat(f"{_short(key)}[{_short(sub)}]", item)
        else:
            _flat(_short(key), value)
