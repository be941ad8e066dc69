"""The kvtier Python package against a real kvtierd: round trips, zero copy,
exceptions that release and abort, every error class, keys and pages
identical to the C definitions, fork and kill -9."""
import ctypes
import errno
import hashlib
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

import kvtier
from kvtier import _native

from helpers import PAGE, SECRET, fill, keys_of


# ---- round trips ----

def test_reserve_commit_acquire(ns):
    keys = keys_of(ns, 4)
    assert ns.lookup(keys) == (0, 0)
    with ns.reserve(keys) as r:
        assert r.states == [r.RESERVED] * 4
        for i, page in r.pages:
            page[:] = fill(i)
    assert ns.lookup(keys) == (4, 0)
    with ns.acquire(keys) as lease:
        assert lease.count == 4 and len(lease.pages) == 4
        for i, page in enumerate(lease.pages):
            assert page.readonly and page.nbytes == PAGE
            assert page.tobytes() == fill(i)
    assert ns.get(keys) == [fill(i) for i in range(4)]
    # Present ones are reported, not reserved again.
    with ns.reserve(keys[:2] + keys_of(ns, 1, salt=999)) as r:
        assert r.states == [r.PRESENT, r.PRESENT, r.RESERVED]
        r.pages[0][1][:] = fill(9)


def test_fast_lane(daemon, client, ns, monkeypatch):
    """The hot calls go through the session's lane (counted as such), and
    the same calls work with it turned off."""
    assert client.fast_lane and client.fast_lane_why_not == ""
    before = client.stats()["fast_lane_calls_total"]
    keys = keys_of(ns, 2, salt=77)
    ns.put(keys, [fill(0), fill(1)])
    assert ns.lookup(keys) == (2, 0)
    with ns.acquire(keys) as lease:
        assert lease.pages[1].tobytes() == fill(1)
    assert client.stats()["fast_lane_calls_total"] >= before + 3
    monkeypatch.setenv("KVTIER_FAST_LANE", "0")
    with kvtier.connect(daemon.addr, name="no-lane") as c:
        assert not c.fast_lane and c.fast_lane_why_not == "turned off"
        other = c.namespace(ns.name, PAGE, 16)
        assert other.lookup(keys) == (2, 0)
    assert not client.closed and client.fast_lane


def test_put_get_drop(ns):
    keys = keys_of(ns, 3)
    assert ns.put(keys, [fill(i) for i in range(3)]) == 3
    assert ns.put(keys, [fill(i) for i in range(3)]) == 0
    assert ns.get(keys) == [fill(i) for i in range(3)]
    assert ns.drop(keys[2:]) == 1
    assert ns.lookup(keys) == (2, 0)
    assert ns.drop() == 2
    assert ns.lookup(keys) == (0, 0)


