/* connection: one client's connection in a worker's event loop. */
#include "connection.h"

#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

/* Largest chunk handed to one sendfile() call (Linux caps it lower). */
#define SENDFILE_CHUNK (1L << 30)
/* After the send timeout, a response must average this many bytes/s. */
#define MIN_SEND_RATE (64 * 1024)
/* Reads in a row for one readiness event while the buffer comes back
 * full, so that one fast sender cannot keep the others waiting. */
#define READS_PER_EVENT 4

void conn_open(struct conn *c, int fd, const char *peer, size_t max_packet,
	       long long now)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->since_ms = now;
	framer_init(&c->framer, max_packet);
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	log_msg(LOG_INFO, "Accepted connection from %s", c->peer);
}

/* A client that resets or leaves is its own business, not the server's
 * error: logged below LOG_ERR, so no client can fill the error log. */
static void log_client_error(const struct conn *c, const char *what,
			     const char *call)
{
	bool clients_doing = errno == ECONNRESET || errno == EPIPE ||
			     errno == ETIMEDOUT;

	log_errno_at(clients_doing ? LOG_INFO : LOG_ERR, "%s %s: %s", what,
		     c->peer, call);
}

/* Sends what the socket takes of the response under way. */
static enum conn_want send_response(struct conn *c, const struct conn_env *env)
{
	while (c->sent < c->end) {
		off_t left = c->end - c->sent;
		ssize_t n = sendfile(c->fd, env->store->fd, &c->sent,
				     (size_t)(left < SENDFILE_CHUNK ?
					      left : SENDFILE_CHUNK));

		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n < 0 && errno == EAGAIN)
			return CONN_WANT_WRITE;
		if (n == 0)
			log_msg(LOG_ERR, "Data file ended at %lld, before %lld",
				(long long)c->sent, (long long)c->end);
		else
			log_client_error(c, "Cannot send the response to", "sendfile");
		return CONN_DONE;
	}
	c->sending = false;
	c->since_ms = now_ms();	/* the next packet is due from now */
	return CONN_WANT_READ;
}

/* Appends the packet and starts its answer. */
static enum conn_want answer(struct conn *c, const struct conn_env *env,
			     struct byte_span packet)
{
	off_t end;

	if (env->appends_wait)
		return CONN_WANT_LOCK;
	switch (store_append(env->store, packet.data, packet.len, &end)) {
	case STORE_FAILED:
		return CONN_DONE;
	case STORE_BUSY:
		return CONN_WANT_LOCK;
	case STORE_OK:
		break;
	}
	/* Stored: a buffer it was put together in is no longer needed. */
	if (c->framer.packet_in_partial)
		framer_reset(&c->framer);
	c->sending = true;
	c->sent = 0;
	c->end = end;
	c->send_started_ms = now_ms();
	return send_response(c, env);
}

static void drop_unparsed(struct conn *c)
{
	free(c->unparsed);
	c->unparsed = NULL;
	c->unparsed_offset = c->unparsed_len = c->unparsed_cap = 0;
}

static bool in_unparsed(const struct conn *c, struct byte_span s)
{
	return c->unparsed && s.data >= c->unparsed &&
	       s.data + s.len <= c->unparsed + c->unparsed_cap;
}

/* Keeps first (a packet that waits for the lock, or nothing) followed by
 * rest, the input not yet parsed, until the connection may go on; in place
 * when they are already what it keeps, else in a copy.  Returns want, or
 * CONN_DONE without the memory for it. */
static enum conn_want keep(struct conn *c, struct byte_span first,
			   struct byte_span rest, enum conn_want want)
{
	size_t len = first.len + rest.len;
	char *copy;

	if (len == 0) {
		if (c->unparsed)
			drop_unparsed(c);
		return want;
	}
	if (in_unparsed(c, rest) &&
	    (first.len == 0 || first.data + first.len == rest.data)) {
		c->unparsed_offset = (size_t)((first.len ? first.data : rest.data) -
					      c->unparsed);
		c->unparsed_len = len;
		return want;
	}
	copy = malloc(len);
	if (!copy) {
		log_msg(LOG_ERR, "Disconnecting %s: out of memory for %zu bytes it sent",
			c->peer, len);
		return CONN_DONE;
	}
	if (first.len)
		memcpy(copy, first.data, first.len);
	memcpy(copy + first.len, rest.data, rest.len);
	drop_unparsed(c);
	c->unparsed = copy;
	c->unparsed_len = c->unparsed_cap = len;
	return want;
}

/* Appends and answers the packets in input until it is used up, or a
 * response has to wait for the client or a packet for the lock (what is
 * left is kept), or the connection must end. */
static enum conn_want take_input(struct conn *c, const struct conn_env *env,
				 struct byte_span input)
{
	static const struct byte_span nothing;

