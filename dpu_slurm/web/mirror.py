"""Every user's jobs on one DPU, as the queue page and ``dpu queue`` show them.

The jobs come from the job cards (dpu_slurm/index.py) and from the server user's own store; their states
from one scheduler call for every user's jobs plus the workers' status records, merged by the
same code as ``dpu.get_status()`` (status.refresh) in an in-memory store that only this page uses.
"""
from __future__ import annotations

import json
import logging
import posixpath
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from ..config import DPUConfig
from ..errors import DPUError, Unreachable
from ..index import CARD_CAP, BadCard, Card, index_dir, max_nproc
from ..report import job_report
from ..session import DPUSession, JobView
from ..states import JobStatus
from ..status import poll_settings
from ..store import Job, Store
from ..text import clean, printable
from ..transport import Transport, connect
from ..transport.base import RECORD_CAP, job_file_cap
from ..transport.owned import Listed, OwnedFile
from ..worker import LOG, STATUS
from .guard import OwnersOnly
from .rows import Row, masked, masker, process_rows

log = logging.getLogger(__name__)

MAX_TIMED = 200     # worker records read per job to find when it started and ended
LOG_TAIL = 200      # log lines per process on the job page
LOG_PROCESSES = 50  # processes whose logs the job page shows
LOG_CAP = 64 << 10  # bytes read from the end of each of those logs
USER_PROCS = 200_000  # processes all cards of one user may claim (each card: index.max_nproc)
STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FINISHED)


