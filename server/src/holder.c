/* holder: the parent's event loop and its connections. */
#include "holder.h"

#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define NONE UINT32_MAX
#define MAX_EVENTS 64
/* After an accept() error that is not about one connection (no
 * descriptors, no memory, or worse), accepting pauses, doubling. */
#define ACCEPT_RETRY_MIN_MS 100
#define ACCEPT_RETRY_MAX_MS 5000

/* What an epoll event is about: the tag in the high half of its data. */
enum { TAG_LISTENER = 1, TAG_CONNECTION, TAG_WORKER };
#define TAGGED(tag, index) ((uint64_t)(tag) << 32 | (uint32_t)(index))

enum conn_state { C_FREE, C_HELD, C_QUEUED, C_SERVING };

struct conn {
	int fd;
	uint16_t generation;	/* with the index, the id workers are given */
	uint8_t state;
	bool watched;		/* in the epoll set */
	uint32_t prev, next;	/* in the held or queued list, or free */
	long long since_ms;	/* accepted, or held again */
	char peer[PEER_NAME_LEN];
};

struct list {
	uint32_t head, tail;
	unsigned length;
};

struct holder {
	struct holder_config config;
	int epoll_fd;
	struct pool *pool;
	struct conn *conns;	/* parent memory: not inherited */
	uint32_t used;		/* entries ever used; pages beyond untouched */
	uint32_t free_head;
	struct list held, queued;
	unsigned open;
	bool listening, stopping;
	long long accept_again_ms;	/* paused after an error; 0: not */
	unsigned accept_failures;
};

static struct holder the_holder;

static void list_push(struct holder *h, struct list *l, uint32_t i)
{
	h->conns[i].prev = l->tail;
	h->conns[i].next = NONE;
	if (l->tail != NONE)
		h->conns[l->tail].next = i;
	else
		l->head = i;
	l->tail = i;
	l->length++;
}

static void list_remove(struct holder *h, struct list *l, uint32_t i)
{
	struct conn *c = &h->conns[i];

	if (c->prev != NONE)
		h->conns[c->prev].next = c->next;
	else
		l->head = c->next;
	if (c->next != NONE)
		h->conns[c->next].prev = c->prev;
	else
		l->tail = c->prev;
	l->length--;
}

static uint32_t index_of(const struct holder *h, const struct conn *c)
{
	return (uint32_t)(c - h->conns);
}

static uint32_t id_of(const struct holder *h, const struct conn *c)
{
	return (uint32_t)c->generation << 16 | index_of(h, c);
}

/* Takes a connection out of whichever list it is in. */
static void unlist(struct holder *h, struct conn *c)
{
	if (c->state == C_HELD)
		list_remove(h, &h->held, index_of(h, c));
	else if (c->state == C_QUEUED)
		list_remove(h, &h->queued, index_of(h, c));
}

static void watch_listener(struct holder *h, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = TAGGED(TAG_LISTENER, 0) };

	if (on == h->listening || h->stopping)
		return;
	if (epoll_ctl(h->epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
		      h->config.listen_fd, &ev) != 0) {
		log_errno("Cannot %s accepting connections",
			  on ? "resume" : "pause");
		return;
	}
	h->listening = on;
}

static void close_connection(struct holder *h, struct conn *c)
{
	unlist(h, c);
	if (c->watched)
		epoll_ctl(h->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	log_msg(LOG_INFO, "Closed connection from %s", c->peer);
	c->state = C_FREE;
	c->generation++;
	c->next = h->free_head;
	h->free_head = index_of(h, c);
	h->open--;
	if (h->accept_again_ms == 0)
		watch_listener(h, true);	/* room again */
}

/* Holds c until it becomes readable; the worker has let go of it. */
static void hold(struct holder *h, struct conn *c)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
		.data.u64 = TAGGED(TAG_CONNECTION, index_of(h, c)),
	};

	if (epoll_ctl(h->epoll_fd, c->watched ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
		      c->fd, &ev) != 0) {
		log_errno("Cannot hold the connection from %s", c->peer);
		c->state = C_SERVING;	/* in no list */
		close_connection(h, c);
		return;
	}
	c->watched = true;
	c->state = C_HELD;
	c->since_ms = now_ms();
	list_push(h, &h->held, index_of(h, c));
}

