/*
 * deadlines: which connection's deadline comes first.  A binary min-heap of
 * (time, id) with a position index per id, so that setting, moving or
 * clearing one id's deadline costs O(log n) and the earliest is read in
 * O(1).  Each id has at most one deadline.  Pure (no I/O, no clock), so it
 * is unit-tested on its own; a worker keeps one for its connections.
 */
#ifndef AESD_DEADLINES_H
#define AESD_DEADLINES_H

#include <stdbool.h>
#include <stdint.h>

struct deadline {
	long long at_ms;
	uint32_t id;
};

struct deadlines {
	struct deadline *heap;
	uint32_t *position;	/* by id: index in heap + 1; 0: none set */
	uint32_t count, capacity;	/* ids are 0 .. capacity - 1 */
};

/* 0, or -1 when out of memory. */
int deadlines_init(struct deadlines *d, uint32_t capacity);
void deadlines_free(struct deadlines *d);

/* Sets id's deadline to at_ms, replacing the one it had. */
void deadlines_set(struct deadlines *d, uint32_t id, long long at_ms);
void deadlines_clear(struct deadlines *d, uint32_t id);

/* The earliest deadline, if any is set. */
bool deadlines_first(const struct deadlines *d, struct deadline *first);

#endif
