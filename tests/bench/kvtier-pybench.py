#!/usr/bin/python3
"""kvtier-pybench: the Python binding's cost per call beside C, same run.

Lookup(64) of ready keys against a real kvtierd, timed in rounds that
alternate three loops in one process: libkvtier's own C loop (no Python),
the _native binding called directly, and the kvtier API (Namespace.lookup).
Also Acquire+release of 64 blocks from C-less Python.

    KVTIERD=build-release/daemon/kvtierd PYTHONPATH=build/client/python \\
        tests/bench/kvtier-pybench.py [iterations]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from conftest import Daemon  # noqa: E402

import kvtier  # noqa: E402

PAGE = 4096


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    d = Daemon("host.size=64M", "host.segment_size=4M")
    try:
        with kvtier.connect(d.addr, name="pybench") as c:
            ns = c.namespace("pybench", PAGE, 16)
            keys = ns.prompt_keys(range(64 * 16), b"pybench-secret-0001")
            ns.put(keys, [bytes(PAGE)] * 64)
            blob = b"".join(keys)
            assert ns.lookup(keys) == (64, 0)
            rounds = {"C (libkvtier loop)": [], "Python, _native": [], "Python, kvtier API": [],
                      "Python, acquire+release(64)": []}
            for _ in range(5):
                rounds["C (libkvtier loop)"].append(c._c.bench_lookup(ns._ns, blob, iters))
                t0 = time.perf_counter()
                for _ in range(iters):
                    c._c.lookup(ns._ns, blob)
                rounds["Python, _native"].append((time.perf_counter() - t0) / iters)
                t0 = time.perf_counter()
                for _ in range(iters):
                    ns.lookup(keys)
                rounds["Python, kvtier API"].append((time.perf_counter() - t0) / iters)
                t0 = time.perf_counter()
                for _ in range(iters // 4):
                    with ns.acquire(keys) as lease:
                        lease.pages
                rounds["Python, acquire+release(64)"].append(
                    (time.perf_counter() - t0) / (iters // 4))
            base = statistics.median(rounds["C (libkvtier loop)"])
            for name, v in rounds.items():
                m = statistics.median(v)
                print(f"Lookup(64) {name:28s} median of 5 rounds {m * 1e6:7.1f} us/call"
                      f"   (+{(m - base) * 1e6:5.1f} us vs C)" if "acquire" not in name else
                      f"{name:39s} median of 5 rounds {m * 1e6:7.1f} us/call")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
