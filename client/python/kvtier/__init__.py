"""kvtier: the Python client of kvtierd, the node-wide tiered KV-cache daemon.

A worker connects, attaches (opens a session), opens the namespace of its
KV layout and then offloads blocks it computed and restores blocks it would
otherwise recompute::

    import kvtier

    with kvtier.connect(name="worker-0") as client:
        ns = client.namespace("llama-3-8b:bf16:tp0of1:bt16", page_bytes, 16)
        keys = ns.prompt_keys(tokens, secret)
        ready, pending = ns.lookup(keys)
        with ns.acquire(keys, wait_ms=100) as lease:    # pinned, read-only
            for page in lease.pages: ...                 # memoryviews, no copy
        with ns.reserve(keys[ready:]) as res:           # committed on exit,
            for i, page in res.pages: page[:] = ...      # aborted on error

Pages are views of the daemon's shared memory: nothing is copied between the
daemon and the worker. kvtier.kv moves pages between a paged KV cache held
in torch tensors and kvtier pages.

Errors raise kvtier.Error subclasses carrying the daemon's message.

Fork and threads:
  * Connect after fork. A Client made before fork raises kvtier.Closed in
    the child (gRPC cannot be used across fork); the parent's session is
    untouched. Engines that fork their workers connect in each worker.
  * A Client, its Namespaces, Leases and Reservations may be used from
    several threads: libkvtier serializes the calls of one client, and
    calls that wait on the daemon release the GIL. For calls in parallel,
    use one Client per thread. close() while another thread is in a call
    refuses new calls at once and ends the session when that call returns.
  * Views of pages (memoryviews, tensors) should not outlive their lease
    or reservation; once it is over, or the client closed, no new view can
    be made, and views already made stay mapped (never a crash) until the
    client and its last page are gone. Client.close() ends the session at
    once all the same.
"""

from __future__ import annotations

import errno as _errno
import hashlib as _hashlib
import json as _json
import operator as _operator
import os as _os
from array import array as _array
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from . import _native

__all__ = [
    "connect", "Client", "Namespace", "Lease", "Reservation", "Retention",
    "Error", "InvalidArgument", "NotFound", "FailedPrecondition", "NoSpace",
    "PermissionDenied", "Unavailable", "Timeout", "NotAttached", "Closed",
    "Unsupported", "KEY_BYTES", "key_chain",
]

KEY_BYTES = 16
DEFAULT_ADDR = "unix:/run/kvtier/kvtierd.sock"

Key = bytes
Keys = Union[bytes, Sequence[bytes]]


# ---- errors ----

class Error(Exception):
    """A call failed. .errno is the negative errno libkvtier returned
    (positive here), .message what the daemon or the library said."""

    def __init__(self, errno: int, message: str):
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(Error, ValueError):
    """The request was malformed (gRPC INVALID_ARGUMENT), or a tensor or
    buffer does not fit the namespace."""


class NotFound(Error, LookupError):
    """Unknown namespace, session, lease or key (NOT_FOUND)."""


class FailedPrecondition(Error):
    """The state does not allow it, e.g. a namespace reopened with another
    layout (FAILED_PRECONDITION)."""


class NoSpace(Error):
    """A bound or the tier is full (RESOURCE_EXHAUSTED); the message names
    the knob."""


class PermissionDenied(Error, PermissionError):
    """Another tenant's data, or an admin's action (PERMISSION_DENIED)."""


class Unavailable(Error, ConnectionError):
    """No daemon answers at the address (UNAVAILABLE), or the daemon went
    away during the session (its fast lane ended)."""


class Timeout(Error, TimeoutError):
    """The call's deadline passed."""


class NotAttached(Error):
    """The call needs a session: attach first (use the Client as a context
    manager)."""


class Closed(Error):
    """The client is closed, was made before fork, or the lease or
    reservation is over."""


class Unsupported(Error):
    """Not available here (e.g. over TCP, or without CUDA)."""


_ERRORS = {
    _errno.EINVAL: InvalidArgument, _errno.ENOENT: NotFound,
    _errno.EPERM: FailedPrecondition, _errno.ENOSPC: NoSpace,
    _errno.EACCES: PermissionDenied, _errno.ECONNREFUSED: Unavailable,
    _errno.ECONNRESET: Unavailable,  # the daemon went away (its lane ended)
    _errno.ETIMEDOUT: Timeout, _errno.ENOTCONN: NotAttached,
    _errno.EBADF: Closed, _errno.ENOSYS: Unsupported,
    _errno.EOPNOTSUPP: Unsupported,
}
_native._set_errors(Error, _ERRORS)


