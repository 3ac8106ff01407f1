/* loop: a worker's event loop. */
#include "loop.h"

#include "conntable.h"
#include "deadlines.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Big enough that a pipelined burst costs few recv() calls; pages are
 * touched only as far as data arrives. */
#define RECEIVE_BUFFER_SIZE 65536
#define MAX_EVENTS 64
/* After an accept() error that is not about one connection (no
 * descriptors, no memory, or worse), accepting pauses, doubling. */
#define ACCEPT_RETRY_MIN_MS 100
#define ACCEPT_RETRY_MAX_MS 5000
/* At the cap, how often a worker that is not the one to make room looks
 * whether it has become that one (another that is wakes it at once). */
#define AT_CAP_RECHECK_MS 100
/* Packets waiting for the lock try it again after this, doubling while it
 * stays taken; a wait this long is logged, once. */
#define LOCK_RETRY_MIN_MS 1
#define LOCK_RETRY_MAX_MS 50
#define LOCK_WAIT_LOGGED_MS 500

/* epoll data: a slot id in the low half, its generation in the high half;
 * the other descriptors have ids no slot has. */
#define ID_LISTENER (CONN_NONE - 1)
#define ID_LIFELINE (CONN_NONE - 2)
#define ID_KICK (CONN_NONE - 3)

struct loop {
	const struct worker_setup *setup;
	unsigned me;
	struct census *census;
	int epoll_fd;
	struct store store;
	struct conntable table;
	struct deadlines deadlines;
	struct conn_env env;
	bool listening, stopping;
	long long accept_again_ms;	/* paused after an error; 0: not */
	unsigned accept_failures;
	long long lock_again_ms;	/* packets wait for the lock; 0: none */
	unsigned lock_failures;
	long long lock_waited_since;
	bool lock_wait_logged;
};

static struct loop the_loop;
static char receive_buffer[RECEIVE_BUFFER_SIZE];

static uint64_t tag(uint32_t id, uint32_t generation)
{
	return (uint64_t)generation << 32 | id;
}

/* ------------------------------------------------------- connections */

/* Watches a connection for what it waits for: input, room to send, or
 * nothing at all while its packet waits for the lock (not even a hang-up,
 * which would wake the loop again and again). */
static int watch(struct loop *l, uint32_t id)
{
	struct conn_slot *s = &l->table.slots[id];
	uint32_t events = s->conn.appending ? 0 :
			  s->conn.sending   ? EPOLLOUT : EPOLLIN;
	struct epoll_event ev = { .events = events,
				  .data.u64 = tag(id, s->generation) };
	int op = !s->events ? EPOLL_CTL_ADD :
		 !events    ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;

	if (events == s->events)
		return 0;
	if (epoll_ctl(l->epoll_fd, op, s->conn.fd, &ev) != 0) {
		log_errno("Cannot watch the connection from %s: epoll_ctl(%s, %d)",
			  s->conn.peer, op == EPOLL_CTL_ADD ? "ADD" :
			  op == EPOLL_CTL_DEL ? "DEL" : "MOD", s->conn.fd);
		return -1;
	}
	s->events = events;
	return 0;
}

static void close_conn(struct loop *l, uint32_t id)
{
	deadlines_clear(&l->deadlines, id);
	conn_close(&l->table.slots[id].conn);
	conntable_remove(&l->table, id);
}

/* Closes the connections buffering most until the rest fit this worker's
 * share of the budget: a client with a small packet is then always
 * served, whatever others buffer. */
static void keep_to_budget(struct loop *l)
{
	while (l->table.buffered > l->setup->budget) {
		uint32_t id = conntable_largest(&l->table);

		log_msg(LOG_WARNING,
			"Disconnecting %s: it holds %zu bytes not yet stored, the most while this worker's %zu-byte share of the buffer budget is used up",
			l->table.slots[id].conn.peer,
			conn_unstored(&l->table.slots[id].conn), l->setup->budget);
		close_conn(l, id);
	}
}

static void wait_for_lock(struct loop *l)
{
	if (l->lock_again_ms)
		return;
	l->lock_waited_since = now_ms();
	l->lock_again_ms = l->lock_waited_since + LOCK_RETRY_MIN_MS;
	l->env.appends_wait = true;	/* new packets queue behind */
}

/* After the connection was served: what it waits for, by when, and what
 * that costs. */
static void after_serving(struct loop *l, uint32_t id, enum conn_want want)
{
	struct conn *c = &l->table.slots[id].conn;
	long long deadline;

	if (want == CONN_DONE || watch(l, id) != 0) {
		close_conn(l, id);
		return;
	}
	if (want == CONN_WANT_LOCK)
		wait_for_lock(l);
	deadline = conn_deadline(c, l->setup->limits);
	if (deadline)
		deadlines_set(&l->deadlines, id, deadline);
	else
		deadlines_clear(&l->deadlines, id);
	conntable_update(&l->table, id);
	keep_to_budget(l);
}

