/*
 * The hbm tier's device side on CUDA: pools from cudaMalloc exported with
 * cudaIpcGetMemHandle, host segments registered with cudaHostRegister, and
 * host-to-pool copies on one stream per pool, driven by one thread that
 * batches what is queued (issue every copy, then wait for each stream) so
 * that the engine never waits on the GPU.
 */
#include "gpu.h"
#include "hbm.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool_impl {
	cudaStream_t stream;
	bool used; /* has copies in the batch being waited for */
};

struct copy_job {
	struct copy_job *next;
	struct kvt_hbm_pool *pool;
	void *dst;
	const void *src;
	uint64_t len;
	kvt_hbm_done done;
	void *arg;
	int rc;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool running, stop;
	int pools, next_device;
	struct copy_job *head, **tail;
	uint64_t submitted, completed;
} cu = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static int cuda_fail(cudaError_t rc, char *err, size_t len, const char *what,
		     int device)
{
	snprintf(err, len, "GPU %d: %s: %s", device, what, cudaGetErrorString(rc));
	return rc == cudaErrorMemoryAllocation ? -ENOMEM : -EIO;
}

static void run_batch(struct copy_job *jobs)
{
	for (struct copy_job *j = jobs; j; j = j->next) {
		struct pool_impl *p = j->pool->impl;

		cudaSetDevice(j->pool->device);
		if (cudaMemcpyAsync(j->dst, j->src, j->len, cudaMemcpyHostToDevice,
				    p->stream) != cudaSuccess)
			j->rc = -EIO;
		p->used = true;
	}
	/* One wait per stream; a failed wait fails that stream's copies. */
	for (struct copy_job *j = jobs; j; j = j->next) {
		struct pool_impl *p = j->pool->impl;

		if (p->used) {
			cudaSetDevice(j->pool->device);
			if (cudaStreamSynchronize(p->stream) != cudaSuccess)
				for (struct copy_job *k = j; k; k = k->next)
					if (k->pool == j->pool)
						k->rc = -EIO;
			p->used = false;
		}
	}
	while (jobs) {
		struct copy_job *j = jobs;

		jobs = j->next;
		j->done(j->arg, j->rc);
		free(j);
	}
}

static void *copier_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&cu.lock);
	while (!cu.stop || cu.head) {
		struct copy_job *batch = cu.head;
		uint64_t n = 0;

		if (!batch) {
			pthread_cond_wait(&cu.cond, &cu.lock);
			continue;
		}
		cu.head = NULL;
		cu.tail = &cu.head;
		pthread_mutex_unlock(&cu.lock);
		for (struct copy_job *j = batch; j; j = j->next)
			n++;
		run_batch(batch);
		pthread_mutex_lock(&cu.lock);
		cu.completed += n;
		pthread_cond_broadcast(&cu.cond);
	}
	pthread_mutex_unlock(&cu.lock);
	return NULL;
}

static int hbm_open(void *ctx, int device, uint64_t bytes,
		    struct kvt_hbm_pool *pool, char *err, size_t errlen)
{
	struct pool_impl *p = calloc(1, sizeof(*p));
	struct cudaDeviceProp prop;
	cudaIpcMemHandle_t ipc;
	cudaError_t rc;
	int count = 0;

	(void)ctx;
	memset(pool, 0, sizeof(*pool));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&cu.lock);
	if (device < 0)
		device = cu.next_device;
	pthread_mutex_unlock(&cu.lock);
	if ((rc = cudaGetDeviceCount(&count)) != cudaSuccess || device >= count) {
		free(p);
		snprintf(err, errlen, "no GPU %d (%s)", device,
			 rc != cudaSuccess ? cudaGetErrorString(rc) :
			 count == 1 ? "1 device" : "fewer devices");
		return -ENODEV;
	}
	pool->device = device;
	if ((rc = cudaSetDevice(device)) != cudaSuccess ||
	    (rc = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) {
		free(p);
		return cuda_fail(rc, err, errlen, "cannot use the device", device);
	}
	memcpy(pool->uuid, prop.uuid.bytes, KVT_GPU_UUID_BYTES);
	if ((rc = cudaMalloc(&pool->base, bytes)) != cudaSuccess) {
		free(p);
		return cuda_fail(rc, err, errlen, "cannot allocate the pool", device);
	}
	if ((rc = cudaIpcGetMemHandle(&ipc, pool->base)) != cudaSuccess ||
	    (rc = cudaStreamCreateWithFlags(&p->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		cudaFree(pool->base);
		free(p);
		return cuda_fail(rc, err, errlen, "cannot export the pool", device);
	}
	memcpy(pool->ipc, &ipc, KVT_HBM_IPC_BYTES);
	pool->bytes = bytes;
	pool->impl = p;

	pthread_mutex_lock(&cu.lock);
	cu.next_device = device + 1;
	if (!cu.running) {
		cu.tail = &cu.head;
		cu.stop = false;
		if (pthread_create(&cu.thread, NULL, copier_main, NULL) != 0) {
			pthread_mutex_unlock(&cu.lock);
			cudaStreamDestroy(p->stream);
			cudaFree(pool->base);
			free(p);
			snprintf(err, errlen, "cannot start the copy thread");
			return -EAGAIN;
		}
		cu.running = true;
	}
	cu.pools++;
	pthread_mutex_unlock(&cu.lock);
	return 0;
}

static void hbm_close(void *ctx, struct kvt_hbm_pool *pool)
{
	struct pool_impl *p = pool->impl;
	bool join;

	(void)ctx;
	if (!p)
		return;
	pthread_mutex_lock(&cu.lock);
	while (cu.completed < cu.submitted)
		pthread_cond_wait(&cu.cond, &cu.lock);
	join = --cu.pools == 0;
	if (join) {
		cu.stop = true;
		cu.next_device = 0;
		pthread_cond_broadcast(&cu.cond);
	}
	pthread_mutex_unlock(&cu.lock);
	if (join) {
		pthread_join(cu.thread, NULL);
		cu.running = false;
	}
	cudaSetDevice(pool->device);
	cudaStreamDestroy(p->stream);
	cudaFree(pool->base);
	free(p);
	pool->impl = NULL;
}

static int hbm_host_register(void *ctx, void *base, uint64_t len)
{
	(void)ctx;
	return cudaHostRegister(base, len, cudaHostRegisterPortable) == cudaSuccess ? 0 : -EIO;
}

static void hbm_host_unregister(void *ctx, void *base)
{
	(void)ctx;
	cudaHostUnregister(base);
}

static int hbm_copy_in(void *ctx, struct kvt_hbm_pool *pool, uint64_t off,
		       const void *src, uint64_t len, kvt_hbm_done done,
		       void *arg)
{
	struct copy_job *j = malloc(sizeof(*j));

	(void)ctx;
	if (!j)
		return -ENOMEM;
	*j = (struct copy_job){ NULL, pool, (char *)pool->base + off, src, len, done, arg, 0 };
	pthread_mutex_lock(&cu.lock);
	*cu.tail = j;
	cu.tail = &j->next;
	cu.submitted++;
	pthread_cond_broadcast(&cu.cond);
	pthread_mutex_unlock(&cu.lock);
	return 0;
}

static const struct kvt_hbm_ops cuda_ops = {
	hbm_open, hbm_close, hbm_host_register, hbm_host_unregister,
	hbm_copy_in, NULL,
};

const struct kvt_hbm_ops *kvt_gpu_hbm_ops(void)
{
	return &cuda_ops;
}
