"""What the engine connectors (kvtier.vllm, kvtier.sglang) share: a session
with kvtierd that an engine process keeps for its life, and the names and
keys they give their pages.

An engine must not fail because the cache does: a daemon that is down or
restarting reads as misses. DaemonSession attaches on first use, again
after the daemon went away (at most once every RECONNECT_S), and logs each
kind of failure once until it attaches again. Any thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from typing import Optional

import kvtier

RECONNECT_S = 1.0
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]")


def namespace_name(engine: str, model: Optional[str], parts) -> str:
    """engine:model:part:part..., within kvtierd's 128 characters of
    [A-Za-z0-9._:-]: a model name that does not fit is cut and hashed."""
    model = _NAME_BAD.sub("-", str(model or "model"))
    tail = ":".join(str(p) for p in parts)
    room = 128 - len(engine) - len(tail) - 2
    if len(model) > room:
        digest = hashlib.sha256(model.encode()).hexdigest()[:12]
        model = model[:room - 13] + "-" + digest
    return f"{engine}:{model}:{tail}"


def secret_of(configured: Optional[str], default_label: bytes) -> bytes:
    """The key of the page keys: hex from the engine's config, else
    $KVTIER_SECRET, else a fixed one (so that every process of a
    deployment agrees without being told)."""
    text = configured or os.environ.get("KVTIER_SECRET")
    secret = bytes.fromhex(text) if text else hashlib.sha256(default_label).digest()
    if not 16 <= len(secret) <= 64:
        raise ValueError(f"the kvtier secret must be 16..64 bytes of hex, not {len(secret)}")
    return secret


class DaemonSession:
    """One kvtierd session and one namespace, kept open across daemon
    restarts. namespace() is None while the daemon cannot be reached."""

    def __init__(self, addr: Optional[str], client_name: str, log: logging.Logger):
        self.addr = addr or os.environ.get("KVTIER_ADDR") or kvtier.DEFAULT_ADDR
        self.client_name = client_name
        self.log = log
        self._lock = threading.Lock()
        self._client: Optional[kvtier.Client] = None
        self._ns: Optional[kvtier.Namespace] = None
        self._spec = None  # (name, page_bytes, block_tokens)
        self._device: Optional[int] = None
        self._next_try = 0.0
        self._logged = set()

    def configure(self, name: str, page_bytes: int, block_tokens: int,
                  device: Optional[int] = None) -> None:
        """The namespace to open; device: the CUDA device of the engine's
        cache, for libkvtier-cuda's copies."""
        self._spec = (name, page_bytes, block_tokens)
        self._device = device

    def warn(self, kind: str, exc: BaseException) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            self.log.warning("kvtier %s failed (treated as a miss; logged once): %s", kind, exc)

    @property
    def client(self) -> Optional[kvtier.Client]:
        return self._client

    def namespace(self) -> Optional[kvtier.Namespace]:
        with self._lock:
            if self._ns is not None and not self._client.closed:
                return self._ns
            if self._spec is None or time.monotonic() < self._next_try:
                return None
            self._next_try = time.monotonic() + RECONNECT_S
            try:
                client = kvtier.Client(self.addr, name=self.client_name, device=self._device)
                client.attach()
                self._ns = client.namespace(*self._spec)
                self._client = client
                self._logged.clear()
            except Exception as e:  # kvtier.Error, or an OSError of the socket
                self.warn("attach", e)
                self._ns = None
            return self._ns

    def failed(self, kind: str, exc: BaseException) -> None:
        """A call failed: logged once; a session the daemon ended is
        dropped, to attach again."""
        if isinstance(exc, (kvtier.Unavailable, kvtier.Closed, kvtier.NotAttached)):
            with self._lock:
                if self._client is not None:
                    self._client.close()
                self._ns = None
        self.warn(kind, exc)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._ns = None
