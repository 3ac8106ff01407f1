/* procfs.c - machine-wide figures from /proc; see procfs.h. */
#include "procfs.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* What one pass over the TCP tables found of our connections. */
struct scan {
	const uint8_t *peers, *unread_peers;
	uint8_t seen[65536 / 8];	/* remote ports listed already */
	long accepted;
	long long unread;
};

static int is_set(const uint8_t *bits, unsigned port)
{
	return port < 65536 && (bits[port / 8] >> (port % 8) & 1);
}

/* Adds one /proc/net/tcp* table to the scan. */
static int scan_table(const char *path, unsigned port, struct scan *sc)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, rport, st;
		unsigned long rxq, inode;

		/* sl local_address rem_address st tx_queue:rx_queue tr:when
		 * retrnsmt uid timeout inode */
		if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %*x:%lx %*x:%*x %*x %*u %*u %lu",
			   &lport, &rport, &st, &rxq, &inode) != 5)
			continue;	/* the header */
		if (lport != port || st == 0x0A /* LISTEN */ ||
		    !is_set(sc->peers, rport) || is_set(sc->seen, rport))
			continue;
		sc->seen[rport / 8] |= (uint8_t)(1u << (rport % 8));
		sc->accepted += inode != 0;
		if (sc->unread_peers && is_set(sc->unread_peers, rport))
			sc->unread += (long long)rxq;
	}
	fclose(f);
	return 0;
}

/* Both tables, each of our connections once.  The kernel prints a table
 * a page per read() and finds its place again by position, so while other
 * sockets come and go a socket can be listed twice, or not at all: on a
 * loaded machine, 300 held connections were counted as 301 to 476. */
long server_scan(uint16_t port, const uint8_t *peers,
		 const uint8_t *unread_peers, long long *unread)
{
	struct scan sc = { .peers = peers, .unread_peers = unread_peers };
	int v4 = scan_table("/proc/net/tcp", port, &sc);
	int v6 = scan_table("/proc/net/tcp6", port, &sc);

	if (v4 < 0 && v6 < 0)
		return -1;
	if (unread)
		*unread = sc.unread;
	return sc.accepted;
}

void peers_add(uint8_t *peers, int fd)
{
	struct sockaddr_in6 sa;
	socklen_t sl = sizeof(sa);
	unsigned port;

	if (getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		return;
	port = ntohs(sa.sin6_family == AF_INET6 ? sa.sin6_port :
		     ((struct sockaddr_in *)&sa)->sin_port);
	peers[port / 8] |= (uint8_t)(1u << (port % 8));
}

long meminfo_kib(const char *key)
{
	char line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/* /proc/net/netstat holds pairs of lines, "TcpExt: name name ..." and
 * "TcpExt: value value ...". Returns the value for key in such a pair. */
static long long pair_value(char *names, char *values, const char *key)
{
	char *sn, *sv;
	char *n = strtok_r(names, " \n", &sn);
	char *v = strtok_r(values, " \n", &sv);

	for (; n && v; n = strtok_r(NULL, " \n", &sn), v = strtok_r(NULL, " \n", &sv))
		if (!strcmp(n, key))
			return strtoll(v, NULL, 10);
	return -1;
}

long long tcpext_counter(const char *key)
{
	static char names[8192], values[8192];
	long long v = -1;
	FILE *f = fopen("/proc/net/netstat", "r");

	if (!f)
		return -1;
	while (fgets(names, sizeof(names), f) && fgets(values, sizeof(values), f))
		if (!strncmp(names, "TcpExt:", 7)) {
			v = pair_value(names, values, key);
			break;
		}
	fclose(f);
	return v;
}

long long proc_number(const char *path)
{
	long long v;
	FILE *f = fopen(path, "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%lld", &v) == 1;
	fclose(f);
	return ok ? v : -1;
}

long ephemeral_ports(void)
{
	long lo, hi;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%ld %ld", &lo, &hi) == 2;
	fclose(f);
	return ok && hi >= lo ? hi - lo + 1 : -1;
}
