"""Pages <-> a paged KV cache held in torch tensors.

A kvtier page holds one block of every layer, K then V:
[num_layers, 2, block_tokens, kv_heads, head_dim], the layout of
kernels/kv_layout.h, so that a page offloaded from Python is onloaded by
libkvtier-cuda's kernels or the C reference, and the other way round.

Two cache layouts, as kernels/kv_layout.h:
  * "per_layer" (vLLM): a list of num_layers tensors, each
    [2, num_blocks, block_tokens, kv_heads, head_dim];
  * "layer_major": one tensor [num_layers, num_blocks, 2, block_tokens,
    kv_heads, head_dim].

The cache may live on the CPU or on a CUDA device; pages are host memory
(memoryviews of a Lease or Reservation, or CPU tensors). With CUDA tensors
the copies go through torch (pageable memory, synchronous): the
asynchronous path on the caller's stream is libkvtier-cuda's
kvt_cuda_offload/onload.
"""

from __future__ import annotations

import errno as _errno
import warnings
from typing import List, Sequence, Union

import torch

from . import InvalidArgument, _index, _index_list

PER_LAYER = "per_layer"
LAYER_MAJOR = "layer_major"


def _bad(msg: str) -> InvalidArgument:
    return InvalidArgument(_errno.EINVAL, msg)


def page_tensors(views, dtype=None, shape=None) -> List[torch.Tensor]:
    """Tensors sharing the memory of buffers (memoryviews of pages)."""
    out = []
    for v in views:
        with warnings.catch_warnings():
            # A lease's pages are read-only buffers: torch warns that it
            # cannot make its tensor read-only too.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.frombuffer(v, dtype=torch.uint8)
        if dtype is not None:
            t = t.view(dtype)
        if shape is not None:
            t = t.view(shape)
        out.append(t)
    return out


