/*
 * framing: splits a byte stream into newline-terminated packets.  Pure
 * (no I/O, no logging) so it can be unit-tested and fuzzed.  It owns the
 * bytes of an incomplete packet between reads and bounds them: a packet
 * longer than max_packet bytes (newline included) is an error, never an
 * unbounded allocation.  Bytes are opaque: NUL, '\r' and non-UTF-8 are data.
 */
#ifndef AESD_FRAMING_H
#define AESD_FRAMING_H

#include <stddef.h>

struct byte_span {
	const char *data;
	size_t len;
};

struct framer {
	char *partial;		/* bytes of the packet still being received */
	size_t partial_len;
	size_t partial_cap;
	size_t max_packet;
	int packet_in_partial;	/* last packet returned lives in partial */
};

enum framer_status {
	FRAMER_NEED_MORE,	/* input consumed; no complete packet */
	FRAMER_PACKET,		/* *packet holds one complete packet */
	FRAMER_TOO_LONG,	/* packet would exceed max_packet */
	FRAMER_NO_MEMORY,
};

void framer_init(struct framer *f, size_t max_packet);
void framer_free(struct framer *f);

/*
 * Consumes bytes from *input (advancing it) until a packet is complete or
 * the input is exhausted.  On FRAMER_PACKET, *packet is valid until the next
 * call; it points into the input itself when the packet arrived in one
 * piece (no copy).  After an error the framer must be reset.
 */
enum framer_status framer_next(struct framer *f, struct byte_span *input,
			       struct byte_span *packet);

/* Bytes of an incomplete packet currently held. */
size_t framer_pending(const struct framer *f);

/* Drops any incomplete packet and releases memory beyond a small buffer. */
void framer_reset(struct framer *f);

/* Drops any incomplete packet and releases all memory; the framer stays
 * usable (an idle connection then costs no buffer at all). */
void framer_release(struct framer *f);

#endif
