"""A hostile or careless user of the kvtier package: every misuse raises a
kvtier.Error (or TypeError/ValueError/BufferError where Python says so),
never faults, never corrupts memory, never wraps an integer. Each test is
one behaviour that once crashed or misbehaved."""
import gc
import os
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:The given buffer is not writable")

import kvtier
from kvtier import _native

from helpers import PAGE, SECRET, fill, keys_of


def wait_for(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.005)


@pytest.fixture
def silent(tmp_path):
    """A peer that accepts and never answers: calls wait out their deadline."""
    path = str(tmp_path / "silent.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    yield "unix:" + path
    s.close()


# ---- 1. pages past their lease, reservation or client ----

def test_open_pages_after_close_refuse(daemon):
    """A lease or reservation still open when its client closes: its pages
    were handed out as if still valid (views of unmapped memory: SIGSEGV)."""
    c = kvtier.connect(daemon.addr, name="closer")
    c.attach()
    n = c.namespace("py:h:closer", PAGE, 16)
    keys = keys_of(n, 2)
    n.put(keys[:1], [fill(1)])
    lease = n.acquire(keys[:1])
    res = n.reserve(keys[1:])
    page = res._pages[0]
    c.close()
    with pytest.raises(kvtier.Closed, match="client is closed"):
        lease.pages
    with pytest.raises(kvtier.Closed, match="client is closed"):
        res.pages
    with pytest.raises(BufferError, match="client is closed"):
        memoryview(page)
    lease.release()  # the session's end released it: no error
    with pytest.raises(kvtier.Closed):
        res.commit()


def test_page_held_without_a_buffer_outlives_close(daemon):
    """torch.frombuffer keeps the Page, not a buffer export: the memory must
    stay mapped as long as the Page lives, client closed or not."""
    torch = pytest.importorskip("torch")
    c = kvtier.connect(daemon.addr, name="frombuffer")
    c.attach()
    n = c.namespace("py:h:frombuffer", PAGE, 16)
    keys = keys_of(n, 1)
    n.put(keys, [fill(5)])
    lease = n.acquire(keys)
    t = torch.frombuffer(lease._native.pages[0], dtype=torch.uint8)
    lease.release()
    del lease
    c.close()
    del c
    gc.collect()
    assert bytes(t[:256].tolist()) == fill(5)[:256]  # mapped still: no fault
    del t


# ---- 2. close() while another thread is in a call ----

def test_close_while_a_call_is_in_flight(daemon, client, ns):
    keys = keys_of(ns, 1)
    producer = ns.reserve(keys)  # pending: acquire waits for it
    c2 = kvtier.connect(daemon.addr, name="waiter")
    c2.attach()
    n2 = c2.namespace(ns.name, PAGE, 16)
    got = []
    t = threading.Thread(target=lambda: got.append(n2.acquire(keys, wait_ms=5000)))
    t.start()
    wait_for(lambda: c2._c.busy == 1)
    time.sleep(0.05)  # into the wait
    c2.close()  # freed the client under the call: use after free
    assert c2.closed
    with pytest.raises(kvtier.Closed):
        n2.lookup(keys)
    producer.pages[0][1][:] = fill(2)
    producer.commit()
    t.join(10)
    assert got and got[0].count == 1
    with pytest.raises(kvtier.Closed):
        got[0].pages  # returned after close: its pins went with the session
    assert c2._c.busy == 0
    wait_for(lambda: client.stats()["sessions_active"] == 1)  # c2's ended


def test_concurrent_attach_refused(silent):
    c = kvtier.connect(silent, timeout_ms=1000)
    t = threading.Thread(target=lambda: pytest.raises(kvtier.Error, c.attach))
    t.start()
    wait_for(lambda: c._c.busy == 1)
    with pytest.raises(kvtier.InvalidArgument, match="in progress"):
        c.attach()
    t.join(10)
    c.close()


# ---- 3. page sizes and buffers ----

def test_namespace_page_size_is_the_daemons(client, ns):
    """The page size came from the caller's tuple: a bigger one made pages
    past their slot (writes off the end of the segment)."""
    keys = keys_of(ns, 1)
    good = ns._ns
    ns._ns = (ns.id, 1 << 30)
    with pytest.raises(kvtier.InvalidArgument, match="pages of 8192 bytes, not 1073741824"):
        ns.reserve(keys)
    with pytest.raises(kvtier.InvalidArgument):
        ns.get(keys)
    ns._ns = (ns.id + 777, PAGE)
    with pytest.raises(kvtier.InvalidArgument, match="not opened by this client"):
        ns.lookup(keys)
    ns._ns = good
    assert ns.lookup(keys) == (0, 0)


def test_kv_ref_checks_buffers():
    """The C reference trusted its buffers: a short cache read or wrote
    past its end."""
    args = (1, 4, 16, 1, 8, 2)  # 256-byte chunks, 512-byte pages
    page, cache = bytearray(512), bytearray(2 * 4 * 256)
    with pytest.raises(kvtier.InvalidArgument, match=r"bases\[0\] is 16 bytes"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [bytearray(16)], *args, [0], [page])
    with pytest.raises(kvtier.InvalidArgument, match=r"pages\[0\] is 100 bytes"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], *args, [0], [bytearray(100)])
    with pytest.raises(kvtier.InvalidArgument, match=r"pages\[0\] is not a contiguous, writable"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], *args, [0], [bytes(512)])
    with pytest.raises(kvtier.InvalidArgument, match="block id 4"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], *args, [4], [page])
    with pytest.raises(kvtier.InvalidArgument, match="block_ids"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], *args, [2**32], [page])
    with pytest.raises(kvtier.InvalidArgument, match="larger than memory"):
        _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], 1, 2**32 - 1, 2**32 - 1,
                       2**32 - 1, 2**32 - 1, 2, [0], [page])
    _native.kv_ref(True, _native.KV_LAYER_MAJOR, [cache], *args, [3], [page])  # fits