class Mirror:
    """Every user's jobs on one DPU; thread-safe, refreshed at most every `interval` seconds."""

    def __init__(self, dpu: DPUConfig, own: Optional[Store] = None, days: float = 7.0,
                 transport: Optional[Transport] = None) -> None:
        self.dpu = dpu
        self.own = own            # the server user's store: its jobs show even without a card
        self.days = days
        # Every job file is read as its owner's: see guard.py and transport/owned.py.
        self.transport = OwnersOnly(transport or connect(dpu))
        # The page's own session on an in-memory store: polled like any user's, for all users.
        self.session = DPUSession(dpu, Store(Path(":memory:")), transport=self.transport, retries=False)
        self.store = self.session.store   # the page's view: named Store methods only, no SQL here
        self.scheduler = self.session.scheduler
        self.scheduler.all_users = True
        self.cards: Dict[int, Card] = {}      # mirror id -> card
        self.uids: Dict[int, int] = {}        # mirror id -> uid that owns the job's files
        self.ids: Dict[str, int] = {}         # card key -> mirror id
        self.read: Dict[str, float] = {}      # card path -> mtime when read
        self.paths: Dict[str, str] = {}       # card path -> key of the job it added
        self.bad: Dict[str, str] = {}         # card path -> why its content was refused
        self.warned: Set[str] = set()         # refusals logged already (each is logged once)
        self.max_nproc = max_nproc(dpu)
        self.times: Dict[int, Tuple[Optional[float], Optional[float]]] = {}
        self.lock = threading.RLock()         # the store, the transport and the maps above
        self.updated = 0.0
        self.unreachable = ""                 # why the last refresh could not reach the DPU
        self.warnings: List[str] = []
        self.broken: Set[str] = set()         # job keys that cannot be shown (logged once)
        self.settled: Dict[int, Row] = {}     # rows that no longer change: finished, times known
        self.interval = max(1.0, poll_settings(dpu)[0])
        self.own_session: Optional[DPUSession] = None   # polls `own` for its retries

    def close(self) -> None:
        """Close the session and the mirror's store."""
        self.session.close()
        if self.own_session is not None:
            self.own_session.close()
        self.store.close()

    # -- refreshing -----------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Read new cards and refresh the jobs' states (`force`: even within the interval)."""
        with self.lock:
            if not force and time.time() - self.updated < self.interval:
                return
            warnings: List[str] = []
            unreachable = ""
            try:
                self._add_cards(warnings)
            except (Unreachable, DPUError) as exc:
                warnings.append(str(exc))
                unreachable = str(exc) if isinstance(exc, Unreachable) else ""
            self._add_own()
            self.session.refresh(force=True)
            self._own_retries()
            if self.session.unreachable:
                warnings.append(f"{self.session.unreachable}; showing the last known states")
                unreachable = self.session.unreachable
            else:
                try:
                    self._times()
                except Unreachable as exc:
                    warnings.append(f"{exc}; showing the last known states")
                    unreachable = str(exc)
            self.warnings = warnings
            self.unreachable = unreachable
            self.updated = time.time()

    def _own_retries(self) -> None:
        """The page is a poller too: its user's own jobs get their retry policies (retries.py)."""
        if self.own is None:
            return
        if self.own_session is None:
            self.own_session = DPUSession(self.dpu, self.own)
        self.own_session.refresh()
        for line in self.own_session.retried:
            log.info("%s", line)
        self.own_session.retried.clear()

    def _add_cards(self, warnings: List[str]) -> None:
        """Cards are claims: only those that pass every check of index.py and owned.py show; a
        card that is gone (deleted, aged out, now refused) takes its job off the page."""
        root = index_dir(self.dpu, self.transport)
        scan = self.transport.scan_index(root, time.time() - self.days * 86400)
        # printable(): names come from other users' folders; a terminal must not obey them.
        refused = [printable(f"{name}: {why}") for name, why in scan.refused]
        listed = {c.path: c for c in scan.cards}
        for path in [p for p in self.read if p not in listed]:
            self._drop_card(path)
        new = sorted((c for c in scan.cards if self.read.get(c.path) != c.mtime),
                     key=lambda c: c.mtime, reverse=True)   # newest first: they win the budget
        got = self.transport.read_owned(
            [OwnedFile(posixpath.dirname(c.path), posixpath.basename(c.path), c.uid) for c in new],
            CARD_CAP, private=True)
        accepted: List[Tuple[Listed, Card]] = []
        # A changed card (a rerun rewrote it) updates its job in place, as does the first card of
        # a job shown from our own store till then; others are read anew.
        keys = {c.path: self.paths.get(c.path) or c.path[len(root) + 1:-len(".json")] for c in new}
        carded = set(self.paths.values())
        changed = {p: self.ids[k] for p, k in keys.items()
                   if k in self.ids and (p in self.paths or k not in carded)}
        for item in new:
            if item.path not in changed:
                self._drop_card(item.path)
        claimed = {c.jobdir: c.key for j, c in self.cards.items() if j not in changed.values()}
        procs: Dict[str, int] = {}   # per user: processes of their cards on the page
        for c in self.cards.values():
            procs[c.user] = procs.get(c.user, 0) + c.nproc
        for item in new:
            why = self._check_card(item, got.data.get(item.path), got.refused.get(item.path), claimed)
            jid = changed.get(item.path)
            if jid is not None:
                if isinstance(why, Card) and not (why.follows(self.cards[jid])
                                                  and item.uid == self.uids[jid]):
                    why = "changed its job, job folder, owner or size (it may only follow a rerun)"
                if isinstance(why, Card):
                    self.read[item.path] = item.mtime
                    accepted.append((item, why))
                    continue
                self._drop_card(item.path)   # now refused: its job leaves the page
                changed.pop(item.path)
            self.read[item.path] = item.mtime
            if isinstance(why, Card) and procs.get(why.user, 0) + why.nproc > USER_PROCS:
                why = f"the cards of {why.user} claim more than {USER_PROCS} processes in all"
            if isinstance(why, Card):
                accepted.append((item, why))
                claimed[why.jobdir] = why.key
                procs[why.user] = procs.get(why.user, 0) + why.nproc
            elif why:
                self.bad[item.path] = why
        # The job folder a card names must be a folder of the card's owner (one round trip).
        dirs = self.transport.read_owned([OwnedFile(c.jobdir, "", i.uid) for i, c in accepted], 1)
        for item, card in accepted:
            if dirs.data.get(card.jobdir) is None:
                if item.path in changed:
                    self._drop_card(item.path)
                    self.read[item.path] = item.mtime
                self.bad[item.path] = f"its job folder {dirs.refused.get(card.jobdir, 'does not exist')}"
            elif item.path in changed:
                self._follow(changed[item.path], card)
                self.paths[item.path] = card.key
            elif self._add(card, item.uid):
                self.paths[item.path] = card.key
        refused += [printable(f"{p[len(root) + 1:]}: {why}") for p, why in sorted(self.bad.items())]
        for text in refused:
            if text not in self.warned:
                self.warned.add(text)
                log.warning("job card ignored: %s", text)
        if refused:
            warnings.append(f"{len(refused)} job card(s) ignored: {refused[0]}")

    def _check_card(self, item: Listed, raw: Optional[bytes], refused: Optional[str],
                    claimed: Dict[str, str]) -> Card | str:
        """The card, or why it is refused ("": nothing to add, e.g. it vanished meanwhile)."""
        if refused:
            return refused
        if raw is None:
            return ""
        try:
            card = Card.parse(raw, self.max_nproc)
        except BadCard as exc:
            return str(exc)
        if card.user != item.user:
            return f"names user {card.user!r}, but it is in the folder of {item.user!r}"
        if card.dpu != self.dpu.name:
            return f"is a card of DPU {card.dpu!r}, not of {self.dpu.name!r}"
        if card.jobdir in claimed:   # the same job from our own store is shown already
            return "" if claimed[card.jobdir] == card.key else "names the job folder of another job"
        return card

    def _follow(self, jid: int, card: Card) -> None:
        """A rerun's card: its processes queued again at their new attempt, their rows read anew."""
        self.store.follow_rerun(jid, card.native_ids, card.current_attempts(), card.earlier, card.time_limit)
        self.cards[jid] = card
        self.settled.pop(jid, None)   # its row and times change: no longer settled
        self.times.pop(jid, None)

    def _drop_card(self, path: str) -> None:
        """Forget what a card added, so it is read again (or its job leaves the page)."""
        self.read.pop(path, None)
        self.bad.pop(path, None)
        key = self.paths.pop(path, None)
        if key is not None and key in self.ids:
            jid = self.ids.pop(key)
            card = self.cards.pop(jid)
            self.uids.pop(jid, None)
            self.times.pop(jid, None)
            self.settled.pop(jid, None)   # ids of the page's store may be given again
            self.transport.owners.pop(card.jobdir, None)
            self.transport.caps.pop(card.jobdir, None)
            self.store.forget([jid])

    def _add_own(self) -> None:
        if self.own is None:
            return
        store = self.own.meta_get("store_id")
        if store is None:
            return  # this user never submitted a job
        name, uid = self.transport.account()   # whose files our jobs are on the DPU, as cards name it
        for job in self.own.jobs_since(self.dpu.name, time.time() - self.days * 86400):
            if f"{name}/{job.id}.{store}" in self.ids:
                continue
            if job.jobdir and job.jobdir not in self.transport.owners:
                card = Card.from_job(job, store)
                card.user = name
                self._add(card, uid)

    def _add(self, card: Card, uid: int) -> bool:
        """Copy a card's job into the page's store (with the card's own times: 'young' and
        'submitted' use them); a job that does not fit is skipped, and logged once."""
        if card.key in self.ids:
            return False
        try:
            jid = self.store.record_mirrored(
                self.dpu.name, card.user, card.sequence, card.options,
                {"chunk": card.chunk, "time_limit": card.time_limit}, card.nproc, card.ntasks,
                card.jobdir, card.native_ids, card.created, card.submitted)
        except (TypeError, ValueError, OverflowError, sqlite3.Error) as exc:
            if card.key not in self.broken:
                self.broken.add(card.key)
                log.warning("job %s cannot be shown (%s: %s); skipped", printable(card.key),
                            type(exc).__name__, printable(str(exc)))
            return False
        self.broken.discard(card.key)
        if card.earlier:   # a card of a job rerun before the page first saw it
            self.store.follow_rerun(jid, card.native_ids, card.current_attempts(), card.earlier)
        self.cards[jid] = card
        self.uids[jid] = uid
        self.ids[card.key] = jid
        self.transport.owners[card.jobdir] = uid
        self.transport.caps[card.jobdir] = job_file_cap(card.nproc)
        return True

    def _times(self) -> None:
        """When each job started (its first process) and ended (its last), from worker records."""
        wanted: Dict[int, List[OwnedFile]] = {}
        unsettled = [jid for jid in self.cards if self.times.get(jid, (None, None))[1] is None]
        for job in self.store.jobs(ids=unsettled) if unsettled else []:
            start, end = self.times.get(job.id, (None, None))
            if start is not None and job.finished is None:
                continue
            started = self.store.started_indices(job.id, MAX_TIMED)  # not a row per process
            wanted[job.id] = [OwnedFile(job.jobdir, f"p/{i}/{STATUS}", self.uids[job.id])
                              for i in started]
        items = [p for group in wanted.values() for p in group]
        raw = self.transport.read_owned(items, RECORD_CAP).data if items else {}
        jobs = {j.id: j for j in self.store.jobs(ids=list(wanted))} if wanted else {}
        for jid, group in wanted.items():
            records = [_record(raw.get(p.path)) for p in group]
            starts = [r["started"] for r in records if _time(r.get("started"))]
            ends = [r["ended"] for r in records if _time(r.get("ended"))]
            start = min(starts) if starts else self.times.get(jid, (None, None))[0]
            finished = jobs[jid].finished
            end = (max(ends) if ends else finished) if finished is not None else None
            self.times[jid] = (start, end)

    # -- reading --------------------------------------------------------------------------
    def rows(self, user: str = "", status: str = "") -> List[Row]:
        """Newest first, filtered by user and status; a job whose row cannot be made is left
        out with a warning (one broken card must not take the page down for everyone).
        A finished job whose times are known keeps its row: only the others are read again."""
        out = []
        with self.lock:
            for jid in [j for j in self.settled if j not in self.cards]:
                del self.settled[jid]   # its card is gone
            todo = [jid for jid in self.cards if jid not in self.settled]
            jobs = (self.store.jobs() if len(todo) > 500 else self.store.jobs(ids=todo)) if todo else []
            wanted = set(todo)
            jobs = [j for j in jobs if j.id in wanted]
            counts = self.store.counts([j.id for j in jobs])
            fresh: Dict[int, Row] = {}
            for job in jobs:
                try:
                    fresh[job.id] = row = self._row(job, JobView(job, counts[job.id]))
                except Exception as exc:  # any bad field: skip this row only
                    key = self.cards[job.id].key if job.id in self.cards else str(job.id)
                    if key not in self.broken:   # said once, not at every refresh
                        self.broken.add(key)
                        log.warning("job %s cannot be shown (%s: %s); skipped", printable(key),
                                    type(exc).__name__, printable(str(exc)))
                    continue
                if job.finished is not None and row.ended is not None:
                    self.settled[job.id] = row
            for jid in self.cards:
                made = self.settled.get(jid) or fresh.get(jid)
                if made is None or (user and made.user != user) or (status and made.status != status):
                    continue
                out.append(made)
        out.sort(key=_newest, reverse=True)
        return out

    def users(self) -> List[str]:
        """The users who have jobs on the page, sorted."""
        with self.lock:
            return sorted({c.user for c in self.cards.values()})

    def _row(self, job: Job, view: JobView) -> Row:
        card = self.cards[job.id]
        start, end = self.times.get(job.id, (None, None))
        mask = masker(card.jobdir)
        options = clean({k: masked(v, mask) for k, v in card.options.items()})
        # clean(): text that cannot be encoded (a lone surrogate) must not fail a page.
        return Row(clean(card.key), card.job_id, clean(card.user), clean(card.sequence), options,
                   view.status, view.ok, view.counts.letters, job.nproc, view.counts.queued,
                   view.counts.running, card.submitted, start, end, card.after)

    def job(self, key: str) -> Optional[Dict[str, Any]]:
        """One job with its processes and the tail of their logs (paths masked), or None."""
        with self.lock:
            jid = self.ids.get(key)
            if jid is None:
                return None
            job = self.store.job(jid)
            row = self._row(job, JobView(job, self.store.counts([jid])[jid]))
            procs = self.store.procs(jid)
            usage = {k: v for k, v in job_report(self.store, job).items() if k != "rows"}  # worst: enough
            # Each log only as a regular file of the job's owner, from its folder, its tail only.
            items = {p.idx: OwnedFile(job.jobdir, f"p/{p.idx}/{LOG}", self.uids[jid])
                     for p in procs[:LOG_PROCESSES]}
            got = self.transport.read_owned(list(items.values()), LOG_CAP, tail=True)  # SSH: not thread-safe
            current, history = self.store.attempt_numbers(jid), self.store.attempts(jid)
        mask = masker(self.cards[jid].jobdir)
        logs = {idx: [clean(mask(line)) for line in _tail(got.data.get(item.path))]
                for idx, item in items.items()}
        processes, earlier = process_rows(procs, logs, current, history, mask)
        return {"job": row, "processes": processes, "earlier": earlier,
                "logs_cut": max(0, len(procs) - len(items)), "usage": usage}


def _newest(row: Row) -> Tuple[float, str]:
    try:
        return float(row.submitted), row.key
    except (TypeError, ValueError):
        return 0.0, row.key


def _record(raw: Optional[bytes]) -> Dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tail(raw: Optional[bytes]) -> List[str]:
    if not raw:
        return []
    lines = raw.decode("utf-8", "replace").splitlines()
    if len(raw) >= LOG_CAP:
        lines = lines[1:]   # the read began inside a line
    return lines[-LOG_TAIL:]


def _time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11
