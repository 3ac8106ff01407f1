/* util.h - small helpers shared by the load generator and the probe. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdint.h>

/* Prints "PROG: MSG" (with strerror(errno) when errno is set) and exits 1. */
void die(const char *msg) __attribute__((noreturn));

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t now_ns(void);

/* A decimal number with an optional K or M (binary) suffix in [lo, hi];
 * anything else prints "PROG: bad WHAT 'S' (lo..hi)" and exits 2. */
uint64_t parse_num(const char *prog, const char *what, const char *s,
		   uint64_t lo, uint64_t hi);

#endif
