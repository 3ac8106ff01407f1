/*
 * connection: one client's connection, served by a worker's event loop
 * with non-blocking I/O.  Owns the protocol (bytes cut into packets, each
 * appended, then the file through that packet sent back with sendfile(),
 * continued when the socket is writable), what a connection holds while it
 * waits (for the client's next bytes, for room to send, for the data
 * file's lock), and its own bounds: packet length, the packet deadline and
 * the response's pace.  Logs "Accepted" and "Closed" once each.
 */
#ifndef AESD_CONNECTION_H
#define AESD_CONNECTION_H

#include "framing.h"
#include "listener.h"
#include "store.h"

#include <stdbool.h>
#include <sys/types.h>

struct connection_limits {
	size_t max_packet;
	unsigned idle_timeout_s;	/* 0: never */
	unsigned send_timeout_s;	/* 0: never */
};

/* What serving a connection needs from its worker. */
struct conn_env {
	struct store *store;
	const struct connection_limits *limits;
	char *buffer;		/* the worker's receive buffer */
	size_t buffer_size;
	bool appends_wait;	/* packets wait for the lock: new ones queue
				 * behind them */
};

/* What the connection waits for next. */
enum conn_want {
	CONN_WANT_READ,		/* the client's next bytes */
	CONN_WANT_WRITE,	/* room to send the rest of a response */
	CONN_WANT_LOCK,		/* the data file's lock, for its next packet */
	CONN_DONE,		/* nothing: close it */
};

struct conn {
	int fd;
	bool heard_from;	/* has sent at least one byte */
	bool sending;		/* a response is under way */
	bool appending;		/* its next packet waits for the lock */
	struct framer framer;	/* the packet being received */
	char *unparsed;		/* read, not yet stored: it waits for a
				 * response to finish or for the lock */
	size_t unparsed_offset, unparsed_len, unparsed_cap;
	off_t sent, end;	/* the response: bytes [sent, end) still to go */
	long long since_ms;	/* accepted, or its last response sent */
	long long send_started_ms;
	char peer[PEER_NAME_LEN];
};

/* Takes over the accepted, non-blocking socket fd and logs "Accepted". */
void conn_open(struct conn *c, int fd, const char *peer, size_t max_packet,
	       long long now);

/* The socket is readable (or writable), or the lock may be free: serve
 * what can be served now. */
enum conn_want conn_on_readable(struct conn *c, const struct conn_env *env);
enum conn_want conn_on_writable(struct conn *c, const struct conn_env *env);
enum conn_want conn_retry_append(struct conn *c, const struct conn_env *env);

/* When the connection must have made progress (mstime), 0: never; and the
 * log line for missing it. */
long long conn_deadline(const struct conn *c,
			const struct connection_limits *limits);
void conn_log_timeout(const struct conn *c,
		      const struct connection_limits *limits);

/* Closes the socket, frees the buffers and logs "Closed". */
void conn_close(struct conn *c);

/* Waiting for a packet with none of it received: what an idle client
 * costs is this struct and its socket. */
static inline bool conn_is_idle(const struct conn *c)
{
	return !c->sending && !c->appending && c->unparsed_len == 0 &&
	       framer_pending(&c->framer) == 0;
}

/* Bytes the client sent that are not stored yet. */
static inline size_t conn_unstored(const struct conn *c)
{
	return framer_pending(&c->framer) + c->unparsed_len;
}

/* Memory the connection holds for them (a packet already stored is let
 * go at once, so it is never counted). */
static inline size_t conn_buffered(const struct conn *c)
{
	return c->framer.partial_cap + c->unparsed_cap;
}

#endif