def test_tensors_share_memory(ns):
    torch = pytest.importorskip("torch")
    keys = keys_of(ns, 2)
    with ns.reserve(keys) as r:
        for i, t in r.tensors(dtype=torch.float32):
            t.copy_(torch.arange(PAGE // 4, dtype=torch.float32) + i)
    with ns.acquire(keys) as lease:
        ts = lease.tensors(dtype=torch.float32, shape=(2, PAGE // 8))
        assert torch.equal(ts[1].flatten(), torch.arange(PAGE // 4, dtype=torch.float32) + 1)
        del ts


def test_stats_health(client, ns):
    assert client.health() is True
    st = client.stats()
    assert isinstance(st["tiers.host.capacity_bytes"], int) and st["tiers.host.capacity_bytes"] > 0
    assert client.tenant == "root" or client.tenant.startswith("uid:") or client.tenant
    # Typed and nested: the namespace by name and tenant, booleans as bool.
    tree = client.stats_tree()
    host = [t for t in tree["tiers"] if t["tier"] == "host"][0]
    assert host["up"] is True and host["capacity_bytes"] == st["tiers.host.capacity_bytes"]
    mine = [n for n in tree["namespaces"] if n["name"] == ns.name]
    assert len(mine) == 1 and mine[0]["tenant"] == client.tenant
    assert isinstance(mine[0]["ready_blocks"], int)


# ---- zero copy ----

def _mapping_of(addr):
    with open("/proc/self/maps") as f:
        for line in f:
            span, rest = line.split(" ", 1)
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return rest.strip()
    return ""


def _address(view):
    """Address of a buffer, read-only ones included."""
    np = pytest.importorskip("numpy")
    return np.frombuffer(view, dtype=np.uint8).ctypes.data


def _reader(addr, ns_name, keys, want, out):
    try:
        with kvtier.connect(addr, name="reader") as c:
            ns = c.namespace(ns_name, PAGE, 16)
            with ns.acquire(keys) as lease:
                page = lease.pages[0]
                out.put((page.tobytes() == want, _mapping_of(_address(page))))
    except Exception as e:  # pragma: no cover (reported to the parent)
        out.put((False, repr(e)))


def test_zero_copy_across_processes(daemon, client, ns):
    """A write through a reserved view is read by another process from the
    same shared memory: no Put, no Get, and the reader's page lies in a
    mapping of the daemon's memfd segment."""
    keys = keys_of(ns, 1)
    before = client.stats()
    with ns.reserve(keys) as r:
        writer_addr = _address(r.pages[0][1])
        assert "memfd:kvtier" in _mapping_of(writer_addr)
        r.pages[0][1][:] = fill(42)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_reader, args=(daemon.addr, ns.name, keys, fill(42), out))
    p.start()
    same, mapping = out.get(timeout=60)
    p.join(30)
    assert same, mapping
    assert "memfd:kvtier" in mapping, mapping
    after = client.stats()
    for rpc in ("Put", "Get"):
        assert after.get(f"rpcs.{rpc}.calls_total", 0) == before.get(f"rpcs.{rpc}.calls_total", 0)


# ---- exceptions release and abort ----

def test_exception_aborts_reservation(client, ns):
    keys = keys_of(ns, 2)
    with pytest.raises(RuntimeError):
        with ns.reserve(keys) as r:
            r.pages[0][1][:] = fill(1)
            raise RuntimeError("the model crashed mid-block")
    assert r.done
    assert ns.lookup(keys) == (0, 0)
    assert client.stats()["pending_blocks"] == 0


def test_exception_releases_lease(client, ns):
    keys = keys_of(ns, 2)
    ns.put(keys, [fill(0), fill(1)])
    with pytest.raises(KeyError):
        with ns.acquire(keys) as lease:
            assert client.stats()["leases_active"] >= 1
            raise KeyError("oops")
    assert lease.released
    assert client.stats()["leases_active"] == 0


# ---- every error class ----

def test_invalid_argument(ns):
    with pytest.raises(kvtier.InvalidArgument, match=r"keys\[1\] is 3 bytes, not 16"):
        ns.lookup([bytes(16), b"abc"])
    with pytest.raises(kvtier.InvalidArgument):
        ns.lookup(b"")
    with pytest.raises(kvtier.InvalidArgument, match="pages\\[0\\] is 3 bytes"):
        ns.put(keys_of(ns, 1), [b"abc"])
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError too
        ns.prompt_keys([1, 2, 3], b"short")


def test_invalid_argument_from_daemon(client):
    with pytest.raises(kvtier.InvalidArgument, match="namespace name"):
        client.namespace("bad name!", PAGE, 16)


def test_not_found_and_failed_precondition(client):
    ns = client.namespace("py:gone", PAGE, 16)
    with pytest.raises(kvtier.FailedPrecondition, match="page_bytes 8192"):
        client.namespace("py:gone", 2 * PAGE, 16)
    assert ns.delete() == (0, 0)
    with pytest.raises(kvtier.NotFound, match="was dropped"):
        ns.lookup(keys_of(ns, 1))


def test_no_space(make_daemon):
    d = make_daemon("tenants.max_sessions=1")
    with kvtier.connect(d.addr, name="one"):
        with pytest.raises(kvtier.NoSpace, match=r"tenants.max_sessions \(1\)"):
            with kvtier.connect(d.addr, name="two"):
                pass


def test_unavailable():
    c = kvtier.connect("unix:/nonexistent/kvtierd.sock", timeout_ms=500)
    with pytest.raises(kvtier.Unavailable):
        c.health()
    c.close()


def test_timeout(tmp_path):
    """A peer that accepts and never answers: the call's deadline passes."""
    import socket
    path = str(tmp_path / "silent.sock")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(path)
    silent.listen(8)
    c = kvtier.connect("unix:" + path, timeout_ms=300)
    try:
        with pytest.raises(kvtier.Timeout):
            c.health()
    finally:
        c.close()
        silent.close()


def test_not_attached_and_closed(daemon, ns):
    c = kvtier.connect(daemon.addr)
    n = c.namespace(ns.name, PAGE, 16)
    with pytest.raises(kvtier.NotAttached):
        n.reserve(keys_of(ns, 1))
    c.close()
    assert c.closed
    with pytest.raises(kvtier.Closed, match="closed"):
        n.lookup(keys_of(ns, 1))


def test_permission_denied(daemon, client):
    if os.geteuid() != 0:
        pytest.skip("needs root to call as another uid")
    os.chmod(daemon.tmp, 0o755)
    os.chmod(daemon.run_dir, 0o755)
    os.chmod(daemon.socket, 0o666)
    code = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = {sys.path!r}
        os.setgid(65534); os.setuid(61001)
        import kvtier
        with kvtier.connect({daemon.addr!r}) as c:
            try:
                c.drop_tenant("0")
            except kvtier.PermissionDenied as e:
                print("denied:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert "denied: " in out.stdout and "only an admin" in out.stdout, out.stdout + out.stderr


# ---- bad input never crashes ----

def test_lease_after_release(ns):
    keys = keys_of(ns, 1)
    ns.put(keys, [fill(3)])
    lease = ns.acquire(keys)
    view = lease.pages[0]
    page = lease._native.pages[0]  # the exporter behind the views
    lease.release()
    with pytest.raises(kvtier.Closed, match="released"):
        lease.pages
    with pytest.raises(BufferError, match="no longer yours"):
        memoryview(page)
    assert view.nbytes == PAGE  # an old view stays mapped: no fault
    lease.release()  # twice is harmless


def test_view_kept_past_close_is_safe(daemon):
    torch = pytest.importorskip("torch")
    c = kvtier.connect(daemon.addr, name="keeper")
    c.attach()
    n = c.namespace("py:keeper", PAGE, 16)
    keys = keys_of(n, 1)
    n.put(keys, [fill(5)])
    lease = n.acquire(keys)
    t = lease.tensors()[0]  # a tensor holds the buffer: the view cannot go
    lease.release()
    c.close()
    assert bytes(t[:16].tolist()) == fill(5)[:16]  # still mapped: no fault
    del t


def test_reservation_after_commit(ns):
    r = ns.reserve(keys_of(ns, 1))
    r.pages[0][1][:] = fill(1)
    r.commit()
    with pytest.raises(kvtier.Closed):
        r.pages
    with pytest.raises(kvtier.Closed):
        r.commit()


def test_client_before_fork(daemon, client):
    pid = os.fork()
    if pid == 0:
        try:
            client.health()
            os._exit(1)
        except kvtier.Closed as e:
            os._exit(0 if "fork" in str(e) else 2)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert client.health()  # the parent's client is untouched


# ---- keys: the C helper's definition ----

def _key_spec(secret, parent, tokens, extra=b""):
    data = parent + struct.pack("<I", len(tokens)) + struct.pack(f"<{len(tokens)}I", *tokens)
    data += struct.pack("<I", len(extra)) + extra
    return hashlib.blake2b(data, key=secret, digest_size=16).digest()


def test_prompt_keys_match_spec():
    tokens = list(range(1000, 1000 + 16 * 5 + 7))
    for extra in (b"", b"lora:7"):
        got = kvtier.prompt_keys(tokens, 16, SECRET, extra)
        assert len(got) == 5
        parent = bytes(16)
        for i in range(5):
            parent = _key_spec(SECRET, parent, tokens[16 * i:16 * (i + 1)], extra)
            assert got[i] == parent


def test_keys_from_hashes():
    hashes = [123, -5, 2**200, b"\x01" * 32]
    a = kvtier.key_chain(hashes, SECRET)
    assert a == kvtier.key_chain(hashes, SECRET)
    assert len(set(a)) == 4
    assert kvtier.key_chain(hashes[2:], SECRET, parent=a[1]) == a[2:]
    assert a[0] == hashlib.blake2b(bytes(16) + (123).to_bytes(32, "little", signed=True),
                                   key=SECRET, digest_size=16).digest()
    with pytest.raises(kvtier.InvalidArgument):
        kvtier.key_chain([1.5], SECRET)


# ---- kill -9 ----

def test_kill9_releases_pins_within_1s(daemon, client, ns):
    keys = keys_of(ns, 2)
    ns.put(keys, [fill(0), fill(1)])
    code = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = {sys.path!r}
        import kvtier
        c = kvtier.connect({daemon.addr!r}, name="doomed"); c.attach()
        ns = c.namespace({ns.name!r}, {PAGE}, 16)
        lease = ns.acquire({keys!r})
        print(lease.count, flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "2"
    assert client.stats()["leases_active"] == 1
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    while client.stats()["leases_active"] and time.monotonic() - t0 < 1.0:
        time.sleep(0.01)
    assert client.stats()["leases_active"] == 0, "pins still held 1 s after kill -9"
