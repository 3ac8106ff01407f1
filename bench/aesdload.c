/* aesdload.c - load generator for aesdsocket that checks every response.
 *
 * Workloads (each starts and ends with a request of its own; the last
 * response is the final file, against which every response is checked):
 *   churn   C clients, N connections in all, one packet of S bytes each
 *   stream  C persistent connections, N packets each, one at a time
 *   bigread grow the file to F bytes, then R tiny requests on one connection
 *   idle    hold K idle connections, ping them, run churn, ping them again
 *           (-b: the baseline - same pings over one connection, none held)
 *   wait    wait until the port accepts connections (for scripts)
 * Output: one line of key=value pairs on stdout. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "client.h"
#include "proctree.h"
#include "util.h"

struct opts {
	const char *workload;
	uint16_t port;
	unsigned clients, count, size, idle, requests;
	uint64_t fill;
	size_t grow;
	int timeout_ms;
	pid_t server;
	int verbose;
	int baseline;
};

static struct opts o = {
	.clients = 1, .count = 1000, .size = 64, .idle = 200, .requests = 20,
	.fill = 16u << 20, .grow = 1000000, .timeout_ms = 10000,
};

/* results shared by the workers */
static pthread_mutex_t res_lock = PTHREAD_MUTEX_INITIALIZER;
static struct recvec all_recs;
static uint64_t *lat;		/* latencies in ns */
static size_t nlat, lat_cap;
static uint64_t ok_count, fail_count, resp_bytes;
static unsigned churn_next;

static void die(const char *msg)
{
	fprintf(stderr, "aesdload: %s%s%s\n", msg, errno ? ": " : "",
		errno ? strerror(errno) : "");
	exit(1);
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
	uint64_t *lat;
	size_t nlat, cap;
	uint64_t ok, fail, bytes;
};

static void local_add(struct local *l, const struct record *r, uint64_t ns)
{
	if (recvec_push(&l->recs, r) < 0)
		die("out of memory");
	if (l->nlat == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 1024;
		l->lat = reallocarray(l->lat, l->cap, sizeof(*l->lat));
		if (!l->lat)
			die("out of memory");
	}
	l->lat[l->nlat++] = ns;
	l->ok++;
	l->bytes += r->len;
}

static void local_merge(struct local *l)
{
	pthread_mutex_lock(&res_lock);
	if (recvec_append(&all_recs, &l->recs) < 0)
		die("out of memory");
	if (nlat + l->nlat > lat_cap) {
		lat_cap = (nlat + l->nlat) * 2;
		lat = reallocarray(lat, lat_cap, sizeof(*lat));
		if (!lat)
			die("out of memory");
	}
	memcpy(lat + nlat, l->lat, l->nlat * sizeof(*lat));
	nlat += l->nlat;
	ok_count += l->ok;
	fail_count += l->fail;
	resp_bytes += l->bytes;
	pthread_mutex_unlock(&res_lock);
	free(l->recs.v);
	free(l->lat);
	memset(l, 0, sizeof(*l));
}

static void new_packet(struct packet *p, char tag, size_t len)
{
	if (len < packet_min_len())
		len = packet_min_len();
	if (packet_make(p, tag, len) < 0)
		die("packet registry full");
}

