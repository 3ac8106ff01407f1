/*
 * worker: the life of one connection process.  It opens the data file as
 * its own open file description, drops root when asked to, then waits for
 * a client and serves it (connection), one at a time, until it is told to
 * stop or finds itself surplus.  It keeps its state in its slot of the
 * scoreboard, the memory it shares with the pool's parent, and asks the
 * parent for more workers when few are left idle.
 */
#ifndef AESD_WORKER_H
#define AESD_WORKER_H

#include "pool.h"

#include <sys/types.h>

/* Exit status of a worker that could not get ready to serve. */
#define WORKER_CANNOT_START 3

enum slot_state { SLOT_FREE, SLOT_IDLE, SLOT_BUSY, SLOT_RETIRING };

struct slot {
	pid_t pid;		/* written by the parent only */
	int state;		/* written by the worker, except when free */
	long long forked_ms;	/* parent only */
};

/* Shared by the parent and every worker (MAP_SHARED). */
struct scoreboard {
	off_t append_in_progress;	/* see store.h */
	int idle;			/* workers in SLOT_IDLE */
	struct slot slots[];
};

/* What a worker gets from the parent that forked it. */
struct worker_setup {
	struct pool_config *config;
	struct scoreboard *board;
	struct slot *slot;
	int notify_write;	/* a byte here asks for more workers */
	pid_t parent;
	unsigned min_spare;	/* fewer idle than this: ask for more */
	unsigned max_spare;	/* more idle than this: exit */
};

void worker_run(const struct worker_setup *w) __attribute__((noreturn));

static inline void slot_set_state(struct slot *slot, int state)
{
	__atomic_store_n(&slot->state, state, __ATOMIC_SEQ_CST);
}

static inline int slot_state(const struct slot *slot)
{
	return __atomic_load_n(&slot->state, __ATOMIC_SEQ_CST);
}

#endif
