#!/bin/sh
# meson install into a scratch DESTDIR, then what a default install must
# give: the unit's -c names the config file the install put there, the man
# pages name that same file, and kvtierd reads it; a program outside the
# tree builds against libkvtier (and libkvtier-cuda) with pkg-config and
# nothing else, and runs; the .proto is there for other languages.
set -eu
meson=$1 build=$2 config=$3 libdir=$4 datadir=$5 sanitize=${6:-none}
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

# pkg-config sees only the install: no grpc, protobuf-c or sodium .pc.
export PKG_CONFIG_LIBDIR="$dest$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
flags=$(pkg-config --cflags --libs kvtier) || { echo "pkg-config kvtier fails"; exit 1; }
case $flags in *NOMINMAX*) echo "pkg-config kvtier leaks $flags"; exit 1 ;; esac
cat >"$dest/prog.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <kvtier/kvtier.h>

int main(void)
{
	printf("%s %s %d\n", kvt_version(), KVT_VERSION_STRING, KVT_VERSION_NUMBER);
	return strcmp(kvt_version(), KVT_VERSION_STRING) != 0;
}
C
# A sanitized build's library needs its runtime in the program too.
san=
[ "$sanitize" = none ] || san=-fsanitize=$sanitize
# shellcheck disable=SC2086
cc -Wall -Werror $san -o "$dest/prog" "$dest/prog.c" $flags
LD_LIBRARY_PATH="$dest$libdir" "$dest/prog" >/dev/null
if [ -f "$dest$libdir/pkgconfig/kvtier-cuda.pc" ]; then
	printf '#include <kvtier/cuda.h>\nint main(void) { return 0; }\n' >"$dest/gpu.c"
	# The CUDA toolkit is the machine's, not the install's: no sysroot.
	prefix=$(PKG_CONFIG_SYSROOT_DIR= pkg-config --variable=prefix kvtier)
	cflags=$(PKG_CONFIG_SYSROOT_DIR= pkg-config --define-variable=prefix="$dest$prefix" \
		--cflags kvtier-cuda)
	# shellcheck disable=SC2086
	cc -Wall -Werror -c -o "$dest/gpu.o" "$dest/gpu.c" $cflags
fi
[ -f "$dest$datadir/kvtier/proto/kvtier/v1/kvtier.proto" ] ||
	{ echo "kvtier.proto is not installed under $datadir/kvtier/proto"; exit 1; }
echo "install: the unit, kvtierd(8) and kvtierd.conf(5) name $config, which is installed and loads;"
echo "  a program builds with pkg-config kvtier alone ($flags) and runs; kvtier.proto is installed"
