/* pool: the parent's side of the connection processes. */
#include "pool.h"

#include "channel.h"
#include "lifecycle.h"
#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

/* Idle workers kept ready for a burst, and the most kept once it is over
 * (those above it retire after RETIRE_AFTER_MS idle). */
#define MIN_SPARE 2
#define MAX_SPARE 8
#define RETIRE_AFTER_MS 1000
/* After a worker exit the parent did not ask for, or a failed fork, no
 * fork for a pause that doubles with each one in a row. */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define STOP_GRACE_MS 5000

enum worker_state { W_FREE, W_STARTING, W_IDLE, W_BUSY, W_LEAVING };

struct worker_rec {
	pid_t pid;
	int channel;		/* the parent's end; -1 once closed */
	enum worker_state state;
	bool asked_to_leave;
	uint32_t conn;		/* while busy */
	long long since_ms;	/* forked, or idle since */
};

struct pool {
	struct pool_config config;
	struct pool_events events;
	struct worker_rec *workers;	/* parent memory: not inherited */
	pid_t parent;
	bool ready;		/* some worker has reported READY */
	bool start_failed;	/* and before that, one failed */
	unsigned failures;	/* unasked exits or failed forks in a row */
	long long no_fork_before_ms;
};

static struct pool the_pool;

static size_t table_size(const struct pool *p)
{
	return p->config.max_workers * sizeof(struct worker_rec);
}

/* Logs what failed, and why (strerror, or NULL), and pauses forking. */
static void note_failure(struct pool *p, const char *what, const char *why)
{
	long long pause = backoff_ms(p->failures++, RETRY_MIN_MS, RETRY_MAX_MS);

	p->no_fork_before_ms = now_ms() + pause;
	if (!p->ready)
		p->start_failed = true;
	log_msg(LOG_ERR, "%s%s%s; no new connection process for %lld ms", what,
		why ? ": " : "", why ? why : "", pause);
}

/* The worker's channel is closed; the connection it served ends. */
static void let_go(struct pool *p, struct worker_rec *w)
{
	bool busy = w->state == W_BUSY;

	if (w->channel >= 0)
		close(w->channel);
	w->channel = -1;
	w->state = W_LEAVING;
	if (busy)
		p->events.turn_ended(p->events.ctx, w->conn, true);
}

/* Kills a worker the parent cannot go on with.  Whatever went wrong was
 * dealt with where it was found, so its exit is not counted again. */
static void dismiss(struct pool *p, struct worker_rec *w)
{
	kill(w->pid, SIGKILL);
	w->asked_to_leave = true;
	let_go(p, w);
}

static void __attribute__((noreturn)) become_worker(struct pool *p,
						    int channel)
{
	struct worker_setup setup = p->config.worker;

	setup.channel = channel;
	setup.parent = p->parent;
	worker_run(&setup);
}

static void spawn_worker(struct pool *p, struct worker_rec *w)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int fds[2];
	pid_t pid;

	if (channel_pair(fds) != 0) {
		note_failure(p, "Cannot create a channel for a connection process",
			     strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0)
		become_worker(p, fds[1]);
	if (pid < 0) {
		const char *why = strerror(errno);

		close(fds[0]);
		close(fds[1]);
		note_failure(p, "Cannot fork a connection process", why);
		return;
	}
	close(fds[1]);
	*w = (struct worker_rec){ .pid = pid, .channel = fds[0],
				  .state = W_STARTING, .since_ms = now_ms() };
	ev.data.u64 = p->config.epoll_tag | (uint64_t)(w - p->workers);
	if (epoll_ctl(p->config.epoll_fd, EPOLL_CTL_ADD, fds[0], &ev) != 0) {
		log_errno("Cannot watch a connection process");
		dismiss(p, w);
	}
}

struct pool *pool_start(const struct pool_config *config,
			const struct pool_events *events)
{
	struct pool *p = &the_pool;

	memset(p, 0, sizeof(*p));
	p->config = *config;
	p->events = *events;
	p->parent = getpid();
	p->workers = lifecycle_parent_memory(table_size(p));
	if (!p->workers) {
		log_errno("Cannot allocate the table of connection processes");
		return NULL;
	}
	pool_adjust(p, 0);
	if (p->start_failed) {
		pool_stop(p);
		return NULL;
	}
	return p;
}