def test_kvlayout_checks_its_arguments():
    torch = pytest.importorskip("torch")
    from kvtier.kv import KVLayout
    shape = dict(num_layers=2, block_tokens=16, kv_heads=2, head_dim=8)
    with pytest.raises(TypeError, match="num_layers must be an int"):
        KVLayout(**{**shape, "num_layers": 2.5}, dtype=torch.float16)
    with pytest.raises(kvtier.InvalidArgument, match="block_tokens must be in"):
        KVLayout(**{**shape, "block_tokens": 2**32}, dtype=torch.float16)
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        KVLayout(**shape, dtype="float16")
    layout = KVLayout(**shape, dtype=torch.float16)
    cache = layout.new_cache(4)
    page = bytearray(layout.page_bytes)
    with pytest.raises(kvtier.InvalidArgument, match="not a torch tensor"):
        layout.gather(["nope", cache[1]], [0], [page])
    with pytest.raises(TypeError, match=r"block_ids\[0\] must be an int"):
        layout.gather(cache, [1.5], [page])  # was block 1, silently
    layout.gather(cache, (i for i in [1]), (p for p in [page]))  # iterables are fine
    with pytest.raises(kvtier.InvalidArgument, match="not contiguous"):
        layout.gather(cache, [0], [memoryview(bytearray(2 * layout.page_bytes))[::2]])


# ---- 4. reservations ----

class _Failing:
    """A native client whose commits fail (the daemon unreachable)."""

    def __init__(self, c):
        self._c = c

    def __getattr__(self, name):
        return getattr(self._c, name)

    def commit(self, *a):
        raise kvtier.Unavailable(111, "the daemon went away")


def test_failed_commit_keeps_slots_open(client, ns):
    keys = keys_of(ns, 2)
    r = ns.reserve(keys)
    for i, v in r.pages:
        v[:] = fill(i)
    real = client._c
    client._c = _Failing(real)
    try:
        with pytest.raises(kvtier.Unavailable):
            r.commit([0])
    finally:
        client._c = real
    assert [i for i, _ in r.pages] == [0, 1]  # were [1]: slot 0 lost
    r.commit([0])
    r.commit()
    assert ns.lookup(keys) == (2, 0)


