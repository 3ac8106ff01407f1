/* store: the data file, appended under flock(), all or nothing. */
#include "store.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Written and read only by the holder of the lock.  No atomics are needed
 * (and none that would need libatomic on 32-bit targets): "set" is written
 * after "size", so a holder killed between the two leaves it clear. */
struct append_marker {
	volatile off_t size;	/* the file size when the append began */
	volatile int set;
};

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
	if (fstat(fd, &st) != 0) {
		log_errno("Cannot examine data file %s", path);
		close(fd);
		unlink(path);
		return -1;
	}
	/* Not when it is the service user's already (a parent running as
	 * that user, which may not chown at all under the unit's filter). */
	if (((uid != (uid_t)-1 && uid != st.st_uid) ||
	     (gid != (gid_t)-1 && gid != st.st_gid)) &&
	    fchown(fd, uid, gid) != 0) {
		log_errno("Cannot hand data file %s to the service user", path);
		close(fd);
		unlink(path);
		return -1;
	}
	id->marker = mmap(NULL, sizeof(*id->marker), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (id->marker == MAP_FAILED) {
		log_errno("Cannot map the data file's append marker");
		close(fd);
		unlink(path);
		return -1;
	}
	id->fd = fd;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return 0;
}

/* Opens /proc/self/fd/N.  A process that switched users is not dumpable,
 * which makes its /proc/self root's; it is made dumpable for this one
 * open only. */
static int open_held(const char *held)
{
	int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	int fd, saved_errno;

	if (dumpable == 0)
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	fd = open(held, O_RDWR | O_APPEND | O_CLOEXEC);
	saved_errno = errno;
	if (dumpable == 0)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	errno = saved_errno;
	return fd;
}

/* A new open file description of the file held open in id; by path, with
 * the same checks, only where /proc is not mounted. */
static int reopen(const char *path, const struct store_identity *id)
{
	char held[32];
	int fd;

	snprintf(held, sizeof(held), "/proc/self/fd/%d", id->fd);
	fd = open_held(held);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	return open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
}

int store_open(struct store *s, const char *path,
	       const struct store_identity *id)
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
	s->marker = id->marker;
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

static off_t file_size(int fd)
{
	struct stat st;

	if (fstat(fd, &st) != 0) {
		log_errno("Cannot examine data file");
		return -1;
	}
	return st.st_size;
}

/* Cuts the file back to where the marked append began; the marker is
 * cleared only once that has worked. */
static int cut_back(struct store *s, const char *why)
{
	off_t size = s->marker->size;

	if (ftruncate(s->fd, size) != 0) {
		log_errno("Cannot cut the data file back to %lld bytes after %s; refusing appends until it can be",
			  (long long)size, why);
		return -1;
	}
	s->marker->set = 0;
	return 0;
}

/* Cuts off what an appender killed mid-write left; -1 while the file is
 * still torn. */
static int recover_torn_append(struct store *s)
{
	off_t size;

	if (!s->marker->set)
		return 0;
	size = file_size(s->fd);
	if (size < 0)
		return -1;
	if (s->marker->size > size) {	/* nothing of it is left to cut */
		s->marker->set = 0;
		return 0;
	}
	if (cut_back(s, "an interrupted append") != 0)
		return -1;
	log_msg(LOG_WARNING,
		"A worker died while appending; cut the data file back to %lld bytes",
		(long long)s->marker->size);
	return 0;
}

/* The body of store_append, run with the lock held. */
static int append_locked(struct store *s, const char *data, size_t len,
			 off_t *end)
{
	off_t size;

	if (recover_torn_append(s) != 0)
		return -1;
	size = file_size(s->fd);
	if (size < 0)
		return -1;
	s->marker->size = size;
	s->marker->set = 1;
	if (write_all(s->fd, data, len) != 0) {
		log_errno("Cannot append %zu bytes to data file (kept at %lld bytes)",
			  len, (long long)size);
		cut_back(s, "a failed write");
		return -1;
	}
	s->marker->set = 0;
	*end = size + (off_t)len;
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
	if (id->marker && id->marker != MAP_FAILED)
		munmap(id->marker, sizeof(*id->marker));
	id->marker = NULL;
}
