/*
 * lifecycle: signals, daemonizing, the pidfile and dropping privileges.
 * SIGINT/SIGTERM/SIGCHLD stay blocked except inside the waits that pass
 * lifecycle_wait_mask() to ppoll()/epoll_pwait(), so a signal can never
 * slip in between checking the stop flag and going to sleep, and never
 * interrupts an append.  SIGPIPE and SIGXFSZ are ignored: a vanished peer
 * or a file size limit is an error return, not death.
 */
#ifndef AESD_LIFECYCLE_H
#define AESD_LIFECYCLE_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

int lifecycle_setup_signals(void);
const sigset_t *lifecycle_wait_mask(void);
bool lifecycle_stop_requested(void);
/* Sleeps, letting the signals in: returns early when one arrives. */
void lifecycle_sleep_ms(int ms);

/* Forks into the background (setsid, chdir /, stdio on /dev/null).  The
 * calling process waits until the child reports readiness and exits with
 * 0 or 1 accordingly; only the child returns, with *ready_fd set. */
int lifecycle_daemonize(int *ready_fd);
void lifecycle_report_ready(int ready_fd, bool ok);

/* Writes this process's pid; refuses symlinks and non-regular files. */
int pidfile_write(const char *path);
void pidfile_remove(const char *path);

/* Looks up a user for lifecycle_drop_privileges. */
int lifecycle_lookup_user(const char *name, uid_t *uid, gid_t *gid);
int lifecycle_drop_privileges(const char *name, uid_t uid, gid_t gid);

#endif
