/*
 * fuzz_framing: libFuzzer target for server/src/framing.c.
 *
 * The input describes a TCP stream and how it arrives:
 *   bytes 0-1  max_packet: 1..4096, or with the top bit set 4097..12288
 *              (above the 4096 bytes a framer keeps after a reset)
 *   bytes 2-5  seed of the generator that cuts the rest into recv() chunks
 *   byte 6     below 16: the (n+1)-th realloc() in framing.c fails, as on
 *              a device out of memory (linked with --wrap=realloc)
 *   bytes 7-   the stream itself
 * Each chunk is copied into a buffer of exactly its size (so ASan sees any
 * read past it) and fed to framer_next() the way connection.c does.  A
 * FRAMER_TOO_LONG or FRAMER_NO_MEMORY ends the "connection": the framer is
 * reset, as a worker does before its next client, and the next chunk starts
 * a new one.
 *
 * Invariants checked (abort() on violation):
 *  - every packet ends with '\n' and holds no other '\n';
 *  - no packet is longer than max_packet;
 *  - packets + pending bytes == exactly the bytes of this connection
 *    consumed so far (nothing lost, duplicated, reordered or invented);
 *  - FRAMER_TOO_LONG only when the packet being received really exceeds
 *    max_packet, and never is a longer packet or pending run accepted;
 *  - FRAMER_NO_MEMORY only when realloc() really failed in that call;
 *  - the held buffer never grows past max(max_packet, first allocation),
 *    and is released down to a small size by framer_reset();
 *  - framer_pending() is 0 right after a packet is handed out.
 */
#include "check.h"
#include "framing.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_MAX_PACKET 4096
#define LARGE_MAX_PACKET 12288
#define HEADER_LEN 7
#define NO_FAILURE 0
#define FIRST_ALLOCATION 256	/* framing.c's smallest buffer */
#define KEPT_AFTER_RESET 4096	/* framing.c's KEEP_CAPACITY */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void *__real_realloc(void *ptr, size_t size);
void *__wrap_realloc(void *ptr, size_t size);

/* realloc() as framing.c sees it: the fail_at-th call fails. */
static unsigned realloc_calls, realloc_fail_at;
static int realloc_failed;

void *__wrap_realloc(void *ptr, size_t size)
{
	if (++realloc_calls == realloc_fail_at) {
		realloc_failed = 1;
		return NULL;
	}
	return __real_realloc(ptr, size);
}

