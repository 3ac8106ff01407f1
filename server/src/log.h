/*
 * log: the one logging path of the daemon.  Every message goes to syslog
 * (ident "aesdsocket", facility LOG_DAEMON) and, when asked for (foreground
 * use and tests), is copied to stderr as "aesdsocket[PID]: message".  Errors
 * are logged once, where the context is known; callers only decide.
 *
 * Lines are sent as glibc's syslog() would send them, but each one
 * addressed to /dev/log from an unconnected datagram socket opened at the
 * start: so a worker confined by its system call filter (sandbox.h) keeps
 * logging through a syslogd restart without ever calling socket() or
 * connect() again.
 */
#ifndef AESD_LOG_H
#define AESD_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Until log_startup_done(), warnings and errors always reach stderr too,
 * so a failed start explains itself even without copy_to_stderr. */
void log_open(bool copy_to_stderr);
void log_startup_done(void);
void log_close(void);
/* A forked child's own syslog socket (after closing the parent's). */
void log_reopen(void);
/* The syslog socket (-1: none), the only one a confined worker sends on. */
int log_socket(void);

/* printf-style message at a syslog priority (LOG_INFO, LOG_ERR, ...). */
void log_msg(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Like log_msg at LOG_ERR, followed by ": " and strerror(errno). */
void log_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same at another priority. */
void log_errno_at(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
