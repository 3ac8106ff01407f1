/* worker: one worker process, an event loop serving many connections. */
#include "worker.h"

#include "conntable.h"
#include "deadlines.h"
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "mstime.h"

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
/* While this worker is full, how often it looks whether the others have
 * filled up too: only then may it close an idle connection to make room. */
#define FULL_RECHECK_MS 100

/* epoll data: a slot id in the low half, its generation in the high half;
 * the listener and the lifeline have ids no slot has. */
#define ID_LISTENER (CONN_NONE - 1)
#define ID_LIFELINE (CONN_NONE - 2)

struct worker {
	const struct worker_setup *setup;
	int epoll_fd;
	struct store store;
	struct conntable table;
	struct deadlines deadlines;
	struct conn_env env;
	bool listening, stopping;
	long long accept_again_ms;	/* paused after an error; 0: not */
	unsigned accept_failures;
};

static char receive_buffer[RECEIVE_BUFFER_SIZE];

static uint64_t tag(uint32_t id, uint32_t generation)
{
	return (uint64_t)generation << 32 | id;
}

/* ------------------------------------------------------------ census */

static void count_open(struct worker *w)
{
	__atomic_store_n(&w->setup->census[w->setup->index],
			 (int)w->table.open, __ATOMIC_RELAXED);
}

/* Every worker at its share of the cap: only then is an idle connection
 * closed to make room, never while another worker has room.  A stopped
 * worker's room is no room: it accepts nobody. */
static bool everyone_full(const struct worker *w)
{
	const struct worker_setup *s = w->setup;
	unsigned long open = 0;
	unsigned i;

	for (i = 0; i < s->count; i++) {
		int n = __atomic_load_n(&s->census[i], __ATOMIC_RELAXED);
		unsigned long taken = n > 0 ? (unsigned long)n : 0;

		if (__atomic_load_n(&s->census[s->count + i], __ATOMIC_RELAXED))
			taken = worker_share(s->max_connections, s->count, i);
		open += taken;
	}
	return open >= s->max_connections;
}

/* ------------------------------------------------------- connections */

static int watch(struct worker *w, uint32_t id, const struct conn *c, int op)
{
	struct epoll_event ev = {
		.events = c->sending ? EPOLLOUT : EPOLLIN,
		.data.u64 = tag(id, w->table.slots[id].generation),
	};

	if (epoll_ctl(w->epoll_fd, op, c->fd, &ev) == 0)
		return 0;
	log_errno("Cannot watch the connection from %s", c->peer);
	return -1;
}

static void close_conn(struct worker *w, uint32_t id)
{
	deadlines_clear(&w->deadlines, id);
	conn_close(&w->table.slots[id].conn);
	conntable_remove(&w->table, id);
	count_open(w);
}

/* Closes the connections buffering most until the rest fit the budget:
 * a client with a small packet is then always served, whatever others
 * buffer. */
static void keep_to_budget(struct worker *w)
{
	while (w->table.buffered > w->setup->budget) {
		uint32_t id = conntable_largest(&w->table);

		log_msg(LOG_WARNING,
			"Disconnecting %s: it holds %zu bytes of a packet, the most while this worker's %zu-byte buffer budget is used up",
			w->table.slots[id].conn.peer, w->table.slots[id].buffered,
			w->setup->budget);
		close_conn(w, id);
	}
}

/* After the connection was served: what it waits for, by when, and what
 * that costs. */
static void settle_conn(struct worker *w, uint32_t id, bool was_sending,
			enum conn_want want)
{
	struct conn *c = &w->table.slots[id].conn;
	long long deadline;

	if (want == CONN_DONE ||
	    (c->sending != was_sending && watch(w, id, c, EPOLL_CTL_MOD) != 0)) {
		close_conn(w, id);
		return;
	}
	deadline = conn_deadline(c, w->setup->limits);
	if (deadline)
		deadlines_set(&w->deadlines, id, deadline);
	else
		deadlines_clear(&w->deadlines, id);
	conntable_update(&w->table, id);
	keep_to_budget(w);
}

static void connection_event(struct worker *w, uint32_t id,
			     uint32_t generation)
{
	struct conn *c = conntable_find(&w->table, id, generation);
	bool was_sending;

	if (!c)
		return;		/* closed since the event was fetched */
	was_sending = c->sending;
	settle_conn(w, id, was_sending,
		    was_sending ? conn_on_writable(c, &w->env) :
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

/* --------------------------------------------------------- accepting */

static void set_listening(struct worker *w, bool on)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE,
				  .data.u64 = tag(ID_LISTENER, 0) };

	if (on == w->listening)
		return;
	if (epoll_ctl(w->epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
		      w->setup->listen_fd, &ev) != 0) {
		log_errno("Cannot %s accepting connections",
			  on ? "resume" : "pause");
		return;
	}
	w->listening = on;
}

/* The idle connection to close for a new client, when this worker is full
 * (CONN_NONE: none, or no need to). */
static uint32_t room_to_make(const struct worker *w)
{
	if (w->table.open < w->setup->share || !everyone_full(w))
		return CONN_NONE;
	return conntable_evictable(&w->table, now_ms());
}

/* Listens while this worker has room, or, once every worker is full, has
 * an idle connection to close for a new one.  Returns in how many ms to
 * look again, or -1. */
