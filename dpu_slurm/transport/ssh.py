"""A remote DPU over SSH (paramiko): one verified connection per DPU, reused for everything.

Host keys are checked against known_hosts and never added by themselves. Batched work (status
polls, reading many records, writing job files, checking bundles) is one round trip each: a
small standard-library program (remote_helper) run by the DPU's Python.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from ..bundle import Bundle
from ..config import DPUConfig
from ..errors import DPUError, HostKeyError, Unreachable
from ..render import quote
from . import remote_helper
from .base import Completed, Gathered, Records, Transport
from .owned import IndexScan, Listed, OwnedFile, OwnedRead
from .ssh_hosts import Endpoint, RefuseUnknown, fingerprint, host_label, jump_endpoint, resolve

log = logging.getLogger(__name__)
T = TypeVar("T")
BACKOFF = (0.5, 1.0, 2.0, 4.0)
CHUNK = 1 << 20


class SSHTransport(Transport):
    """A remote DPU over SSH (paramiko): argv commands, and one remote helper call per batch of file work.

    Counts ``round_trips`` (each command or helper call) and ``bytes_sent`` for the benchmarks
    and the round-trip tests.
    """

    def __init__(self, dpu: DPUConfig, endpoint: Optional[Endpoint] = None) -> None:
        assert dpu.host is not None
        self.dpu = dpu
        self.endpoint = endpoint or resolve(dpu.host)
        self.python = dpu.python or "python3"
        self._client: Any = None
        self._jumps: List[Any] = []
        self._sftp: Any = None
        self._home: Optional[str] = None
        self._account: Optional[Tuple[str, int]] = None
        self.round_trips = 0      # commands and helper calls: each one request/answer
        self.bytes_sent = 0       # everything written to remote stdin
        self.upload_bytes = 0     # of which code bundle bytes
        self.backoff: Tuple[float, ...] = BACKOFF
        self.progress: Optional[Callable[[int, int], None]] = None

    # -- connection -------------------------------------------------------------------------
    def _open(self, ep: Endpoint, sock: Any = None) -> Any:
        import paramiko

        client = paramiko.SSHClient()
        for path in ep.known_hosts:
            if os.path.exists(path):
                client.load_host_keys(path)
        client.set_missing_host_key_policy(RefuseUnknown(ep))
        try:
            client.connect(ep.hostname, port=ep.port, username=ep.user,
                           key_filename=ep.identity_files or None, timeout=ep.timeout,
                           banner_timeout=ep.timeout, auth_timeout=ep.timeout, sock=sock,
                           allow_agent=True, look_for_keys=not ep.identity_files)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"the host key of {host_label(ep.hostname, ep.port)} CHANGED: it now offers "
                f"{fingerprint(exc.key)}, known_hosts has {fingerprint(exc.expected_key)}. This can "
                "be an attack. If the server was reinstalled, check the new fingerprint with its "
                f"admin, then remove the old line: ssh-keygen -R '{host_label(ep.hostname, ep.port)}'"
                + (f" -f {ep.known_hosts[0]}" if ep.known_hosts else "")
                + " and add the new key as for an unknown host (ssh-keyscan, compare, append)") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise DPUError(f"SSH login to {ep.label} refused ({exc}); check host.user and "
                           "host.identity_file in the DPU config, or your ssh-agent") from None
        except HostKeyError:
            client.close()
            raise
        transport = client.get_transport()
        transport.set_keepalive(ep.keepalive)
        if isinstance(transport.sock, socket.socket):  # small requests must not wait for ACKs
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.default_window_size = 16 * CHUNK  # a wide window for bundle uploads
        return client

    def _connect(self) -> Any:
        """Connect, through each ProxyJump hop in turn (every hop's host key is checked too)."""
        sock = None
        self._jumps = []
        hops = [jump_endpoint(h.strip(), self.endpoint)
                for h in (self.endpoint.proxy_jump or "").split(",") if h.strip()]
        for i, hop in enumerate(hops):
            jump = self._open(hop, sock)
            self._jumps.append(jump)
            nxt = hops[i + 1] if i + 1 < len(hops) else self.endpoint
            sock = jump.get_transport().open_channel("direct-tcpip", (nxt.hostname, nxt.port),
                                                     ("127.0.0.1", 0))
        return self._open(self.endpoint, sock)

    def _ensure(self) -> Any:
        if self._client is None or not self._client.get_transport() \
                or not self._client.get_transport().is_active():
            self._drop()
            self._client = self._connect()
        return self._client

    def _drop(self) -> None:
        for thing in (self._sftp, self._client, *reversed(self._jumps)):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # noqa: S110 - closing a dead connection may fail in many ways
                pass
        self._sftp = self._client = None
        self._jumps = []

    def close(self) -> None:
        """Close the connection and its ProxyJump hops."""
        self._drop()

    def _retry(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run fn with a live connection; reconnect with back-off after a drop (fn is idempotent)."""
        last: Exception | None = None
        for delay in (*self.backoff, None):
            try:
                return fn(self._ensure())
            except (HostKeyError, DPUError):
                raise
            except (OSError, EOFError, Exception) as exc:  # paramiko raises several kinds
                if not _is_connection_error(exc):
                    raise
                last = exc
                log.info("%s on %s failed (%s); reconnecting", what, self.endpoint.label, exc)
                self._drop()
                if delay is None:
                    break
                time.sleep(delay)
        raise Unreachable(f"DPU {self.dpu.name!r} is unreachable over SSH ({self.endpoint.label}): "
                          f"{type(last).__name__}: {last}")

    # -- commands ---------------------------------------------------------------------------
    def _exec(self, client: Any, command: str, stdin: bytes = b"",
              timeout: Optional[float] = 120.0) -> Tuple[int, bytes, bytes]:
        chan = client.get_transport().open_session(timeout=self.endpoint.timeout)
        self.round_trips += 1
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
                self.bytes_sent += len(stdin)
            chan.shutdown_write()
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            return chan.recv_exit_status(), out, err
        finally:
            chan.close()

    def run(self, argv: Sequence[str], input: Optional[str] = None,
            timeout: Optional[float] = 120.0) -> Completed:
        """Run argv on the host (quoted once); never retried once sent; Unreachable on a drop."""
        command = " ".join(quote(a) for a in argv)
        data = (input or "").encode()
        try:
            # Not retried once sent: a command like sbatch must never run twice.
            code, out, err = self._exec(self._retry("connect", lambda c: c), command, data, timeout)
        except TimeoutError:
            return Completed(list(argv), 124, "", f"{argv[0]}: no answer within {timeout} s")
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            self._drop()
            raise Unreachable(f"DPU {self.dpu.name!r}: the SSH connection to {self.endpoint.label} "
                              f"dropped while running {argv[0]}: {exc}") from None
        return Completed(list(argv), code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def helper(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """One round trip to the remote helper program (idempotent requests only)."""
        payload = json.dumps(request).encode()
        command = " ".join(quote(a) for a in (self.python, "-S", "-c", remote_helper.SOURCE))

        def call(client: Any) -> Dict[str, Any]:
            code, out, err = self._exec(client, command, payload)
            if code != 0:
                raise DPUError(f"the DPU's Python ({self.python}) failed on {self.endpoint.label}: "
                               f"{err.decode('utf-8', 'replace').strip()[-800:]}")
            return dict(json.loads(out))
        return self._retry("remote helper", call)

    # -- files ------------------------------------------------------------------------------
    def expand(self, path: str) -> str:
        """The target path with ~ resolved to the remote home."""
        if path.startswith("/"):
            return path
        if self._home is None:
            self._about()
        rest = path[2:] if path.startswith("~/") else ("" if path == "~" else path)
        return f"{self._home}/{rest}".rstrip("/")

    def _about(self) -> None:
        """The remote home and account, asked once per connection object."""
        got = self.helper({"home": True})
        self._home = str(got["home"])
        name, uid = got["account"]
        self._account = (str(name), int(uid))

    def account(self) -> Tuple[str, int]:
        """The remote user name and uid (asked once)."""
        if self._account is None:
            self._about()
        assert self._account is not None
        return self._account

    def write_files(self, files: Dict[str, bytes]) -> None:
        """Write the files on the host in one helper call (temp name and rename each)."""
        self.helper({"write": {p: base64.b64encode(d).decode() for p, d in files.items()}})

    def read_files(self, paths: Sequence[str]) -> Dict[str, Optional[bytes]]:
        """Many small remote files in one helper call; None when missing."""
        if not paths:
            return {}
        got = self.helper({"files": list(paths)})["files"]
        return {p: None if got.get(p) is None else base64.b64decode(got[p]) for p in paths}

    def gather(self, argv: Optional[Sequence[str]], files: Sequence[str], records: Records,
               record_name: str, owners: Optional[Dict[str, int]] = None,
               caps: Optional[Dict[str, int]] = None) -> Gathered:
        """Status command, files and records in one helper call (see Transport.gather)."""
        request: Dict[str, Any] = {"files": list(files), "record_name": record_name,
                                   "records": {d: _ranges(idx) for d, idx in records.items() if idx}}
        if owners is not None:
            request["owners"] = dict(owners)
            request["caps"] = dict(caps or {})
        if argv:
            request["run"] = list(argv)
        out = self.helper(request)
        completed = None
        if argv:
            code, stdout, stderr = out["run"]
            completed = Completed(list(argv), int(code), stdout, stderr)
        got_files = {p: None if out["files"].get(p) is None else base64.b64decode(out["files"][p])
                     for p in files}
        found = {}
        for key, data in out.get("records", {}).items():
            jobdir, _, idx = key.rpartition("|")
            found[(jobdir, int(idx))] = base64.b64decode(data)
        return Gathered(completed, got_files, found)

    def read_owned(self, files: Sequence[OwnedFile], cap: int, tail: bool = False,
                   private: bool = False) -> OwnedRead:
        """Owner-checked reads on the host in one helper call (see Transport.read_owned)."""
        if not files:
            return OwnedRead()
        got = self.helper({"owned": {"files": [[f.base, f.rel, f.uid] for f in files], "cap": cap,
                                     "tail": tail, "private": private}})["owned"]
        data = {f.path: None if got["data"].get(f.path) is None else base64.b64decode(got["data"][f.path])
                for f in files}
        return OwnedRead(data, {str(k): str(v) for k, v in got["refused"].items()})

    def scan_index(self, root: str, since: float) -> IndexScan:
        """The owner-checked job cards under root on the host."""
        got = self.helper({"scan_index": [root, since]})["index"]
        if got.get("error"):
            raise DPUError(str(got["error"]))
        return IndexScan([Listed(str(p), str(u), int(uid), float(m)) for p, u, uid, m in got["cards"]],
                         [(str(n), str(why)) for n, why in got["refused"]])

    def write_own(self, root: str, folder: str, name: str, data: bytes) -> None:
        """Write into our own card folder on the host; DPUError when it is not safely ours."""
        refused = self.helper({"write_own": [root, folder, name, base64.b64encode(data).decode()]})
        if refused.get("write_own"):
            raise DPUError(str(refused["write_own"]))

    def own_workdir(self, path: str, subs: Sequence[str] = ()) -> None:
        """The same check on the DPU, in the remote helper (one round trip)."""
        why = self.helper({"own_workdir": [path, list(subs)]}).get("own_workdir")
        if why:
            raise DPUError(str(why))

    def user_ids(self, names: Sequence[str]) -> Dict[str, Optional[int]]:
        """The uids of these user names on the host (None: unknown)."""
        if not names:
            return {}
        got = self.helper({"uids": list(names)})["uids"]
        return {n: None if got.get(n) is None else int(got[n]) for n in names}

    def remove_bundles(self, root: str, keep: Set[str], older_than: float) -> List[str]:
        """Delete old unused bundles on the host; the names removed."""
        return list(self.helper({"remove_bundles": [root, sorted(keep), older_than]})["removed"])

    # -- code shipping --------------------------------------------------------------------
    def ensure_bundle(self, bundle: Bundle, root: str) -> str:
        """Upload only when the remote lacks this exact tree; verify, then rename into place."""
        final = f"{root}/{bundle.digest}"
        state = self.helper({"check_bundle": [final, bundle.digest]})["bundle"]
        if state == "ok":
            return final
        if state == "altered":
            log.warning("bundle %s on %s does not match its hash; uploading it again",
                        bundle.digest[:12], self.endpoint.label)
        sha = _file_sha256(bundle.path)
        tmp = f"{root}/.{bundle.digest}.{uuid.uuid4().hex[:8]}.part"

        def upload(client: Any) -> None:
            self._put(client, bundle.path, tmp, root)

        self._retry("bundle upload", upload)
        result = self.helper({"install_bundle": [tmp, sha, final, bundle.digest]})["bundle"]
        if result != "ok":
            raise DPUError(f"could not install the code bundle on {self.endpoint.label}: {result}")
        return final

    def _put(self, client: Any, local: Path, remote: str, root: str) -> None:
        """Stream the tarball into `remote` over one channel (faster than SFTP's small writes)."""
        size = local.stat().st_size
        command = f"mkdir -p {quote(root)} && cat > {quote(remote)}"
        chan = client.get_transport().open_session(timeout=self.endpoint.timeout)
        self.round_trips += 1
        show = self.progress or (_tty_progress(local.name) if sys.stderr.isatty() else None)
        try:
            chan.exec_command(command)
            sent = 0
            with open(local, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    chan.sendall(block)
                    sent += len(block)
                    self.bytes_sent += len(block)
                    self.upload_bytes += len(block)
                    if show:
                        show(sent, size)
            chan.shutdown_write()
            code = chan.recv_exit_status()
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace")
        finally:
            chan.close()
        if code != 0:
            raise DPUError(f"upload to {self.endpoint.label}:{remote} failed: {err.strip()}")


def _ranges(indices: List[int]) -> List[List[int]]:
    """[0,1,2,5] -> [[0,2],[5,5]]: a 10,000-process job costs a few bytes, not 10,000 paths."""
    out: List[List[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _is_connection_error(exc: BaseException) -> bool:
    import paramiko

    return isinstance(exc, (OSError, EOFError, paramiko.SSHException)) and not isinstance(
        exc, (paramiko.BadHostKeyException, paramiko.AuthenticationException))


def _tty_progress(name: str) -> Callable[[int, int], None]:
    def show(sent: int, size: int) -> None:
        pct = 100.0 * sent / size if size else 100.0
        end = "\n" if sent >= size else ""
        sys.stderr.write(f"\rUploading code bundle {name[:12]}: {sent / 1e6:7.1f} of {size / 1e6:.1f} MB "
                         f"({pct:5.1f}%){end}")
        sys.stderr.flush()
    return show
