/* aesdload.c - load generator for aesdsocket that checks every response.
 *
 * Workloads (each starts and ends with a request of its own; the last
 * response is the final file, against which every response is checked):
 *   churn   C clients, N connections in all, one packet of S bytes each
 *   stream  C persistent connections, N packets each, one at a time
 *   bigread grow the file to F bytes, then R tiny requests on one connection
 *   idle    hold K idle connections, ping them, run churn, ping them again
 *           (-b: the baseline - same pings over one connection, none held)
 *   held    hold K connections (half silent, half idle after one exchange);
 *           meanwhile time new clients' first responses and run churn;
 *           then ping all K (-b: the baseline, same file growth, none held)
 *   slow    hold K tricklers (a byte every R ms, never a newline) and B big
 *           partial packets; meanwhile time L new clients' first responses,
 *           and watch which slow clients the server closes
 *   wait    wait until the port accepts connections (for scripts)
 * Output: one line of key=value pairs on stdout. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "client.h"
#include "many.h"
#include "procfs.h"
#include "proctree.h"
#include "slow.h"
#include "util.h"

#define MS 1000000ull

struct opts {
	const char *workload;
	uint16_t port;
	unsigned clients, count, size, idle, requests, fresh, dwell_s;
	unsigned big, period_ms, interval_ms, fresh_bound_s;
	uint64_t fill;
	size_t grow, big_bytes;
	int timeout_ms, fresh_timeout_ms;
	pid_t server;
	int verbose;
	int baseline;
};

static struct opts o = {
	.clients = 1, .count = 1000, .size = 64, .idle = 0, .requests = 20,
	.fill = 16u << 20, .grow = 1000000, .timeout_ms = 10000, .fresh = 500,
	.big = 100, .big_bytes = 900 << 10, .period_ms = 200,
};

/* Latencies in ns. */
struct samples {
	uint64_t *v;
	size_t n, cap;
};

/* results shared by the workers */
static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;
static struct recvec all_recs;
static struct samples lat;
static uint64_t ok_count, fail_count, resp_bytes;
static unsigned churn_next;

/* The timed part: clock and server CPU at its start and end. */
static struct {
	uint64_t t0, t1;
	double cpu0, cpu1;
} tm;

static void samples_add(struct samples *s, const uint64_t *v, size_t n)
{
	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2;
		s->v = reallocarray(s->v, s->cap, sizeof(*s->v));
		if (!s->v)
			die("out of memory");
	}
	memcpy(s->v + s->n, v, n * sizeof(*v));
	s->n += n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void samples_sort(struct samples *s)
{
	qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
}

/* Quantile q of sorted samples, in ms (the max for q = 1). */
static double samples_ms(const struct samples *s, double q)
{
	size_t i;

	if (!s->n)
		return 0;
	i = (size_t)(q * (double)s->n + 0.999999);
	if (i == 0)
		i = 1;
	return (double)s->v[i - 1] / 1e6;
}


/* Ends a persistent connection (if still open) the way nc -N does, and
 * frees its reader. */
static void end_session(int fd, struct reader *rd)
{
	if (fd >= 0) {
		finish(fd, rd);
		close(fd);
	}
	reader_free(rd);
}

/* Per-thread results, merged once at the end of the thread. */
struct local {
	struct recvec recs;
	struct samples lat;
	uint64_t ok, fail, bytes;
};

static void local_add(struct local *l, const struct record *r, uint64_t ns)
{
	if (recvec_push(&l->recs, r) < 0)
		die("out of memory");
	samples_add(&l->lat, &ns, 1);
	l->ok++;
	l->bytes += r->len;
}

static void local_merge(struct local *l)
{
	pthread_mutex_lock(&res_lock);
	if (recvec_append(&all_recs, &l->recs) < 0)
		die("out of memory");
	samples_add(&lat, l->lat.v, l->lat.n);
	ok_count += l->ok;
	fail_count += l->fail;
	resp_bytes += l->bytes;
	pthread_mutex_unlock(&res_lock);
	free(l->recs.v);
	free(l->lat.v);
	memset(l, 0, sizeof(*l));
}

/* One timed request on the open connection *fd. A failure loses the
 * connection, so it counts the `left` requests still to make (this one
 * included) as failed, closes *fd and returns false. */
static bool timed_request(int *fd, char tag, size_t len, enum check_mode mode,
			  struct reader *rd, struct local *l, unsigned left)
{
	struct packet p;
	struct record rec;
	uint64_t t0;
	bool ok;

	if (*fd < 0) {
		l->fail += left;
		return false;
	}
	packet_new(&p, tag, len);
	t0 = now_ns();
	ok = exchange(*fd, &p, mode, rd, &rec) == 0;
	if (ok) {
		local_add(l, &rec, now_ns() - t0);
	} else {
		l->fail += left;
		close(*fd);
		*fd = -1;
	}
	packet_free(&p);
	return ok;
}

