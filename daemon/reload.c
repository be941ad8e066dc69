#include "reload.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

int kvt_reload_init(struct kvt_reload *r, const char *file,
		    const char *const *sets, size_t nsets, char *err,
		    size_t len)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->file = file;
	r->sets = sets;
	r->nsets = nsets;
	r->last_ok = true;
	int rc = kvt_config_build(&r->running, file, sets, nsets, err, len);

	if (rc < 0)
		return rc;
	r->wanted = r->running;
	return 0;
}

static void log_change(void *arg, size_t knob, const char *was,
		       const char *now, bool live)
{
	struct kvt_config_knob k;

	(void)arg;
	kvt_config_knob(knob, &k);
	if (live)
		kvt_log(KVT_LOG_INFO, "reload: [%s] %s: %s -> %s", k.section,
			k.name, was, now);
	else
		kvt_log(KVT_LOG_WARN, "reload: [%s] %s: %s -> %s needs a restart; still %s",
			k.section, k.name, was, now, was);
}

int kvt_reload_run(struct kvt_reload *r, kvt_reload_apply_fn apply, void *arg)
{
	static struct kvt_config next, wanted; /* large: the main thread's only */
	char err[512];
	int rc;

	kvt_log(KVT_LOG_INFO, "reload: reading %s", r->file ? r->file : "(no file: defaults and --set)");
	rc = kvt_config_build(&wanted, r->file, r->sets, r->nsets, err, sizeof(err));
	if (rc == 0) {
		next = wanted;
		rc = kvt_config_merge(&r->running, &next, log_change, NULL, err,
				      sizeof(err));
	}
	if (rc == 0)
		rc = apply(arg, &next, err, sizeof(err));
	pthread_mutex_lock(&r->lock);
	r->reloads_total++;
	r->last_time = time(NULL);
	r->last_ok = rc == 0;
	if (rc == 0) {
		r->running = next;
		r->wanted = wanted;
		r->last_error[0] = '\0';
	} else {
		r->failures_total++;
		snprintf(r->last_error, sizeof(r->last_error), "%s", err);
	}
	pthread_mutex_unlock(&r->lock);
	if (rc < 0)
		kvt_log(KVT_LOG_ERROR, "reload failed, running configuration unchanged: %s",
			err);
	else
		kvt_log(KVT_LOG_INFO, "reload: done");
	return rc;
}
