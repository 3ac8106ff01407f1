/* lifecycle: signals, daemonizing, pidfile and privileges. */
#include "lifecycle.h"

#include "log.h"

#include "mstime.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t child_changed;
static sigset_t wait_mask;

/* Signals that stop the server cleanly.  SIGHUP too, in the foreground: a
 * closed terminal ends the session; lifecycle_daemonize() ignores it. */
static const int stop_signals[] = {
	SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGXCPU,
#ifdef SIGPWR
	SIGPWR,
#endif
};

/* Signals whose default would end the process but that mean nothing to
 * this server; real-time signals too. */
static const int ignored_signals[] = {
	SIGPIPE, SIGXFSZ, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO,
#ifdef SIGSTKFLT
	SIGSTKFLT,
#endif
};

/* Sent with kill() they are a request to stop; raised by a real fault they
 * must still crash (and reach a sanitizer's handler, if any). */
static const int fault_signals[] = {
	SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT,
};
static struct sigaction fault_default[sizeof(fault_signals) /
				      sizeof(fault_signals[0])];

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void on_stop_signal(int signo)
{
	(void)signo;
	stop_requested = 1;
}

/* Only has to exist: a caught SIGCHLD ends the parent's wait, which then
 * reaps (or notes a stopped worker). */
static void on_child_change(int signo)
{
	(void)signo;
	child_changed = 1;
}

static void on_fault_signal(int signo, siginfo_t *info, void *context)
{
	size_t i;

	(void)context;
	if (info->si_code <= 0) {	/* sent by a process, not a fault */
		raise(SIGTERM);		/* blocked: taken at the next wait */
		return;
	}
	for (i = 0; i < COUNT(fault_signals); i++)
		if (fault_signals[i] == signo)
			sigaction(signo, &fault_default[i], NULL);
	/* returning re-runs the faulting instruction under that action */
}

static int set_handler(int signo, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

static int set_fault_handlers(void)
{
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < COUNT(fault_signals); i++)
		if (sigaction(fault_signals[i], &sa, &fault_default[i]) != 0)
			return -1;
	return 0;
}

static int ignore_signals(void)
{
	size_t i;
	int signo;

	for (i = 0; i < COUNT(ignored_signals); i++)
		if (set_handler(ignored_signals[i], SIG_IGN) != 0)
			return -1;
	for (signo = SIGRTMIN; signo <= SIGRTMAX; signo++)
		if (set_handler(signo, SIG_IGN) != 0)
			return -1;
	return 0;
}

int lifecycle_setup_signals(void)
{
	sigset_t blocked;
	size_t i;

	sigemptyset(&blocked);
	for (i = 0; i < COUNT(stop_signals); i++)
		sigaddset(&blocked, stop_signals[i]);
	sigaddset(&blocked, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &blocked, &wait_mask) != 0)
		goto fail;
	for (i = 0; i < COUNT(stop_signals); i++) {
		sigdelset(&wait_mask, stop_signals[i]);
		if (set_handler(stop_signals[i], on_stop_signal) != 0)
			goto fail;
	}
	sigdelset(&wait_mask, SIGCHLD);
	if (set_handler(SIGCHLD, on_child_change) != 0 || ignore_signals() != 0 ||
	    set_fault_handlers() != 0)
		goto fail;
	return 0;
fail:
	log_errno("Cannot set up signal handling: sigprocmask/sigaction");
	return -1;
}

const sigset_t *lifecycle_wait_mask(void)
{
	return &wait_mask;
}

void lifecycle_sleep_ms(int ms)
{
	struct timespec ts = ms_timespec(ms);

	ppoll(NULL, 0, &ts, &wait_mask);
}

bool lifecycle_stop_requested(void)
{
	return stop_requested != 0;
}

bool lifecycle_child_changed(void)
{
	if (!child_changed)
		return false;
	child_changed = 0;
	return true;
}

int lifecycle_open_stdio(void)
{
	int fd;

	do {
		fd = open("/dev/null", O_RDWR);
	} while (fd >= 0 && fd <= STDERR_FILENO);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static void close_range_of(unsigned first, unsigned last)
{
	struct rlimit rl;
	unsigned fd;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, first, last, 0) == 0)
		return;
#endif
	/* kernels before 5.9 */
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur > 1U << 20)
		rl.rlim_cur = 1U << 20;
	for (fd = first; fd <= last && fd < rl.rlim_cur; fd++)
		close((int)fd);
}

void lifecycle_close_fds_except(const int *keep, size_t n)
{
	unsigned first = STDERR_FILENO + 1;
	size_t i;

	for (i = 0; i < n; i++) {
		if ((unsigned)keep[i] > first)
			close_range_of(first, (unsigned)keep[i] - 1);
		first = (unsigned)keep[i] + 1;
	}
	close_range_of(first, ~0U);
}

const char *lifecycle_absolute_path(const char *path, char *buf, size_t size)
{
	char cwd[PATH_MAX];
	int len;

	if (path[0] == '/')
		len = snprintf(buf, size, "%s", path);
	else if (getcwd(cwd, sizeof(cwd)))
		len = snprintf(buf, size, "%s/%s", cwd, path);
	else
		len = -1;
	if (len < 0 || (size_t)len >= size) {
		log_msg(LOG_ERR, "Cannot make %s an absolute path", path);
		return NULL;
	}
	return buf;
}