/* One request on a new connection, outside the timed part. */
static int single(char tag, size_t len, struct record *rec)
{
	struct reader rd;
	struct packet p;
	int fd, rc = -1;

	if (reader_init(&rd, 1 << 20) < 0)
		die("out of memory");
	packet_new(&p, tag, len);
	fd = lo_connect(o.port, o.timeout_ms);
	if (fd >= 0) {
		rc = exchange(fd, &p, CHECK_HASH, &rd, rec);
		if (rc == 0)
			finish(fd, &rd);
		close(fd);
	}
	if (rc == 0 && recvec_push(&all_recs, rec) < 0)
		die("out of memory");
	packet_free(&p);
	reader_free(&rd);
	return rc;
}

static void *churn_thread(void *arg)
{
	struct local l = { 0 };
	struct reader rd;

	(void)arg;
	if (reader_init(&rd, 256 << 10) < 0)
		die("out of memory");
	for (;;) {
		unsigned i = __atomic_fetch_add(&churn_next, 1, __ATOMIC_RELAXED);
		struct packet p;
		struct record rec;
		uint64_t t0;
		int fd;

		if (i >= o.count)
			break;
		packet_new(&p, 'c', o.size);
		t0 = now_ns();
		fd = lo_connect(o.port, o.timeout_ms);
		if (fd >= 0 && exchange(fd, &p, CHECK_HASH, &rd, &rec) == 0) {
			local_add(&l, &rec, now_ns() - t0);
			finish(fd, &rd);
		} else {
			l.fail++;
		}
		if (fd >= 0)
			close(fd);
		packet_free(&p);
	}
	reader_free(&rd);
	local_merge(&l);
	return NULL;
}

static void *stream_thread(void *arg)
{
	struct local l = { 0 };
	struct reader rd;
	int fd;

	(void)arg;
	if (reader_init(&rd, 256 << 10) < 0)
		die("out of memory");
	fd = lo_connect(o.port, o.timeout_ms);
	for (unsigned i = 0; i < o.count; i++)
		if (!timed_request(&fd, 's', o.size, CHECK_HASH, &rd, &l,
				   o.count - i))
			break;
	end_session(fd, &rd);
	local_merge(&l);
	return NULL;
}

static void run_threads(void *(*fn)(void *), unsigned n)
{
	pthread_t *t = calloc(n, sizeof(*t));

	if (!t)
		die("out of memory");
	for (unsigned i = 0; i < n; i++)
		if ((errno = pthread_create(&t[i], NULL, fn, NULL)))
			die("pthread_create");
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	free(t);
}

/* The closing request: its response is the whole final file. */
static char *fetch_final(size_t *len)
{
	struct packet p;
	struct pending pd;
	struct record rec;
	size_t cap = 1 << 20;
	char *ref = malloc(cap);
	int fd;

	if (!ref)
		die("out of memory");
	packet_new(&p, 'z', 64);
	fd = lo_connect(o.port, o.timeout_ms);
	if (fd < 0)
		goto fail;
	if (send(fd, p.buf, p.len, MSG_NOSIGNAL) != (ssize_t)p.len) {
		err_count(ERR_RESET);
		close(fd);
		goto fail;
	}
	packet_sent(&p);
	pending_start(&pd, &p);
	*len = 0;
	for (;;) {
		ssize_t n;

		if (cap - *len < (1 << 20)) {
			cap *= 2;
			ref = realloc(ref, cap);
			if (!ref)
				die("out of memory");
		}
		n = recv(fd, ref + *len, cap - *len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			pending_fail(&pd, n == 0, errno);
			close(fd);
			goto fail;
		}
		*len += (size_t)n;
		if (pending_feed(&pd, ref + *len - n, (size_t)n, &rec) == 1)
			break;
	}
	close(fd);
	packet_free(&p);
	return ref;
fail:
	packet_free(&p);
	free(ref);
	*len = 0;
	return NULL;
}

/* With -v, phase boundaries on stderr in CLOCK_MONOTONIC seconds, to cut
 * a `perf record -k CLOCK_MONOTONIC` profile down to the timed part. */
static void phase(const char *name)
{
	if (o.verbose)
		fprintf(stderr, "aesdload: phase %s at %.6f\n", name, (double)now_ns() / 1e9);
}

/* Start of the timed part: the clock, and the server's CPU so far. */
static void mark_start(void)
{
	if (o.server)
		tm.cpu0 = tree_cpu_seconds(o.server);
	phase("timed-start");
	tm.t0 = now_ns();
}

/* End of the timed part, before anything else (closing the idle
 * connections lets their workers exit and be counted). */
static void mark_end(void)
{
	tm.t1 = now_ns();
	phase("timed-end");
	if (o.server)
		tm.cpu1 = tree_cpu_seconds(o.server);
}

