/*
 * faultshim: an LD_PRELOAD library for the integration tests.  It makes
 * chosen libc calls of the server fail with a chosen errno, logs every call
 * it intercepts, and records which processes run their atexit() handlers.
 * Built and used by faultshim.py; nothing here is part of the server.
 *
 *   AESD_FAULT_CONTROL  control file, re-read on every intercepted call, so
 *                       a test can switch faults on and off while the server
 *                       runs.  One fault a line:
 *                         <call> <ERRNO>      e.g. "fork EAGAIN", "accept4 22"
 *                         fork exit-child     every forked child _exit(0)s
 *                                             as soon as fork() returns in it
 *                         flock stop-once     the first process to take an
 *                                             exclusive flock() (of all that
 *                                             use this control file) stops
 *                                             itself (SIGSTOP) holding it
 *                       A missing or empty file means no fault.
 *   AESD_FAULT_LOG      one line per intercepted call, appended:
 *                         <monotonic ms> <pid> <call> <return value> <errno>
 *   AESD_FAULT_ATEXIT   a process that runs its atexit() handlers appends
 *                       "<pid>\n" (a child that ends with _exit() does not).
 *
 * Every file is opened, written and closed within the call (a raw syscall
 * each, no stdio, no malloc), so the shim keeps no descriptor in the
 * server, is async-signal-safe where fork() needs it, and never calls a
 * function it intercepts itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PATH_LEN 4096
#define CONTROL_LEN 4096

static char control_path[PATH_LEN];
static char log_path[PATH_LEN];
static char atexit_path[PATH_LEN];
static char fired_path[PATH_LEN + 8];	/* control file + ".fired" */

enum { FAULT_NONE = 0, FAULT_EXIT_CHILD = -1, FAULT_STOP_ONCE = -2 };

static const struct {
	const char *name;
	int value;
} errno_names[] = {
	{ "EAGAIN", EAGAIN }, { "ENFILE", ENFILE }, { "EMFILE", EMFILE },
	{ "ENOMEM", ENOMEM }, { "EINVAL", EINVAL }, { "EPERM", EPERM },
	{ "EACCES", EACCES }, { "EIO", EIO }, { "ENOSPC", ENOSPC },
	{ "EFBIG", EFBIG }, { "EINTR", EINTR }, { "ENOBUFS", ENOBUFS },
	{ "ECONNABORTED", ECONNABORTED }, { "EBADF", EBADF },
};

/* Our own string helpers: the libc ones may be a sanitizer's interceptors,
 * which would check our (uninstrumented) stack buffers. */
static size_t slen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

static int same(const char *a, const char *b, size_t len)
{
	while (len--)
		if (*a++ != *b++)
			return 0;
	return 1;
}

static void copy(char *dst, const char *src, size_t len)
{
	while (len--)
		*dst++ = *src++;
}

static void copy_env(char *dst, const char *name)
{
	const char *value = getenv(name);

	dst[0] = '\0';
	if (value && slen(value) < PATH_LEN)
		copy(dst, value, slen(value) + 1);
}

static int raw_open(const char *path, int flags)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC, 0666);
}

static void raw_close(int fd)
{
	syscall(SYS_close, fd);
}

static long raw_getpid(void)
{
	return syscall(SYS_getpid);
}

