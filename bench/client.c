/* client.c - one checked request/response exchange over loopback TCP. */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int reader_init(struct reader *rd, size_t cap)
{
	memset(rd, 0, sizeof(*rd));
	rd->buf = malloc(cap);
	rd->cap = cap;
	return rd->buf ? 0 : -1;
}

void reader_free(struct reader *rd)
{
	free(rd->buf);
	rd->buf = NULL;
}

/* A TCP socket with lo_connect()'s options, connecting to 127.0.0.1:port;
 * with SOCK_NONBLOCK in flags the connection may still be in progress. */
static int lo_socket_connect(uint16_t port, int timeout_ms, int flags)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
			      .tv_usec = (timeout_ms % 1000) * 1000 };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		/* interrupted, a connection goes on in the kernel */
		if (flags && (errno == EINPROGRESS || errno == EINTR))
			break;
		if (errno == EINTR)
			continue;
		close(fd);
		return -1;
	}
	return fd;
}

int lo_connect(uint16_t port, int timeout_ms)
{
	int fd = lo_socket_connect(port, timeout_ms, 0);

	if (fd < 0)
		err_count(ERR_CONNECT);
	return fd;
}

int lo_connect_start(uint16_t port, int timeout_ms)
{
	return lo_socket_connect(port, timeout_ms, SOCK_NONBLOCK);
}

int lo_connect_done(int fd)
{
	int e = 0;
	socklen_t el = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return -1;
	return 0;
}

static void count_errno(int e)
{
	err_count(e == EAGAIN || e == EWOULDBLOCK ? ERR_TIMEOUT : ERR_RESET);
}

static int send_all(int fd, const char *d, size_t n)
{
	while (n) {
		ssize_t w = send(fd, d, n, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			count_errno(errno);
			return -1;
		}
		d += w;
		n -= (size_t)w;
	}
	return 0;
}

void pending_start(struct pending *pd, const struct packet *p)
{
	pd->p = p;
	hs_init(&pd->hs);
	pd->len = 0;
	pd->tlen = 0;
}

static size_t tail_window(const struct packet *p)
{
	return p->len < 64 ? p->len : 64;
}

/* Keeps the last tail_window() bytes seen. */
static void tail_add(struct pending *pd, const char *d, size_t n)
{
	size_t w = tail_window(pd->p);

	if (n >= w) {
		memcpy(pd->tail, d + n - w, w);
		pd->tlen = w;
		return;
	}
	size_t keep = pd->tlen < w - n ? pd->tlen : w - n;

	memmove(pd->tail, pd->tail + pd->tlen - keep, keep);
	memcpy(pd->tail + keep, d, n);
	pd->tlen = keep + n;
}

static int tail_done(const struct pending *pd)
{
	size_t w = tail_window(pd->p);

	return pd->tlen == w && pd->len >= pd->p->len &&
	       memcmp(pd->tail, pd->p->buf + pd->p->len - w, w) == 0;
}

int pending_feed(struct pending *pd, const char *d, size_t n, struct record *rec)
{
	/* find our end inside this chunk, byte by byte only near the end */
	hs_update(&pd->hs, d, n);
	pd->len += n;
	tail_add(pd, d, n);
	if (!tail_done(pd))
		return 0;
	rec->id = pd->p->id;
	rec->len = pd->len;
	rec->hashed = 1;
	rec->hash = hs_final(&pd->hs);
	return 1;
}

void pending_fail(const struct pending *pd, int eof, int e)
{
	if (pd->tlen && pd->tail[pd->tlen - 1] == '\n')
		err_count(ERR_TAIL);
	else if (eof)
		err_count(ERR_SHORT);
	else
		count_errno(e);
}

int finish(int fd, struct reader *rd)
{
	int extra = 0;

	if (shutdown(fd, SHUT_WR) < 0) {
		err_count(ERR_RESET);
		return -1;
	}
	for (;;) {
		ssize_t n = recv(fd, rd->buf, rd->cap, 0);

		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			count_errno(errno);
			return -1;
		}
		extra = 1;
	}
	if (extra) {
		err_count(ERR_LENGTH);
		return -1;
	}
	return 0;
}

int exchange(int fd, const struct packet *p, enum check_mode mode,
	     struct reader *rd, struct record *rec)
{
	struct pending pd;
	int bad_spot = 0;

	if (send_all(fd, p->buf, p->len) < 0)
		return -1;
	packet_sent(p);
	pending_start(&pd, p);
	for (;;) {
		ssize_t n = recv(fd, rd->buf, rd->cap, 0);

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			pending_fail(&pd, n == 0, errno);
			return -1;
		}
		if (mode == CHECK_HASH)
			hs_update(&pd.hs, rd->buf, (size_t)n);
		if (mode == CHECK_SPOT && pd.len < rd->spot_len) {
			size_t c = rd->spot_len - pd.len;

			if (c > 64)
				c = 64;
			if (c > (size_t)n)
				c = (size_t)n;
			bad_spot |= memcmp(rd->buf, rd->spot + pd.len, c) != 0;
		}
		if (rd->keep && pd.len < rd->keep_cap) {
			size_t c = rd->keep_cap - pd.len;

			memcpy(rd->keep + pd.len, rd->buf, c < (size_t)n ? c : (size_t)n);
		}
		pd.len += (size_t)n;
		tail_add(&pd, rd->buf, (size_t)n);
		if (tail_done(&pd))
			break;
	}
	if (bad_spot) {
		err_count(ERR_PREFIX);
		return -1;
	}
	rec->id = p->id;
	rec->len = pd.len;
	rec->hashed = mode == CHECK_HASH;
	rec->hash = rec->hashed ? hs_final(&pd.hs) : 0;
	return 0;
}
