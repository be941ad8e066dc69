"""Every row of the stats table (kvtierd --print-stats) in all three places
it is rendered: the Stats RPC (a field of its name and type), /metrics (a
family of its metric name and kind, or a label) and kvtierctl stats --json
(a key of its name with the right JSON type). The rows are read from the
daemon, so a stat added later is checked too. Also: README.md carries the
same list, values agree across the three, and --json keeps two tenants'
namespaces named "a.b" apart."""
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request

import grpc
import kvtier_pb2 as pb
import kvtier_pb2_grpc as rpc
from prometheus_client.parser import text_string_to_metric_families

PAGE = 4096
HERE = os.path.dirname(os.path.abspath(__file__))

# A row of kvtierd --print-stats: the reply's list it is in (None: the reply
# itself), its name and kind; its metric (for a label: the label's name) and
# the label it is split by (for a label: the family it labels).
Row = collections.namedtuple("Row", "list name kind metric extra")


def table():
    """kvtierd --print-stats, and its rows."""
    out = subprocess.run([os.environ["KVTIERD"], "--print-stats"], check=True,
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines()[2:]:
        stat, metric, kind, _ = [c.strip() for c in line.strip("|").split(" | ", 3)]
        path = stat.strip("`")
        lst, name = path.split("[].") if "[]." in path else (None, path)
        names = re.findall(r"`([^`]+)`", metric)
        rows.append(Row(lst, name, kind, names[0], names[1] if len(names) > 1 else None))
    assert rows and len({(r[0], r[1]) for r in rows}) == len(rows), rows
    return out, rows


def readme_in_step(listed):
    with open(os.path.join(HERE, "..", "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- kvtierd --print-stats -->\n(.*?)<!-- end -->", text, re.S)
    assert m, "README.md has no stats list"
    assert m.group(1) == listed, "README.md's stats list is stale: paste kvtierd --print-stats"


@contextlib.contextmanager
def running():
    """A daemon with TCP and /metrics: its run directory, TCP address and
    metrics URL; stopped (cleanly) and removed after."""
    tmp = tempfile.mkdtemp(prefix="kvtier-stats-")
    daemon = subprocess.Popen(
        [os.environ["KVTIERD"], "--set", "daemon.run_dir=" + tmp + "/run",
         "--set", "host.size=8M", "--set", "host.segment_size=1M",
         "--set", "metrics.listen=127.0.0.1:0", "--set", "daemon.tcp=127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = daemon.stdout.readline()
        yield tmp, line.split(" listening on ")[1].split()[1], \
            line.split(" metrics ")[1].strip()
    finally:
        daemon.terminate()
        stopped = daemon.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    assert stopped == 0, stopped


def workload(tmp, tcp):
    """Namespace "a.b" of two tenants (this user over the unix socket, "tcp"
    over TCP), blocks in one, lookups, and one NOT_FOUND."""
    keys = [bytes([i]) * 16 for i in range(1, 5)]
    for addr, n in (("unix:" + tmp + "/run/kvtierd.sock", 4), (tcp, 2)):
        with grpc.insecure_channel(addr) as ch:
            stub = rpc.KvTierStub(ch)
            ns = stub.OpenNamespace(pb.OpenNamespaceRequest(
                name="a.b", page_bytes=PAGE, block_tokens=16))
            stub.Put(pb.PutRequest(namespace_id=ns.namespace_id, keys=keys[:n],
                                   pages=[bytes([7]) * PAGE] * n))
            stub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id, keys=keys))
    with grpc.insecure_channel(tcp) as ch:
        try:
            rpc.KvTierStub(ch).Lookup(pb.LookupRequest(namespace_id=9999, keys=keys))
            raise AssertionError("an unknown namespace_id was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND


def elements(reply, lst):
    """The elements a row's scope has in a reply: the reply itself, or its
    list (never empty here)."""
    if lst is None:
        return [reply]
    got = reply[lst] if isinstance(reply, dict) else getattr(reply, lst)
    assert len(got) > 0, lst
    return got


def check_rpc(rows, st):
    """Each row is a field of the Stats reply of its name and type."""
    want = {"counter": int, "gauge": int, "bool": bool, "label": str}
    for r in rows:
        for e in elements(st, r.list):
            v = getattr(e, r.name)
            if r.kind == "histogram":
                assert e.HasField(r.name) and v.count == sum(v.counts), r
            elif r.kind == "counter" and r.extra:  # a map by that label
                assert all(type(x) is int for x in v.values()) and v, (r, v)
            else:
                assert type(v) is want[r.kind], (r, v)


def check_json(rows, js):
    """Each row is a key of its name in kvtierctl stats --json, typed."""
    want = {"counter": int, "gauge": int, "bool": bool, "label": str}
    for r in rows:
        for e in elements(js, r.list):
            v = e[r.name]
            if r.kind == "histogram":
                assert set(v) == {"count", "sum_seconds", "p50_seconds", "p99_seconds"}, v
            elif r.kind == "counter" and r.extra:  # an object by that label
                assert v and all(type(x) is int for x in v.values()), (r, v)
            else:
                assert type(v) is want[r.kind], (r, v)
    # The nesting: two namespaces "a.b", one per tenant, found by name.
    ab = [n for n in js["namespaces"] if n["name"] == "a.b"]
    assert sorted(n["ready_blocks"] for n in ab) == [2, 4], ab
    assert len({n["tenant"] for n in ab}) == 2 and "tcp" in {n["tenant"] for n in ab}, ab
    assert "tcp" in {t["name"] for t in js["tenants"]}, js["tenants"]
    lookup = [m for m in js["rpcs"] if m["method"] == "Lookup"][0]
    assert lookup["calls_total"] == 3 and lookup["errors_total"] == 1, lookup
    assert lookup["duration_seconds"]["count"] == 3, lookup
    assert js["rpc_status_errors_total"]["NOT_FOUND"] == 1, js["rpc_status_errors_total"]


def check_metrics(rows, families, js):
    """Each row is a family of its metric name and kind, or a label of the
    samples it names; and tier, namespace and tenant values agree with
    --json."""
    samples = [s for f in families.values() for s in f.samples]
    types = {"counter": "counter", "gauge": "gauge", "bool": "gauge",
             "histogram": "histogram"}
    def family(r):  # the parser names a counter's family without _total
        return families.get(r.metric[:-len("_total")] if r.kind == "counter" else r.metric)

    for r in rows:
        if r.kind == "label":
            # The daemon's label kvtier_build_info; a list's, each sample of
            # the list's families.
            on = [s for s in samples if s.name == r.extra] if r.list is None else \
                [s for q in rows if q.list == r.list and q.kind != "label"
                 for s in family(q).samples]
            assert on and all(r.metric in s.labels for s in on), r
            continue
        f = family(r)
        assert f is not None and f.type == types[r.kind] and f.samples, (r, f)
        if r.list in ("tiers", "namespaces", "tenants") and r.kind != "histogram":
            for e in js[r.list]:
                labels = {"tiers": {"tier": e.get("tier")},
                          "namespaces": {"namespace": e.get("name"), "tenant": e.get("tenant")},
                          "tenants": {"tenant": e.get("name")}}[r.list]
                got = [s.value for s in f.samples if s.labels == labels]
                # A stat in milliseconds is a metric in seconds.
                want = float(e[r.name]) / (1000 if r.name.endswith("_ms") else 1)
                assert got == [want], (r, labels, got, e[r.name])


def main():
    listed, rows = table()
    readme_in_step(listed)
    with running() as (tmp, tcp, metrics):
        workload(tmp, tcp)
        ctl = [os.environ["KVTIERCTL"], "-a", "unix:" + tmp + "/run/kvtierd.sock", "stats"]
        js = json.loads(subprocess.run(ctl + ["--json"], check=True,
                                       capture_output=True, text=True).stdout)
        with urllib.request.urlopen(metrics, timeout=5) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        with grpc.insecure_channel("unix:" + tmp + "/run/kvtierd.sock") as ch:
            st = rpc.KvTierStub(ch).Stats(pb.StatsRequest())
        text = subprocess.run(ctl, check=True, capture_output=True, text=True).stdout
    check_rpc(rows, st)
    check_json(rows, js)
    check_metrics(rows, families, js)
    # The text form stays one readable line per stat.
    assert re.search(r"^tiers\.host\.capacity_bytes +8388608$", text, re.M), text
    print("stats table: %d rows in Stats, /metrics and kvtierctl stats --json" % len(rows))


if __name__ == "__main__":
    main()
