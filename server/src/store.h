/*
 * store: the data file.  Owns creating it fresh at start (a stale file is
 * removed; a symlink or non-regular file is refused), opening it per worker
 * process (each worker needs its own open file description, or flock()
 * would not exclude anyone), the all-or-nothing append under an exclusive
 * flock(), and deleting it at exit.  The lock is held only for the append:
 * the file only grows, so bytes before a committed end never change and
 * can be read without it.
 *
 * The process that creates the file keeps it open; workers reopen that
 * very file through /proc/self/fd, so a file deleted or replaced at the
 * path while the server runs neither stops the service nor gets written.
 */
#ifndef AESD_STORE_H
#define AESD_STORE_H

#include <stddef.h>
#include <sys/types.h>

/* The file we created, held open, so workers never open another one. */
struct store_identity {
	int fd;
	dev_t dev;
	ino_t ino;
};

struct store {
	int fd;
	/* Shared by every process appending to the file: the size before an
	 * append in progress, or -1.  An appender that finds it set knows the
	 * previous lock holder died mid-write and cuts the torn bytes off. */
	off_t *append_in_progress;
	off_t private_marker;	/* used when no shared marker is given */
};

/* Removes a stale regular file at path (logged) and creates it empty,
 * owned by uid/gid unless they are -1.  Refuses symlinks and other types. */
int store_prepare(const char *path, uid_t uid, gid_t gid,
		  struct store_identity *id);

/* Opens the prepared file for appending and reading, as a new open file
 * description.  shared_marker may be NULL (single process use). */
int store_open(struct store *s, const char *path,
	       const struct store_identity *id, off_t *shared_marker);

/* Appends len bytes as one unit; on success *end is the file size right
 * after them.  On any error the file is cut back to its previous size, the
 * error is logged and -1 returned. */
int store_append(struct store *s, const char *data, size_t len, off_t *end);

void store_close(struct store *s);

/* Deletes the data file if it is still the one we created, and lets go of
 * it. */
void store_remove(const char *path, struct store_identity *id);

/* Lets go of the created file without deleting it (a worker's copy). */
void store_release(struct store_identity *id);

#endif
