/* deadlines: a min-heap of connection deadlines, indexed by id. */
#include "deadlines.h"

#include <stdlib.h>

int deadlines_init(struct deadlines *d, uint32_t capacity)
{
	d->count = 0;
	d->capacity = capacity;
	d->heap = calloc(capacity, sizeof(*d->heap));
	d->position = calloc(capacity, sizeof(*d->position));
	if (d->heap && d->position)
		return 0;
	deadlines_free(d);
	return -1;
}

void deadlines_free(struct deadlines *d)
{
	free(d->heap);
	free(d->position);
	d->heap = NULL;
	d->position = NULL;
	d->count = d->capacity = 0;
}

static void place(struct deadlines *d, uint32_t index, struct deadline entry)
{
	d->heap[index] = entry;
	d->position[entry.id] = index + 1;
}

static void sift_up(struct deadlines *d, uint32_t index)
{
	struct deadline entry = d->heap[index];

	while (index > 0) {
		uint32_t parent = (index - 1) / 2;

		if (d->heap[parent].at_ms <= entry.at_ms)
			break;
		place(d, index, d->heap[parent]);
		index = parent;
	}
	place(d, index, entry);
}

static void sift_down(struct deadlines *d, uint32_t index)
{
	struct deadline entry = d->heap[index];

	for (;;) {
		uint32_t child = 2 * index + 1;

		if (child >= d->count)
			break;
		if (child + 1 < d->count &&
		    d->heap[child + 1].at_ms < d->heap[child].at_ms)
			child++;
		if (entry.at_ms <= d->heap[child].at_ms)
			break;
		place(d, index, d->heap[child]);
		index = child;
	}
	place(d, index, entry);
}

/* Puts the entry at index where it belongs after its time changed. */
static void restore(struct deadlines *d, uint32_t index)
{
	if (index > 0 && d->heap[(index - 1) / 2].at_ms > d->heap[index].at_ms)
		sift_up(d, index);
	else
		sift_down(d, index);
}

void deadlines_set(struct deadlines *d, uint32_t id, long long at_ms)
{
	uint32_t index;

	if (id >= d->capacity)
		return;
	if (d->position[id]) {
		index = d->position[id] - 1;
		d->heap[index].at_ms = at_ms;
	} else {
		index = d->count++;
		place(d, index, (struct deadline){ at_ms, id });
	}
	restore(d, index);
}

void deadlines_clear(struct deadlines *d, uint32_t id)
{
	uint32_t index;

	if (id >= d->capacity || !d->position[id])
		return;
	index = d->position[id] - 1;
	d->position[id] = 0;
	if (index == --d->count)
		return;
	place(d, index, d->heap[d->count]);
	restore(d, index);
}

bool deadlines_first(const struct deadlines *d, struct deadline *first)
{
	if (d->count == 0)
		return false;
	*first = d->heap[0];
	return true;
}
