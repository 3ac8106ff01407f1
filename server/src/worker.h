/*
 * worker: the life of one connection process.  Freshly forked, it keeps
 * only the descriptors it needs (its channel to the parent and the data
 * file), drops root when asked to, reopens the data file as its own open
 * file description with the user it now runs as, and reports READY.  Then
 * it serves, one at a time, the connections the parent hands it, each for
 * one turn (connection.h), and tells the parent whether to hold the
 * connection again or close it.  It ends when the parent closes its
 * channel (retired) or on a stop signal, always with _exit().
 */
#ifndef AESD_WORKER_H
#define AESD_WORKER_H

#include "connection.h"
#include "store.h"

#include <sys/types.h>

struct worker_setup {
	int channel;		/* the worker's end */
	pid_t parent;
	const char *data_file;
	const struct store_identity *data_id;
	const struct connection_limits *limits;
	const char *user;	/* NULL: keep the parent's user */
	uid_t uid;
	gid_t gid;
};

/* Exit status of a worker that could not get ready to serve. */
#define WORKER_CANNOT_START 3

void worker_run(const struct worker_setup *w) __attribute__((noreturn));

#endif
