#!/bin/sh
# The unit filters kvtierd's system calls to @system-service: every call the
# daemon makes under a workload (attach and its fast lane, put, lookup,
# acquire, reserve and commit, nvme demotion through io_uring, /metrics,
# a reload, the stop) must be in that set, or systemd would refuse it.
set -eu
kvtierd=$1 kvtierctl=$2 analyze=$3 pypath=$4
command -v strace >/dev/null || { echo "no strace: skipped"; exit 77; }
dir=$(mktemp -d)
pid=
# On any failure, the daemon (strace's child) goes too.
trap '[ -z "$pid" ] || pkill -TERM -P "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
strace -f -qq -o "$dir/trace" "$kvtierd" --set "daemon.run_dir=$dir/run" \
	--set host.size=4M --set host.segment_size=1M \
	--set "nvme.paths=$dir/nvme.kvt" --set nvme.size=64M --set nvme.region_size=2M \
	--set "metrics.listen=127.0.0.1:$port" >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/out" && break; sleep 0.1; done
PYTHONPATH=$pypath /usr/bin/python3 - "$dir/run/kvtierd.sock" <<'PY'
import sys
import kvtier
with kvtier.connect("unix:" + sys.argv[1], name="syscalls") as c:
    assert c.fast_lane, c.fast_lane_why_not
    ns = c.namespace("syscalls", 65536, 16)
    for salt in range(4):  # 4 x 32 pages of 64K: more than the 4M host tier
        keys = ns.prompt_keys(range(salt * 10000, salt * 10000 + 16 * 32), b"syscalls-secret-0123")
        ns.put(keys, [bytes(65536)] * 32)
        ns.lookup(keys)
    with ns.acquire(keys) as lease:
        assert lease.count == 32
    with ns.reserve(ns.prompt_keys(range(99999, 99999 + 16 * 4), b"syscalls-secret-0123")) as r:
        for _, page in r.pages:
            page[:] = bytes(65536)
PY
/usr/bin/python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/metrics').read()"
"$kvtierctl" -a "unix:$dir/run/kvtierd.sock" reload >/dev/null
# The daemon's own pid ($pid is strace's): strace ends with it.
daemon=$("$kvtierctl" -a "unix:$dir/run/kvtierd.sock" stats | awk '$1 == "pid" { print $2 }')
kill -TERM "$daemon"
wait "$pid" || true
sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$dir/trace" | sort -u >"$dir/used"
# @system-service, its groups expanded.
: >"$dir/allowed"
todo="@system-service" seen=""
while [ -n "$todo" ]; do
	set -- $todo
	group=$1
	shift
	todo="$*"
	case " $seen " in *" $group "*) continue ;; esac
	seen="$seen $group"
	for name in $("$analyze" syscall-filter "$group" | sed -e 's/#.*//' -e 's/^ *//' | grep -v '^$'); do
		case $name in @*) todo="$todo $name" ;; *) echo "$name" >>"$dir/allowed" ;; esac
	done
done
sort -u "$dir/allowed" -o "$dir/allowed"
grep -q io_uring_enter "$dir/used" || { echo "the workload did not reach io_uring"; exit 1; }
outside=$(comm -23 "$dir/used" "$dir/allowed")
[ -z "$outside" ] || { echo "kvtierd calls outside @system-service: $outside"; exit 1; }
echo "syscalls: the $(wc -l <"$dir/used") system calls kvtierd made are all in @system-service"
