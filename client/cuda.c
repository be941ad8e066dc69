/* libkvtier-cuda: see kvtier/cuda.h. */
#include <kvtier/cuda.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_copy.h"

/* What the library's thread does once a stream has passed a copy. */
struct job {
	struct job *next;
	struct kvt_cuda *g;
	bool commit; /* else release */
	struct kvt_namespace ns;
	struct kvt_lease lease;
	size_t n;
	struct kvt_key keys[];
};

struct kvt_cuda {
	pthread_mutex_t lock; /* calls; the staging buffer */
	kvt_client *c;
	int device;
	bool host_direct;
	void *hbm; /* the daemon's pool, through IPC; NULL: none */
	uint8_t *staging;
	size_t staging_bytes;
	cudaEvent_t staging_free; /* recorded by its last user */
	cudaStream_t staging_user;
	bool staging_used;
	void **registered; /* host segments registered with CUDA */
	size_t nregistered, registered_cap;

	pthread_t thread;
	pthread_mutex_t jobs_lock;
	pthread_cond_t jobs_cond;
	struct job *head, **tail;
	size_t queued; /* jobs not done yet */
	bool stop;
	int async_rc;
	char errmsg[512];
};

static int fail(kvt_cuda *g, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->errmsg, sizeof(g->errmsg), fmt, ap);
	va_end(ap);
	return rc;
}

static int cuda_fail(kvt_cuda *g, cudaError_t e, const char *what)
{
	return fail(g, e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO, "%s: %s",
		    what, cudaGetErrorString(e));
}

/* ---- host segments: registered as they are mapped ---- */

static void on_map(void *arg, void *base, size_t len)
{
	kvt_cuda *g = arg;

	if (g->nregistered == g->registered_cap) {
		size_t cap = g->registered_cap ? 2 * g->registered_cap : 16;
		void **r = realloc(g->registered, cap * sizeof(*r));

		if (!r)
			return; /* unregistered: copies still work, slower */
		g->registered = r;
		g->registered_cap = cap;
	}
	cudaSetDevice(g->device);
	if (cudaHostRegister(base, len, cudaHostRegisterPortable | cudaHostRegisterMapped) == cudaSuccess)
		g->registered[g->nregistered++] = base;
	else
		cudaGetLastError();
}

static void unregister_all(kvt_cuda *g)
{
	cudaSetDevice(g->device);
	for (size_t i = 0; i < g->nregistered; i++)
		cudaHostUnregister(g->registered[i]);
	g->nregistered = 0;
}

/* ---- the completion thread ---- */

static void CUDART_CB stream_passed(void *arg)
{
	struct job *j = arg;
	kvt_cuda *g = j->g;

	/* No CUDA calls here, and nothing that blocks: hand it on. */
	pthread_mutex_lock(&g->jobs_lock);
	*g->tail = j;
	g->tail = &j->next;
	pthread_cond_broadcast(&g->jobs_cond);
	pthread_mutex_unlock(&g->jobs_lock);
}

static void *completer_main(void *arg)
{
	kvt_cuda *g = arg;

	pthread_mutex_lock(&g->jobs_lock);
	for (;;) {
		struct job *j = g->head;
		bool commit;
		int rc;

		if (!j) {
			if (g->stop)
				break;
			pthread_cond_wait(&g->jobs_cond, &g->jobs_lock);
			continue;
		}
		g->head = j->next;
		if (!g->head)
			g->tail = &g->head;
		pthread_mutex_unlock(&g->jobs_lock);
		commit = j->commit;
		rc = commit ? kvt_commit(g->c, &j->ns, j->keys, j->n) :
			      kvt_release(g->c, &j->lease);
		free(j);
		pthread_mutex_lock(&g->jobs_lock);
		if (rc < 0 && g->async_rc == 0) {
			g->async_rc = rc;
			snprintf(g->errmsg, sizeof(g->errmsg), "%s after the copy: %s",
				 commit ? "commit" : "release", kvt_errmsg(g->c));
		}
		g->queued--;
		pthread_cond_broadcast(&g->jobs_cond);
	}
	pthread_mutex_unlock(&g->jobs_lock);
	return NULL;
}

