/*
 * connection: one turn of a client's connection in a worker, from the
 * moment the parent hands it over until it is idle again at a packet
 * boundary (handed back) or finished (closed).  Owns the protocol: receive
 * bytes, cut them into packets (framing), append each packet to the data
 * file (store), then send the file from offset 0 through the end of that
 * packet with sendfile(), without holding the lock.  Owns the per-packet
 * bounds too: packet length, the packet deadline (a packet must complete
 * within the idle timeout, so trickling bytes does not keep a worker) and
 * the response's pace (after the send timeout it must average at least
 * 64 KiB/s, so a client that reads a byte now and then cannot keep one).
 */
#ifndef AESD_CONNECTION_H
#define AESD_CONNECTION_H

#include "framing.h"
#include "store.h"

struct connection_limits {
	size_t max_packet;
	unsigned idle_timeout_s;	/* 0: never */
	unsigned send_timeout_s;	/* 0: never */
};

enum turn_end {
	TURN_IDLE,	/* at a packet boundary, responses sent: hand it back */
	TURN_CLOSE,	/* done: the client left, a bound was hit, or a stop */
};

/* What a turn works with, besides the connection. */
struct turn_context {
	struct store *store;
	struct framer *framer;	/* reset on return, for the next turn */
	const struct connection_limits *limits;
	int stop_fd;	/* any event on it stops the turn, as a signal does */
};

/* Serves the connected, non-blocking socket fd for one turn and closes
 * this process's copy of it.  The first packet is due by deadline_ms
 * (mstime; 0: none).  On TURN_CLOSE the connection has been shut down, so
 * the client sees the end at once. */
enum turn_end connection_serve_turn(int fd, const char *peer,
				    long long deadline_ms,
				    const struct turn_context *context);

#endif
