/* connection: one turn of a connection, in a worker. */
#include "connection.h"

#include "lifecycle.h"
#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

/* Big enough that a pipelined burst costs few recv() calls; pages are
 * touched only as far as data arrives. */
#define RECEIVE_BUFFER_SIZE 65536
/* Largest chunk handed to one sendfile() call (Linux caps it lower). */
#define SENDFILE_CHUNK (1L << 30)
/* After the send timeout, a response must average this many bytes/s. */
#define MIN_SEND_RATE (64 * 1024)
/* How long a worker waits for a client's next packet after answering one
 * before handing the connection back.  A client that sends its next packet
 * (or closes) as soon as it has read the answer then costs no trip through
 * the parent; one that stays quiet costs a worker only this long. */
#define NEXT_PACKET_GRACE_MS 2

enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_STOP };

struct client {
	int fd;
	const char *name;
	struct store *store;
	struct framer *framer;
	const struct connection_limits *limits;
	int stop_fd;
	long long deadline_ms;	/* for the packet being received; 0: none */
	bool answered;		/* sent a response in this turn */
	bool stopped;		/* by an event on stop_fd */
};

static char receive_buffer[RECEIVE_BUFFER_SIZE];

static bool stop_requested(const struct client *c)
{
	return c->stopped || lifecycle_stop_requested();
}

/* Waits for events on the client's socket until deadline_ms (0: none);
 * stop signals are let in only while waiting. */
static enum wait_result wait_until(struct client *c, short events,
				   long long deadline_ms)
{
	struct pollfd pfd[2] = { { .fd = c->fd, .events = events },
				 { .fd = c->stop_fd, .events = POLLIN } };

	for (;;) {
		struct timespec timeout, *tp = NULL;
		int n;

		if (stop_requested(c))
			return WAIT_STOP;
		if (deadline_ms) {
			long long left = deadline_ms - now_ms();

			if (left <= 0)
				return WAIT_TIMEOUT;
			timeout = ms_timespec(left);
			tp = &timeout;
		}
		n = ppoll(pfd, 2, tp, lifecycle_wait_mask());
		c->stopped = pfd[1].revents != 0;
		if (n > 0 && !c->stopped)
			return WAIT_READY;
		if (n < 0 && errno != EINTR) {
			log_errno("ppoll failed");
			return WAIT_STOP;
		}
	}
}

/* When a response that started at started_ms must have sent offset bytes:
 * the send timeout, then the minimum rate. */
static long long send_deadline(const struct client *c, long long started_ms,
			       off_t offset)
{
	unsigned timeout_s = c->limits->send_timeout_s;

	if (timeout_s == 0)
		return 0;
	return started_ms + timeout_s * 1000LL +
	       (long long)(offset / (MIN_SEND_RATE / 1000));
}

/* Sends bytes [0, end) of the data file; 0 when all were sent. */
static int send_file_prefix(struct client *c, off_t end)
{
	long long started_ms = now_ms();
	off_t offset = 0;

	while (offset < end) {
		off_t left = end - offset;
		ssize_t n = sendfile(c->fd, c->store->fd, &offset,
				     (size_t)(left < SENDFILE_CHUNK ?
					      left : SENDFILE_CHUNK));

		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n == 0) {
			log_msg(LOG_ERR, "Data file ended at %lld, before %lld",
				(long long)offset, (long long)end);
			return -1;
		}
		if (errno != EAGAIN) {
			log_errno("Cannot send response to %s", c->name);
			return -1;
		}
		switch (wait_until(c, POLLOUT,
				   send_deadline(c, started_ms, offset))) {
		case WAIT_READY:
			break;
		case WAIT_TIMEOUT:
			log_msg(LOG_WARNING,
				"Disconnecting %s: it read %lld of %lld bytes of its response in %lld s",
				c->name, (long long)offset, (long long)end,
				(now_ms() - started_ms) / 1000);
			return -1;
		case WAIT_STOP:
			return -1;
		}
	}
	return 0;
}

