/*
 * loop: a worker's event loop (nginx's ngx_process_events_and_timers and
 * ngx_event_accept).  Owns accepting from the listening socket under the
 * service's connection cap (census.h), serving each connection
 * (connection.h), deadlines, the worker's share of the buffer budget, and
 * packets that wait for the appenders' lock while everything else goes on.
 */
#ifndef AESD_LOOP_H
#define AESD_LOOP_H

#include "store.h"
#include "worker.h"

struct loop;

/* The loop of the worker s describes, which serves with store (taken
 * over); NULL (logged) if it cannot be set up. */
struct loop *loop_start(const struct worker_setup *s,
			const struct store *store);

/* Serves until the parent lets go (or a stop signal): the exit status. */
int loop_run(struct loop *l);

/* Closes every connection (each logged) and the store. */
void loop_end(struct loop *l);

#endif
