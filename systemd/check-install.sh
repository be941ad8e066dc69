#!/bin/sh
# meson install into a scratch DESTDIR, then what a default install must
# give: the unit's -c names the config file the install put there, the man
# pages name that same file, and kvtierd reads it.
set -eu
meson=$1 build=$2 config=$3
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
"$meson" install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null
unit=$(find "$dest" -name kvtierd.service -path '*systemd/system*')
[ -n "$unit" ] || { echo "no kvtierd.service installed"; exit 1; }
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
named=${exec_start##* -c }
[ "$named" = "$config" ] || { echo "the unit reads $named, the install puts $config"; exit 1; }
[ -f "$dest$config" ] || { echo "the unit reads $config, which the install did not put there"; exit 1; }
binary=${exec_start%% *}
[ -x "$dest$binary" ] || { echo "the unit runs $binary, which the install did not put there"; exit 1; }
for page in man8/kvtierd.8 man5/kvtierd.conf.5; do
	file=$(find "$dest" -path "*/man/$page*" | head -n 1)
	[ -n "$file" ] || { echo "$page not installed"; exit 1; }
	case $file in *.gz) text=$(gzip -dc "$file") ;; *) text=$(cat "$file") ;; esac
	echo "$text" | grep -qF "$config" || { echo "$page does not name $config"; exit 1; }
	if echo "$text" | grep -Eq '(^|[^A-Za-z0-9_./-])/etc/kvtier/kvtierd\.conf' &&
	   [ "$config" != /etc/kvtier/kvtierd.conf ]; then
		echo "$page names /etc/kvtier/kvtierd.conf; the install puts $config"; exit 1
	fi
done
"$dest$binary" -c "$dest$config" --set "daemon.run_dir=$dest/run" --set daemon.group= \
	--print-config >/dev/null
echo "install: the unit, kvtierd(8) and kvtierd.conf(5) name $config, which is installed and loads"
