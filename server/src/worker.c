/* worker: one worker process, from its fork to its _exit(). */
#include "worker.h"

#include "lifecycle.h"
#include "log.h"
#include "loop.h"
#include "options.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

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

/* A big packet's buffer goes back to the system when it is freed,
 * instead of raising glibc's threshold and staying in the heap. */
static void return_big_buffers(void)
{
#ifdef M_MMAP_THRESHOLD
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024);
#endif
}

/* Everything up to serving.  The data file is reopened after the
 * privilege drop, so the worker has exactly its user's access to it (and
 * needs no capability beyond switching users, as under the systemd
 * unit). */
static struct loop *get_ready(const struct worker_setup *s)
{
	struct store_identity id = *s->data_id;
	struct store store;

	keep_only_needed_descriptors(s);
	log_reopen();
	if (s->user && lifecycle_drop_privileges(s->user, s->uid, s->gid) != 0)
		return NULL;
	/* If the parent dies, stop as if it had said so.  (Set after the
	 * privilege drop, which clears it.) */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != s->parent)
		return NULL;
	return_big_buffers();
	if (sandbox_limit(worker_descriptors(s->max_connections,
					     census_workers(s->census))) != 0 ||
	    store_open(&store, s->data_file, &id) != 0)
		return NULL;
	store_release(&id);
	return loop_start(s, &store);
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

void worker_run(const struct worker_setup *setup)
{
	struct loop *loop = get_ready(setup);
	int status;

	if (!loop || confine(setup) != 0)
		_exit(WORKER_CANNOT_START);
	say_started(setup->started_fd);
	log_startup_done();	/* from now on, stderr only with -s */
	status = loop_run(loop);
	loop_end(loop);
	_exit(status);
}
