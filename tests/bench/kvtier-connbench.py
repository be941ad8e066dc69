#!/usr/bin/python3
"""kvtier-connbench: what the engine connectors cost on the CPU, beside a
plain tensor copy of the same bytes in the same run.

  * vLLM, scheduler side: get_num_new_matched_tokens for a new request of
    64 blocks (1024 tokens) that kvtierd has, the keys made from its block
    hashes included; and for one it has not.
  * vLLM, worker side: saving 64 blocks (reserve before the forward, copy
    out of the paged cache and commit after it) and loading them back
    (acquire, copy into the paged cache, release), in GB/s, against a plain
    copy of the same bytes from one tensor into another, and against
    torch's own gather of the blocks from cache to cache.
  * SGLang: batch_set_v1 and batch_get_v1 of 64 pages between the host pool
    and kvtierd, against a copy of the same pages within the pool.

Llama-3-8B's shape (32 layers, 8 KV heads of 128, bf16): 16-token blocks
of 2 MiB. Each figure is the median of 5 rounds, after one round that
touches every page. Run as root, it reserves 2 MiB huge pages for the
host tier (and gives them back): on the development VM the first write
to a never-written 4 KiB page costs ~5.5 us (BENCHMARKS.md, issue 14).

    KVTIERD=build-release/daemon/kvtierd PYTHONPATH=build-release/client/python \\
        tests/bench/kvtier-connbench.py
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
from conftest import Daemon  # noqa: E402

import torch  # noqa: E402

import vllm_engine as ve  # noqa: E402
from sglang_engine import HostPool, StorageConfig, page_hashes, prompt_tokens  # noqa: E402
from kvtier.sglang import KvtierStore  # noqa: E402
from kvtier.vllm import KvtierMetadata, SaveJob  # noqa: E402

LAYERS, HEADS, HEAD_DIM, DTYPE = 32, 8, 128, torch.bfloat16
BLOCKS = 64
ROUNDS = 5


def median_of(fn, rounds=ROUNDS):
    fn()  # touches every page
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gbps(nbytes, s):
    return nbytes / s / 1e9


def vllm_bench(addr):
    eng = ve.Engine(addr, layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM,
                    num_blocks=2 * BLOCKS + 8, dtype=DTYPE)
    w, caches = eng.workers[0], list(eng.caches[0].values())
    block_bytes = LAYERS * 2 * ve.BLOCK * HEADS * HEAD_DIM * 2
    for c in caches:
        c.normal_()
    src, dst = list(range(BLOCKS)), list(range(BLOCKS, 2 * BLOCKS))
    salt = [100]

    def save():
        # A new prompt each time: its blocks are reserved, copied, committed.
        salt[0] += 1
        req = ve.Request(f"r{salt[0]}", ve.prompt(salt[0], BLOCKS, 0))
        keys = w._request_keys(req)
        meta = KvtierMetadata(saves=[SaveJob(req.request_id, keys, src, None)])
        w.bind_connector_metadata(meta)
        w.start_load_kv(None)
        w.wait_for_save()
        w.clear_connector_metadata()
        return keys

    def load(keys):
        n = w.session.namespace().onload(w._layout, caches, dst, keys)
        assert n == BLOCKS

    flat_src = torch.empty(BLOCKS * block_bytes, dtype=torch.uint8)
    flat_dst = torch.empty_like(flat_src)

    def plain_copy():  # the same bytes, one contiguous tensor into another
        flat_dst.copy_(flat_src)

    def paged_copy():  # torch's own gather of the blocks, per layer, in bf16
        ids = torch.tensor(src)
        for c in caches:
            c.index_copy_(1, torch.tensor(dst), c.index_select(1, ids))

    t_save = median_of(save)
    keys = save()
    t_load = median_of(lambda: load(keys))
    t_copy = median_of(plain_copy)
    t_paged = median_of(paged_copy)
    nbytes = BLOCKS * block_bytes
    print(f"vLLM worker, {BLOCKS} blocks of {block_bytes >> 20} MiB "
          f"({LAYERS} layers, FlashAttention layout):")
    print(f"  save (reserve, copy out, commit)  {gbps(nbytes, t_save):6.2f} GB/s"
          f"  ({gbps(nbytes, t_save) / gbps(nbytes, t_copy) * 100:.0f}% of the plain copy)")
    print(f"  load (acquire, copy in, release)  {gbps(nbytes, t_load):6.2f} GB/s"
          f"  ({gbps(nbytes, t_load) / gbps(nbytes, t_copy) * 100:.0f}% of the plain copy)")
    print(f"  plain tensor copy, same bytes     {gbps(nbytes, t_copy):6.2f} GB/s")
    print(f"  torch paged copy, cache to cache  {gbps(nbytes, t_paged):6.2f} GB/s"
          "  (index_select + index_copy_ per layer, bf16)")

    # The scheduler side: new requests (their block hashes made, as vLLM
    # makes them before the scheduler sees them) that kvtierd has, then
    # ones it has not.
    sched = eng.scheduler
    reqs = 2000
    hits = [ve.Request(f"h{i}", ve.prompt(101, BLOCKS, 0)) for i in range(reqs)]
    misses = [ve.Request(f"m{i}", ve.prompt(100000 + i, BLOCKS, 0)) for i in range(reqs)]
    per_request = {}
    for name, batch in (("hit", hits), ("miss", misses)):
        t = time.perf_counter()
        for req in batch:
            n, _ = sched.get_num_new_matched_tokens(req, 0)
            sched.request_finished(req, [])
        per_request[name] = (time.perf_counter() - t) / reqs
        assert n == (BLOCKS * ve.BLOCK - 1 if name == "hit" else 0)
    print(f"vLLM scheduler, get_num_new_matched_tokens of a new {BLOCKS}-block request "
          f"(its keys from vLLM's hashes, one Lookup), then request_finished:")
    print(f"  hit {per_request['hit'] * 1e6:6.1f} us, miss {per_request['miss'] * 1e6:6.1f} us"
          f" per request")
    eng.shutdown()


def sglang_bench(addr):
    page_size = 64  # SGLang's recommended page: 64 tokens
    pool = HostPool("mha", "page_first", layers=LAYERS, heads=HEADS, head_dim=HEAD_DIM,
                    page_size=page_size, pages=2 * BLOCKS, dtype=DTYPE)
    pool.kv_buffer.normal_()
    be = KvtierStore(StorageConfig(extra_config={"kvtier_addr": addr}), {})
    be.register_mem_pool_host(pool)
    page_bytes = pool.get_data_page(0, flat=False).numel() * 2
    salt = [200]

    def put():
        salt[0] += 1
        keys = page_hashes(prompt_tokens(salt[0], BLOCKS * page_size), page_size)
        assert be.batch_set_v1(keys, pool.indices(0, BLOCKS)) == [True] * BLOCKS
        return keys

    t_set = median_of(put)
    keys = put()
    t_get = median_of(lambda: be.batch_get_v1(keys, pool.indices(BLOCKS, BLOCKS)))
    kv = pool.kv_buffer

    def plain_copy():  # the same bytes, within the pool (page_first: contiguous)
        n = BLOCKS * page_size
        kv[:, n:2 * n].copy_(kv[:, :n])

    t_copy = median_of(plain_copy)
    nbytes = BLOCKS * page_bytes
    print(f"SGLang, {BLOCKS} pages of {page_bytes >> 20} MiB ({page_size} tokens, page_first):")
    print(f"  batch_set_v1 {gbps(nbytes, t_set):6.2f} GB/s"
          f"  ({gbps(nbytes, t_set) / gbps(nbytes, t_copy) * 100:.0f}% of the plain copy)")
    print(f"  batch_get_v1 {gbps(nbytes, t_get):6.2f} GB/s"
          f"  ({gbps(nbytes, t_get) / gbps(nbytes, t_copy) * 100:.0f}% of the plain copy)")
    print(f"  plain copy within the pool {gbps(nbytes, t_copy):6.2f} GB/s")
    be.close()


HOST_BYTES = 2 << 30
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def set_hugepages(n):
    with open(NR_HUGEPAGES, "w") as f:
        f.write(str(n))


def main():
    before = None
    if os.geteuid() == 0:
        with open(NR_HUGEPAGES) as f:
            before = int(f.read())
        set_hugepages(before + HOST_BYTES // (2 << 20))
    try:
        d = Daemon(f"host.size={HOST_BYTES}", "host.segment_size=256M",
                   "host.huge_pages=" + ("2M" if before is not None else "off"))
        try:
            print("host tier: " + ("2 MiB huge pages" if before is not None else "4 KiB pages"))
            vllm_bench(d.addr)
            sglang_bench(d.addr)
        finally:
            d.stop()
    finally:
        if before is not None:
            set_hugepages(before)


if __name__ == "__main__":
    main()
