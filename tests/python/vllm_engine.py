"""vLLM as its v1 KV connector sees it, for kvtier.vllm's tests: the config,
request, block and scheduler-output objects a connector reads (vLLM commit
9aaf83ef, 2026-05-19), FlashAttention's paged KV cache ([2, blocks,
block_size, kv_heads, head_dim] per layer, CPU tensors here), and an
Engine that replays vLLM's calls: on the scheduler connector
get_num_new_matched_tokens, update_state_after_alloc and
build_connector_meta; on each worker connector bind_connector_metadata,
start_load_kv, the per-layer hooks around the forward, wait_for_save,
get_finished, get_block_ids_with_load_errors and clear_connector_metadata.
Written from a reading of vLLM, not copied. The "forward" writes KV that
depends only on the token, its position, layer, head and dim, so two
engines compute the same KV for the same prefix, and a loaded block can
be checked against what a recompute would give.

As a program (python vllm_engine.py ARGS_JSON) it is an engine of its own
that computes one prompt and saves its blocks, printing a JSON line after
the reservations are made and another once saved.
"""
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

from kvtier.vllm import KvtierConnector, KVConnectorRole

BLOCK = 16


# ---- the objects a connector reads ----

class KVTransferConfig:
    def __init__(self, extra):
        self.kv_connector = "KvtierConnector"
        self.kv_connector_module_path = "kvtier.vllm"
        self.kv_role = "kv_both"
        self.kv_load_failure_policy = "recompute"
        self.kv_connector_extra_config = extra

    def get_from_extra_config(self, key, default):
        return self.kv_connector_extra_config.get(key, default)


def vllm_config(extra, tp=1, model="test/llama"):
    return SimpleNamespace(kv_transfer_config=KVTransferConfig(extra),
                           parallel_config=SimpleNamespace(tensor_parallel_size=tp),
                           model_config=SimpleNamespace(model=model))


@dataclass
class FullAttentionSpec:
    block_size: int
    num_kv_heads: int
    head_size: int
    dtype: torch.dtype


def kv_cache_config(layers, heads, head_dim, dtype, spec=FullAttentionSpec):
    group = SimpleNamespace(layer_names=[layer_name(i) for i in range(layers)],
                            kv_cache_spec=spec(BLOCK, heads, head_dim, dtype))
    return SimpleNamespace(kv_cache_groups=[group])


def layer_name(i):
    return f"model.layers.{i}.self_attn.attn"


