"""Where an SSH DPU is and how its host is trusted: the endpoint from the DPU's host section
over ~/.ssh/config, ProxyJump hops, and the refusal of unknown host keys (never added silently).
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import HostKeyError


@dataclass
class Endpoint:
    """Where and as whom to connect: the DPU config, filled in from ~/.ssh/config."""

    hostname: str
    port: int = 22
    user: Optional[str] = None
    identity_files: List[str] = field(default_factory=list)
    known_hosts: List[str] = field(default_factory=list)
    proxy_jump: Optional[str] = None
    timeout: float = 15.0
    keepalive: int = 30

    @property
    def label(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user + '@' if self.user else ''}{self.hostname}:{self.port}"


def resolve(host: Dict[str, Any], ssh_config: Optional[Path] = None) -> Endpoint:
    """The DPU's host section over ~/.ssh/config's entry for that name (the section wins)."""
    import paramiko

    alias = str(host["hostname"])
    found: Dict[str, Any] = {}
    path = ssh_config or Path(os.environ.get("DPU_SSH_CONFIG", "~/.ssh/config")).expanduser()
    if path.is_file():
        found = dict(paramiko.SSHConfig.from_path(str(path)).lookup(alias))
    known = [host["known_hosts"]] if host.get("known_hosts") else list(
        str(found.get("userknownhostsfile", "~/.ssh/known_hosts")).split())
    identity = [host["identity_file"]] if host.get("identity_file") else list(found.get("identityfile", []))
    return Endpoint(
        hostname=str(found.get("hostname", alias)),
        port=int(host.get("port") or found.get("port") or 22),
        user=host.get("user") or found.get("user"),
        identity_files=[os.path.expanduser(p) for p in identity],
        known_hosts=[os.path.expanduser(p) for p in known],
        proxy_jump=host.get("proxy_jump") or found.get("proxyjump"),
        timeout=float(host.get("connect_timeout") or found.get("connecttimeout") or 15),
        keepalive=int(host.get("keepalive") or found.get("serveraliveinterval") or 30),
    )


def fingerprint(key: Any) -> str:
    """OpenSSH's SHA256 fingerprint of a host key."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def host_label(hostname: str, port: int) -> str:
    """The host as known_hosts names it ([host]:port off port 22)."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


class RefuseUnknown:
    """Missing host key: refuse, and say which key was offered and how to accept it."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        """Refuse a host not in known_hosts (raises HostKeyError saying how to accept it)."""
        label = host_label(self.ep.hostname, self.ep.port)
        where = self.ep.known_hosts[0] if self.ep.known_hosts else "~/.ssh/known_hosts"
        port = f"-p {self.ep.port} " if self.ep.port != 22 else ""
        raise HostKeyError(
            f"{label} is not in {where}: it offers {fingerprint(key)}. If that is your "
            f"cluster's key (ask its admin), accept it: ssh-keyscan {port}{self.ep.hostname} > new_key; "
            f"ssh-keygen -lf new_key (the fingerprint must be the one above); cat new_key >> {where} "
            "(or log in once with ssh). dpu_slurm never accepts unknown keys itself.")


def jump_endpoint(hop: str, target: Endpoint) -> Endpoint:
    """A ProxyJump hop ([user@]host[:port]), trusting the target's known_hosts files too."""
    user, _, rest = hop.rpartition("@")
    host, _, port = rest.partition(":")
    ep = resolve({"hostname": host})
    ep.user = user or ep.user
    ep.port = int(port) if port else ep.port
    ep.known_hosts = ep.known_hosts + [p for p in target.known_hosts if p not in ep.known_hosts]
    ep.identity_files = ep.identity_files or target.identity_files
    return ep
