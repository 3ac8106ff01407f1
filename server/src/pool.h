/*
 * pool: the parent's side of the connection processes (worker.h).  It
 * forks them, gives a connection to an idle one, checks what each one
 * reports over its channel, keeps just enough of them (a few spares for a
 * burst, never more than the demand it sees plus those spares, nor more
 * than max_workers; idle ones above the spares retire), brakes a crash
 * loop, reaps them and stops them.
 *
 * Worker pids and states live only in the parent's own memory, which no
 * worker inherits: nothing a worker can write chooses which process the
 * parent signals or which connection it closes.  A worker that reports
 * something it has no business reporting is killed; the worst a lying
 * worker can do is change how many workers run, within the limits.
 */
#ifndef AESD_POOL_H
#define AESD_POOL_H

#include "worker.h"

#include <stdbool.h>
#include <stdint.h>

struct pool_config {
	unsigned max_workers;
	int epoll_fd;		/* the parent's; channels are added to it */
	uint64_t epoll_tag;	/* their epoll data: epoll_tag | worker index */
	struct worker_setup worker;	/* channel and parent filled in */
};

/* What a worker's report means for its connection. */
struct pool_events {
	void (*turn_ended)(void *ctx, uint32_t conn, bool close);
	void *ctx;
};

struct pool;

/* Forks the first workers; NULL if none could be forked (logged). */
struct pool *pool_start(const struct pool_config *config,
			const struct pool_events *events);

/* Waits until a worker has reported READY: 0, or -1 when workers failed
 * before that (logged) or a stop was requested. */
int pool_wait_ready(struct pool *pool);

/* Hands connection conn to an idle worker; -1 if none is idle. */
int pool_assign(struct pool *pool, uint32_t conn, int fd, const char *peer,
		long long deadline_ms);

/* Reads what the worker at index reported (an epoll event on its
 * channel). */
void pool_channel_event(struct pool *pool, uint32_t index);

/* Reaps exited workers; their connections end. */
void pool_reap(struct pool *pool);

/* Forks or retires workers, with queued connections waiting for one.
 * Returns in how many ms it wants to be called again, or -1. */
long long pool_adjust(struct pool *pool, unsigned queued);

/* Stops every worker (SIGTERM, then SIGKILL after a grace period), reaps
 * them all and frees the pool. */
void pool_stop(struct pool *pool);

#endif
