"""Nodes share prefixes through a real Redis: two kvtierd ("node A" and
"node B", each with its own socket and segments) and one store, first a
standalone redis-server, then a three-master Redis Cluster made with
redis-cli --cluster create. Workers are other uids (setuid in a child),
so tenants are what the daemons see: alice and bob."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from helpers import PAGE, SECRET, fill

ALICE, BOB, CAROL = 61001, 61002, 61003
NS = "remote:share"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to call as other uids")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A redis-server on loopback, persistence off; kill() and start()
    again on the same port (and, in a cluster, the same nodes.conf)."""

    def __init__(self, *extra):
        self.port, self.extra = free_port(), list(extra)
        self.dir = tempfile.mkdtemp(prefix="kvtier-redis-")
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [os.environ.get("REDIS_SERVER", "redis-server"), "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--loglevel", "warning"] + self.extra,
            stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.cli("PING") not in ("PONG", "NOAUTH Authentication required."):
            assert time.time() < deadline, "redis-server does not answer"
            time.sleep(0.02)

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port)] + [str(a) for a in args],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def store():
    r = Redis()
    yield r
    r.stop()


def node(make_daemon, *endpoints, sets=()):
    """A kvtierd with the remote tier on endpoints, open to other uids."""
    d = make_daemon("remote.endpoints=" + ",".join(endpoints), "daemon.socket_mode=0666",
                    "remote.lookup_budget=500ms", *sets)
    os.chmod(d.tmp, 0o755)
    os.chmod(d.run_dir, 0o755)
    return d


def as_user(uid, daemon, code, timeout=60):
    """Runs code as uid, a worker of daemon: `ns` is its namespace NS,
    `keys(n, salt)` a prompt's keys; what it leaves in `out` comes back."""
    prog = textwrap.dedent(f"""
        import json, os, sys, time
        sys.path[:0] = {sys.path!r}
        os.setgid(65534); os.setuid({uid})
        import kvtier
        from helpers import PAGE, SECRET, fill
        c = kvtier.connect({daemon.addr!r}, name="worker")
        c.attach()
        ns = c.namespace({NS!r}, PAGE, 16)
        def keys(n, salt=0):
            return ns.prompt_keys(range(salt, salt + 16 * n), SECRET)
        out = {{}}
    """) + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def stats(daemon):
    import kvtier
    with kvtier.connect(daemon.addr) as c:
        return c.stats_tree()


def wait_for(what, cond, seconds=20):
    deadline = time.time() + seconds
    while not cond():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def tier(st, name):
    return [t for t in st["tiers"] if t["tier"] == name][0]


# ---- one store: two nodes, tenants, a corrupted value ----

def test_two_nodes_share_a_prefix(make_daemon, store):
    a, b = node(make_daemon, store.endpoint), node(make_daemon, store.endpoint)
    # alice and bob each put the same prompt's 8 blocks on A, pages of their own.
    for uid, base in ((ALICE, 0), (BOB, 100)):
        got = as_user(uid, a, f"""
            assert ns.put(keys(8), [fill({base} + i) for i in range(8)]) == 8
            out["where"] = ns.lookup_where(keys(8))
        """)
        assert got["where"] == [8, 0, ["host"] * 8]
    wait_for("A's writes", lambda: stats(a)["remote_writes_total"] >= 16)

    b0 = stats(b)
    assert b0["remote_writes_total"] == 0 and tier(b0, "host")["used_bytes"] == 0
    # B, cold, finds each tenant's blocks in the store and reads its own
    # bytes: alice's through shared memory (Acquire), bob's copied (Get).
    for uid, base in ((ALICE, 0), (BOB, 100)):
        got = as_user(uid, b, f"""
            out["first"] = ns.lookup_where(keys(8))
            if {uid} == {ALICE}:
                with ns.acquire(keys(8)) as lease:
                    out["count"] = lease.count
                    out["same"] = [p.tobytes() == fill({base} + i)
                                   for i, p in enumerate(lease.pages)]
            else:
                pages = ns.get(keys(8))
                out["count"] = len(pages)
                out["same"] = [p == fill({base} + i) for i, p in enumerate(pages)]
            out["again"] = ns.lookup_where(keys(8))
            out["longer"] = ns.lookup_where(keys(10))
        """)
        assert got["first"] == [8, 0, ["remote"] * 8], got
        assert got["count"] == 8 and all(got["same"]), got
        assert got["again"] == [8, 0, ["host"] * 8]
        assert got["longer"][:2] == [8, 0]  # keys nobody wrote end the prefix
    # Another tenant on B sees none of them.
    assert as_user(CAROL, b, 'out["r"] = ns.lookup(keys(8))')["r"] == [0, 0]

    st = stats(b)
    assert st["remote_promotions_total"] == 16
    assert st["lookup_remote_hit_blocks_total"] == 16
    assert st["remote_hits_total"] >= 32  # EXISTS, then GET, of each
    assert st["remote_bad_records_total"] == 0 and st["remote_degraded"] is False
    assert tier(st, "remote")["up"] is True
    assert tier(st, "remote")["out_bytes_total"] == 16 * (PAGE + 128)
    alice = [n for n in st["namespaces"] if n["name"] == NS and n["tenant"] == "uid:61001"]
    assert alice[0]["lookup_remote_hit_blocks_total"] == 8