def test_offload_block_ids_any_iterable(client, ns):
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    from kvtier.kv import KVLayout
    layout = KVLayout(num_layers=1, block_tokens=16, kv_heads=1, head_dim=8,
                      dtype=torch.float32)
    n = client.namespace("py:h:offload", layout.page_bytes, 16)
    cache = layout.new_cache(4)
    keys = n.prompt_keys(range(32), SECRET)
    assert n.offload(layout, cache, (b for b in [2, 3]), keys) == 2  # len(generator)
    assert n.onload(layout, cache, np.array([0, 1]), keys) == 2
    with pytest.raises(TypeError):
        n.onload(layout, cache, [0.0, 1.0], keys)
    assert client.stats()["leases_active"] == 0


def test_dropped_reservation_aborts(client, ns):
    r = ns.reserve(keys_of(ns, 3))
    assert client.stats()["pending_blocks"] == 3
    del r
    gc.collect()
    assert client.stats()["pending_blocks"] == 0  # held until the session's end
    # In a forked child, dropping the parent's reservation leaves it alone.
    r = ns.reserve(keys_of(ns, 1, salt=77))
    pid = os.fork()
    if pid == 0:
        try:
            del r
            gc.collect()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert client.stats()["pending_blocks"] == 1
    r.abort()


def test_exit_on_exception_keeps_the_exception(daemon):
    """A with block that closed its client and then raised: __exit__'s
    release or abort raised Closed over the real exception."""
    c = kvtier.connect(daemon.addr, name="exits")
    c.attach()
    n = c.namespace("py:h:exits", PAGE, 16)
    keys = keys_of(n, 2)
    n.put(keys[:1], [fill(0)])
    with pytest.raises(KeyError):
        with n.acquire(keys[:1]):
            c.close()
            raise KeyError("the real error")
    c = kvtier.connect(daemon.addr, name="exits2")
    c.attach()
    n = c.namespace("py:h:exits", PAGE, 16)
    with pytest.raises(KeyError):
        with n.reserve(keys[1:]):
            c.close()
            raise KeyError("the real error")


# ---- 5./8. integers are checked, never wrapped ----

def test_integers_never_wrap(client, ns):
    keys = keys_of(ns, 1)
    ns.put(keys, [fill(1)])
    with pytest.raises(kvtier.InvalidArgument, match="wait_ms must be in 0..4294967295"):
        ns.acquire(keys, wait_ms=2**32 + 1)  # was 1 ms
    with pytest.raises(kvtier.InvalidArgument, match="wait_ms"):
        ns.acquire(keys, wait_ms=-1)
    with pytest.raises(kvtier.InvalidArgument, match="page_bytes must be in"):
        client.namespace("py:h:wrap", 2**64 + PAGE, 16)  # was PAGE
    with pytest.raises(kvtier.InvalidArgument, match="block_tokens must be in"):
        client.namespace("py:h:wrap", PAGE, 2**32 + 16)  # was 16
    with pytest.raises(kvtier.InvalidArgument, match="duration_ms must be in"):
        ns.reserve(keys_of(ns, 1, salt=3), retention=kvtier.Retention(10, 2**64 + 1))
    with pytest.raises(kvtier.InvalidArgument, match="priority must be in 0..100"):
        ns.put(keys_of(ns, 1, salt=4), [fill(0)], retention=kvtier.Retention(101))
    with pytest.raises(TypeError, match="duration_ms must be an int"):
        ns.reserve(keys_of(ns, 1, salt=3), retention=kvtier.Retention(10, 1.5))
    with pytest.raises(kvtier.InvalidArgument, match="block_tokens must be in"):
        kvtier.prompt_keys(range(64), 2**64 + 16, SECRET)  # was 16
    with pytest.raises(kvtier.InvalidArgument, match="timeout_ms must be in"):
        client._c.set_timeout_ms(2**31)
    # 2**32 + id named this very namespace: the wrap dropped it.
    with pytest.raises(kvtier.InvalidArgument, match="namespace_id must be in"):
        client.drop_namespace(2**32 + ns.id)
    assert ns.lookup(keys) == (1, 0)
    assert client.stats()["pending_blocks"] == 0


