/*
 * worker: one worker process (nginx's worker), from its fork to its
 * _exit().  Owns its set-up: the descriptors it keeps, the privilege drop,
 * its limits and, once ready, its system call filter (sandbox.h), its own
 * open file descriptions of the data file and the lock, and saying it has
 * started; then it runs its event loop (loop.h) until the parent lets go.
 */
#ifndef AESD_WORKER_H
#define AESD_WORKER_H

#include "census.h"
#include "connection.h"
#include "sandbox.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct worker_setup {
	unsigned index;		/* this worker's number */
	int listen_fd;
	int lifeline;		/* read end: hangs up when the parent lets go */
	int started_fd;		/* to say "started" on; -1 after start-up */
	pid_t parent;
	const char *data_file;
	const struct store_identity *data_id;
	const struct connection_limits *limits;
	unsigned max_connections;	/* in every worker together */
	size_t budget;		/* bytes this worker may buffer */
	struct census *census;
	const char *user;	/* NULL: keep the parent's user */
	uid_t uid;
	gid_t gid;
	bool syscall_filter;	/* confine it once ready (sandbox.h) */
	struct sandbox_report *report;	/* what the filter killed it for */
};

/* Exit status of a worker that could not get ready to serve. */
#define WORKER_CANNOT_START 3

/* The descriptor limit a worker needs: any worker may hold every
 * connection (and one more while it closes an idle one for a new one),
 * the eventfds of every worker, and its own few. */
static inline unsigned long worker_descriptors(unsigned max_connections,
					       unsigned workers)
{
	return max_connections + 1UL + workers + 16;
}

void worker_run(const struct worker_setup *w) __attribute__((noreturn));

#endif
