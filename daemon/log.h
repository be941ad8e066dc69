/*
 * Daemon log: one line per event on stderr (journald adds the timestamp when
 * run under systemd; a terminal gets one from us). Thread-safe.
 */
#ifndef KVT_LOG_H
#define KVT_LOG_H

enum kvt_log_level { KVT_LOG_ERROR, KVT_LOG_WARN, KVT_LOG_INFO, KVT_LOG_DEBUG };

void kvt_log_set_level(enum kvt_log_level level);
/* -1 for an unknown name ("error", "warn", "info", "debug"). */
int kvt_log_level_parse(const char *name);
/* Routes gRPC's own log lines through kvt_log. */
void kvt_log_capture_grpc(void);

__attribute__((format(printf, 2, 3))) void kvt_log(enum kvt_log_level level,
						   const char *fmt, ...);

#endif
