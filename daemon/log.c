#include "log.h"

#include <grpc/support/log.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic enum kvt_log_level max_level = KVT_LOG_INFO;
static const char *const names[] = { "error", "warn", "info", "debug" };

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

void kvt_log(enum kvt_log_level level, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n = 0;

	if (level > max_level)
		return;
	if (isatty(STDERR_FILENO)) {
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = (int)strftime(line, sizeof(line), "%H:%M:%S ", &tm);
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "kvtierd %s: ",
		      names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
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
