"""kvtier.vllm, a vLLM v1 KV connector, driven through vLLM's own call
sequence (vllm_engine.Engine replays it, vLLM commit 9aaf83ef) with CPU
caches in FlashAttention's layout, against a real kvtierd: one engine
computes and saves a prompt's blocks, another loads them instead of
recomputing them, byte for byte what it would have computed; early reuse
while the first is still computing; a writer killed mid-forward (the
reader's blocks come back as load errors, to recompute); a reader killed
while its load waits (the writer and later readers unharmed); tensor-parallel
ranks apart; a daemon that is down; layouts it does not handle. No call
raises into vLLM."""
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

import vllm_engine as ve  # noqa: E402
from vllm_engine import BLOCK, Engine, Request, expected_block, prompt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKS = 5


def engine_process(addr, salt, **kw):
    """An engine of its own (vllm_engine.py) computing prompt(salt)."""
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = json.dumps(dict(addr=addr, salt=salt, blocks=BLOCKS, **kw))
    return subprocess.Popen([sys.executable, os.path.join(HERE, "vllm_engine.py"), args],
                            stdout=subprocess.PIPE, text=True, env=env)


def check_blocks(eng, rid, tokens, n, rank=0):
    for b in range(n):
        want = expected_block(tokens, b, eng.layers, eng.heads, eng.head_dim, eng.dtype, rank)
        assert all(torch.equal(g, w) for g, w in zip(eng.block(rid, b, rank), want)), b


def loads_everything(addr, salt, rid):
    """A new engine admits prompt(salt): all of it matches, it loads
    without errors, and its blocks are what it would have computed."""
    eng = Engine(addr)
    req = Request(rid, prompt(salt, BLOCKS))
    assert eng.admit(req) == (BLOCKS * BLOCK, True)
    eng.wait_loaded(rid)
    assert not eng.load_errors
    check_blocks(eng, rid, req.prompt_token_ids, BLOCKS)
    return eng


def test_second_engine_loads_the_prefix(daemon):
    a = engine_process(daemon.addr, 1)
    assert a.stdout.readline() and json.loads(a.stdout.readline())["saved"]
    assert a.wait() == 0
    # All 5 blocks, never the whole prompt: one token is left to compute.
    b = loads_everything(daemon.addr, 1, "b-req")
    req = b.requests["b-req"]
    # Then it runs: the rest is computed; saving finds its blocks there.
    meta = b.step({"b-req": req.num_tokens - req.num_computed_tokens})
    assert [len(s.keys) for s in meta.saves] == [BLOCKS]
    b.finish("b-req")
    # A prompt nobody computed: no match, nothing to load.
    other = Request("c-req", prompt(2, BLOCKS))
    assert b.admit(other) == (0, False)
    b.shutdown()


def test_a_short_prompt_and_a_partial_match(daemon):
    a = Engine(daemon.addr)
    req = Request("short", prompt(3, 2, extra_tokens=0))  # exactly 2 blocks
    a.admit(req)
    a.step({"short": req.num_tokens})
    longer = Request("longer", prompt(3, 4))              # shares 2 of 4 blocks
    b = Engine(daemon.addr)
    # A whole-prompt hit still leaves its last token to compute.
    assert b.admit(Request("again", prompt(3, 2, extra_tokens=0))) == (2 * BLOCK - 1, True)
    assert b.admit(longer) == (2 * BLOCK, True)
    b.wait_loaded("longer")
    check_blocks(b, "longer", longer.prompt_token_ids, 2)
    a.shutdown()
    b.shutdown()


def test_early_reuse_while_the_writer_computes(daemon):
    # A has reserved its blocks and is still in its forward (1 s): B's
    # lookup counts them, its load waits for A's commit and gets them.
    a = engine_process(daemon.addr, 4, forward_s=1.0)
    assert json.loads(a.stdout.readline())["reserved"]
    b = Engine(daemon.addr)
    req = Request("b-req", prompt(4, BLOCKS))
    t = time.monotonic()
    assert b.admit(req) == (BLOCKS * BLOCK, True)
    b.wait_loaded("b-req")
    waited = time.monotonic() - t
    assert json.loads(a.stdout.readline())["saved"] and a.wait() == 0
    assert not b.load_errors and waited > 0.5
    check_blocks(b, "b-req", req.prompt_token_ids, BLOCKS)
    b.shutdown()


