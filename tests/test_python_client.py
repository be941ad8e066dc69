"""A second, independent client: Python grpcio with stubs generated from
kvtier.proto. Starts the real kvtierd and calls Health, OpenNamespace, Put,
Lookup, Get, Stats, and one bad request."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import health_pb2
import health_pb2_grpc
import kvtier_pb2 as pb
import kvtier_pb2_grpc as rpc

PAGE = 8192


def lookup_tells_the_tier(stub, ns_id, keys, pages):
    """Once written to nvme and evicted from host by other blocks, keys are
    reported as TIER_NVME; read back by Gets, as TIER_HOST again."""
    deadline = time.monotonic() + 10
    while stub.Stats(pb.StatsRequest()).nvme_blocks < len(keys):
        assert time.monotonic() < deadline, "the blocks were never written to nvme"
        time.sleep(0.02)
    fill = stub.OpenNamespace(pb.OpenNamespaceRequest(
        name="py:fill", page_bytes=PAGE, block_tokens=16))
    for batch in range(40):  # 2560 pages of 8 KiB through a 16 MiB host tier
        stub.Put(pb.PutRequest(
            namespace_id=fill.namespace_id,
            keys=[b"F" + (batch * 64 + i).to_bytes(15, "big") for i in range(64)],
            pages=[bytes([batch]) * PAGE] * 64))
    look = stub.Lookup(pb.LookupRequest(namespace_id=ns_id, keys=keys))
    assert look.ready_blocks == len(keys), look
    assert list(look.tiers) == [pb.TIER_NVME] * len(keys), look.tiers
    assert stub.Stats(pb.StatsRequest()).lookup_nvme_hit_blocks_total >= len(keys)
    # A Get returns what is in host and starts reading the rest back.
    while list(stub.Get(pb.GetRequest(namespace_id=ns_id, keys=keys)).pages) != pages:
        assert time.monotonic() < deadline + 10, "the blocks never came back from nvme"
        time.sleep(0.02)
    look = stub.Lookup(pb.LookupRequest(namespace_id=ns_id, keys=keys))
    assert list(look.tiers) == [pb.TIER_HOST] * len(keys), look.tiers


def main():
    tmp = tempfile.mkdtemp(prefix="kvtier-py-")
    run_dir = os.path.join(tmp, "run")
    daemon = subprocess.Popen(
        [os.environ["KVTIERD"], "--set", "daemon.run_dir=" + run_dir,
         "--set", "host.size=16M", "--set", "host.segment_size=1M",
         "--set", "nvme.paths=" + os.path.join(tmp, "nvme.kvt"),
         "--set", "nvme.size=64M", "--set", "nvme.region_size=2M",
         "--set", "daemon.tcp=127.0.0.1:0",
         "--set", "metrics.listen=127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = daemon.stdout.readline()
        assert "listening on" in line, line
        channel = grpc.insecure_channel("unix:" + run_dir + "/kvtierd.sock")
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="kvtier.v1.KvTier"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
        # Watch: the status now, the stream left open; an unknown service
        # is SERVICE_UNKNOWN (not an error), and the daemon's stop ends
        # the open stream with UNAVAILABLE (below).
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="nope"))
        assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        unknown.cancel()
        # A connection holds at most 256 calls at once: Watch streams past
        # that wait (the daemon advertises the bound; it refuses calls past
        # it from a client that does not heed it) instead of piling up.
        # (A connection of its own: gRPC shares one between channels.)
        crowd = grpc.insecure_channel("unix:" + run_dir + "/kvtierd.sock",
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        many = [health_pb2_grpc.HealthStub(crowd).Watch(health_pb2.HealthCheckRequest())
                for _ in range(300)]
        time.sleep(1.0)
        started = [m.calls_total for m in rpc.KvTierStub(channel).Stats(pb.StatsRequest()).rpcs
                   if m.method == "Watch"]
        assert started == [2 + 256], started  # the two above, 256 of these
        crowd.close()
        del many
        stub = rpc.KvTierStub(channel)

        ns = stub.OpenNamespace(pb.OpenNamespaceRequest(
            name="py:test", page_bytes=PAGE, block_tokens=16))
        keys = [bytes([i]) * 16 for i in range(1, 6)]
        pages = [bytes([i % 251]) * PAGE for i in range(1, 6)]
        put = stub.Put(pb.PutRequest(namespace_id=ns.namespace_id,
                                     keys=keys[:4], pages=pages[:4]))
        assert put.stored == 4, put
        look = stub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id, keys=keys))
        assert look.ready_blocks == 4, look
        assert list(look.tiers) == [pb.TIER_HOST] * 4
        got = stub.Get(pb.GetRequest(namespace_id=ns.namespace_id, keys=keys))
        assert list(got.pages) == pages[:4]
        assert got.ready_blocks == 4

        try:
            stub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id, keys=[b"short"]))
            raise AssertionError("a 5-byte key was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "keys[0] is 5 bytes" in e.details(), e.details()

        # A GPU named by anything but a 16-byte UUID is refused; a GPU the
        # daemon has no hbm pool on attaches without one.
        try:
            next(stub.Attach(pb.AttachRequest(client_name="py-gpu", gpu_uuid=b"GPU-0")))
            raise AssertionError("a 5-byte gpu_uuid was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "gpu_uuid is 5 bytes" in e.details(), e.details()
        events = stub.Attach(pb.AttachRequest(client_name="py-gpu", gpu_uuid=bytes(16)))
        first = next(events)
        assert not first.HasField("hbm_pool"), first
        events.cancel()

        st = stub.Stats(pb.StatsRequest())
        assert st.ready_blocks == 4 and st.lookup_blocks_total == 5 and st.lookup_hit_blocks_total == 4, st
        assert st.rpc_status_errors_total["INVALID_ARGUMENT"] == 2, st.rpc_status_errors_total
        hbm = [t for t in st.tiers if t.tier == "hbm"][0]
        assert not hbm.up and hbm.capacity_bytes == 0, st
        assert st.allocator.startswith("jemalloc") or "without jemalloc" in st.allocator
        ns_stats = [n for n in st.namespaces if n.name == "py:test"][0]
        assert ns_stats.page_bytes == PAGE and ns_stats.ready_blocks == 4

        # Over TCP there are no peer credentials: one tenant, "tcp", which
        # does not see the unix-socket tenant's blocks.
        tcp_addr = line.split(" listening on ")[1].split()[1]
        assert tcp_addr.startswith("127.0.0.1:"), line
        tcp = grpc.insecure_channel(tcp_addr)
        tstub = rpc.KvTierStub(tcp)
        events = tstub.Attach(pb.AttachRequest(client_name="py-tcp"))
        first = next(events)
        assert first.tenant == "tcp", first
        # The unix tenant's namespace id is unknown to it; its own namespace
        # of the same name holds none of those blocks.
        try:
            tstub.Lookup(pb.LookupRequest(namespace_id=ns.namespace_id, keys=keys))
            raise AssertionError("another tenant's namespace_id was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            assert "unknown namespace_id" in e.details(), e.details()
        tns = tstub.OpenNamespace(pb.OpenNamespaceRequest(
            name="py:test", page_bytes=PAGE, block_tokens=16))
        assert tns.created and tns.namespace_id != ns.namespace_id, tns
        look = tstub.Lookup(pb.LookupRequest(namespace_id=tns.namespace_id, keys=keys))
        assert look.ready_blocks == 0, look
        events.cancel()
        tcp.close()
        st = stub.Stats(pb.StatsRequest())
        assert sorted(t.name for t in st.tenants if t.name != "shared") == sorted(
            ["tcp", pwd.getpwuid(os.getuid()).pw_name]), st.tenants

        lookup_tells_the_tier(stub, ns.namespace_id, keys[:4], pages[:4])
        daemon.terminate()
        try:
            next(watch)
            raise AssertionError("the watch outlived the daemon")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        print("python client: health (Check, Watch), put, lookup, get, stats, tcp tenant, "
              "nvme tier ok")
        channel.close()
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
