/* many.c - many loopback connections at once; see many.h. */
#include "many.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "util.h"

/* Connections in progress at once in connect_many(): enough to keep the
 * server's accept loop busy, few enough that poll() stays cheap. */
#define WINDOW 256
#define RECV_BUF (256 << 10)

static void drop(int *fds, unsigned i)
{
	close(fds[i]);
	fds[i] = -1;
}

/* Milliseconds to the deadline, rounded up; 0 once it has passed. */
static int ms_left(uint64_t deadline_ns)
{
	uint64_t now = now_ns();

	return now >= deadline_ns ? 0 : (int)((deadline_ns - now) / 1000000u) + 1;
}

/* The connections connect_many() has in progress. */
struct window {
	struct pollfd pfd[WINDOW];
	unsigned idx[WINDOW];
	unsigned n;
};

/* Takes the connections whose handshake ended out of the window. Walks
 * backwards so that the last entry, moved into a hole, was already seen. */
static unsigned window_reap(struct window *w, int *fds)
{
	unsigned open = 0;

	for (unsigned j = w->n; j-- > 0;) {
		if (!w->pfd[j].revents)
			continue;
		if (lo_connect_done(w->pfd[j].fd) == 0) {
			fds[w->idx[j]] = w->pfd[j].fd;
			open++;
		} else {
			close(w->pfd[j].fd);
			err_count(ERR_CONNECT);
		}
		w->n--;
		w->pfd[j] = w->pfd[w->n];
		w->idx[j] = w->idx[w->n];
	}
	return open;
}

/* Starts connections until the window is full; one that fails at once
 * (no ephemeral port, no descriptor) is reported the first time. */
static void window_fill(struct window *w, uint16_t port, int timeout_ms,
			unsigned *next, unsigned k)
{
	static int said;

	while (w->n < WINDOW && *next < k) {
		int fd = lo_connect_start(port, timeout_ms);

		if (fd < 0) {
			if (!said++)
				fprintf(stderr, "aesdload: connect: %s\n", strerror(errno));
			err_count(ERR_CONNECT);
			(*next)++;
			continue;
		}
		w->pfd[w->n] = (struct pollfd){ .fd = fd, .events = POLLOUT };
		w->idx[w->n++] = (*next)++;
	}
}

unsigned connect_many(uint16_t port, int timeout_ms, int *fds, unsigned k,
		      uint64_t deadline_ns)
{
	struct window *w = calloc(1, sizeof(*w));
	unsigned next = 0, open = 0;

	if (!w)
		die("out of memory");
	for (unsigned i = 0; i < k; i++)
		fds[i] = -1;
	while ((next < k || w->n) && ms_left(deadline_ns)) {
		window_fill(w, port, timeout_ms, &next, k);
		if (poll(w->pfd, w->n, ms_left(deadline_ns)) < 0 && errno != EINTR)
			die("poll");
		open += window_reap(w, fds);
	}
	/* what the deadline cut off: still connecting, or never started */
	for (unsigned j = 0; j < w->n; j++)
		close(w->pfd[j].fd);
	for (unsigned c = w->n + (k - next); c > 0; c--)
		err_count(ERR_CONNECT);
	free(w);
	return open;
}

/* Waits for the connections registered in ep; on_ready(i) handles an
 * event of fds[i] and returns nonzero once that connection is done (and no
 * longer registered). Returns how many are left at the deadline. */
static unsigned epoll_drive(int ep, unsigned left, uint64_t deadline_ns,
			    int (*on_ready)(unsigned i, void *ctx), void *ctx)
{
	struct epoll_event ev[256];

	while (left && ms_left(deadline_ns)) {
		int n = epoll_wait(ep, ev, 256, ms_left(deadline_ns));

		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int j = 0; j < n; j++)
			if (on_ready(ev[j].data.u32, ctx))
				left--;
	}
	return left;
}

static void watch(int ep, int fd, unsigned i)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

/* One ping in flight: pd.p is NULL once it is answered or failed. */
struct flight {
	struct packet pk;
	struct pending pd;
};

struct pings {
	int ep;
	int *fds;
	struct flight *fl;
	char *buf;
	struct recvec *out;
	unsigned good;
};