static void connection_event(struct loop *l, uint32_t id,
			     uint32_t generation)
{
	struct conn *c = conntable_find(&l->table, id, generation);

	if (!c)
		return;		/* closed since the event was fetched */
	after_serving(l, id, c->sending ? conn_on_writable(c, &l->env) :
					  conn_on_readable(c, &l->env));
}

/* Closes connections past their deadline; ms to the next one, or -1. */
static long long expire_deadlines(struct loop *l, long long now)
{
	struct deadline first;

	while (deadlines_first(&l->deadlines, &first)) {
		if (first.at_ms > now)
			return first.at_ms - now;
		conn_log_timeout(&l->table.slots[first.id].conn,
				 l->setup->limits);
		close_conn(l, first.id);
	}
	return -1;
}

/* ------------------------------------------------ appends that wait */

static void log_lock_wait(struct loop *l, long long now)
{
	long long waited = now - l->lock_waited_since;

	if (!l->lock_wait_logged && waited >= LOCK_WAIT_LOGGED_MS) {
		log_msg(LOG_WARNING, "Appends have waited %lld ms for the data file's lock, which another worker holds; everything else goes on",
			waited);
		l->lock_wait_logged = true;
	} else if (l->lock_wait_logged && !l->lock_again_ms) {
		log_msg(LOG_NOTICE, "Appends go on after %lld ms waiting for the data file's lock",
			waited);
		l->lock_wait_logged = false;
	}
}

/* Tries the lock again for the packets waiting, oldest first; returns in
 * how many ms to try again, or -1 when none waits any more. */
static long long retry_appends(struct loop *l, long long now)
{
	uint32_t id;

	if (!l->lock_again_ms)
		return -1;
	if (now < l->lock_again_ms)
		return l->lock_again_ms - now;
	l->env.appends_wait = false;
	while ((id = conntable_first_appending(&l->table)) != CONN_NONE) {
		enum conn_want want =
			conn_retry_append(&l->table.slots[id].conn, &l->env);

		after_serving(l, id, want);
		if (want == CONN_WANT_LOCK) {	/* still taken */
			l->env.appends_wait = true;
			l->lock_again_ms = now + backoff_ms(l->lock_failures++,
							    LOCK_RETRY_MIN_MS,
							    LOCK_RETRY_MAX_MS);
			log_lock_wait(l, now);
			return l->lock_again_ms - now;
		}
	}
	l->lock_again_ms = 0;
	l->lock_failures = 0;
	log_lock_wait(l, now);
	return -1;
}

/* --------------------------------------------------------- accepting */

static void set_listening(struct loop *l, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE,
				  .data.u64 = tag(ID_LISTENER, 0) };

	if (on == l->listening)
		return;
	if (epoll_ctl(l->epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
		      l->setup->listen_fd, &ev) != 0) {
		log_errno("Cannot %s accepting: epoll_ctl(%s, %d)",
			  on ? "resume" : "pause", on ? "ADD" : "DEL",
			  l->setup->listen_fd);
		return;
	}
	l->listening = on;
}

/* The connection to close for a new client, or CONN_NONE.  One with bytes
 * the kernel holds for it is not idle: those are served first (and one
 * the client closed is closed), and the next one is looked at. */
static uint32_t find_room(struct loop *l)
{
	uint32_t id;

	while ((id = census_first_to_close(l->census, l->me, &l->table,
					   now_ms())) != CONN_NONE) {
		const struct conn_slot *s = &l->table.slots[id];
		char byte;

		if (recv(s->conn.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
		    errno == EAGAIN)
			return id;
		connection_event(l, id, s->generation);
	}
	return CONN_NONE;
}

/* Listens while the service is below the cap, or, at the cap, while this
 * worker is the one to make room.  Returns in how many ms to look again,
 * or -1. */
static long long update_listening(struct loop *l, long long now)
{
	long long again = -1;
	bool on = true;

	/* What this worker is, for the others, once a turn (its entry as it
	 * was at the last turn until then): whatever another process wrote
	 * over it lasts no longer than that either. */
	census_publish(l->census, l->me, &l->table);
	if (l->accept_again_ms > now) {
		on = false;
		again = l->accept_again_ms - now;
	} else if (census_open(l->census) >= l->setup->max_connections &&
		   census_first_to_close(l->census, l->me, &l->table, now) ==
			   CONN_NONE) {
		on = false;
		again = AT_CAP_RECHECK_MS;
	}
	set_listening(l, on);
	return again;
}

/* Returns true to try accept() again at once. */
static bool survive_accept_error(struct loop *l)
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
	pause = backoff_ms(l->accept_failures++, ACCEPT_RETRY_MIN_MS,
			   ACCEPT_RETRY_MAX_MS);
	log_errno("Cannot accept connections (accept4); trying again in %lld ms",
		  pause);
	l->accept_again_ms = now_ms() + pause;
	return false;
}

/* A place under the cap for one more connection, taken in the census:
 * below the cap, one of its own; at it, the place of the idle connection
 * returned in *victim, to be closed once the new one is accepted. */
