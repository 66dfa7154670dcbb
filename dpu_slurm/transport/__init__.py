"""How commands and files reach a DPU: this machine (local) or a remote one (ssh)."""
from __future__ import annotations

from ..config import DPUConfig
from .base import Completed, Transport


def connect(dpu: DPUConfig) -> Transport:
    """The transport for a DPU: SSH when its config has a host, else this machine."""
    if dpu.host is not None:
        from .ssh import SSHTransport  # paramiko is imported only where it is used
        return SSHTransport(dpu)
    from .local import LocalTransport
    return LocalTransport()


__all__ = ["Completed", "Transport", "connect"]
