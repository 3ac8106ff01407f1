/* connection: one client, from "Accepted" to "Closed". */
#include "connection.h"

#include "lifecycle.h"
#include "listener.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

/* Big enough that a pipelined burst costs few recv() calls; pages are
 * touched only as far as data arrives, so an idle client costs none. */
#define RECEIVE_BUFFER_SIZE 65536
/* Largest chunk handed to one sendfile() call (Linux caps it lower). */
#define SENDFILE_CHUNK (1L << 30)

enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_STOP };

struct client {
	int fd;
	char name[PEER_NAME_LEN];
	struct store *store;
	struct framer *framer;
	const struct connection_limits *limits;
	struct timespec deadline;	/* for the packet being received */
	const struct connection_lingering *lingering;	/* NULL once told */
};

static char receive_buffer[RECEIVE_BUFFER_SIZE];

static void set_deadline(struct timespec *deadline, unsigned seconds)
{
	clock_gettime(CLOCK_MONOTONIC, deadline);
	deadline->tv_sec += seconds;
}

/* Milliseconds until deadline, at least 0; -1 when there is none. */
static int ms_until(const struct timespec *deadline, unsigned seconds)
{
	struct timespec now;
	long long ms;

	if (seconds == 0)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (deadline->tv_sec - now.tv_sec) * 1000LL +
	     (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : (int)ms;
}

/* Waits for events on fd; stop signals are let in only while waiting. */
static enum wait_result wait_for(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	struct timespec timeout, *tp = NULL;
	int n;

	if (timeout_ms >= 0) {
		timeout.tv_sec = timeout_ms / 1000;
		timeout.tv_nsec = (timeout_ms % 1000) * 1000000L;
		tp = &timeout;
	}
	for (;;) {
		if (lifecycle_stop_requested())
			return WAIT_STOP;
		n = ppoll(&pfd, 1, tp, lifecycle_wait_mask());
		if (n > 0)
			return WAIT_READY;
		if (n == 0)
			return WAIT_TIMEOUT;
		if (errno != EINTR) {
			log_errno("ppoll failed");
			return WAIT_STOP;
		}
	}
}

/* Sends bytes [0, end) of the data file; 0 when all were sent. */
static int send_file_prefix(struct client *c, off_t end)
{
	unsigned timeout_s = c->limits->send_timeout_s;
	off_t offset = 0;

	while (offset < end) {
		off_t left = end - offset;
		ssize_t n = sendfile(c->fd, c->store->fd, &offset,
				     (size_t)(left < SENDFILE_CHUNK ?
					      left : SENDFILE_CHUNK));

		if (n > 0)
			continue;
		if (n == 0) {
			log_msg(LOG_ERR, "Data file ended at %lld, before %lld",
				(long long)offset, (long long)end);
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			log_errno("Cannot send response to %s", c->name);
			return -1;
		}
		switch (wait_for(c->fd, POLLOUT,
				 timeout_s ? (int)(timeout_s * 1000) : -1)) {
		case WAIT_READY:
			break;
		case WAIT_TIMEOUT:
			log_msg(LOG_WARNING,
				"Disconnecting %s: it read nothing of its response for %u s",
				c->name, timeout_s);
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
		set_deadline(&c->deadline, c->limits->idle_timeout_s);
		if (lifecycle_stop_requested())
			return -1;	/* this append is done; stop here */
	}
}

/* Waits until the client has sent something, within the idle deadline;
 * 0 when it has, -1 to disconnect. */
static int wait_for_data(struct client *c)
{
	unsigned idle_s = c->limits->idle_timeout_s;
	int left_ms = ms_until(&c->deadline, idle_s);
	const struct connection_lingering *l = c->lingering;

	if (l && (left_ms < 0 || (unsigned)left_ms > l->after_ms)) {
		switch (wait_for(c->fd, POLLIN, (int)l->after_ms)) {
		case WAIT_READY:
			return 0;
		case WAIT_STOP:
			return -1;
		case WAIT_TIMEOUT:
			l->notify(l->ctx);
			c->lingering = NULL;
			left_ms = ms_until(&c->deadline, idle_s);
		}
	}
	switch (wait_for(c->fd, POLLIN, left_ms)) {
	case WAIT_READY:
		return 0;
	case WAIT_TIMEOUT:
		log_msg(LOG_WARNING,
			"Disconnecting %s: no complete packet for %u s",
			c->name, idle_s);
		return -1;
	case WAIT_STOP:
		return -1;
	}
	return -1;
}

/* Receives once; 1 for data handled, 0 when the client is done, -1 on
 * error.  A client's first packet has usually arrived by the time it is
 * accepted, so the first read is tried before waiting; later ones, after a
 * response, would mostly find nothing yet. */
static int receive_some(struct client *c, bool try_first)
{
	ssize_t n = 0;

	if (try_first)
		n = recv(c->fd, receive_buffer, sizeof(receive_buffer), 0);
	if (!try_first || (n < 0 && errno == EAGAIN)) {
		if (wait_for_data(c) != 0)
			return -1;
		n = recv(c->fd, receive_buffer, sizeof(receive_buffer), 0);
	}
	if (n > 0) {
		struct byte_span input = { receive_buffer, (size_t)n };

		return handle_input(c, input) == 0 ? 1 : -1;
	}
	if (n == 0)
		return 0;
	if (errno == EAGAIN || errno == EINTR)
		return 1;
	log_errno("Cannot receive from %s", c->name);
	return -1;
}

void connection_serve(int fd, const struct sockaddr_storage *peer,
		      struct store *store, struct framer *framer,
		      const struct connection_limits *limits,
		      const struct connection_lingering *lingering)
{
	struct client c = { .fd = fd, .store = store, .framer = framer,
			    .limits = limits, .lingering = lingering };
	bool first = true;

	listener_peer_name(peer, c.name);
	log_msg(LOG_INFO, "Accepted connection from %s", c.name);
	set_deadline(&c.deadline, limits->idle_timeout_s);
	while (receive_some(&c, first) > 0)
		first = false;
	if (framer_pending(framer) > 0)
		log_msg(LOG_NOTICE,
			"Discarding %zu bytes from %s after its last newline",
			framer_pending(framer), c.name);
	framer_reset(framer);
	close(fd);
	log_msg(LOG_INFO, "Closed connection from %s", c.name);
}