def record_of(store, key):
    """The store's name of the record of key (its hex ends the name)."""
    names = store.cli("--scan", "--pattern", "kvt1:*:" + key.hex()).split()
    assert len(names) >= 1, names
    return names


def test_corrupted_value_is_a_miss(make_daemon, store):
    a, b = node(make_daemon, store.endpoint), node(make_daemon, store.endpoint)
    got = as_user(ALICE, a, """
        assert ns.put(keys(4, salt=5000), [fill(i) for i in range(4)]) == 4
        out["keys"] = [k.hex() for k in keys(4, salt=5000)]
    """)
    wait_for("A's writes", lambda: stats(a)["remote_writes_total"] >= 4)
    [name] = record_of(store, bytes.fromhex(got["keys"][2]))
    assert store.cli("SETRANGE", name, 128 + 1000, "X") == str(128 + PAGE)

    got = as_user(ALICE, b, """
        out["first"] = ns.lookup(keys(4, salt=5000))
        with ns.acquire(keys(4, salt=5000)) as lease:
            out["count"] = lease.count
            out["same"] = [p.tobytes() == fill(i) for i, p in enumerate(lease.pages)]
        out["after"] = ns.lookup(keys(4, salt=5000))
    """)
    assert got["first"] == [4, 0]       # the store has all four
    assert got["count"] == 2 and all(got["same"])  # the bad one ends the prefix
    assert got["after"] == [2, 0]
    st = stats(b)
    # All four were read at once; the fourth, good, is kept but unreachable.
    assert st["remote_bad_records_total"] == 1 and st["remote_promotions_total"] == 3
    assert store.cli("EXISTS", name) == "0"  # deleted from the store


def test_read_only_node_and_auth(make_daemon, tmp_path):
    """write = none writes nothing; AUTH from password_file (ACL user)."""
    r = Redis("--user", "default", "off", "--user", "kv", "on", ">s3cret-pw", "~*", "+@all")
    try:
        pw = tmp_path / "pw"
        pw.write_text("s3cret-pw\n")
        pw.chmod(0o600)
        auth = ("remote.username=kv", f"remote.password_file={pw}")
        a = node(make_daemon, r.endpoint, sets=auth)
        b = node(make_daemon, r.endpoint, sets=auth + ("remote.write=none",))
        as_user(ALICE, a, 'assert ns.put(keys(2), [fill(1), fill(2)]) == 2')
        as_user(ALICE, b, 'assert ns.put(keys(2, salt=77), [fill(1), fill(2)]) == 2')
        wait_for("A's writes", lambda: stats(a)["remote_writes_total"] >= 2)
        got = as_user(ALICE, b, 'out["r"] = ns.lookup_where(keys(2))')
        assert got["r"] == [2, 0, ["remote", "remote"]]
        assert stats(b)["remote_writes_total"] == 0
        assert r.cli("--user", "kv", "--pass", "s3cret-pw", "--no-auth-warning", "DBSIZE") == "2"
        # A wrong password: the daemon runs, serves local hits, says why.
        pw.write_text("wrong\n")
        c = node(make_daemon, r.endpoint, sets=auth)
        got = as_user(ALICE, c, """
            assert ns.put(keys(1, salt=9), [fill(9)]) == 1
            out["local"] = ns.lookup(keys(1, salt=9))
            out["remote"] = ns.lookup(keys(2))
        """)
        assert got["local"] == [1, 0] and got["remote"] == [0, 0]
        wait_for("auth errors", lambda: stats(c)["remote_errors_total"]["auth"] > 0)
    finally:
        r.stop()


