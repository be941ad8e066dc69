"""SGLang as its L3 storage backend sees it, for kvtier.sglang's tests: the
host KV pools (memory_pool_host.py), the storage config (hicache_storage.py
HiCacheStorageConfig) and the page hashes (mem_cache/utils.py
get_hash_str), as SGLang lays them out at commit 9864059e (2026-06-15).
Written from a reading of SGLang, not copied. Also a small "engine" main
that writes or reads pages through the backend in a process of its own.
"""
import hashlib
import json
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class StorageConfig:
    """HiCacheStorageConfig's fields, in its order."""
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    attn_cp_rank: int = 0
    attn_cp_size: int = 1
    is_mla_model: bool = False
    enable_storage_metrics: bool = False
    is_page_first_layout: bool = False
    model_name: Optional[str] = "test-model"
    tp_lcm_size: Optional[int] = None
    should_split_heads: bool = False
    extra_config: Optional[dict] = field(default_factory=dict)


def page_hashes(tokens, page_size, prior=None):
    """get_hash_str chained page by page: SHA-256 of the previous page's
    hash bytes, then each token as 4 bytes little-endian; 64 hex chars."""
    out = []
    for p in range(len(tokens) // page_size):
        h = hashlib.sha256()
        if prior is not None:
            h.update(bytes.fromhex(prior))
        for t in tokens[p * page_size:(p + 1) * page_size]:
            h.update(struct.pack("<I", t))
        prior = h.hexdigest()
        out.append(prior)
    return out


def prompt_tokens(salt, n):
    """A prompt of n tokens, different for each salt."""
    return [salt * 100000 + t for t in range(n)]


class HostPool:
    """MHATokenToKVPoolHost ("mha") or MLATokenToKVPoolHost ("mla"): a
    kv_buffer of `pages` pages of page_size token slots in one of SGLang's
    layouts, with the accessors a storage backend uses."""

    def __init__(self, kind="mha", layout="layer_first", layers=3, heads=2,
                 head_dim=8, page_size=4, pages=16, dtype=torch.bfloat16,
                 slow_s=0.0):
        self.kind, self.layout, self.page_size = kind, layout, page_size
        self.layer_num, self.head_num, self.head_dim = layers, heads, head_dim
        self.page_num, self.size, self.dtype = pages, pages * page_size, dtype
        self.slow_s = slow_s  # per get_data_page: a slow copy, for the tests
        P, L, H, D, S = page_size, layers, heads, head_dim, self.size
        if kind == "mha":
            shape = {"layer_first": (2, L, S, H, D), "page_first": (2, S, L, H, D),
                     "page_first_direct": (2, pages, L, P, H, D)}[layout]
        else:  # MLA: one latent vector per token and layer (head_dim = kv_dim)
            shape = {"layer_first": (L, S, 1, D), "page_first": (S, L, 1, D),
                     "page_first_direct": (pages, L, P, 1, D)}[layout]
        self.kv_buffer = torch.zeros(shape, dtype=dtype)

    def get_data_page(self, index, flat=True):
        if self.slow_s:
            time.sleep(self.slow_s)
        kv, P = self.kv_buffer, self.page_size
        if self.kind == "mha":
            page = {"layer_first": lambda: kv[:, :, index:index + P],
                    "page_first": lambda: kv[:, index:index + P],
                    "page_first_direct": lambda: kv[:, index // P:index // P + 1]}[self.layout]()
        else:
            page = {"layer_first": lambda: kv[:, index:index + P],
                    "page_first": lambda: kv[index:index + P],
                    "page_first_direct": lambda: kv[index // P:index // P + 1]}[self.layout]()
        return page.flatten() if flat else page

    def get_dummy_flat_data_page(self):
        return torch.zeros(self.get_data_page(0, flat=False).numel(), dtype=self.dtype)

    def set_from_flat_data_page(self, index, data_page):
        page = self.get_data_page(index, flat=False)
        page.copy_(data_page.view(page.shape))

    def indices(self, first_page, n):
        """host_indices of n pages from first_page: token slots, int64."""
        return torch.arange(first_page * self.page_size,
                            (first_page + n) * self.page_size, dtype=torch.int64)

    def fill(self, first_page, n, seed):
        """Random content in n pages from first_page."""
        g = torch.Generator().manual_seed(seed)
        for i in range(n):
            page = self.get_data_page((first_page + i) * self.page_size, flat=False)
            page.copy_(torch.randint(0, 120, page.shape, generator=g).to(self.dtype))

    def page_bytes(self, first_page, n):
        return [self.get_data_page((first_page + i) * self.page_size, flat=False)
                .contiguous().view(torch.uint8).flatten().tolist()
                for i in range(n)]


def main():
    """An engine of its own: python sglang_engine.py ARGS_JSON. Writes
    (op "set") n pages of prompt_tokens(salt) through the backend, or reads
    (op "get") them, and prints a JSON line of what it did."""
    from kvtier.sglang import KvtierStore

    a = json.loads(sys.argv[1])
    pool = HostPool(pages=a["n"], slow_s=a.get("slow_s", 0.0))
    cfg = StorageConfig(extra_config={"kvtier_addr": a["addr"],
                                      "kvtier_wait_ms": a.get("wait_ms", 1000)})
    be = KvtierStore(cfg, {})
    be.register_mem_pool_host(pool)
    keys = page_hashes(prompt_tokens(a["salt"], a["n"] * pool.page_size), pool.page_size)
    if a["op"] == "set":
        pool.fill(0, a["n"], seed=a["seed"])
        print(json.dumps({"ready": True}), flush=True)
        ok = be.batch_set_v1(keys, pool.indices(0, a["n"]))
        print(json.dumps({"stored": ok}), flush=True)
    else:
        ok = be.batch_get_v1(keys, pool.indices(0, a["n"]))
        print(json.dumps({"loaded": ok, "pages": pool.page_bytes(0, sum(ok))}), flush=True)
    be.close()


if __name__ == "__main__":
    main()
