"""kvtier.kv against the C layout reference (kernels/kv_layout.h, through
kvtier._native.kv_ref): pages gathered by torch are the bytes the C
reference gathers, pages the C reference wrote scatter back through torch
into the same cache, in both cache layouts; a page offloaded through the
daemon from one layout onloads into the other. Bad tensors raise."""
import pytest

torch = pytest.importorskip("torch")

import kvtier  # noqa: E402
from kvtier import _native  # noqa: E402
from kvtier.kv import KVLayout  # noqa: E402

from helpers import SECRET
SHAPE = dict(num_layers=3, block_tokens=16, kv_heads=2, head_dim=8)
BLOCKS = 10
IDS = [7, 2, 9, 0]


def random_cache(layout, seed):
    g = torch.Generator().manual_seed(seed)
    cache = layout.new_cache(BLOCKS)
    for t in (cache if isinstance(cache, list) else [cache]):
        t.copy_(torch.randn(t.shape, generator=g).to(layout.dtype))
    return cache


def c_ref(layout, cache, ids, pages, gather):
    fmt = _native.KV_PER_LAYER if layout.format == "per_layer" else _native.KV_LAYER_MAJOR
    bases = [t.view(torch.uint8).numpy() for t in (cache if isinstance(cache, list) else [cache])]
    _native.kv_ref(gather, fmt, bases, layout.num_layers, BLOCKS, layout.block_tokens,
                   layout.kv_heads, layout.head_dim, layout.itemsize, list(ids), pages)


@pytest.mark.parametrize("fmt", ["per_layer", "layer_major"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gather_scatter_match_c(fmt, dtype):
    layout = KVLayout(dtype=dtype, format=fmt, **SHAPE)
    cache = random_cache(layout, 1)
    # torch gathers; the C reference gathers; same bytes.
    mine = [bytearray(layout.page_bytes) for _ in IDS]
    ref = [bytearray(layout.page_bytes) for _ in IDS]
    layout.gather(cache, IDS, mine)
    c_ref(layout, cache, IDS, ref, gather=True)
    assert mine == ref
    # A page is [layers, 2, tokens, heads, dim]: check one element by hand.
    page = torch.frombuffer(mine[1], dtype=torch.uint8).view(dtype).view(layout.page_shape)
    src = cache[2][1, IDS[1]] if fmt == "per_layer" else cache[2, IDS[1], 1]
    assert torch.equal(page[2, 1], src)
    # The C reference scatters into one cache, torch into another: equal.
    a, b = layout.new_cache(BLOCKS), layout.new_cache(BLOCKS)
    c_ref(layout, a, IDS, ref, gather=False)
    layout.scatter(mine, b, IDS)
    for x, y in zip(a if fmt == "per_layer" else [a], b if fmt == "per_layer" else [b]):
        assert torch.equal(x, y)
    # Blocks not listed stay zero.
    untouched = [i for i in range(BLOCKS) if i not in IDS][0]
    blk = b[0][:, untouched] if fmt == "per_layer" else b[:, untouched]
    assert not blk.any()


def test_offload_onload_across_layouts(daemon):
    per = KVLayout(dtype=torch.float16, format="per_layer", **SHAPE)
    major = KVLayout(dtype=torch.float16, format="layer_major", **SHAPE)
    src = random_cache(per, 2)
    with kvtier.connect(daemon.addr, name="kv") as c:
        ns = c.namespace("py:kv", per.page_bytes, per.block_tokens)
        keys = ns.prompt_keys(range(16 * len(IDS)), SECRET)
        with ns.reserve(keys) as r:
            per.gather(src, IDS, [v for _, v in r.pages])
        dst = major.new_cache(BLOCKS)
        with ns.acquire(keys) as lease:
            assert lease.count == len(IDS)
            major.scatter(lease.pages, dst, [0, 1, 2, 3])
    for i, b in enumerate(IDS):
        for layer in range(per.num_layers):
            assert torch.equal(dst[layer, i], src[layer][:, b])


def test_bad_tensors_raise():
    layout = KVLayout(dtype=torch.float16, **SHAPE)
    cache = layout.new_cache(BLOCKS)
    pages = [bytearray(layout.page_bytes)]
    with pytest.raises(kvtier.InvalidArgument, match="is torch.float32"):
        layout.gather([t.float() for t in cache], [0], pages)
    with pytest.raises(kvtier.InvalidArgument, match="has shape"):
        layout.gather([t[:, :, :8] for t in cache], [0], pages)
    with pytest.raises(kvtier.InvalidArgument, match="not contiguous"):
        bad = [t.transpose(3, 4).contiguous().transpose(3, 4) for t in cache]
        layout.gather(bad, [0], pages)
    with pytest.raises(kvtier.InvalidArgument, match="list of 3 tensors"):
        layout.gather(cache[:2], [0], pages)
    with pytest.raises(kvtier.InvalidArgument, match="block ids must be in"):
        layout.gather(cache, [BLOCKS], pages)
    with pytest.raises(kvtier.InvalidArgument, match="a page is"):
        layout.gather(cache, [0], [bytearray(100)])
    with pytest.raises(kvtier.InvalidArgument, match="read-only"):
        layout.gather(cache, [0], [bytes(layout.page_bytes)])
    with pytest.raises(kvtier.InvalidArgument, match="pages for"):
        layout.scatter(pages, cache, [0, 1])
    with pytest.raises(kvtier.InvalidArgument, match="multiple of 16"):
        KVLayout(num_layers=1, block_tokens=1, kv_heads=1, head_dim=3, dtype=torch.float16)
    with pytest.raises(kvtier.InvalidArgument, match="format"):
        KVLayout(dtype=torch.float16, format="paged", **SHAPE)


def test_namespace_offload_onload(daemon):
    """Namespace.offload/onload: the engine-facing calls (CPU caches here;
    CUDA caches take libkvtier-cuda's path on a GPU)."""
    layout = KVLayout(dtype=torch.float32, **SHAPE)
    src = random_cache(layout, 3)
    with kvtier.connect(daemon.addr, name="kv-calls") as c:
        ns = c.namespace("py:kv-calls", layout.page_bytes, layout.block_tokens)
        keys = ns.prompt_keys(range(1000, 1000 + 16 * 4), SECRET)
        assert ns.offload(layout, src, [5, 6, 7, 8], keys) == 4
        assert ns.offload(layout, src, [5, 6, 7, 8], keys) == 0  # cached already
        dst = layout.new_cache(BLOCKS)
        assert ns.onload(layout, dst, [0, 1, 2, 3], keys) == 4
        for layer in range(layout.num_layers):
            assert torch.equal(dst[layer][:, :4], src[layer][:, 5:9])
        assert c.stats()["leases_active"] == 0
        with pytest.raises(kvtier.InvalidArgument, match="keys for 3 block ids"):
            ns.offload(layout, src, [1, 2, 3], ns.prompt_keys(range(16 * 4), SECRET))
        assert c.stats()["pending_blocks"] == 0  # the reservation was given up


def test_gpu_binding_without_gpu(daemon):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: test_gpu_path covers the binding")
    with pytest.raises(kvtier.Error) as e:
        kvtier.connect(daemon.addr, device=0)
    print("connect(device=0) without a GPU:", e.value)