static uint32_t next_random(uint32_t *state)
{
	/* xorshift32: cheap, deterministic, never 0 with a non-zero seed */
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

/* Chunk lengths: mostly tiny (byte-by-byte arrival), sometimes large. */
static size_t chunk_length(uint32_t *state, size_t left)
{
	uint32_t r = next_random(state);
	size_t n;

	switch (r & 3) {
	case 0: n = 1; break;
	case 1: n = 1 + (r >> 8) % 8; break;
	case 2: n = 1 + (r >> 8) % 256; break;
	default: n = 1 + (r >> 8) % 8192; break;
	}
	return n < left ? n : left;
}

struct connection {
	const uint8_t *stream;	/* this connection's first byte */
	size_t fed;		/* bytes handed to the framer so far */
	uint8_t *packets;	/* every packet received, concatenated */
	size_t packets_len;
};

static size_t find_newline(const uint8_t *p, size_t from, size_t to)
{
	const uint8_t *nl = memchr(p + from, '\n', to - from);

	return nl ? (size_t)(nl - p) : to;
}

static void check_packet(const struct connection *c, size_t max_packet,
			 const struct byte_span *packet)
{
	CHECK(packet->len >= 1 && packet->len <= max_packet);
	CHECK(packet->data[packet->len - 1] == '\n');
	CHECK(memchr(packet->data, '\n', packet->len - 1) == NULL);
	/* it is the next packet of the stream, byte for byte */
	CHECK(c->packets_len + packet->len <= c->fed);
	CHECK(memcmp(packet->data, c->stream + c->packets_len, packet->len) ==
	      0);
}

/* After a chunk is fully consumed: packets + pending == what was fed. */
static void check_consumed(const struct connection *c, const struct framer *f,
			   size_t max_packet)
{
	size_t pending = framer_pending(f);

	CHECK(c->packets_len + pending == c->fed);
	CHECK(pending <= max_packet);
	CHECK(memchr(c->stream + c->packets_len, '\n', pending) == NULL);
	if (pending > 0)
		CHECK(memcmp(f->partial, c->stream + c->packets_len, pending) ==
		      0);
	CHECK(f->partial_len <= f->partial_cap);
	CHECK(f->partial_cap <= (max_packet > FIRST_ALLOCATION ?
				 max_packet : FIRST_ALLOCATION));
}

/* The framer said TOO_LONG after fed bytes (of which the chunk ends at
 * chunk_end): the packet being received must really be too long. */
static void check_too_long(const struct connection *c, size_t chunk_end,
			   size_t max_packet)
{
	size_t start = c->packets_len;
	size_t nl = find_newline(c->stream, start, chunk_end);
	size_t length = nl < chunk_end ? nl - start + 1 : chunk_end - start;

	CHECK(length > max_packet);
}

/* Feeds one chunk; returns 0 to go on, -1 when the connection ended. */
static int feed_chunk(struct connection *c, struct framer *f,
		      size_t max_packet, const uint8_t *bytes, size_t n)
{
	uint8_t *copy = malloc(n);
	struct byte_span input, packet;
	int rc = 0;

	CHECK(copy != NULL);
	memcpy(copy, bytes, n);
	input.data = (const char *)copy;
	input.len = n;
	for (;;) {
		size_t before = input.len;
		enum framer_status status;

		realloc_failed = 0;
		status = framer_next(f, &input, &packet);

		CHECK(input.len <= before);
		c->fed += before - input.len;
		if (status == FRAMER_NEED_MORE) {
			CHECK(input.len == 0);
			check_consumed(c, f, max_packet);
			break;
		}
		if (status == FRAMER_TOO_LONG) {
			check_too_long(c, c->fed + input.len, max_packet);
			rc = -1;
			break;
		}
		if (status == FRAMER_NO_MEMORY) {
			CHECK(realloc_failed);
			rc = -1;
			break;
		}
		CHECK(!realloc_failed);
		CHECK(status == FRAMER_PACKET);
		check_packet(c, max_packet, &packet);
		memcpy(c->packets + c->packets_len, packet.data, packet.len);
		c->packets_len += packet.len;
		CHECK(framer_pending(f) == 0);
	}
	free(copy);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct connection c;
	struct framer f;
	size_t max_packet, offset;
	uint32_t state;

	if (size < HEADER_LEN)
		return 0;
	max_packet = (size_t)data[0] | (size_t)(data[1] & 0x7f) << 8;
	if (data[1] & 0x80)
		max_packet = SMALL_MAX_PACKET + 1 +
			     max_packet % (LARGE_MAX_PACKET - SMALL_MAX_PACKET);
	else
		max_packet = 1 + max_packet % SMALL_MAX_PACKET;
	state = (uint32_t)data[2] | (uint32_t)data[3] << 8 |
		(uint32_t)data[4] << 16 | (uint32_t)data[5] << 24;
	if (state == 0)
		state = 1;
	realloc_calls = 0;
	realloc_fail_at = data[6] < 16 ? data[6] + 1U : NO_FAILURE;
	data += HEADER_LEN;
	size -= HEADER_LEN;

	framer_init(&f, max_packet);
	memset(&c, 0, sizeof(c));
	c.stream = data;
	c.packets = malloc(size + 1);
	CHECK(c.packets != NULL);
	offset = 0;
	while (offset < size) {
		size_t n = chunk_length(&state, size - offset);

		if (feed_chunk(&c, &f, max_packet, data + offset, n) != 0) {
			/* a new connection on the same worker */
			framer_reset(&f);
			CHECK(framer_pending(&f) == 0);
			CHECK(f.partial_cap <= KEPT_AFTER_RESET);
			c.stream = data + offset + n;
			c.fed = 0;
			c.packets_len = 0;
		}
		offset += n;
	}
	/* the client leaves: the worker drops what is pending */
	framer_reset(&f);
	CHECK(framer_pending(&f) == 0);
	CHECK(f.partial_cap <= KEPT_AFTER_RESET);
	free(c.packets);
	framer_free(&f);
	return 0;
}
