/*
 * store: the data file.  Owns creating it fresh at start (a stale file is
 * removed; a symlink or non-regular file is refused), opening it in each
 * worker (each needs its own open file description, or flock() would not
 * exclude anyone), the all-or-nothing append under an exclusive flock(),
 * the crash-recovery marker, and deleting it at exit.  The lock is held
 * only for the append: the file only grows, so bytes before a committed
 * end never change and can be read without it.
 *
 * The process that creates the file keeps it open; workers reopen that
 * very file through /proc/self/fd, so a file deleted or replaced at the
 * path while the server runs neither stops the service nor gets written.
 *
 * The marker records "an append started at this size" in memory shared by
 * the appenders (never read by the parent): an appender that finds it set
 * knows the previous lock holder died mid-write and cuts the torn bytes
 * off.  If that cut fails, the marker stays and appends are refused until
 * a later cut succeeds, so the file is never left torn silently.
 */
#ifndef AESD_STORE_H
#define AESD_STORE_H

#include <stddef.h>
#include <sys/types.h>

struct append_marker;

/* The file we created, held open, so workers never open another one. */
struct store_identity {
	int fd;
	dev_t dev;
	ino_t ino;
	struct append_marker *marker;	/* shared with the workers */
};

struct store {
	int fd;
	struct append_marker *marker;
};

/* Removes a stale regular file at path (logged) and creates it empty,
 * owned by uid/gid unless they are -1.  Refuses symlinks and other types.
 * Call before forking the processes that will append. */
int store_prepare(const char *path, uid_t uid, gid_t gid,
		  struct store_identity *id);

/* Opens the prepared file for appending and reading, as a new open file
 * description, with the access of the calling process's user. */
int store_open(struct store *s, const char *path,
	       const struct store_identity *id);

/* Appends len bytes as one unit; on success *end is the file size right
 * after them (untouched on error).  On any error the file is cut back to
 * its previous size, the error is logged and -1 returned. */
int store_append(struct store *s, const char *data, size_t len, off_t *end);

void store_close(struct store *s);

/* Deletes the data file if it is still the one we created, and lets go of
 * it and of the marker. */
void store_remove(const char *path, struct store_identity *id);

/* Closes the creator's descriptor (a worker's inherited copy); the marker
 * stays mapped for the worker's appends. */
void store_release(struct store_identity *id);

#endif
