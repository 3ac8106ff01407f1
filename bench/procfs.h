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

/* Our connections the server has accepted and not yet closed: sockets on
 * its local port, other than the listener, that belong to a file. A socket
 * still in the handshake or in the accept queue has no inode yet. */
long server_conns(uint16_t port, const uint8_t *peers);

/* Bytes received on the server's side of our connections that it has not
 * read yet (rx_queue). */
long long server_unread(uint16_t port, const uint8_t *peers);

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