static size_t put_number(char *p, long long n)
{
	char digits[24];
	size_t len = 0, i;
	unsigned long long u = n < 0 ? -(unsigned long long)n : (unsigned long long)n;

	do {
		digits[len++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	i = 0;
	if (n < 0)
		p[i++] = '-';
	while (len)
		p[i++] = digits[--len];
	return i;
}

/* Appends one whole line with one write() (O_APPEND: never interleaved). */
static void append_line(const char *path, const char *line, size_t len)
{
	int fd;

	if (!path[0])
		return;
	fd = raw_open(path, O_WRONLY | O_APPEND | O_CREAT);
	if (fd < 0)
		return;
	syscall(SYS_write, fd, line, len);
	raw_close(fd);
}

static void log_call(const char *call, long long ret, int err)
{
	struct timespec ts;
	char line[160];
	size_t n = 0, call_len = slen(call);

	if (!log_path[0] || call_len > 64)
		return;
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
	n += put_number(line + n, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	line[n++] = ' ';
	n += put_number(line + n, raw_getpid());
	line[n++] = ' ';
	copy(line + n, call, call_len);
	n += call_len;
	line[n++] = ' ';
	n += put_number(line + n, ret);
	line[n++] = ' ';
	n += put_number(line + n, err);
	line[n++] = '\n';
	append_line(log_path, line, n);
}

static int parse_errno(const char *word, size_t len)
{
	size_t i;
	int value = 0;

	if (len == 10 && same(word, "exit-child", 10))
		return FAULT_EXIT_CHILD;
	if (len == 9 && same(word, "stop-once", 9))
		return FAULT_STOP_ONCE;
	for (i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
		if (slen(errno_names[i].name) == len &&
		    same(errno_names[i].name, word, len))
			return errno_names[i].value;
	for (i = 0; i < len; i++) {
		if (word[i] < '0' || word[i] > '9' || value > 100000)
			return FAULT_NONE;
		value = value * 10 + (word[i] - '0');
	}
	return value;
}

/* The fault the control file sets for this call now: an errno, or
 * FAULT_EXIT_CHILD, or FAULT_NONE. */
static int fault_for(const char *call)
{
	char text[CONTROL_LEN];
	size_t call_len = slen(call);
	long got;
	char *line, *end;
	int fd;

	if (!control_path[0])
		return FAULT_NONE;
	fd = raw_open(control_path, O_RDONLY);
	if (fd < 0)
		return FAULT_NONE;
	got = syscall(SYS_read, fd, text, sizeof(text) - 1);
	raw_close(fd);
	if (got <= 0)
		return FAULT_NONE;
	text[got] = '\0';
	for (line = text; *line; line = end + (*end != '\0')) {
		char *word, *word_end;

		end = line;
		while (*end && *end != '\n')
			end++;
		while (line < end && (*line == ' ' || *line == '\t'))
			line++;
		word = line;
		while (word < end && *word != ' ' && *word != '\t')
			word++;
		if ((size_t)(word - line) != call_len ||
		    !same(line, call, call_len))
			continue;
		while (word < end && (*word == ' ' || *word == '\t'))
			word++;
		word_end = word;
		while (word_end < end && *word_end != ' ' && *word_end != '\t' &&
		       *word_end != '\r')
			word_end++;
		return parse_errno(word, (size_t)(word_end - word));
	}
	return FAULT_NONE;
}

static void record_exit(void)
{
	char line[32];
	size_t n = put_number(line, raw_getpid());

	line[n++] = '\n';
	append_line(atexit_path, line, n);
}

/* Real functions, resolved once before main() (dlsym is not
 * async-signal-safe, and a lazy lookup in a forked child could deadlock). */
static pid_t (*real_fork)(void);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_epoll_create1)(int);
static int (*real_setuid)(uid_t);
static int (*real_setgid)(gid_t);
static int (*real_setresuid)(uid_t, uid_t, uid_t);
static int (*real_setresgid)(gid_t, gid_t, gid_t);
static int (*real_setgroups)(size_t, const gid_t *);
static int (*real_ftruncate)(int, off_t);
static int (*real_flock)(int, int);

#define RESOLVE(name) \
	(real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name))

static void resolve_all(void)
{
	RESOLVE(fork);
	RESOLVE(accept4);
	RESOLVE(accept);
	RESOLVE(epoll_create1);
	RESOLVE(setuid);
	RESOLVE(setgid);
	RESOLVE(setresuid);
	RESOLVE(setresgid);
	RESOLVE(setgroups);
	RESOLVE(ftruncate);
	RESOLVE(flock);
}

static int initialized;

__attribute__((constructor)) static void faultshim_init(void)
{
	if (initialized)
		return;
	copy_env(control_path, "AESD_FAULT_CONTROL");
	copy_env(log_path, "AESD_FAULT_LOG");
	copy_env(atexit_path, "AESD_FAULT_ATEXIT");
	if (control_path[0]) {
		size_t n = slen(control_path);

		copy(fired_path, control_path, n);
		copy(fired_path + n, ".fired", sizeof(".fired"));
	}
	resolve_all();
	if (atexit_path[0])
		atexit(record_exit);
	initialized = 1;
}

/* The common path of every wrapper: returns the errno to fail with (and
 * logs the failure), or 0 to call the real function. */
static int injected(const char *call, int *fault)
{
	int f;

	if (!initialized)
		faultshim_init();
	f = fault_for(call);
	*fault = f;
	if (f <= 0)
		return 0;
	log_call(call, -1, f);
	return f;
}

/* The wrapper of every call but fork(): fail as injected, else call the
 * real function and log it; then runs after the log, with ret and fault
 * in scope, and errno is restored after it. */
#define WRAP_THEN(call, ret_type, real_call, then)                      \
	do {                                                            \
		int saved = errno, fault, err;                          \
		ret_type ret;                                           \
		if ((err = injected(#call, &fault)) != 0) {             \
			errno = err;                                    \
			return (ret_type)-1;                            \
		}                                                       \
		if (!real_##call) {                                     \
			errno = ENOSYS;                                 \
			return (ret_type)-1;                            \
		}                                                       \
		errno = saved;                                          \
		ret = real_call;                                        \
		err = ret == (ret_type)-1 ? errno : 0;                  \
		log_call(#call, (long long)ret, err);                   \
		then;                                                   \
		errno = err ? err : saved;                              \
		return ret;                                             \
	} while (0)

#define WRAP(call, ret_type, real_call) \
	WRAP_THEN(call, ret_type, real_call, (void)fault)

pid_t fork(void)
{
	int saved = errno, fault, err;
	pid_t pid;

	if ((err = injected("fork", &fault)) != 0) {
		errno = err;
		return -1;
	}
	if (!real_fork) {
		errno = ENOSYS;
		return -1;
	}
	errno = saved;
	pid = real_fork();
	if (pid == 0) {
		if (fault == FAULT_EXIT_CHILD)
			_exit(0);
		return 0;
	}
	err = pid < 0 ? errno : 0;
	log_call("fork", pid, err);
	errno = err ? err : saved;
	return pid;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	WRAP(accept4, int, real_accept4(fd, addr, len, flags));
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	WRAP(accept, int, real_accept(fd, addr, len));
}

int epoll_create1(int flags)
{
	WRAP(epoll_create1, int, real_epoll_create1(flags));
}

int setuid(uid_t uid)
{
	WRAP(setuid, int, real_setuid(uid));
}

int setgid(gid_t gid)
{
	WRAP(setgid, int, real_setgid(gid));
}

int setresuid(uid_t r, uid_t e, uid_t s)
{
	WRAP(setresuid, int, real_setresuid(r, e, s));
}

int setresgid(gid_t r, gid_t e, gid_t s)
{
	WRAP(setresgid, int, real_setresgid(r, e, s));
}

int setgroups(size_t size, const gid_t *list)
{
	WRAP(setgroups, int, real_setgroups(size, list));
}

int ftruncate(int fd, off_t length)
{
	WRAP(ftruncate, int, real_ftruncate(fd, length));
}

/* True for the first process to get here since the marker file was
 * removed (O_EXCL decides between processes). */
static int first_to_fire(void)
{
	int fd;

	if (!fired_path[0])
		return 0;
	fd = raw_open(fired_path, O_WRONLY | O_CREAT | O_EXCL);
	if (fd < 0)
		return 0;
	raw_close(fd);
	return 1;
}

/* "flock stop-once": the first exclusive lock taken stops its taker. */
static void stop_if_first(int ret, int fault, int operation)
{
	if (ret == 0 && fault == FAULT_STOP_ONCE && (operation & LOCK_EX) &&
	    first_to_fire())
		syscall(SYS_kill, raw_getpid(), SIGSTOP);
}

int flock(int fd, int operation)
{
	WRAP_THEN(flock, int, real_flock(fd, operation),
		  stop_if_first(ret, fault, operation));
}

#if defined(__LP64__)
/* The same function under its large-file name (off_t is 64-bit here). */
int ftruncate64(int fd, off_t length)
{
	return ftruncate(fd, length);
}
#endif