static long long packet_deadline(const struct holder *h, const struct conn *c)
{
	return ms_after(c->since_ms, h->config.idle_timeout_s);
}

static bool assign(struct holder *h, struct conn *c)
{
	return pool_assign(h->pool, id_of(h, c), c->fd, c->peer,
			   packet_deadline(h, c)) == 0;
}

/* c has something to read: a worker serves it now, or when one is free. */
static void dispatch(struct holder *h, struct conn *c)
{
	unlist(h, c);
	if (assign(h, c)) {
		c->state = C_SERVING;
		return;
	}
	c->state = C_QUEUED;
	list_push(h, &h->queued, index_of(h, c));
}

static void drain_queue(struct holder *h)
{
	while (h->queued.head != NONE) {
		struct conn *c = &h->conns[h->queued.head];

		if (!assign(h, c))
			return;
		list_remove(h, &h->queued, index_of(h, c));
		c->state = C_SERVING;
	}
}

static size_t bytes_waiting(int fd)
{
	int n = 0;

	return ioctl(fd, FIONREAD, &n) == 0 && n > 0 ? (size_t)n : 0;
}

static void connection_event(struct holder *h, uint32_t index,
			     uint32_t events)
{
	struct conn *c;

	if (index >= h->used || h->conns[index].state != C_HELD)
		return;
	c = &h->conns[index];
	/* A client that left without sending more needs no worker. */
	if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
	    bytes_waiting(c->fd) == 0)
		close_connection(h, c);
	else
		dispatch(h, c);
}

/* The pool's report: the worker that served conn has let go of it. */
static void turn_ended(void *ctx, uint32_t conn, bool close)
{
	struct holder *h = ctx;
	uint32_t index = conn & 0xffff;
	struct conn *c;

	if (index >= h->used || h->conns[index].state != C_SERVING ||
	    h->conns[index].generation != conn >> 16)
		return;
	c = &h->conns[index];
	if (close)
		close_connection(h, c);
	else
		hold(h, c);
}

static struct conn *new_connection(struct holder *h, int fd,
				   const struct sockaddr_storage *peer)
{
	struct conn *c;

	if (h->free_head != NONE) {
		c = &h->conns[h->free_head];
		h->free_head = c->next;
	} else {
		c = &h->conns[h->used++];
	}
	c->fd = fd;
	c->watched = false;
	c->state = C_SERVING;	/* in no list until held or queued */
	c->since_ms = now_ms();
	listener_peer_name(peer, c->peer);
	h->open++;
	log_msg(LOG_INFO, "Accepted connection from %s", c->peer);
	return c;
}

/* Closes the longest-idle held connection; false if none is held. */
static bool make_room(struct holder *h)
{
	struct conn *c;

	if (h->held.head == NONE)
		return false;
	c = &h->conns[h->held.head];
	log_msg(LOG_NOTICE, "Closing idle connection from %s to make room (%u open)",
		c->peer, h->open);
	close_connection(h, c);
	return true;
}

/* Returns true to go on accepting. */
static bool survive_accept_error(struct holder *h)
{
	long long pause;

	switch (errno) {
	case EAGAIN:
		return false;
	case ECONNABORTED:	/* one connection's problem */
	case EINTR:
	case EPROTO:
	case ENETDOWN:
	case ENETUNREACH:
	case EHOSTDOWN:
	case EHOSTUNREACH:
	case ENONET:
	case ENOPROTOOPT:
	case EOPNOTSUPP:
		return true;
	}
	pause = backoff_ms(h->accept_failures++, ACCEPT_RETRY_MIN_MS,
			   ACCEPT_RETRY_MAX_MS);
	log_errno("Cannot accept connections; trying again in %lld ms", pause);
	h->accept_again_ms = now_ms() + pause;
	watch_listener(h, false);
	return false;
}

/* Accepts one connection per event: the listener stays readable while
 * more wait, and a flood of new clients then takes turns with the
 * connections and workers already there. */
