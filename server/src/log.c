/* log: syslog datagrams, with an optional copy on stderr. */
#include "log.h"

#include "mstime.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef _PATH_LOG
#define _PATH_LOG "/dev/log"
#endif
#define IDENT "aesdsocket"

static bool log_to_stderr;
static bool starting = true;
static int log_fd = -1;		/* unconnected: every line is addressed */
/* No syslogd (no /dev/log, or nobody behind it): lines are dropped, as by
 * syslog(3), without a system call each, until this time (mstime). */
static long long absent_until_ms;
static const struct sockaddr_un log_address = {
	.sun_family = AF_UNIX,
	.sun_path = _PATH_LOG,
};

static void open_socket(void)
{
	/* If this fails, lines still reach stderr where asked for. */
	log_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

void log_open(bool copy_to_stderr)
{
	log_to_stderr = copy_to_stderr;
	/* The time zone is read now, once: a confined worker could not open
	 * it later, and it inherits what is loaded here. */
	tzset();
	open_socket();
}

void log_startup_done(void)
{
	starting = false;
}

void log_close(void)
{
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
}

void log_reopen(void)
{
	log_close();
	open_socket();
}

int log_socket(void)
{
	return log_fd;
}

/* A line sent now could reach a syslogd: there is a socket, and no
 * recent send found nobody behind /dev/log. */
static bool syslog_reachable(void)
{
	return log_fd >= 0 && now_ms() >= absent_until_ms;
}

/* One datagram, as glibc's syslog() writes it:
 * "<PRI>Mmm dd hh:mm:ss aesdsocket[PID]: message".  Each is sent to the
 * path, not over a connected socket: syslogd may come and go (a restart
 * makes a new /dev/log), and a confined worker cannot connect() again. */
static void send_to_syslog(int priority, const char *message)
{
	char line[640], stamp[32] = "";
	struct timespec now;
	struct tm tm;
	int len;

	if (!syslog_reachable())
		return;
	if (clock_gettime(CLOCK_REALTIME, &now) == 0 &&
	    localtime_r(&now.tv_sec, &tm))
		strftime(stamp, sizeof(stamp), "%b %e %T", &tm);
	len = snprintf(line, sizeof(line), "<%d>%s %s[%ld]: %s",
		       LOG_DAEMON | LOG_PRI(priority), stamp, IDENT,
		       (long)getpid(), message);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof(line))
		len = sizeof(line) - 1;
	/* Without a syslogd (ENOENT, ECONNREFUSED) the line is lost, as
	 * with syslog(3), and so are the next second's; a full socket makes
	 * us wait, as syslog(3) does. */
	while (sendto(log_fd, line, (size_t)len, MSG_NOSIGNAL,
		      (const struct sockaddr *)&log_address,
		      sizeof(log_address)) < 0) {
		if (errno == ENOENT || errno == ECONNREFUSED)
			absent_until_ms = now_ms() + 1000;
		if (errno != EINTR)
			break;
	}
}

static void log_vmsg(int priority, const char *fmt, va_list ap,
		     const char *cause)
{
	bool to_stderr = log_to_stderr || (starting && priority <= LOG_WARNING);
	int saved_errno = errno;
	char message[600];
	int len;

	/* nowhere to go (no syslogd, no stderr copy): not even formatted */
	if (!to_stderr && !syslog_reachable())
		return;
	len = vsnprintf(message, sizeof(message), fmt, ap);
	if (cause && len >= 0 && (size_t)len < sizeof(message))
		snprintf(message + len, sizeof(message) - (size_t)len, ": %s",
			 cause);
	send_to_syslog(priority, message);
	if (to_stderr)
		fprintf(stderr, "%s[%ld]: %s\n", IDENT, (long)getpid(),
			message);
	errno = saved_errno;
}

void log_msg(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(priority, fmt, ap, NULL);
	va_end(ap);
}

void log_errno(const char *fmt, ...)
{
	const char *cause = strerror(errno);
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, fmt, ap, cause);
	va_end(ap);
}

void log_errno_at(int priority, const char *fmt, ...)
{
	const char *cause = strerror(errno);
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(priority, fmt, ap, cause);
	va_end(ap);
}
