/* connection: one client's connection in a worker's event loop. */
#include "connection.h"

#include "log.h"
#include "mstime.h"

#include <errno.h>
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
static void log_client_error(const struct conn *c, const char *what)
{
	bool clients_doing = errno == ECONNRESET || errno == EPIPE ||
			     errno == ETIMEDOUT;

	log_errno_at(clients_doing ? LOG_INFO : LOG_ERR, "%s %s", what,
		     c->peer);
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
			log_client_error(c, "Cannot send the response to");
		return CONN_DONE;
	}
	c->sending = false;
	c->since_ms = now_ms();	/* the next packet is due from now */
	return CONN_WANT_READ;
}

static enum conn_want answer(struct conn *c, const struct conn_env *env,
			     struct byte_span packet)
{
	off_t end;

	if (store_append(env->store, packet.data, packet.len, &end) != 0)
		return CONN_DONE;
	c->sending = true;
	c->sent = 0;
	c->end = end;
	c->send_started_ms = now_ms();
	return send_response(c, env);
}

/* Appends and answers the packets in *input until it is used up, a
 * response has to wait for the client (the rest stays in *input), or the
 * connection must end. */
static enum conn_want take_input(struct conn *c, const struct conn_env *env,
				 struct byte_span *input)
{
	for (;;) {
		struct byte_span packet;
		enum conn_want want;

		switch (framer_next(&c->framer, input, &packet)) {
		case FRAMER_NEED_MORE:
			return CONN_WANT_READ;
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
		if (want != CONN_WANT_READ)
			return want;
	}
}

static void drop_unparsed(struct conn *c)
{
	free(c->unparsed);
	c->unparsed = NULL;
	c->unparsed_offset = c->unparsed_len = c->unparsed_cap = 0;
}

/* Keeps what is left of a receive buffer until the response is sent. */
static enum conn_want keep_unparsed(struct conn *c, struct byte_span rest)
{
	if (rest.len == 0)
		return CONN_WANT_WRITE;
	c->unparsed = malloc(rest.len);
	if (!c->unparsed) {
		log_msg(LOG_ERR, "Disconnecting %s: out of memory for %zu bytes it sent",
			c->peer, rest.len);
		return CONN_DONE;
	}
	memcpy(c->unparsed, rest.data, rest.len);
	c->unparsed_len = c->unparsed_cap = rest.len;
	return CONN_WANT_WRITE;
}

/* Serves the bytes kept while a response was under way. */
static enum conn_want take_unparsed(struct conn *c, const struct conn_env *env)
{
	struct byte_span input = { c->unparsed + c->unparsed_offset,
				   c->unparsed_len };
	enum conn_want want;

	if (c->unparsed_len == 0)
		return CONN_WANT_READ;
	want = take_input(c, env, &input);
	if (want == CONN_WANT_WRITE && input.len > 0) {
		c->unparsed_offset = (size_t)(input.data - c->unparsed);
		c->unparsed_len = input.len;
		return want;
	}
	drop_unparsed(c);
	return want;
}

/* Idle at a packet boundary: a split packet's buffer is not kept, so that
 * an idle connection costs only its struct. */
static enum conn_want settle(struct conn *c, enum conn_want want)
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
		struct byte_span input = { env->buffer, (size_t)n };
		enum conn_want want;

		if (n == 0)
			return CONN_DONE;	/* the client has finished */
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return CONN_WANT_READ;
		if (n < 0) {
			log_client_error(c, "Cannot receive from");
			return CONN_DONE;
		}
		c->heard_from = true;
		want = take_input(c, env, &input);
		if (want == CONN_WANT_WRITE)
			return keep_unparsed(c, input);
		/* A short read has usually emptied the socket: epoll says
		 * when there is more, which costs less than a read that
		 * finds nothing. */
		if (want == CONN_DONE || (size_t)n < env->buffer_size)
			return settle(c, want);
	}
	return settle(c, CONN_WANT_READ);
}

enum conn_want conn_on_writable(struct conn *c, const struct conn_env *env)
{
	enum conn_want want = send_response(c, env);

	if (want != CONN_WANT_READ)
		return want;
	return settle(c, take_unparsed(c, env));
}

long long conn_deadline(const struct conn *c,
			const struct connection_limits *limits)
{
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
	close(c->fd);
	c->fd = -1;
	framer_free(&c->framer);
	drop_unparsed(c);
	log_msg(LOG_INFO, "Closed connection from %s", c->peer);
}
