/* conntable: a worker's connection slots, idle lists and bound victims. */
#include "conntable.h"

#include <stdlib.h>

int conntable_init(struct conntable *t, uint32_t capacity)
{
	int list;

	t->capacity = capacity;
	t->used = t->open = 0;
	t->free_head = CONN_NONE;
	t->buffered = 0;
	for (list = 0; list < LISTS; list++)
		t->lists[list].head = t->lists[list].tail = CONN_NONE;
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

	if (s->list == NOT_LISTED)
		return;
	if (s->prev != CONN_NONE)
		t->slots[s->prev].next = s->next;
	else
		t->lists[s->list].head = s->next;
	if (s->next != CONN_NONE)
		t->slots[s->next].prev = s->prev;
	else
		t->lists[s->list].tail = s->prev;
	s->list = NOT_LISTED;
}

/* At the tail: each list stays in the order its connections joined it
 * (for the idle ones, since_ms only grows, so that is idle order). */
static void list_at_tail(struct conntable *t, uint32_t id, enum conn_list list)
{
	struct conn_slot *s = &t->slots[id];

	s->list = (uint8_t)list;
	s->next = CONN_NONE;
	s->prev = t->lists[list].tail;
	if (s->prev != CONN_NONE)
		t->slots[s->prev].next = id;
	else
		t->lists[list].head = id;
	t->lists[list].tail = id;
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
	s->list = NOT_LISTED;
	s->events = 0;
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
	enum conn_list list = NOT_LISTED;

	t->buffered += conn_buffered(&s->conn) - s->buffered;
	s->buffered = conn_buffered(&s->conn);
	if (s->conn.appending)
		list = LIST_APPENDING;
	else if (conn_is_idle(&s->conn))
		list = s->conn.heard_from ? LIST_SPOKE : LIST_SILENT;
	/* Relisted at the tail when it went idle anew since it was listed. */
	if (s->list == list && (list >= IDLE_LISTS ||
				s->listed_since == s->conn.since_ms))
		return;
	unlist(t, id);
	if (list != NOT_LISTED) {
		list_at_tail(t, id, list);
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

uint32_t conntable_first_idle(const struct conntable *t)
{
	int list;

	for (list = 0; list < IDLE_LISTS; list++)
		if (t->lists[list].head != CONN_NONE)
			return t->lists[list].head;
	return CONN_NONE;
}

uint32_t conntable_evictable(const struct conntable *t, long long now)
{
	uint32_t first = conntable_first_idle(t);

	/* never-spoke ones go first, even when they are younger */
	if (first == CONN_NONE ||
	    t->slots[first].conn.since_ms + IDLE_ENOUGH_MS > now)
		return CONN_NONE;
	return first;
}

uint32_t conntable_first_appending(const struct conntable *t)
{
	return t->lists[LIST_APPENDING].head;
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
