"""A vLLM v1 KV connector on kvtierd.

vLLM engines on a node (and, through kvtierd's remote tier, on other
nodes) share the KV of prompt prefixes: a request whose prefix another
engine computed, or is computing right now, loads those blocks instead of
recomputing them. Loaded by module path, without patching vLLM:

    vllm serve MODEL --prefix-caching-hash-algo sha256_cbor \\
        --kv-transfer-config '{"kv_connector": "KvtierConnector",
            "kv_connector_module_path": "kvtier.vllm", "kv_role": "kv_both",
            "kv_load_failure_policy": "recompute"}'

with the same PYTHONHASHSEED in every engine: vLLM seeds its block-hash
chain from it (random per process otherwise), and the keys are made from
those hashes. "recompute" makes a block that could not be loaded (its
writer died, the daemon restarted) a recompute instead of a failed request.
Optional kv_connector_extra_config keys: "kvtier_addr", "kvtier_secret"
(hex, 16..64 bytes), "kvtier_wait_ms" (how long a load waits for blocks
another engine is still writing; 2000), "kvtier_tp_rank" (where vLLM's
tensor-parallel group cannot be asked).

Why a KVConnectorBase_V1 and not an OffloadingSpec for vLLM's
OffloadingConnector: blocks that another engine is still writing are part
of a hit here (early reuse), which takes an asynchronous load that may
wait and may fail; the offloading worker treats every transfer as one that
succeeds, and its keys are its own process's. The contract followed is
vLLM's KVConnectorBase_V1 at commit 9aaf83ef (2026-05-19, about v0.22.0.dev);
it was tested against that contract by replaying vLLM's call sequence with
CPU tensors (tests/python/test_vllm.py), not inside vLLM.

How it works:
  * Scheduler side (engine-core process): get_num_new_matched_tokens looks
    the request's block keys up (blocks ready or being written count) and
    answers with an asynchronous load of what vLLM's own prefix cache does
    not have; the request waits until every worker has loaded its part.
    build_connector_meta hands the workers this step's loads, and the
    blocks that this step's forward completes, to be saved.
  * Worker side (one per GPU): loads run on a thread of their own (a load
    may wait for another engine's blocks); a block not loaded is reported
    through get_block_ids_with_load_errors. Blocks to save are reserved
    before the forward, so that other engines see them coming and wait for
    them, and are copied and committed after it (wait_for_save).
  * One page per block: every layer of the worker's shard, K and V
    (kvtier.kv's page layout), in a namespace per model, dtype, shape and
    tensor-parallel rank. The scheduler looks blocks up in rank 0's.
  * Caches in FlashAttention's layout ([2, blocks, block_size, heads,
    head_dim] per layer) are supported; MLA and FlashInfer layouts are not
    yet: the connector then loads and saves nothing, and says so once.
  * Nothing raises into vLLM: a daemon that is down reads as misses.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

import kvtier
from ._connector import DaemonSession, namespace_name, secret_of

try:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (
        KVConnectorBase_V1, KVConnectorMetadata, KVConnectorRole)
except ImportError:  # no vLLM here: the same names, as far as we use them
    import enum

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        SCHEDULER = 0
        WORKER = 1

    class KVConnectorMetadata:  # type: ignore[no-redef]
        pass

    class KVConnectorBase_V1:  # type: ignore[no-redef]
        def __init__(self, vllm_config, role, kv_cache_config=None):
            self._connector_metadata = None
            self._vllm_config = vllm_config
            self._kv_transfer_config = vllm_config.kv_transfer_config
            self._kv_cache_config = kv_cache_config
            self._role = role

        @property
        def role(self):
            return self._role

        def bind_connector_metadata(self, connector_metadata) -> None:
            self._connector_metadata = connector_metadata

        def clear_connector_metadata(self) -> None:
            self._connector_metadata = None

        def _get_connector_metadata(self):
            return self._connector_metadata

        def has_connector_metadata(self) -> bool:
            return self._connector_metadata is not None

        def handle_preemptions(self, kv_connector_metadata) -> None:
            pass

        def update_connector_output(self, connector_output) -> None:
            pass

__all__ = ["KvtierConnector", "KvtierMetadata"]

log = logging.getLogger("kvtier.vllm")


@dataclass
class LoadJob:
    req_id: str
    keys: List[bytes]
    block_ids: List[int]


@dataclass
class SaveJob:
    req_id: str
    keys: List[bytes]
    block_ids: List[int]
    parent: Optional[bytes]


@dataclass
class KvtierMetadata(KVConnectorMetadata):
    """One step's work for the workers (pickled to each)."""
    loads: List[LoadJob] = field(default_factory=list)
    saves: List[SaveJob] = field(default_factory=list)


@dataclass
class _Shape:
    """The per-rank KV layout, from vLLM's KV cache config."""
    layers: int
    block_size: int
    heads: int
    head_dim: int
    dtype: Any
    supported: bool
    why_not: str = ""


