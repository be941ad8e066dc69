/*
 * The kvtier.v1.KvTier and grpc.health.v1.Health handlers: each unpacks its
 * request, validates every field at this boundary, calls the engine and
 * packs the reply. Engine errors (-errno) become gRPC status codes here, in
 * one table. Handlers run on completion-queue threads, concurrently.
 */
#ifndef KVT_RPC_H
#define KVT_RPC_H

#include <kvtier/version.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "reload.h"
#include "server.h"

struct kvt_daemon {
	struct kvt_engine *engine;
	struct kvt_server *server; /* set once the server runs */
	struct kvt_segsock *segsock; /* hands host segments to workers */
	struct kvt_lanes *lanes; /* sessions' fast lanes (lane.h) */
	struct kvt_reload *reload;
	_Atomic uint32_t max_keys; /* changes on reload */
	_Atomic uint32_t max_lanes; /* per tenant; changes on reload */
	_Atomic uint32_t max_sessions; /* the engine's bound, for messages */
	const char *shared_namespaces; /* comma-separated */
	uint64_t max_message_size;
	/* Longest a Lookup waits for the remote store, ns; 0: never asks. */
	uint64_t lookup_budget;
	time_t started;
	char metrics_address[96]; /* "http://HOST:PORT/metrics"; "": off */
	/* Set (release) once metrics_address is written: threads already
	 * serving (RPCs, /metrics itself) read it only after seeing this. */
	_Atomic bool metrics_published;
	char allocator[96];
	char cuda[160];
};

extern const struct kvt_method kvt_rpc_methods[];
extern const size_t kvt_rpc_nmethods;
/* Attach (a worker's session) and grpc.health.v1.Health/Watch. */
extern const struct kvt_stream_method *const kvt_rpc_streams[];
extern const size_t kvt_rpc_nstreams;

/* A packed kvtier.v1.StatsResponse in r, what the Stats RPC answers,
 * filled from the stats table (stats.c). all: every tenant and namespace
 * (admins); else only tenant's own and the namespaces it may see. */
grpc_status_code kvt_rpc_stats(struct kvt_daemon *d, bool all, uint32_t tenant,
			       struct kvt_reply *r);

/* The name a peer's tenant goes by, for messages. */
void kvt_rpc_peer_name(void *ctx, const struct kvt_peer *p, char *buf,
		       size_t len);

/* The server's draining hook: answers the Acquires still waiting. */
void kvt_rpc_draining(void *ctx);

/* The project version (meson.build), as kvtier/version.h has it. */
#define KVT_VERSION KVT_VERSION_STRING

#endif