static double cpu_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aesdload churn|stream|bigread|idle|held|slow|wait -p PORT [options]\n"
		"  -c N   concurrent clients (churn, stream, idle, held) [1]\n"
		"  -n N   churn: connections in all; stream: packets per connection [1000]\n"
		"  -s N   packet size in bytes, newline included     [64]\n"
		"  -F N   bigread: grow the file to N bytes (K/M suffix) [16M]\n"
		"  -g N   bigread: size of the packets that grow the file [1000000]\n"
		"  -r N   bigread: timed requests                    [20]\n"
		"  -k N   idle, held: connections held; slow: tricklers [200, 10000; 1000]\n"
		"  -b     idle, held: baseline - send the same pings over one connection\n"
		"         and hold none, then the rest (same file size as the real run)\n"
		"  -L N   held, slow: new clients timed one after another [500]\n"
		"  -W S   held: seconds to keep holding after churn  [0]\n"
		"  -B N   slow: clients holding a big partial packet [100]\n"
		"  -z N   slow: bytes of each big partial packet     [900K]\n"
		"  -R MS  slow: a trickler sends a byte every MS     [200]\n"
		"  -I MS  held, slow: new clients start MS apart     [0, 10]\n"
		"  -T MS  held, slow: a new client's timeout         [-t]\n"
		"  -D S   held, slow: start no new client after S s  [no bound]\n"
		"  -t MS  timeout for connect/send/receive           [10000]\n"
		"  -P PID server pid, for its CPU and memory (whole process tree)\n"
		"  -v     print the timed phase's start and end (CLOCK_MONOTONIC) on stderr\n");
}

