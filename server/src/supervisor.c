/* supervisor: the parent, which forks, restarts and stops the workers. */
#include "supervisor.h"

#include "lifecycle.h"
#include "log.h"
#include "mstime.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* After a worker exit the parent did not ask for, or a failed fork, no
 * fork for a pause that doubles with each one in a row.  A worker that ran
 * longer than the longest pause before it ended was not in a loop. */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define STOP_GRACE_MS 5000

struct slot {
	pid_t pid;		/* 0: none running */
	long long started_ms;
	bool stopped;		/* by SIGSTOP, as the kernel told */
};

struct supervisor {
	struct supervisor_config config;
	struct slot slots[MAX_WORKERS_LIMIT];
	struct census *census;	/* shared with the workers */
	struct sandbox_report *reports;	/* one per worker, read at a SIGSYS */
	int lifeline[2];	/* the workers hold [0]; closing [1] stops them */
	int started[2];		/* start-up only: [0] the parent's, else -1 */
	int watch_fd;		/* on the data file's path, or -1 */
	int path_state;		/* what was last logged of it */
	bool stopping;
	unsigned failures;	/* unasked exits or failed forks in a row */
	long long no_fork_before_ms;
};

static struct supervisor the_supervisor;

/* Logs what failed, at priority, and pauses forking. */
static void note_failure(struct supervisor *s, int priority, const char *what)
{
	long long pause = backoff_ms(s->failures++, RETRY_MIN_MS, RETRY_MAX_MS);

	s->no_fork_before_ms = now_ms() + pause;
	log_msg(priority, "%s; next worker in %lld ms", what, pause);
}

static void become_worker(struct supervisor *s, unsigned index)
{
	struct worker_setup setup = s->config.worker;
	unsigned n = s->config.workers;
	size_t budget = s->config.total_budget / n;

	setup.index = index;
	setup.lifeline = s->lifeline[0];
	setup.started_fd = s->started[1];
	setup.census = s->census;
	setup.report = &s->reports[index];
	/* Never less than one packet's worth, or a packet could not fit. */
	setup.budget = budget > setup.limits->max_packet ?
			       budget : setup.limits->max_packet;
	worker_run(&setup);
}

static void spawn(struct supervisor *s, unsigned index)
{
	pid_t pid;

	sandbox_clear_report(&s->reports[index]);
	pid = fork();

	if (pid == 0)
		become_worker(s, index);
	if (pid < 0) {
		char what[80];

		snprintf(what, sizeof(what), "fork of a worker: %s",
			 strerror(errno));
		note_failure(s, LOG_ERR, what);
		return;
	}
	s->slots[index] = (struct slot){ .pid = pid, .started_ms = now_ms() };
}

/* Forks the workers that are missing, unless the brake says to wait:
 * returns in how many ms to try again, or -1. */
static long long fork_missing(struct supervisor *s)
{
	unsigned i;

	for (i = 0; i < s->config.workers; i++) {
		long long wait_ms = s->no_fork_before_ms - now_ms();

		if (s->slots[i].pid)
			continue;
		if (wait_ms > 0)
			return wait_ms;
		spawn(s, i);
		if (!s->slots[i].pid)	/* failed: the brake set a pause */
			return s->no_fork_before_ms - now_ms();
	}
	return -1;
}

static bool killed_by_filter(const struct supervisor *s, int status)
{
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS &&
	       s->config.worker.syscall_filter;
}

/* A worker the system call filter killed: which call, from what its
 * SIGSYS handler recorded (named, never acted on). */
static void describe_filter_kill(const struct supervisor *s,
				 const struct slot *w, char *what, size_t size)
{
	char call[80];

	sandbox_describe(&s->reports[w - s->slots], call, sizeof(call));
	snprintf(what, size, "Worker %ld killed by the system call filter: it called %s",
		 (long)w->pid, call);
}

static void describe_exit(struct supervisor *s, const struct slot *w,
			  int status)
{
	int priority = LOG_ERR;
	char what[160];

	if (now_ms() - w->started_ms > RETRY_MAX_MS)
		s->failures = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		/* a stop signal sent to it alone, as `kill $(pidof aesdsocket)`
		 * does just before it signals this process too */
		priority = LOG_NOTICE;
		snprintf(what, sizeof(what), "Worker %ld stopped", (long)w->pid);
	} else if (killed_by_filter(s, status))
		describe_filter_kill(s, w, what, sizeof(what));
	else if (WIFSIGNALED(status))
		snprintf(what, sizeof(what), "Worker %ld killed by signal %d",
			 (long)w->pid, WTERMSIG(status));
	else if (WEXITSTATUS(status) == WORKER_CANNOT_START)
		snprintf(what, sizeof(what), "Worker %ld could not start",
			 (long)w->pid);
	else
		snprintf(what, sizeof(what),
			 "Worker %ld exited unasked (status %d)", (long)w->pid,
			 WEXITSTATUS(status));
	note_failure(s, priority, what);
}

static unsigned running(const struct supervisor *s)
{
	unsigned i, n = 0;

	for (i = 0; i < s->config.workers; i++)
		n += s->slots[i].pid != 0;
	return n;
}

