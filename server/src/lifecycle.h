/*
 * lifecycle: what makes the program a well-behaved daemon process.
 * Signals: the stop signals and SIGCHLD stay blocked except inside the
 * waits that pass lifecycle_wait_mask() to ppoll()/epoll_pwait(), so a
 * signal can never slip in between checking a flag and going to sleep,
 * and never interrupts an append.  Every other signal whose default would
 * end the process is ignored (SIGPIPE, SIGXFSZ: error returns instead) or,
 * for fault signals sent with kill(), turned into a stop.  Also: standard
 * descriptors that always exist, no descriptors inherited by accident,
 * daemonizing, the pidfile, the descriptor limit and dropping privileges.
 */
#ifndef AESD_LIFECYCLE_H
#define AESD_LIFECYCLE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

int lifecycle_setup_signals(void);
const sigset_t *lifecycle_wait_mask(void);
bool lifecycle_stop_requested(void);
/* True once after a SIGCHLD arrived: a child exited, stopped or went on. */
bool lifecycle_child_changed(void);
/* Sleeps, letting the signals in: returns early when one arrives. */
void lifecycle_sleep_ms(int ms);

/* Points whichever of descriptors 0-2 is closed at /dev/null, so nothing
 * opened later can land there.  Call before anything opens a file. */
int lifecycle_open_stdio(void);
/* Closes every descriptor above 2 except the n in keep (ascending). */
void lifecycle_close_fds_except(const int *keep, size_t n);

/* path made absolute against the current directory, in buf; NULL (logged)
 * if it does not fit. */
const char *lifecycle_absolute_path(const char *path, char *buf, size_t size);

/* Raises the descriptor limit towards need (the hard limit too, where the
 * process may); returns how many descriptors it allows now. */
unsigned long lifecycle_raise_fd_limit(unsigned long need);

/* Forks into the background (setsid, chdir /, stdio on /dev/null, SIGHUP
 * ignored).  The calling process waits until the child reports readiness
 * and exits with 0 or 1 accordingly; only the child returns, with
 * *ready_fd set. */
int lifecycle_daemonize(int *ready_fd);
void lifecycle_report_ready(int ready_fd, bool ok);

/* Writes this process's pid; refuses symlinks and non-regular files. */
int pidfile_write(const char *path);
void pidfile_remove(const char *path);

/* Looks up a user for lifecycle_drop_privileges. */
int lifecycle_lookup_user(const char *name, uid_t *uid, gid_t *gid);
/* Becomes that user, with no supplementary groups; a process that is
 * already wholly that user (a systemd unit's User=) is left as it is. */
int lifecycle_drop_privileges(const char *name, uid_t uid, gid_t gid);

#endif
