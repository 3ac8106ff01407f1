/* util.c - small helpers shared by the load generator and the probe. */
#define _GNU_SOURCE		/* program_invocation_short_name */
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void die(const char *msg)
{
	int e = errno;

	fprintf(stderr, "%s: %s%s%s\n", program_invocation_short_name, msg,
		e ? ": " : "", e ? strerror(e) : "");
	exit(1);
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t parse_num(const char *prog, const char *what, const char *s,
		   uint64_t lo, uint64_t hi)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'K' || *end == 'k')
		mult = 1024, end++;
	else if (*end == 'M' || *end == 'm')
		mult = 1024 * 1024, end++;
	if (errno || end == s || *end || s[0] == '-' || v > hi / mult ||
	    v * mult < lo) {
		fprintf(stderr, "%s: bad %s '%s' (%" PRIu64 "..%" PRIu64 ")\n",
			prog, what, s, lo, hi);
		exit(2);
	}
	return v * mult;
}
