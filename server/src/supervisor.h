/*
 * supervisor: what the root parent does once the socket is bound and the
 * data file created (nginx's master).  Owns the workers' lives: forking a
 * fixed number of them with what they share (the census), waiting at
 * start-up until one says it has started, restarting one that exits
 * unasked after a pause that doubles with each failure in a row, and
 * stopping them by closing the lifeline they watch (no signal, so no
 * capability to signal another user; SIGKILL only after a grace period).
 * It also watches the data file's path.  It accepts no connection and
 * reads nothing a worker writes but the one byte that says "started", and
 * the call a worker killed by its system call filter recorded, which only
 * names it in a log line (sandbox.h).
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

/* Waits until a worker has started serving: 0, or -1 when every worker
 * failed before that (logged) or a stop was requested. */
int supervisor_wait_started(struct supervisor *s);

/* Keeps the workers running until a stop signal. */
void supervisor_run(struct supervisor *s);

/* Stops every worker, reaps them all and frees everything. */
void supervisor_stop(struct supervisor *s);

#endif