class KVLayout:
    """The shape of one model's paged KV cache and of its kvtier pages."""

    def __init__(self, num_layers: int, block_tokens: int, kv_heads: int,
                 head_dim: int, dtype: torch.dtype, format: str = PER_LAYER):
        dims = dict(num_layers=num_layers, block_tokens=block_tokens,
                    kv_heads=kv_heads, head_dim=head_dim)
        for name, v in dims.items():
            # The kernels take 32-bit dimensions.
            if not 1 <= _index(v, name) <= 2**32 - 1:
                raise _bad(f"{name} must be in 1..{2**32 - 1} (got {v})")
        num_layers, block_tokens, kv_heads, head_dim = (int(v) for v in dims.values())
        if num_layers > 128:
            raise _bad(f"num_layers {num_layers} is more than 128 (kernels/kv_layout.h)")
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, not {type(dtype).__name__}")
        if not isinstance(format, str) or format not in (PER_LAYER, LAYER_MAJOR):
            raise _bad(f"format must be {PER_LAYER!r} or {LAYER_MAJOR!r}, not {format!r}")
        self.num_layers = num_layers
        self.block_tokens = block_tokens
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.format = format
        self.itemsize = torch.tensor([], dtype=dtype).element_size()
        if block_tokens * kv_heads * head_dim * self.itemsize % 16:
            raise _bad("a (layer, K|V, block) chunk must be a multiple of 16 bytes")

    @property
    def page_shape(self):
        return (self.num_layers, 2, self.block_tokens, self.kv_heads, self.head_dim)

    @property
    def page_bytes(self) -> int:
        return (self.num_layers * 2 * self.block_tokens * self.kv_heads *
                self.head_dim * self.itemsize)

    def new_cache(self, num_blocks: int, device="cpu"):
        """A zeroed cache of num_blocks blocks in this layout."""
        if not 1 <= _index(num_blocks, "num_blocks") <= 2**32 - 1:
            raise _bad(f"num_blocks must be in 1..{2**32 - 1} (got {num_blocks})")
        tail = (self.block_tokens, self.kv_heads, self.head_dim)
        if self.format == PER_LAYER:
            return [torch.zeros((2, num_blocks) + tail, dtype=self.dtype, device=device)
                    for _ in range(self.num_layers)]
        return torch.zeros((self.num_layers, num_blocks, 2) + tail, dtype=self.dtype,
                           device=device)

    # ---- checks ----

    def _check_tensor(self, t, name: str, shape, device=None) -> None:
        if not isinstance(t, torch.Tensor):
            raise _bad(f"{name} is a {type(t).__name__}, not a torch tensor")
        if device is not None and t.device != device:
            raise _bad(f"{name} is on {t.device}, cache[0] on {device}")
        if t.dtype != self.dtype:
            raise _bad(f"{name} is {t.dtype}, the layout is {self.dtype}")
        if tuple(t.shape) != tuple(shape):
            raise _bad(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not t.is_contiguous():
            raise _bad(f"{name} is not contiguous")

    def _layers(self, cache) -> List[torch.Tensor]:
        """The cache as per-layer views [2, num_blocks, tokens, heads, dim]
        (layer-major: strided views of the one tensor)."""
        tail = (self.block_tokens, self.kv_heads, self.head_dim)
        if self.format == PER_LAYER:
            if not isinstance(cache, (list, tuple)) or len(cache) != self.num_layers:
                raise _bad(f"a per-layer cache is a list of {self.num_layers} tensors")
            first = cache[0]
            nb = first.shape[1] if isinstance(first, torch.Tensor) and first.dim() == 5 else -1
            for i, t in enumerate(cache):
                self._check_tensor(t, f"cache[{i}]", (2, nb) + tail,
                                   first.device if i else None)
            return list(cache)
        if isinstance(cache, (list, tuple)):
            raise _bad("a layer-major cache is one tensor")
        nb = cache.shape[1] if isinstance(cache, torch.Tensor) and cache.dim() == 6 else -1
        self._check_tensor(cache, "cache", (self.num_layers, nb, 2) + tail)
        return [cache[i].transpose(0, 1) for i in range(self.num_layers)]

    def _ids(self, block_ids, num_blocks: int, device) -> torch.Tensor:
        ids = _index_list(block_ids, "block_ids")  # ints: 1.5 is not block 1
        bad = [i for i in ids if not 0 <= i < num_blocks]
        if bad:
            raise _bad(f"block ids must be in 0..{num_blocks - 1} (got {bad[0]})")
        return torch.tensor(ids, dtype=torch.long).to(device)

    def _pages(self, pages, n: int, writable: bool) -> List[torch.Tensor]:
        if isinstance(pages, (bytes, bytearray, memoryview, torch.Tensor)):
            raise _bad("pages must be a sequence of pages, one per block id")
        try:
            pages = list(pages)
        except TypeError:
            raise _bad(f"pages must be a sequence of pages, not {type(pages).__name__}") from None
        if len(pages) != n:
            raise _bad(f"{len(pages)} pages for {n} block ids")
        out = []
        for i, p in enumerate(pages):
            if isinstance(p, torch.Tensor):
                if p.device.type != "cpu" or not p.is_contiguous():
                    raise _bad(f"pages[{i}] must be a contiguous CPU tensor")
                if p.numel() * p.element_size() != self.page_bytes:
                    raise _bad(f"pages[{i}] is {p.numel() * p.element_size()} bytes, "
                               f"a page is {self.page_bytes}")
                t = p.view(torch.uint8).view(-1)
            else:
                try:
                    mv = memoryview(p)
                except TypeError:
                    raise _bad(f"pages[{i}] is neither a buffer nor a tensor") from None
                if not mv.c_contiguous:
                    raise _bad(f"pages[{i}] is not contiguous")
                if mv.nbytes != self.page_bytes:
                    raise _bad(f"pages[{i}] is {mv.nbytes} bytes, a page is {self.page_bytes}")
                if writable and mv.readonly:
                    raise _bad(f"pages[{i}] is read-only (a lease's page): offload "
                               "into a reservation's pages")
                t = page_tensors([mv])[0]
            out.append(t.view(self.dtype).view(self.page_shape))
        return out

    def _native(self, cache):
        """The cache as kernels/kv_layout.h describes it, for libkvtier-cuda."""
        from . import _native
        layers = self._layers(cache)
        if self.format == PER_LAYER:
            fmt, bases = _native.KV_PER_LAYER, [t.data_ptr() for t in cache]
        else:
            fmt, bases = _native.KV_LAYER_MAJOR, [cache.data_ptr()]
        return (fmt, bases, self.num_layers, layers[0].shape[1], self.block_tokens,
                self.kv_heads, self.head_dim, self.itemsize)

    # ---- copies ----

    def _words(self, t: torch.Tensor) -> torch.Tensor:
        """t's last three dims (tokens, heads, dim) as 8-byte words: torch
        gathers and scatters integers faster than bf16 on the CPU."""
        return t.flatten(-3).view(torch.int64)

    # The copies go a layer at a time through a buffer of one layer of the
    # n blocks ([2, n, words], a few MiB), never through all of them at
    # once: a fresh buffer of every layer (128 MiB for 64 Llama-3-8B
    # blocks) costs a first touch of each of its pages, which made the
    # copies 25x slower on the development VM (BENCHMARKS.md, issue 19).

    def gather(self, cache, block_ids: Sequence[int], pages) -> None:
        """Offload: copies cache blocks block_ids[i] into pages[i]."""
        layers = self._layers(cache)
        ids = self._ids(block_ids, layers[0].shape[1], layers[0].device)
        dst = [self._words(d) for d in self._pages(pages, len(ids), writable=True)]
        for l, layer in enumerate(layers if dst else []):
            chunk = self._words(layer).index_select(1, ids).cpu()  # [2, n, words]
            for i, d in enumerate(dst):
                d[l].copy_(chunk[:, i])

    def scatter(self, pages, cache, block_ids: Sequence[int]) -> None:
        """Onload: copies pages[i] into cache blocks block_ids[i]."""
        layers = self._layers(cache)
        ids = self._ids(block_ids, layers[0].shape[1], layers[0].device)
        src = [self._words(p) for p in self._pages(pages, len(ids), writable=False)]
        if not src:
            return
        chunk = torch.empty((2, len(src), src[0].shape[-1]), dtype=torch.int64)
        for l, layer in enumerate(layers):
            for i, p in enumerate(src):
                chunk[:, i].copy_(p[l])
            self._words(layer).index_copy_(1, ids, chunk.to(layer.device))
