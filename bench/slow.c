/* slow.c - tricklers and big partial packets held open; see slow.h. */
#include "slow.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "many.h"
#include "procfs.h"
#include "proctree.h"
#include "util.h"

#define MS 1000000ull
#define SETTLE_CHECK_NS (100 * MS)	/* progress checks while settling */
#define STALL_NS (1000 * MS)		/* "read nothing more for a second" */
#define PSS_EVERY_NS (500 * MS)	/* memory samples once settled */

struct sconn {
	int fd;			/* -1 once closed */
	size_t sent;		/* bytes handed to the kernel */
	double closed_s;	/* when the server closed it (since t0); < 0: open */
};

struct slow {
	struct slow_opts o;
	struct sconn *c;	/* the tricklers, then the big clients */
	unsigned n;
	unsigned connected;	/* of the tricklers ... */
	unsigned big_connected;	/* ... and of the big clients */
	char *bigbuf;		/* a big partial packet: no newline */
	uint8_t peers[65536 / 8];	/* our local ports: all ... */
	uint8_t big_peers[65536 / 8];	/* ... and the big clients' */
	int ep;
	pthread_t thread;
	int stop, settled;	/* atomic */
	uint64_t t0;		/* the last connect */

	/* tricklers: the next send of the schedule, and how it kept up */
	uint64_t next;
	uint64_t trickle_bytes, lag_max_ns;
	unsigned trickle_blocked;

	/* settling */
	long accepted;
	long long big_read, big_read_best;
	uint64_t progress_ns, settle_ns;
	int settle_timed_out;
	unsigned big_sent;

	/* memory, and the end */
	long pss_settle, pss_peak;
	unsigned pss_samples;
	uint64_t end_ns;
	unsigned open_end, big_open_end;
};

static int is_big(const struct slow *s, unsigned i)
{
	return i >= s->o.trickle;
}

/* When send number i of the schedule is due: every trickler once per
 * period, spread evenly over it. */
static uint64_t due(const struct slow *s, uint64_t i)
{
	uint64_t k = s->o.trickle, p = s->o.period_ms * MS;

	return s->t0 + (i / k) * p + (i % k) * p / k;
}

static void mark_closed(struct slow *s, unsigned i)
{
	struct sconn *c = &s->c[i];

	c->closed_s = (double)(now_ns() - s->t0) / 1e9;
	close(c->fd);		/* unregisters it from the epoll set */
	c->fd = -1;
}

