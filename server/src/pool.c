/* pool: pre-forked connection processes, one connection each at a time. */
#include "pool.h"

#include "lifecycle.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Idle workers kept waiting in accept(): enough that a burst of clients
 * finds one ready; the surplus above MAX_SPARE exits after a burst. */
#define MIN_SPARE 4
#define MAX_SPARE 16
#define STOP_GRACE_MS 5000
#define RETRY_SPAWN_MS 1000
/* Workers that die this young, this many times in a row, make the parent
 * pause forking instead of spinning in a fork loop. */
#define EARLY_DEATH_MS 1000
#define EARLY_DEATHS_BEFORE_PAUSE 5
#define ACCEPT_PAUSE_MS 100
#define WORKER_CANNOT_START 3

enum slot_state { SLOT_FREE, SLOT_IDLE, SLOT_BUSY, SLOT_RETIRING };

struct slot {
	pid_t pid;	/* written by the parent only */
	int state;	/* written by the worker, except when free */
	long long forked_ms;	/* parent only */
};

/* Shared by the parent and every worker (MAP_SHARED). */
struct scoreboard {
	off_t append_in_progress;	/* see store.h */
	int idle;			/* workers in SLOT_IDLE */
	struct slot slots[];
};

struct pool {
	struct pool_config config;
	struct scoreboard *board;
	size_t board_size;
	int notify_read, notify_write;	/* workers ask for more workers */
	pid_t parent;
	unsigned live;
	unsigned min_spare, max_spare;
	bool workers_failing;
	unsigned early_deaths;
	long long no_fork_before_ms;
};

/* One pool per process; static so forked workers inherit no heap. */
static struct pool the_pool;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int idle_count(struct pool *p)
{
	return __atomic_load_n(&p->board->idle, __ATOMIC_SEQ_CST);
}

static void set_state(struct slot *slot, int state)
{
	__atomic_store_n(&slot->state, state, __ATOMIC_SEQ_CST);
}

/*
 * The worker's side.  Counter updates are ordered so that a worker killed
 * between two steps leaves the idle count too low, never too high: the
 * parent then forks one worker too many, which is harmless.
 */
static void worker_mark_busy(struct pool *p, struct slot *slot)
{
	int idle = __atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
	char wake = 0;

	set_state(slot, SLOT_BUSY);
	if (idle < (int)p->min_spare && write(p->notify_write, &wake, 1) < 0 &&
	    errno != EAGAIN)
		log_errno("Cannot ask for more connection processes");
}

/* Returns false when this worker is surplus and should exit. */
static bool worker_mark_idle(struct pool *p, struct slot *slot)
{
	set_state(slot, SLOT_IDLE);
	if (__atomic_add_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST) <=
	    (int)p->max_spare)
		return true;
	__atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
	set_state(slot, SLOT_RETIRING);
	return false;
}

static void pause_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	ppoll(NULL, 0, &ts, lifecycle_wait_mask());
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
		pause_ms(ACCEPT_PAUSE_MS);
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

static int serve_client(struct pool *p, struct accept_wait *w, int fd,
			const struct sockaddr_storage *peer,
			struct store *store, struct framer *framer)
{
	const struct connection_lingering lingering = {
		.after_ms = LINGER_MS, .notify = stop_watching, .ctx = w,
	};

	connection_serve(fd, peer, store, framer, &p->config.limits,
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

static void serve_until_stopped(struct pool *p, struct slot *slot,
				struct store *store, int epfd)
{
	int listen_fd = p->config.listen_fd;
	struct accept_wait wait = { epfd, listen_fd, true };
	struct framer framer;

	framer_init(&framer, p->config.limits.max_packet);
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
		worker_mark_busy(p, slot);
		if (serve_client(p, &wait, fd, &peer, store, &framer) != 0)
			break;
		if (!worker_mark_idle(p, slot))
			break;
	}
	framer_free(&framer);
}

static void __attribute__((noreturn)) worker_run(struct pool *p,
						 struct slot *slot)
{
	struct store store;
	int epfd;

	close(p->notify_read);
	/* Opened while still root: the descriptor keeps its access after the
	 * privilege drop. */
	if (store_open(&store, p->config.data_file, &p->config.data_id,
		       &p->board->append_in_progress) != 0)
		exit(WORKER_CANNOT_START);
	store_release(&p->config.data_id);
	if (p->config.user &&
	    lifecycle_drop_privileges(p->config.user, p->config.uid,
				      p->config.gid) != 0) {
		store_close(&store);
		exit(WORKER_CANNOT_START);
	}
	/* If the parent dies, stop as if it had told us to.  (Set after the
	 * privilege drop, which clears it.) */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != p->parent) {
		store_close(&store);
		exit(EXIT_SUCCESS);
	}
	epfd = open_accept_wait(p->config.listen_fd);
	if (epfd < 0) {
		log_errno("Cannot wait for connections");
		store_close(&store);
		exit(WORKER_CANNOT_START);
	}
	serve_until_stopped(p, slot, &store, epfd);
	close(epfd);
	store_close(&store);
	close(p->config.listen_fd);
	close(p->notify_write);
	log_close();
	exit(EXIT_SUCCESS);
}

/* The parent's side. */

static struct slot *free_slot(struct pool *p)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->board->slots[i].pid == 0)
			return &p->board->slots[i];
	return NULL;
}

static struct slot *slot_of(struct pool *p, pid_t pid)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->board->slots[i].pid == pid)
			return &p->board->slots[i];
	return NULL;
}

