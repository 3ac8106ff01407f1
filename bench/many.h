/* many.h - thousands of loopback connections held at once (the idle and
 * held workloads): opened without waiting on any single one, and driven
 * through epoll, so that the cost of an event does not grow with their
 * number. fds[i] < 0 marks a connection that is gone; every function closes
 * what fails and sets it to -1. */
#ifndef MANY_H
#define MANY_H

#include <stdint.h>

#include "check.h"

/* Opens k connections to 127.0.0.1:port, at most a few hundred
 * connecting at once; those not connected by deadline_ns (a server that no
 * longer accepts, so the kernel drops our SYNs) fail. Failures count as
 * ERR_CONNECT. The open ones are blocking, with lo_connect()'s options.
 * Returns how many are open. */
unsigned connect_many(uint16_t port, int timeout_ms, int *fds, unsigned k,
		      uint64_t deadline_ns);

/* Sends a small packet on every open connection at once and reads every
 * response, checking it like exchange() (records pushed to out). Returns how
 * many were answered correctly by deadline_ns. */
unsigned ping_many(int *fds, unsigned k, uint64_t deadline_ns, struct recvec *out);

/* Without sending anything: closes and counts the connections that the
 * server has closed (or reset). A byte the server sent on an idle
 * connection is a response too long (ERR_LENGTH). */
unsigned closed_many(int *fds, unsigned k);

/* Ends every open connection as finish() does (shut down our side, read to
 * the server's EOF; a byte that still arrives is ERR_LENGTH), all at once,
 * and closes it. Returns how many ended cleanly by deadline_ns. */
unsigned finish_many(int *fds, unsigned k, uint64_t deadline_ns);

#endif
