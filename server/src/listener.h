/*
 * listener: the listening TCP socket and peer addresses.  Owns the choice
 * of address family (one dual-stack IPv6 socket where the kernel has IPv6,
 * IPv4 otherwise), SO_REUSEADDR, an optional numeric bind address, taking
 * over a socket passed by systemd (LISTEN_FDS), and printing peers (IPv4
 * peers of a dual-stack socket as plain dotted IPv4, never "::ffff:").
 */
#ifndef AESD_LISTENER_H
#define AESD_LISTENER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

/* INET6_ADDRSTRLEN plus room for a scope id */
#define PEER_NAME_LEN 64

/* Binds and listens; returns the socket or -1 (logged).  A NULL
 * bind_address means every address. */
int listener_open(const char *bind_address, unsigned port);

/* Returns the listening socket systemd passed to this process, -1 when
 * there is none (not socket-activated) and -2 on a malformed hand-over
 * (logged).  Clears the LISTEN_* variables either way. */
int listener_from_systemd(void);

/* Sets TCP_NODELAY on the listening socket; every accepted connection
 * inherits it.  Responses go out in several writes, and without it Nagle's
 * algorithm and the peer's delayed ACK stall each one by ~40 ms.
 * (TCP_DEFER_ACCEPT was tried and left out: a client's first packet has
 * nearly always arrived by the time it is accepted anyway, and it keeps
 * silent clients in the SYN queue, where a few thousand of them overflow
 * into SYN cookies.) */
int listener_disable_nagle(int fd);

/* The port a listening socket is bound to (0 if it cannot tell). */
unsigned listener_port(int fd);

/* Writes the numeric address of a peer into name. */
void listener_peer_name(const struct sockaddr_storage *peer,
			char name[PEER_NAME_LEN]);

#endif
