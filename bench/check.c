/* check.c - packet ids, prefix hashing and the final verification pass. */
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

const char *const err_name[ERR_COUNT] = {
	[ERR_CONNECT] = "connect",
	[ERR_RESET] = "reset",
	[ERR_SHORT] = "short_read",
	[ERR_TIMEOUT] = "timeout",
	[ERR_LENGTH] = "wrong_length",
	[ERR_TAIL] = "wrong_tail",
	[ERR_PREFIX] = "not_prefix",
	[ERR_LOST] = "lost",
	[ERR_DUP] = "duplicate",
	[ERR_GARBAGE] = "garbage",
};

#define HASH_K 0x9E3779B97F4A7C15ULL

static uint64_t errs[ERR_COUNT];
uint64_t foreign_lines;
static uint32_t nonce;
static uint32_t next_id;
static uint32_t id_cap;
static uint32_t *id_len;	/* packet length per id */
static uint8_t *id_sent;

static inline uint64_t mix(uint64_t h, uint64_t w)
{
	h ^= w;
	h *= HASH_K;
	return (h << 29) | (h >> 35);
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t w;

	memcpy(&w, p, sizeof(w));
	return w;
}

void hs_init(struct hstate *s)
{
	memset(s, 0, sizeof(*s));
	s->h = 0x243F6A8885A308D3ULL;
}

void hs_update(struct hstate *s, const void *data, size_t n)
{
	const unsigned char *p = data;

	s->n += n;
	if (s->nc) {
		size_t take = 8 - s->nc;

		if (take > n)
			take = n;
		memcpy(s->carry + s->nc, p, take);
		s->nc += take;
		p += take;
		n -= take;
		if (s->nc < 8)
			return;
		s->h = mix(s->h, load64(s->carry));
		s->nc = 0;
	}
	for (; n >= 8; p += 8, n -= 8)
		s->h = mix(s->h, load64(p));
	memcpy(s->carry, p, n);
	s->nc = n;
}

uint64_t hs_final(const struct hstate *s)
{
	unsigned char last[8] = { 0 };
	uint64_t h;

	memcpy(last, s->carry, s->nc);
	h = mix(s->h, load64(last) ^ ((uint64_t)s->nc << 59));
	h = mix(h, s->n);
	return h ^ (h >> 31);
}

int recvec_push(struct recvec *rv, const struct record *r)
{
	if (rv->n == rv->cap) {
		size_t cap = rv->cap ? rv->cap * 2 : 256;
		struct record *v = reallocarray(rv->v, cap, sizeof(*v));

		if (!v)
			return -1;
		rv->v = v;
		rv->cap = cap;
	}
	rv->v[rv->n++] = *r;
	return 0;
}

int recvec_append(struct recvec *dst, const struct recvec *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (recvec_push(dst, &src->v[i]) < 0)
			return -1;
	return 0;
}

int check_init(uint32_t capacity)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	nonce = (uint32_t)(ts.tv_nsec ^ (ts.tv_sec << 20) ^ ((uint32_t)getpid() << 8));
	id_cap = capacity;
	id_len = calloc(capacity, sizeof(*id_len));
	id_sent = calloc(capacity, 1);
	return id_len && id_sent ? 0 : -1;
}

/* " " + tag + 8 hex + "." + up to 10 digits + "\n" */
size_t packet_min_len(void)
{
	return 1 + 1 + 8 + 1 + 10 + 1;
}

int packet_make(struct packet *p, char tag, size_t len)
{
	char trailer[32];
	int tl;
	uint32_t id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);

	if (id >= id_cap || len < packet_min_len() || len > UINT32_MAX)
		return -1;
	tl = snprintf(trailer, sizeof(trailer), " %c%08x.%010u\n", tag, nonce, id);
	p->buf = malloc(len);
	if (!p->buf)
		return -1;
	for (size_t i = 0; i < len - (size_t)tl; i++)
		p->buf[i] = (char)('a' + (id + i) % 26);
	memcpy(p->buf + len - tl, trailer, tl);
	p->id = id;
	p->len = len;
	id_len[id] = (uint32_t)len;
	return 0;
}

