"""Every PromQL expression the README gives (its ```promql block) and every
query of the Grafana dashboard, evaluated by a real Prometheus (Debian's
prometheus package) that scrapes a real kvtierd under a small workload:
each must parse and return series, and the hit-rate expressions the value
the workload makes. promtool checks the exposition text too."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import grpc
import kvtier_pb2 as pb
import kvtier_pb2_grpc as rpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
PAGE = 4096


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def readme_queries():
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```promql\n(.*?)```", text, re.S)
    assert blocks, "the README has no promql block"
    queries, current = [], ""
    for line in "\n".join(blocks).splitlines():
        if line.startswith("#") or not line.strip():
            if current:
                queries.append(current)
            current = ""
        elif line.startswith("  ") and current:  # a continued expression
            current += " " + line.strip()
        else:
            if current:
                queries.append(current)
            current = line.strip()
    if current:
        queries.append(current)
    return queries


def dashboard_queries():
    with open(os.path.join(ROOT, "systemd", "grafana-kvtier.json")) as f:
        d = json.load(f)
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            # Grafana's variables, as Grafana would fill them in.
            out.append((p["title"], t["expr"].replace("$__rate_interval", "30s")
                        .replace('instance=~"$instance"', 'instance=~".+"')))
    return out


def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    r = json.loads(get(url))
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def open_namespace(sock):
    """The namespace, made before Prometheus first scrapes, so that its
    series start at 0 and a rate over them sees the workload."""
    with grpc.insecure_channel("unix:" + sock) as ch:
        return rpc.KvTierStub(ch).OpenNamespace(pb.OpenNamespaceRequest(
            name="promql:test", page_bytes=PAGE, block_tokens=16)).namespace_id


def workload(sock, ns):
    """10 blocks put, Lookups that hit 20 of 30 blocks (two thirds), one
    NOT_FOUND, and more blocks than the host tier holds (evictions)."""
    with grpc.insecure_channel("unix:" + sock) as ch:
        stub = rpc.KvTierStub(ch)
        keys = [bytes([i]) * 16 for i in range(1, 11)]
        stub.Put(pb.PutRequest(namespace_id=ns, keys=keys, pages=[bytes(PAGE)] * 10))
        stub.Lookup(pb.LookupRequest(namespace_id=ns, keys=keys))
        stub.Lookup(pb.LookupRequest(namespace_id=ns, keys=keys + [bytes([99]) * 16] * 10))
        try:
            stub.Lookup(pb.LookupRequest(namespace_id=9999, keys=keys))
        except grpc.RpcError:
            pass
        for batch in range(4):  # 4 x 256 pages of 4K > the 2M tier
            more = [bytes([200, batch]) + i.to_bytes(14, "little") for i in range(256)]
            stub.Put(pb.PutRequest(namespace_id=ns, keys=more, pages=[bytes(PAGE)] * 256))


def main():
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus:
        print("no prometheus binary (Debian package prometheus): skipped")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="kvtier-promql-")
    mport, pport = free_port(), free_port()
    daemon = subprocess.Popen(
        [os.environ["KVTIERD"], "--set", "daemon.run_dir=" + tmp + "/run",
         "--set", "host.size=2M", "--set", "host.segment_size=1M",
         "--set", f"metrics.listen=127.0.0.1:{mport}"], stdout=subprocess.PIPE, text=True)
    prom = None
    try:
        assert "listening on" in daemon.stdout.readline()
        ns = open_namespace(tmp + "/run/kvtierd.sock")
        text = get(f"http://127.0.0.1:{mport}/metrics")
        if promtool:
            check = subprocess.run([promtool, "check", "metrics"], input=text,
                                   capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
        with open(tmp + "/prometheus.yml", "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: kvtier\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{mport}']\n")
        prom = subprocess.Popen(
            [prometheus, "--config.file=" + tmp + "/prometheus.yml",
             "--storage.tsdb.path=" + tmp + "/data",
             f"--web.listen-address=127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp + "/prometheus.log", "w"))
        base = f"http://127.0.0.1:{pport}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if "Ready" in get(base + "/-/ready"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, open(tmp + "/prometheus.log").read()
            time.sleep(0.2)
        # Scrapes before the workload (Prometheus takes its targets up a few
        # seconds after it is ready), so that rates see it begin.
        deadline = time.monotonic() + 60
        while not query(base, "count_over_time(up[1m]) >= 2"):
            assert time.monotonic() < deadline, "Prometheus never scraped kvtierd"
            time.sleep(0.5)
        workload(tmp + "/run/kvtierd.sock", ns)
        # Scrapes after it, until a rate over the window sees it.
        deadline = time.monotonic() + 30
        while not query(base, "rate(kvtier_lookup_blocks_total[5m]) > 0"):
            assert time.monotonic() < deadline, "Prometheus never saw the workload"
            time.sleep(0.5)
        time.sleep(1.5)

        for expr in readme_queries():
            result = query(base, expr)
            assert result, f"README query returns nothing: {expr}"
        # The two hit rates, on the values the workload made: 20 of 30 blocks.
        hit = query(base, readme_queries()[0])
        assert abs(float(hit[0]["value"][1]) - 2 / 3) < 1e-9, hit
        hit = query(base, readme_queries()[1])
        assert abs(float(hit[0]["value"][1]) - 2 / 3) < 1e-9, hit
        empty = [(title, expr) for title, expr in dashboard_queries() if not query(base, expr)]
        assert not empty, f"dashboard queries that return nothing: {empty}"
        print(f"promql: {len(readme_queries())} README and {len(dashboard_queries())} dashboard "
              "queries return series from a real Prometheus" +
              (", promtool check metrics passes" if promtool else ""))
    finally:
        if prom:
            prom.terminate()
            prom.wait(timeout=30)
        daemon.terminate()
        assert daemon.wait(timeout=20) == 0
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
