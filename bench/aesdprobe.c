/* aesdprobe.c - what this machine can do at best, measured in the same run
 * as the server so the benchmark can report ratios instead of absolutes:
 *   sendfile -F BYTES -r R   loopback sendfile() of a file to a reader that
 *                            discards it: MiB/s
 *   trivial -p PORT [-t N] [-k] [-B BUG]
 *                            minimal in-memory server for the same protocol
 *                            (accept, read one packet, append, answer, close)
 *                            on N threads [nproc]; run the churn client on it.
 *                            -k: keep connections (thread each) for every
 *                            workload; -B short|flip|dup|extra|close:
 *                            inject a bug
 *   fork -n N                fork()+_exit()+waitpid() cost in microseconds
 *   thread -n N              pthread_create()+join cost in microseconds
 *   freeport                 print a TCP port that is free on 127.0.0.1
 *   seccomp -n N             nanoseconds per call of a worker's frequent
 *                            calls without and with the workers' own
 *                            system call filter (server/src/sandbox.c), in
 *                            20 alternating rounds, the least disturbed
 * Output: key=value pairs on stdout. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"
#include "util.h"


/* Listening socket on 127.0.0.1:port (0: any free port). */
static int lo_listen(uint16_t port, uint16_t *bound)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	socklen_t sl = sizeof(sa);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind");
	if (listen(fd, 4096) < 0)
		die("listen");
	if (bound) {
		getsockname(fd, (struct sockaddr *)&sa, &sl);
		*bound = ntohs(sa.sin_port);
	}
	return fd;
}

static int lo_connect(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect");
	return fd;
}

struct drain {
	int fd;
	uint64_t want, got;
};