	for (;;) {
		struct byte_span packet;
		enum conn_want want;

		switch (framer_next(&c->framer, &input, &packet)) {
		case FRAMER_NEED_MORE:
			return keep(c, nothing, nothing, CONN_WANT_READ);
		case FRAMER_TOO_LONG:
			log_msg(LOG_WARNING,
				"Disconnecting %s: packet longer than %zu bytes, nothing stored",
				c->peer, env->limits->max_packet);
			return CONN_DONE;
		case FRAMER_NO_MEMORY:
			log_msg(LOG_ERR,
				"Disconnecting %s: out of memory for a %zu-byte packet",
				c->peer, framer_pending(&c->framer));
			return CONN_DONE;
		case FRAMER_PACKET:
			break;
		}
		want = answer(c, env, packet);
		if (want == CONN_WANT_LOCK) {
			want = keep(c, packet, input, want);
			framer_reset(&c->framer);	/* the packet is kept */
			c->appending = want == CONN_WANT_LOCK;
			return want;
		}
		if (want != CONN_WANT_READ)
			return keep(c, nothing, input, want);
	}
}

/* Idle at a packet boundary: a split packet's buffer is not kept, so that
 * an idle connection costs only its struct. */
static enum conn_want release_when_idle(struct conn *c, enum conn_want want)
{
	if (want == CONN_WANT_READ && conn_is_idle(c) && c->framer.partial_cap)
		framer_release(&c->framer);
	return want;
}

enum conn_want conn_on_readable(struct conn *c, const struct conn_env *env)
{
	int reads;

	for (reads = 0; reads < READS_PER_EVENT; reads++) {
		ssize_t n = recv(c->fd, env->buffer, env->buffer_size, 0);
		enum conn_want want;

		if (n == 0)
			return CONN_DONE;	/* the client has finished */
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return CONN_WANT_READ;
		if (n < 0) {
			log_client_error(c, "Cannot receive from", "recv");
			return CONN_DONE;
		}
		c->heard_from = true;
		want = take_input(c, env, (struct byte_span){ env->buffer,
							      (size_t)n });
		/* A short read has usually emptied the socket: epoll says
		 * when there is more, which costs less than a read that
		 * finds nothing. */
		if (want != CONN_WANT_READ || (size_t)n < env->buffer_size)
			return release_when_idle(c, want);
	}
	return release_when_idle(c, CONN_WANT_READ);
}

/* Serves the bytes kept while a response or the lock was waited for. */
static enum conn_want take_unparsed(struct conn *c, const struct conn_env *env)
{
	if (c->unparsed_len == 0)
		return CONN_WANT_READ;
	return take_input(c, env, (struct byte_span){
		c->unparsed + c->unparsed_offset, c->unparsed_len });
}

enum conn_want conn_on_writable(struct conn *c, const struct conn_env *env)
{
	enum conn_want want = send_response(c, env);

	if (want != CONN_WANT_READ)
		return want;
	return release_when_idle(c, take_unparsed(c, env));
}

enum conn_want conn_retry_append(struct conn *c, const struct conn_env *env)
{
	c->appending = false;
	return release_when_idle(c, take_unparsed(c, env));
}

long long conn_deadline(const struct conn *c,
			const struct connection_limits *limits)
{
	if (c->appending)
		return 0;	/* the wait is the server's, not the client's */
	if (!c->sending)
		return ms_after(c->since_ms, limits->idle_timeout_s);
	if (limits->send_timeout_s == 0)
		return 0;
	return c->send_started_ms + limits->send_timeout_s * 1000LL +
	       (long long)(c->sent / (MIN_SEND_RATE / 1000));
}

void conn_log_timeout(const struct conn *c,
		      const struct connection_limits *limits)
{
	if (c->sending)
		log_msg(LOG_WARNING,
			"Disconnecting %s: it read %lld of %lld bytes of its response in %lld s",
			c->peer, (long long)c->sent, (long long)c->end,
			(now_ms() - c->send_started_ms) / 1000);
	else
		log_msg(LOG_WARNING,
			"Disconnecting %s: no complete packet for %u s",
			c->peer, limits->idle_timeout_s);
}

void conn_close(struct conn *c)
{
	size_t pending = framer_pending(&c->framer);

	if (pending > 0)
		log_msg(LOG_NOTICE,
			"Discarding %zu bytes from %s after its last newline",
			pending, c->peer);
	if (c->unparsed_len > 0)
		log_msg(LOG_NOTICE,
			"Discarding %zu bytes from %s that were never stored",
			c->unparsed_len, c->peer);
	close(c->fd);
	c->fd = -1;
	framer_free(&c->framer);
	drop_unparsed(c);
	log_msg(LOG_INFO, "Closed connection from %s", c->peer);
}
