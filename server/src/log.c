/* log: syslog with an optional copy on stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef _PATH_LOG
#define _PATH_LOG "/dev/log"
#endif

static bool log_to_stderr;
static bool starting = true;

/* glibc's syslog() tries to reconnect on every call while /dev/log is
 * missing (no syslogd yet, or a host without one): four system calls per
 * line, and the line is dropped anyway.  Look for the socket at most once
 * a second instead. */
static bool syslog_present(void)
{
	static time_t checked_at = -1;
	static bool present;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec != checked_at) {
		present = access(_PATH_LOG, F_OK) == 0;
		checked_at = now.tv_sec;
	}
	return present;
}

void log_open(bool copy_to_stderr)
{
	log_to_stderr = copy_to_stderr;
	openlog("aesdsocket", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_startup_done(void)
{
	starting = false;
}

void log_close(void)
{
	closelog();
}

void log_reopen(void)
{
	closelog();
	openlog("aesdsocket", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

static void log_vmsg(int priority, const char *fmt, va_list ap,
		     const char *cause)
{
	char text[512];

	vsnprintf(text, sizeof(text), fmt, ap);
	if (syslog_present()) {
		if (cause)
			syslog(priority, "%s: %s", text, cause);
		else
			syslog(priority, "%s", text);
	}
	if (!log_to_stderr && !(starting && priority <= LOG_WARNING))
		return;
	if (cause)
		fprintf(stderr, "aesdsocket[%ld]: %s: %s\n", (long)getpid(),
			text, cause);
	else
		fprintf(stderr, "aesdsocket[%ld]: %s\n", (long)getpid(), text);
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