static void *drain_thread(void *arg)
{
	struct drain *d = arg;
	size_t cap = 1 << 20;
	char *buf = malloc(cap);

	if (!buf)
		die("malloc");
	while (d->got < d->want) {
		ssize_t n = recv(d->fd, buf, cap, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		d->got += (uint64_t)n;
	}
	free(buf);
	return NULL;
}

static int probe_sendfile(uint64_t size, unsigned reps, const char *dir)
{
	char path[4096];
	uint16_t port;
	int lfd = lo_listen(0, &port);
	int file, cfd, sfd;
	struct drain d = { 0 };
	pthread_t t;
	char *block;
	uint64_t t0, t1;

	snprintf(path, sizeof(path), "%s/aesdprobe.XXXXXX", dir);
	file = mkstemp(path);
	if (file < 0)
		die("mkstemp");
	unlink(path);
	block = malloc(1 << 20);
	if (!block)
		die("malloc");
	memset(block, 'x', 1 << 20);
	for (uint64_t left = size; left;) {
		size_t n = left < (1 << 20) ? (size_t)left : (1 << 20);
		ssize_t w = write(file, block, n);

		if (w <= 0)
			die("write");
		left -= (uint64_t)w;
	}
	free(block);
	cfd = lo_connect(port);
	sfd = accept(lfd, NULL, NULL);
	if (sfd < 0)
		die("accept");
	d.fd = cfd;
	d.want = size * reps;
	if ((errno = pthread_create(&t, NULL, drain_thread, &d)))
		die("pthread_create");
	t0 = now_ns();
	for (unsigned r = 0; r < reps; r++) {
		off_t off = 0;

		while ((uint64_t)off < size) {
			ssize_t w = sendfile(sfd, file, &off, size - (uint64_t)off);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				die("sendfile");
		}
	}
	pthread_join(t, NULL);
	t1 = now_ns();
	printf("probe=sendfile bytes=%llu reps=%u elapsed_s=%.3f rate=%.1f unit=MiB/s\n",
	       (unsigned long long)size, reps, (double)(t1 - t0) / 1e9,
	       (double)d.got / 1048576.0 / ((double)(t1 - t0) / 1e9));
	close(sfd);
	close(cfd);
	close(lfd);
	close(file);
	return d.got == d.want ? 0 : 1;
}

/* The trivial server: the whole "file" lives in one mapping that never
 * moves, so answers are sent without holding the lock. With -k it keeps
 * connections open (a thread each) so every workload can run against it;
 * with -B it injects one kind of bug, to show that the generator sees it.
 * BUG_CLOSE forgets -k after the first answer: a connection held idle
 * after one exchange is closed, which only the held workload notices. */
enum bug { BUG_NONE, BUG_SHORT, BUG_FLIP, BUG_DUP, BUG_EXTRA, BUG_CLOSE };

static struct {
	int lfd;
	int keep;
	enum bug bug;
	pthread_mutex_t lock;
	char *data;
	size_t len, cap;
} tv = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int send_all(int fd, const char *d, size_t n)
{
	while (n) {
		ssize_t w = send(fd, d, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		d += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Appends one packet and answers it; -1 to drop the connection. */
static int answer(int fd, const char *pkt, size_t n)
{
	size_t end;
	unsigned copies = tv.bug == BUG_DUP ? 2 : 1;

	pthread_mutex_lock(&tv.lock);
	if (tv.len + copies * n > tv.cap) {
		pthread_mutex_unlock(&tv.lock);
		return -1;
	}
	for (unsigned i = 0; i < copies; i++) {
		memcpy(tv.data + tv.len, pkt, n);
		tv.len += n;
	}
	end = tv.len;
	pthread_mutex_unlock(&tv.lock);
	switch (tv.bug) {
	case BUG_SHORT:
		send_all(fd, tv.data, end > 10 ? end - 10 : 0);
		return -1;
	case BUG_FLIP: {
		/* a different byte in each response, so they disagree */
		char c = tv.data[end / 2] ^ 1;

		if (send_all(fd, tv.data, end / 2) < 0 || send_all(fd, &c, 1) < 0)
			return -1;
		return send_all(fd, tv.data + end / 2 + 1, end - end / 2 - 1);
	}
	case BUG_EXTRA:
		if (send_all(fd, tv.data, end) < 0)
			return -1;
		return send_all(fd, "x\n", 2);
	default:
		return send_all(fd, tv.data, end);
	}
}

#define CONN_BUF (1 << 21)	/* room for the largest packet we send */

static void serve_conn(int fd, char *buf)
{
	size_t cap = CONN_BUF, have = 0;

	for (;;) {
		char *nl;
		ssize_t n = recv(fd, buf + have, cap - have, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		while ((nl = memchr(buf, '\n', have))) {
			size_t plen = (size_t)(nl - buf) + 1;

			if (answer(fd, buf, plen) < 0 || !tv.keep || tv.bug == BUG_CLOSE)
				return;
			memmove(buf, buf + plen, have - plen);
			have -= plen;
		}
		if (have == cap)
			break;
	}
}

static void *conn_thread(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *buf = malloc(CONN_BUF);

	if (buf)
		serve_conn(fd, buf);
	free(buf);
	close(fd);
	return NULL;
}

static void *trivial_thread(void *arg)
{
	int one = 1;
	pthread_attr_t attr;
	/* one buffer per accepting thread: no allocation per connection */
	char *buf = tv.keep ? NULL : malloc(CONN_BUF);

	(void)arg;
	if (!tv.keep && !buf)
		die("malloc");
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (;;) {
		int fd = accept(tv.lfd, NULL, NULL);
		pthread_t t;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (!tv.keep) {
			serve_conn(fd, buf);
			close(fd);
		} else if ((errno = pthread_create(&t, &attr, conn_thread, (void *)(intptr_t)fd))) {
			close(fd);
		}
	}
	return NULL;
}

static int probe_trivial(uint16_t port, unsigned threads)
{
	pthread_t t;
	sigset_t set;
	int sig;

	tv.cap = (size_t)1 << 30;
	tv.data = mmap(NULL, tv.cap, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (tv.data == MAP_FAILED)
		die("mmap");
	tv.lfd = lo_listen(port, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (unsigned i = 0; i < threads; i++)
		if ((errno = pthread_create(&t, NULL, trivial_thread, NULL)))
			die("pthread_create");
	sigwait(&set, &sig);
	return 0;
}

static void *nothing(void *arg)
{
	return arg;
}

/* Round trip (create, run, exit, reap) and the creating call alone; the
 * round trip includes waiting for a CPU, which on a loaded machine is most
 * of it. */
static int probe_fork(unsigned n, int threads)
{
	uint64_t t0 = now_ns(), t1, in_call = 0;

	for (unsigned i = 0; i < n; i++) {
		if (threads) {
			pthread_t t;
			uint64_t c = now_ns();

			if ((errno = pthread_create(&t, NULL, nothing, NULL)))
				die("pthread_create");
			in_call += now_ns() - c;
			pthread_join(t, NULL);
		} else {
			uint64_t c = now_ns();
			pid_t pid = fork();
			int st;

			if (pid < 0)
				die("fork");
			if (pid == 0)
				_exit(0);
			in_call += now_ns() - c;
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
		}
	}
	t1 = now_ns();
	printf("probe=%s count=%u us_each=%.1f us_call=%.1f\n", threads ? "thread" : "fork",
	       n, (double)(t1 - t0) / 1e3 / n, (double)in_call / 1e3 / n);
	return 0;
}

/* ns per call, n calls each, of three calls a worker makes all the time,
 * in the filter's order: getpid (the log line's pid), fstat (the file's
 * size at each append) and recv (each read of a client). */
static void time_calls(unsigned n, int fd, double ns[3])
{
	struct stat st;
	char byte;
	uint64_t t;
	unsigned i;

	t = now_ns();
	for (i = 0; i < n; i++)
		syscall(SYS_getpid);
	ns[0] = (double)(now_ns() - t) / n;
	t = now_ns();
	for (i = 0; i < n; i++)
		fstat(fd, &st);
	ns[1] = (double)(now_ns() - t) / n;
	t = now_ns();
	for (i = 0; i < n; i++)
		recv(fd, &byte, 1, MSG_DONTWAIT);	/* EAGAIN */
	ns[2] = (double)(now_ns() - t) / n;
}

/* Rounds of the seccomp probe: the unconfined parent and the confined
 * child take turns, so that a change in the machine's load hits both; each
 * side's figure is its least disturbed round. */
#define SECCOMP_ROUNDS 20

static void keep_least(double best[3], const double ns[3], unsigned round)
{
	for (int i = 0; i < 3; i++)
		if (round == 0 || ns[i] < best[i])
			best[i] = ns[i];
}

/* The confined side: one round per byte on go, its figures back on done. */
static void seccomp_child(int go, int done, int fd, unsigned n)
{
	struct sandbox_worker w = { -1, -1, NULL };
	double ns[3];
	char byte;

	if (sandbox_confine(&w) != 0)
		_exit(1);
	while (read(go, &byte, 1) == 1) {
		time_calls(n, fd, ns);
		if (write(done, ns, sizeof(ns)) != (ssize_t)sizeof(ns))
			_exit(1);
	}
	_exit(0);
}

/* What the workers' filter costs per call: the same calls in this process
 * and in a child that has loaded the server's own filter, in turns. */
static int probe_seccomp(unsigned n)
{
	int sv[2], go[2], done[2], st;
	double off[3], on[3], ns[3];
	unsigned per_round = n / SECCOMP_ROUNDS ? n / SECCOMP_ROUNDS : 1;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || pipe(go) != 0 ||
	    pipe(done) != 0)
		die("socketpair/pipe");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(go[1]);
		close(done[0]);
		seccomp_child(go[0], done[1], sv[0], per_round);
	}
	close(go[0]);
	close(done[1]);
	time_calls(per_round, sv[0], ns);	/* warm up */
	for (unsigned r = 0; r < SECCOMP_ROUNDS; r++) {
		time_calls(per_round, sv[0], ns);
		keep_least(off, ns, r);
		if (write(go[1], "", 1) != 1 ||
		    read(done[0], ns, sizeof(ns)) != (ssize_t)sizeof(ns))
			die("the confined child");
		keep_least(on, ns, r);
	}
	close(go[1]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 1;
	printf("probe=seccomp count=%u rounds=%u getpid_off_ns=%.1f "
	       "getpid_on_ns=%.1f fstat_off_ns=%.1f fstat_on_ns=%.1f "
	       "recv_off_ns=%.1f recv_on_ns=%.1f\n", per_round * SECCOMP_ROUNDS,
	       SECCOMP_ROUNDS, off[0], on[0], off[1], on[1], off[2], on[2]);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long size = 64ull << 20, reps = 10, count = 2000, port = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned long long threads = ncpu > 0 ? (unsigned long long)ncpu : 1;
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	const char *what;
	int c;

	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: aesdprobe sendfile|trivial|fork|thread|freeport|seccomp [options]\n");
		return 2;
	}
	what = argv[1];
	optind = 2;
	while ((c = getopt(argc, argv, "F:r:n:p:t:d:kB:")) != -1) {
		switch (c) {
		case 'F': size = parse_num("aesdprobe", "file size", optarg, 1, 1ull << 34); break;
		case 'r': reps = parse_num("aesdprobe", "repetitions", optarg, 1, 100000); break;
		case 'n': count = parse_num("aesdprobe", "count", optarg, 1, 10000000); break;
		case 'p': port = parse_num("aesdprobe", "port", optarg, 1, 65535); break;
		case 't': threads = parse_num("aesdprobe", "threads", optarg, 1, 256); break;
		case 'd': dir = optarg; break;
		case 'k': tv.keep = 1; break;
		case 'B':
			if (!strcmp(optarg, "short"))
				tv.bug = BUG_SHORT;
			else if (!strcmp(optarg, "flip"))
				tv.bug = BUG_FLIP;
			else if (!strcmp(optarg, "dup"))
				tv.bug = BUG_DUP;
			else if (!strcmp(optarg, "extra"))
				tv.bug = BUG_EXTRA;
			else if (!strcmp(optarg, "close"))
				tv.bug = BUG_CLOSE;
			else
				return 2;
			break;
		default: return 2;
		}
	}
	if (!strcmp(what, "sendfile"))
		return probe_sendfile(size, (unsigned)reps, dir);
	if (!strcmp(what, "trivial")) {
		if (!port) {
			fprintf(stderr, "aesdprobe: trivial needs -p PORT\n");
			return 2;
		}
		return probe_trivial((uint16_t)port, (unsigned)threads);
	}
	if (!strcmp(what, "fork") || !strcmp(what, "thread"))
		return probe_fork((unsigned)count, what[0] == 't');
	if (!strcmp(what, "seccomp"))
		return probe_seccomp((unsigned)count);
	if (!strcmp(what, "freeport")) {
		uint16_t p;
		int fd = lo_listen(0, &p);

		close(fd);
		printf("%u\n", p);
		return 0;
	}
	fprintf(stderr, "aesdprobe: unknown probe '%s'\n", what);
	return 2;
}
