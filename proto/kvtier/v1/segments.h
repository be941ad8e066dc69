/*
 * The segment socket: how a worker gets the host tier's segments.
 *
 * Host segments have no name. A worker that holds a session (Attach) asks
 * the daemon for a segment's file descriptor over a second unix socket,
 * AttachEvent.host_segment_socket, of type SOCK_SEQPACKET: it connects,
 * sends one kvt_segment_request, and receives one kvt_segment_reply, with
 * the descriptor attached (SCM_RIGHTS) when status is 0; then the daemon
 * closes the connection. The daemon checks the caller's uid (SO_PEERCRED)
 * against the session's tenant and hands out only segments that hold that
 * tenant's blocks or a shared namespace's. The worker maps the descriptor
 * (MAP_SHARED, PROT_READ | PROT_WRITE, reply.bytes long) and closes it.
 *
 * A location (kvtier.v1.Location) names a segment and its generation: a
 * segment that passes to another tenant is made anew, with a higher
 * generation, and a mapping of an older generation is stale (it reads
 * zeros and writes go nowhere): ask again. The memfd is sealed against
 * shrinking and growing.
 *
 * Fields are in host byte order (both ends are on one machine). status is
 * 0 or a negative errno: -ENOENT (no such session for this uid, or no such
 * segment), -EACCES (another tenant's segment), -EINVAL (a malformed
 * request); message says why in words.
 */
#ifndef KVTIER_V1_SEGMENTS_H
#define KVTIER_V1_SEGMENTS_H

#include <stdint.h>

#define KVT_SEGMENT_WIRE_VERSION 1u
/* Appended to the gRPC unix socket's path. */
#define KVT_SEGMENT_SOCKET_SUFFIX ".segments"

struct kvt_segment_request {
	uint32_t version; /* KVT_SEGMENT_WIRE_VERSION */
	uint32_t segment;
	uint8_t session[16]; /* AttachEvent.session */
};

struct kvt_segment_reply {
	int32_t status;
	uint32_t segment;
	uint32_t generation;
	uint32_t reserved;
	uint64_t bytes;
	char message[200];
};

_Static_assert(sizeof(struct kvt_segment_request) == 24, "wire layout");
_Static_assert(sizeof(struct kvt_segment_reply) == 224, "wire layout");

#endif