static int spawn_worker(struct pool *p)
{
	struct slot *slot = free_slot(p);
	pid_t pid;

	if (!slot)
		return -1;
	/* Counted idle before it runs, so the parent never over-forks. */
	set_state(slot, SLOT_IDLE);
	__atomic_add_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
	pid = fork();
	if (pid < 0) {
		log_errno("Cannot fork a connection process");
		__atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
		set_state(slot, SLOT_FREE);
		return -1;
	}
	if (pid == 0)
		worker_run(p, slot);
	slot->pid = pid;
	slot->forked_ms = now_ms();
	p->live++;
	return 0;
}

/* Connections waiting in the listen backlog for a worker (Linux reports
 * the accept queue of a listening socket in tcpi_unacked); 0 if unknown. */
static int accept_queue_length(int listen_fd)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);

	if (getsockopt(listen_fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
		return 0;
	return (int)info.tcpi_unacked;
}

/* Keeps min_spare idle workers, plus one for each connection already
 * waiting, so a burst of clients is met in one round of forks rather
 * than one fork per wake-up. */
static void top_up(struct pool *p)
{
	int wanted;

	if (now_ms() < p->no_fork_before_ms)
		return;
	wanted = (int)p->min_spare + accept_queue_length(p->config.listen_fd);
	while (!p->workers_failing && p->live < p->config.max_workers &&
	       idle_count(p) < wanted)
		if (spawn_worker(p) != 0)
			break;
}

static void note_exit(struct pool *p, const struct slot *slot, int status)
{
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;

	if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_CANNOT_START)
		p->workers_failing = true;
	else if (WIFSIGNALED(status) && !lifecycle_stop_requested())
		log_msg(LOG_WARNING, "Connection process %ld killed by signal %d",
			(long)slot->pid, WTERMSIG(status));
	if (clean || now_ms() - slot->forked_ms >= EARLY_DEATH_MS) {
		p->early_deaths = 0;
		return;
	}
	if (++p->early_deaths < EARLY_DEATHS_BEFORE_PAUSE)
		return;
	log_msg(LOG_ERR, "Connection processes keep dying at start; pausing for %d ms",
		RETRY_SPAWN_MS);
	p->no_fork_before_ms = now_ms() + RETRY_SPAWN_MS;
	p->early_deaths = 0;
}

static void reap_workers(struct pool *p)
{
	struct slot *slot;
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		slot = slot_of(p, pid);
		if (!slot)
			continue;
		if (__atomic_load_n(&slot->state, __ATOMIC_SEQ_CST) == SLOT_IDLE)
			__atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
		note_exit(p, slot, status);
		set_state(slot, SLOT_FREE);
		slot->pid = 0;
		p->live--;
	}
}

static void drain(int fd)
{
	char sink[256];

	while (read(fd, sink, sizeof(sink)) > 0)
		;
}

struct pool *pool_start(const struct pool_config *config)
{
	struct pool *p = &the_pool;
	int fds[2];

	memset(p, 0, sizeof(*p));
	p->config = *config;
	p->parent = getpid();
	p->min_spare = config->max_workers < MIN_SPARE ? config->max_workers :
							  MIN_SPARE;
	p->max_spare = MAX_SPARE;
	p->board_size = sizeof(struct scoreboard) +
			config->max_workers * sizeof(struct slot);
	p->board = mmap(NULL, p->board_size, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p->board == MAP_FAILED) {
		log_errno("Cannot map the worker scoreboard");
		return NULL;
	}
	p->board->append_in_progress = -1;
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
		log_errno("Cannot create the worker pipe");
		munmap(p->board, p->board_size);
		return NULL;
	}
	p->notify_read = fds[0];
	p->notify_write = fds[1];
	top_up(p);
	if (p->live == 0) {
		pool_stop(p);
		return NULL;
	}
	return p;
}

/* How long the parent may sleep: for ever, unless it is short of workers
 * and may fork more once a pause or a failed fork() is over. */
static const struct timespec *next_wakeup(struct pool *p, struct timespec *ts)
{
	long long wait_ms = RETRY_SPAWN_MS;

	if (idle_count(p) >= (int)p->min_spare ||
	    p->live >= p->config.max_workers)
		return NULL;
	if (p->no_fork_before_ms > now_ms())
		wait_ms = p->no_fork_before_ms - now_ms();
	ts->tv_sec = wait_ms / 1000;
	ts->tv_nsec = (wait_ms % 1000) * 1000000L;
	return ts;
}

int pool_run(struct pool *p)
{
	struct pollfd pfd = { .fd = p->notify_read, .events = POLLIN };
	struct timespec ts;
	int n;

	while (!lifecycle_stop_requested()) {
		reap_workers(p);
		top_up(p);
		if (p->workers_failing) {
			log_msg(LOG_ERR, "Connection processes cannot start; stopping");
			return -1;
		}
		n = ppoll(&pfd, 1, next_wakeup(p, &ts), lifecycle_wait_mask());
		if (n > 0)
			drain(p->notify_read);
		else if (n < 0 && errno != EINTR)
			log_errno("Cannot wait for connection processes");
	}
	return 0;
}

static void signal_workers(struct pool *p, int signo)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->board->slots[i].pid > 0)
			kill(p->board->slots[i].pid, signo);
}

void pool_stop(struct pool *p)
{
	long long deadline = now_ms() + STOP_GRACE_MS;
	bool killed = false;

	signal_workers(p, SIGTERM);
	for (reap_workers(p); p->live > 0; reap_workers(p)) {
		if (!killed && now_ms() > deadline) {
			log_msg(LOG_ERR, "%u connection processes ignored the stop; killing them",
				p->live);
			signal_workers(p, SIGKILL);
			killed = true;
		}
		pause_ms(20);	/* returns early on SIGCHLD */
	}
	close(p->notify_read);
	close(p->notify_write);
	munmap(p->board, p->board_size);
}