@dataclass(frozen=True)
class Retention:
    """How long blocks should stay: priority 0 (evicted first) .. 100
    (last) for duration_ms (0: for good), then the daemon's default."""
    priority: int = 35
    duration_ms: int = 0

    def _args(self) -> Tuple[int, int]:
        # The binding checks both: ints, priority 0..100, duration_ms >= 0.
        return self.priority, self.duration_ms


def _retention(r: Optional[Retention]) -> Tuple[Optional[int], int]:
    if r is None:
        return None, 0
    if not isinstance(r, Retention):
        raise TypeError(f"retention must be a kvtier.Retention, not {type(r).__name__}")
    return r._args()


def _index(v, name: str) -> int:
    """v as an int (numpy ints too; not floats, not bools)."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        return _operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(v).__name__}") from None


def _index_list(values, name: str) -> List[int]:
    """An iterable of ints (a generator, numpy array, tensor) as a list."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of ints, not {type(values).__name__}")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, not "
                        f"{type(values).__name__}") from None
    return [_index(v, f"{name}[{i}]") for i, v in enumerate(values)]


# ---- keys ----

def _tokens_u32(tokens: Iterable[int]) -> bytes:
    try:
        a = _array("I", tokens)
    except (OverflowError, TypeError) as e:
        raise InvalidArgument(_errno.EINVAL,
                              f"tokens must be integers in 0..2**32-1: {e}") from None
    if a.itemsize != 4:  # pragma: no cover (every Linux ABI has 4)
        a = _array("L", a)
    return a.tobytes()


def _secret(secret: bytes) -> bytes:
    secret = bytes(secret)
    if not 16 <= len(secret) <= 64:
        raise InvalidArgument(_errno.EINVAL,
                              f"secret must be 16..64 bytes (got {len(secret)})")
    return secret


