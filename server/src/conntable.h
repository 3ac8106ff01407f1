/*
 * conntable: a worker's connections and the choice of which one to close
 * when a bound is reached.  Owns their slots (an id names a slot, and a
 * generation tells the slot's successive connections apart, so an event
 * fetched for a connection that has since closed never reaches the next
 * one), the two lists of idle connections in the order they went idle
 * (those that never sent a byte, and those idle after an exchange), and
 * the sum of what the connections buffer.  At the connection cap it names a
 * connection that has been idle for at least a second, one that never sent
 * a byte before any other, longest idle first; at the buffer budget, the
 * connection buffering most (the longest, of those buffering as much).  Pure bookkeeping: no I/O, no clock.
 */
#ifndef AESD_CONNTABLE_H
#define AESD_CONNTABLE_H

#include "connection.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONN_NONE UINT32_MAX
/* How long a connection must have been idle before it may be closed to
 * make room: a client between two packets, or whose first packet is on its
 * way, is never taken for an idle one. */
#define IDLE_ENOUGH_MS 1000

enum idle_kind { IDLE_SILENT, IDLE_AFTER_EXCHANGE, IDLE_KINDS, NOT_IDLE };

struct conn_slot {
	struct conn conn;
	uint32_t generation;
	bool in_use;
	uint8_t idle;		/* enum idle_kind: the list it is in */
	uint32_t prev, next;	/* in that list */
	long long listed_since;	/* its conn.since_ms when listed */
	size_t buffered;	/* conn_buffered() as last accounted */
};

struct conntable {
	struct conn_slot *slots;
	uint32_t capacity, used, open;
	uint32_t free_head;
	struct { uint32_t head, tail; } idle[IDLE_KINDS];
	size_t buffered;	/* over every open connection */
};

int conntable_init(struct conntable *t, uint32_t capacity);
void conntable_free(struct conntable *t);

/* A free slot for a new connection, its id in *id; NULL when full. */
struct conn *conntable_add(struct conntable *t, uint32_t *id);
/* The connection in slot id if it is still generation's; else NULL. */
struct conn *conntable_find(struct conntable *t, uint32_t id,
			    uint32_t generation);
/* After the connection changed: its idle list and its buffered bytes. */
void conntable_update(struct conntable *t, uint32_t id);
/* Frees the slot of a connection that was closed. */
void conntable_remove(struct conntable *t, uint32_t id);

/* The connection to close to make room at now, or CONN_NONE.  While any
 * connection that never sent a byte is idle, no other is chosen. */
uint32_t conntable_evictable(const struct conntable *t, long long now);
/* The connection buffering the most bytes, of those buffering as many the
 * one whose packet has been under way longest (CONN_NONE if none buffers). */
uint32_t conntable_largest(const struct conntable *t);

#endif
