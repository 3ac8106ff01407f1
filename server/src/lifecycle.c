/* lifecycle: signals, daemonizing, pidfile and privileges. */
#include "lifecycle.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static sigset_t wait_mask;

static void on_stop_signal(int signo)
{
	(void)signo;
	stop_requested = 1;
}

/* Does nothing but exist: a caught SIGCHLD ends the parent's ppoll(), which
 * then reaps. */
static void on_child_exit(int signo)
{
	(void)signo;
}

static int set_handler(int signo, void (*handler)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handler;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

int lifecycle_setup_signals(void)
{
	sigset_t blocked;

	sigemptyset(&blocked);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &blocked, &wait_mask) != 0)
		goto fail;
	sigdelset(&wait_mask, SIGINT);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGCHLD);
	if (set_handler(SIGINT, on_stop_signal) != 0 ||
	    set_handler(SIGTERM, on_stop_signal) != 0 ||
	    set_handler(SIGCHLD, on_child_exit) != 0 ||
	    set_handler(SIGPIPE, SIG_IGN) != 0 ||
	    set_handler(SIGXFSZ, SIG_IGN) != 0)
		goto fail;
	return 0;
fail:
	log_errno("Cannot set up signal handling");
	return -1;
}

const sigset_t *lifecycle_wait_mask(void)
{
	return &wait_mask;
}

void lifecycle_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	ppoll(NULL, 0, &ts, &wait_mask);
}

bool lifecycle_stop_requested(void)
{
	return stop_requested != 0;
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

/* The original process: wait for the daemon's verdict, exit with it. */
static void wait_for_readiness(int ready_fd)
{
	char verdict = 0;
	ssize_t n;

	do {
		n = read(ready_fd, &verdict, 1);
	} while (n < 0 && errno == EINTR);
	if (n == 1 && verdict == 'R')
		exit(EXIT_SUCCESS);
	fprintf(stderr,
		"aesdsocket: the background server failed to start; see the system log\n");
	exit(EXIT_FAILURE);
}

int lifecycle_daemonize(int *ready_fd)
{
	int pipe_fds[2];
	pid_t pid;

	if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
		log_errno("Cannot create readiness pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		log_errno("Cannot fork into the background");
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
	if (setsid() < 0 || chdir("/") != 0 || redirect_stdio() != 0) {
		log_errno("Cannot detach from the terminal");
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
		log_errno("Cannot report readiness");
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
		log_errno("Cannot open pidfile %s", path);
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		log_msg(LOG_ERR, "Refusing pidfile %s: not a plain file", path);
		close(fd);
		return -1;
	}
	len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || write(fd, text, (size_t)len) != len) {
		log_errno("Cannot write pidfile %s", path);
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
		log_errno("Cannot remove pidfile %s", path);
}

int lifecycle_lookup_user(const char *name, uid_t *uid, gid_t *gid)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(name);
	if (!pw) {
		if (errno)
			log_errno("Cannot look up user %s", name);
		else
			log_msg(LOG_ERR, "No such user: %s", name);
		return -1;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

int lifecycle_drop_privileges(const char *name, uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
		log_errno("Cannot switch to user %s", name);
		return -1;
	}
	if (uid != 0 && setuid(0) == 0) {
		log_msg(LOG_ERR, "Could regain root after switching to %s",
			name);
		return -1;
	}
	return 0;
}
