"""The shell side of the web features: ``dpu web``, ``dpu queue`` and ``dpu token``."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from typing import Any, List, Optional

from .. import tokens
from ..config import DPUConfig, current_user, default_dpu_name, discover, get_dpu
from ..errors import DPUError
from ..session import open_store
from ..store import LETTERS
from ..text import printable
from .mirror import STATUSES, Mirror
from .pages import duration, when
from .rows import Row

log = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    """``dpu web``: serve until Ctrl-C or SIGTERM."""
    try:
        from .server import make_server
    except ImportError as exc:
        raise DPUError(f"dpu web needs the web extra ({exc.name or exc} is not installed): "
                       "pip install 'dpu_slurm[web]'") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dpus = served(args.dpu)
    for entry in args.allowed_host:
        if not entry or any(ch.isspace() or ch in "/@?#" for ch in entry):
            raise DPUError(f"--allowed-host {entry!r} is not a host name: give NAME or NAME:PORT")
    if args.idle_timeout <= 0:
        raise DPUError("--idle-timeout must be a positive number of seconds")
    store = open_store()
    try:
        server = make_server(dpus, store, args.host, args.port, args.days, args.refresh,
                             allowed_hosts=args.allowed_host, idle_timeout=args.idle_timeout)
    except OSError as exc:
        store.close()
        raise DPUError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                       "pick another with --port") from None
    if not server.loopback:
        log.warning("listening on %s: anyone who reaches it sees every user's jobs and can try "
                    "tokens over plain HTTP; put it behind a TLS proxy", args.host)
    what = f"the queue of DPU {dpus[0].name}" if len(dpus) == 1 else \
        f"the queues of {len(dpus)} DPUs ({', '.join(d.name for d in dpus)})"
    print(f"Serving {what} on {server.url} (Ctrl-C stops)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
    return 0


def served(names: Optional[List[str]]) -> List[DPUConfig]:
    """The DPUs `dpu web` shows: those named with --dpu (in that order), else every configured one."""
    if names:
        return [get_dpu(n) for n in dict.fromkeys(names)]
    found, problems = discover()
    for problem in problems:
        log.warning("not served: %s", problem)
    if not found:
        raise DPUError("no DPU is configured; add a YAML file (dpu config check) or name one with --dpu")
    return [found[n] for n in sorted(found)]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def queue(args: argparse.Namespace) -> int:
    """``dpu queue``: the page's table in the terminal."""
    dpu = get_dpu(args.dpu or default_dpu_name())
    store = open_store()
    mirror = Mirror(dpu, store, args.days)
    try:
        mirror.refresh(force=True)
        rows = mirror.rows(args.user or "", (args.status or "").upper())
        warnings = mirror.warnings
    finally:
        mirror.close()
        store.close()
    now = time.time()
    for warning in warnings:
        print(f"dpu: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json(now) for r in rows], indent=1))
    else:
        print(table(rows, now))
    return 0


def table(rows: List[Row], now: float) -> str:
    """The rows as a plain-text table, for terminals."""
    head = ["JOBID", "USER", "SEQUENCE", "STATUS", "/".join(LETTERS), "SUBMITTED", "RUNNING", "OPTIONS"]
    lines = [[str(r.job_id), printable(r.user, 16), printable(r.sequence, 32), r.status,
              "/".join(map(str, r.counters)), when(r.submitted), duration(r.running_time(now)),
              printable(r.summary(), 48)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=False)]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in [head, *lines]]
    return "\n".join(text if rows else [*text, "(no jobs)"])


def token(args: argparse.Namespace) -> int:
    """``dpu token create|list|revoke``."""
    store = open_store()
    try:
        if args.token_command == "create":  # noqa: S105 - a subcommand name, not a secret
            secret, info = tokens.create(store, current_user(), args.label or "")
            if args.json:
                print(json.dumps({"id": info.id, "user": info.user, "token": secret}))
            else:
                print(secret)
                print(f"token {info.id} for {info.user}: shown once, keep it secret; send it as "
                      "'Authorization: Bearer TOKEN' to POST /api/run of `dpu web`", file=sys.stderr)
        elif args.token_command == "list":  # noqa: S105
            listed = tokens.list_tokens(store)
            if args.json:
                print(json.dumps([vars(t) for t in listed], indent=1))
            for t in listed if not args.json else []:
                print(f"{t.id}  {t.user}  created {when(t.created)}  last used "
                      f"{when(t.last_used) or 'never'}  {printable(t.label)}")
        else:
            tokens.revoke(store, args.id)
            print(f"token {args.id} revoked", file=sys.stderr)
    finally:
        store.close()
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The subcommands of this module, for cli.parser()."""
    w = sub.add_parser("web", help="serve the queue pages of every DPU (or those named) and the "
                                   "submission API")
    w.add_argument("--dpu", action="append", metavar="NAME",
                   help="serve this DPU; repeat for several (default: every configured DPU)")
    w.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    w.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    w.add_argument("--days", type=float, default=7.0, help="show jobs submitted in the last DAYS days")
    w.add_argument("--refresh", type=float, default=5.0, help="seconds between page refreshes")
    w.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="also answer requests for this Host (a proxy's name; needed off loopback); "
                        "repeatable")
    w.add_argument("--idle-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close connections idle this long; a request body must arrive within it "
                        "(default 10)")
    q = sub.add_parser("queue", parents=[common], help="every user's jobs on the DPU (the web page's table)")
    q.add_argument("--user", help="only this user's jobs")
    q.add_argument("--status", choices=[s.value for s in STATUSES] + [s.value.lower() for s in STATUSES])
    q.add_argument("--days", type=float, default=7.0, help="jobs submitted in the last DAYS days")
    t = sub.add_parser("token", help="tokens for the web submission API")
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="create|list|revoke")
    tc = tsub.add_parser("create", parents=[common], help="make a token (printed once)")
    tc.add_argument("--label", help="what the token is for")
    tsub.add_parser("list", parents=[common], help="your tokens (never the secrets)")
    tr = tsub.add_parser("revoke", parents=[common], help="delete a token")
    tr.add_argument("id", help="the token id (dpu token list)")