/* Checks one report against what the parent knows of the worker. */
static int take_report(struct pool *p, struct worker_rec *w,
		       const struct channel_msg *msg)
{
	switch (msg->command) {
	case CHANNEL_READY:
		if (w->state != W_STARTING)
			return -1;
		p->ready = true;
		break;
	case CHANNEL_IDLE:
	case CHANNEL_CLOSE:
		if (w->state != W_BUSY || msg->conn != w->conn)
			return -1;
		p->failures = 0;	/* it did its job */
		p->events.turn_ended(p->events.ctx, w->conn,
				     msg->command == CHANNEL_CLOSE);
		break;
	default:
		return -1;
	}
	w->state = W_IDLE;
	w->since_ms = now_ms();
	return 0;
}

void pool_channel_event(struct pool *p, uint32_t index)
{
	struct worker_rec *w;
	struct channel_msg msg;
	int n;

	if (index >= p->config.max_workers)
		return;
	w = &p->workers[index];
	if (w->channel < 0)
		return;
	/* One message per event: epoll reports the channel again if there
	 * is more, which saves a read that would find nothing. */
	n = channel_receive(w->channel, &msg, NULL);
	if (n > 0 && take_report(p, w, &msg) == 0)
		return;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0 || (n < 0 && errno == EBADMSG)) {
		/* A report it had no business sending.  It counts as a failure
		 * now: if it survives the kill (no CAP_KILL), its reaping must
		 * not be what the next fork waits for. */
		char what[80];

		snprintf(what, sizeof(what),
			 "Connection process %ld sent an invalid message", (long)w->pid);
		note_failure(p, what, NULL);
		dismiss(p, w);
		return;
	}
	let_go(p, w);	/* its channel closed or failed: it is leaving */
}

static void describe_exit(struct pool *p, const struct worker_rec *w,
			  int status)
{
	char what[96];

	if (WIFSIGNALED(status))
		snprintf(what, sizeof(what),
			 "Connection process %ld killed by signal %d",
			 (long)w->pid, WTERMSIG(status));
	else if (WEXITSTATUS(status) == WORKER_CANNOT_START)
		snprintf(what, sizeof(what),
			 "Connection process %ld could not start", (long)w->pid);
	else
		snprintf(what, sizeof(what),
			 "Connection process %ld exited unasked (status %d)",
			 (long)w->pid, WEXITSTATUS(status));
	note_failure(p, what, NULL);
}

static struct worker_rec *worker_of(struct pool *p, pid_t pid)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->workers[i].state != W_FREE && p->workers[i].pid == pid)
			return &p->workers[i];
	return NULL;
}

void pool_reap(struct pool *p)
{
	struct worker_rec *w;
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		w = worker_of(p, pid);
		if (!w)
			continue;
		let_go(p, w);
		if (!w->asked_to_leave && !lifecycle_stop_requested())
			describe_exit(p, w, status);
		w->state = W_FREE;
		w->pid = 0;
	}
}

/* The most recently idle worker: the busy ones stay warm, the others age
 * towards retirement. */
static struct worker_rec *idle_worker(struct pool *p, bool newest)
{
	struct worker_rec *found = NULL;
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++) {
		struct worker_rec *w = &p->workers[i];

		if (w->state == W_IDLE && (!found ||
		    (newest ? w->since_ms > found->since_ms :
			      w->since_ms < found->since_ms)))
			found = w;
	}
	return found;
}

int pool_assign(struct pool *p, uint32_t conn, int fd, const char *peer,
		long long deadline_ms)
{
	struct worker_rec *w = idle_worker(p, true);
	struct channel_msg msg = { .command = CHANNEL_ASSIGN, .conn = conn,
				   .deadline_ms = deadline_ms };

	if (!w)
		return -1;
	snprintf(msg.peer, sizeof(msg.peer), "%s", peer);
	if (channel_send(w->channel, &msg, fd) != 0) {
		char what[80];

		snprintf(what, sizeof(what),
			 "Cannot hand a connection to process %ld", (long)w->pid);
		note_failure(p, what, strerror(errno));
		dismiss(p, w);
		return -1;
	}
	w->state = W_BUSY;
	w->conn = conn;
	return 0;
}

static void retire(struct pool *p, struct worker_rec *w)
{
	w->asked_to_leave = true;	/* it exits when its channel closes */
	let_go(p, w);
}

struct census {
	unsigned live, ready_or_starting, idle;
	unsigned unexplained;	/* left unasked, not yet reaped */
};

