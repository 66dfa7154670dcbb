"""``dpu web`` on uvicorn: the listening socket, the connection limits and the protocol.

The routes and the page's state are in app.py; this module binds the address, sets uvicorn's
limits (idle timeout, backlog, concurrent connections, request head size) and closes idle
connections that never send a request (uvicorn starts its idle clock only after a response).
Needs the ``web`` extra: ``pip install 'dpu_slurm[web]'``.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any, List, Optional, Sequence, Tuple, Union

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import DPUConfig
from ..store import Store
from .app import App
from .hostguard import MAX_HEAD, HostPolicy
from .hub import Hub, application, dpu_base
from .pages import json_bytes

log = logging.getLogger(__name__)

BACKLOG = 2048
MAX_CONNECTIONS = 1000   # open connections (idle ones included) before new requests get 503
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with one idle clock per connection: it runs from the connection's
    start and after each response until a whole request head is in, so a connection that sends
    nothing, or its head byte by byte, is closed after the idle timeout like an idle keep-alive one.
    A request head over the limit is answered 431 (h11 reports it as a plain protocol error)."""

    def connection_made(self, transport: Any) -> None:
        """Start the idle clock as soon as the connection opens."""
        super().connection_made(transport)
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                            self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        """Feed the bytes to h11; stop the idle clock once a request is in."""
        self.conn.receive_data(data)   # the clock keeps running: uvicorn would stop it here
        self.handle_events()
        self._stop_clock_if_busy()

    def on_response_complete(self) -> None:
        """Restart the idle clock unless a pipelined request is already in."""
        super().on_response_complete()
        self._stop_clock_if_busy()      # a pipelined request started right away

    def _stop_clock_if_busy(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._unset_keepalive_if_required()

    def send_400_response(self, msg: str) -> None:
        """Answer a malformed request 400, or 431 when its head is too large."""
        too_long = len(self.conn.trailing_data[0]) > MAX_HEAD
        status, reason, text = (
            (431, b"Request Header Fields Too Large", f"the request head is larger than {MAX_HEAD} bytes")
            if too_long else (400, b"Bad Request", "malformed HTTP request"))
        headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS]
        headers += [(b"content-type", b"application/json; charset=utf-8"), (b"connection", b"close")]
        events = [h11.Response(status_code=status, headers=headers, reason=reason),
                  h11.Data(data=json_bytes({"error": text})), h11.EndOfMessage()]
        try:
            for event in events:
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:
            pass   # cannot answer in this state: just close
        self.transport.close()


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    """http://HOST:PORT/ with an IPv6 address in brackets."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket; OSError when the address is taken or not ours."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class QueueServer:
    """The pages of one or more DPUs on one listening socket; serve_forever() runs uvicorn until
    shutdown()."""

    def __init__(self, hub: Hub, host: str, port: int, allowed_hosts: Sequence[str] = (),
                 idle_timeout: float = 10.0) -> None:
        self.hub = hub
        self.app: App = next(iter(hub.apps.values()))   # the first DPU (the only one, usually)
        self.socket = bind(host, port)
        address: Tuple[Any, ...] = self.socket.getsockname()
        self.server_address: Tuple[str, int] = (host, int(address[1]))
        self.loopback = is_loopback(host)
        self.hosts = HostPolicy(host, self.server_address[1], allowed_hosts, self.loopback)
        self.config = uvicorn.Config(
            application(hub, self.hosts), loop="asyncio", http=Protocol, ws="none", lifespan="off",
            log_config=None, log_level="warning", access_log=False, server_header=False,
            headers=SECURITY_HEADERS, backlog=BACKLOG, limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=idle_timeout,  # type: ignore[arg-type] # a float works
            timeout_graceful_shutdown=5, h11_max_incomplete_event_size=MAX_HEAD)
        self.uvicorn = uvicorn.Server(self.config)
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """The address the page is served at."""
        return url_of(*self.server_address)

    def serve_forever(self) -> None:
        """Start the background refreshes and answer requests until shutdown()."""
        self.hub.start()
        self.uvicorn.run(sockets=[self.socket])

    def shutdown(self) -> None:
        """Ask serve_forever() to return."""
        self.uvicorn.should_exit = True

    def server_close(self) -> None:
        """Close the socket and the app (once)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.socket.close()
        self.hub.close()


def make_server(dpus: Union[DPUConfig, Sequence[DPUConfig]], store: Store, host: str = "127.0.0.1",
                port: int = 8080, days: float = 7.0, refresh: float = 5.0, allowed_hosts: Sequence[str] = (),
                idle_timeout: float = 10.0, poll_floor: float = 1.0,
                user: Optional[str] = None) -> QueueServer:
    """A server of one DPU or several (hub.py) ready to serve_forever(); port 0 picks a free port
    (see server_address). A request body must arrive within `idle_timeout` seconds too."""
    listed = [dpus] if isinstance(dpus, DPUConfig) else list(dpus)
    apps: List[App] = []
    try:
        for dpu in listed:
            apps.append(App(dpu, store, days, refresh, user=user, poll_floor=poll_floor,
                            body_timeout=idle_timeout, base=dpu_base(dpu.name) if len(listed) > 1 else ""))
        hub = Hub(apps)
        return QueueServer(hub, host, port, allowed_hosts, idle_timeout)
    except BaseException:
        for app in apps:
            app.close()
        raise


__all__: List[str] = ["QueueServer", "make_server", "url_of", "SECURITY_HEADERS"]