# ---- a Redis Cluster: a master killed mid-workload ----

@pytest.fixture(scope="module")
def cluster():
    nodes = []
    try:
        for _ in range(3):
            # The bus port given: port + 10000 may be past 65535.
            nodes.append(Redis("--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                               "--cluster-require-full-coverage", "no",
                               "--cluster-port", str(free_port())))
        subprocess.run(["redis-cli", "--cluster", "create"] + [n.endpoint for n in nodes] +
                       ["--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        wait_for("cluster_state:ok", lambda: all(
            "cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in nodes), 30)
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_master_killed_mid_workload(make_daemon, cluster):
    seed = cluster[0].endpoint  # the other masters are discovered
    a, b = node(make_daemon, seed), node(make_daemon, seed)
    got = as_user(ALICE, a, """
        assert ns.put(keys(32, salt=10000), [fill(i) for i in range(32)]) == 32
    """)
    wait_for("A's writes", lambda: stats(a)["remote_writes_total"] >= 32)
    st = stats(a)
    assert st["remote_cluster"] is True and st["remote_nodes"] == 3

    # A worker on A keeps hitting its local blocks while a master dies.
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import json, os, sys, time
        sys.path[:0] = {sys.path!r}
        os.setgid(65534); os.setuid({ALICE})
        import kvtier
        from helpers import PAGE, SECRET
        c = kvtier.connect({a.addr!r})
        ns = c.namespace({NS!r}, PAGE, 16)
        k = ns.prompt_keys(range(10000, 10000 + 16 * 32), SECRET)
        served, worst, end = 0, 0.0, time.time() + 4
        while time.time() < end:
            t = time.perf_counter()
            assert ns.lookup(k) == (32, 0)
            worst = max(worst, time.perf_counter() - t)
            served += 1
        print(json.dumps({{"served": served, "worst": worst}}))
    """)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    victim = cluster[2]
    victim.kill()
    out = json.loads(worker.communicate(timeout=60)[0])
    assert worker.returncode == 0
    assert out["served"] > 100 and out["worst"] < 0.25, out  # local hits unaffected

    # B: what lived on the dead master cannot be found; the call still answers.
    t = time.time()
    got = as_user(ALICE, b, 'out["r"] = ns.lookup(keys(32, salt=10000))')
    assert got["r"][0] < 32 and time.time() - t < 30
    # A's new blocks: writes to the dead master fail, are counted, nothing breaks.
    as_user(ALICE, a, 'assert ns.put(keys(16, salt=20000), [fill(i) for i in range(16)]) == 16')
    wait_for("degraded", lambda: stats(a)["remote_degraded"] is True)
    st = stats(a)
    assert st["remote_errors_total"]["conn"] > 0 or st["remote_errors_total"]["timeout"] > 0
    assert stats(b)["remote_degraded"] is True
    status = subprocess.run([os.environ["KVTIERCTL"], "--addr", a.addr, "status"],
                            capture_output=True, text=True, check=True).stdout
    assert "remote tier  DEGRADED, 3 cluster masters known" in status, status
    assert a.proc.poll() is None and b.proc.poll() is None

    # The master comes back (empty: no persistence); the tier recovers.
    victim.start()
    wait_for("cluster_state:ok", lambda: all(
        "cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in cluster), 60)
    wait_for("recovery", lambda: stats(a)["remote_degraded"] is False, 60)
    # The others may take a moment to see it serve again: a prompt whose
    # writes were refused meanwhile is skipped (counted), the next one taken.
    for salt in range(30000, 40000, 1000):
        st = stats(a)
        as_user(ALICE, a, f'assert ns.put(keys(32, salt={salt}), [fill(i) for i in range(32)]) == 32')
        wait_for("A's writes", lambda: sum(stats(a)[k] - st[k] for k in (
            "remote_writes_total", "remote_writes_skipped_total")) >= 32)
        if stats(a)["remote_writes_total"] - st["remote_writes_total"] == 32:
            break
    got = as_user(ALICE, b, f"""
        out["r"] = ns.lookup_where(keys(32, salt={salt}))
        with ns.acquire(keys(32, salt={salt})) as lease:
            out["same"] = all(p.tobytes() == fill(i) for i, p in enumerate(lease.pages))
    """)
    assert got["r"] == [32, 0, ["remote"] * 32] and got["same"]
