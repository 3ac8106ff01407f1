/*
 * worker: one worker process, an event loop that serves many connections
 * (nginx's worker).  Freshly forked, it keeps only the descriptors it needs
 * (the listening socket, the lifeline to the parent, the data file), drops
 * root when asked to, can never gain a privilege again (no_new_privs), dumps
 * no core, limits its descriptors to its share of the connections, reopens
 * the data file as its own open file description, confines itself to the
 * system calls serving needs (sandbox.h) and says it is ready.
 * Then it accepts from the listening socket that every worker shares
 * (EPOLLEXCLUSIVE: one idle worker is woken per new connection), serves
 * each connection (connection.h) with non-blocking I/O, and enforces the
 * bounds: deadlines, its share of the connection cap (conntable.h chooses
 * whom to close) and its share of the buffer budget.  It stops on a stop
 * signal or when the parent closes the lifeline, closing its connections;
 * it always ends with _exit().
 */
#ifndef AESD_WORKER_H
#define AESD_WORKER_H

#include "connection.h"
#include "sandbox.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct worker_setup {
	unsigned index, count;	/* this worker's number, and how many run */
	int listen_fd;
	int lifeline;		/* read end: hangs up when the parent lets go */
	int ready_fd;		/* to report "ready" on; -1 after start-up */
	pid_t parent;
	const char *data_file;
	const struct store_identity *data_id;
	const struct connection_limits *limits;
	unsigned max_connections;	/* every worker's together */
	uint32_t share;		/* of them, this worker's at most */
	size_t budget;		/* bytes this worker may buffer */
	int *census;		/* shared: see CENSUS_INTS below */
	const char *user;	/* NULL: keep the parent's user */
	uid_t uid;
	gid_t gid;
	bool syscall_filter;	/* confine it once ready (sandbox.h) */
	struct sandbox_report *report;	/* what the filter killed it for */
};

/* Descriptors a worker needs besides its connections. */
#define WORKER_SPARE_FDS 16
/* Exit status of a worker that could not get ready to serve. */
#define WORKER_CANNOT_START 3

/* The census, in memory every worker shares: census[i] is worker i's count
 * of open connections, written by that worker; census[count + i] is set by
 * the parent while worker i is stopped (SIGSTOP).  A worker at its share
 * closes an idle connection to make room only when the census says every
 * other worker is full too, and a stopped worker, which accepts nobody,
 * counts as full. */
#define CENSUS_INTS(count) (2 * (count))

/* Worker index's share of max connections among count workers. */
static inline uint32_t worker_share(unsigned max, unsigned count,
				    unsigned index)
{
	return max / count + (index < max % count);
}

void worker_run(const struct worker_setup *w) __attribute__((noreturn));

#endif
