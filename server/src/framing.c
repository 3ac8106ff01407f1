/* framing: newline-delimited packets out of a byte stream. */
#include "framing.h"

#include <stdlib.h>
#include <string.h>

/* Kept across packets; anything larger is returned to the allocator so an
 * idle connection costs little memory after one big packet. */
#define KEEP_CAPACITY 4096

void framer_init(struct framer *f, size_t max_packet)
{
	memset(f, 0, sizeof(*f));
	f->max_packet = max_packet;
}

void framer_free(struct framer *f)
{
	free(f->partial);
	memset(f, 0, sizeof(*f));
}

size_t framer_pending(const struct framer *f)
{
	return f->packet_in_partial ? 0 : f->partial_len;
}

void framer_release(struct framer *f)
{
	free(f->partial);
	f->partial = NULL;
	f->partial_len = f->partial_cap = 0;
	f->packet_in_partial = 0;
}

void framer_reset(struct framer *f)
{
	f->partial_len = 0;
	f->packet_in_partial = 0;
	if (f->partial_cap > KEEP_CAPACITY) {
		free(f->partial);
		f->partial = NULL;
		f->partial_cap = 0;
	}
}

static int ensure_capacity(struct framer *f, size_t needed)
{
	size_t cap = f->partial_cap ? f->partial_cap : 256;
	char *grown;

	if (needed <= f->partial_cap)
		return 0;
	while (cap < needed)
		cap = cap > f->max_packet / 2 ? f->max_packet : cap * 2;
	grown = realloc(f->partial, cap);
	if (!grown)
		return -1;
	f->partial = grown;
	f->partial_cap = cap;
	return 0;
}

/* Appends n bytes to the partial packet, within the max_packet bound. */
static enum framer_status keep(struct framer *f, const char *data, size_t n)
{
	if (n > f->max_packet - f->partial_len)
		return FRAMER_TOO_LONG;
	if (n == 0)
		return FRAMER_NEED_MORE;
	if (ensure_capacity(f, f->partial_len + n) != 0)
		return FRAMER_NO_MEMORY;
	memcpy(f->partial + f->partial_len, data, n);
	f->partial_len += n;
	return FRAMER_NEED_MORE;
}

enum framer_status framer_next(struct framer *f, struct byte_span *input,
			       struct byte_span *packet)
{
	const char *newline;
	size_t take;
	enum framer_status status;

	if (f->packet_in_partial)
		framer_reset(f);
	if (input->len == 0)
		return FRAMER_NEED_MORE;
	newline = memchr(input->data, '\n', input->len);
	take = newline ? (size_t)(newline - input->data) + 1 : input->len;
	if (newline && f->partial_len == 0) {
		if (take > f->max_packet)
			return FRAMER_TOO_LONG;
		packet->data = input->data;	/* whole packet in the input */
		packet->len = take;
	} else {
		status = keep(f, input->data, take);
		if (status != FRAMER_NEED_MORE)
			return status;
		if (newline) {
			packet->data = f->partial;
			packet->len = f->partial_len;
			f->packet_in_partial = 1;
		}
	}
	input->data += take;
	input->len -= take;
	return newline ? FRAMER_PACKET : FRAMER_NEED_MORE;
}
