"""Every DPU on one page: ``dpu web`` serving several DPUs, the "Cluster Queues" overview.

GET /               the overview when several DPUs are served (one DPU: its queue, as before)
GET /dpus           the overview, always: per DPU its counters, queue depth and health
GET /api/dpus       the same as JSON
ANY /dpu/NAME/...   that DPU's pages (app.py); /api/queue, /job/... work unprefixed with one DPU

Each DPU has its own App: its own mirror, refresh thread and back-off (state.py), so a DPU that
hangs or cannot be reached only makes its own row stale; requests never wait for any of them.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ..store import LETTERS
from .app import DPU_ROUTES, HANDLERS, SHARED_ROUTES, App, json_response, page, queue_page
from .hostguard import Guard, HostPolicy
from .pages import ago

log = logging.getLogger(__name__)

HANGING = 30.0   # seconds a poll may take before the overview calls the DPU's row stale


def dpu_base(name: str) -> str:
    """Where a DPU's pages are when several DPUs are served."""
    return "/dpu/" + quote(name, safe="")


class Hub:
    """The DPUs one server shows, by name, and their overview."""

    def __init__(self, apps: Sequence[App]) -> None:
        if not apps:
            raise ValueError("a hub needs at least one DPU")
        self.apps: Dict[str, App] = {a.dpu.name: a for a in apps}
        self.refresh = apps[0].refresh

    @property
    def single(self) -> Optional[App]:
        """The DPU when only one is served (its pages are also at the old unprefixed paths)."""
        return next(iter(self.apps.values())) if len(self.apps) == 1 else None

    def app_of(self, request: Request) -> Optional[App]:
        """The DPU a request's path names (/dpu/NAME/...), else the single one; None when neither."""
        path = request.url.path
        if path.startswith("/dpu/"):
            return self.apps.get(unquote(path.split("/")[2]))
        return self.single

    def no_such_dpu(self, request: Request) -> str:
        """Why app_of() found no DPU, for the 404."""
        if request.url.path.startswith("/dpu/"):
            return f"no such DPU on this page; the DPUs are: {', '.join(sorted(self.apps))}"
        return "this server shows several DPUs: each one's pages are under /dpu/NAME/ (see /)"

    def start(self) -> None:
        """Start every DPU's refresh thread."""
        for app in self.apps.values():
            app.start()

    def close(self) -> None:
        """Stop every refresh thread (all asked at once: one hanging DPU delays only its own join)."""
        for app in self.apps.values():
            app.refresher.stop(timeout=0.0)
        for app in self.apps.values():
            app.close()

    def overview(self, now: float) -> List[Dict[str, Any]]:
        """One row per DPU, from its last snapshot: nothing here waits for a scheduler."""
        return [self.row(app, now) for _, app in sorted(self.apps.items())]

    def row(self, app: App, now: float) -> Dict[str, Any]:
        """A DPU's overview row: counters over its jobs, queue depth and health."""
        ref = app.refresher
        snap = ref.snapshot
        totals = dict(snap.summary)
        polling = now - ref.polling_since if ref.polling_since is not None else None
        if ref.problem:
            since = f"last reached {ago(now - ref.reached)}" if ref.reached else "never reached"
            health, reachable = f"unreachable ({since}): {ref.problem}", False
        elif ref.refreshes == 0:
            health, reachable = "first poll on its way", None
        else:
            health, reachable = "ok", True
        stale = polling is not None and polling > HANGING
        if stale:
            health = f"no answer for {polling:.0f} s" + (f" (before: {health})" if ref.refreshes else "")
        return {"dpu": app.dpu.name, "description": app.dpu.description, "scheduler": app.dpu.scheduler,
                "url": (app.base or "") + "/", "reachable": reachable, "stale": stale, "health": health,
                "updated": snap.updated or None, "age": now - ref.tried if ref.tried else None,
                "reached": ref.reached or None, "polling_for": polling,
                "jobs": len(snap.entries), "statuses": {s: totals.get(s, 0) for s in ("QUEUED", "RUNNING",
                                                                                        "FINISHED")},
                "queued": totals.get("queued", 0), "running": totals.get("running", 0),
                "counters": {x: totals.get(x, 0) for x in LETTERS}, "warnings": list(snap.warnings)}


def _hub(request: Request) -> Hub:
    return request.app.state.hub


async def overview_page(request: Request) -> Response:
    """GET /dpus (and / with several DPUs): every DPU's row."""
    hub = _hub(request)
    now = time.time()
    return page("overview.html.j2", dpus=hub.overview(now), letters=LETTERS, refresh=hub.refresh, now=now)


async def overview_json(request: Request) -> Response:
    """GET /api/dpus: the overview as JSON."""
    now = time.time()
    return json_response(200, {"now": now, "letters": list(LETTERS), "dpus": _hub(request).overview(now)})


async def root(request: Request) -> Response:
    """GET /: the queue of the single DPU, else the overview."""
    if _hub(request).single is not None:
        return await queue_page(request)
    return await overview_page(request)


def application(hub: Hub, hosts: HostPolicy) -> ASGIApp:
    """The ASGI application: the overview, every DPU's pages, inside the guard."""
    routes = [Route("/", root, methods=["GET"]), Route("/dpus", overview_page, methods=["GET"]),
              Route("/api/dpus", overview_json, methods=["GET"]), *SHARED_ROUTES,
              Mount("/dpu/{dpu}", routes=DPU_ROUTES), *DPU_ROUTES[1:]]
    starlette = Starlette(routes=routes, exception_handlers=HANDLERS)
    starlette.state.hub = hub
    return Guard(starlette, hosts)
