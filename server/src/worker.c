/* worker: one worker process, an event loop serving many connections. */
#include "worker.h"

#include "conntable.h"
#include "deadlines.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "mstime.h"
#include "options.h"

#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

struct worker {
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

static char receive_buffer[RECEIVE_BUFFER_SIZE];

static uint64_t tag(uint32_t id, uint32_t generation)
{
	return (uint64_t)generation << 32 | id;
}

/* ------------------------------------------------------- connections */

/* Watches a connection for what it waits for: input, room to send, or
 * nothing at all while its packet waits for the lock (not even a hang-up,
 * which would wake the loop again and again). */
static int watch(struct worker *w, uint32_t id)
{
	struct conn_slot *s = &w->table.slots[id];
	uint32_t events = s->conn.appending ? 0 :
			  s->conn.sending   ? EPOLLOUT : EPOLLIN;
	struct epoll_event ev = { .events = events,
				  .data.u64 = tag(id, s->generation) };
	int op = !s->events ? EPOLL_CTL_ADD :
		 !events    ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;

	if (events == s->events)
		return 0;
	if (epoll_ctl(w->epoll_fd, op, s->conn.fd, &ev) != 0) {
		log_errno("Cannot watch the connection from %s: epoll_ctl(%s, %d)",
			  s->conn.peer, op == EPOLL_CTL_ADD ? "ADD" :
			  op == EPOLL_CTL_DEL ? "DEL" : "MOD", s->conn.fd);
		return -1;
	}
	s->events = events;
	return 0;
}

static void close_conn(struct worker *w, uint32_t id)
{
	deadlines_clear(&w->deadlines, id);
	conn_close(&w->table.slots[id].conn);
	conntable_remove(&w->table, id);
	census_publish(w->census, w->me, &w->table);
}

/* Closes the connections buffering most until the rest fit this worker's
 * share of the budget: a client with a small packet is then always
 * served, whatever others buffer. */
static void keep_to_budget(struct worker *w)
{
	while (w->table.buffered > w->setup->budget) {
		uint32_t id = conntable_largest(&w->table);

		log_msg(LOG_WARNING,
			"Disconnecting %s: it holds %zu bytes not yet stored, the most while this worker's %zu-byte share of the buffer budget is used up",
			w->table.slots[id].conn.peer,
			conn_unstored(&w->table.slots[id].conn), w->setup->budget);
		close_conn(w, id);
	}
}

static void wait_for_lock(struct worker *w)
{
	if (w->lock_again_ms)
		return;
	w->lock_waited_since = now_ms();
	w->lock_again_ms = w->lock_waited_since + LOCK_RETRY_MIN_MS;
	w->env.appends_wait = true;	/* new packets queue behind */
}

/* After the connection was served: what it waits for, by when, and what
 * that costs. */
static void after_serving(struct worker *w, uint32_t id, enum conn_want want)
{
	struct conn *c = &w->table.slots[id].conn;
	long long deadline;

	if (want == CONN_DONE || watch(w, id) != 0) {
		close_conn(w, id);
		return;
	}
	if (want == CONN_WANT_LOCK)
		wait_for_lock(w);
	deadline = conn_deadline(c, w->setup->limits);
	if (deadline)
		deadlines_set(&w->deadlines, id, deadline);
	else
		deadlines_clear(&w->deadlines, id);
	conntable_update(&w->table, id);
	census_publish(w->census, w->me, &w->table);
	keep_to_budget(w);
}

static void connection_event(struct worker *w, uint32_t id,
			     uint32_t generation)
{
	struct conn *c = conntable_find(&w->table, id, generation);

	if (!c)
		return;		/* closed since the event was fetched */
	after_serving(w, id, c->sending ? conn_on_writable(c, &w->env) :
					  conn_on_readable(c, &w->env));
}

/* Closes connections past their deadline; ms to the next one, or -1. */
static long long expire_deadlines(struct worker *w, long long now)
{
	struct deadline first;

	while (deadlines_first(&w->deadlines, &first)) {
		if (first.at_ms > now)
			return first.at_ms - now;
		conn_log_timeout(&w->table.slots[first.id].conn,
				 w->setup->limits);
		close_conn(w, first.id);
	}
	return -1;
}

/* ------------------------------------------------ appends that wait */

static void log_lock_wait(struct worker *w, long long now)
{
	long long waited = now - w->lock_waited_since;

	if (!w->lock_wait_logged && waited >= LOCK_WAIT_LOGGED_MS) {
		log_msg(LOG_WARNING, "Appends have waited %lld ms for the data file's lock, which another worker holds; everything else goes on",
			waited);
		w->lock_wait_logged = true;
	} else if (w->lock_wait_logged && !w->lock_again_ms) {
		log_msg(LOG_NOTICE, "Appends go on after %lld ms waiting for the data file's lock",
			waited);
		w->lock_wait_logged = false;
	}
}

/* Tries the lock again for the packets waiting, oldest first; returns in
 * how many ms to try again, or -1 when none waits any more. */
static long long retry_appends(struct worker *w, long long now)
{
	uint32_t id;

	if (!w->lock_again_ms)
		return -1;
	if (now < w->lock_again_ms)
		return w->lock_again_ms - now;
	w->env.appends_wait = false;
	while ((id = conntable_first_appending(&w->table)) != CONN_NONE) {
		enum conn_want want =
			conn_retry_append(&w->table.slots[id].conn, &w->env);

		after_serving(w, id, want);
		if (want == CONN_WANT_LOCK) {	/* still taken */
			w->env.appends_wait = true;
			w->lock_again_ms = now + backoff_ms(w->lock_failures++,
							    LOCK_RETRY_MIN_MS,
							    LOCK_RETRY_MAX_MS);
			log_lock_wait(w, now);
			return w->lock_again_ms - now;
		}
	}
	w->lock_again_ms = 0;
	w->lock_failures = 0;
	log_lock_wait(w, now);
	return -1;
}

/* --------------------------------------------------------- accepting */

static void set_listening(struct worker *w, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE,
				  .data.u64 = tag(ID_LISTENER, 0) };

