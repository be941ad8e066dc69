#include "log.h"

#include <grpc/support/log.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic enum kvt_log_level max_level = KVT_LOG_INFO;
static _Atomic bool json;
static bool journal; /* set once by kvt_log_init, before any thread */
static const char *const names[] = { "error", "warn", "info", "debug" };
/* sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG. */
static const char priorities[] = { '3', '4', '6', '7' };

void kvt_log_set_level(enum kvt_log_level level)
{
	max_level = level;
}

int kvt_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -EINVAL;
}

int kvt_log_set_format(const char *name)
{
	if (strcmp(name, "text") != 0 && strcmp(name, "json") != 0)
		return -EINVAL;
	json = strcmp(name, "json") == 0;
	return 0;
}

void kvt_log_init(void)
{
	/* systemd sets JOURNAL_STREAM=dev:ino of the stream it connected;
	 * a child that inherited the variable but not the stream is not
	 * writing to the journal. */
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
		  fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
		  (unsigned long long)st.st_ino == ino;
}

/* The local time to the millisecond, with its offset from UTC. */
static size_t timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char zone[8];
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	strftime(zone, sizeof(zone), "%z", &tm);
	n += (size_t)snprintf(buf + n, len - n, ".%03ld%s", ts.tv_nsec / 1000000, zone);
	return n < len ? n : len - 1;
}

/* s as the inside of a JSON string, cut to fit. */
static size_t json_escape(char *out, size_t len, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[n++] = '\\';
			out[n++] = (char)c;
		} else if (c < 0x20) {
			n += (size_t)snprintf(out + n, len - n, "\\u%04x", c);
		} else {
			out[n++] = (char)c;
		}
	}
	out[n] = '\0';
	return n;
}

void kvt_log(enum kvt_log_level level, const char *fmt, ...)
{
	char msg[1024], line[2400];
	size_t n = 0;
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (journal)
		n += (size_t)snprintf(line, sizeof(line), "<%c>", priorities[level]);
	if (json) {
		char ts[48], esc[sizeof(msg) * 6 / 5 + 8];

		timestamp(ts, sizeof(ts));
		json_escape(esc, sizeof(esc), msg);
		snprintf(line + n, sizeof(line) - n,
			 "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}", ts,
			 names[level], esc);
	} else {
		if (!journal) {
			n += timestamp(line + n, sizeof(line) - n);
			line[n++] = ' ';
		}
		snprintf(line + n, sizeof(line) - n, "kvtierd %s: %s", names[level], msg);
	}
	/* One write per line keeps lines whole when threads log at once. */
	fprintf(stderr, "%s\n", line);
}

static void grpc_log(gpr_log_func_args *args)
{
	enum kvt_log_level level = args->severity == GPR_LOG_SEVERITY_ERROR ?
					   KVT_LOG_WARN :
					   KVT_LOG_DEBUG;

	kvt_log(level, "grpc: %s (%s:%d)", args->message, args->file,
		args->line);
}

void kvt_log_capture_grpc(void)
{
	gpr_set_log_function(grpc_log);
}
