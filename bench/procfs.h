/* procfs.h - machine-wide figures from /proc for the held and slow
 * workloads: the server's open connections and the bytes it has not read
 * yet, kernel memory, TCP listen-queue counters, ephemeral ports. Each
 * returns -1 where /proc does not tell. */
#ifndef PROCFS_H
#define PROCFS_H

#include <stdint.h>

/* peers is a bitmap of 65536 bits: our local ports, so that only our own
 * connections count (not one the server has yet to close, nor another
 * program's), each once however the kernel lists it. */

/* Marks the local port of our connection fd in peers. */
void peers_add(uint8_t *peers, int fd);

/* One pass over /proc/net/tcp and tcp6, which costs about 10 us of CPU a
 * socket on the machine (TIME_WAIT ones too): returns how many of our
 * connections the server has accepted and not yet closed (sockets on its
 * local port, other than the listener, that belong to a file: one still in
 * the handshake or in the accept queue has no inode yet); and, unless
 * unread is NULL, the bytes received on the server's side of those in
 * unread_peers that it has not read yet (rx_queue). */
long server_scan(uint16_t port, const uint8_t *peers,
		 const uint8_t *unread_peers, long long *unread);

/* A line of /proc/meminfo, e.g. "Slab", in KiB. */
long meminfo_kib(const char *key);

/* A TcpExt counter of /proc/net/netstat, e.g. "ListenOverflows". */
long long tcpext_counter(const char *key);

/* One number from a file, e.g. /proc/sys/net/ipv4/tcp_tw_reuse. */
long long proc_number(const char *path);

/* net.ipv4.ip_local_port_range: how many ephemeral ports connect() picks
 * from. */
long ephemeral_ports(void);

#endif
