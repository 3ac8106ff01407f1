/* log: syslog with an optional copy on stderr. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool log_to_stderr;
static bool starting = true;

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

static void log_vmsg(int priority, const char *fmt, va_list ap,
		     const char *cause)
{
	char text[512];

	vsnprintf(text, sizeof(text), fmt, ap);
	if (cause)
		syslog(priority, "%s: %s", text, cause);
	else
		syslog(priority, "%s", text);
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