/* Appends and answers every complete packet in input; 0 to go on. */
static int handle_input(struct client *c, struct byte_span input)
{
	struct byte_span packet;
	off_t end;

	for (;;) {
		switch (framer_next(c->framer, &input, &packet)) {
		case FRAMER_NEED_MORE:
			return 0;
		case FRAMER_TOO_LONG:
			log_msg(LOG_WARNING,
				"Disconnecting %s: packet longer than %zu bytes, nothing stored",
				c->name, c->limits->max_packet);
			return -1;
		case FRAMER_NO_MEMORY:
			log_msg(LOG_ERR,
				"Disconnecting %s: out of memory for a %zu-byte packet",
				c->name, framer_pending(c->framer));
			return -1;
		case FRAMER_PACKET:
			break;
		}
		if (store_append(c->store, packet.data, packet.len, &end) != 0 ||
		    send_file_prefix(c, end) != 0)
			return -1;
		c->answered = true;
		c->deadline_ms = ms_after(now_ms(), c->limits->idle_timeout_s);
		if (stop_requested(c))
			return -1;	/* this append is done; stop here */
	}
}

/* Nothing to read now: wait for more, or end the turn. */
static int wait_for_more(struct client *c, enum turn_end *end)
{
	if (framer_pending(c->framer) == 0) {
		*end = TURN_IDLE;
		if (!c->answered)
			return -1;
		switch (wait_until(c, POLLIN, now_ms() + NEXT_PACKET_GRACE_MS)) {
		case WAIT_READY:
			return 0;
		case WAIT_TIMEOUT:
			return -1;
		case WAIT_STOP:
			break;
		}
	} else {
		switch (wait_until(c, POLLIN, c->deadline_ms)) {
		case WAIT_READY:
			return 0;
		case WAIT_TIMEOUT:
			log_msg(LOG_WARNING,
				"Disconnecting %s: no complete packet for %u s",
				c->name, c->limits->idle_timeout_s);
			break;
		case WAIT_STOP:
			break;
		}
	}
	*end = TURN_CLOSE;
	return -1;
}

/* Receives and handles what the client sends until the turn ends.  After
 * a read that did not fill the buffer, it waits before reading again:
 * the client has usually sent nothing more yet, and a read would only
 * say so. */
static enum turn_end serve(struct client *c)
{
	enum turn_end end;
	bool drained = false;

	for (;;) {
		ssize_t n;

		if (drained && wait_for_more(c, &end) != 0)
			return end;
		n = recv(c->fd, receive_buffer, sizeof(receive_buffer), 0);
		if (n > 0) {
			struct byte_span input = { receive_buffer, (size_t)n };

			if (handle_input(c, input) != 0)
				return TURN_CLOSE;
			drained = (size_t)n < sizeof(receive_buffer);
		} else if (n == 0) {
			return TURN_CLOSE;
		} else if (errno == EAGAIN) {
			if (wait_for_more(c, &end) != 0)
				return end;
			drained = false;
		} else if (errno != EINTR) {
			log_errno("Cannot receive from %s", c->name);
			return TURN_CLOSE;
		}
	}
}

enum turn_end connection_serve_turn(int fd, const char *peer,
				    long long deadline_ms,
				    const struct turn_context *context)
{
	struct client c = { .fd = fd, .name = peer, .store = context->store,
			    .framer = context->framer,
			    .limits = context->limits,
			    .stop_fd = context->stop_fd,
			    .deadline_ms = deadline_ms };
	enum turn_end end = serve(&c);

	if (end == TURN_CLOSE) {
		if (framer_pending(c.framer) > 0)
			log_msg(LOG_NOTICE,
				"Discarding %zu bytes from %s after its last newline",
				framer_pending(c.framer), peer);
		shutdown(fd, SHUT_WR);
	}
	framer_reset(c.framer);
	close(fd);
	return end;
}
