/*
 * conntable: a worker's connections and which of them to close when a
 * bound is reached.  Owns their slots (an id names a slot; a generation
 * tells its successive connections apart, so an event fetched for a
 * connection since closed never reaches the next one), three lists in
 * order of arrival (connections idle that never sent a byte, those idle
 * after an exchange, and those whose packet waits for the data file's
 * lock), and the sum of what the connections buffer.  Pure bookkeeping:
 * no I/O, no clock.
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

/* The lists; the idle ones first, in the order they are closed. */
enum conn_list { LIST_SILENT, LIST_SPOKE, LIST_APPENDING, LISTS, NOT_LISTED };
#define IDLE_LISTS LIST_APPENDING

struct conn_slot {
	struct conn conn;
	uint32_t generation;
	bool in_use;
	uint8_t list;		/* enum conn_list: the list it is in */
	uint32_t events;	/* what its worker watches it for; 0: nothing */
	uint32_t prev, next;	/* in that list */
	long long listed_since;	/* its conn.since_ms when listed */
	size_t buffered;	/* conn_buffered() as last accounted */
};

struct conntable {
	struct conn_slot *slots;
	uint32_t capacity, used, open;
	uint32_t free_head;
	struct { uint32_t head, tail; } lists[LISTS];
	size_t buffered;	/* over every open connection */
};

int conntable_init(struct conntable *t, uint32_t capacity);
void conntable_free(struct conntable *t);

/* A free slot for a new connection, its id in *id; NULL when full. */
struct conn *conntable_add(struct conntable *t, uint32_t *id);
/* The connection in slot id if it is still generation's; else NULL. */
struct conn *conntable_find(struct conntable *t, uint32_t id,
			    uint32_t generation);
/* After the connection changed: its list and its buffered bytes. */
void conntable_update(struct conntable *t, uint32_t id);
/* Frees the slot of a connection that was closed. */
void conntable_remove(struct conntable *t, uint32_t id);

/* The idle connection to close first to make room (one that never sent a
 * byte before any other, then the longest idle), or CONN_NONE; it may be
 * closed once it has been idle for IDLE_ENOUGH_MS. */
uint32_t conntable_first_idle(const struct conntable *t);
/* The same, if it may be closed at now; else CONN_NONE. */
uint32_t conntable_evictable(const struct conntable *t, long long now);
/* The connection whose packet has waited longest for the lock. */
uint32_t conntable_first_appending(const struct conntable *t);
/* The connection buffering the most bytes, of those buffering as many the
 * one whose packet has been under way longest (CONN_NONE if none buffers). */
uint32_t conntable_largest(const struct conntable *t);

#endif