	if (on == w->listening)
		return;
	if (epoll_ctl(w->epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
		      w->setup->listen_fd, &ev) != 0) {
		log_errno("Cannot %s accepting: epoll_ctl(%s, %d)",
			  on ? "resume" : "pause", on ? "ADD" : "DEL",
			  w->setup->listen_fd);
		return;
	}
	w->listening = on;
}

/* The connection to close for a new client, or CONN_NONE.  One with bytes
 * the kernel holds for it is not idle: those are served first (and one
 * the client closed is closed), and the next one is looked at. */
static uint32_t find_room(struct worker *w)
{
	uint32_t id;

	while ((id = census_first_to_close(w->census, w->me, &w->table,
					   now_ms())) != CONN_NONE) {
		const struct conn_slot *s = &w->table.slots[id];
		char byte;

		if (recv(s->conn.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
		    errno == EAGAIN)
			return id;
		connection_event(w, id, s->generation);
	}
	return CONN_NONE;
}

/* Listens while the service is below the cap, or, at the cap, while this
 * worker is the one to make room.  Returns in how many ms to look again,
 * or -1. */
static long long update_listening(struct worker *w, long long now)
{
	long long again = -1;
	bool on = true;

	/* Published anew each time round: whatever another process wrote over
	 * this worker's entry lasts no longer than that. */
	census_publish(w->census, w->me, &w->table);
	if (w->accept_again_ms > now) {
		on = false;
		again = w->accept_again_ms - now;
	} else if (census_open(w->census) >= w->setup->max_connections &&
		   census_first_to_close(w->census, w->me, &w->table, now) ==
			   CONN_NONE) {
		on = false;
		again = AT_CAP_RECHECK_MS;
	}
	set_listening(w, on);
	return again;
}

/* Returns true to try accept() again at once. */
static bool survive_accept_error(struct worker *w)
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
	pause = backoff_ms(w->accept_failures++, ACCEPT_RETRY_MIN_MS,
			   ACCEPT_RETRY_MAX_MS);
	log_errno("Cannot accept connections (accept4); trying again in %lld ms",
		  pause);
	w->accept_again_ms = now_ms() + pause;
	return false;
}

/* A place under the cap for one more connection, taken in the census:
 * below the cap, one of its own; at it, the place of the idle connection
 * returned in *victim, to be closed once the new one is accepted. */
static bool take_place(struct worker *w, uint32_t *victim)
{
	unsigned cap = w->setup->max_connections;

	*victim = CONN_NONE;
	if (w->table.open >= w->table.capacity)	/* the census lies */
		return false;
	if (census_take_place(w->census, w->me, w->table.open, cap))
		return true;
	*victim = find_room(w);
	if (*victim == CONN_NONE)	/* it may have closed one */
		return census_take_place(w->census, w->me, w->table.open, cap);
	return census_take_place(w->census, w->me, w->table.open, cap + 1);
}

