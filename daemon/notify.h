/*
 * systemd's readiness protocol (sd_notify(3)): one datagram of
 * "KEY=VALUE\n" lines to the socket named by $NOTIFY_SOCKET. Without that
 * variable (not started by systemd with Type=notify) it does nothing. The
 * protocol is a stable interface; speaking it directly saves a dependency.
 */
#ifndef KVT_NOTIFY_H
#define KVT_NOTIFY_H

/* e.g. kvt_notify("READY=1\nSTATUS=%s", status). */
__attribute__((format(printf, 1, 2))) void kvt_notify(const char *fmt, ...);

#endif
