"""The pages of one DPU in ``dpu web``: its routes and its state (hub.py serves several).

GET  /                      the queue: every user's jobs; ?user= and ?status= filter
GET  /api/queue             the same rows as JSON (the page refreshes itself from it)
GET  /job/USER/ID.STORE     one job: options, processes, the tail of its logs
GET  /api/job/USER/ID.STORE the same as JSON
POST /api/run               submit a run with a token (api.py)

Each path is also served under /dpu/NAME/ (hub.py); without the prefix only while the server
shows a single DPU. The request guard (Host allow-list, limits, request log) is hostguard.py.

The queue is served from the last snapshot (state.py): no request waits for the scheduler. Job
pages read their log files in a small thread pool, with a timeout; submits run in their own pool.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import DPUConfig, current_user, packaged
from ..session import DPUSession
from ..store import LETTERS, Store
from ..text import printable
from .api import MAX_BODY, RunAPI
from .mirror import STATUSES, Mirror
from .pages import html, json_bytes, json_safe
from .state import Entry, Refresher

log = logging.getLogger(__name__)

MAX_ROWS = 1000          # newest first; the JSON says how many there are in all
DRAIN = 16 * MAX_BODY    # a too large body up to this size is read away before answering 413
JOB_TIMEOUT = 20.0       # seconds a job page may take to read its files
STATIC = {"queue.js": "text/javascript; charset=utf-8", "overview.js": "text/javascript; charset=utf-8",
          "common.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"


class App:
    """What the routes share: the DPU, the mirror of its queue and its refresher, the API."""

    def __init__(self, dpu: DPUConfig, store: Store, days: float = 7.0, refresh: float = 5.0,
                 user: Optional[str] = None, poll_floor: float = 1.0,
                 body_timeout: float = 10.0, base: str = "") -> None:
        self.dpu = dpu
        self.base = base           # where its pages are: "" or /dpu/NAME
        self.refresh = refresh
        self.body_timeout = body_timeout
        # Own connections to the user's store (same journal): the page's reads never queue
        # behind a submit, nor token checks behind a slow one.
        self.mirror = Mirror(dpu, Store(store.path, journal=store.journal), days)
        self.refresher = Refresher(self.mirror, poll_floor, base)
        self.api = RunAPI(DPUSession(dpu, store, user or current_user()),
                          Store(store.path, journal=store.journal), self.refresher.wake, base=base)
        self.job_pool = ThreadPoolExecutor(8, "dpu-web-job")
        self.submit_pool = ThreadPoolExecutor(32, "dpu-web-submit")

    def start(self) -> None:
        """Start the background refresh."""
        self.refresher.start()

    def close(self) -> None:
        """Stop the refresh and the worker pools; close the stores and connections."""
        self.refresher.stop()
        self.job_pool.shutdown(wait=False, cancel_futures=True)
        self.submit_pool.shutdown(wait=False, cancel_futures=True)
        if self.mirror.own is not None:
            self.mirror.own.close()
        self.mirror.close()
        self.api.token_store.close()
        self.api.session.close()

    def queue(self, user: str = "", status: str = "") -> Tuple[Dict[str, Any], List[Entry], float]:
        """The page's data from the last snapshot (its age included), its jobs, and now."""
        snap = self.refresher.snapshot
        now = time.time()
        entries = snap.select(user, status)
        meta = {"dpu": self.dpu.name, "description": self.dpu.description, "base": self.base, "now": now,
                "updated": snap.updated or None, "age": snap.age(now), "users": list(snap.users),
                "user": user, "statuses": list(STATUSES), "status": status, "letters": list(LETTERS),
                "warnings": list(snap.warnings), "total": len(entries)}
        return meta, entries[:MAX_ROWS], now

    def known(self, key: str) -> bool:
        """True when the job is in the current snapshot."""
        return key in self.refresher.snapshot.keys

    def job(self, key: str) -> Optional[Dict[str, Any]]:
        """One job with its processes and logs (runs in a worker thread: it reads files)."""
        found = self.mirror.job(key)
        if found is None:
            return None
        now = time.time()
        return json_safe({"dpu": self.dpu.name, "now": now, "job": found["job"].to_json(now),
                          "processes": found["processes"], "earlier": found["earlier"],
                          "logs_cut": found["logs_cut"], "usage": found["usage"]})


