/* worker: one connection process, serving one client at a time. */
#include "worker.h"

#include "connection.h"
#include "lifecycle.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#define ACCEPT_PAUSE_MS 100

/*
 * Counter updates are ordered so that a worker killed between two steps
 * leaves the idle count too low, never too high: the parent then forks one
 * worker too many, which is harmless.
 */
static void mark_busy(const struct worker_setup *w)
{
	int idle = __atomic_sub_fetch(&w->board->idle, 1, __ATOMIC_SEQ_CST);
	char wake = 0;

	slot_set_state(w->slot, SLOT_BUSY);
	if (idle < (int)w->min_spare && write(w->notify_write, &wake, 1) < 0 &&
	    errno != EAGAIN)
		log_errno("Cannot ask for more connection processes");
}

/* Returns false when this worker is surplus and should exit. */
static bool mark_idle(const struct worker_setup *w)
{
	slot_set_state(w->slot, SLOT_IDLE);
	if (__atomic_add_fetch(&w->board->idle, 1, __ATOMIC_SEQ_CST) <=
	    (int)w->max_spare)
		return true;
	__atomic_sub_fetch(&w->board->idle, 1, __ATOMIC_SEQ_CST);
	slot_set_state(w->slot, SLOT_RETIRING);
	return false;
}

/* Returns false when accepting is hopeless and the worker should exit. */
static bool survive_accept_error(void)
{
	switch (errno) {
	case EAGAIN:		/* another worker was faster */
	case ECONNABORTED:
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
	case EMFILE:
	case ENFILE:
	case ENOBUFS:
	case ENOMEM:
		log_errno("Cannot accept a connection now");
		lifecycle_sleep_ms(ACCEPT_PAUSE_MS);
		return true;
	default:
		log_errno("Cannot accept connections");
		return false;
	}
}

/* Puts the listening socket in the worker's epoll set, waking one waiting
 * worker per connection instead of all of them (EPOLLEXCLUSIVE). */
static int watch_listener(int epfd, int listen_fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == 0)
		return 0;
	ev.events = EPOLLIN;	/* kernels before 4.5 */
	return epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev);
}

/* Signals are let in atomically by epoll_pwait(). */
static int open_accept_wait(int listen_fd)
{
	int epfd = epoll_create1(EPOLL_CLOEXEC);

	if (epfd < 0)
		return -1;
	if (watch_listener(epfd, listen_fd) == 0)
		return epfd;
	close(epfd);
	return -1;
}

/* A worker whose client lingers leaves the listener's wait queue: each new
 * connection walks that queue until it finds a waiting worker, and with
 * 1000 idle clients held it would walk 1000 busy workers every time.
 * Short connections finish before LINGER_MS and pay nothing for this. */
#define LINGER_MS 20

struct accept_wait {
	int epfd, listen_fd;
	bool watching;
};

static void stop_watching(void *ctx)
{
	struct accept_wait *w = ctx;

	if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->listen_fd, NULL) == 0)
		w->watching = false;
	else
		log_errno("Cannot pause waiting for connections");
}

static int serve_client(const struct worker_setup *ws, struct accept_wait *w,
			int fd, const struct sockaddr_storage *peer,
			struct store *store, struct framer *framer)
{
	const struct connection_lingering lingering = {
		.after_ms = LINGER_MS, .notify = stop_watching, .ctx = w,
	};

	connection_serve(fd, peer, store, framer, &ws->config->limits,
			 &lingering);
	if (w->watching)
		return 0;
	if (watch_listener(w->epfd, w->listen_fd) != 0) {
		log_errno("Cannot wait for connections");
		return -1;
	}
	w->watching = true;
	return 0;
}

static void serve_until_stopped(const struct worker_setup *w,
				struct store *store, int epfd)
{
	int listen_fd = w->config->listen_fd;
	struct accept_wait wait = { epfd, listen_fd, true };
	struct framer framer;

	framer_init(&framer, w->config->limits.max_packet);
	while (!lifecycle_stop_requested()) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		struct epoll_event ev;
		int fd;

		if (epoll_pwait(epfd, &ev, 1, -1, lifecycle_wait_mask()) < 0) {
			if (errno == EINTR)
				continue;
			log_errno("Cannot wait for connections");
			break;
		}
		if (lifecycle_stop_requested())
			break;
		fd = accept4(listen_fd, (struct sockaddr *)&peer, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (survive_accept_error())
				continue;
			break;
		}
		mark_busy(w);
		if (serve_client(w, &wait, fd, &peer, store, &framer) != 0)
			break;
		if (!mark_idle(w))
			break;
	}
	framer_free(&framer);
}

void worker_run(const struct worker_setup *w)
{
	struct pool_config *config = w->config;
	struct store store;
	int epfd;

	/* Opened while still root: the descriptor keeps its access after the
	 * privilege drop. */
	if (store_open(&store, config->data_file, &config->data_id,
		       &w->board->append_in_progress) != 0)
		exit(WORKER_CANNOT_START);
	store_release(&config->data_id);
	if (config->user &&
	    lifecycle_drop_privileges(config->user, config->uid,
				      config->gid) != 0) {
		store_close(&store);
		exit(WORKER_CANNOT_START);
	}
	/* If the parent dies, stop as if it had told us to.  (Set after the
	 * privilege drop, which clears it.) */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != w->parent) {
		store_close(&store);
		exit(EXIT_SUCCESS);
	}
	epfd = open_accept_wait(config->listen_fd);
	if (epfd < 0) {
		log_errno("Cannot wait for connections");
		store_close(&store);
		exit(WORKER_CANNOT_START);
	}
	serve_until_stopped(w, &store, epfd);
	close(epfd);
	store_close(&store);
	close(config->listen_fd);
	close(w->notify_write);
	log_close();
	exit(EXIT_SUCCESS);
}