static bool take_place(struct loop *l, uint32_t *victim)
{
	unsigned cap = l->setup->max_connections;

	*victim = CONN_NONE;
	if (l->table.open >= l->table.capacity)	/* the census lies */
		return false;
	if (census_take_place(l->census, l->me, l->table.open, cap))
		return true;
	*victim = find_room(l);
	if (*victim == CONN_NONE)	/* it may have closed one */
		return census_take_place(l->census, l->me, l->table.open, cap);
	return census_take_place(l->census, l->me, l->table.open, cap + 1);
}

static void open_conn(struct loop *l, int fd,
		      const struct sockaddr_storage *peer)
{
	char name[PEER_NAME_LEN];
	uint32_t id;
	struct conn *c = conntable_add(&l->table, &id);

	listener_peer_name(peer, name);
	conn_open(c, fd, name, l->setup->limits->max_packet, now_ms());
	/* A client's first packet has usually arrived by now: it is answered
	 * before the connection is even watched, which can wait. */
	after_serving(l, id, conn_on_readable(c, &l->env));
}

/* One client per event: the listener stays readable while more wait, so
 * a burst of new clients takes turns with the connections already here,
 * and the common case makes no accept() that finds nobody. */
static void accept_client(struct loop *l)
{
	struct sockaddr_storage peer;
	uint32_t victim;
	socklen_t len;
	int fd;

	if (!take_place(l, &victim)) {
		set_listening(l, false);
		census_turned_down(l->census, l->me);
		return;
	}
	do {
		len = sizeof(peer);
		fd = accept4(l->setup->listen_fd, (struct sockaddr *)&peer,
			     &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	} while (fd < 0 && survive_accept_error(l));
	if (fd < 0) {
		census_set_open(l->census, l->me, l->table.open);
		return;
	}
	l->accept_failures = 0;
	if (victim != CONN_NONE) {
		const struct conn *old = &l->table.slots[victim].conn;

		log_msg(LOG_NOTICE,
			"Closing idle connection from %s to make room (%lu open): %s for %lld ms",
			old->peer, census_open(l->census) - 1,
			old->heard_from ? "idle" : "silent",
			now_ms() - old->since_ms);
		close_conn(l, victim);
	}
	open_conn(l, fd, &peer);
}

/* -------------------------------------------------------- the loop */

static void handle_event(struct loop *l, const struct epoll_event *ev)
{
	uint32_t id = (uint32_t)ev->data.u64;

	if (id == ID_LISTENER)
		accept_client(l);
	else if (id == ID_LIFELINE)
		l->stopping = true;	/* the parent has let go */
	else if (id == ID_KICK)
		census_kicked(l->census, l->me);	/* the loop looks again */
	else
		connection_event(l, id, (uint32_t)(ev->data.u64 >> 32));
}

int loop_run(struct loop *l)
{
	struct epoll_event events[MAX_EVENTS];

	while (!l->stopping) {
		long long now = now_ms();
		long long wait_ms = sooner_ms(retry_appends(l, now),
					      expire_deadlines(l, now));
		int i, n;

		wait_ms = sooner_ms(wait_ms, update_listening(l, now));
		n = epoll_pwait(l->epoll_fd, events, MAX_EVENTS,
				wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms,
				lifecycle_wait_mask());
		if (lifecycle_stop_requested())
			break;
		if (n < 0 && errno != EINTR) {
			log_errno("Cannot wait for events: epoll_pwait");
			return EXIT_FAILURE;
		}
		for (i = 0; i < n && !l->stopping; i++)
			handle_event(l, &events[i]);
	}
	return EXIT_SUCCESS;
}

/* ---------------------------------------------------------- set-up */

static int watch_fd(struct loop *l, int fd, uint32_t id)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag(id, 0) };

	if (epoll_ctl(l->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	log_errno("Cannot set up the event loop: epoll_ctl(ADD, %d)", fd);
	return -1;
}

struct loop *loop_start(const struct worker_setup *s,
			const struct store *store)
{
	struct loop *l = &the_loop;
	uint32_t slots = s->max_connections + 1;

	*l = (struct loop){ .setup = s, .me = s->index, .census = s->census,
			    .store = *store };

	l->env = (struct conn_env){ &l->store, s->limits, receive_buffer,
				    sizeof(receive_buffer), false };
	l->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epoll_fd < 0) {
		log_errno("Cannot set up the event loop: epoll_create1");
		return NULL;
	}
	if (conntable_init(&l->table, slots) != 0 ||
	    deadlines_init(&l->deadlines, slots) != 0) {
		log_errno("Cannot allocate %u connection slots: calloc", slots);
		return NULL;
	}
	census_publish(l->census, l->me, &l->table);
	if (watch_fd(l, s->lifeline, ID_LIFELINE) != 0 ||
	    watch_fd(l, census_kick_fd(l->census, l->me), ID_KICK) != 0)
		return NULL;
	return l;
}

void loop_end(struct loop *l)
{
	uint32_t id;

	for (id = 0; id < l->table.used; id++)
		if (l->table.slots[id].in_use)
			close_conn(l, id);
	conntable_free(&l->table);
	deadlines_free(&l->deadlines);
	store_close(&l->store);
	log_close();
}
