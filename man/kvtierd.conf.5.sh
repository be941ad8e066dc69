#!/bin/sh
# Writes kvtierd.conf(5) from the daemon's own knob table (kvtierd
# --print-config), so that the page always matches the code.
set -eu
kvtierd=$1 config=$2
cat <<HEAD
.TH KVTIERD.CONF 5 "" "kvtier" "File Formats"
.SH NAME
kvtierd.conf \- configuration of the kvtier KV-cache daemon
.SH SYNOPSIS
.B $config
.SH DESCRIPTION
An INI file: \fB[section]\fR headers and \fBkey = value\fR lines; \fB#\fR or
\fB;\fR start a comment. Every knob has a default, so the file names only
what differs. \fBkvtierd \-\-set\fR \fIsection.key=value\fR overrides a knob
from the command line (the command line wins over the file).
.PP
The file is read strictly: a key given twice, a key outside a known
section, a section header without its \fB]\fR or with text after it, a
NUL byte, a line longer than 199 bytes, and a value out of range or with
trailing text (a sign, a blank, a unit the knob does not take) are errors.
Leading blanks are ignored; a value never continues on the next line.
Every error names the file and line (or \fIcommand line\fR for \fB\-\-set\fR),
the section and the key. An error about two knobs together names the one
that was set; when both were, the one that does not fit the other:
\fBsegment_size\fR for a segment larger than the tier, \fBsize\fR for a
tier of more than 16384 segments, \fBregion_size\fR for a region too
small for a segment.
.PP
Sizes take units: \fB4096\fR, \fB512K\fR, \fB512M\fR, \fB64G\fR, \fB1T\fR
(powers of 1024; \fBKiB\fR, \fBMB\fR spellings are accepted). Durations take
units: \fB250ms\fR, \fB30s\fR, \fB5m\fR, \fB2h\fR, \fB1d\fR; a bare number is
seconds.
.PP
On \fBSIGHUP\fR (\fBsystemctl reload kvtierd\fR) the daemon reads the file and
its \fB\-\-set\fR overrides again. Knobs marked \fIchanges on reload\fR below
take effect at once: the host tier grows, or shrinks by demoting or evicting
the blocks of its highest segments (pinned blocks when they are released)
and giving their memory back. The other knobs keep their running value and
the log names each as needing a restart; \fBkvtierctl config\fR shows them as
pending. A file that does not parse, or a value out of range, changes
nothing: the error (file, line, section, key, reason) is logged and counted
in \fBkvtier_config_reload_failures_total\fR.
.SH KNOBS
HEAD
"$kvtierd" --set daemon.run_dir=/run/kvtier --print-config | awk '
/^\[/ { printf ".SS %s\n", $0; next }
/^# \(from / { sub(/^# \(from [^;]*; /, ""); sub(/\)$/, ""); when = $0; next }
/^# / { sub(/^# /, ""); help = $0; next }
/ = / || / =$/ {
	key = $1; val = $0; sub(/^[^=]*= ?/, "", val)
	gsub(/\\/, "\\e", help); gsub(/-/, "\\-", val)
	printf ".TP\n.B %s\nDefault: \\fB%s\\fR (%s). %s\n", key, val == "" ? "\"\"" : val, when, help
}'
cat <<TAIL
.SH EXAMPLE
.nf
[host]
size = 64G
segment_size = 64M

[nvme]
paths = /var/lib/kvtier/nvme0.kvt, /var/lib/kvtier/nvme1.kvt
size = 1T

[metrics]
listen = 127.0.0.1:9400
.fi
.SH FILES
.TP
.I $config
Every knob, commented, with its default.
.SH SEE ALSO
.BR kvtierd (8),
.BR kvtierctl (1)
TAIL