# -- responses ------------------------------------------------------------------------------
def json_response(status: int, data: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    """A JSON response."""
    return Response(json_bytes(data), status, headers, JSON)


def page(name: str, code: int = 200, **context: Any) -> Response:
    """An HTML page rendered from template `name`."""
    return Response(html(name, **context), code, media_type=HTML)


def error(request: Request, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> Response:
    """JSON under /api/, else the error page."""
    if local_path(request).startswith("/api/"):
        return json_response(status, {"error": message}, headers)
    app = request.app.state.hub.app_of(request)
    dpu, home = (app.dpu.name, app.base + "/") if app is not None else ("", "/")
    response = page("error.html.j2", status, message=message, dpu=dpu, home=home)  # code: positional
    response.headers.update(headers or {})
    return response


class Refused(Exception):
    """A request answered with an error before it reaches the API."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


def local_path(request: Request) -> str:
    """The request's path within its DPU: /dpu/NAME/api/queue -> /api/queue."""
    path = request.url.path
    if path.startswith("/dpu/"):
        parts = path.split("/", 3)
        return "/" + (parts[3] if len(parts) > 3 else "")
    return path


# -- routes ---------------------------------------------------------------------------------
def _app(request: Request) -> App:
    """The DPU of the request's path (hub.py); 404 when there is none."""
    app = request.app.state.hub.app_of(request)
    if app is None:
        raise HTTPException(404, request.app.state.hub.no_such_dpu(request))
    return app


def _filters(request: Request) -> Tuple[str, str]:
    return request.query_params.get("user", ""), request.query_params.get("status", "").upper()


async def queue_page(request: Request) -> Response:
    """GET /: the queue table."""
    app = _app(request)
    meta, entries, _ = app.queue(*_filters(request))
    # each row was rendered by the autoescaping template queue_row.html.j2 (state.entry)
    rows = Markup("".join(e.html for e in entries))  # noqa: S704
    try:
        return page("queue.html.j2", refresh=app.refresh, rows=rows, jobs=entries, **meta)
    except Exception:  # something the template chokes on: the page without rows, and say so
        log.exception("rendering the queue page failed")
        meta.update(total=0, warnings=[*meta["warnings"], "the jobs cannot be shown as HTML "
                                       "(see the dpu web log); /api/queue has them"])
        return page("queue.html.j2", refresh=app.refresh, rows="", jobs=[], **meta)


async def queue_json(request: Request) -> Response:
    """GET /api/queue: the queue as JSON."""
    meta, entries, now = _app(request).queue(*_filters(request))
    # Each job's JSON text is made once per snapshot (running jobs: per request, for their time).
    head = json.dumps(json_safe(meta), ensure_ascii=False, allow_nan=False)
    body = head[:-1] + ', "jobs": [' + ", ".join(e.json_text(now) for e in entries) + "]}"
    return Response(body.encode("utf-8", "replace"), 200, media_type=JSON)


async def job_view(request: Request) -> Response:
    """GET /job/KEY and /api/job/KEY: one job with its processes (404 when unknown)."""
    app = _app(request)
    key = request.path_params["key"]
    if not app.known(key):
        return error(request, 404, "no such job on this page")
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.run_in_executor(app.job_pool, app.job, key), JOB_TIMEOUT)
    except asyncio.TimeoutError:
        return error(request, 503, "reading this job's files takes too long; try again in a moment",
                     {"Retry-After": "10"})
    except Exception:  # this job only: the queue and other jobs are unaffected
        log.exception("job %s cannot be shown", printable(key))
        return error(request, 500, "this job cannot be shown; see the dpu web log")
    if found is None:
        return error(request, 404, "no such job on this page")
    if local_path(request).startswith("/api/"):
        return json_response(200, found)
    return page("job.html.j2", letters=LETTERS, base=app.base, **found)


async def static(request: Request) -> Response:
    """GET /static/NAME: the page's packaged scripts and styles."""
    name = request.path_params["name"]
    if name not in STATIC:
        return error(request, 404, "no such page")
    return Response((packaged("templates") / "web" / name).read_bytes(), media_type=STATIC[name])


async def favicon(request: Request) -> Response:
    """GET /favicon.ico: nothing (204), so browsers stop asking."""
    return Response(b"", 204, media_type="image/x-icon")


async def run(request: Request) -> Response:
    """POST /api/run: submit a run (needs a token)."""
    app = _app(request)
    try:
        body = await read_body(request, MAX_BODY, app.body_timeout)
    except Refused as exc:
        return json_response(exc.status, {"error": str(exc)}, {"Connection": "close"} if exc.close else None)
    loop = asyncio.get_running_loop()
    status, data = await loop.run_in_executor(app.submit_pool, app.api.handle,
                                              request.headers.get("authorization", ""), body)
    extra = {"WWW-Authenticate": 'Bearer realm="dpu"'} if status == 401 else None
    return json_response(status, data, extra)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most `limit` bytes, within `timeout` seconds (a Content-Length that lies
    must not hold the request forever); Refused says which of 408/411/413 and why."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise Refused(411, "send the JSON body with a Content-Length (or chunked)")
    declared = int(length) if length is not None and length.isdigit() else 0
    if declared > DRAIN:
        raise Refused(413, f"the body is larger than {limit} bytes", close=True)
    # A too large body is read away (up to DRAIN) before the answer: a client still sending
    # when the server closes sees a reset instead of the answer.
    body = bytearray()
    size = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, end - loop.time()))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise Refused(408, f"the body did not arrive within {timeout:g} s", close=True) from None
        except ClientDisconnect:
            raise Refused(400, "the client went away before the body arrived", close=True) from None
        size += len(chunk)
        if size > DRAIN:
            break
        if size <= limit:
            body += chunk
    if size > limit:
        raise Refused(413, f"the body is larger than {limit} bytes", close=True)
    return bytes(body)