def block_hashes(tokens):
    """hash_block_tokens chained over full blocks (a fixed seed: what
    PYTHONHASHSEED and sha256_cbor give every engine)."""
    out, parent = [], b"seed"
    for b in range(len(tokens) // BLOCK):
        parent = hashlib.sha256(parent + repr(tuple(tokens[b * BLOCK:(b + 1) * BLOCK]))
                                .encode()).digest()
        out.append(parent)
    return out


@dataclass
class Request:
    request_id: str
    prompt_token_ids: List[int]
    num_computed_tokens: int = 0
    block_hashes: List[bytes] = field(default_factory=list)

    def __post_init__(self):
        self.block_hashes = block_hashes(self.prompt_token_ids)

    @property
    def num_tokens(self):
        return len(self.prompt_token_ids)


class KVCacheBlocks:
    def __init__(self, ids):
        self.ids = ids

    def get_block_ids(self, allow_none=False):
        return (list(self.ids),)


def prompt(salt, blocks, extra_tokens=3):
    return [salt * 1000 + t for t in range(blocks * BLOCK + extra_tokens)]


def expected_block(tokens, b, layers, heads, head_dim, dtype, rank=0):
    """[layers][2, BLOCK, heads, head_dim]: block b of a prompt's KV."""
    t = torch.tensor(tokens[b * BLOCK:(b + 1) * BLOCK]).view(1, BLOCK, 1, 1)
    pos = torch.arange(b * BLOCK, (b + 1) * BLOCK).view(1, BLOCK, 1, 1)
    kv = torch.arange(2).view(2, 1, 1, 1)
    h = torch.arange(heads).view(1, 1, heads, 1) + rank * 8
    d = torch.arange(head_dim).view(1, 1, 1, head_dim)
    return [((t * 7 + pos * 3 + layer * 13 + kv * 5 + h * 11 + d) % 97).to(dtype)
            for layer in range(layers)]


# ---- an engine: one scheduler connector, a worker connector per rank ----

class Engine:
    def __init__(self, addr, tp=1, layers=2, heads=2, head_dim=8, num_blocks=64,
                 dtype=torch.bfloat16, extra=None, cache_shape=None, spec=FullAttentionSpec):
        self.layers, self.heads, self.head_dim, self.dtype = layers, heads, head_dim, dtype
        base = dict(kvtier_addr=addr, **(extra or {}))
        kvcfg = kv_cache_config(layers, heads, head_dim, dtype, spec)
        self.scheduler = KvtierConnector(vllm_config(base, tp), KVConnectorRole.SCHEDULER, kvcfg)
        self.workers, self.caches = [], []
        shape = cache_shape or (2, num_blocks, BLOCK, heads, head_dim)
        for r in range(tp):
            w = KvtierConnector(vllm_config(dict(base, kvtier_tp_rank=r), tp),
                                KVConnectorRole.WORKER, kvcfg)
            caches = {layer_name(i): torch.zeros(shape, dtype=dtype) for i in range(layers)}
            w.register_kv_caches(caches)
            self.workers.append(w)
            self.caches.append(caches)
        self.free = list(range(num_blocks))
        self.requests: Dict[str, Request] = {}
        self.blocks: Dict[str, List[int]] = {}
        self.waiting_remote: set = set()
        self.new: List[str] = []
        self.finished_recving: set = set()
        self.reports: Dict[str, int] = {}
        self.load_errors: set = set()

    def admit(self, req: Request):
        """A waiting request's first schedule: vLLM's own prefix cache is
        empty here (no local hit). Returns (external tokens, async)."""
        n, load_async = self.scheduler.get_num_new_matched_tokens(req, 0)
        ids = [self.free.pop(0) for _ in range(-(-req.num_tokens // BLOCK))]
        self.requests[req.request_id] = req
        self.blocks[req.request_id] = ids
        self.scheduler.update_state_after_alloc(req, KVCacheBlocks(ids), n)
        if load_async:
            req.num_computed_tokens = n
            self.waiting_remote.add(req.request_id)
        else:
            self.new.append(req.request_id)
        return n, load_async

    def step(self, schedule: Dict[str, int], forward_s=0.0, on_reserved=None):
        """One step: the scheduler's metadata, then each worker's calls
        around a forward that computes schedule[rid] tokens of each."""
        new_reqs = [SimpleNamespace(req_id=r, block_ids=(self.blocks[r],),
                                    num_computed_tokens=self.requests[r].num_computed_tokens)
                    for r in self.new if r in schedule]
        cached_ids = [r for r in schedule if r not in self.new]
        cached = SimpleNamespace(req_ids=cached_ids, resumed_req_ids=set(),
                                 new_block_ids=[None] * len(cached_ids),
                                 num_computed_tokens=[self.requests[r].num_computed_tokens
                                                      for r in cached_ids])
        self.new = [r for r in self.new if r not in schedule]
        out = SimpleNamespace(scheduled_new_reqs=new_reqs, scheduled_cached_reqs=cached,
                              num_scheduled_tokens=dict(schedule), finished_req_ids=set())
        meta = self.scheduler.build_connector_meta(out)
        for w in self.workers:
            w.handle_preemptions(meta)
            w.bind_connector_metadata(meta)
            w.start_load_kv(SimpleNamespace(attn_metadata=None))
        if on_reserved:
            on_reserved()
        time.sleep(forward_s)
        for rank, (w, caches) in enumerate(zip(self.workers, self.caches)):
            for i in range(self.layers):
                w.wait_for_layer_load(layer_name(i))
                self._forward_layer(rank, i, caches[layer_name(i)], schedule)
                w.save_kv_layer(layer_name(i), caches[layer_name(i)], None)
            w.wait_for_save()
        for rid, n in schedule.items():
            self.requests[rid].num_computed_tokens += n
        self.poll()
        return meta

    def poll(self):
        """The end of a step on every worker: what finished loading and
        what failed to. As vLLM's KVOutputAggregator, a request has
        finished once every rank has reported it, in this step or earlier."""
        done = set()
        for w in self.workers:
            _, r = w.get_finished(set())
            for rid in r or ():
                self.reports[rid] = self.reports.get(rid, 0) + 1
                if self.reports[rid] == len(self.workers):
                    done.add(rid)
            self.load_errors |= w.get_block_ids_with_load_errors()
            w.clear_connector_metadata()
        self.finished_recving |= done
        return done

    def wait_loaded(self, rid, timeout=10.0):
        """Steps with nothing scheduled until rid has loaded everywhere."""
        deadline = time.monotonic() + timeout
        while rid not in self.finished_recving:
            assert time.monotonic() < deadline, f"{rid} never finished loading"
            self.step({})
            time.sleep(0.01)
        self.waiting_remote.discard(rid)

    def _forward_layer(self, rank, layer, cache, schedule):
        for rid, n in schedule.items():
            req, ids = self.requests[rid], self.blocks[rid]
            for pos in range(req.num_computed_tokens, req.num_computed_tokens + n):
                tok = req.prompt_token_ids[pos]
                blk, off = ids[pos // BLOCK], pos % BLOCK
                t = torch.tensor(float(tok * 7 + pos * 3 + layer * 13))
                kv = torch.arange(2).view(2, 1, 1)
                h = torch.arange(self.heads).view(1, self.heads, 1) + rank * 8
                d = torch.arange(self.head_dim).view(1, 1, self.head_dim)
                cache[:, blk, off] = ((t + kv * 5 + h * 11 + d) % 97).to(self.dtype)

    def block(self, rid, b, rank=0):
        """Block b of request rid as this engine's cache holds it."""
        blk = self.blocks[rid][b]
        return [self.caches[rank][layer_name(i)][:, blk] for i in range(self.layers)]

    def finish(self, rid):
        self.scheduler.request_finished(self.requests[rid], self.blocks[rid])

    def shutdown(self):
        self.scheduler.shutdown()
        for w in self.workers:
            w.shutdown()


def main():
    """op "compute": compute and save the prompt, printing once its blocks
    are reserved and once saved; op "load": admit it and load what
    kvtierd has, printing the match first and the load errors last."""
    a = json.loads(sys.argv[1])
    eng = Engine(a["addr"], tp=a.get("tp", 1), extra={"kvtier_wait_ms": 30000})
    req = Request("a-req", prompt(a["salt"], a["blocks"]))
    if a.get("op", "compute") == "load":
        n, _ = eng.admit(req)
        print(json.dumps({"matched": n}), flush=True)
        eng.wait_loaded("a-req", timeout=60)
        print(json.dumps({"errors": sorted(eng.load_errors)}), flush=True)
    else:
        eng.admit(req)
        eng.step({"a-req": req.num_tokens}, forward_s=a.get("forward_s", 0.0),
                 on_reserved=lambda: print(json.dumps({"reserved": True}), flush=True))
        print(json.dumps({"saved": True}), flush=True)
    eng.finish("a-req")
    eng.shutdown()


if __name__ == "__main__":
    main()