def _shape_of(kv_cache_config) -> _Shape:
    groups = getattr(kv_cache_config, "kv_cache_groups", None) or []
    if len(groups) != 1:
        return _Shape(0, 0, 0, 0, None, False,
                      f"{len(groups)} KV cache groups (one is supported: dense attention)")
    spec = groups[0].kv_cache_spec
    shape = _Shape(len(groups[0].layer_names), spec.block_size,
                   getattr(spec, "num_kv_heads", 0), getattr(spec, "head_size", 0),
                   spec.dtype, True)
    if "MLA" in type(spec).__name__ or getattr(spec, "use_mla", False):
        shape.supported, shape.why_not = False, "MLA caches are not supported yet"
    return shape


class KvtierConnector(KVConnectorBase_V1):
    """vLLM's KV connector on kvtierd (see the module's documentation)."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        super().__init__(vllm_config, role, kv_cache_config)
        extra = dict(getattr(self._kv_transfer_config, "kv_connector_extra_config", None) or {})
        self.secret = secret_of(extra.get("kvtier_secret"), b"kvtier.vllm default page-key secret")
        self.wait_ms = int(extra.get("kvtier_wait_ms", 2000))
        parallel = getattr(vllm_config, "parallel_config", None)
        self.tp_size = getattr(parallel, "tensor_parallel_size", 1)
        self.is_scheduler = role == KVConnectorRole.SCHEDULER
        self.rank = 0 if self.is_scheduler else _tp_rank(extra)
        self.model = getattr(getattr(vllm_config, "model_config", None), "model", None)
        self.shape = _shape_of(kv_cache_config)
        self.session = DaemonSession(
            extra.get("kvtier_addr"),
            f"vllm:{'scheduler' if self.is_scheduler else f'tp{self.rank}'}:{os.getpid()}", log)
        if not self.shape.supported:
            log.warning("kvtier connector off: %s", self.shape.why_not)
        elif self.is_scheduler:
            self._configure(None)
        # Scheduler side, per request id.
        self._requests: Dict[str, Any] = {}
        self._keys: Dict[str, List[bytes]] = {}
        self._block_ids: Dict[str, List[int]] = {}
        self._saved: Dict[str, int] = {}      # blocks [0, n) saved or asked for
        self._matched: Dict[str, int] = {}    # vLLM's own hit, in blocks
        self._loads: List[LoadJob] = []
        # Worker side.
        self._caches = None
        self._layout = None
        self._reserved: List[Tuple[SaveJob, Any]] = []
        self._done_lock = threading.Lock()
        self._loaded: Set[str] = set()
        self._load_errors: Set[int] = set()
        self._queue: "queue.Queue[Optional[LoadJob]]" = queue.Queue()
        self._loader: Optional[threading.Thread] = None

    def _configure(self, device: Optional[int]) -> None:
        s = self.shape
        dtype = str(s.dtype).replace("torch.", "")
        page_bytes = (s.layers * 2 * s.block_size * s.heads * s.head_dim *
                      _itemsize(s.dtype))
        name = namespace_name("vllm", self.model, [
            dtype, f"bs{s.block_size}", f"l{s.layers}h{s.heads}d{s.head_dim}",
            f"tp{self.rank}of{self.tp_size}"])
        self.session.configure(name, page_bytes, s.block_size, device)

    # ---- keys ----

    def _request_keys(self, request) -> List[bytes]:
        """The kvtier keys of the request's full blocks, from vLLM's block
        hashes, extended as vLLM hashes more of them."""
        have = self._keys.setdefault(request.request_id, [])
        hashes = request.block_hashes
        if len(hashes) > len(have):
            have += kvtier.key_chain(hashes[len(have):], self.secret,
                                     have[-1] if have else None)
        return have

    # ---- scheduler side ----

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int):
        """Tokens beyond vLLM's own hit that kvtierd has (or another
        engine is writing), to load asynchronously."""
        ns = self.session.namespace() if self.shape.supported else None
        if ns is None:
            return 0, False
        bs = self.shape.block_size
        try:
            keys = self._request_keys(request)
            ready, pending = ns.lookup(keys)
        except Exception as e:
            self.session.failed("lookup", e)
            return 0, False
        local = num_computed_tokens // bs
        # At least one prompt token is left to compute, as vLLM needs.
        ext = min((ready + pending) * bs, request.num_tokens - 1) - num_computed_tokens
        if ext <= 0:
            return 0, False
        self._matched[request.request_id] = local
        return ext, True

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int):
        rid = request.request_id
        self._requests[rid] = request
        ids = list(blocks.get_block_ids()[0])
        if ids:
            self._block_ids[rid] = ids
        local = self._matched.pop(rid, None)
        if num_external_tokens > 0 and local is not None:
            n = -(-num_external_tokens // self.shape.block_size)
            keys = self._request_keys(request)
            self._loads.append(LoadJob(rid, keys[local:local + n], ids[local:local + n]))

    def build_connector_meta(self, scheduler_output) -> KvtierMetadata:
        meta = KvtierMetadata(loads=self._loads)
        self._loads = []
        for new in scheduler_output.scheduled_new_reqs:
            self._block_ids[new.req_id] = list(new.block_ids[0])
        cached = scheduler_output.scheduled_cached_reqs
        resumed = set(getattr(cached, "resumed_req_ids", ()) or ())
        for rid, new_ids in zip(cached.req_ids, cached.new_block_ids):
            if new_ids is None:
                continue
            if rid in resumed:
                self._block_ids[rid] = list(new_ids[0])
            else:
                self._block_ids.setdefault(rid, []).extend(new_ids[0])
        if not self.shape.supported:
            return meta
        bs = self.shape.block_size
        for rid, n in scheduler_output.num_scheduled_tokens.items():
            request = self._requests.get(rid)
            if request is None:
                continue
            keys = self._request_keys(request)
            ids = self._block_ids.get(rid, [])
            full = min((request.num_computed_tokens + n) // bs, len(keys), len(ids))
            first = self._saved.get(rid, 0)
            if full > first:
                meta.saves.append(SaveJob(rid, keys[first:full], ids[first:full],
                                          keys[first - 1] if first else None))
                self._saved[rid] = full
        return meta

    def request_finished(self, request, block_ids) -> Tuple[bool, Optional[dict]]:
        """Saves are done within their step: the blocks may go at once."""
        rid = request.request_id
        for d in (self._requests, self._keys, self._block_ids, self._saved, self._matched):
            d.pop(rid, None)
        return False, None

    # ---- worker side ----

    def register_kv_caches(self, kv_caches: Dict[str, Any]) -> None:
        caches = list(kv_caches.values())
        s = self.shape
        want = (2, s.block_size, s.heads, s.head_dim)
        first = caches[0] if caches else None
        if not s.supported or first is None:
            return
        if first.dim() != 5 or (first.shape[0], *first.shape[2:]) != want:
            s.supported = False
            s.why_not = (f"a cache of shape {tuple(first.shape)}, not FlashAttention's "
                         f"[2, blocks, {s.block_size}, {s.heads}, {s.head_dim}]")
            log.warning("kvtier connector off: %s", s.why_not)
            return
        from .kv import KVLayout  # torch, only where caches are
        self._caches = caches
        self._layout = KVLayout(len(caches), s.block_size, s.heads, s.head_dim, first.dtype)
        self._configure(first.device.index if first.device.type == "cuda" else None)
        self._loader = threading.Thread(target=self._load_main, name="kvtier-load",
                                        daemon=True)
        self._loader.start()

    def start_load_kv(self, forward_context, **kwargs) -> None:
        meta = self._get_connector_metadata()
        if not isinstance(meta, KvtierMetadata) or self._layout is None:
            if isinstance(meta, KvtierMetadata):  # off: every load fails now
                for job in meta.loads:
                    self._finish_load(job, 0)
            return
        for job in meta.loads:
            self._queue.put(job)
        ns = self.session.namespace()
        for job in meta.saves:
            # Reserved before the forward computes them: another engine
            # looking them up now counts them and waits (early reuse).
            if ns is None:
                break
            try:
                self._reserved.append((job, ns.reserve(job.keys, job.parent)))
            except Exception as e:
                self.session.failed("reserve", e)

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Loads are asynchronous: a request runs only once loaded."""

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs) -> None:
        """Whole blocks (every layer) are saved after the forward."""

    def wait_for_save(self) -> None:
        reserved, self._reserved = self._reserved, []
        for job, res in reserved:
            try:
                idx = [i for i, _ in res.pages]
                if idx:
                    self._layout.gather(self._caches, [job.block_ids[i] for i in idx],
                                        [v for _, v in res.pages])
                res.commit()
            except Exception as e:
                self.session.failed("save", e)
                try:
                    res.abort()
                except Exception:
                    pass

    def get_finished(self, finished_req_ids: Set[str]):
        with self._done_lock:
            loaded, self._loaded = self._loaded, set()
        return None, (loaded or None)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        with self._done_lock:
            errors, self._load_errors = self._load_errors, set()
        return errors

    def shutdown(self) -> None:
        if self._loader is not None:
            self._queue.put(None)
            self._loader.join(timeout=5)
        self.session.close()

    def _finish_load(self, job: LoadJob, n: int) -> None:
        """job's first n blocks are in; the rest are load errors."""
        with self._done_lock:
            self._load_errors.update(job.block_ids[n:])
            self._loaded.add(job.req_id)

    def _load_main(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            n = 0
            ns = self.session.namespace()
            if ns is not None:
                try:
                    n = ns.onload(self._layout, self._caches, job.block_ids, job.keys,
                                  wait_ms=self.wait_ms)
                except Exception as e:
                    self.session.failed("load", e)
            self._finish_load(job, n)


def _itemsize(dtype) -> int:
    import torch
    return torch.tensor([], dtype=dtype).element_size()


def _tp_rank(extra: dict) -> int:
    """This worker's tensor-parallel rank: vLLM's group, or the config."""
    if "kvtier_tp_rank" in extra:
        return int(extra["kvtier_tp_rank"])
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
        return get_tensor_model_parallel_rank()
    except Exception:  # no vLLM, or no group (a single-GPU engine)
        return 0