static void open_conn(struct worker *w, int fd,
		      const struct sockaddr_storage *peer)
{
	char name[PEER_NAME_LEN];
	uint32_t id;
	struct conn *c = conntable_add(&w->table, &id);

	census_publish(w->census, w->me, &w->table);
	listener_peer_name(peer, name);
	conn_open(c, fd, name, w->setup->limits->max_packet, now_ms());
	/* A client's first packet has usually arrived by now: it is answered
	 * before the connection is even watched, which can wait. */
	after_serving(w, id, conn_on_readable(c, &w->env));
}

/* One client per event: the listener stays readable while more wait, so
 * a burst of new clients takes turns with the connections already here,
 * and the common case makes no accept() that finds nobody. */
static void accept_client(struct worker *w)
{
	struct sockaddr_storage peer;
	uint32_t victim;
	socklen_t len;
	int fd;

	if (!take_place(w, &victim)) {
		set_listening(w, false);
		census_turned_down(w->census, w->me);
		return;
	}
	do {
		len = sizeof(peer);
		fd = accept4(w->setup->listen_fd, (struct sockaddr *)&peer,
			     &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	} while (fd < 0 && survive_accept_error(w));
	if (fd < 0) {
		census_set_open(w->census, w->me, w->table.open);
		return;
	}
	w->accept_failures = 0;
	if (victim != CONN_NONE) {
		const struct conn *old = &w->table.slots[victim].conn;

		log_msg(LOG_NOTICE,
			"Closing idle connection from %s to make room (%lu open): %s for %lld ms",
			old->peer, census_open(w->census) - 1,
			old->heard_from ? "idle" : "silent",
			now_ms() - old->since_ms);
		close_conn(w, victim);
	}
	open_conn(w, fd, &peer);
}

/* -------------------------------------------------------- the loop */

static void handle_event(struct worker *w, const struct epoll_event *ev)
{
	uint32_t id = (uint32_t)ev->data.u64;

	if (id == ID_LISTENER)
		accept_client(w);
	else if (id == ID_LIFELINE)
		w->stopping = true;	/* the parent has let go */
	else if (id == ID_KICK)
		census_kicked(w->census, w->me);	/* the loop looks again */
	else
		connection_event(w, id, (uint32_t)(ev->data.u64 >> 32));
}

/* Serves until a stop; returns the exit status. */
static int serve(struct worker *w)
{
	struct epoll_event events[MAX_EVENTS];

	while (!w->stopping) {
		long long now = now_ms();
		long long wait_ms = sooner_ms(retry_appends(w, now),
					      expire_deadlines(w, now));
		int i, n;

		wait_ms = sooner_ms(wait_ms, update_listening(w, now));
		n = epoll_pwait(w->epoll_fd, events, MAX_EVENTS,
				wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms,
				lifecycle_wait_mask());
		if (lifecycle_stop_requested())
			break;
		if (n < 0 && errno != EINTR) {
			log_errno("Cannot wait for events: epoll_pwait");
			return EXIT_FAILURE;
		}
		for (i = 0; i < n && !w->stopping; i++)
			handle_event(w, &events[i]);
	}
	return EXIT_SUCCESS;
}

/* ---------------------------------------------------------- set-up */

static int ascending(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static void keep_only_needed_descriptors(const struct worker_setup *s)
{
	int keep[MAX_WORKERS_LIMIT + 5];
	size_t n = 0;
	unsigned i;

	keep[n++] = s->listen_fd;
	keep[n++] = s->lifeline;
	keep[n++] = s->data_id->fd;
	keep[n++] = s->data_id->lock_fd;
	if (s->started_fd >= 0)
		keep[n++] = s->started_fd;
	for (i = 0; i < census_workers(s->census); i++)
		keep[n++] = census_kick_fd(s->census, i);
	qsort(keep, n, sizeof(keep[0]), ascending);
	lifecycle_close_fds_except(keep, n);
}

/* What a client that took this process over could do with it: no
 * privilege gained through exec, no core file with other clients' bytes,
 * no more descriptors than the connections need. */
static int limit_descriptors(rlim_t most)
{
	struct rlimit files = { most, most };

	if (setrlimit(RLIMIT_NOFILE, &files) == 0)
		return 0;
	/* Where the hard limit may not move (valgrind keeps descriptors of
	 * its own above it), the soft limit alone bounds the worker. */
	if (getrlimit(RLIMIT_NOFILE, &files) != 0)
		return -1;
	files.rlim_cur = most;
	return setrlimit(RLIMIT_NOFILE, &files);
}

static int restrict_process(const struct worker_setup *s)
{
	const struct rlimit no_core = { 0, 0 };
	rlim_t files = worker_descriptors(s->max_connections,
					  census_workers(s->census));

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		log_errno("Cannot restrict the worker: prctl(PR_SET_NO_NEW_PRIVS)");
		return -1;
	}
	if (setrlimit(RLIMIT_CORE, &no_core) != 0) {
		log_errno("Cannot restrict the worker: setrlimit(RLIMIT_CORE, 0)");
		return -1;
	}
	if (limit_descriptors(files) != 0) {
		log_errno("Cannot restrict the worker: setrlimit(RLIMIT_NOFILE, %lu)",
			  (unsigned long)files);
		return -1;
	}
#ifdef M_MMAP_THRESHOLD
	/* A big packet's buffer goes back to the system when it is freed,
	 * instead of raising glibc's threshold and staying in the heap. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024);
#endif
	return 0;
}

static int watch_fd(struct worker *w, int fd, uint32_t id)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag(id, 0) };

	if (epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0)
		return 0;
	log_errno("Cannot set up the event loop: epoll_ctl(ADD, %d)", fd);
	return -1;
}

static int set_up_loop(struct worker *w)
{
	const struct worker_setup *s = w->setup;
	uint32_t slots = s->max_connections + 1;

	w->env = (struct conn_env){ &w->store, s->limits, receive_buffer,
				    sizeof(receive_buffer), false };
	w->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epoll_fd < 0) {
		log_errno("Cannot set up the event loop: epoll_create1");
		return -1;
	}
	if (conntable_init(&w->table, slots) != 0 ||
	    deadlines_init(&w->deadlines, slots) != 0) {
		log_errno("Cannot allocate %u connection slots: calloc", slots);
		return -1;
	}
	census_publish(w->census, w->me, &w->table);
	return watch_fd(w, s->lifeline, ID_LIFELINE) == 0 &&
	       watch_fd(w, census_kick_fd(w->census, w->me), ID_KICK) == 0 ?
		       0 : -1;
}

/* Everything up to serving.  The data file is reopened after the
 * privilege drop, so the worker has exactly its user's access to it (and
 * needs no capability beyond switching users, as under the systemd
 * unit). */
static int get_ready(struct worker *w)
{
	const struct worker_setup *s = w->setup;
	struct store_identity id = *s->data_id;

	keep_only_needed_descriptors(s);
	log_reopen();
	if (s->user && lifecycle_drop_privileges(s->user, s->uid, s->gid) != 0)
		return -1;
	/* If the parent dies, stop as if it had said so.  (Set after the
	 * privilege drop, which clears it.) */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != s->parent)
		return -1;
	if (restrict_process(s) != 0 ||
	    store_open(&w->store, s->data_file, &id) != 0)
		return -1;
	store_release(&id);
	return set_up_loop(w);
}

/* From here on only the system calls serving needs (sandbox.h): a
 * client that takes this process over can do no more than that. */
static int confine(const struct worker_setup *s)
{
	struct sandbox_worker rules = { s->listen_fd, log_socket(), s->report };

	return s->syscall_filter ? sandbox_confine(&rules) : 0;
}

static void say_started(int started_fd)
{
	if (started_fd < 0)
		return;
	/* EPIPE: another worker was first, and the parent stopped reading */
	if (write(started_fd, "S", 1) != 1 && errno != EPIPE)
		log_errno("Cannot tell the parent it started: write");
	close(started_fd);
}

static void close_everything(struct worker *w)
{
	uint32_t id;

	for (id = 0; id < w->table.used; id++)
		if (w->table.slots[id].in_use)
			close_conn(w, id);
	conntable_free(&w->table);
	deadlines_free(&w->deadlines);
	store_close(&w->store);
	log_close();
}

void worker_run(const struct worker_setup *setup)
{
	struct worker w = { .setup = setup, .me = setup->index,
			    .census = setup->census, .epoll_fd = -1 };
	int status;

	w.store.fd = w.store.lock_fd = -1;
	if (get_ready(&w) != 0 || confine(setup) != 0)
		_exit(WORKER_CANNOT_START);
	say_started(setup->started_fd);
	log_startup_done();	/* from now on, stderr only with -s */
	status = serve(&w);
	close_everything(&w);
	_exit(status);
}
