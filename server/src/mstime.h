/*
 * mstime: CLOCK_MONOTONIC in milliseconds, the one time unit of deadlines
 * in this program, its conversion to the timespec that ppoll() takes, the
 * deadline a timeout option sets, the back-off after repeated failures, and
 * the sooner of two waits.
 */
#ifndef AESD_MSTIME_H
#define AESD_MSTIME_H

#include <time.h>

static inline long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static inline long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static inline struct timespec ms_timespec(long long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	return ts;
}

/* The packet deadline -i sets, seconds after from_ms, or 0 (none) when
 * seconds is 0. */
static inline long long ms_after(long long from_ms, unsigned seconds)
{
	return seconds ? from_ms + seconds * 1000LL : 0;
}

/* Exponential back-off: first_ms after the first failure in a row,
 * doubling with each further one, at most max_ms. */
static inline long long backoff_ms(unsigned failures, long long first_ms,
				   long long max_ms)
{
	long long ms = first_ms << (failures < 16 ? failures : 16);

	return ms < max_ms ? ms : max_ms;
}

/* The sooner of two waits in ms, where -1 means "no need to wake". */
static inline long long sooner_ms(long long a, long long b)
{
	return a < 0 || (b >= 0 && b < a) ? b : a;
}

#endif