static void reap(struct supervisor *s)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG | WUNTRACED |
					  WCONTINUED)) > 0) {
		unsigned i;

		for (i = 0; i < s->config.workers; i++) {
			struct slot *w = &s->slots[i];

			if (w->pid != pid)
				continue;
			/* a stopped worker can make no room at the cap */
			if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
				w->stopped = WIFSTOPPED(status);
				census_mark_stopped(s->census, i, w->stopped);
				continue;
			}
			/* a filter kill is logged even at a stop: it means
			 * an attacker or a call missing from the allow-list */
			if ((!s->stopping && !lifecycle_stop_requested()) ||
			    killed_by_filter(s, status))
				describe_exit(s, w, status);
			census_forget(s->census, i);	/* and its connections */
			w->pid = 0;
			w->stopped = false;
		}
	}
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

struct supervisor *supervisor_start(const struct supervisor_config *config)
{
	struct supervisor *s = &the_supervisor;

	memset(s, 0, sizeof(*s));
	s->config = *config;
	s->config.worker.parent = getpid();
	s->lifeline[0] = s->lifeline[1] = s->started[0] = s->started[1] = -1;
	s->watch_fd = -1;
	s->census = census_create(config->workers);
	if (!s->census)
		return NULL;
	s->reports = sandbox_map_reports(s->config.workers);
	if (!s->reports) {
		supervisor_stop(s);
		return NULL;
	}
	if (pipe2(s->lifeline, O_CLOEXEC) != 0 ||
	    pipe2(s->started, O_CLOEXEC) != 0) {
		log_errno("Cannot make the pipes to the workers: pipe2");
		supervisor_stop(s);
		return NULL;
	}
	fork_missing(s);
	close_fd(&s->started[1]);	/* EOF on [0] once every worker let go */
	if (running(s) == 0) {
		supervisor_stop(s);
		return NULL;
	}
	s->watch_fd = store_watch(config->worker.data_file);
	return s;
}

int supervisor_wait_started(struct supervisor *s)
{
	struct pollfd pfd = { .fd = s->started[0], .events = POLLIN };
	char byte;

	while (!lifecycle_stop_requested()) {
		if (ppoll(&pfd, 1, NULL, lifecycle_wait_mask()) < 0 &&
		    errno != EINTR)
			break;
		if (lifecycle_child_changed())
			reap(s);
		if (pfd.revents == 0)
			continue;
		if (read(s->started[0], &byte, 1) == 1) {
			close_fd(&s->started[0]);
			return 0;
		}
		break;	/* every worker ended before it started */
	}
	return -1;
}

void supervisor_run(struct supervisor *s)
{
	struct pollfd path = { .fd = s->watch_fd, .events = POLLIN };

	while (!lifecycle_stop_requested()) {
		long long wait_ms;
		struct timespec timeout;

		if (lifecycle_child_changed())
			reap(s);
		wait_ms = fork_missing(s);
		timeout = ms_timespec(wait_ms);
		if (ppoll(&path, 1, wait_ms >= 0 ? &timeout : NULL,
			  lifecycle_wait_mask()) > 0 && path.revents)
			store_check_path(s->config.worker.data_file,
					 s->config.worker.data_id,
					 s->watch_fd, &s->path_state);
	}
}

/* A worker stopped (SIGSTOP) would stop only when killed: it goes on,
 * finishes what it was doing (an append, perhaps) and stops cleanly. */
static void continue_stopped(struct supervisor *s)
{
	unsigned i;

	for (i = 0; i < s->config.workers; i++)
		if (s->slots[i].pid && s->slots[i].stopped &&
		    kill(s->slots[i].pid, SIGCONT) != 0)
			log_errno("Cannot continue stopped worker %ld: kill",
				  (long)s->slots[i].pid);
}

static void kill_workers(struct supervisor *s)
{
	unsigned i;

	log_msg(LOG_ERR, "%u workers did not stop within %d ms; killing them",
		running(s), STOP_GRACE_MS);
	for (i = 0; i < s->config.workers; i++)
		if (s->slots[i].pid && kill(s->slots[i].pid, SIGKILL) != 0)
			log_errno("Cannot kill worker %ld: kill",
				  (long)s->slots[i].pid);
}

void supervisor_stop(struct supervisor *s)
{
	long long deadline = now_ms() + STOP_GRACE_MS;
	bool killed = false;

	s->stopping = true;
	close_fd(&s->lifeline[1]);	/* every worker sees it hang up */
	continue_stopped(s);
	close_fd(&s->started[0]);
	close_fd(&s->started[1]);
	while (running(s) > 0) {
		lifecycle_sleep_ms(20);	/* returns early on SIGCHLD */
		reap(s);
		if (running(s) == 0 || now_ms() < deadline)
			continue;
		if (killed) {
			log_msg(LOG_ERR, "%u workers did not stop; they end with this process",
				running(s));
			break;
		}
		kill_workers(s);
		killed = true;
		deadline = now_ms() + STOP_GRACE_MS;
	}
	close_fd(&s->lifeline[0]);
	close_fd(&s->watch_fd);
	if (s->census)
		census_destroy(s->census);
	s->census = NULL;
	sandbox_unmap_reports(s->reports, s->config.workers);
	s->reports = NULL;
}