async def not_found(request: Request, exc: Exception) -> Response:
    """404 as JSON or the error page (with the reason a route gave, e.g. which DPUs there are)."""
    detail = str(getattr(exc, "detail", "") or "")
    return error(request, 404, detail if detail and detail != "Not Found" else "no such page")


async def not_allowed(request: Request, exc: Exception) -> Response:
    """405 saying which method the path takes."""
    if local_path(request) == "/api/run":
        allow, message = "POST", "POST /api/run submits a run; GET the page at /"
    else:
        allow, message = "GET, HEAD", "the page is read-only; POST /api/run submits"
    return json_response(405, {"error": message}, {"Allow": allow})


async def internal_error(request: Request, exc: Exception) -> Response:
    """500 without details (they are in the log)."""
    return error(request, 500, "internal error; see the dpu web log")


async def http_error(request: Request, exc: Exception) -> Response:
    """Other HTTP errors as JSON or the error page."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error(request, status, str(getattr(exc, "detail", "")) or "error")


DPU_ROUTES = [   # one DPU's pages: at / with a single DPU, and under /dpu/NAME/ (hub.py)
    Route("/", queue_page, methods=["GET"]),
    Route("/api/queue", queue_json, methods=["GET"]),
    Route("/job/{key:path}", job_view, methods=["GET"]),
    Route("/api/job/{key:path}", job_view, methods=["GET"]),
    Route("/api/run", run, methods=["POST"]),
]
SHARED_ROUTES = [
    Route("/static/{name}", static, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
]
HANDLERS: Dict[Any, Callable[..., Any]] = {404: not_found, 405: not_allowed, HTTPException: http_error,
                                           Exception: internal_error}
