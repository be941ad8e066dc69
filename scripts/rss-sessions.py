#!/usr/bin/python3
"""Measures kvtierd's resident memory around many sessions: starts the
daemon (KVTIERD, default build/daemon/kvtierd) with no session bound, opens
N Attach streams over C connections, closes them, and prints VmRSS at each
step. Usage: PYTHONPATH=build/tests scripts/rss-sessions.py [N] [C]"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import kvtier_pb2 as pb
import kvtier_pb2_grpc as rpc


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    tmp = tempfile.mkdtemp(prefix="kvtier-rss-")
    run_dir = os.path.join(tmp, "run")
    daemon = subprocess.Popen(
        [os.environ.get("KVTIERD", "build/daemon/kvtierd"),
         "--set", "daemon.run_dir=" + run_dir, "--set", "host.size=16M",
         "--set", "host.segment_size=1M", "--set", "metrics.listen=",
         "--set", "tenants.max_sessions=0", "--set", "tenants.max_connections=0",
         "--set", "daemon.log_level=warn"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in daemon.stdout.readline()
        addr = "unix:" + run_dir + "/kvtierd.sock"
        channels = [grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(conns)]
        stubs = [rpc.KvTierStub(ch) for ch in channels]
        for s in stubs:
            s.Stats(pb.StatsRequest())
        time.sleep(1)
        print("idle, %d connections: %.1f MiB" % (conns, rss_mib(daemon.pid)))
        streams = []
        for i in range(n):
            st = stubs[i % conns].Attach(pb.AttachRequest(client_name="rss"))
            next(st)
            streams.append(st)
        time.sleep(1)
        print("%d sessions open: %.1f MiB" % (n, rss_mib(daemon.pid)))
        for st in streams:
            st.cancel()
        streams = []
        deadline = time.time() + 60
        while time.time() < deadline:
            active = stubs[0].Stats(pb.StatsRequest()).sessions_active
            if active == 0:
                break
            time.sleep(0.2)
        t0 = time.time()
        print("all closed: %.1f MiB" % rss_mib(daemon.pid))
        for wait in (2, 12, 30):
            time.sleep(max(0, t0 + wait - time.time()))
            print("%2d s later: %.1f MiB" % (wait, rss_mib(daemon.pid)))
        for ch in channels:
            ch.close()
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
