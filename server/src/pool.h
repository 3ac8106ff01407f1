/*
 * pool: the pre-forked connection processes.  Each worker process serves
 * one connection at a time, so a crash or hang in one connection cannot
 * touch the others, while the cost of fork() is paid ahead of time instead
 * of on every accept.  The pool keeps a few idle workers waiting in
 * accept(), forks more as they get busy (never more than max_workers:
 * beyond that clients wait in the listen backlog), lets surplus idle
 * workers exit after a burst, reaps every child, and on stop lets busy
 * workers finish their current append before they close.
 *
 * With a user, each worker (worker.h) drops root right after fork() and
 * reopening the data file, before it touches a client.  The parent keeps
 * root but never reads a byte from a client: it only forks, reaps,
 * forwards stop signals and, at exit, deletes the data file and the
 * pidfile (which lives in a directory only root may write, /var/run).
 */
#ifndef AESD_POOL_H
#define AESD_POOL_H

#include "connection.h"
#include "store.h"

struct pool_config {
	int listen_fd;
	const char *data_file;
	struct store_identity data_id;
	struct connection_limits limits;
	unsigned max_workers;
	const char *user;	/* NULL: workers keep the parent's user */
	uid_t uid;
	gid_t gid;
};

struct pool;

/* Creates the pool and forks its first workers; NULL on error (logged). */
struct pool *pool_start(const struct pool_config *config);

/* Supervises workers until a stop signal (returns 0) or until workers
 * cannot start (returns -1). */
int pool_run(struct pool *pool);

/* Tells every worker to stop, waits for all of them, frees the pool. */
void pool_stop(struct pool *pool);

#endif
