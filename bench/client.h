/* client.h - blocking loopback client side of one request: connect, send a
 * packet, read its response while checking it (see check.h). */
#ifndef CLIENT_H
#define CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "util.h"

struct reader {
	char *buf;		/* receive buffer */
	size_t cap;
	const char *spot;	/* CHECK_SPOT: earlier full response */
	size_t spot_len;
	char *keep;		/* if set, the response is copied here ... */
	size_t keep_cap;	/* ... up to this many bytes */
};

int reader_init(struct reader *rd, size_t cap);
void reader_free(struct reader *rd);

/* Connected TCP socket to 127.0.0.1:port with send/receive timeouts of
 * timeout_ms and TCP_NODELAY; -1 (and ERR_CONNECT counted) on failure. */
int lo_connect(uint16_t port, int timeout_ms);
/* The same without waiting: a non-blocking socket whose connection may be
 * in progress (EINTR counts as in progress: it carries on in the kernel),
 * or -1. Once it is writable, lo_connect_done() returns 0 if it connected,
 * and makes it blocking like lo_connect()'s. Nothing is counted. */
int lo_connect_start(uint16_t port, int timeout_ms);
int lo_connect_done(int fd);

/* Sends p on fd and reads its response with the given checks. On success
 * fills *rec and returns 0; otherwise counts the error and returns -1 (the
 * connection is then unusable). */
int exchange(int fd, const struct packet *p, enum check_mode mode,
	     struct reader *rd, struct record *rec);
/* Ends a connection the way `nc -N` does: shut down our side, then read to
 * the server's EOF; any byte that still arrives is a response too long
 * (ERR_LENGTH). Returns 0 or -1 (error counted). */
int finish(int fd, struct reader *rd);

/* Incremental form for many connections at once (the idle workload). */
struct pending {
	const struct packet *p;
	struct hstate hs;
	uint64_t len;
	unsigned char tail[64];
	size_t tlen;
};

void pending_start(struct pending *pd, const struct packet *p);
/* Feeds bytes; returns 1 when the response is complete (*rec filled), 0 if
 * more is needed. Extra bytes after the end show up later as a bad prefix. */
int pending_feed(struct pending *pd, const char *d, size_t n, struct record *rec);
/* Classifies a response that stopped early: EOF (n == 0) or errno e. */
void pending_fail(const struct pending *pd, int eof, int e);


#endif