static void accept_client(struct holder *h)
{
	struct sockaddr_storage peer;
	socklen_t len;
	struct conn *c;
	int fd;

	if (h->open >= h->config.max_connections && !make_room(h)) {
		watch_listener(h, false);	/* until one closes */
		return;
	}
	do {
		len = sizeof(peer);
		fd = accept4(h->config.listen_fd, (struct sockaddr *)&peer,
			     &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	} while (fd < 0 && survive_accept_error(h));
	if (fd < 0)
		return;
	h->accept_failures = 0;
	c = new_connection(h, fd, &peer);
	/* A client's first packet has usually arrived by now. */
	if (bytes_waiting(fd) > 0)
		dispatch(h, c);
	else
		hold(h, c);
}

/* Closes held connections past the idle timeout; ms to the next one. */
static long long expire_held(struct holder *h)
{
	while (h->held.head != NONE) {
		struct conn *c = &h->conns[h->held.head];
		long long left = packet_deadline(h, c) - now_ms();

		if (h->config.idle_timeout_s == 0)
			return -1;
		if (left > 0)
			return left;
		log_msg(LOG_WARNING, "Disconnecting %s: no complete packet for %u s",
			c->peer, h->config.idle_timeout_s);
		close_connection(h, c);
	}
	return -1;
}

static long long accept_pause_left(struct holder *h)
{
	long long left;

	if (h->accept_again_ms == 0)
		return -1;
	left = h->accept_again_ms - now_ms();
	if (left > 0)
		return left;
	h->accept_again_ms = 0;
	watch_listener(h, true);
	return -1;
}

static long long sooner(long long a, long long b)
{
	return a < 0 || (b >= 0 && b < a) ? b : a;
}

static void handle_event(struct holder *h, const struct epoll_event *ev)
{
	uint32_t index = (uint32_t)ev->data.u64;

	switch (ev->data.u64 >> 32) {
	case TAG_LISTENER:
		accept_client(h);
		break;
	case TAG_CONNECTION:
		connection_event(h, index, ev->events);
		break;
	case TAG_WORKER:
		pool_channel_event(h->pool, index);
		break;
	}
}

void holder_run(struct holder *h)
{
	struct epoll_event events[MAX_EVENTS];

	watch_listener(h, true);
	while (!lifecycle_stop_requested()) {
		long long wait_ms;
		int i, n;

		if (lifecycle_child_exited())
			pool_reap(h->pool);
		drain_queue(h);
		wait_ms = sooner(sooner(expire_held(h), accept_pause_left(h)),
				 pool_adjust(h->pool, h->queued.length));
		n = epoll_pwait(h->epoll_fd, events, MAX_EVENTS,
				wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms,
				lifecycle_wait_mask());
		if (n < 0 && errno != EINTR)
			log_errno("Cannot wait for events");
		for (i = 0; i < n; i++)
			handle_event(h, &events[i]);
	}
}

struct holder *holder_start(const struct holder_config *config,
			    const struct pool_config *pool)
{
	struct holder *h = &the_holder;
	struct pool_config pool_config = *pool;
	const struct pool_events events = { turn_ended, h };

	memset(h, 0, sizeof(*h));
	h->config = *config;
	h->free_head = NONE;
	h->held.head = h->held.tail = h->queued.head = h->queued.tail = NONE;
	h->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	h->conns = lifecycle_parent_memory(config->max_connections *
					   sizeof(struct conn));
	if (h->epoll_fd < 0 || !h->conns) {
		log_errno("Cannot set up the connection table");
		holder_stop(h);
		return NULL;
	}
	pool_config.epoll_fd = h->epoll_fd;
	pool_config.epoll_tag = TAGGED(TAG_WORKER, 0);
	h->pool = pool_start(&pool_config, &events);
	if (!h->pool) {
		holder_stop(h);
		return NULL;
	}
	return h;
}

int holder_wait_ready(struct holder *h)
{
	return pool_wait_ready(h->pool);
}

void holder_stop(struct holder *h)
{
	uint32_t i;

	h->stopping = true;
	if (h->pool)
		pool_stop(h->pool);	/* their connections close */
	for (i = 0; i < h->used; i++)
		if (h->conns[i].state != C_FREE)
			close_connection(h, &h->conns[i]);
	lifecycle_parent_memory_free(h->conns, h->config.max_connections *
					       sizeof(struct conn));
	if (h->epoll_fd >= 0)
		close(h->epoll_fd);
}