static void trickle(struct slow *s, uint64_t now)
{
	if (!s->o.trickle)
		return;
	for (; due(s, s->next) <= now; s->next++) {
		struct sconn *c = &s->c[s->next % s->o.trickle];
		uint64_t lag = now - due(s, s->next);

		if (c->fd < 0)
			continue;
		if (lag > s->lag_max_ns)
			s->lag_max_ns = lag;
		if (send(c->fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
			c->sent++;
			s->trickle_bytes++;
		} else if (errno == EAGAIN) {
			s->trickle_blocked++;
		} else if (errno != EINTR) {
			mark_closed(s, s->next % s->o.trickle);
		}
	}
}

static void watch(struct slow *s, unsigned i, uint32_t events, int op)
{
	struct epoll_event ev = { .events = events, .data.u32 = i };

	if (epoll_ctl(s->ep, op, s->c[i].fd, &ev) < 0)
		die("epoll_ctl");
}

/* More of a big client's partial packet, as much as the kernel takes. */
static void big_send(struct slow *s, unsigned i)
{
	struct sconn *c = &s->c[i];

	while (c->sent < s->o.big_bytes) {
		ssize_t w = send(c->fd, s->bigbuf + c->sent, s->o.big_bytes - c->sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w < 0) {
			mark_closed(s, i);
			return;
		}
		c->sent += (size_t)w;
	}
	watch(s, i, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
}

/* Readable: the server closed it, or sent bytes it must not send (no
 * packet was ever completed on it). */
static void on_readable(struct slow *s, unsigned i)
{
	char buf[4096];
	int extra = 0;

	for (;;) {
		ssize_t r = recv(s->c[i].fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r > 0) {
			extra = 1;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 || errno != EAGAIN)
			mark_closed(s, i);
		break;
	}
	if (extra)
		err_count(ERR_LENGTH);
}

static void on_event(struct slow *s, unsigned i, uint32_t events)
{
	if (s->c[i].fd < 0)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		on_readable(s, i);
	if (s->c[i].fd >= 0 && (events & EPOLLOUT) && is_big(s, i))
		big_send(s, i);
}

/* Bytes of the big partial packets the server has read into its own
 * memory: handed to our kernel, minus what our side still holds (SIOCOUTQ:
 * not yet acknowledged), minus what waits in the server's receive queue
 * (unread, -1 if unknown). */
static long long big_read(struct slow *s, long long unread)
{
	long long sum = 0;

	for (unsigned i = s->o.trickle; i < s->n; i++) {
		int outq = 0;

		if (s->c[i].fd < 0)
			continue;
		if (ioctl(s->c[i].fd, SIOCOUTQ, &outq) < 0)
			outq = 0;
		sum += (long long)s->c[i].sent - outq;
	}
	return unread < 0 ? -1 : sum - unread;
}

static unsigned count_open(const struct slow *s, unsigned from, unsigned to)
{
	unsigned open = 0;

	for (unsigned i = from; i < to; i++)
		open += s->c[i].fd >= 0;
	return open;
}

static void settle_done(struct slow *s, uint64_t now, int timed_out)
{
	s->settle_ns = now - s->t0;
	s->settle_timed_out = timed_out;
	for (unsigned i = s->o.trickle; i < s->n; i++)
		s->big_sent += s->c[i].fd >= 0 && s->c[i].sent == s->o.big_bytes;
	if (s->o.server)
		s->pss_settle = s->pss_peak = tree_pss_kib(s->o.server);
	__atomic_store_n(&s->settled, 1, __ATOMIC_RELEASE);
}

static void settle_check(struct slow *s, uint64_t now)
{
	long long unread = -1;
	/* one pass for both: on a busy machine it can take seconds, which
	 * the tricklers wait out (trickle_lag_max_ms) */
	long acc = server_scan(s->o.port, s->peers, s->big_peers, &unread);
	unsigned open = count_open(s, 0, s->n);
	long long want = 0;

	for (unsigned i = s->o.trickle; i < s->n; i++)
		if (s->c[i].fd >= 0)
			want += (long long)s->o.big_bytes;
	if (acc > s->accepted)
		s->accepted = acc;
	s->big_read = big_read(s, unread);
	if (s->big_read > s->big_read_best) {
		s->big_read_best = s->big_read;
		s->progress_ns = now;
	}
	if (now - s->t0 >= (uint64_t)s->o.timeout_ms * MS)
		settle_done(s, now, 1);
	else if (s->next >= s->o.trickle && acc >= (long)open &&
		 (s->big_read == want || now - s->progress_ns >= STALL_NS))
		settle_done(s, now, 0);
}

static void sample_pss(struct slow *s)
{
	long pss;

	if (!s->o.server)
		return;
	pss = tree_pss_kib(s->o.server);
	s->pss_samples++;
	if (pss > s->pss_peak)
		s->pss_peak = pss;
}

static void *slow_thread(void *arg)
{
	struct slow *s = arg;
	struct epoll_event ev[256];
	uint64_t check = s->t0;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		uint64_t now = now_ns(), wake;
		int n;

		trickle(s, now);
		if (now >= check) {
			if (!s->settled) {
				settle_check(s, now);
				check = now + SETTLE_CHECK_NS;
			} else {
				sample_pss(s);
				check = now + PSS_EVERY_NS;
			}
		}
		wake = check;
		if (s->o.trickle && due(s, s->next) < wake)
			wake = due(s, s->next);
		now = now_ns();
		n = epoll_wait(s->ep, ev, 256,
			       wake <= now ? 0 : (int)((wake - now + MS - 1) / MS));
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int j = 0; j < n; j++)
			on_event(s, ev[j].data.u32, ev[j].events);
	}
	return NULL;
}

struct slow *slow_start(const struct slow_opts *o)
{
	struct slow *s = calloc(1, sizeof(*s));
	int *fds;

