"""kvtier.sglang, SGLang's L3 storage backend, driven through SGLang's call
sequence (HiCacheController at commit 9864059e) with CPU host pools laid
out as SGLang's (sglang_engine.py), against a real kvtierd: batch_exists,
then batch_get_v1 into fresh host slots (zero copy) or batch_get of flat
pages; batch_set_v1 or batch_set on write-back. Every layout of MHA and
MLA pools, ranks kept apart or shared as SGLang needs, partial hits, three
threads at once, a daemon that is down and comes back, two engine
processes sharing a prefix while one still writes it (early reuse), a
writer killed mid-write, and a reader killed while its read waits. No
call ever raises."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from kvtier.sglang import KvtierStore  # noqa: E402
from sglang_engine import HostPool, StorageConfig, page_hashes, prompt_tokens  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N = 6  # pages per prompt


def backend(daemon_addr, pool, **cfg):
    extra = {"backend_name": "kvtier", "module_path": "kvtier.sglang",
             "class_name": "KvtierStore", "interface_v1": 1,
             "kvtier_addr": daemon_addr}
    extra.update(cfg.pop("extra", {}))
    be = KvtierStore(StorageConfig(extra_config=extra, **cfg), {})
    be.register_mem_pool_host(pool)
    return be


def prompt(pool, salt, n=N):
    return page_hashes(prompt_tokens(salt, n * pool.page_size), pool.page_size)


def test_page_hashes_are_sglangs():
    # The vectors of SGLang's get_hash_str (page_size 4), so that the keys
    # these tests use are the ones SGLang passes.
    h = page_hashes([1, 2, 3, 4, 5, 6, 7, 8], 4)
    assert h == ["cf97adeedb59e05bfd73a2b4c2a8885708c4f4f70c84c64b27120e72ab733b72",
                 "4ebfa8a1f3c341517621838c6e1b9aa350307e3f00b3cbd1a07ef740f54396d6"]


@pytest.mark.parametrize("kind", ["mha", "mla"])
@pytest.mark.parametrize("layout", ["layer_first", "page_first", "page_first_direct"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.uint8])
def test_zero_copy_round_trip(daemon, kind, layout, dtype):
    # One engine writes back pages 2..7 of its pool; another reads them
    # into pages 9..14 of its own, as a prefetch does.
    a, b = (HostPool(kind, layout, dtype=dtype) for _ in range(2))
    be_a, be_b = backend(daemon.addr, a), backend(daemon.addr, b)
    keys = prompt(a, hash((kind, layout, str(dtype))) % 1000)
    a.fill(2, N, seed=1)
    assert be_b.batch_exists(keys) == 0
    assert be_a.batch_set_v1(keys, a.indices(2, N)) == [True] * N
    assert be_a.batch_set_v1(keys, a.indices(2, N)) == [True] * N  # idempotent
    assert be_b.batch_exists(keys) == N
    assert be_b.batch_get_v1(keys, b.indices(9, N)) == [True] * N
    assert b.page_bytes(9, N) == a.page_bytes(2, N)
    assert b.page_bytes(0, 1) == HostPool(kind, layout, dtype=dtype).page_bytes(0, 1)
    be_a.close()
    be_b.close()


@pytest.mark.parametrize("layout", ["layer_first", "page_first"])
def test_flat_and_zero_copy_read_each_other(daemon, layout):
    # Without interface_v1 SGLang moves flat pages (get_data_page(flat)
    # and set_from_flat_data_page): the same bytes as the zero-copy path.
    a, b = HostPool(layout=layout), HostPool(layout=layout)
    be_a, be_b = backend(daemon.addr, a), backend(daemon.addr, b)
    a.fill(0, N, seed=2)
    flat_keys, v1_keys = prompt(a, 11), prompt(a, 12)
    values = [a.get_data_page(i * a.page_size) for i in range(N)]
    assert be_a.batch_set(flat_keys, values) is True
    assert be_a.batch_set_v1(v1_keys, a.indices(0, N)) == [True] * N
    # flat -> zero copy
    assert be_b.batch_get_v1(flat_keys, b.indices(0, N)) == [True] * N
    assert b.page_bytes(0, N) == a.page_bytes(0, N)
    # zero copy -> flat, into SGLang's dummy pages
    pages = be_b.batch_get(v1_keys, [b.get_dummy_flat_data_page() for _ in range(N)])
    for i, p in enumerate(pages):
        b.set_from_flat_data_page((N + i) * b.page_size, p)
    assert b.page_bytes(N, N) == a.page_bytes(0, N)
    # the single-key calls
    assert be_b.exists(v1_keys[0]) and not be_b.exists(prompt(a, 13)[0])
    assert torch.equal(be_b.get(v1_keys[1]), values[1])
    assert be_b.set(prompt(a, 14)[0], values[2]) is True
    be_a.close()
    be_b.close()


def test_partial_hits(daemon):
    # A page missing in the middle: exists counts up to it, a read stops
    # there (SGLang counts only the leading True).
    a, b = HostPool(), HostPool()
    be_a, be_b = backend(daemon.addr, a), backend(daemon.addr, b)
    a.fill(0, N, seed=3)
    keys = prompt(a, 21)
    stored = [k for i, k in enumerate(keys) if i != 3]
    idx = torch.cat([a.indices(i, 1) for i in range(N) if i != 3])
    assert be_a.batch_set_v1(stored, idx) == [True] * (N - 1)
    assert be_b.batch_exists(keys) == 3
    assert be_b.batch_get_v1(keys, b.indices(0, N)) == [True] * 3 + [False] * (N - 3)
    assert b.page_bytes(0, 3) == a.page_bytes(0, 3)
    assert be_b.batch_get(keys, [b.get_dummy_flat_data_page() for _ in range(N)])[3:] == [None] * 3
    be_a.close()
    be_b.close()


def test_ranks_apart_or_shared(daemon):
    # MHA ranks hold different heads: apart. MLA ranks hold the same
    # latent: shared (SGLang reads every rank's from rank 0's writes).
    for mla, shared in ((False, False), (True, True)):
        kind = "mla" if mla else "mha"
        p0, p1 = HostPool(kind), HostPool(kind)
        r0 = backend(daemon.addr, p0, tp_rank=0, tp_size=2, is_mla_model=mla)
        r1 = backend(daemon.addr, p1, tp_rank=1, tp_size=2, is_mla_model=mla)
        keys = prompt(p0, 31 + mla)
        p0.fill(0, N, seed=4)
        assert r0.batch_set_v1(keys, p0.indices(0, N)) == [True] * N
        assert r1.batch_exists(keys) == (N if shared else 0)
        assert r1.batch_get_v1(keys, p1.indices(0, N)) == [shared] * N
        r0.close()
        r1.close()
    # Another model, or another page size: apart.
    p = HostPool()
    other = backend(daemon.addr, p, model_name="another/model")
    assert other.batch_exists(prompt(p, 31)) == 0
    assert backend(daemon.addr, HostPool(page_size=8)).batch_exists(
        page_hashes(prompt_tokens(31, N * 4), 8)) == 0
    other.close()


def test_three_threads(daemon):
    # SGLang's prefetch, prefetch-io and backup threads call at once.
    pool = HostPool(pages=64)
    be = backend(daemon.addr, pool)
    pool.fill(0, 64, seed=5)
    errors, results = [], {}

    def run(name, fn):
        try:
            results[name] = [fn(i) for i in range(40)]
        except Exception as e:  # the backend must not raise
            errors.append(e)

    keys = [prompt(pool, 40 + i, 2) for i in range(40)]
    t = [threading.Thread(target=run, args=("set", lambda i: be.batch_set_v1(
            keys[i], pool.indices(2 * (i % 16), 2)))),
         threading.Thread(target=run, args=("exists", lambda i: be.batch_exists(keys[i]))),
         threading.Thread(target=run, args=("get", lambda i: be.batch_get_v1(
            keys[i], pool.indices(40 + 2 * (i % 8), 2))))]
    for x in t:
        x.start()
    for x in t:
        x.join()
    assert not errors
    assert results["set"] == [[True, True]] * 40
    assert all(be.batch_exists(k) == 2 for k in keys)
    be.close()


def test_daemon_down_then_up(make_daemon, tmp_path):
    # No daemon: misses and writes not done, never an exception, and no
    # more than one attach try a second. Then it starts: served. Then it
    # restarts: the backend attaches again.
    run_dir = str(tmp_path / "run")
    addr = "unix:" + run_dir + "/kvtierd.sock"
    pool = HostPool()
    be = backend(addr, pool)
    keys = prompt(pool, 51)
    t = time.monotonic()
    assert be.batch_exists(keys) == 0
    assert be.batch_get_v1(keys, pool.indices(0, N)) == [False] * N
    assert be.batch_set_v1(keys, pool.indices(0, N)) == [False] * N
    assert be.batch_get(keys) == [None] * N and be.batch_set(keys, None) is False
    be.clear()
    assert time.monotonic() - t < 1.0
    for _ in range(2):
        d = make_daemon("daemon.run_dir=" + run_dir)
        deadline = time.monotonic() + 3
        while be.batch_set_v1(keys, pool.indices(0, N)) != [True] * N:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert be.batch_exists(keys) == N
        assert d.stop() == 0
    be.close()


def engine(addr, op, n, **kw):
    """An SGLang process of its own (sglang_engine.py)."""
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = json.dumps(dict(addr=addr, op=op, n=n, **kw))
    return subprocess.Popen([sys.executable, os.path.join(HERE, "sglang_engine.py"), args],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_early_reuse_across_engines(daemon):
    # Engine A writes 8 pages slowly; engine B, prefetching the same
    # prefix meanwhile, counts A's pages still being written and its read
    # waits for them: it gets every page, the bytes A wrote.
    n = 8
    a = engine(daemon.addr, "set", n, salt=161, seed=7, slow_s=0.15)
    assert json.loads(a.stdout.readline())["ready"]
    time.sleep(0.3)  # A has reserved and is copying
    pool = HostPool(pages=n)
    be = backend(daemon.addr, pool)
    keys = prompt(pool, 161, n)
    assert be.batch_exists(keys) == n  # pending ones count
    t = time.monotonic()
    assert be.batch_get_v1(keys, pool.indices(0, n)) == [True] * n
    waited = time.monotonic() - t
    assert json.loads(a.stdout.readline())["stored"] == [True] * n
    assert a.wait() == 0
    ref = HostPool(pages=n)
    ref.fill(0, n, seed=7)
    assert pool.page_bytes(0, n) == ref.page_bytes(0, n)
    assert waited > 0.3  # it did wait for A's copies
    be.close()


def test_writer_killed_mid_write(daemon):
    # A is killed after some pages are in: B's read gets those, the rest
    # read as misses (no exception, no hang), and B can write them itself.
    n = 8
    a = engine(daemon.addr, "set", n, salt=162, seed=8, slow_s=0.25)
    assert json.loads(a.stdout.readline())["ready"]
    time.sleep(0.9)  # about 3 pages in
    pool = HostPool(pages=n)
    be = backend(daemon.addr, pool, extra={"kvtier_wait_ms": 5000})
    keys = prompt(pool, 162, n)
    got = []
    reader = threading.Thread(target=lambda: got.append(
        be.batch_get_v1(keys, pool.indices(0, n))))
    reader.start()
    time.sleep(0.2)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    t = time.monotonic()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - t < 1.0
    done = sum(got[0])
    assert got[0] == [True] * done + [False] * (n - done) and 1 <= done < n
    ref = HostPool(pages=n)
    ref.fill(0, n, seed=8)
    assert pool.page_bytes(0, done) == ref.page_bytes(0, done)
    # The rest is B's to write now.
    assert be.batch_set_v1(keys, ref.indices(0, n)) == [True] * n
    be.close()


def test_reader_killed_mid_load(daemon):
    # B's read waits on pages A is still writing, and B is killed: A's
    # write completes, nothing of B stays pinned, and C reads the pages.
    n = 8
    slow = HostPool(pages=n, slow_s=0.1)
    slow.fill(0, n, seed=9)
    be_a = backend(daemon.addr, slow)
    keys = prompt(slow, 163, n)
    stored = []
    writer = threading.Thread(target=lambda: stored.append(
        be_a.batch_set_v1(keys, slow.indices(0, n))))
    writer.start()
    time.sleep(0.25)
    b = engine(daemon.addr, "get", n, salt=163, wait_ms=30000)
    time.sleep(0.3)  # B's read waits on A's pages
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    writer.join(10)
    assert stored == [[True] * n]
    client = be_a.session.client
    deadline = time.monotonic() + 1.0
    while client.stats().get("pinned_blocks", 0):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    c_pool = HostPool(pages=n)
    be_c = backend(daemon.addr, c_pool)
    assert be_c.batch_get_v1(keys, c_pool.indices(0, n)) == [True] * n
    slow.slow_s = 0
    assert c_pool.page_bytes(0, n) == slow.page_bytes(0, n)
    be_a.close()
    be_c.close()