static unsigned ping_send(struct pings *ps, unsigned i)
{
	struct flight *f = &ps->fl[i];
	int fd = ps->fds[i];

	packet_new(&f->pk, 'i', packet_min_len());
	if (send(fd, f->pk.buf, f->pk.len, MSG_NOSIGNAL) != (ssize_t)f->pk.len) {
		err_count(errno == EAGAIN ? ERR_TIMEOUT : ERR_RESET);
		drop(ps->fds, i);
		return 0;
	}
	packet_sent(&f->pk);
	pending_start(&f->pd, &f->pk);
	watch(ps->ep, fd, i);
	return 1;
}

static int ping_ready(unsigned i, void *ctx)
{
	struct pings *ps = ctx;
	struct flight *f = &ps->fl[i];
	struct record rec;
	ssize_t r = recv(ps->fds[i], ps->buf, RECV_BUF, MSG_DONTWAIT);

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (r <= 0) {
		pending_fail(&f->pd, r == 0, errno);
		drop(ps->fds, i);	/* closing unregisters it */
	} else if (pending_feed(&f->pd, ps->buf, (size_t)r, &rec) == 1) {
		if (recvec_push(ps->out, &rec) < 0)
			die("out of memory");
		ps->good++;
		epoll_ctl(ps->ep, EPOLL_CTL_DEL, ps->fds[i], NULL);
	} else {
		return 0;
	}
	f->pd.p = NULL;
	return 1;
}

unsigned ping_many(int *fds, unsigned k, uint64_t deadline_ns, struct recvec *out)
{
	struct pings ps = {
		.ep = epoll_create1(EPOLL_CLOEXEC), .fds = fds, .out = out,
		.fl = calloc(k ? k : 1, sizeof(struct flight)), .buf = malloc(RECV_BUF),
	};
	unsigned left = 0;

	if (ps.ep < 0)
		die("epoll_create1");
	if (!ps.fl || !ps.buf)
		die("out of memory");
	for (unsigned i = 0; i < k; i++)
		if (fds[i] >= 0)
			left += ping_send(&ps, i);
	epoll_drive(ps.ep, left, deadline_ns, ping_ready, &ps);
	for (unsigned i = 0; i < k; i++) {
		if (ps.fl[i].pd.p) {
			err_count(ERR_TIMEOUT);
			drop(fds, i);
		}
		packet_free(&ps.fl[i].pk);
	}
	close(ps.ep);
	free(ps.fl);
	free(ps.buf);
	return ps.good;
}

unsigned closed_many(int *fds, unsigned k)
{
	unsigned closed = 0;
	char c;

	for (unsigned i = 0; i < k; i++) {
		ssize_t r;

		if (fds[i] < 0)
			continue;
		r = recv(fds[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;	/* open, and quiet as it should be */
		if (r > 0)
			err_count(ERR_LENGTH);
		else
			closed++;
		drop(fds, i);
	}
	return closed;
}

struct finishing {
	int *fds;
	char *buf;
	unsigned clean;
};

static int finish_ready(unsigned i, void *ctx)
{
	struct finishing *fs = ctx;
	ssize_t r = recv(fs->fds[i], fs->buf, RECV_BUF, MSG_DONTWAIT);

	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (r > 0)
		err_count(ERR_LENGTH);
	else if (r < 0)
		err_count(ERR_RESET);
	else
		fs->clean++;
	drop(fs->fds, i);
	return 1;
}

unsigned finish_many(int *fds, unsigned k, uint64_t deadline_ns)
{
	struct finishing fs = { .fds = fds, .buf = malloc(RECV_BUF) };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	unsigned left = 0;

	if (ep < 0)
		die("epoll_create1");
	if (!fs.buf)
		die("out of memory");
	for (unsigned i = 0; i < k; i++) {
		if (fds[i] < 0)
			continue;
		if (shutdown(fds[i], SHUT_WR) < 0) {
			err_count(ERR_RESET);
			drop(fds, i);
			continue;
		}
		watch(ep, fds[i], i);
		left++;
	}
	epoll_drive(ep, left, deadline_ns, finish_ready, &fs);
	for (unsigned i = 0; i < k; i++) {
		if (fds[i] >= 0) {
			err_count(ERR_TIMEOUT);
			drop(fds, i);
		}
	}
	close(ep);
	free(fs.buf);
	return fs.clean;
}