/* Queues j to run when stream gets here; on failure runs it now. */
static int after_stream(kvt_cuda *g, struct job *j, cudaStream_t stream)
{
	cudaError_t e;

	j->g = g;
	pthread_mutex_lock(&g->jobs_lock);
	g->queued++;
	pthread_mutex_unlock(&g->jobs_lock);
	e = cudaLaunchHostFunc(stream, stream_passed, j);
	if (e != cudaSuccess) {
		/* Finish here instead: commit only what surely was copied. */
		bool copied = cudaStreamSynchronize(stream) == cudaSuccess;

		if (!j->commit)
			kvt_release(g->c, &j->lease);
		else if (copied)
			kvt_commit(g->c, &j->ns, j->keys, j->n);
		else
			kvt_abort(g->c, &j->ns, j->keys, j->n);
		free(j);
		pthread_mutex_lock(&g->jobs_lock);
		g->queued--;
		pthread_mutex_unlock(&g->jobs_lock);
		return cuda_fail(g, e, "cudaLaunchHostFunc");
	}
	return 0;
}

/* ---- set up ---- */

int kvt_cuda_bind(kvt_client *c, int device, size_t staging_bytes,
		  kvt_cuda **out)
{
	struct cudaDeviceProp prop;
	kvt_cuda *g = calloc(1, sizeof(*g));
	int ats = 0, host_ptr = 0;
	const char *env = getenv("KVTIER_HOST_DIRECT");
	cudaError_t e;
	int rc;

	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->jobs_lock, NULL);
	pthread_cond_init(&g->jobs_cond, NULL);
	g->tail = &g->head;
	g->c = c;
	g->device = device;
	g->staging_bytes = staging_bytes ? staging_bytes : KVT_CUDA_STAGING_DEFAULT;
	if ((e = cudaSetDevice(device)) != cudaSuccess ||
	    (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
	    (e = cudaMalloc((void **)&g->staging, g->staging_bytes)) != cudaSuccess ||
	    (e = cudaEventCreateWithFlags(&g->staging_free, cudaEventDisableTiming)) != cudaSuccess) {
		rc = e == cudaErrorMemoryAllocation ? -ENOMEM : -ENODEV;
		cudaFree(g->staging);
		free(g);
		return rc;
	}
	cudaDeviceGetAttribute(&ats, cudaDevAttrPageableMemoryAccessUsesHostPageTables, device);
	cudaDeviceGetAttribute(&host_ptr, cudaDevAttrCanUseHostPointerForRegisteredMem, device);
	/* In place needs the host pointer to be the device's too. */
	g->host_direct = host_ptr && (env ? strcmp(env, "1") == 0 : ats == 1);
	if (pthread_create(&g->thread, NULL, completer_main, g) != 0) {
		cudaEventDestroy(g->staging_free);
		cudaFree(g->staging);
		free(g);
		return -EAGAIN;
	}
	kvt_set_gpu(c, (const uint8_t *)prop.uuid.bytes);
	kvt_set_segment_hooks(c, on_map, NULL, g);
	*out = g;
	return 0;
}

int kvt_cuda_attach(kvt_cuda *g, const char *client_name)
{
	uint8_t ipc[64];
	uint64_t bytes;
	cudaIpcMemHandle_t h;
	cudaError_t e;
	int rc = kvt_attach(g->c, client_name);

	if (rc < 0)
		return fail(g, rc, "%s", kvt_errmsg(g->c));
	if (kvt_hbm_pool(g->c, ipc, &bytes) < 0)
		return 0; /* no pool on this GPU: the host tier serves */
	memcpy(&h, ipc, sizeof(h));
	cudaSetDevice(g->device);
	e = cudaIpcOpenMemHandle(&g->hbm, h, cudaIpcMemLazyEnablePeerAccess);
	if (e != cudaSuccess) {
		g->hbm = NULL;
		return cuda_fail(g, e, "cannot open the daemon's hbm pool (cudaIpcOpenMemHandle)");
	}
	kvt_set_hbm_base(g->c, g->hbm);
	return 0;
}

/* ---- moving pages ---- */

