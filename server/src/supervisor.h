/*
 * supervisor: all the root parent does once the socket is bound and the
 * data file created (nginx's master).  It forks a fixed number of workers
 * (worker.h) and gives each its share of the connection cap and of the
 * buffer budget; at start-up it waits until one says it is ready; it
 * restarts a worker that exits unasked, after a pause that doubles with
 * each failure in a row (always logged, never giving up); and it stops them
 * at exit by closing the lifeline every worker watches, which needs no
 * signal and so no capability to signal another user.  Only a worker that
 * has not stopped after a grace period is killed.  The parent accepts no
 * connection, receives no descriptor and reads nothing a worker writes but
 * the one byte that says "ready" at start-up, and the call a worker killed
 * by its system call filter recorded, which only names it in a log line
 * (sandbox.h): a worker taken over by a client has no way to steer it.
 */
#ifndef AESD_SUPERVISOR_H
#define AESD_SUPERVISOR_H

#include "worker.h"

/* What every worker shares; the supervisor fills in the rest. */
struct supervisor_config {
	unsigned workers;
	size_t total_budget;	/* split between the workers */
	struct worker_setup worker;
};

struct supervisor;

/* Forks the workers; NULL if none could be forked (logged). */
struct supervisor *supervisor_start(const struct supervisor_config *config);

/* Waits until a worker is ready to serve: 0, or -1 when every worker
 * failed before that (logged) or a stop was requested. */
int supervisor_wait_ready(struct supervisor *s);

/* Keeps the workers running until a stop signal. */
void supervisor_run(struct supervisor *s);

/* Stops every worker, reaps them all and frees everything. */
void supervisor_stop(struct supervisor *s);

#endif