static struct census count_workers(const struct pool *p)
{
	struct census c = { 0, 0, 0, 0 };
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++) {
		const struct worker_rec *w = &p->workers[i];

		c.live += w->state != W_FREE && w->state != W_LEAVING;
		c.ready_or_starting += w->state == W_IDLE ||
				       w->state == W_STARTING;
		c.idle += w->state == W_IDLE;
		c.unexplained += w->state == W_LEAVING && !w->asked_to_leave;
	}
	return c;
}

static struct worker_rec *free_record(struct pool *p)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->workers[i].state == W_FREE)
			return &p->workers[i];
	return NULL;
}

/* Forks until queued + MIN_SPARE workers are idle or starting; not while
 * a worker that left unasked is still to be reaped, since its reaping is
 * what brakes a crash loop. */
static long long fork_for_demand(struct pool *p, unsigned queued)
{
	struct census c = count_workers(p);
	struct worker_rec *w;

	if (c.unexplained > 0)
		return -1;	/* SIGCHLD will wake the loop */
	while (c.ready_or_starting < queued + MIN_SPARE &&
	       c.live < p->config.max_workers && (w = free_record(p))) {
		long long wait_ms = p->no_fork_before_ms - now_ms();

		if (wait_ms > 0)
			return wait_ms;
		spawn_worker(p, w);
		if (w->state == W_FREE)
			return p->no_fork_before_ms - now_ms();
		c.live++;
		c.ready_or_starting++;
	}
	return -1;
}

/* Retires the longest-idle workers above MAX_SPARE once they have been
 * idle for RETIRE_AFTER_MS. */
static long long retire_surplus(struct pool *p)
{
	struct census c = count_workers(p);

	while (c.idle > MAX_SPARE) {
		struct worker_rec *w = idle_worker(p, false);
		long long wait_ms = w->since_ms + RETIRE_AFTER_MS - now_ms();

		if (wait_ms > 0)
			return wait_ms;
		retire(p, w);
		c.idle--;
	}
	return -1;
}

long long pool_adjust(struct pool *p, unsigned queued)
{
	long long fork_ms = fork_for_demand(p, queued);
	long long retire_ms = retire_surplus(p);

	if (fork_ms < 0 || (retire_ms >= 0 && retire_ms < fork_ms))
		return retire_ms;
	return fork_ms;
}

int pool_wait_ready(struct pool *p)
{
	struct epoll_event events[8];
	int i, n;

	while (!p->ready) {
		if (p->start_failed || lifecycle_stop_requested())
			return -1;
		n = epoll_pwait(p->config.epoll_fd, events, 8, -1,
				lifecycle_wait_mask());
		for (i = 0; i < n; i++)
			pool_channel_event(p, (uint32_t)events[i].data.u64);
		if (lifecycle_child_exited())
			pool_reap(p);
	}
	return 0;
}

static unsigned unreaped(const struct pool *p)
{
	unsigned i, n = 0;

	for (i = 0; i < p->config.max_workers; i++)
		n += p->workers[i].state != W_FREE;
	return n;
}

static void signal_workers(struct pool *p, int signo)
{
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++)
		if (p->workers[i].state != W_FREE)
			kill(p->workers[i].pid, signo);
}

/* Workers stop when their channel closes: a signal would need a
 * capability the parent may not have (CAP_KILL, to signal another user),
 * and a worker in a turn finishes its append first either way. */
void pool_stop(struct pool *p)
{
	long long deadline = now_ms() + STOP_GRACE_MS;
	bool killed = false;
	unsigned i;

	for (i = 0; i < p->config.max_workers; i++) {
		p->workers[i].asked_to_leave = true;
		if (p->workers[i].state != W_FREE)
			let_go(p, &p->workers[i]);
	}
	while (unreaped(p) > 0) {
		lifecycle_sleep_ms(20);	/* returns early on SIGCHLD */
		pool_reap(p);
		if (now_ms() < deadline)
			continue;
		if (killed) {
			log_msg(LOG_ERR, "%u connection processes did not stop; they end with this process",
				unreaped(p));
			break;
		}
		log_msg(LOG_ERR, "%u connection processes ignored the stop; killing them",
			unreaped(p));
		signal_workers(p, SIGKILL);
		killed = true;
		deadline = now_ms() + STOP_GRACE_MS;
	}
	lifecycle_parent_memory_free(p->workers, table_size(p));
	p->workers = NULL;
}
