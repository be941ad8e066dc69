"""An SGLang HiCache L3 storage backend on kvtierd.

SGLang (HiRadixCache with --enable-hierarchical-cache) keeps KV pages in
GPU memory (L1) and a host pool (L2), and asks an L3 store for pages it
has neither. This backend is that store: every SGLang process on the node
(each tensor-parallel rank, each replica) shares kvtierd's tiers, and
prefixes a replica on another node wrote come through kvtierd's remote
tier. Loaded by module path, without patching SGLang:

    python -m sglang.launch_server ... --enable-hierarchical-cache \\
        --hicache-storage-backend dynamic \\
        --hicache-storage-backend-extra-config '{"backend_name": "kvtier",
            "module_path": "kvtier.sglang", "class_name": "KvtierStore",
            "interface_v1": 1}'

Optional extra-config keys: "kvtier_addr" (default $KVTIER_ADDR, then
kvtierd's socket), "kvtier_secret" (hex, 16..64 bytes: the key of the
page keys; default $KVTIER_SECRET, then a fixed one, so that every process
of a deployment agrees), "kvtier_wait_ms" (how long a read waits for pages
another process is still writing: early reuse; 1000).

The contract followed is SGLang's hicache_storage.py HiCacheStorage at
commit 9864059e (2026-06-15, after v0.5.10; README "Engine connectors"):
batch_exists, batch_get_v1/batch_set_v1 (zero copy: pages go straight
between kvtierd's shared memory and the host pool, one copy each way),
batch_get/batch_set (flat pages, without interface_v1), get, set, exists,
clear. It was tested against that contract with CPU tensors laid out as
SGLang's host pools lay them out (tests/python/test_sglang.py), not inside
SGLang.

What a kvtier page holds: one SGLang page (page_size tokens of every layer
of this rank, K and V) in the element order of the host pool's
get_data_page(index).flatten() for its layout, the same bytes the flat path
moves, so that both paths read each other's pages. The namespace name
carries what makes those bytes mean something: model, MHA or MLA, layout,
dtype, page size, and the rank for MHA (an MLA model's KV is the same on
every rank, so its ranks share pages).

Threads: SGLang calls exists, get and set from three threads at once;
libkvtier serializes one client's calls. No method raises: SGLang's
storage threads catch nothing, and an exception would end L3 for the
process. A failure reads as a miss (or a write not done) and is logged
once per kind; a daemon that went away is asked again at most once a
second.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List, Optional

import torch

import kvtier
from ._connector import DaemonSession, namespace_name, secret_of

try:  # SGLang's factory checks that the class is a HiCacheStorage
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage
except ImportError:  # no SGLang here: the same abstract methods
    from abc import ABC, abstractmethod

    class HiCacheStorage(ABC):  # type: ignore[no-redef]
        def register_mem_pool_host(self, mem_pool_host) -> None:
            self.mem_pool_host = mem_pool_host

        @abstractmethod
        def get(self, key, target_location=None, target_sizes=None): ...

        @abstractmethod
        def batch_get(self, keys, target_locations=None, target_sizes=None): ...

        @abstractmethod
        def set(self, key, value=None, target_location=None, target_sizes=None): ...

        @abstractmethod
        def batch_set(self, keys, values=None, target_locations=None,
                      target_sizes=None): ...

        @abstractmethod
        def exists(self, key) -> bool: ...

__all__ = ["KvtierStore"]

log = logging.getLogger("kvtier.sglang")


def _namespace_name(cfg, pool, page_bytes: int) -> str:
    """What gives a page's bytes their meaning; MLA ranks share pages."""
    def get(name, default):
        return getattr(cfg, name, default)

    mla = bool(get("is_mla_model", False))
    parts = ["mla" if mla else "mha", pool.layout,
             str(pool.dtype).replace("torch.", ""), f"p{pool.page_size}", f"b{page_bytes}"]
    if not mla:
        parts.append(f"tp{get('tp_rank', 0)}of{get('tp_size', 1)}")
    if get("pp_size", 1) > 1:
        parts.append(f"pp{get('pp_rank', 0)}of{get('pp_size', 1)}")
    if get("attn_cp_size", 1) > 1 and not mla:
        parts.append(f"cp{get('attn_cp_rank', 0)}of{get('attn_cp_size', 1)}")
    return namespace_name("sglang", get("model_name", None), parts)


