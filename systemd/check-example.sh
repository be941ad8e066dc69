#!/bin/sh
# Every knob kvtierd knows appears in the example config (as "key =" or
# commented "# key ="), under its section.
set -eu
kvtierd=$1 example=$2
missing=0
section=
"$kvtierd" --set daemon.run_dir=/tmp --print-config | while IFS= read -r line; do
	case $line in
	"["*"]") section=$line ;;
	"#"* | "") ;;
	*)
		key=${line%% =*}
		if ! awk -v s="$section" -v k="$key" '
			$0 == s { in_s = 1; next } /^\[/ { in_s = 0 }
			in_s && ($0 ~ "^#? ?" k " =") { found = 1 }
			END { exit !found }' "$example"; then
			echo "example config lacks $section $key"
			exit 1
		fi ;;
	esac
done
echo "example config names every knob"
