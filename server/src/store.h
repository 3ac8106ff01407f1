/*
 * store: the data file.  Owns creating it fresh at start (a stale file is
 * removed; a symlink or non-regular file is refused), the appenders' lock,
 * the all-or-nothing append and its crash-recovery marker, watching the
 * path while the service runs, and deleting the file at exit.  Why each
 * works the way it does: docs/design.md, "Mechanisms".
 */
#ifndef AESD_STORE_H
#define AESD_STORE_H

#include <stddef.h>
#include <sys/types.h>

struct append_marker;

/* What the creating process holds: the file it created, open, so workers
 * never open another; the lock, a memfd no other process can open; and
 * the marker in it, shared with the workers. */
struct store_identity {
	int fd;
	int lock_fd;
	dev_t dev;
	ino_t ino;
	struct append_marker *marker;
};

struct store {
	int fd;
	int lock_fd;		/* its own open file description of the lock */
	struct append_marker *marker;
};

enum store_result {
	STORE_OK = 0,
	STORE_FAILED = -1,	/* logged; the file is as it was */
	STORE_BUSY = 1,		/* another appender holds the lock: try later */
};

/* Removes a stale regular file at path (logged) and creates it empty, mode
 * 0640, owned by uid/gid unless they are -1, and the lock.  Refuses
 * symlinks and other types.  Call before forking the appenders. */
int store_prepare(const char *path, uid_t uid, gid_t gid,
		  struct store_identity *id);

/* Opens the prepared file for appending and reading, and the lock, each as
 * a new open file description, with the access of the calling process's
 * user. */
int store_open(struct store *s, const char *path,
	       const struct store_identity *id);

/* Appends len bytes as one unit, if the lock can be had without waiting
 * more than a moment; on success *end is the file size right after them.
 * On an error the file is cut back to its previous size. */
enum store_result store_append(struct store *s, const char *data, size_t len,
			       off_t *end);

void store_close(struct store *s);

/* The creator watches the path: store_watch() returns a descriptor that
 * becomes readable when the file is deleted, renamed or replaced (or -1,
 * logged); store_check_path() then logs what happened, when it differs
 * from *last (0 at first). */
int store_watch(const char *path);
void store_check_path(const char *path, const struct store_identity *id,
		      int watch_fd, int *last);

/* Deletes the data file if it is still the one we created, and lets go of
 * it and of the marker. */
void store_remove(const char *path, struct store_identity *id);

/* Closes the creator's descriptors (a worker's inherited copies); the
 * marker stays mapped for the worker's appends. */
void store_release(struct store_identity *id);

#endif
