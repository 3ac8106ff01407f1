/*
 * holder: the parent's event loop, and the connections it holds.  It
 * accepts every connection (logging "Accepted connection from" once),
 * holds those with no work in flight in its epoll set without reading a
 * byte, hands one to an idle worker (pool.h) as soon as it becomes
 * readable, takes it back when the worker reports it idle at a packet
 * boundary, enforces the idle timeout on held connections, and closes
 * every connection itself (logging "Closed connection from" once), also
 * when its client leaves while it is held.  So an idle connection costs a
 * descriptor and a hundred bytes here, never a process (Apache's event
 * MPM, nginx's reusable connections).  It bounds how many are open: when
 * full, the longest-idle held connection makes room; if none is held,
 * accepting pauses and clients wait in the listen backlog.
 */
#ifndef AESD_HOLDER_H
#define AESD_HOLDER_H

#include "pool.h"

struct holder_config {
	int listen_fd;
	unsigned max_connections;	/* at most 65536 */
	unsigned idle_timeout_s;	/* 0: never */
};

struct holder;

/* Sets up the loop and starts the workers (pool, for which the holder
 * fills in the epoll fields); NULL on error (logged). */
struct holder *holder_start(const struct holder_config *config,
			    const struct pool_config *pool);

/* Waits until a worker is ready to serve: 0, or -1 (see pool.h). */
int holder_wait_ready(struct holder *holder);

/* Serves until a stop signal. */
void holder_run(struct holder *holder);

/* Stops the workers, closes every connection and frees everything. */
void holder_stop(struct holder *holder);

#endif
