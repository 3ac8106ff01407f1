/*
 * census: what the workers know of one another, so that the connection cap
 * holds for the whole service, not for each worker.  Owns a small table in
 * memory every worker shares, one entry per worker, written by that worker
 * (its open connections, and the one it would close first to make room)
 * and by the parent (a worker stopped, or ended), and one eventfd per
 * worker, with which another worker wakes it when it is the one to act.
 * The parent never acts on what the table says.
 */
#ifndef AESD_CENSUS_H
#define AESD_CENSUS_H

#include "conntable.h"

#include <stdbool.h>
#include <stddef.h>

#define CENSUS_NONE (-1)

/* What a worker publishes of the connection it would close first at the
 * cap: the kind of idleness (lower goes first) and since when. */
enum census_idle { CENSUS_SILENT, CENSUS_SPOKE, CENSUS_NOT_IDLE };

struct census;

/* Parent, before forking: the table and the eventfds; NULL (logged). */
struct census *census_create(unsigned workers);
void census_destroy(struct census *c);
/* Parent: worker i ended (its connections with it), or stopped/went on. */
void census_forget(struct census *c, unsigned i);
void census_mark_stopped(struct census *c, unsigned i, bool stopped);
/* The eventfd worker i watches; every worker keeps all of them. */
int census_kick_fd(const struct census *c, unsigned i);
unsigned census_workers(const struct census *c);

/* Worker i, which has open connections: publishes that count; takes a
 * place for one more, which it is about to accept, if then at most limit
 * are open in all workers together.  Any worker: how many are open. */
void census_set_open(struct census *c, unsigned i, unsigned open);
bool census_take_place(struct census *c, unsigned i, unsigned open,
		       unsigned limit);
unsigned long census_open(const struct census *c);

/* Worker i publishes its connection to close first at the cap; worker i
 * asks which running worker (itself, whatever the parent last marked,
 * included) holds the service's first one (CENSUS_NONE: no idle
 * connection anywhere). */
void census_publish_idle(struct census *c, unsigned i, enum census_idle kind,
			 long long since_ms);
int census_first_idle(const struct census *c, unsigned i);

/* What worker i publishes of its table t: its count of connections and
 * the one it would close first.  Then, at the cap: the connection of t to
 * close for a new client, if worker i holds the service's first one and
 * it has been idle long enough at now (else CONN_NONE); and, when it has
 * turned a client down, it wakes the worker that holds the first one, or
 * if none is known every other, to look again. */
void census_publish(struct census *c, unsigned i, const struct conntable *t);
uint32_t census_first_to_close(struct census *c, unsigned i,
			       const struct conntable *t, long long now);
void census_turned_down(const struct census *c, unsigned i);

/* Wakes worker i (its kick eventfd becomes readable); worker i takes the
 * wake-up back with census_kicked(). */
void census_kick(const struct census *c, unsigned i);
void census_kicked(const struct census *c, unsigned i);

#endif