/* The staging buffer, in stream order after its last user. */
static void staging_take(kvt_cuda *g, cudaStream_t stream)
{
	if (g->staging_used && g->staging_user != stream)
		cudaStreamWaitEvent(stream, g->staging_free, 0);
}

static void staging_give(kvt_cuda *g, cudaStream_t stream)
{
	cudaEventRecord(g->staging_free, stream);
	g->staging_user = stream;
	g->staging_used = true;
}

static int kernel_rc(kvt_cuda *g, int rc, const char *what)
{
	if (rc == -EINVAL)
		return fail(g, rc, "%s: a block id is past the cache or a page is not 16-byte aligned", what);
	if (rc < 0)
		return cuda_fail(g, cudaGetLastError(), what);
	return 0;
}

/* Moves n pages between cache blocks ids and pages (host or device
 * addresses; device: already readable by kernels). to_pages: offload. */
static int move(kvt_cuda *g, const struct kvt_kv_layout *l, const uint32_t *ids,
		void **pages, bool device, size_t n, bool to_pages,
		cudaStream_t stream)
{
	uint64_t pb = kvt_kv_page_bytes(l);
	size_t per = g->staging_bytes / pb;
	void *staged[KVT_KV_BATCH];
	cudaError_t e = cudaSuccess;
	int rc;

	if (device || g->host_direct) {
		rc = to_pages ? kvt_kv_gather_cuda(l, ids, pages, (uint32_t)n, stream) :
				kvt_kv_scatter_cuda(l, ids, (const void *const *)pages,
						    (uint32_t)n, stream);
		return kernel_rc(g, rc, to_pages ? "gather" : "scatter");
	}
	if (per == 0)
		return fail(g, -EINVAL, "a page (%llu bytes) is larger than the staging buffer (%zu)",
			    (unsigned long long)pb, g->staging_bytes);
	if (per > KVT_KV_BATCH)
		per = KVT_KV_BATCH;
	staging_take(g, stream);
	for (size_t done = 0; done < n && e == cudaSuccess;) {
		size_t k = n - done < per ? n - done : per;

		for (size_t i = 0; i < k; i++)
			staged[i] = g->staging + i * pb;
		for (size_t i = 0; !to_pages && i < k && e == cudaSuccess; i++)
			e = cudaMemcpyAsync(staged[i], pages[done + i], pb,
					    cudaMemcpyHostToDevice, stream);
		if (e != cudaSuccess)
			break;
		rc = to_pages ? kvt_kv_gather_cuda(l, ids + done, staged, (uint32_t)k, stream) :
				kvt_kv_scatter_cuda(l, ids + done, (const void *const *)staged,
						    (uint32_t)k, stream);
		if (rc < 0) {
			staging_give(g, stream);
			return kernel_rc(g, rc, to_pages ? "gather" : "scatter");
		}
		for (size_t i = 0; to_pages && i < k && e == cudaSuccess; i++)
			e = cudaMemcpyAsync(pages[done + i], staged[i], pb,
					    cudaMemcpyDeviceToHost, stream);
		done += k;
	}
	staging_give(g, stream);
	return e == cudaSuccess ? 0 : cuda_fail(g, e, "cudaMemcpyAsync");
}

int kvt_cuda_offload(kvt_cuda *g, const struct kvt_namespace *ns,
		     const struct kvt_kv_layout *layout,
		     const uint32_t *block_ids, const struct kvt_key *keys,
		     const struct kvt_slot *slots, size_t n,
		     cudaStream_t stream)
{
	struct job *j = malloc(sizeof(*j) + n * sizeof(j->keys[0]));
	uint32_t *ids = malloc((n + 1) * sizeof(*ids));
	void **pages = malloc((n + 1) * sizeof(*pages));
	size_t m = 0;
	int rc = 0;

	if (!j || !ids || !pages) {
		rc = fail(g, -ENOMEM, "out of memory");
		goto out;
	}
	if (kvt_kv_page_bytes(layout) != ns->page_bytes) {
		rc = fail(g, -EINVAL, "the layout's page is %llu bytes, the namespace's %llu",
			  (unsigned long long)kvt_kv_page_bytes(layout),
			  (unsigned long long)ns->page_bytes);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (slots[i].state != KVT_SLOT_RESERVED)
			continue;
		ids[m] = block_ids[i];
		pages[m] = slots[i].page;
		j->keys[m++] = keys[i];
	}
	if (m == 0)
		goto out;
	pthread_mutex_lock(&g->lock);
	cudaSetDevice(g->device);
	rc = move(g, layout, ids, pages, false, m, true, stream);
	pthread_mutex_unlock(&g->lock);
	if (rc < 0) {
		/* Copies already queued must not land in freed slots. */
		cudaStreamSynchronize(stream);
		kvt_abort(g->c, ns, j->keys, m);
		goto out;
	}
	j->commit = true;
	j->ns = *ns;
	j->n = m;
	rc = after_stream(g, j, stream);
	j = NULL;
out:
	free(j);
	free(ids);
	free(pages);
	return rc;
}

