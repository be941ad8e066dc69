/*
 * Daemon log: one line per event on stderr, whole even when threads log at
 * once. Where stderr is the systemd journal ($JOURNAL_STREAM names it),
 * each line starts with sd-daemon's <N> priority prefix and has no
 * timestamp (the journal keeps both); elsewhere (a terminal, Docker,
 * nohup) it starts with the date and time to the millisecond. The format
 * is "text" (kvtierd LEVEL: message) or "json" (one object per line:
 * ts, level, msg). Any thread.
 */
#ifndef KVT_LOG_H
#define KVT_LOG_H

#include <stdbool.h>

enum kvt_log_level { KVT_LOG_ERROR, KVT_LOG_WARN, KVT_LOG_INFO, KVT_LOG_DEBUG };

void kvt_log_set_level(enum kvt_log_level level);
/* -1 for an unknown name ("error", "warn", "info", "debug"). */
int kvt_log_level_parse(const char *name);
/* "text" or "json"; -EINVAL for anything else. */
int kvt_log_set_format(const char *name);
/* Looks whether stderr is the journal; main calls it once at start. */
void kvt_log_init(void);
/* Routes gRPC's own log lines through kvt_log. */
void kvt_log_capture_grpc(void);

__attribute__((format(printf, 2, 3))) void kvt_log(enum kvt_log_level level,
						   const char *fmt, ...);

#endif
