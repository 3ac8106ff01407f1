/* conntable: a worker's connection slots, idle lists and bound victims. */
#include "conntable.h"

#include <stdlib.h>

int conntable_init(struct conntable *t, uint32_t capacity)
{
	int kind;

	t->capacity = capacity;
	t->used = t->open = 0;
	t->free_head = CONN_NONE;
	t->buffered = 0;
	for (kind = 0; kind < IDLE_KINDS; kind++)
		t->idle[kind].head = t->idle[kind].tail = CONN_NONE;
	/* calloc: pages of slots never used are never touched */
	t->slots = calloc(capacity, sizeof(*t->slots));
	return t->slots ? 0 : -1;
}

void conntable_free(struct conntable *t)
{
	free(t->slots);
	t->slots = NULL;
}

static void unlist(struct conntable *t, uint32_t id)
{
	struct conn_slot *s = &t->slots[id];

	if (s->idle == NOT_IDLE)
		return;
	if (s->prev != CONN_NONE)
		t->slots[s->prev].next = s->next;
	else
		t->idle[s->idle].head = s->next;
	if (s->next != CONN_NONE)
		t->slots[s->next].prev = s->prev;
	else
		t->idle[s->idle].tail = s->prev;
	s->idle = NOT_IDLE;
}

/* At the tail: since_ms only grows, so each list stays in idle order. */
static void list_at_tail(struct conntable *t, uint32_t id, enum idle_kind kind)
{
	struct conn_slot *s = &t->slots[id];

	s->idle = (uint8_t)kind;
	s->next = CONN_NONE;
	s->prev = t->idle[kind].tail;
	if (s->prev != CONN_NONE)
		t->slots[s->prev].next = id;
	else
		t->idle[kind].head = id;
	t->idle[kind].tail = id;
}

struct conn *conntable_add(struct conntable *t, uint32_t *id)
{
	struct conn_slot *s;

	if (t->free_head != CONN_NONE) {
		*id = t->free_head;
		t->free_head = t->slots[*id].next;
	} else if (t->used < t->capacity) {
		*id = t->used++;
	} else {
		return NULL;
	}
	s = &t->slots[*id];
	s->in_use = true;
	s->idle = NOT_IDLE;
	s->buffered = 0;
	t->open++;
	return &s->conn;
}

struct conn *conntable_find(struct conntable *t, uint32_t id,
			    uint32_t generation)
{
	if (id >= t->used || !t->slots[id].in_use ||
	    t->slots[id].generation != generation)
		return NULL;
	return &t->slots[id].conn;
}

void conntable_update(struct conntable *t, uint32_t id)
{
	struct conn_slot *s = &t->slots[id];
	enum idle_kind kind = NOT_IDLE;

	t->buffered += conn_buffered(&s->conn) - s->buffered;
	s->buffered = conn_buffered(&s->conn);
	if (conn_is_idle(&s->conn))
		kind = s->conn.heard_from ? IDLE_AFTER_EXCHANGE : IDLE_SILENT;
	/* Relisted at the tail when it went idle anew since it was listed. */
	if (s->idle == kind && (kind == NOT_IDLE ||
				s->listed_since == s->conn.since_ms))
		return;
	unlist(t, id);
	if (kind != NOT_IDLE) {
		list_at_tail(t, id, kind);
		s->listed_since = s->conn.since_ms;
	}
}

void conntable_remove(struct conntable *t, uint32_t id)
{
	struct conn_slot *s = &t->slots[id];

	unlist(t, id);
	t->buffered -= s->buffered;
	s->buffered = 0;
	s->in_use = false;
	s->generation++;
	s->next = t->free_head;
	t->free_head = id;
	t->open--;
}

uint32_t conntable_evictable(const struct conntable *t, long long now)
{
	int kind;

	for (kind = 0; kind < IDLE_KINDS; kind++) {
		uint32_t head = t->idle[kind].head;

		if (head == CONN_NONE)
			continue;
		/* silent ones go first, even when they are younger */
		return t->slots[head].conn.since_ms + IDLE_ENOUGH_MS <= now ?
			       head : CONN_NONE;
	}
	return CONN_NONE;
}

/* Whether slot a should go before slot b: more bytes, or as many held
 * for longer (a client sending a big packet at full speed holds it for
 * milliseconds, one that parks a big partial packet for much longer). */
static bool holds_more(const struct conn_slot *a, const struct conn_slot *b)
{
	if (a->buffered != b->buffered)
		return a->buffered > b->buffered;
	return a->conn.since_ms < b->conn.since_ms;
}

uint32_t conntable_largest(const struct conntable *t)
{
	uint32_t id, largest = CONN_NONE;

	for (id = 0; id < t->used; id++) {
		const struct conn_slot *s = &t->slots[id];

		if (s->in_use && s->buffered > 0 &&
		    (largest == CONN_NONE || holds_more(s, &t->slots[largest])))
			largest = id;
	}
	return largest;
}