static long long update_listening(struct worker *w, long long now)
{
	long long again = -1;
	bool on = true;

	if (w->accept_again_ms > now) {
		on = false;
		again = w->accept_again_ms - now;
	} else if (w->table.open >= w->setup->share &&
		   room_to_make(w) == CONN_NONE) {
		on = false;
		again = FULL_RECHECK_MS;
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
	log_errno("Cannot accept connections; trying again in %lld ms", pause);
	w->accept_again_ms = now_ms() + pause;
	return false;
}

/* One client per event: the listener stays readable while more wait, so
 * a burst of new clients takes turns with the connections already here,
 * and the common case makes no accept() that finds nobody.  When this
 * worker is full, an idle connection is closed only once a client has
 * really been accepted in its place (the worker's descriptor limit has
 * room for that moment). */
static void accept_client(struct worker *w)
{
	uint32_t victim = room_to_make(w), id;
	struct sockaddr_storage peer;
	enum conn_want want;
	char name[PEER_NAME_LEN];
	socklen_t len;
	struct conn *c;
	int fd;

	if (w->table.open >= w->setup->share && victim == CONN_NONE)
		return;
	do {
		len = sizeof(peer);
		fd = accept4(w->setup->listen_fd, (struct sockaddr *)&peer,
			     &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	} while (fd < 0 && survive_accept_error(w));
	if (fd < 0)
		return;
	w->accept_failures = 0;
	if (victim != CONN_NONE) {
		log_msg(LOG_NOTICE,
			"Closing idle connection from %s to make room (%u open)",
			w->table.slots[victim].conn.peer,
			w->setup->max_connections);
		close_conn(w, victim);
	}
	c = conntable_add(&w->table, &id);
	listener_peer_name(&peer, name);
	conn_open(c, fd, name, w->setup->limits->max_packet, now_ms());
	count_open(w);
	/* A client's first packet has usually arrived by now: it is answered
	 * before the connection is even watched, which can wait. */
	want = conn_on_readable(c, &w->env);
	if (want != CONN_DONE && watch(w, id, c, EPOLL_CTL_ADD) != 0)
		want = CONN_DONE;
	settle_conn(w, id, c->sending, want);
}

/* -------------------------------------------------------- the loop */

static void handle_event(struct worker *w, const struct epoll_event *ev)
{
	uint32_t id = (uint32_t)ev->data.u64;

	if (id == ID_LISTENER)
		accept_client(w);
	else if (id == ID_LIFELINE)
		w->stopping = true;	/* the parent has let go */
	else
		connection_event(w, id, (uint32_t)(ev->data.u64 >> 32));
}

/* Serves until a stop; returns the exit status. */
static int serve(struct worker *w)
{
	struct epoll_event events[MAX_EVENTS];

	while (!w->stopping) {
		long long now = now_ms();
		long long wait_ms = sooner_ms(expire_deadlines(w, now),
					   update_listening(w, now));
		int i, n;

		n = epoll_pwait(w->epoll_fd, events, MAX_EVENTS,
				wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms,
				lifecycle_wait_mask());
		if (lifecycle_stop_requested())
			break;
		if (n < 0 && errno != EINTR) {
			log_errno("Cannot wait for events");
			return EXIT_FAILURE;
		}
		for (i = 0; i < n && !w->stopping; i++)
			handle_event(w, &events[i]);
	}
	return EXIT_SUCCESS;
}

/* ---------------------------------------------------------- set-up */

static void keep_only_needed_descriptors(const struct worker_setup *s)
{
	int keep[4] = { s->listen_fd, s->lifeline, s->data_id->fd, s->ready_fd };
	size_t n = s->ready_fd >= 0 ? 4 : 3, i, j;

	for (i = 1; i < n; i++)		/* ascending, as close_fds_except wants */
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];

			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	lifecycle_close_fds_except(keep, n);
}

/* What a client that took this process over could do with it: no
 * privilege gained through exec, no core file with other clients' bytes,
 * no more descriptors than its share of connections. */
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

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    setrlimit(RLIMIT_CORE, &no_core) != 0 ||
	    limit_descriptors(s->share + WORKER_SPARE_FDS) != 0) {
		log_errno("Cannot restrict the worker process");
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

static int set_up_loop(struct worker *w)
{
	const struct worker_setup *s = w->setup;
	struct epoll_event lifeline = { .events = EPOLLIN,
					.data.u64 = tag(ID_LIFELINE, 0) };

	w->env = (struct conn_env){ &w->store, s->limits, receive_buffer,
				    sizeof(receive_buffer) };
	w->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epoll_fd < 0 || conntable_init(&w->table, s->share) != 0 ||
	    deadlines_init(&w->deadlines, s->share) != 0 ||
	    epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, s->lifeline, &lifeline) != 0) {
		log_errno("Cannot set up the worker's event loop");
		return -1;
	}
	count_open(w);
	return 0;
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

static void report_ready(int ready_fd)
{
	if (ready_fd < 0)
		return;
	/* EPIPE: another worker was first, and the parent stopped reading */
	if (write(ready_fd, "R", 1) != 1 && errno != EPIPE)
		log_errno("Cannot report readiness to the parent process");
	close(ready_fd);
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
	struct worker w = { .setup = setup, .epoll_fd = -1 };
	int status;

	w.store.fd = -1;
	if (get_ready(&w) != 0 || confine(setup) != 0)
		_exit(WORKER_CANNOT_START);
	report_ready(setup->ready_fd);
	log_startup_done();	/* from now on, stderr only with -s */
	status = serve(&w);
	close_everything(&w);
	_exit(status);
}