/* One request on a new connection, outside the timed part. */
static int single(char tag, size_t len, struct record *rec)
{
	struct reader rd;
	struct packet p;
	int fd, rc = -1;

	if (reader_init(&rd, 1 << 20) < 0)
		die("out of memory");
	new_packet(&p, tag, len);
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
		new_packet(&p, 'c', o.size);
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
	for (unsigned i = 0; i < o.count; i++) {
		struct packet p;
		struct record rec;
		uint64_t t0;

		if (fd < 0) {
			l.fail += o.count - i;
			break;
		}
		new_packet(&p, 's', o.size);
		t0 = now_ns();
		if (exchange(fd, &p, CHECK_HASH, &rd, &rec) == 0) {
			local_add(&l, &rec, now_ns() - t0);
		} else {
			l.fail += o.count - i;
			close(fd);
			fd = -1;
		}
		packet_free(&p);
	}
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

/* Sends a small packet on every fd at once and collects the responses;
 * returns how many were answered correctly. */
static unsigned ping_all(int *fds, unsigned k, int deadline_ms)
{
	struct pollfd *pfd = calloc(k, sizeof(*pfd));
	struct pending *pd = calloc(k, sizeof(*pd));
	struct packet *pk = calloc(k, sizeof(*pk));
	char *buf = malloc(256 << 10);
	unsigned left = 0, good = 0;
	uint64_t deadline = now_ns() + (uint64_t)deadline_ms * 1000000u;

	if (!pfd || !pd || !pk || !buf)
		die("out of memory");
	for (unsigned i = 0; i < k; i++) {
		pfd[i].fd = -1;
		if (fds[i] < 0)
			continue;
		new_packet(&pk[i], 'i', packet_min_len());
		if (send(fds[i], pk[i].buf, pk[i].len, MSG_NOSIGNAL) != (ssize_t)pk[i].len) {
			err_count(errno == EAGAIN ? ERR_TIMEOUT : ERR_RESET);
			close(fds[i]);
			fds[i] = -1;
			continue;
		}
		packet_sent(&pk[i]);
		pending_start(&pd[i], &pk[i]);
		pfd[i].fd = fds[i];
		pfd[i].events = POLLIN;
		left++;
	}
	while (left) {
		uint64_t now = now_ns();
		int n;

		if (now >= deadline)
			break;
		n = poll(pfd, k, (int)((deadline - now) / 1000000u) + 1);
		if (n < 0 && errno != EINTR)
			die("poll");
		for (unsigned i = 0; n > 0 && i < k; i++) {
			struct record rec;
			ssize_t r;

			if (pfd[i].fd < 0 || !pfd[i].revents)
				continue;
			r = recv(pfd[i].fd, buf, 256 << 10, MSG_DONTWAIT);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) {
				pending_fail(&pd[i], r == 0, errno);
			} else if (pending_feed(&pd[i], buf, (size_t)r, &rec) == 1) {
				if (recvec_push(&all_recs, &rec) < 0)
					die("out of memory");
				good++;
			} else {
				continue;
			}
			if (r <= 0) {
				close(fds[i]);
				fds[i] = -1;
			}
			pfd[i].fd = -1;
			left--;
		}
	}
	for (unsigned i = 0; i < k; i++) {
		if (pfd[i].fd >= 0) {
			err_count(ERR_TIMEOUT);
			close(fds[i]);
			fds[i] = -1;
		}
		if (pk[i].buf)
			packet_free(&pk[i]);
	}
	free(pfd);
	free(pd);
	free(pk);
	free(buf);
	return good;
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
	new_packet(&p, 'z', 64);
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
static uint64_t mark_start(double *cpu)
{
	if (o.server)
		*cpu = tree_cpu_seconds(o.server);
	phase("timed-start");
	return now_ns();
}

/* End of the timed part, before anything else (closing the idle
 * connections lets their workers exit and be counted). */
static uint64_t mark_end(double *cpu)
{
	uint64_t t = now_ns();

	phase("timed-end");
	if (o.server)
		*cpu = tree_cpu_seconds(o.server);
	return t;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_ms(double q)
{
	size_t i;

	if (!nlat)
		return 0;
	i = (size_t)(q * (double)nlat + 0.999999);
	if (i == 0)
		i = 1;
	return (double)lat[i - 1] / 1e6;
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
		"usage: aesdload churn|stream|bigread|idle|wait -p PORT [options]\n"
		"  -c N   concurrent clients (churn, stream, idle)   [1]\n"
		"  -n N   churn: connections in all; stream: packets per connection [1000]\n"
		"  -s N   packet size in bytes, newline included     [64]\n"
		"  -F N   bigread: grow the file to N bytes (K/M suffix) [16M]\n"
		"  -g N   bigread: size of the packets that grow the file [1000000]\n"
		"  -r N   bigread: timed requests                    [20]\n"
		"  -k N   idle: connections held                     [200]\n"
		"  -b     idle: baseline - send the same pings over one connection and\n"
		"         hold none, then churn (same file size as the real run)\n"
		"  -t MS  timeout for connect/send/receive           [10000]\n"
		"  -P PID server pid, for its CPU and memory (whole process tree)\n"
		"  -v     print the timed phase's start and end (CLOCK_MONOTONIC) on stderr\n");
}

static void parse(int argc, char **argv)
{
	int c;

	if (argc < 2 || argv[1][0] == '-') {
		usage(stderr);
		exit(2);
	}
	o.workload = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "p:c:n:s:F:g:r:k:t:P:bvh")) != -1) {
		switch (c) {
		case 'p': o.port = (uint16_t)parse_num("aesdload", "port", optarg, 1, 65535); break;
		case 'c': o.clients = (unsigned)parse_num("aesdload", "clients", optarg, 1, 1024); break;
		case 'n': o.count = (unsigned)parse_num("aesdload", "count", optarg, 1, 10000000); break;
		case 's': o.size = (unsigned)parse_num("aesdload", "size", optarg, packet_min_len(), 1 << 24); break;
		case 'F': o.fill = parse_num("aesdload", "file size", optarg, 1, 1ULL << 32); break;
		case 'g': o.grow = parse_num("aesdload", "growth size", optarg, packet_min_len(), 1 << 26); break;
		case 'r': o.requests = (unsigned)parse_num("aesdload", "requests", optarg, 1, 1000000); break;
		case 'k': o.idle = (unsigned)parse_num("aesdload", "idle count", optarg, 0, 100000); break;
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

int main(int argc, char **argv)
{
	struct rlimit rl;
	struct record rec;
	uint64_t t0, t1, capacity;
	double cpu0 = 0, cpu1 = 0;
	long pss0 = -1, pss_idle = -1;
	int *idle_fds = NULL;
	unsigned held = 0, accepted = 0, served = 0;
	uint64_t accept_t = 0;
	uint64_t base_len = 0, grow_bytes = 0;
	char *ref, *warm = NULL;
	size_t ref_len = 0;
	double rate;
	const char *unit;

	parse(argc, argv);
	if (!strcmp(o.workload, "wait"))
		return wait_port();
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!strcmp(o.workload, "churn"))
		capacity = o.count;
	else if (!strcmp(o.workload, "stream"))
		capacity = (uint64_t)o.clients * o.count;
	else if (!strcmp(o.workload, "bigread"))
		capacity = o.fill / o.grow + o.requests + 4;
	else if (!strcmp(o.workload, "idle"))
		capacity = 2ULL * o.idle + o.count;
	else {
		usage(stderr);
		return 2;
	}
	if (check_init((uint32_t)(capacity + 8)) < 0)
		die("out of memory");

	if (single('o', 64, &rec) == 0)
		base_len = rec.len;
	if (o.server)
		pss0 = tree_pss_kib(o.server);
	t0 = mark_start(&cpu0);
	t1 = t0;
	if (!strcmp(o.workload, "churn")) {
		run_threads(churn_thread, o.clients);
		t1 = mark_end(&cpu1);
	} else if (!strcmp(o.workload, "stream")) {
		run_threads(stream_thread, o.clients);
		t1 = mark_end(&cpu1);
	} else if (!strcmp(o.workload, "bigread")) {
		struct reader rd;
		struct local l = { 0 };
		uint64_t cur = base_len;
		int fd = lo_connect(o.port, o.timeout_ms);

		if (reader_init(&rd, 1 << 20) < 0)
			die("out of memory");
		while (fd >= 0 && cur < o.fill) {
			struct packet p;
			uint64_t want = o.fill - cur;

			new_packet(&p, 'g', want < o.grow ? want : o.grow);
			if (exchange(fd, &p, CHECK_LEN, &rd, &rec) < 0) {
				close(fd);
				fd = -1;
			} else {
				if (recvec_push(&all_recs, &rec) < 0)
					die("out of memory");
				grow_bytes += rec.len;
				cur = rec.len;
			}
			packet_free(&p);
		}
		/* one fully hashed response, kept for the spot checks */
		warm = malloc(cur + 1024);
		if (!warm)
			die("out of memory");
		rd.keep = warm;
		rd.keep_cap = cur + 1024;
		if (fd >= 0) {
			struct packet p;

			new_packet(&p, 'w', 32);
			if (exchange(fd, &p, CHECK_HASH, &rd, &rec) < 0) {
				close(fd);
				fd = -1;
			} else {
				if (recvec_push(&all_recs, &rec) < 0)
					die("out of memory");
				rd.spot = warm;
				rd.spot_len = rec.len;
			}
			packet_free(&p);
		}
		rd.keep = NULL;
		t0 = mark_start(&cpu0);
		for (unsigned i = 0; i < o.requests; i++) {
			struct packet p;
			uint64_t s;

			if (fd < 0) {
				l.fail += o.requests - i;
				break;
			}
			new_packet(&p, 'b', 32);
			s = now_ns();
			if (exchange(fd, &p, CHECK_SPOT, &rd, &rec) == 0) {
				local_add(&l, &rec, now_ns() - s);
			} else {
				l.fail += o.requests - i;
				close(fd);
				fd = -1;
			}
			packet_free(&p);
		}
		t1 = mark_end(&cpu1);
		end_session(fd, &rd);
		local_merge(&l);
	} else if (o.baseline) {
		/* the same file growth as the idle pings, without holding any
		 * connection: what "churn without idle connections" compares to */
		struct reader rd;
		int fd = lo_connect(o.port, o.timeout_ms);

		if (reader_init(&rd, 256 << 10) < 0)
			die("out of memory");
		for (unsigned i = 0; fd >= 0 && i < o.idle; i++) {
			struct packet p;

			new_packet(&p, 'i', packet_min_len());
			if (exchange(fd, &p, CHECK_HASH, &rd, &rec) == 0) {
				if (recvec_push(&all_recs, &rec) < 0)
					die("out of memory");
				accepted++;
			} else {
				close(fd);
				fd = -1;
			}
			packet_free(&p);
		}
		end_session(fd, &rd);
		t0 = mark_start(&cpu0);
		run_threads(churn_thread, o.clients);
		t1 = mark_end(&cpu1);
	} else {
		idle_fds = calloc(o.idle ? o.idle : 1, sizeof(*idle_fds));
		if (!idle_fds)
			die("out of memory");
		for (unsigned i = 0; i < o.idle; i++) {
			idle_fds[i] = lo_connect(o.port, o.timeout_ms);
			held += idle_fds[i] >= 0;
		}
		/* the server may start a process per connection: give it time */
		accept_t = now_ns();
		accepted = ping_all(idle_fds, o.idle, 3 * o.timeout_ms);
		accept_t = now_ns() - accept_t;
		if (o.server)
			pss_idle = tree_pss_kib(o.server);
		t0 = mark_start(&cpu0);
		run_threads(churn_thread, o.clients);
		t1 = mark_end(&cpu1);
		served = ping_all(idle_fds, o.idle, o.timeout_ms);
		for (unsigned i = 0; i < o.idle; i++)
			if (idle_fds[i] >= 0)
				close(idle_fds[i]);
		free(idle_fds);
	}

	/* every response against the final file */
	ref = fetch_final(&ref_len);
	if (ref) {
		check_final(ref, ref_len, &all_recs);
		free(ref);
	}
	free(warm);

	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	double secs = (double)(t1 - t0) / 1e9;
	if (!strcmp(o.workload, "bigread")) {
		rate = secs > 0 ? (double)resp_bytes / 1048576.0 / secs : 0;
		unit = "MiB/s";
	} else if (!strcmp(o.workload, "stream")) {
		rate = secs > 0 ? (double)ok_count / secs : 0;
		unit = "packets/s";
	} else {
		rate = secs > 0 ? (double)ok_count / secs : 0;
		unit = "conn/s";
	}
	printf("workload=%s clients=%u count=%u size=%u", o.workload, o.clients, o.count, o.size);
	if (!strcmp(o.workload, "bigread"))
		printf(" fill=%" PRIu64 " requests=%u grow_bytes=%" PRIu64, o.fill, o.requests, grow_bytes);
	if (!strcmp(o.workload, "idle"))
		printf(" baseline=%d", o.baseline);
	if (!strcmp(o.workload, "idle"))
		printf(" idle=%u idle_held=%u idle_accepted=%u idle_accept_s=%.3f"
		       " idle_served_after=%u",
		       o.idle, held, accepted, (double)accept_t / 1e9, served);
	printf(" ok=%" PRIu64 " failed=%" PRIu64 " elapsed_s=%.3f rate=%.1f unit=%s",
	       ok_count, fail_count, secs, rate, unit);
	printf(" p50_ms=%.3f p99_ms=%.3f max_ms=%.3f resp_bytes=%" PRIu64 " final_file_bytes=%zu",
	       pct_ms(0.50), pct_ms(0.99), nlat ? (double)lat[nlat - 1] / 1e6 : 0.0,
	       resp_bytes, ref_len);
	if (o.server) {
		long pss1 = tree_pss_kib(o.server);

		printf(" server_cpu_s=%.2f server_cpu_us_per_req=%.1f server_procs=%d"
		       " pss_base_kib=%ld pss_end_kib=%ld",
		       cpu1 - cpu0, ok_count ? (cpu1 - cpu0) * 1e6 / (double)ok_count : 0.0,
		       tree_count(o.server), pss0, pss1);
		if (pss_idle >= 0)
			printf(" pss_idle_kib=%ld pss_per_idle_kib=%.1f", pss_idle,
			       accepted ? (double)(pss_idle - pss0) / accepted : 0.0);
	}
	printf(" foreign_lines=%" PRIu64 " gen_cpu_s=%.2f errors=%" PRIu64,
	       foreign_lines, cpu_self(), err_total());
	for (int k = 0; k < ERR_COUNT; k++)
		printf(" err_%s=%" PRIu64, err_name[k], err_get(k));
	printf("\n");
	return err_total() ? 1 : 0;
}
