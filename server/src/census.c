/* census: the workers' shared table and the eventfds that wake them. */
#include "census.h"

#include "log.h"
#include "mstime.h"
#include "options.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* One worker's entry.  Times are milliseconds since the census was made,
 * kept in 32 bits (no atomic wider than a word, so no libatomic on 32-bit
 * targets): ages are taken modulo 2^32, right for any age under 49 days. */
struct entry {
	unsigned open;		/* connections, plus one being accepted */
	int stopped;		/* set by the parent */
	int idle_kind;		/* enum census_idle */
	uint32_t idle_since;
};

struct census {
	struct entry *entries;	/* shared by every worker */
	unsigned workers;
	long long base_ms;
	int kick[MAX_WORKERS_LIMIT];
};

static struct census the_census;

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static uint32_t stamp(const struct census *c, long long ms)
{
	return (uint32_t)(ms - c->base_ms);
}

/* How long ago a stamp was, in ms. */
static uint32_t age(const struct census *c, uint32_t then, long long now)
{
	return stamp(c, now) - then;
}

static size_t entries_size(unsigned workers)
{
	return workers * sizeof(struct entry);
}

struct census *census_create(unsigned workers)
{
	struct census *c = &the_census;
	unsigned i;

	c->workers = workers;
	c->base_ms = now_ms();
	for (i = 0; i < workers; i++)
		c->kick[i] = -1;
	c->entries = mmap(NULL, entries_size(workers), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c->entries == MAP_FAILED) {
		c->entries = NULL;
		log_errno("Cannot share the workers' census: mmap(%zu bytes)",
			  entries_size(workers));
		return NULL;
	}
	for (i = 0; i < workers; i++) {
		census_forget(c, i);
		c->kick[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (c->kick[i] < 0) {
			log_errno("Cannot make worker %u's wake-up: eventfd", i);
			census_destroy(c);
			return NULL;
		}
	}
	return c;
}

void census_destroy(struct census *c)
{
	unsigned i;

	for (i = 0; i < c->workers; i++) {
		if (c->kick[i] >= 0)
			close(c->kick[i]);
		c->kick[i] = -1;
	}
	if (c->entries)
		munmap(c->entries, entries_size(c->workers));
	c->entries = NULL;
}

void census_forget(struct census *c, unsigned i)
{
	struct entry *e = &c->entries[i];

	__atomic_store_n(&e->open, 0, __ATOMIC_SEQ_CST);
	STORE(e->stopped, 0);
	STORE(e->idle_kind, CENSUS_NOT_IDLE);
}

void census_mark_stopped(struct census *c, unsigned i, bool stopped)
{
	STORE(c->entries[i].stopped, stopped);
}

int census_kick_fd(const struct census *c, unsigned i)
{
	return c->kick[i];
}

unsigned census_workers(const struct census *c)
{
	return c->workers;
}

/* ---------------------------------------------------------- the cap */

unsigned long census_open(const struct census *c)
{
	unsigned long open = 0;
	unsigned i;

	for (i = 0; i < c->workers; i++)
		open += __atomic_load_n(&c->entries[i].open, __ATOMIC_SEQ_CST);
	return open;
}

void census_set_open(struct census *c, unsigned i, unsigned open)
{
	__atomic_store_n(&c->entries[i].open, open, __ATOMIC_SEQ_CST);
}

/* Count first, then look: of two workers taking the last place at once,
 * at least one sees the other's count (both may, and both give it back;
 * the listening socket stays readable, so they look again at once). */
bool census_take_place(struct census *c, unsigned i, unsigned open,
		       unsigned limit)
{
	census_set_open(c, i, open + 1);
	if (census_open(c) <= limit)
		return true;
	census_set_open(c, i, open);
	return false;
}

void census_publish_idle(struct census *c, unsigned i, enum census_idle kind,
			 long long since_ms)
{
	struct entry *e = &c->entries[i];
	uint32_t since = stamp(c, since_ms);

	/* written only when it changed: most turns of the loop change
	 * nothing, and others read these words all the time */
	if (LOAD(e->idle_since) != since)
		STORE(e->idle_since, since);
	if (LOAD(e->idle_kind) != (int)kind)
		STORE(e->idle_kind, (int)kind);
}

/* Never-spoke before spoke, then longest idle, then the lower index; a
 * stopped worker can close nothing, so its connections are not offered. */
int census_first_idle(const struct census *c, unsigned me)
{
	long long now = now_ms();
	int first = CENSUS_NONE, first_kind = CENSUS_NOT_IDLE;
	uint32_t first_age = 0;
	unsigned i;

	for (i = 0; i < c->workers; i++) {
		const struct entry *e = &c->entries[i];
		int kind = LOAD(e->idle_kind);
		uint32_t idle_for = age(c, LOAD(e->idle_since), now);

		if ((i != me && LOAD(e->stopped)) || kind >= CENSUS_NOT_IDLE)
			continue;
		if (kind < first_kind || (kind == first_kind &&
					  idle_for > first_age)) {
			first = (int)i;
			first_kind = kind;
			first_age = idle_for;
		}
	}
	return first;
}

/* ------------------------------------------------ what a worker does */

void census_publish(struct census *c, unsigned i, const struct conntable *t)
{
	uint32_t first = conntable_first_idle(t);

	if (LOAD(c->entries[i].open) != t->open)
		census_set_open(c, i, t->open);
	if (first == CONN_NONE)
		census_publish_idle(c, i, CENSUS_NOT_IDLE, 0);
	else
		census_publish_idle(c, i, t->slots[first].list == LIST_SILENT ?
					  CENSUS_SILENT : CENSUS_SPOKE,
				    t->slots[first].conn.since_ms);
}

uint32_t census_first_to_close(struct census *c, unsigned i,
			       const struct conntable *t, long long now)
{
	census_publish(c, i, t);	/* its own entry as it is now */
	if (census_first_idle(c, i) != (int)i)
		return CONN_NONE;
	return conntable_evictable(t, now);
}

void census_turned_down(const struct census *c, unsigned i)
{
	int first = census_first_idle(c, i);
	unsigned j;

	if (first != CENSUS_NONE) {
		if (first != (int)i)
			census_kick(c, (unsigned)first);
		return;
	}
	for (j = 0; j < c->workers; j++)
		if (j != i)
			census_kick(c, j);
}

/* ---------------------------------------------------------- wake-ups */

void census_kick(const struct census *c, unsigned i)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so the worker will wake anyway */
	if (write(c->kick[i], &one, sizeof(one)) != sizeof(one) &&
	    errno != EAGAIN)
		log_errno("Cannot wake worker %u: write(eventfd)", i);
}

void census_kicked(const struct census *c, unsigned i)
{
	uint64_t count;

	if (read(c->kick[i], &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_errno("Cannot take worker %u's wake-up: read(eventfd)", i);
}
