"""/metrics and /healthz of the real kvtierd, read with the Prometheus
project's own text parser (Debian's python3-prometheus-client): every family
parses, names follow the conventions, and counters move as a workload runs.
Every status code's error series exists from the start (at 0), an Attach is
timed, and the process_* families give the daemon's own RSS, CPU, fds and
start time."""
import time
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

import grpc
import kvtier_pb2 as pb
import kvtier_pb2_grpc as rpc
from prometheus_client.parser import text_string_to_metric_families

PAGE = 4096


def scrape(base):
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, f in families.items():
        assert name.startswith("kvtier_") or name.startswith("process_"), name
        if f.type == "counter":  # the parser strips _total from counter names
            assert any(s.name.endswith("_total") for s in f.samples) or not f.samples, name
    return families


def value(families, name, **labels):
    for f in families.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError((name, labels))


def main():
    tmp = tempfile.mkdtemp(prefix="kvtier-metrics-")
    daemon = subprocess.Popen(
        [os.environ["KVTIERD"], "--set", "daemon.run_dir=" + tmp + "/run",
         "--set", "host.size=8M", "--set", "host.segment_size=1M",
         "--set", "metrics.listen=127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = daemon.stdout.readline()
        assert " metrics http://127.0.0.1:" in line, line
        base = line.split(" metrics ")[1].strip().rsplit("/", 1)[0]

        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200 and r.read() == b"ok\n"
        try:
            urllib.request.urlopen(base + "/nope", timeout=5)
            raise AssertionError("/nope answered")
        except urllib.error.HTTPError as e:
            assert e.code == 404

        before = scrape(base)
        assert value(before, "kvtier_tier_capacity_bytes", tier="host") == 8 << 20
        assert value(before, "kvtier_config_last_reload_ok") == 1
        assert before["kvtier_rpc_duration_seconds"].type == "histogram"
        assert before["kvtier_eviction_age_seconds"].type == "histogram"
        for code in ("NOT_FOUND", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAVAILABLE"):
            assert value(before, "kvtier_rpc_status_errors_total", code=code) == 0
        assert 0 <= time.time() - value(before, "process_start_time_seconds") < 120
        assert value(before, "process_resident_memory_bytes") > 1 << 20
        assert 0 < value(before, "process_open_fds") <= value(before, "process_max_fds")
        assert value(before, "process_cpu_seconds_total") >= 0
        assert before["process_cpu_seconds"].type == "counter"  # the parser drops _total

        channel = grpc.insecure_channel("unix:" + tmp + "/run/kvtierd.sock")
        stub = rpc.KvTierStub(channel)
        session = stub.Attach(pb.AttachRequest(client_name="metrics"))
        next(session)  # the session's first event
        session.cancel()
        ns = stub.OpenNamespace(pb.OpenNamespaceRequest(
            name="metrics:test", page_bytes=PAGE, block_tokens=16))
        keys = [bytes([i]) * 16 for i in range(1, 11)]
        stub.Put(pb.PutRequest(namespace_id=ns.namespace_id, keys=keys,
                               pages=[bytes([i]) * PAGE for i in range(1, 11)]))
        # 10 of 10 hit, then 10 of 20 (the prefix stops at the first miss).
        stub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id, keys=keys))
        stub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id,
                                     keys=keys + [bytes([99]) * 16] * 10))
        got = stub.Get(pb.GetRequest(namespace_id=ns.namespace_id, keys=keys))
        assert len(got.pages) == 10
        try:
            stub.Lookup(pb.LookupRequest(namespace_id=9999, keys=keys))
            raise AssertionError("bad namespace accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND

        after = scrape(base)
        ns_label = {"namespace": "metrics:test"}
        assert value(after, "kvtier_namespace_lookup_blocks_total", **ns_label) == 30
        assert value(after, "kvtier_namespace_lookup_hit_blocks_total", **ns_label) == 20
        assert value(after, "kvtier_namespace_lookup_nvme_hit_blocks_total", **ns_label) == 0
        assert value(after, "kvtier_namespace_lookup_tokens_total", **ns_label) == 30 * 16
        assert value(after, "kvtier_namespace_lookup_hit_tokens_total", **ns_label) == 20 * 16
        assert value(after, "kvtier_lookup_blocks_total") == 30
        assert value(after, "kvtier_tier_in_bytes_total", tier="host") == 10 * PAGE
        assert value(after, "kvtier_tier_out_bytes_total", tier="host") == 10 * PAGE
        assert value(after, "kvtier_namespace_ready_blocks", **ns_label) == 10
        assert value(after, "kvtier_tier_used_bytes", tier="host") == 10 * PAGE
        lookups = value(after, "kvtier_rpc_duration_seconds_count", method="Lookup")
        assert lookups == 3, lookups
        assert value(after, "kvtier_rpc_duration_seconds_bucket", method="Lookup", le="+Inf") == 3
        assert value(after, "kvtier_rpc_errors_total", method="Lookup") == 1
        assert value(after, "kvtier_rpc_status_errors_total", code="NOT_FOUND") == 1
        assert value(after, "kvtier_committed_blocks_total") == 10
        assert value(after, "kvtier_rpc_duration_seconds_count", method="Attach") == 1
        channel.close()

        # The Grafana dashboard asks only for metrics the daemon exposes.
        dashboard = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "..", "systemd", "grafana-kvtier.json")
        exposed = {s.name for f in after.values() for s in f.samples}
        with open(dashboard) as f:
            wanted = set(re.findall(r"(?:kvtier|process)_[a-z_]+", f.read()))
        assert wanted and wanted <= exposed, wanted - exposed
        print("metrics: %d families parse; counters moved with the workload" % len(after))
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=20) == 0
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
