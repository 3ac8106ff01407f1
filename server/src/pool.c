/* pool: the parent's side of the pre-forked connection processes. */
#include "pool.h"

#include "lifecycle.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* The slot of a worker; pid 0 finds a free one. */
static struct slot *slot_of(struct pool *p, pid_t pid)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->board->slots[i].pid == pid)
			return &p->board->slots[i];
	return NULL;
}

static void __attribute__((noreturn)) start_worker(struct pool *p,
						   struct slot *slot)
{
	const struct worker_setup setup = {
		.config = &p->config,
		.board = p->board,
		.slot = slot,
		.notify_write = p->notify_write,
		.parent = p->parent,
		.min_spare = p->min_spare,
		.max_spare = p->max_spare,
	};

	close(p->notify_read);
	worker_run(&setup);
}

static int spawn_worker(struct pool *p)
{
	struct slot *slot = slot_of(p, 0);
	pid_t pid;

	if (!slot)
		return -1;
	/* Counted idle before it runs, so the parent never over-forks. */
	slot_set_state(slot, SLOT_IDLE);
	__atomic_add_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
	pid = fork();
	if (pid < 0) {
		log_errno("Cannot fork a connection process");
		__atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
		slot_set_state(slot, SLOT_FREE);
		return -1;
	}
	if (pid == 0)
		start_worker(p, slot);
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
		if (slot_state(slot) == SLOT_IDLE)
			__atomic_sub_fetch(&p->board->idle, 1, __ATOMIC_SEQ_CST);
		note_exit(p, slot, status);
		slot_set_state(slot, SLOT_FREE);
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
		lifecycle_sleep_ms(20);	/* returns early on SIGCHLD */
	}
	close(p->notify_read);
	close(p->notify_write);
	munmap(p->board, p->board_size);
}
