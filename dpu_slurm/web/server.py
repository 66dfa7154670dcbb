"""``dpu web``: the DPU's queue page, its JSON endpoints and POST /api/run (stdlib HTTP server).

GET  /                      the queue: every user's jobs; ?user= and ?status= filter
GET  /api/queue             the same rows as JSON (the page refreshes itself from it)
GET  /job/USER/ID.STORE     one job: options, processes, the tail of its logs
GET  /api/job/USER/ID.STORE the same as JSON
POST /api/run               submit a run with a token (api.py)

Read-only apart from POST /api/run; every page is rendered with HTML autoescaping and the
browser is told to run no script but /static/queue.js (Content-Security-Policy).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import jinja2

from ..config import DPUConfig, current_user, packaged
from ..session import DPUSession
from ..store import LETTERS, Store
from .api import MAX_BODY, RunAPI
from .mirror import STATUSES, Mirror

log = logging.getLogger(__name__)

MAX_ROWS = 1000   # newest first; the JSON says how many there are in all
STATIC = {"queue.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    """HTML only (render.py's environment is for shell scripts): autoescape everything."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(packaged("templates") / "web")),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = when
    env.filters["duration"] = duration
    env.filters["tojson_text"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


def when(stamp: Optional[float]) -> str:
    return "" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    days, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


class App:
    """What the handlers share: the DPU, the mirror of its queue, the submission API."""

    def __init__(self, dpu: DPUConfig, store: Store, days: float = 7.0, refresh: float = 5.0,
                 user: Optional[str] = None) -> None:
        self.dpu = dpu
        self.store = store
        self.refresh = refresh
        self.mirror = Mirror(dpu, store, days)
        self.api = RunAPI(DPUSession(dpu, store, user or current_user()), self.mirror)

    def close(self) -> None:
        self.mirror.close()
        self.api.session.close()

    def queue(self, query: Dict[str, str]) -> Dict[str, Any]:
        self.mirror.refresh()
        user, status = query.get("user", ""), query.get("status", "").upper()
        rows = self.mirror.rows(user, status)
        now = time.time()
        return {"dpu": self.dpu.name, "description": self.dpu.description, "now": now,
                "updated": self.mirror.updated, "users": self.mirror.users(), "user": user,
                "statuses": list(STATUSES), "status": status, "letters": list(LETTERS),
                "warnings": list(self.mirror.warnings), "total": len(rows),
                "jobs": [r.to_json(now) for r in rows[:MAX_ROWS]]}

    def job(self, key: str) -> Optional[Dict[str, Any]]:
        self.mirror.refresh()
        found = self.mirror.job(key)
        if found is None:
            return None
        return {"dpu": self.dpu.name, "now": time.time(), "job": found["job"].to_json(time.time()),
                "processes": found["processes"], "logs_cut": found["logs_cut"]}


class QueueServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], app: App) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        host = address[0]
        self.loopback = _is_loopback(host)
        port = self.server_address[1]
        self.hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", host)}

    def server_close(self) -> None:
        super().server_close()
        self.app.close()


class Handler(BaseHTTPRequestHandler):
    server: QueueServer
    server_version = "dpu-web"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # -- plumbing -------------------------------------------------------------------------
    def send(self, status: int, body: bytes, ctype: str, extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": ctype,
                            "Content-Length": str(len(body)), **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, data: Any, extra: Optional[Dict[str, str]] = None) -> None:
        self.send(status, json.dumps(data, ensure_ascii=False).encode(),
                  "application/json; charset=utf-8", extra)

    def send_page(self, name: str, code: int = 200, **context: Any) -> None:
        html = templates().get_template(name).render(**context)
        self.send(code, html.encode(), "text/html; charset=utf-8")

    def host_ok(self) -> bool:
        """On loopback, refuse other Host names: a web page cannot rebind a name to us."""
        if not self.server.loopback:
            return True
        if self.headers.get("Host", "") in self.server.hosts:
            return True
        self.send_json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "unexpected Host header"})
        return False

    # -- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self.host_ok():
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        app = self.server.app
        try:
            if path == "/":
                data = app.queue(query)
                self.send_page("queue.html.j2", refresh=app.refresh, **data)
            elif path == "/api/queue":
                self.send_json(200, app.queue(query))
            elif path.startswith(("/api/job/", "/job/")):
                found = app.job(path.split("/job/", 1)[1])
                if found is None:
                    self.not_found(path.startswith("/api/"), "no such job on this page")
                elif path.startswith("/api/"):
                    self.send_json(200, found)
                else:
                    self.send_page("job.html.j2", letters=LETTERS, **found)
            elif path == "/favicon.ico":
                self.send(204, b"", "image/x-icon")
            elif path.startswith("/static/") and path[8:] in STATIC:
                name = path[8:]
                body = (packaged("templates") / "web" / name).read_bytes()
                self.send(200, body, STATIC[name], {"Cache-Control": "max-age=60"})
            else:
                self.not_found(path.startswith("/api/"), "no such page")
        except Exception:
            log.exception("GET %s failed", self.path)
            self.send_json(500, {"error": "internal error; see the dpu web log"})

    do_HEAD = do_GET

    def not_found(self, as_json: bool, message: str) -> None:
        if as_json:
            self.send_json(404, {"error": message})
        else:
            self.send_page("error.html.j2", code=404, message=message,
                           dpu=self.server.app.dpu.name)

    def do_POST(self) -> None:
        if not self.host_ok():
            return
        if urlsplit(self.path).path != "/api/run":
            self.send_json(405, {"error": "the page is read-only; POST /api/run submits"},
                           {"Allow": "GET, HEAD"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.send_json(411, {"error": "send the JSON body with a Content-Length"})
            return
        if int(length) > MAX_BODY:
            # Read a moderately large body away first: a client still sending when the server
            # closes sees a reset instead of the answer. Beyond 16 MB, just answer and close.
            left = int(length) if int(length) <= 16 * MAX_BODY else 0
            while left > 0:
                chunk = self.rfile.read(min(1 << 16, left))
                if not chunk:
                    break
                left -= len(chunk)
            self.close_connection = True
            self.send_json(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        try:
            status, data = self.server.app.api.handle(self.headers.get("Authorization", ""), body)
        except Exception:
            log.exception("POST /api/run failed")
            status, data = 500, {"error": "internal error; see the dpu web log"}
        extra = {"WWW-Authenticate": 'Bearer realm="dpu"'} if status == 401 else None
        self.send_json(status, data, extra)

    def refuse(self) -> None:
        self.send_json(405, {"error": "the page is read-only; POST /api/run submits"},
                       {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = refuse


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(dpu: DPUConfig, store: Store, host: str = "127.0.0.1", port: int = 8080,
                days: float = 7.0, refresh: float = 5.0) -> QueueServer:
    """A server ready to serve_forever(); port 0 picks a free port (see server_address)."""
    return QueueServer((host, port), App(dpu, store, days, refresh))