def prompt_keys(tokens: Iterable[int], block_tokens: int, secret: bytes,
                extra: bytes = b"") -> List[Key]:
    """The chained keys of every full block of a prompt, bit-identical to
    kvt_key_prompt (client/include/kvtier/key.h); a trailing partial block
    gets none."""
    blob = _native.prompt_keys(_secret(secret), _tokens_u32(tokens),
                               block_tokens, bytes(extra))
    return [blob[i:i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]


def _hash_bytes(h: Union[int, bytes]) -> bytes:
    if isinstance(h, (bytes, bytearray, memoryview)):
        return bytes(h)
    if isinstance(h, int):
        try:
            return h.to_bytes(32, "little", signed=True)
        except OverflowError:
            raise InvalidArgument(_errno.EINVAL,
                                  "a block hash int must fit in 256 bits") from None
    raise InvalidArgument(_errno.EINVAL,
                          f"a block hash is an int or bytes, not {type(h).__name__}")


def key_chain(hashes: Iterable[Union[int, bytes]], secret: bytes,
              parent: Optional[Key] = None) -> List[Key]:
    """Keys from an engine's own block hashes (vLLM's, SGLang's), so that an
    engine that already hashes its blocks does not hash twice:

        key_i = BLAKE2b-128(key=secret; key_{i-1} || hash_i)

    with key_{-1} = parent or 16 zero bytes, and an int hash as 32 bytes
    little-endian two's complement. Keyed by the secret like prompt_keys,
    chained like them (equal keys mean equal prefixes even if the engine's
    hashes are not chained), and the same in every process."""
    secret = _secret(secret)
    prev = bytes(KEY_BYTES) if parent is None else _check_key(parent, "parent")
    out = []
    for h in hashes:
        prev = _hashlib.blake2b(prev + _hash_bytes(h), digest_size=KEY_BYTES,
                                key=secret).digest()
        out.append(prev)
    return out


# ---- leases and reservations ----

class Lease:
    """Pinned blocks of a ready prefix: .pages are read-only memoryviews of
    the daemon's shared memory, valid until release() (or the end of the
    with block). .count is how many of the keys were pinned."""

    def __init__(self, ns: "Namespace", native):
        self.namespace = ns
        self._native = native
        self._views: Optional[List[memoryview]] = None

    @property
    def count(self) -> int:
        return self._native.count

    @property
    def released(self) -> bool:
        return self._native.released

    @property
    def hbm(self) -> Tuple[bool, ...]:
        """Per pinned block: whether it is in the daemon's hbm pool on the
        client's GPU (connect(device=)), with no host view: such a lease is
        for Namespace.onload into a cache on that GPU."""
        return self._native.hbm

    @property
    def pages(self) -> List[memoryview]:
        """One read-only memoryview per pinned block. Raises Closed once the
        lease is released or the client closed, Unsupported where a block
        is in GPU memory (see hbm)."""
        pages = self._native.pages  # raises when the lease is over
        if self._views is None:
            self._views = [memoryview(p) for p in pages]
        return self._views

    def tensors(self, dtype=None, shape=None):
        """The pages as torch tensors sharing their memory (uint8 unless
        dtype; shape: e.g. the layout's page_shape). Read them only: a
        lease's pages are other workers' blocks too."""
        from .kv import page_tensors
        return page_tensors(self.pages, dtype, shape)

    def release(self) -> None:
        """Unpins the blocks. Views already made stay readable (the memory
        stays mapped) but may show other blocks from now on."""
        self._views = None
        self._native.release()

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except Error:
            # Leaving on an exception: that one matters, and the pins go
            # with the session (or the daemon's lease_ttl) anyway.
            if exc_type is None:
                raise


class Reservation:
    """Slots reserved for keys: .pages lists (index, writable memoryview) of
    the RESERVED ones; .states has every key's kvtier state (RESERVED,
    PRESENT, BUSY, NO_SPACE). As a context manager, commits on a clean exit
    and aborts on an exception."""

    RESERVED = _native.SLOT_RESERVED
    PRESENT = _native.SLOT_PRESENT
    BUSY = _native.SLOT_BUSY
    NO_SPACE = _native.SLOT_NO_SPACE

    def __init__(self, ns: "Namespace", keys: List[Key], slots):
        self.namespace = ns
        self.keys = keys
        self.states = [s for s, _ in slots]
        self._pages = [p for _, p in slots]
        self._views: Optional[List[Tuple[int, memoryview]]] = None
        self._open = {i for i, s in enumerate(self.states) if s == self.RESERVED}
        self.done = False

    @property
    def reserved_keys(self) -> List[Key]:
        return [k for k, s in zip(self.keys, self.states) if s == self.RESERVED]

    @property
    def pages(self) -> List[Tuple[int, memoryview]]:
        """(index into keys, writable memoryview) of each reserved slot not
        committed or aborted yet."""
        if self.done:
            raise Closed(_errno.EBADF, "the reservation is over (committed or aborted)")
        if self.namespace.client.closed:
            raise Closed(_errno.EBADF,
                         "the client is closed: its reservations went with its session")
        if self._views is None or len(self._views) != len(self._open):
            self._views = [(i, memoryview(self._pages[i])) for i in sorted(self._open)]
        return self._views

    def tensors(self, dtype=None, shape=None):
        """(index, torch tensor over the slot) of each reserved slot."""
        from .kv import page_tensors
        idx = [i for i, _ in self.pages]
        return list(zip(idx, page_tensors([v for _, v in self.pages], dtype, shape)))

    def _indices(self, indices: Optional[Iterable[int]]) -> List[int]:
        """Open indices, checked before anything changes."""
        if self.done:
            raise Closed(_errno.EBADF, "the reservation is over (committed or aborted)")
        if indices is None:
            return sorted(self._open)
        todo = _index_list(indices, "indices")
        bad = [i for i in todo if i not in self._open]
        if bad:
            raise InvalidArgument(_errno.EINVAL,
                                  f"keys[{bad[0]}] is not an open reservation of this call")
        return todo

    def _close(self, todo: List[int]) -> None:
        """Slots todo are committed or aborted: their pages make no views."""
        self._open.difference_update(todo)
        for i in todo:
            self._pages[i].revoke()
        if not self._open:
            self.done = True
            self._views = None

    def _finish(self, op, indices=None) -> None:
        todo = sorted(set(self._indices(indices)))
        if todo:
            # A call that fails changes nothing here: the slots stay open
            # (to retry, or abort).
            op(self.namespace._ns, b"".join(self.keys[i] for i in todo))
        self._close(todo)

    def offload_cuda(self, layout, cache, block_ids: Sequence[int],
                     indices: Sequence[int], stream=None) -> None:
        """Copies cache blocks block_ids[j] into the slots of keys[indices[j]]
        on stream through libkvtier-cuda, which commits them once the stream
        has passed the copy (needs a client bound to the cache's GPU)."""
        indices = self._indices(indices)  # in order: indices[j] is block_ids[j]'s
        block_ids = _index_list(block_ids, "block_ids")
        if len(indices) != len(block_ids) or len(set(indices)) != len(indices):
            raise InvalidArgument(_errno.EINVAL,
                                  "one open reservation index per block id, each once")
        self.namespace.client._c.cuda_offload(
            self.namespace._ns, layout._native(cache), block_ids,
            b"".join(self.keys[i] for i in indices), [self._pages[i] for i in indices],
            _stream(stream))
        self._close(indices)

    def commit(self, indices: Optional[Iterable[int]] = None) -> None:
        """Publishes the reserved blocks (their pages written): all of them,
        or those at indices into keys, so that readers waiting on a long
        prefix get each block as soon as it is done (early reuse)."""
        self._finish(self.namespace.client._c.commit, indices)

    def abort(self, indices: Optional[Iterable[int]] = None) -> None:
        """Gives the reservations up (all, or those at indices)."""
        self._finish(self.namespace.client._c.abort, indices)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
            return
        try:
            self.abort()
        except Error:
            pass  # the exception leaving the block matters; the session's end aborts

    def __del__(self) -> None:
        # Dropped without commit or abort: give the slots up now rather
        # than hold them (and block other writers) until the session ends.
        # Never raises: a closed client or a forked child has nothing to do.
        try:
            if not self.done and self._open:
                self.abort()
        except Exception:
            pass


# ---- namespaces ----

def _keys_blob(keys: Keys) -> bytes:
    if isinstance(keys, (bytes, bytearray, memoryview)):
        return bytes(keys)
    try:
        return b"".join(_check_key(k, i) for i, k in enumerate(keys))
    except TypeError:
        raise InvalidArgument(_errno.EINVAL,
                              "keys must be bytes or a sequence of 16-byte keys") from None


def _check_key(k, name) -> bytes:
    """A key: 16 bytes of a bytes-like object (bytes(int) would make one)."""
    if isinstance(name, int):
        name = f"keys[{name}]"
    why = f"{name} must be 16 bytes, not {type(k).__name__}"
    if isinstance(k, (str, int)):
        raise InvalidArgument(_errno.EINVAL, why)
    try:
        k = bytes(memoryview(k))
    except TypeError:
        raise InvalidArgument(_errno.EINVAL, why) from None
    if len(k) != KEY_BYTES:
        raise InvalidArgument(_errno.EINVAL, f"{name} is {len(k)} bytes, not 16")
    return k


def _key_list(keys: Keys) -> List[Key]:
    blob = _keys_blob(keys)
    if not blob or len(blob) % KEY_BYTES:
        raise InvalidArgument(_errno.EINVAL,
                              f"{len(blob)} bytes is not a whole, non-zero number of 16-byte keys")
    return [blob[i:i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]


class Namespace:
    """One KV layout in the daemon (see Client.namespace). Its keys are the
    caller's tenant's own unless the daemon shares the namespace."""

    def __init__(self, client: "Client", name: str, block_tokens: int, info):
        self.client = client
        self.name = name
        self.block_tokens = block_tokens
        self.id, self.page_bytes, self.slot_stride, self.created, self.shared = info
        self._ns = (self.id, self.page_bytes)

    def __repr__(self) -> str:
        return (f"Namespace({self.name!r}, id={self.id}, page_bytes={self.page_bytes}, "
                f"block_tokens={self.block_tokens}, shared={self.shared})")

    def prompt_keys(self, tokens: Iterable[int], secret: bytes,
                    extra: bytes = b"") -> List[Key]:
        """Keys of the prompt's full blocks of block_tokens tokens each."""
        return prompt_keys(tokens, self.block_tokens, secret, extra)

    def keys_from_hashes(self, hashes: Iterable[Union[int, bytes]], secret: bytes,
                         parent: Optional[Key] = None) -> List[Key]:
        """Keys from the engine's own block hashes: see kvtier.key_chain."""
        return key_chain(hashes, secret, parent)

    def lookup(self, keys: Keys) -> Tuple[int, int]:
        """(ready, pending): how many leading keys are cached, and how many
        after them are being produced by some worker (early reuse)."""
        return self.client._c.lookup(self._ns, _keys_blob(keys))

    def lookup_where(self, keys: Keys) -> Tuple[int, int, List[str]]:
        """lookup, and where each ready block is: "host" (shared memory),
        "hbm", "nvme" or "remote" (another node's, in the shared store);
        acquire reads the last two back into host first."""
        return self.client._c.lookup_where(self._ns, _keys_blob(keys))

    def acquire(self, keys: Keys, wait_ms: int = 0) -> Lease:
        """Pins the ready prefix of keys (waiting at most wait_ms for blocks
        being produced). Use as a context manager, or release()."""
        return Lease(self, self.client._c.acquire(self._ns, _keys_blob(keys), wait_ms))

    def reserve(self, keys: Keys, parent: Optional[Key] = None,
                retention: Optional[Retention] = None) -> Reservation:
        """Reserves slots for keys (parent: the key before keys[0]); write the
        RESERVED pages, then commit (on leaving the with block)."""
        klist = _key_list(keys)
        prio, dur = _retention(retention)
        slots = self.client._c.reserve(self._ns, parent, b"".join(klist), prio, dur)
        return Reservation(self, klist, slots)

    def put(self, keys: Keys, pages: Sequence, parent: Optional[Key] = None,
            retention: Optional[Retention] = None) -> int:
        """Stores pages (bytes-like, page_bytes each) inline; returns how
        many were new. Needs no session and no shared memory."""
        prio, dur = _retention(retention)
        return self.client._c.put(self._ns, parent, _keys_blob(keys), list(pages),
                                  prio, dur)

    def get(self, keys: Keys) -> List[bytes]:
        """Copies of the pages of the ready prefix."""
        return self.client._c.get(self._ns, _keys_blob(keys))

    def drop(self, keys: Optional[Keys] = None) -> int:
        """Drops keys, or every block of the namespace (keys None) that the
        caller may drop; returns how many."""
        return self.client._c.drop(self._ns, None if keys is None else _keys_blob(keys))

    def offload(self, layout, cache, block_ids: Sequence[int], keys: Keys,
                parent: Optional[Key] = None, retention: Optional[Retention] = None,
                stream=None) -> int:
        """Stores cache blocks block_ids[i] under keys[i] (those not cached
        yet); returns how many were reserved. With a CUDA cache and a client
        bound to its GPU (connect(device=)), the copy runs on stream (default:
        torch's current) through libkvtier-cuda and the blocks are committed
        once the stream has passed it; otherwise it is done and committed
        before this returns."""
        block_ids = _index_list(block_ids, "block_ids")
        res = self.reserve(keys, parent, retention)
        if len(block_ids) != len(res.keys):
            res.abort()
            raise InvalidArgument(_errno.EINVAL,
                                  f"{len(res.keys)} keys for {len(block_ids)} block ids")
        n = len(res._open)
        if n and self.client._gpu_path(cache):
            idx = sorted(res._open)
            try:
                res.offload_cuda(layout, cache, [block_ids[i] for i in idx], idx, stream)
            except BaseException:
                res.abort()
                raise
        elif n:
            try:
                idx = [i for i, _ in res.pages]
                layout.gather(cache, [block_ids[i] for i in idx], [v for _, v in res.pages])
            except BaseException:
                res.abort()
                raise
            res.commit()
        return n

    def onload(self, layout, cache, block_ids: Sequence[int], keys: Keys,
               wait_ms: int = 0, stream=None) -> int:
        """Copies the ready prefix of keys into cache blocks block_ids[i];
        returns how many. With a CUDA cache and a client bound to its GPU
        the copy runs on stream and the pins are released once the stream
        has passed it; otherwise before this returns."""
        block_ids = _index_list(block_ids, "block_ids")
        lease = self.acquire(keys, wait_ms)
        n = lease.count
        if n > len(block_ids):
            lease.release()
            raise InvalidArgument(_errno.EINVAL, f"{n} blocks ready for {len(block_ids)} block ids")
        if n and self.client._gpu_path(cache):
            self.client._c.cuda_onload(layout._native(cache), block_ids, lease._native,
                                       _stream(stream))
        else:
            try:
                if n:
                    # A GPU-bound client may get blocks in its GPU's hbm
                    # pool: lease.pages raises Unsupported for those.
                    layout.scatter(lease.pages, cache, block_ids[:n])
            finally:
                lease.release()
        return n

    def delete(self) -> Tuple[int, int]:
        """Deletes the namespace (DropNamespace): (blocks dropped,
        reservations left to their producers)."""
        return self.client._c.drop_namespace(self.id)


# ---- the client ----

class Client:
    """A connection to kvtierd (see kvtier.connect). As a context manager it
    attaches (opens the session) on entry and closes on exit."""

    def __init__(self, addr: Optional[str] = None, name: Optional[str] = None,
                 timeout_ms: Optional[int] = None, device: Optional[int] = None,
                 staging_bytes: int = 0):
        self.addr = addr or _os.environ.get("KVTIER_ADDR") or DEFAULT_ADDR
        self.name = name or f"python:{_os.getpid()}"
        self.tenant: Optional[str] = None
        self.device = device
        self._c = _native.Client(self.addr)
        if timeout_ms is not None:
            self._c.set_timeout_ms(timeout_ms)
        if device is not None:
            self._c.cuda_bind(device, staging_bytes)

    def _gpu_path(self, cache) -> bool:
        """Whether cache is on the GPU this client is bound to."""
        t = cache[0] if isinstance(cache, (list, tuple)) else cache
        dev = getattr(t, "device", None)
        return (self.device is not None and dev is not None and dev.type == "cuda"
                and (dev.index or 0) == self.device)

    def attach(self) -> str:
        """Opens the session; returns the tenant the daemon sees."""
        self.tenant = self._c.attach(self.name)
        return self.tenant

    def close(self) -> None:
        """Ends the session (its pins and reservations are released)."""
        self._c.close()

    @property
    def closed(self) -> bool:
        return self._c.closed

    @property
    def fast_lane(self) -> bool:
        """Whether the hot calls (lookup, reserve, commit, abort, acquire,
        release) go through the session's shared-memory lane rather than
        gRPC: true once attached on the unix socket, unless
        KVTIER_FAST_LANE=0. fast_lane_why_not says why not."""
        return self._c.fast_lane[0]

    @property
    def fast_lane_why_not(self) -> str:
        return self._c.fast_lane[1]

    def __enter__(self) -> "Client":
        try:
            self.attach()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def namespace(self, name: str, page_bytes: int, block_tokens: int,
                  idle_ttl_ms: int = 0) -> Namespace:
        """Opens (creating on first use) the namespace of one KV layout,
        e.g. "llama-3-8b:bf16:tp0of1:bt16"."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        # The binding checks the ints' ranges, the daemon the name.
        info = self._c.open_namespace(name, page_bytes, block_tokens, idle_ttl_ms)
        return Namespace(self, name, _index(block_tokens, "block_tokens"), info)

    def health(self) -> bool:
        """True when the daemon answers SERVING; raises otherwise."""
        self._c.health()
        return True

    def stats(self) -> dict:
        """Every statistic by dotted name ("ready_blocks",
        "tiers.host.used_bytes", "rpcs.Lookup.calls_total",
        "namespaces.<name>.lookup_hit_blocks_total"; kvt_stats in kvtier.h
        says how lists are named); numbers as int or float, the rest
        (booleans too: "true", "false") as str."""
        out = {}
        for k, v in self._c.stats().items():
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
        return out

    def stats_tree(self) -> dict:
        """Every statistic, typed and nested as `kvtierctl stats --json`
        prints them: numbers, booleans and strings as such; "tiers",
        "namespaces" (each with its "name" and "tenant"), "tenants" and
        "rpcs" as lists of dicts. Unambiguous where stats() is not (two
        tenants' namespaces of one name, names with dots)."""
        return _json.loads(self._c.stats_json())

    def drop_tenant(self, tenant: Optional[str] = None) -> int:
        """Drops every block of a tenant (None: the caller's own)."""
        return self._c.drop_tenant(tenant)

    def drop_namespace(self, namespace_id: int) -> Tuple[int, int]:
        """Deletes a namespace by id (an admin's tool: ids from stats())."""
        return self._c.drop_namespace(namespace_id)


def connect(addr: Optional[str] = None, name: Optional[str] = None,
            timeout_ms: Optional[int] = None, device: Optional[int] = None,
            staging_bytes: int = 0) -> Client:
    """A Client for the daemon at addr ("unix:/path" or "host:port"; None:
    $KVTIER_ADDR, else unix:/run/kvtier/kvtierd.sock). Nothing is sent yet:
    use it as a context manager (attach on entry, close on exit) or call
    attach(). device: the CUDA device of this worker's KV cache, for
    Namespace.offload/onload through libkvtier-cuda (the daemon's hbm pool
    on that GPU, host pages read by DMA or in place); raises Unsupported
    where kvtier was built without CUDA."""
    return Client(addr, name, timeout_ms, device, staging_bytes)


def _stream(stream) -> int:
    """A CUDA stream handle: a torch.cuda.Stream, an int, or None (torch's
    current stream)."""
    if stream is None:
        import torch
        return torch.cuda.current_stream().cuda_stream
    return int(getattr(stream, "cuda_stream", stream))
