"""The request guard of ``dpu web``: the Host allow-list, header limits, the request log, and
no traceback to anyone (pure ASGI middleware around every request)."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..text import printable
from .pages import json_bytes

log = logging.getLogger("dpu_slurm.web.app")   # the request log keeps its logger name

MAX_HEAD = 32 * 1024     # request line and headers, bytes (431 above)
MAX_HEADERS = 100
JSON = "application/json; charset=utf-8"


def json_response(status: int, data: Any, headers: Optional[dict] = None) -> Response:
    """A JSON response."""
    return Response(json_bytes(data), status, headers, JSON)

# -- the guard: Host allow-list, header limits, the request log, no traceback to anyone ---------
class HostPolicy:
    """Which Host headers are answered. On loopback: the loopback names and the bound address,
    so a web page cannot rebind a name of its own to this server; off loopback: the bound
    address and the names given with --allowed-host (NAME matches any port, NAME:PORT one)."""

    def __init__(self, host: str, port: int, allowed: Sequence[str] = (), loopback: bool = True) -> None:
        bound = f"[{host}]" if ":" in host else host
        self.exact = {f"{bound}:{port}".lower()}
        if loopback:
            self.exact |= {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        self.names: Set[str] = set()
        for entry in allowed:
            name, has_port = split_host(entry)
            (self.exact if has_port else self.names).add(entry.lower() if has_port else name)

    def allows(self, host: str) -> bool:
        """True when a request's Host header names this server."""
        host = host.strip().lower()
        return host in self.exact or split_host(host)[0] in self.names


def split_host(entry: str) -> Tuple[str, bool]:
    """(name, whether a port is given) of NAME, NAME:PORT, [V6] or [V6]:PORT."""
    entry = entry.strip().lower()
    if entry.startswith("["):
        name, _, rest = entry.partition("]")
        return name + "]", rest.startswith(":") and rest[1:].isdigit()
    name, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, True
    return entry, False


class Guard:
    """Pure ASGI middleware around every request."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused = self.check(scope)
            answer: Callable[..., Any] = self.app if refused is None else refused
            await answer(scope, receive, tracked)
        except Exception:
            log.exception("%s failed", printable(scope.get("path", "")))
            if not status:
                oops = json_response(500, {"error": "internal error; see the dpu web log"})
                await oops(scope, receive, tracked)
        finally:
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope.get("path", "") + (f"?{query}" if query else "")
            log.info("%s %s %s %s", printable(str(client[0])), printable(scope.get("method", "")),
                     printable(target, 300), status or "-")

    def check(self, scope: Scope) -> Optional[Response]:
        """A refusal for oversized headers, a foreign Host or the like; None to let the request in."""
        headers: List[Tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) + 4 for k, v in headers) > MAX_HEAD:
            return json_response(431, {"error": f"the request headers are larger than {MAX_HEAD} bytes "
                                                f"or more than {MAX_HEADERS}"}, {"Connection": "close"})
        host = next((v for k, v in headers if k == b"host"), b"").decode("latin-1")
        if not self.hosts.allows(host):
            return json_response(421, {"error": "unexpected Host header; start dpu web with "
                                                "--allowed-host NAME to answer for NAME"})
        return None
