/* store: the data file, appended under flock(), all or nothing. */
#include "store.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define NO_APPEND ((off_t)-1)

static int refuse_unless_regular(const char *path, const struct stat *st)
{
	if (S_ISREG(st->st_mode))
		return 0;
	log_msg(LOG_ERR, "Refusing data file %s: %s", path,
		S_ISLNK(st->st_mode) ? "it is a symbolic link" :
				       "not a regular file");
	return -1;
}

static int remove_stale(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		log_errno("Cannot examine data file %s", path);
		return -1;
	}
	if (refuse_unless_regular(path, &st) != 0)
		return -1;
	if (unlink(path) != 0) {
		log_errno("Cannot remove stale data file %s", path);
		return -1;
	}
	log_msg(LOG_NOTICE, "Removed stale data file %s (%lld bytes)", path,
		(long long)st.st_size);
	return 0;
}

int store_prepare(const char *path, uid_t uid, gid_t gid,
		  struct store_identity *id)
{
	struct stat st;
	int fd;

	if (remove_stale(path) != 0)
		return -1;
	/* O_EXCL: if anything reappears at path after the unlink, fail
	 * rather than write through it. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0644);
	if (fd < 0) {
		log_errno("Cannot create data file %s", path);
		return -1;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
	    fchown(fd, uid, gid) != 0) {
		log_errno("Cannot hand data file %s to the service user", path);
		close(fd);
		unlink(path);
		return -1;
	}
	if (fstat(fd, &st) != 0) {
		log_errno("Cannot examine data file %s", path);
		close(fd);
		unlink(path);
		return -1;
	}
	id->fd = fd;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return 0;
}

/* A new open file description of the file held open in id; by path, with
 * the same checks, only where /proc is not mounted. */
static int reopen(const char *path, const struct store_identity *id)
{
	char held[32];
	int fd;

	snprintf(held, sizeof(held), "/proc/self/fd/%d", id->fd);
	fd = open(held, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	return open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
}

int store_open(struct store *s, const char *path,
	       const struct store_identity *id, off_t *shared_marker)
{
	struct stat st;

	s->fd = reopen(path, id);
	if (s->fd < 0) {
		log_errno("Cannot open data file %s", path);
		return -1;
	}
	if (fstat(s->fd, &st) != 0 || refuse_unless_regular(path, &st) != 0 ||
	    st.st_dev != id->dev || st.st_ino != id->ino) {
		log_msg(LOG_ERR, "Data file %s was replaced while running",
			path);
		store_close(s);
		return -1;
	}
	s->private_marker = NO_APPEND;
	s->append_in_progress = shared_marker ? shared_marker :
						&s->private_marker;
	return 0;
}

void store_close(struct store *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static int lock_file(int fd, int operation)
{
	while (flock(fd, operation) != 0) {
		if (errno != EINTR)	/* a signal must not cut an append */
			return -1;
	}
	return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Cuts the file back to size; the caller holds the lock. */
static void cut_back(struct store *s, off_t size, const char *why)
{
	if (ftruncate(s->fd, size) != 0)
		log_errno("Cannot cut data file back to %lld bytes after %s",
			  (long long)size, why);
}

static void recover_torn_append(struct store *s)
{
	off_t torn_at = __atomic_load_n(s->append_in_progress,
					__ATOMIC_SEQ_CST);

	if (torn_at == NO_APPEND)
		return;
	log_msg(LOG_WARNING,
		"A connection process died while appending; cutting the data file back to %lld bytes",
		(long long)torn_at);
	cut_back(s, torn_at, "an interrupted append");
	__atomic_store_n(s->append_in_progress, NO_APPEND, __ATOMIC_SEQ_CST);
}

/* The body of store_append, run with the lock held. */
static int append_locked(struct store *s, const char *data, size_t len,
			 off_t *end)
{
	struct stat st;
	int saved_errno;

	recover_torn_append(s);
	if (fstat(s->fd, &st) != 0) {
		log_errno("Cannot examine data file");
		return -1;
	}
	__atomic_store_n(s->append_in_progress, st.st_size, __ATOMIC_SEQ_CST);
	if (write_all(s->fd, data, len) != 0) {
		saved_errno = errno;
		cut_back(s, st.st_size, "a failed write");
		errno = saved_errno;
		log_errno("Cannot append %zu bytes to data file (kept at %lld bytes)",
			  len, (long long)st.st_size);
		__atomic_store_n(s->append_in_progress, NO_APPEND,
				 __ATOMIC_SEQ_CST);
		return -1;
	}
	__atomic_store_n(s->append_in_progress, NO_APPEND, __ATOMIC_SEQ_CST);
	*end = st.st_size + (off_t)len;
	return 0;
}

int store_append(struct store *s, const char *data, size_t len, off_t *end)
{
	int rc;

	if (lock_file(s->fd, LOCK_EX) != 0) {
		log_errno("Cannot lock data file");
		return -1;
	}
	rc = append_locked(s, data, len, end);
	if (lock_file(s->fd, LOCK_UN) != 0) {
		log_errno("Cannot unlock data file");
		rc = -1;
	}
	return rc;
}

void store_release(struct store_identity *id)
{
	if (id->fd >= 0)
		close(id->fd);
	id->fd = -1;
}

void store_remove(const char *path, struct store_identity *id)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno != ENOENT)
			log_errno("Cannot examine data file %s", path);
	} else if (st.st_dev != id->dev || st.st_ino != id->ino) {
		log_msg(LOG_WARNING,
			"Not deleting %s: it is no longer the file this server created",
			path);
	} else if (unlink(path) != 0) {
		log_errno("Cannot delete data file %s", path);
	}
	store_release(id);
}