int kvt_cuda_onload(kvt_cuda *g, const struct kvt_kv_layout *layout,
		    const uint32_t *block_ids, struct kvt_lease *lease,
		    cudaStream_t stream)
{
	struct job *j = calloc(1, sizeof(*j));
	size_t n = lease->count, nh = 0, nd = 0;
	uint32_t *ids = malloc((2 * n + 1) * sizeof(*ids));
	void **pages = malloc((2 * n + 1) * sizeof(*pages));
	int rc = 0;

	if (!j || !ids || !pages) {
		rc = fail(g, -ENOMEM, "out of memory");
		kvt_release(g->c, lease);
		goto out;
	}
	j->lease = *lease;
	memset(lease, 0, sizeof(*lease));
	/* Host pages first in the arrays, hbm pages (device) after them. */
	for (size_t i = 0; i < n; i++) {
		size_t at = j->lease.hbm[i] ? n + nd++ : nh++;

		ids[at] = block_ids[i];
		pages[at] = (void *)j->lease.pages[i];
	}
	pthread_mutex_lock(&g->lock);
	cudaSetDevice(g->device);
	if (nh)
		rc = move(g, layout, ids, pages, false, nh, false, stream);
	if (rc == 0 && nd)
		rc = move(g, layout, ids + n, pages + n, true, nd, false, stream);
	pthread_mutex_unlock(&g->lock);
	if (n == 0 || rc < 0) {
		/* Nothing may still be reading the pages: wait, then release. */
		cudaStreamSynchronize(stream);
		kvt_release(g->c, &j->lease);
		goto out;
	}
	j->commit = false;
	rc = after_stream(g, j, stream);
	j = NULL;
out:
	free(j);
	free(ids);
	free(pages);
	return rc;
}

int kvt_cuda_sync(kvt_cuda *g)
{
	int rc;

	pthread_mutex_lock(&g->jobs_lock);
	while (g->queued)
		pthread_cond_wait(&g->jobs_cond, &g->jobs_lock);
	rc = g->async_rc;
	g->async_rc = 0;
	pthread_mutex_unlock(&g->jobs_lock);
	return rc;
}

bool kvt_cuda_host_direct(const kvt_cuda *g)
{
	return g->host_direct;
}

bool kvt_cuda_hbm_open(const kvt_cuda *g)
{
	return g->hbm != NULL;
}

const char *kvt_cuda_errmsg(const kvt_cuda *g)
{
	return g->errmsg;
}

void kvt_cuda_close(kvt_cuda *g)
{
	if (!g)
		return;
	cudaSetDevice(g->device);
	cudaDeviceSynchronize();
	kvt_cuda_sync(g);
	pthread_mutex_lock(&g->jobs_lock);
	g->stop = true;
	pthread_cond_broadcast(&g->jobs_cond);
	pthread_mutex_unlock(&g->jobs_lock);
	pthread_join(g->thread, NULL);
	kvt_set_segment_hooks(g->c, NULL, NULL, NULL);
	kvt_set_hbm_base(g->c, NULL);
	if (g->hbm)
		cudaIpcCloseMemHandle(g->hbm);
	unregister_all(g);
	cudaEventDestroy(g->staging_free);
	cudaFree(g->staging);
	free(g->registered);
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->jobs_lock);
	pthread_cond_destroy(&g->jobs_cond);
	free(g);
}