static void parse(int argc, char **argv)
{
	int c, k_set = 0, i_set = 0;

	if (argc < 2 || argv[1][0] == '-') {
		usage(stderr);
		exit(2);
	}
	o.workload = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "p:c:n:s:F:g:r:k:L:W:B:z:R:I:T:D:t:P:bvh")) != -1) {
		switch (c) {
		case 'p': o.port = (uint16_t)parse_num("aesdload", "port", optarg, 1, 65535); break;
		case 'c': o.clients = (unsigned)parse_num("aesdload", "clients", optarg, 1, 1024); break;
		case 'n': o.count = (unsigned)parse_num("aesdload", "count", optarg, 1, 10000000); break;
		case 's': o.size = (unsigned)parse_num("aesdload", "size", optarg, packet_min_len(), 1 << 24); break;
		case 'F': o.fill = parse_num("aesdload", "file size", optarg, 1, 1ULL << 32); break;
		case 'g': o.grow = parse_num("aesdload", "growth size", optarg, packet_min_len(), 1 << 26); break;
		case 'r': o.requests = (unsigned)parse_num("aesdload", "requests", optarg, 1, 1000000); break;
		case 'k': o.idle = (unsigned)parse_num("aesdload", "idle count", optarg, 0, 100000); k_set = 1; break;
		case 'L': o.fresh = (unsigned)parse_num("aesdload", "new clients", optarg, 0, 1000000); break;
		case 'W': o.dwell_s = (unsigned)parse_num("aesdload", "seconds", optarg, 0, 3600); break;
		case 'B': o.big = (unsigned)parse_num("aesdload", "big clients", optarg, 0, 100000); break;
		case 'z': o.big_bytes = parse_num("aesdload", "partial packet size", optarg, 1, 1 << 26); break;
		case 'R': o.period_ms = (unsigned)parse_num("aesdload", "trickle period", optarg, 1, 60000); break;
		case 'I': o.interval_ms = (unsigned)parse_num("aesdload", "interval", optarg, 0, 60000); i_set = 1; break;
		case 'T': o.fresh_timeout_ms = (int)parse_num("aesdload", "timeout", optarg, 1, 3600000); break;
		case 'D': o.fresh_bound_s = (unsigned)parse_num("aesdload", "seconds", optarg, 0, 86400); break;
		case 't': o.timeout_ms = (int)parse_num("aesdload", "timeout", optarg, 1, 3600000); break;
		case 'P': o.server = (pid_t)parse_num("aesdload", "pid", optarg, 1, 1 << 22); break;
		case 'v': o.verbose = 1; break;
		case 'b': o.baseline = 1; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (!o.port || optind != argc) {
		usage(stderr);
		exit(2);
	}
	if (!k_set)
		o.idle = !strcmp(o.workload, "held") ? 10000 : !strcmp(o.workload, "slow") ? 1000 : 200;
	if (!i_set && !strcmp(o.workload, "slow"))
		o.interval_ms = 10;
	if (!o.fresh_timeout_ms)
		o.fresh_timeout_ms = o.timeout_ms;
}

static int wait_port(void)
{
	uint64_t deadline = now_ns() + (uint64_t)o.timeout_ms * 1000000u;

	while (now_ns() < deadline) {
		int fd = lo_connect(o.port, 1000);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		usleep(20000);
	}
	fprintf(stderr, "aesdload: port %u not accepting after %d ms\n", o.port, o.timeout_ms);
	return 1;
}


/* The workloads. Each runs between the opening request and the closing
 * one, and calls mark_start()/mark_end() around its timed part. */

static void run_churn(void)
{
	mark_start();
	run_threads(churn_thread, o.clients);
	mark_end();
}

static void run_stream(void)
{
	mark_start();
	run_threads(stream_thread, o.clients);
	mark_end();
}

static uint64_t base_len;	/* file size after the opening request */
static uint64_t grow_bytes;	/* bigread: response bytes while growing */

/* Grows the file to o.fill with packets of o.grow bytes; returns its
 * size, or 0 with *fd closed and -1 on failure. */
static uint64_t bigread_grow(int *fd, struct reader *rd)
{
	uint64_t cur = base_len;
	struct record rec;

	while (*fd >= 0 && cur < o.fill) {
		struct packet p;
		uint64_t want = o.fill - cur;

		packet_new(&p, 'g', want < o.grow ? want : o.grow);
		if (exchange(*fd, &p, CHECK_LEN, rd, &rec) < 0) {
			close(*fd);
			*fd = -1;
		} else {
			if (recvec_push(&all_recs, &rec) < 0)
				die("out of memory");
			grow_bytes += rec.len;
			cur = rec.len;
		}
		packet_free(&p);
	}
	return cur;
}

/* One fully hashed response, kept in warm for the spot checks of the
 * timed requests. */
static void bigread_warm(int *fd, struct reader *rd, char *warm, size_t cap)
{
	struct packet p;
	struct record rec;

	if (*fd < 0)
		return;
	rd->keep = warm;
	rd->keep_cap = cap;
	packet_new(&p, 'w', 32);
	if (exchange(*fd, &p, CHECK_HASH, rd, &rec) < 0) {
		close(*fd);
		*fd = -1;
	} else {
		if (recvec_push(&all_recs, &rec) < 0)
			die("out of memory");
		rd->spot = warm;
		rd->spot_len = rec.len;
	}
	packet_free(&p);
	rd->keep = NULL;
}

static void run_bigread(void)
{
	struct reader rd;
	struct local l = { 0 };
	int fd = lo_connect(o.port, o.timeout_ms);
	uint64_t size;
	char *warm;

	if (reader_init(&rd, 1 << 20) < 0)
		die("out of memory");
	size = bigread_grow(&fd, &rd);
	warm = malloc(size + 1024);
	if (!warm)
		die("out of memory");
	bigread_warm(&fd, &rd, warm, size + 1024);
	mark_start();
	for (unsigned i = 0; i < o.requests; i++)
		if (!timed_request(&fd, 'b', 32, CHECK_SPOT, &rd, &l,
				   o.requests - i))
			break;
	mark_end();
	end_session(fd, &rd);
	local_merge(&l);
	free(warm);
}

/* Sends n small packets over one connection, one after another: the file
 * grows as it does when n held connections send one each. Returns how many
 * were answered. */
static unsigned pings_in_line(unsigned n)
{
	struct reader rd;
	struct record rec;
	unsigned good = 0;
	int fd = lo_connect(o.port, o.timeout_ms);

	if (reader_init(&rd, 256 << 10) < 0)
		die("out of memory");
	for (unsigned i = 0; fd >= 0 && i < n; i++) {
		struct packet p;

		packet_new(&p, 'i', packet_min_len());
		if (exchange(fd, &p, CHECK_HASH, &rd, &rec) == 0) {
			if (recvec_push(&all_recs, &rec) < 0)
				die("out of memory");
			good++;
		} else {
			close(fd);
			fd = -1;
		}
		packet_free(&p);
	}
	end_session(fd, &rd);
	return good;
}

static uint64_t ms_from_now(int ms)
{
	return now_ns() + (uint64_t)ms * 1000000u;
}

static void close_all(int *fds, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* What the idle workload measured. */
static struct {
	unsigned held, accepted, served;
	uint64_t accept_ns;
	long pss;
} idle = { .pss = -1 };

static void run_idle(void)
{
	int *fds;

	if (o.baseline) {
		/* the same file growth as the pings, without holding any
		 * connection: what "churn without idle connections" compares to */
		idle.accepted = pings_in_line(o.idle);
		run_churn();
		return;
	}
	fds = calloc(o.idle ? o.idle : 1, sizeof(*fds));
	if (!fds)
		die("out of memory");
	for (unsigned i = 0; i < o.idle; i++) {
		fds[i] = lo_connect(o.port, o.timeout_ms);
		idle.held += fds[i] >= 0;
	}
	/* the server may start a process per connection: give it time */
	idle.accept_ns = now_ns();
	idle.accepted = ping_many(fds, o.idle, ms_from_now(3 * o.timeout_ms), &all_recs);
	idle.accept_ns = now_ns() - idle.accept_ns;
	if (o.server)
		idle.pss = tree_pss_kib(o.server);
	run_churn();
	idle.served = ping_many(fds, o.idle, ms_from_now(o.timeout_ms), &all_recs);
	close_all(fds, o.idle);
	free(fds);
}

static void print_bigread(void)
{
	printf(" fill=%" PRIu64 " requests=%u grow_bytes=%" PRIu64, o.fill, o.requests, grow_bytes);
}

static void print_idle(void)
{
	printf(" baseline=%d idle=%u idle_held=%u idle_accepted=%u idle_accept_s=%.3f"
	       " idle_served_after=%u",
	       o.baseline, o.idle, idle.held, idle.accepted, (double)idle.accept_ns / 1e9,
	       idle.served);
}

/* Printed after the server's PSS. */
static void print_idle_pss(long pss0)
{
	if (idle.pss >= 0)
		printf(" pss_idle_kib=%ld pss_per_idle_kib=%.1f", idle.pss,
		       idle.accepted ? (double)(idle.pss - pss0) / idle.accepted : 0.0);
}

/* Listen-queue trouble while connections are opened (machine-wide TcpExt
 * counters: only our server's port is busy on loopback here). */
struct listenq {
	long long overflows, drops, cookies;
};

static void listenq_read(struct listenq *q)
{
	q->overflows = tcpext_counter("ListenOverflows");
	q->drops = tcpext_counter("ListenDrops");
	q->cookies = tcpext_counter("SyncookiesSent");
}

/* New clients timed one after another (held, slow): connect, send one
 * packet, read the whole response, `nc -N` ending. */
struct fresh {
	struct samples ok;	/* served: connect to the last byte of the response */
	struct samples all;	/* every one started; a failure at the time it gave up */
	unsigned started;
	unsigned failed;	/* not served: failed, or never started */
	uint64_t bytes;		/* of the responses */
};

/* What the held workload measured. */
static struct {
	unsigned connected, exchanged, closed_early, served, ended;
	long accepted;			/* by the server, -1: unknown */
	uint8_t peers[65536 / 8];	/* the K connections' local ports */
	uint64_t exchange_ns, accept_ns, held_ns;
	long pss, slab0, slab1;		/* KiB */
	struct listenq q0, q1;
	struct samples first;		/* held connections' one exchange */
	struct fresh fresh;		/* new clients' first responses */
} held = {
	.accepted = -1, .pss = -1, .slab0 = -1, .slab1 = -1,
	.q0 = { -1, -1, -1 }, .q1 = { -1, -1, -1 },
};

/* One exchange on every odd connection, one after another: these then
 * sit idle at a packet boundary, the others never send a byte. Stops at
 * the first failure (a server that cannot serve them all would make every
 * further one wait for the timeout). */
static unsigned exchange_half(int *fds, unsigned k)
{
	struct reader rd;
	struct record rec;
	unsigned good = 0;

	if (reader_init(&rd, 256 << 10) < 0)
		die("out of memory");
	for (unsigned i = 1; i < k; i += 2) {
		struct packet p;
		uint64_t t0, ns;
		int rc;

		packet_new(&p, 'h', packet_min_len());
		t0 = now_ns();
		rc = exchange(fds[i], &p, CHECK_HASH, &rd, &rec);
		ns = now_ns() - t0;
		packet_free(&p);
		if (rc < 0)
			break;
		samples_add(&held.first, &ns, 1);
		if (recvec_push(&all_recs, &rec) < 0)
			die("out of memory");
		good++;
	}
	reader_free(&rd);
	return good;
}

/* Until the server has accepted all k, or the timeout: with
 * TCP_DEFER_ACCEPT a silent connection is accepted only about a second
 * after it connected, and before all are in, "K held" is not yet true.
 * since_ns: the last connect. */
static void wait_accepted(unsigned k, uint64_t since_ns)
{
	uint64_t deadline = ms_from_now(o.timeout_ms);

	for (;;) {
		long n = server_scan(o.port, held.peers, NULL, NULL);

		if (n > held.accepted)
			held.accepted = n;
		if (n < 0 || n >= k || now_ns() >= deadline)
			break;
		usleep(20000);
	}
	held.accept_ns = now_ns() - since_ns;
}

/* One new client; true if it was served. A client that fails abandons
 * its packet: the server may still append it, or not. */
static bool fresh_one(struct fresh *f, struct reader *rd)
{
	struct packet p;
	struct record rec;
	uint64_t t0 = now_ns(), ns;
	int fd = lo_connect(o.port, o.fresh_timeout_ms), rc = -1;

	packet_new(&p, 'n', o.size);
	if (fd >= 0)
		rc = exchange(fd, &p, CHECK_HASH, rd, &rec);
	ns = now_ns() - t0;
	f->started++;
	samples_add(&f->all, &ns, 1);
	if (rc == 0) {
		samples_add(&f->ok, &ns, 1);
		f->bytes += rec.len;
		if (recvec_push(&all_recs, &rec) < 0)
			die("out of memory");
		finish(fd, rd);
	} else {
		packet_abandoned(&p);
	}
	if (fd >= 0)
		close(fd);
	packet_free(&p);
	return rc == 0;
}

/* n new clients, one after another, each started -I ms after the one
 * before it (at once if that one took longer), none after -D seconds.
 * Unless keep_going, the first failure ends it. */
static void fresh_clients(struct fresh *f, unsigned n, bool keep_going)
{
	struct reader rd;
	uint64_t t0 = now_ns();
	uint64_t until = o.fresh_bound_s ? t0 + o.fresh_bound_s * 1000 * MS : UINT64_MAX;

	if (reader_init(&rd, 256 << 10) < 0)
		die("out of memory");
	for (unsigned i = 0; i < n; i++) {
		uint64_t start = t0 + (uint64_t)i * o.interval_ms * MS, now = now_ns();

		if (start >= until || now >= until)
			break;
		if (start > now)
			usleep((useconds_t)((start - now) / 1000));
		if (!fresh_one(f, &rd) && !keep_going)
			break;
	}
	f->failed = n - (unsigned)f->ok.n;
	reader_free(&rd);
}

/* Waits for the server to hold all k silent connections, then has the odd
 * ones do their exchange. Returns 0, or -1 when they did not all succeed
 * (said on stderr). */
static int held_settle(int *fds, unsigned k)
{
	for (unsigned i = 0; i < k; i++)
		peers_add(held.peers, fds[i]);
	/* all silent so far: each is accepted and held before the odd ones
	 * send, so that their exchange is a held connection's */
	wait_accepted(k, now_ns());
	held.exchange_ns = now_ns();
	held.exchanged = exchange_half(fds, k);
	held.exchange_ns = now_ns() - held.exchange_ns;
	if (held.exchanged < k / 2) {
		fprintf(stderr, "aesdload: held: only %u of %u held connections answered\n",
			held.exchanged, k / 2);
		return -1;
	}
	return 0;
}

/* Opens the K connections and brings them to the held state; the figures
 * "with K held" are taken here (the listen-queue counters even when that
 * failed: they tell why). Returns 0, or -1 when not all K could be held. */
static int held_open(int *fds, unsigned k)
{
	int rc = -1;

	held.slab0 = meminfo_kib("Slab");
	listenq_read(&held.q0);
	held.connected = connect_many(o.port, o.timeout_ms, fds, k, ms_from_now(o.timeout_ms));
	if (held.connected < k)
		fprintf(stderr, "aesdload: held: only %u of %u connections opened\n",
			held.connected, k);
	else
		rc = held_settle(fds, k);
	listenq_read(&held.q1);
	if (rc < 0)
		return rc;
	held.slab1 = meminfo_kib("Slab");
	if (o.server)
		held.pss = tree_pss_kib(o.server);
	return 0;
}

static void run_held(void)
{
	uint64_t since;
	int *fds;

	if (o.baseline) {
		/* the same file growth, nothing held */
		held.exchanged = pings_in_line(o.idle / 2);
		fresh_clients(&held.fresh, o.fresh, false);
		run_churn();
		return;
	}
	fds = calloc(o.idle ? o.idle : 1, sizeof(*fds));
	if (!fds)
		die("out of memory");
	since = now_ns();
	if (held_open(fds, o.idle) == 0) {
		fresh_clients(&held.fresh, o.fresh, false);
		/* a server that no longer answers new clients would make churn
		 * wait out the timeout on every connection */
		if (!held.fresh.failed)
			run_churn();
		sleep(o.dwell_s);
		held.held_ns = now_ns() - since;
		held.closed_early = closed_many(fds, o.idle);
		held.served = ping_many(fds, o.idle, ms_from_now(3 * o.timeout_ms), &all_recs);
		held.ended = finish_many(fds, o.idle, ms_from_now(o.timeout_ms));
	}
	close_all(fds, o.idle);
	free(fds);
}

static void print_held(void)
{
	struct samples *f = &held.fresh.ok, *x = &held.first;

	samples_sort(f);
	samples_sort(x);
	printf(" baseline=%d hold=%u hold_connected=%u hold_exchanged=%u hold_exchange_s=%.3f"
	       " hold_accepted=%ld hold_accept_s=%.3f hold_s=%.1f hold_closed_early=%u"
	       " hold_served_after=%u hold_ended=%u",
	       o.baseline, o.idle, held.connected, held.exchanged,
	       (double)held.exchange_ns / 1e9, held.accepted, (double)held.accept_ns / 1e9,
	       (double)held.held_ns / 1e9, held.closed_early, held.served, held.ended);
	if (x->n)
		printf(" hold_xchg_p50_ms=%.3f hold_xchg_p99_ms=%.3f hold_xchg_max_ms=%.3f",
		       samples_ms(x, 0.50), samples_ms(x, 0.99), samples_ms(x, 1));
	printf(" new_count=%u new_ok=%zu new_failed=%u", o.fresh, f->n, held.fresh.failed);
	if (f->n)
		printf(" new_p50_ms=%.3f new_p99_ms=%.3f new_max_ms=%.3f",
		       samples_ms(f, 0.50), samples_ms(f, 0.99), samples_ms(f, 1));
	if (held.slab0 >= 0 && held.slab1 >= 0 && held.connected)
		printf(" kern_slab_per_held_kib=%.2f",
		       (double)(held.slab1 - held.slab0) / held.connected);
	if (held.q0.overflows >= 0 && held.q1.overflows >= 0)
		printf(" listen_overflows=%lld listen_drops=%lld syncookies_sent=%lld",
		       held.q1.overflows - held.q0.overflows, held.q1.drops - held.q0.drops,
		       held.q1.cookies - held.q0.cookies);
}

static void print_held_pss(long pss0)
{
	if (held.pss >= 0)
		printf(" pss_held_kib=%ld pss_per_held_kib=%.2f", held.pss,
		       held.connected ? (double)(held.pss - pss0) / held.connected : 0.0);
}

/* What the slow workload measured. */
static struct {
	struct slow *s;
	struct fresh fresh;
	double from_s, to_s;	/* the new clients' phase, since the slow
				 * clients connected */
} slow;

static void run_slow(void)
{
	struct slow_opts so = {
		.port = o.port, .timeout_ms = o.timeout_ms, .trickle = o.idle,
		.period_ms = o.period_ms, .big = o.big, .big_bytes = o.big_bytes,
		.server = o.server,
	};

	slow.s = slow_start(&so);
	slow_wait_settled(slow.s);
	slow.from_s = slow_since(slow.s);
	mark_start();
	fresh_clients(&slow.fresh, o.fresh, true);
	mark_end();
	slow.to_s = slow_since(slow.s);
	slow_stop(slow.s);
	/* the new clients are this workload's requests */
	samples_add(&lat, slow.fresh.ok.v, slow.fresh.ok.n);
	ok_count = slow.fresh.ok.n;
	fail_count = slow.fresh.failed;
	resp_bytes = slow.fresh.bytes;
}

static void print_slow(void)
{
	struct fresh *f = &slow.fresh;

	slow_print(slow.s);
	samples_sort(&f->all);
	samples_sort(&f->ok);
	printf(" new_count=%u new_started=%u new_ok=%zu new_failed=%u new_timeout_ms=%d"
	       " new_interval_ms=%u new_from_s=%.1f new_to_s=%.1f",
	       o.fresh, f->started, f->ok.n, f->failed, o.fresh_timeout_ms,
	       o.interval_ms, slow.from_s, slow.to_s);
	if (f->all.n)
		printf(" new_p50_ms=%.3f new_p99_ms=%.3f new_max_ms=%.3f",
		       samples_ms(&f->all, 0.50), samples_ms(&f->all, 0.99),
		       samples_ms(&f->all, 1));
	if (f->ok.n)
		printf(" new_ok_max_ms=%.3f", samples_ms(&f->ok, 1));
	slow_free(slow.s);
	slow.s = NULL;
}

struct workload {
	const char *name;
	const char *unit;	/* of the rate: per second of the timed part */
	unsigned (*holds)(void);	/* connections it holds at once, or NULL */
	void (*run)(void);
	uint64_t (*ids)(void);	/* packets it sends, at most */
	void (*print)(void);	/* its own key=value pairs */
	void (*print_pss)(long pss0);
};

static uint64_t ids_churn(void)
{
	return o.count;
}

static uint64_t ids_stream(void)
{
	return (uint64_t)o.clients * o.count;
}

static uint64_t ids_bigread(void)
{
	return o.fill / o.grow + o.requests + 4;
}

static uint64_t ids_idle(void)
{
	return 2ULL * o.idle + o.count;
}

static uint64_t ids_held(void)
{
	return o.idle / 2 + (uint64_t)o.fresh + o.count + o.idle;
}

static uint64_t ids_slow(void)
{
	return o.fresh;
}

static unsigned holds_idle(void)
{
	return o.baseline ? 0 : o.idle;
}

static unsigned holds_slow(void)
{
	return o.idle + o.big;
}

static const struct workload workloads[] = {
	{ "churn", "conn/s", NULL, run_churn, ids_churn, NULL, NULL },
	{ "stream", "packets/s", NULL, run_stream, ids_stream, NULL, NULL },
	{ "bigread", "MiB/s", NULL, run_bigread, ids_bigread, print_bigread, NULL },
	{ "idle", "conn/s", holds_idle, run_idle, ids_idle, print_idle, print_idle_pss },
	{ "held", "conn/s", holds_idle, run_held, ids_held, print_held, print_held_pss },
	{ "slow", "conn/s", holds_slow, run_slow, ids_slow, print_slow, NULL },
};

static const struct workload *find_workload(const char *name)
{
	for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
		if (!strcmp(workloads[i].name, name))
			return &workloads[i];
	return NULL;
}

/* Soft RLIMIT_NOFILE up to the hard limit, and the hard one up to need
 * when we may (root); exits with a clear message when need does not fit. */
static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit");
	if (rl.rlim_max < need) {
		struct rlimit up = { need, need };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need) {
		fprintf(stderr, "aesdload: the connections held at once need %llu"
			" descriptors, but RLIMIT_NOFILE is %llu (hard limit): raise it"
			" (ulimit -Hn, as root) or lower -k\n", (unsigned long long)need,
			(unsigned long long)rl.rlim_max);
		exit(1);
	}
}

/* Every connection to the one server port needs its own ephemeral port. */
static void check_ports(rlim_t need)
{
	long ports = ephemeral_ports();

	if (ports >= 0 && (rlim_t)ports < need) {
		fprintf(stderr, "aesdload: net.ipv4.ip_local_port_range has %ld ports,"
			" the connections to one port need %llu: widen it (sysctl -w"
			" net.ipv4.ip_local_port_range=\"1024 65535\") or lower -k\n",
			ports, (unsigned long long)need);
		exit(1);
	}
	if (ports >= 0 && proc_number("/proc/sys/net/ipv4/tcp_tw_reuse") == 0 &&
	    (rlim_t)ports < need + o.count + o.fresh)
		fprintf(stderr, "aesdload: warning: net.ipv4.tcp_tw_reuse is 0 and closed"
			" connections keep their port for 60 s: %ld ports may run out\n",
			ports);
}

/* Descriptors and ports for the connections a workload holds at once. */
static void check_limits(const struct workload *w)
{
	rlim_t need = (rlim_t)o.clients + 64;

	if (w->holds)
		need += w->holds();
	raise_nofile(need);
	check_ports(need);
}

/* The closing request, and every response checked against its answer. */
static size_t verify_all(void)
{
	size_t len = 0;
	char *ref = fetch_final(&len);

	if (ref) {
		check_final(ref, len, &all_recs);
		free(ref);
	}
	return len;
}

static void report(const struct workload *w, size_t final_len, long pss0)
{
	double secs = (double)(tm.t1 - tm.t0) / 1e9;
	double done = w->run == run_bigread ? (double)resp_bytes / 1048576.0 : (double)ok_count;

	samples_sort(&lat);
	printf("workload=%s clients=%u count=%u size=%u", w->name, o.clients, o.count, o.size);
	if (w->print)
		w->print();
	printf(" ok=%" PRIu64 " failed=%" PRIu64 " elapsed_s=%.3f rate=%.1f unit=%s",
	       ok_count, fail_count, secs, secs > 0 ? done / secs : 0, w->unit);
	printf(" p50_ms=%.3f p99_ms=%.3f max_ms=%.3f resp_bytes=%" PRIu64 " final_file_bytes=%zu",
	       samples_ms(&lat, 0.50), samples_ms(&lat, 0.99), samples_ms(&lat, 1),
	       resp_bytes, final_len);
	if (o.server) {
		printf(" server_cpu_s=%.2f server_cpu_us_per_req=%.1f server_procs=%d"
		       " pss_base_kib=%ld pss_end_kib=%ld",
		       tm.cpu1 - tm.cpu0,
		       ok_count ? (tm.cpu1 - tm.cpu0) * 1e6 / (double)ok_count : 0.0,
		       tree_count(o.server), pss0, tree_pss_kib(o.server));
		if (w->print_pss)
			w->print_pss(pss0);
	}
	printf(" foreign_lines=%" PRIu64 " gen_cpu_s=%.2f errors=%" PRIu64,
	       foreign_lines, cpu_self(), err_total());
	for (int k = 0; k < ERR_COUNT; k++)
		printf(" err_%s=%" PRIu64, err_name[k], err_get(k));
	printf("\n");
}

int main(int argc, char **argv)
{
	const struct workload *w;
	struct record rec;
	long pss0 = -1;
	size_t final_len;

	parse(argc, argv);
	if (!strcmp(o.workload, "wait"))
		return wait_port();
	w = find_workload(o.workload);
	if (!w) {
		usage(stderr);
		return 2;
	}
	check_limits(w);
	if (check_init((uint32_t)(w->ids() + 8)) < 0)
		die("out of memory");
	if (single('o', 64, &rec) == 0)
		base_len = rec.len;
	if (o.server)
		pss0 = tree_pss_kib(o.server);
	w->run();
	final_len = verify_all();
	report(w, final_len, pss0);
	return err_total() ? 1 : 0;
}
