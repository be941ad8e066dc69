"""kvtier-ttft: time to first token, prefix restored from kvtier against
recomputed, on a real transformer forward.

The model is a Llama-architecture decoder written with torch ops (RMSNorm,
rotary embeddings, grouped-query attention, SwiGLU MLP) with random weights
from a fixed seed: nothing is downloaded, and the compute per token is the
real one for its shape. Its KV cache is paged in vLLM's layout (per layer
[2, num_blocks, block_tokens, kv_heads, head_dim]).

A request is served as an engine with prefix caching serves it: chained keys
-> Lookup -> Acquire the ready prefix (waiting for blocks other workers are
producing, unless waits are off) -> copy the pages into the KV cache ->
prefill the rest chunk by chunk, committing each block as soon as it is
computed (early reuse for the next worker) -> first token.

    kvtier-ttft --check                 # restored == recomputed (seconds)
    kvtier-ttft --preset cpu            # (a) prefixes, (b) burst, (c) block size
    kvtier-ttft --preset llama-3-8b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

import kvtier
from kvtier.kv import KVLayout

SECRET = b"kvtier-ttft-secret-0001"


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS = {
    # --check in the suite: seconds on 2 cores.
    "tiny": Shape(layers=2, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab=512),
    # The figures on a CPU: the 8-layer, 512-wide model.
    "cpu": Shape(layers=8, hidden=512, heads=8, kv_heads=2, intermediate=1536, vocab=8192),
    # Llama-3-8B's shape (on a GPU).
    "llama-3-8b": Shape(layers=32, hidden=4096, heads=32, kv_heads=8, intermediate=14336,
                        vocab=128256),
}


# ---- the model ----

class Llama:
    """A Llama decoder with random weights (seed), forward over a paged KV
    cache."""

    def __init__(self, shape: Shape, dtype, device, seed: int = 0):
        self.s = shape
        self.dtype = dtype
        self.device = device
        g = torch.Generator().manual_seed(seed)

        def w(*dims, scale=None):
            t = torch.randn(*dims, generator=g) * (scale or 1 / math.sqrt(dims[0]))
            return t.to(device=device, dtype=dtype)
        d, hd = shape.hidden, shape.head_dim
        self.embed = w(shape.vocab, d, scale=1.0)
        self.layers = [dict(
            attn_norm=torch.ones(d, dtype=dtype, device=device),
            wq=w(d, shape.heads * hd), wk=w(d, shape.kv_heads * hd),
            wv=w(d, shape.kv_heads * hd), wo=w(shape.heads * hd, d),
            mlp_norm=torch.ones(d, dtype=dtype, device=device),
            wg=w(d, shape.intermediate), wu=w(d, shape.intermediate),
            wd=w(shape.intermediate, d)) for _ in range(shape.layers)]
        self.norm = torch.ones(d, dtype=dtype, device=device)
        self.lm_head = w(d, shape.vocab)
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.inv_freq = inv.to(device)

    @staticmethod
    def rmsnorm(x, weight, eps=1e-5):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight

    def rope(self, x, pos):
        # x [T, heads, hd]; rotate halves (Llama's layout).
        ang = pos.float()[:, None] * self.inv_freq[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1).to(x.dtype)

    def forward(self, tokens, start: int, cache, block_tokens: int):
        """Runs tokens at positions [start, start+T) with the cache holding
        [0, start); writes their K and V into the cache (block table: block
        i of the sequence is cache block i); returns the last position's
        logits (float32)."""
        s, T = self.s, len(tokens)
        end = start + T
        pos = torch.arange(start, end, device=self.device)
        allpos = torch.arange(0, end, device=self.device)
        slots_new = pos  # identity block table: slot = position
        x = self.embed[tokens]
        mask = allpos[None, :] > pos[:, None]  # [T, end]
        group = s.heads // s.kv_heads
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            q = (h @ L["wq"]).view(T, s.heads, s.head_dim)
            k = (h @ L["wk"]).view(T, s.kv_heads, s.head_dim)
            v = (h @ L["wv"]).view(T, s.kv_heads, s.head_dim)
            q, k = self.rope(q, pos), self.rope(k, pos)
            flat = cache[li].view(2, -1, s.kv_heads, s.head_dim)
            flat[0].index_copy_(0, slots_new, k)
            flat[1].index_copy_(0, slots_new, v)
            K = flat[0, :end].transpose(0, 1)  # [kvh, end, hd]
            V = flat[1, :end].transpose(0, 1)
            K = K.repeat_interleave(group, 0)
            V = V.repeat_interleave(group, 0)
            qh = q.transpose(0, 1)  # [H, T, hd]
            scores = (qh @ K.transpose(1, 2)).float() / math.sqrt(s.head_dim)
            scores.masked_fill_(mask[None], float("-inf"))
            att = torch.softmax(scores, -1).to(x.dtype) @ V  # [H, T, hd]
            x = x + att.transpose(0, 1).reshape(T, -1) @ L["wo"]
            h = self.rmsnorm(x, L["mlp_norm"])
            x = x + (torch.nn.functional.silu(h @ L["wg"]) * (h @ L["wu"])) @ L["wd"]
        return (self.rmsnorm(x[-1:], self.norm) @ self.lm_head).float()[0]


# ---- serving one request ----

@dataclass
class Result:
    ttft: float          # seconds, request start to first token
    restored: int        # tokens restored from kvtier
    computed: int        # tokens prefilled
    first: int           # the first token
    logits: torch.Tensor


class Worker:
    """One inference worker: a model, a kvtier client and namespace."""

    def __init__(self, shape, dtype, device, addr, block_tokens, chunk, name):
        self.model = Llama(shape, dtype, device)
        self.layout = KVLayout(shape.layers, block_tokens, shape.kv_heads, shape.head_dim,
                               dtype)
        self.bt = block_tokens
        self.chunk = chunk
        self.device = device
        # On a GPU, pages move through libkvtier-cuda on torch's stream.
        self.gpu = str(device).startswith("cuda")
        gpu_index = torch.device(device).index or 0 if self.gpu else None
        self.client = kvtier.connect(addr, name=name, timeout_ms=120000,
                                     device=gpu_index) if addr else None
        self.ns = None
        if self.client:
            self.client.attach()
            self.ns = self.client.namespace(
                f"ttft:{shape.layers}x{shape.hidden}:{str(dtype)[6:]}:bt{block_tokens}",
                self.layout.page_bytes, block_tokens)

    def close(self):
        if self.client:
            self.client.close()

    def _sync(self):
        if self.device != "cpu":
            torch.cuda.synchronize()

    def serve(self, prompt, use_cache=True, wait_ms=0, decode=0):
        """Serves prompt (list of token ids); returns Result (and the
        decoded tokens after the first with decode > 0)."""
        t0 = time.perf_counter()
        bt, n = self.bt, len(prompt)
        nblocks = (n + decode + bt - 1) // bt
        cache = self.layout.new_cache(nblocks, self.device)
        have = 0  # leading full blocks restored
        res = None
        keys = []
        if use_cache and self.ns is not None:
            keys = self.ns.prompt_keys(prompt, SECRET)
            # Never restore the last token's block whole: its logits are needed.
            keys = keys[:(n - 1) // bt]
            res, have = self._restore(keys, cache, wait_ms)
        start = have * bt
        tokens = torch.tensor(prompt, device=self.device)
        logits = None
        done_blocks = have
        while start < n:
            end = min(n, start + self.chunk)
            logits = self.model.forward(tokens[start:end], start, cache, bt)
            start = end
            if res is not None:
                full = min(end // bt, len(keys))
                self._offload(res, cache, done_blocks, full, have)
                done_blocks = full
        self._sync()
        first = int(torch.argmax(logits))
        ttft = time.perf_counter() - t0
        if res is not None and not res.done:
            res.abort()
        out = [first]
        pos = n
        for _ in range(decode):
            lg = self.model.forward(torch.tensor([out[-1]], device=self.device), pos, cache, bt)
            out.append(int(torch.argmax(lg)))
            pos += 1
        return Result(ttft, have * bt, n - have * bt, first, logits), out

    def _restore(self, keys, cache, wait_ms):
        """Acquires the ready prefix (waiting on blocks in production), copies
        it into the cache, reserves the rest. Returns (reservation, blocks)."""
        have = 0
        while have < len(keys):
            ready, pending = self.ns.lookup(keys[have:])
            if ready or (pending and wait_ms):
                with self.ns.acquire(keys[have:], wait_ms=wait_ms if pending else 0) as lease:
                    ids = list(range(have, have + lease.count))
                    if lease.count and self.gpu:
                        self.client._c.cuda_onload(self.layout._native(cache), ids,
                                                   lease._native, kvtier._stream(None))
                    elif lease.count:
                        self.layout.scatter(lease.pages, cache, ids)
                    have += lease.count
            if have == len(keys):
                return None, have
            res = self.ns.reserve(keys[have:], parent=keys[have - 1] if have else None)
            if wait_ms and res.states[0] == res.BUSY:
                res.abort()  # another worker produces it: wait for it instead
                continue
            return res, have
        return None, have

    def _offload(self, res, cache, lo, hi, have):
        """Publishes blocks [lo, hi) that this worker reserved."""
        idx = [b - have for b in range(lo, hi)
               if res.states[b - have] == res.RESERVED]
        if not idx:
            return
        if self.gpu:
            res.offload_cuda(self.layout, cache, [have + i for i in idx], idx)
            return
        views = dict(res.pages)
        self.layout.gather(cache, [have + i for i in idx], [views[i] for i in idx])
        res.commit(idx)


# ---- the daemon ----

class Daemon:
    """A kvtierd of its own, unless --addr names one."""

    def __init__(self, host_size: str):
        kvtierd = os.environ.get("KVTIERD") or shutil.which("kvtierd") or "kvtierd"
        self.tmp = tempfile.mkdtemp(prefix="kvtier-ttft-")
        run = os.path.join(self.tmp, "run")
        self.proc = subprocess.Popen(
            [kvtierd, "--set", "daemon.run_dir=" + run, "--set", "host.size=" + host_size,
             "--set", "host.segment_size=64M", "--set", "metrics.listen=127.0.0.1:0",
             "--set", "daemon.log_level=warn"],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"kvtier-ttft: kvtierd did not start: {line!r}")
        self.addr = "unix:" + run + "/kvtierd.sock"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- experiments ----

def rand_tokens(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def check(args, shape, addr):
    """Restored logits match a full recompute; greedy decode agrees."""
    dtype = getattr(torch, args.dtype)
    tol = 2e-3 if dtype == torch.float32 else 5e-2
    w = Worker(shape, dtype, args.device, addr, 16, 64, "ttft-check")
    try:
        prompt = rand_tokens(300, shape.vocab, 1)
        base, base_tokens = w.serve(prompt, use_cache=False, decode=args.steps)
        w.serve(prompt[:200] + rand_tokens(40, shape.vocab, 2))  # offloads 12 blocks
        got, got_tokens = w.serve(prompt, decode=args.steps)
        diff = float((got.logits - base.logits).abs().max())
        print(f"check: {got.restored} of {len(prompt)} tokens restored, max |logit diff| "
              f"{diff:.2e} (tolerance {tol:g}), greedy tokens "
              f"{'equal' if got_tokens == base_tokens else 'DIFFER'} over {args.steps + 1}")
        ok = got.restored == 192 and diff <= tol and got_tokens == base_tokens
        print("check: ok" if ok else "check: FAILED")
        return 0 if ok else 1
    finally:
        w.close()


def prefixes(args, shape, addr):
    """(a) TTFT recompute vs restore for prefix lengths."""
    dtype = getattr(torch, args.dtype)
    w = Worker(shape, dtype, args.device, addr, args.block_tokens, args.chunk, "ttft-a")
    rows = []
    try:
        for plen in args.prefix:
            prefix = rand_tokens(plen, shape.vocab, 100 + plen)
            cold = [w.serve(prefix + rand_tokens(args.suffix, shape.vocab, 7 + i),
                            use_cache=False)[0].ttft for i in range(args.reps)]
            w.serve(prefix + rand_tokens(args.suffix, shape.vocab, 999))  # offloads
            warm = [w.serve(prefix + rand_tokens(args.suffix, shape.vocab, 50 + i))[0]
                    for i in range(args.reps)]
            rc, rw = statistics.median(cold), statistics.median(r.ttft for r in warm)
            rows.append((plen, rc, rw, warm[0].restored))
            print(f"(a) prefix {plen:6d} + {args.suffix} new: recompute {rc * 1e3:9.1f} ms   "
                  f"restore {rw * 1e3:8.1f} ms ({warm[0].restored} tokens)   "
                  f"{rc / rw:6.1f}x", flush=True)
    finally:
        w.close()
    return rows


def _burst_worker(args, shape, addr, prompt, mode, barrier, out):
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    w = Worker(shape, dtype, args.device, addr if mode != "nocache" else None,
               args.block_tokens, args.chunk, f"ttft-burst-{mode}")
    try:
        barrier.wait()
        r, _ = w.serve(prompt, use_cache=mode != "nocache",
                       wait_ms=args.wait_ms if mode == "early" else 0)
        out.put((r.ttft, r.restored))
    finally:
        w.close()


def burst(args, shape, addr, tag):
    """(b) N requests sharing a system prompt, arriving together."""
    ctx = mp.get_context("spawn")
    system = rand_tokens(args.system, shape.vocab, 4242 + len(tag))
    rows = {}
    for mode in ("early", "nowait", "nocache"):
        sysp = system if mode != "nowait" else rand_tokens(args.system, shape.vocab,
                                                            5151 + len(tag))
        out, barrier = ctx.Queue(), ctx.Barrier(args.burst)
        procs = [ctx.Process(target=_burst_worker,
                             args=(args, shape, addr, sysp + rand_tokens(args.suffix, shape.vocab,
                                                                         300 + i),
                                   mode, barrier, out)) for i in range(args.burst)]
        for p in procs:
            p.start()
        got = [out.get(timeout=3600) for _ in procs]
        for p in procs:
            p.join()
        t = sorted(x for x, _ in got)
        p50 = statistics.median(t)
        p99 = t[min(len(t) - 1, math.ceil(0.99 * len(t)) - 1)]
        rows[mode] = (p50, p99, sum(r for _, r in got))
        print(f"(b) burst {args.burst} x ({args.system} shared + {args.suffix}) {mode:8s}: "
              f"TTFT p50 {p50 * 1e3:8.1f} ms  p99 {p99 * 1e3:8.1f} ms  "
              f"restored {rows[mode][2]} tokens", flush=True)
    print(f"(b) early reuse vs no cache: p50 {rows['nocache'][0] / rows['early'][0]:.1f}x, "
          f"p99 {rows['nocache'][1] / rows['early'][1]:.1f}x; vs waits off: p50 "
          f"{rows['nowait'][0] / rows['early'][0]:.1f}x")
    return rows


def block_sizes(args, shape, addr):
    """(c) TTFT at several block sizes, prompts not a multiple of 64."""
    dtype = getattr(torch, args.dtype)
    history = rand_tokens(args.history, shape.vocab, 77)
    for bt in args.block_sizes:
        w = Worker(shape, dtype, args.device, addr, bt, args.chunk, f"ttft-c{bt}")
        try:
            w.serve(history + rand_tokens(5, shape.vocab, 1))  # the earlier turn
            r = [w.serve(history + rand_tokens(args.suffix, shape.vocab, 2 + i))[0]
                 for i in range(args.reps)]
            print(f"(c) block_tokens {bt:3d}: history {args.history} + {args.suffix} new: "
                  f"restored {r[0].restored:5d}, computed {r[0].computed:4d}, TTFT "
                  f"{statistics.median(x.ttft for x in r) * 1e3:8.1f} ms", flush=True)
        finally:
            w.close()


def blas() -> str:
    """The BLAS libraries this process loaded."""
    torch.ones(64, 64) @ torch.ones(64, 64)  # make torch load its BLAS
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1].rsplit("/", 1)[-1] for line in f
                if "blas" in line.lower() or "mkl" in line.lower()}
    return ", ".join(sorted(libs)) or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kvtier-ttft", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16")
    ap.add_argument("--addr", help="a running kvtierd (default: start one)")
    ap.add_argument("--check", action="store_true",
                    help="correctness only: restored logits and greedy tokens equal a recompute")
    ap.add_argument("--steps", type=int, default=8, help="greedy tokens compared by --check")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append")
    ap.add_argument("--prefix", type=int, action="append",
                    help="(a) prefix lengths (default 1024 4096 8192)")
    ap.add_argument("--suffix", type=int, default=32, help="new tokens per request")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--block-tokens", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=256, help="prefill chunk (tokens)")
    ap.add_argument("--burst", type=int, default=8)
    ap.add_argument("--system", type=int, default=2048, help="(b) shared system prompt")
    ap.add_argument("--wait-ms", type=int, default=30000)
    ap.add_argument("--history", type=int, default=1000, help="(c) shared history tokens")
    ap.add_argument("--block-sizes", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--host-size", default="4G")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = ap.parse_args(argv)
    shape = PRESETS["tiny" if args.check and args.preset == "cpu" else args.preset]
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    args.prefix = args.prefix or [1024, 4096, 8192]
    if args.threads:
        torch.set_num_threads(args.threads)
    daemon = None if args.addr else Daemon("256M" if args.check else args.host_size)
    addr = args.addr or daemon.addr
    try:
        if args.check:
            return check(args, shape, addr)
        print(f"kvtier-ttft: preset {args.preset} ({shape}), {args.dtype} on {args.device}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, BLAS: {blas()}",
              flush=True)
        only = set(args.only or ["a", "b", "c"])
        if "a" in only:
            prefixes(args, shape, addr)
        if "b" in only:
            burst(args, shape, addr, "b")
        if "c" in only:
            block_sizes(args, shape, addr)
        return 0
    finally:
        if daemon:
            daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
