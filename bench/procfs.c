/* procfs.c - machine-wide figures from /proc; see procfs.h. */
#include "procfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds the matching sockets of one /proc/net/tcp* table to *n. */
static int count_conns(const char *path, unsigned port, long *n)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, st;
		unsigned long inode;

		/* sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode */
		if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*x:%*x %*x:%*x %*x %*u %*u %lu",
			   &lport, &st, &inode) != 3)
			continue;	/* the header */
		if (lport == port && st != 0x0A /* LISTEN */ && inode != 0)
			(*n)++;
	}
	fclose(f);
	return 0;
}

long server_conns(uint16_t port)
{
	long n = 0;
	int v4 = count_conns("/proc/net/tcp", port, &n);
	int v6 = count_conns("/proc/net/tcp6", port, &n);

	return v4 < 0 && v6 < 0 ? -1 : n;
}

/* Adds the rx_queue of the matching sockets of one table to *sum. */
static int sum_unread(const char *path, unsigned port, const uint8_t *peers,
		      long long *sum)
{
	char line[512];
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned lport, rport, st;
		unsigned long rxq;

		/* sl local_address rem_address st tx_queue:rx_queue ... */
		if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %*x:%lx",
			   &lport, &rport, &st, &rxq) != 4)
			continue;	/* the header */
		if (lport == port && st != 0x0A && rport < 65536 &&
		    (peers[rport / 8] >> (rport % 8) & 1))
			*sum += (long long)rxq;
	}
	fclose(f);
	return 0;
}

long long server_unread(uint16_t port, const uint8_t *peers)
{
	long long sum = 0;
	int v4 = sum_unread("/proc/net/tcp", port, peers, &sum);
	int v6 = sum_unread("/proc/net/tcp6", port, peers, &sum);

	return v4 < 0 && v6 < 0 ? -1 : sum;
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