class KvtierStore(HiCacheStorage):
    """SGLang's L3 store in kvtierd (see the module's documentation)."""

    def __init__(self, storage_config, kwargs: Optional[dict] = None):
        extra = dict(getattr(storage_config, "extra_config", None) or {})
        self.config = storage_config
        self.secret = secret_of(extra.get("kvtier_secret"),
                                b"kvtier.sglang default page-key secret")
        self.wait_ms = int(extra.get("kvtier_wait_ms", 1000))
        rank = getattr(storage_config, "tp_rank", 0)
        self.session = DaemonSession(extra.get("kvtier_addr"),
                                     f"sglang:tp{rank}:{os.getpid()}", log)
        self.mem_pool_host = None
        self._page_shape = None

    def register_mem_pool_host(self, mem_pool_host) -> None:
        """The host pool pages move to and from; SGLang calls it right
        after construction."""
        self.mem_pool_host = mem_pool_host
        page = mem_pool_host.get_data_page(0, flat=False)
        self._page_shape = tuple(page.shape)
        page_bytes = page.numel() * page.element_size()
        self.session.configure(_namespace_name(self.config, mem_pool_host, page_bytes),
                               page_bytes, mem_pool_host.page_size)

    def close(self) -> None:
        self.session.close()

    def _keys(self, keys: List[str]) -> List[bytes]:
        """kvtier keys of SGLang's page hashes (hex SHA-256, already chained
        over the prefix): one keyed BLAKE2b each, unchained, so that a key
        does not depend on where a batch starts."""
        return [kvtier.key_chain([bytes.fromhex(k)], self.secret)[0] for k in keys]

    # ---- pages <-> the host pool ----

    def _pool_page(self, host_indices, i: int) -> torch.Tensor:
        return self.mem_pool_host.get_data_page(
            int(host_indices[i * self.mem_pool_host.page_size]), flat=False)

    def _as_page(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(self.mem_pool_host.dtype).view(self._page_shape)

    # ---- the storage interface ----

    def batch_exists(self, keys: List[str], extra_info: Any = None) -> int:
        """How many of keys, from the first, kvtierd has or is being
        given by another process (early reuse: a read waits for those)."""
        ns = self.session.namespace()
        if ns is None or not keys:
            return 0
        try:
            ready, pending = ns.lookup(self._keys(keys))
            return ready + pending
        except Exception as e:
            self.session.failed("lookup", e)
            return 0

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    def batch_get_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Any = None) -> List[bool]:
        """Copies the pages of keys (as many as are there, from the first)
        into the host pool at host_indices; True for each one copied."""
        done = 0
        ns = self.session.namespace()
        if ns is not None and keys:
            try:
                with ns.acquire(self._keys(keys), wait_ms=self.wait_ms) as lease:
                    for i, src in enumerate(lease.tensors()):
                        self._pool_page(host_indices, i).copy_(self._as_page(src))
                        done = i + 1
            except Exception as e:  # a bad host_indices from SGLang included
                self.session.failed("read", e)
        return [True] * done + [False] * (len(keys) - done)

    def batch_set_v1(self, keys: List[str], host_indices: torch.Tensor,
                     extra_info: Any = None) -> List[bool]:
        """Stores the host pool's pages at host_indices under keys; True
        for each one kvtierd has now (written here, there already, or being
        written by another process)."""
        return self._store(keys, lambda i: self._pool_page(host_indices, i))

    def batch_get(self, keys: List[str], target_locations: Optional[Any] = None,
                  target_sizes: Optional[Any] = None) -> List[Optional[torch.Tensor]]:
        """The flat pages of keys (into target_locations when given), None
        from the first one missing."""
        out: List[Optional[torch.Tensor]] = [None] * len(keys)
        ns = self.session.namespace()
        if ns is None or not keys:
            return out
        try:
            with ns.acquire(self._keys(keys), wait_ms=self.wait_ms) as lease:
                for i, src in enumerate(lease.tensors(self.mem_pool_host.dtype)):
                    if target_locations is not None:
                        out[i] = target_locations[i].copy_(src)
                    else:
                        out[i] = src.clone()
        except Exception as e:
            self.session.failed("read", e)
        return out

    def get(self, key: str, target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> Optional[torch.Tensor]:
        return self.batch_get([key], None if target_location is None else [target_location])[0]

    def batch_set(self, keys: List[str], values: Optional[Any] = None,
                  target_locations: Optional[Any] = None,
                  target_sizes: Optional[Any] = None) -> bool:
        """Stores flat pages values[i] under keys[i]; True when all are in."""
        if values is None or len(values) != len(keys):
            return False
        return all(self._store(keys, lambda i: values[i].reshape(self._page_shape)))

    def set(self, key: str, value: Optional[Any] = None,
            target_location: Optional[Any] = None,
            target_sizes: Optional[Any] = None) -> bool:
        return self.batch_set([key], None if value is None else [value])

    def _store(self, keys: List[str], page_of) -> List[bool]:
        ns = self.session.namespace()
        if ns is None or not keys:
            return [False] * len(keys)
        res = None
        try:
            res = ns.reserve(self._keys(keys))
            # Each page is published as soon as it is in: a process
            # waiting on the prefix gets it without waiting for the batch.
            for i, dst in res.tensors():
                self._as_page(dst).copy_(page_of(i))
                res.commit([i])
            # Written here, there already, or being written by another
            # process (which commits it or gives it up): stored, as far as
            # this process is concerned. NO_SPACE: not stored.
            return [s != res.NO_SPACE for s in res.states]
        except Exception as e:  # a bad page from SGLang included: never raise
            if res is not None and not res.done:
                try:
                    res.abort()
                except kvtier.Error:
                    pass
            self.session.failed("write", e)
            return [False] * len(keys)

    def clear(self) -> None:
        """Drops every page of this process's namespace."""
        ns = self.session.namespace()
        if ns is not None:
            try:
                ns.drop()
            except Exception as e:
                self.session.failed("clear", e)

    def get_stats(self):
        return None
