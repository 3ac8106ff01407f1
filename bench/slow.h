/* slow.h - the slow clients of the slow workload, held open while new
 * clients are timed: tricklers that send one byte every period and never a
 * newline, and big clients that send one large partial packet (no newline)
 * at once and then stay silent. One epoll thread drives them all (they cost
 * the generator little), notes when the server closes one, and samples the
 * memory of the server's process tree. */
#ifndef SLOW_H
#define SLOW_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct slow_opts {
	uint16_t port;
	int timeout_ms;		/* connecting, and the bound on settling */
	unsigned trickle;	/* tricklers */
	unsigned period_ms;	/* a trickler's byte every period */
	unsigned big;		/* big clients */
	size_t big_bytes;	/* each big client's partial packet */
	pid_t server;		/* 0: no memory figures */
};

struct slow;

/* Opens every connection (failures count as ERR_CONNECT) and starts the
 * thread: tricklers start at once, staggered over one period; big clients
 * send as fast as the server takes it. */
struct slow *slow_start(const struct slow_opts *o);

/* Returns once the server holds the slow clients at their peak: it has
 * accepted every open one, each trickler has sent a byte, and it has read
 * every big partial packet or read nothing more of them for a second (a
 * server that stops reading them). Bounded by timeout_ms, which the result
 * line tells (settle_timed_out=1). The server's PSS is sampled then, and
 * every half second after. */
void slow_wait_settled(struct slow *s);

/* Seconds since the last slow client connected. */
double slow_since(const struct slow *s);

/* Stops the thread, counts what is still open and closes it all. */
void slow_stop(struct slow *s);

/* The key=value pairs of the slow clients (see docs/bench.md). */
void slow_print(const struct slow *s);

void slow_free(struct slow *s);

#endif