def test_writer_killed_mid_forward(daemon):
    # A dies holding its reservations: B's load ends within 1 s of it,
    # every block a load error (vLLM recomputes them), the request
    # reported finished all the same (or vLLM would leak its blocks).
    a = engine_process(daemon.addr, 5, forward_s=30)
    assert json.loads(a.stdout.readline())["reserved"]
    b = Engine(daemon.addr, extra={"kvtier_wait_ms": 20000})
    req = Request("b-req", prompt(5, BLOCKS))
    assert b.admit(req) == (BLOCKS * BLOCK, True)
    b.step({})
    time.sleep(0.2)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    t = time.monotonic()
    b.wait_loaded("b-req", timeout=5)
    assert time.monotonic() - t < 1.0
    assert b.load_errors == set(b.blocks["b-req"][:BLOCKS])
    # Recomputed and saved by B: a third engine loads them from B.
    req.num_computed_tokens = 0
    b.step({"b-req": req.num_tokens})
    loads_everything(daemon.addr, 5, "c-req").shutdown()
    b.shutdown()


def test_reader_killed_mid_load(daemon):
    # B waits in its load for blocks A is still computing, and is killed:
    # A saves them all the same, nothing of B stays pinned, and C loads
    # them.
    a = Engine(daemon.addr)
    req = Request("a-req", prompt(8, BLOCKS))
    a.admit(req)
    meta = a.scheduler.build_connector_meta(SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id="a-req", block_ids=(a.blocks["a-req"],),
                                            num_computed_tokens=0)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[], resumed_req_ids=set(),
                                              new_block_ids=[], num_computed_tokens=[]),
        num_scheduled_tokens={"a-req": req.num_tokens}, finished_req_ids=set()))
    w = a.workers[0]
    w.bind_connector_metadata(meta)
    w.start_load_kv(None)  # A's blocks reserved: its forward begins
    b = engine_process(daemon.addr, 8, op="load")
    assert json.loads(b.stdout.readline())["matched"] == BLOCKS * BLOCK
    time.sleep(0.3)  # B's load waits on A's blocks
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    for i in range(a.layers):
        a._forward_layer(0, i, a.caches[0][ve.layer_name(i)], {"a-req": req.num_tokens})
    w.wait_for_save()
    w.clear_connector_metadata()
    deadline = time.monotonic() + 1.0
    while a.scheduler.session.client.stats().get("pinned_blocks", 0):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    loads_everything(daemon.addr, 8, "c-req").shutdown()
    a.shutdown()


def test_tensor_parallel_ranks(daemon):
    # Two ranks, each its own shard of heads, each its own namespace; a
    # request is loaded once both ranks have their part.
    a = Engine(daemon.addr, tp=2)
    req = Request("tp", prompt(6, 3))
    a.admit(req)
    a.step({"tp": req.num_tokens})
    b = Engine(daemon.addr, tp=2)
    again = Request("tp2", prompt(6, 3))
    assert b.admit(again) == (3 * BLOCK, True)
    b.wait_loaded("tp2")
    for rank in (0, 1):
        check_blocks(b, "tp2", again.prompt_token_ids, 3, rank)
    # A single-GPU engine of the same model has other pages: no match.
    assert Engine(daemon.addr).admit(Request("tp1", prompt(6, 3))) == (0, False)
    a.shutdown()
    b.shutdown()


def test_daemon_down(make_daemon, tmp_path):
    # No daemon: no match, nothing saved, no exception; a load that was
    # asked for fails as load errors.
    addr = "unix:" + str(tmp_path / "none.sock")
    eng = Engine(addr)
    req = Request("r", prompt(7, BLOCKS))
    assert eng.admit(req) == (0, False)
    eng.step({"r": req.num_tokens})
    assert eng.poll() == set() and not eng.load_errors
    eng.shutdown()


@pytest.mark.parametrize("why", ["flashinfer", "mla"])
def test_unsupported_caches_turn_it_off(daemon, why):
    # FlashInfer's [blocks, 2, ...] caches and MLA specs: the connector
    # says so once and matches, loads and saves nothing.
    if why == "flashinfer":
        eng = Engine(daemon.addr, cache_shape=(64, 2, BLOCK, 2, 8))
    else:
        class MLAAttentionSpec:
            def __init__(self, block_size, num_kv_heads, head_size, dtype):
                self.block_size, self.num_kv_heads = block_size, num_kv_heads
                self.head_size, self.dtype = head_size, dtype
        eng = Engine(daemon.addr, spec=MLAAttentionSpec)
    req = Request("r", prompt(1, BLOCKS))
    n, _ = eng.admit(req)
    eng.step({} if n else {"r": req.num_tokens})
    if n:  # the scheduler matched (FlashInfer is seen only by the worker)
        eng.wait_loaded("r")
        assert eng.load_errors == set(eng.blocks["r"][:BLOCKS])
    eng.shutdown()