	if (!s)
		die("out of memory");
	s->o = *o;
	s->n = o->trickle + o->big;
	s->c = calloc(s->n ? s->n : 1, sizeof(*s->c));
	fds = calloc(s->n ? s->n : 1, sizeof(*fds));
	s->bigbuf = malloc(o->big_bytes ? o->big_bytes : 1);
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!s->c || !fds || !s->bigbuf)
		die("out of memory");
	if (s->ep < 0)
		die("epoll_create1");
	memset(s->bigbuf, 'b', o->big_bytes);
	s->pss_settle = s->pss_peak = -1;
	s->accepted = -1;
	connect_many(o->port, o->timeout_ms, fds, s->n,
		     now_ns() + (uint64_t)o->timeout_ms * MS);
	s->t0 = s->progress_ns = now_ns();
	for (unsigned i = 0; i < s->n; i++) {
		s->c[i] = (struct sconn){ .fd = fds[i], .closed_s = -1 };
		if (fds[i] < 0)
			continue;
		if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) < 0)
			die("fcntl");
		peers_add(s->peers, fds[i]);
		if (is_big(s, i)) {
			s->big_connected++;
			peers_add(s->big_peers, fds[i]);
			watch(s, i, EPOLLIN | EPOLLRDHUP | EPOLLOUT, EPOLL_CTL_ADD);
		} else {
			s->connected++;
			watch(s, i, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD);
		}
	}
	free(fds);
	if ((errno = pthread_create(&s->thread, NULL, slow_thread, s)))
		die("pthread_create");
	return s;
}

void slow_wait_settled(struct slow *s)
{
	while (!__atomic_load_n(&s->settled, __ATOMIC_ACQUIRE))
		usleep(10000);
}

double slow_since(const struct slow *s)
{
	return (double)(now_ns() - s->t0) / 1e9;
}

void slow_stop(struct slow *s)
{
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->thread, NULL);
	s->end_ns = now_ns() - s->t0;
	s->open_end = count_open(s, 0, s->o.trickle);
	s->big_open_end = count_open(s, s->o.trickle, s->n);
	for (unsigned i = 0; i < s->n; i++)
		if (s->c[i].fd >= 0) {
			close(s->c[i].fd);
			s->c[i].fd = -1;
		}
}

/* How many of c[from..to) the server closed, and the first and last time. */
static void print_closed(const struct slow *s, const char *what, unsigned from,
			 unsigned to)
{
	unsigned closed = 0;
	double first = 0, last = 0;

	for (unsigned i = from; i < to; i++) {
		double t = s->c[i].closed_s;

		if (t < 0)
			continue;
		if (!closed++ || t < first)
			first = t;
		if (t > last)
			last = t;
	}
	printf(" %s_closed=%u", what, closed);
	if (closed)
		printf(" %s_closed_first_s=%.1f %s_closed_last_s=%.1f", what, first, what, last);
}

void slow_print(const struct slow *s)
{
	printf(" slow=%u trickle_ms=%u big=%u big_bytes=%zu slow_connected=%u"
	       " big_connected=%u slow_accepted=%ld settle_s=%.3f settle_timed_out=%d"
	       " big_sent=%u big_read_kib=%lld trickle_bytes=%" PRIu64
	       " trickle_lag_max_ms=%.1f trickle_blocked=%u",
	       s->o.trickle, s->o.period_ms, s->o.big, s->o.big_bytes, s->connected,
	       s->big_connected, s->accepted, (double)s->settle_ns / 1e9,
	       s->settle_timed_out, s->big_sent, s->big_read / 1024, s->trickle_bytes,
	       (double)s->lag_max_ns / 1e6, s->trickle_blocked);
	print_closed(s, "slow", 0, s->o.trickle);
	print_closed(s, "big", s->o.trickle, s->n);
	printf(" slow_open_end=%u big_open_end=%u slow_held_s=%.1f", s->open_end,
	       s->big_open_end, (double)s->end_ns / 1e9);
	if (s->pss_settle >= 0)
		printf(" pss_settle_kib=%ld pss_peak_kib=%ld pss_samples=%u",
		       s->pss_settle, s->pss_peak, s->pss_samples + 1);
}

void slow_free(struct slow *s)
{
	if (!s)
		return;
	close(s->ep);
	free(s->c);
	free(s->bigbuf);
	free(s);
}