def test_bad_keys_and_names(client, ns):
    with pytest.raises(kvtier.InvalidArgument, match=r"keys\[0\] must be 16 bytes, not int"):
        ns.lookup([16])  # bytes(16): sixteen zeros, a valid key
    with pytest.raises(kvtier.InvalidArgument, match=r"keys\[0\] must be 16 bytes"):
        ns.lookup([2**40])  # bytes(2**40): a terabyte
    with pytest.raises(kvtier.InvalidArgument, match=r"keys\[1\] must be 16 bytes, not str"):
        ns.lookup([bytes(16), "x" * 16])
    with pytest.raises(kvtier.InvalidArgument, match="parent must be 16 bytes"):
        kvtier.key_chain([1], SECRET, parent=7)
    with pytest.raises(kvtier.InvalidArgument):
        ns.lookup(None)
    with pytest.raises(ValueError):
        client.namespace("a\0b", PAGE, 16)
    with pytest.raises(kvtier.InvalidArgument, match="namespace name"):
        client.namespace("", PAGE, 16)
    with pytest.raises(kvtier.InvalidArgument, match="namespace name"):
        client.namespace("n" * 100000, PAGE, 16)
    with pytest.raises(TypeError, match="name must be a str"):
        client.namespace(b"py:bytes", PAGE, 16)


# ---- 6. a segment mapped anew under a view ----

def test_view_across_segment_remap(make_daemon):
    """A segment handed to another tenant (here: a shared namespace) is made
    anew; libkvtier unmapped the old mapping under the views into it, so a
    view faulted or read the new mapping that took its address."""
    d = make_daemon("host.size=1M", "tenants.shared_namespaces=py:shared")
    with kvtier.connect(d.addr, name="remap") as c:
        own = c.namespace("py:own", PAGE, 16)
        keys = keys_of(own, 1)
        with own.reserve(keys) as r:
            r.pages[0][1][:] = fill(7)
        lease = own.acquire(keys)
        view = lease.pages[0]
        lease.release()
        assert own.drop() == 1
        shared = c.namespace("py:shared", PAGE, 16)
        with shared.reserve(keys_of(shared, 1, salt=50)) as r:
            assert c.stats()["host_segments_renewed_total"] == 1
            r.pages[0][1][:] = fill(9)
        # The old generation's memory: punched by the daemon, still mapped.
        assert view.tobytes() == bytes(PAGE)
    assert view.tobytes() == bytes(PAGE)  # and past close


# ---- 7. pages in GPU memory ----

def test_hbm_pages_have_no_host_view(client):
    lease = kvtier.Lease(None, client._c._hbm_lease_for_tests(2))
    assert lease.hbm == (True, True)
    with pytest.raises(kvtier.Unsupported, match="GPU memory"):
        lease.pages  # a host view of a device address: SIGSEGV
    lease.release()


# ---- 8. blocking calls release the GIL ----

def test_stats_releases_the_gil(silent):
    c = kvtier.connect(silent, timeout_ms=1500)
    t = threading.Thread(target=lambda: pytest.raises(kvtier.Timeout, c.stats))
    t.start()
    wait_for(lambda: c._c.busy == 1)
    t0 = time.monotonic()
    time.sleep(0.05)
    assert time.monotonic() - t0 < 0.75, "stats() held the GIL while it waited"
    t.join(10)
    c.close()


# ---- 9. fork ----

def test_fork_child_gets_clear_errors(client, ns):
    keys = keys_of(ns, 1)
    ns.put(keys, [fill(3)])
    lease = ns.acquire(keys)
    page = lease._native.pages[0]
    pid = os.fork()
    if pid == 0:
        try:
            for f in (lease.release, client.health, lambda: lease.pages):
                try:
                    f()
                    os._exit(1)
                except kvtier.Closed as e:
                    if "fork" not in str(e):
                        os._exit(2)
            try:
                memoryview(page)
                os._exit(3)
            except BufferError as e:
                if "fork" not in str(e):
                    os._exit(4)
            client.close()  # the child's copy only
            os._exit(0)
        except BaseException:
            os._exit(5)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert client.stats()["leases_active"] == 1  # the parent's, untouched
    assert lease.pages[0].tobytes() == fill(3)
    lease.release()
