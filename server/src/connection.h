/*
 * connection: serves one client from accept to close.  Owns the protocol:
 * receive bytes, cut them into packets (framing), append each packet to
 * the data file (store), then send the file from offset 0 through the end
 * of that packet with sendfile(), without holding the lock.  Owns the
 * per-connection bounds too: packet length, the idle deadline (a packet
 * must complete within it, so trickling bytes does not keep a connection
 * alive) and the send timeout (a client that stops reading).
 */
#ifndef AESD_CONNECTION_H
#define AESD_CONNECTION_H

#include "framing.h"
#include "store.h"

#include <sys/socket.h>

struct connection_limits {
	size_t max_packet;
	unsigned idle_timeout_s;	/* 0: never */
	unsigned send_timeout_s;	/* 0: never */
};

/* Called at most once per connection, when the client has kept the
 * connection open without sending for after_ms: lets the caller treat it
 * as a long-lived connection from then on. */
struct connection_lingering {
	unsigned after_ms;
	void (*notify)(void *ctx);
	void *ctx;
};

/* Serves the connected, non-blocking socket fd until the client leaves, a
 * bound is hit, an error occurs or a stop is requested; closes fd.  The
 * framer is reset on return, so a worker reuses it for its next client.
 * lingering may be NULL. */
void connection_serve(int fd, const struct sockaddr_storage *peer,
		      struct store *store, struct framer *framer,
		      const struct connection_limits *limits,
		      const struct connection_lingering *lingering);

#endif