unsigned long lifecycle_raise_fd_limit(unsigned long need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	if (rl.rlim_cur >= need)
		return rl.rlim_cur;
	if (rl.rlim_max < need) {
		struct rlimit both = { need, need };

		if (setrlimit(RLIMIT_NOFILE, &both) == 0)
			return need;
	}
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 &&
	    getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 0;
	return rl.rlim_cur;
}

static int redirect_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return -1;
	if (dup2(fd, STDIN_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
	    dup2(fd, STDERR_FILENO) < 0) {
		close(fd);
		return -1;
	}
	if (fd > STDERR_FILENO)
		close(fd);
	return 0;
}

/* The original process: wait for the daemon's verdict, exit with it.
 * _exit(): the daemon carries on with this process's state (stdio buffers,
 * atexit handlers), which must not be flushed or run twice. */
static void wait_for_readiness(int ready_fd)
{
	char verdict = 0;
	ssize_t n;

	do {
		n = read(ready_fd, &verdict, 1);
	} while (n < 0 && errno == EINTR);
	if (n == 1 && verdict == 'R')
		_exit(EXIT_SUCCESS);
	fprintf(stderr,
		"aesdsocket: the background server failed to start; see the system log\n");
	_exit(EXIT_FAILURE);
}

int lifecycle_daemonize(int *ready_fd)
{
	int pipe_fds[2];
	pid_t pid;

	if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
		log_errno("Cannot daemonize: pipe2");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		log_errno("Cannot daemonize: fork");
		close(pipe_fds[0]);
		close(pipe_fds[1]);
		return -1;
	}
	if (pid > 0) {
		close(pipe_fds[1]);
		wait_for_readiness(pipe_fds[0]);
	}
	close(pipe_fds[0]);
	*ready_fd = pipe_fds[1];
	/* No terminal can hang up on a daemon: a SIGHUP is someone's
	 * "reload", and there is nothing to reload. */
	if (setsid() < 0 || chdir("/") != 0 || redirect_stdio() != 0 ||
	    set_handler(SIGHUP, SIG_IGN) != 0) {
		log_errno("Cannot detach from the terminal: setsid/chdir/dup2");
		lifecycle_report_ready(*ready_fd, false);
		return -1;
	}
	return 0;
}

void lifecycle_report_ready(int ready_fd, bool ok)
{
	char verdict = ok ? 'R' : 'F';

	if (ready_fd < 0)
		return;
	if (write(ready_fd, &verdict, 1) != 1)
		log_errno("Cannot report readiness to the caller: write");
	close(ready_fd);
}

int pidfile_write(const char *path)
{
	char text[32];
	struct stat st;
	int len, fd;

	/* No O_TRUNC before the checks: never truncate what a planted link
	 * points to.  O_NONBLOCK: never hang on a planted FIFO. */
	fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC |
				O_NONBLOCK, 0644);
	if (fd < 0) {
		log_errno("Cannot open pidfile %s: open", path);
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		log_msg(LOG_ERR, "Refusing pidfile %s: not a plain file", path);
		close(fd);
		return -1;
	}
	len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || write(fd, text, (size_t)len) != len) {
		log_errno("Cannot write pidfile %s: ftruncate/write", path);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* Only a pidfile that still names this process is ours to remove. */
void pidfile_remove(const char *path)
{
	char text[32] = "";
	ssize_t n;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0 || strtol(text, NULL, 10) != (long)getpid())
		return;
	if (unlink(path) != 0)
		log_errno("Cannot remove pidfile %s: unlink", path);
}

int lifecycle_lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(name);
	if (!pw) {
		if (errno)
			log_errno("Cannot look up user %s: getpwnam", name);
		else
			log_msg(LOG_ERR, "No such user: %s", name);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

/* Already wholly that user, as under a unit's User=: nothing to switch
 * (and no privilege to switch with), nor a saved id to go back to. */
static bool already(uid_t uid, gid_t gid)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;

	return getresuid(&ruid, &euid, &suid) == 0 &&
	       getresgid(&rgid, &egid, &sgid) == 0 && ruid == uid &&
	       euid == uid && suid == uid && rgid == gid && egid == gid &&
	       sgid == gid;
}

int lifecycle_drop_privileges(const char *name, uid_t uid, gid_t gid)
{
	if (already(uid, gid))
		return 0;
	if (setgroups(0, NULL) != 0) {
		log_errno("Cannot switch to user %s: setgroups", name);
		return -1;
	}
	if (setgid(gid) != 0 || setuid(uid) != 0) {
		log_errno("Cannot switch to user %s: %s", name,
			  getgid() != gid ? "setgid" : "setuid");
		return -1;
	}
	if (uid != 0 && setuid(0) == 0) {
		log_msg(LOG_ERR, "Could regain root after switching to %s",
			name);
		return -1;
	}
	return 0;
}