void packet_new(struct packet *p, char tag, size_t len)
{
	if (len < packet_min_len())
		len = packet_min_len();
	if (packet_make(p, tag, len) < 0) {
		errno = 0;
		die("packet registry full");
	}
}

void packet_free(struct packet *p)
{
	free(p->buf);
	p->buf = NULL;
}

void packet_sent(const struct packet *p)
{
	__atomic_store_n(&id_sent[p->id], 1, __ATOMIC_RELAXED);
}

void packet_abandoned(const struct packet *p)
{
	__atomic_store_n(&id_sent[p->id], 0, __ATOMIC_RELAXED);
}

void err_count(enum err_kind k)
{
	__atomic_fetch_add(&errs[k], 1, __ATOMIC_RELAXED);
}

uint64_t err_get(enum err_kind k)
{
	return __atomic_load_n(&errs[k], __ATOMIC_RELAXED);
}

uint64_t err_total(void)
{
	uint64_t t = 0;

	for (int k = 0; k < ERR_COUNT; k++)
		t += err_get(k);
	return t;
}

/* Returns the id of the line line[0..n) (n includes the newline), -2 for a
 * well-formed line of another run (a server that was not fresh), or -1. */
static int64_t line_id(const char *line, size_t n)
{
	const size_t tl = packet_min_len();
	const char *t;
	unsigned long long id = 0;
	unsigned int nn;

	if (n < tl)
		return -1;
	t = line + n - tl;
	if (t[0] != ' ' || t[10] != '.' || sscanf(t + 2, "%8x", &nn) != 1)
		return -1;
	if (nn != nonce)
		return -2;
	for (int i = 11; i < 21; i++) {
		if (t[i] < '0' || t[i] > '9')
			return -1;
		id = id * 10 + (unsigned)(t[i] - '0');
	}
	if (id >= id_cap || id_len[id] != n)
		return -1;
	for (const char *f = line; f < t; f++)
		if (*f < 'a' || *f > 'z')
			return -1;
	return (int64_t)id;
}

static int by_len(const void *a, const void *b)
{
	const struct record *x = a, *y = b;

	return x->len < y->len ? -1 : x->len > y->len;
}

uint64_t check_final(const char *ref, size_t len, struct recvec *recs)
{
	uint32_t used = next_id < id_cap ? next_id : id_cap;
	uint8_t *seen = calloc(used ? used : 1, 1);
	uint64_t *end = calloc(used ? used : 1, sizeof(*end));
	uint64_t lines = 0;
	struct hstate hs;
	size_t pos = 0;

	if (!seen || !end) {
		fprintf(stderr, "aesdload: out of memory\n");
		exit(1);
	}
	while (pos < len) {
		const char *nl = memchr(ref + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - ref - pos) + 1 : len - pos;
		int64_t id = line_id(ref + pos, n);

		lines++;
		if (id == -2) {
			foreign_lines++;
		} else if (id < 0 || id >= used) {
			err_count(ERR_GARBAGE);
		} else {
			if (seen[id] < 255)
				seen[id]++;
			end[id] = pos + n;
		}
		pos += n;
	}
	for (uint32_t id = 0; id < used; id++) {
		if (id_sent[id] && !seen[id])
			err_count(ERR_LOST);
		else if (seen[id] > 1)
			err_count(ERR_DUP);
	}

	qsort(recs->v, recs->n, sizeof(recs->v[0]), by_len);
	hs_init(&hs);
	for (size_t i = 0; i < recs->n; i++) {
		const struct record *r = &recs->v[i];

		if (r->len > len) {
			err_count(ERR_PREFIX);
			continue;
		}
		if (r->id >= used || seen[r->id] != 1 || end[r->id] != r->len) {
			err_count(ERR_LENGTH);
			continue;
		}
		if (!r->hashed)
			continue;
		/* advance over whole words only, then finish a copy with the tail */
		size_t words = (size_t)(r->len / 8) * 8;
		if (words > hs.n)
			hs_update(&hs, ref + hs.n, words - hs.n);
		struct hstate t = hs;
		hs_update(&t, ref + words, r->len - words);
		if (hs_final(&t) != r->hash)
			err_count(ERR_PREFIX);
	}
	free(seen);
	free(end);
	return lines;
}
