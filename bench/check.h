/* check.h - what the load generator knows about the protocol: packets that
 * carry a unique id, a streaming prefix hash, per-response records, and the
 * final pass that checks every response against the server's final file. */
#ifndef CHECK_H
#define CHECK_H

#include <stddef.h>
#include <stdint.h>

enum err_kind {
	ERR_CONNECT,	/* connect() failed or timed out */
	ERR_RESET,	/* ECONNRESET/EPIPE while sending or reading */
	ERR_SHORT,	/* server closed before the response ended */
	ERR_TIMEOUT,	/* no progress within the timeout */
	ERR_LENGTH,	/* length is not the file size when the packet landed */
	ERR_TAIL,	/* response ended with a line that is not ours */
	ERR_PREFIX,	/* content is not a prefix of the final file */
	ERR_LOST,	/* a packet we sent is not in the final file */
	ERR_DUP,	/* a packet of ours is in the final file more than once */
	ERR_GARBAGE,	/* the final file has a line nobody sent */
	ERR_COUNT
};

extern const char *const err_name[ERR_COUNT];

/* Streaming hash over 8-byte words of the absolute stream, so the hash of
 * any prefix of the final file can be recomputed in one pass. */
struct hstate {
	uint64_t h;
	uint64_t n;
	unsigned char carry[8];
	unsigned nc;
};

void hs_init(struct hstate *s);
void hs_update(struct hstate *s, const void *p, size_t n);
uint64_t hs_final(const struct hstate *s);

/* How much of a response is checked while it is read. */
enum check_mode {
	CHECK_HASH,	/* whole response hashed, checked as a prefix */
	CHECK_SPOT,	/* length, tail and a spot check per chunk */
	CHECK_LEN,	/* length and tail only (bulk growth of the file) */
};

struct record {
	uint32_t id;
	uint8_t hashed;
	uint64_t len;
	uint64_t hash;
};

struct recvec {
	struct record *v;
	size_t n, cap;
};

int recvec_push(struct recvec *rv, const struct record *r);
int recvec_append(struct recvec *dst, const struct recvec *src);

/* A packet of this run: filler, then " <tag><nonce>.<id>\n". */
struct packet {
	uint32_t id;
	size_t len;
	char *buf;
};

/* Run-wide registry of ids; safe to use from several threads. */
int check_init(uint32_t capacity);
size_t packet_min_len(void);
/* Allocates an id and formats a packet of len bytes (at least
 * packet_min_len()); returns -1 when the registry is full. */
int packet_make(struct packet *p, char tag, size_t len);
/* As packet_make, but at least packet_min_len() bytes long; a full registry
 * means the capacity given to check_init() was wrong: exits. */
void packet_new(struct packet *p, char tag, size_t len);
void packet_free(struct packet *p);
/* Marks the packet as handed to the kernel in full. */
void packet_sent(const struct packet *p);
/* Undoes packet_sent() for a packet whose client gave up waiting for its
 * response: it may or may not reach the file, and either is correct. */
void packet_abandoned(const struct packet *p);

void err_count(enum err_kind k);
uint64_t err_get(enum err_kind k);
uint64_t err_total(void);

/* Checks every record against the final file ref[0..len): each one must end
 * exactly where its packet sits and (if hashed) be a prefix of ref; each sent
 * packet must be there once, and every line must be one of ours. Counts
 * errors; returns the number of lines in ref. */
uint64_t check_final(const char *ref, size_t len, struct recvec *recs);
/* Lines of other runs seen by check_final (not an error). */
extern uint64_t foreign_lines;

#endif
