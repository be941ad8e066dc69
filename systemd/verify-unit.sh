#!/bin/sh
# systemd-analyze verify UNIT, failing on any complaint about the unit (it
# exits 0 on some warnings). The unit file is copied to kvtierd.service so
# that its name matches what is installed.
set -eu
analyze=$1 unit=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$unit" "$dir/kvtierd.service"
# --man=no: the man pages are checked by man(1), not installed here.
out=$("$analyze" verify --man=no "$dir/kvtierd.service" 2>&1) || { echo "$out"; exit 1; }
if echo "$out" | grep -q "kvtierd.service"; then echo "$out"; exit 1; fi
# And its exposure stays where the hardening put it (1.8 OK; the unit
# says what stays open and why): at most 2.0.
if ! "$analyze" security --offline=yes --threshold=20 "$dir/kvtierd.service" >"$dir/security" 2>&1; then
	grep -E "✗|Overall" "$dir/security"
	exit 1
fi
echo "systemd-analyze verify: kvtierd.service is clean; security: $(grep Overall "$dir/security")"
