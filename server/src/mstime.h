/*
 * mstime: CLOCK_MONOTONIC in milliseconds, the one time unit of deadlines
 * in this program, and its conversion to the timespec that ppoll() and
 * epoll_pwait2() take.  CLOCK_MONOTONIC is shared by every process, so a
 * deadline the parent computes means the same to a worker.
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

static inline struct timespec ms_timespec(long long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	return ts;
}

#endif
