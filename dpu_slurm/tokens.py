"""Tokens of the web submission API (``dpu token create``): shown once, stored as a hash.

A token is ``dpu_<id>_<secret>`` with 256 random bits of secret, so a plain SHA-256 is enough
(nothing to brute-force, unlike a password); the id finds the row, the hash is compared in
constant time. Tokens live in the user's own store: ``dpu web``, run by that user, accepts
them and submits as that user, so the job shows in their ``dpu.get_jobids()``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .errors import DPUError
from .store import Store

_TOKEN = re.compile(r"^dpu_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


@dataclass
class TokenInfo:
    """A token as ``dpu token list`` shows it (never its secret or hash)."""

    id: str
    user: str
    label: str
    created: float
    last_used: Optional[float]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(store: Store, user: str, label: str = "") -> Tuple[str, TokenInfo]:
    """A new token for `user`: returns the token (shown once, never stored) and its record."""
    if len(label) > 200 or any(ord(ch) < 32 for ch in label):
        raise DPUError("a token label is one line of at most 200 characters")
    for _ in range(5):
        tid = secrets.token_hex(4)
        token = f"dpu_{tid}_{secrets.token_urlsafe(32)}"
        now = time.time()
        if store.token_add(tid, user, label, _digest(token), now):
            return token, TokenInfo(tid, user, label, now, None)
        # the 32-bit id is taken: draw another
    raise DPUError("could not draw a free token id; try again")


def verify(store: Store, token: Optional[str]) -> Optional[TokenInfo]:
    """The token's record when `token` is valid, else None (and nothing is told of why)."""
    match = _TOKEN.match(token or "")
    if match is None:
        return None
    row = store.token(match.group(1))
    if row is None or not hmac.compare_digest(row[3], _digest(token or "")):
        return None
    now = time.time()
    store.token_used(row[0], now)
    return TokenInfo(row[0], row[1], row[2], row[4], now)


def list_tokens(store: Store) -> List[TokenInfo]:
    """Every token in the store, oldest first."""
    return [TokenInfo(tid, user, label, created, used)
            for tid, user, label, _, created, used in store.tokens()]


def revoke(store: Store, token_id: str) -> None:
    """Delete a token; raises DPUError naming the known ids when there is no such token."""
    if not store.token_delete(token_id):
        known = ", ".join(t.id for t in list_tokens(store)) or "none"
        raise DPUError(f"no token with id {token_id!r}; your tokens: {known} (dpu token list)")
