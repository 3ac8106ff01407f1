/* store: the data file, appended under flock(), all or nothing. */
#include "store.h"

#include "log.h"
#include "mstime.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read and written by the service's user, read by its group. */
#define DATA_FILE_MODE 0640
/* Another appender holds the lock for one write(): it is retried for
 * this long before the append is left for later. */
#define LOCK_SPIN_US 200

enum path_state { PATH_OURS, PATH_DELETED, PATH_REPLACED, PATH_RENAMED };

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
		log_errno("Cannot examine data file %s: lstat", path);
		return -1;
	}
	if (refuse_unless_regular(path, &st) != 0)
		return -1;
	if (unlink(path) != 0) {
		log_errno("Cannot remove stale data file %s: unlink", path);
		return -1;
	}
	log_msg(LOG_NOTICE, "Removed stale data file %s (%lld bytes)", path,
		(long long)st.st_size);
	return 0;
}

/* The appenders' lock and the marker, in a memfd: it has no path, so no
 * process outside the service can open it, let alone lock it. */
static int create_lock(struct store_identity *id)
{
	int fd = memfd_create("aesdsocket-lock", MFD_CLOEXEC);
	void *marker;

	if (fd < 0) {
		log_errno("Cannot create the appenders' lock: memfd_create");
		return -1;
	}
	marker = ftruncate(fd, sizeof(*id->marker)) != 0 ? MAP_FAILED :
		mmap(NULL, sizeof(*id->marker), PROT_READ | PROT_WRITE,
		     MAP_SHARED, fd, 0);
	if (marker == MAP_FAILED) {
		log_errno("Cannot map the appenders' lock: ftruncate/mmap");
		close(fd);
		return -1;
	}
	id->lock_fd = fd;
	id->marker = marker;
	return 0;
}

/* Mode and owner as documented, whatever the umask; no fchown() when it
 * is the service user's already (a parent running as that user, which
 * may not chown at all under the unit's filter). */
static int set_owner(int fd, const char *path, uid_t uid, gid_t gid,
		     const struct stat *st)
{
	if (fchmod(fd, DATA_FILE_MODE) != 0) {
		log_errno("Cannot set the mode of data file %s: fchmod", path);
		return -1;
	}
	if (((uid != (uid_t)-1 && uid != st->st_uid) ||
	     (gid != (gid_t)-1 && gid != st->st_gid)) &&
	    fchown(fd, uid, gid) != 0) {
		log_errno("Cannot hand data file %s to the service user: fchown",
			  path);
		return -1;
	}
	return 0;
}

/* Mode, owner, identity and lock of the file just created as fd. */
static int finish_creating(int fd, const char *path, uid_t uid, gid_t gid,
			   struct store_identity *id)
{
	struct stat st;

	if (fstat(fd, &st) != 0) {
		log_errno("Cannot examine data file %s: fstat", path);
		return -1;
	}
	if (set_owner(fd, path, uid, gid, &st) != 0 || create_lock(id) != 0)
		return -1;
	id->fd = fd;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	return 0;
}

int store_prepare(const char *path, uid_t uid, gid_t gid,
		  struct store_identity *id)
{
	int fd;

	*id = (struct store_identity){ .fd = -1, .lock_fd = -1 };
	if (remove_stale(path) != 0)
		return -1;
	/* O_EXCL: if anything reappears at path after the unlink, fail
	 * rather than write through it. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  DATA_FILE_MODE);
	if (fd < 0) {
		log_errno("Cannot create data file %s: open", path);
		return -1;
	}
	if (finish_creating(fd, path, uid, gid, id) != 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	return 0;
}

/* Opens /proc/self/fd/N, a new open file description of what this
 * process holds as N.  A process that switched users is not dumpable,
 * which makes its /proc/self root's; it is made dumpable for this one
 * open only. */
static int open_held(int held, int flags)
{
	int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	char path[32];
	int fd, saved_errno;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", held);
	if (dumpable == 0)
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	fd = open(path, flags | O_CLOEXEC);
	saved_errno = errno;
	if (dumpable == 0)
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	errno = saved_errno;
	return fd;
}

/* The file held open in id; by path, with the same checks, only where
 * /proc is not mounted. */
static int reopen(const char *path, const struct store_identity *id)
{
	int fd = open_held(id->fd, O_RDWR | O_APPEND);

	if (fd >= 0 || errno != ENOENT)
		return fd;
	return open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
}

/* Its own open file description of the lock (one shared with the other
 * workers would make flock() exclude no one); without /proc, the data
 * file itself, which any process that may read it could lock too. */
static int reopen_lock(struct store *s, const struct store_identity *id)
{
	s->lock_fd = open_held(id->lock_fd, O_RDONLY);
	if (s->lock_fd >= 0)
		return 0;
	if (errno != ENOENT) {
		log_errno("Cannot open the appenders' lock: open(/proc/self/fd/%d)",
			  id->lock_fd);
		return -1;
	}
	log_msg(LOG_WARNING, "No /proc: appends lock the data file itself, which any process that can read it could hold");
	s->lock_fd = s->fd;
	return 0;
}

int store_open(struct store *s, const char *path,
	       const struct store_identity *id)
{
	struct stat st;

	s->lock_fd = -1;
	s->fd = reopen(path, id);
	if (s->fd < 0) {
		log_errno("Cannot open data file %s: open", path);
		return -1;
	}
	if (fstat(s->fd, &st) != 0 || refuse_unless_regular(path, &st) != 0 ||
	    st.st_dev != id->dev || st.st_ino != id->ino) {
		log_msg(LOG_ERR, "Data file %s was replaced while running",
			path);
		store_close(s);
		return -1;
	}
	if (reopen_lock(s, id) != 0) {
		store_close(s);
		return -1;
	}
	s->marker = id->marker;
	return 0;
}

void store_close(struct store *s)
{
	if (s->lock_fd >= 0 && s->lock_fd != s->fd)
		close(s->lock_fd);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = s->lock_fd = -1;
}

/* The lock, if it can be had within LOCK_SPIN_US: an appender holds it
 * for one write(), so a moment's wait almost always gets it; one that
 * holds it longer (stopped, or a slow disk) must not stop this worker. */
static enum store_result take_lock(int fd)
{
	long long give_up = 0;

	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			log_errno("Cannot take the appenders' lock: flock(LOCK_EX)");
			return STORE_FAILED;
		}
		if (!give_up)	/* the clock only once it is taken */
			give_up = now_us() + LOCK_SPIN_US;
		else if (now_us() >= give_up)
			return STORE_BUSY;
		sched_yield();
	}
	return STORE_OK;
}

static void release_lock(int fd)
{
	while (flock(fd, LOCK_UN) != 0)
		if (errno != EINTR) {
			log_errno("Cannot release the appenders' lock: flock(LOCK_UN)");
			return;
		}
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
		log_errno("Cannot examine data file: fstat");
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
		log_errno("Cannot cut the data file back to %lld bytes after %s (ftruncate); refusing appends until it can be",
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
		log_errno("Cannot append %zu bytes to data file (kept at %lld bytes): write",
			  len, (long long)size);
		cut_back(s, "a failed write");
		return -1;
	}
	s->marker->set = 0;
	*end = size + (off_t)len;
	return 0;
}

enum store_result store_append(struct store *s, const char *data, size_t len,
			       off_t *end)
{
	enum store_result got = take_lock(s->lock_fd);

	if (got != STORE_OK)
		return got;
	got = append_locked(s, data, len, end) == 0 ? STORE_OK : STORE_FAILED;
	release_lock(s->lock_fd);
	return got;
}

/* ------------------------------------------------- watching the path */

int store_watch(const char *path)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

	if (fd < 0) {
		log_errno("Cannot watch data file %s: inotify_init1", path);
		return -1;
	}
	/* link count (unlink), rename of the file itself */
	if (inotify_add_watch(fd, path, IN_ATTRIB | IN_MOVE_SELF |
				       IN_DONT_FOLLOW) < 0) {
		log_errno("Cannot watch data file %s: inotify_add_watch", path);
		close(fd);
		return -1;
	}
	return fd;
}

static enum path_state path_state(const char *path,
				  const struct store_identity *id)
{
	struct stat held, there;
	bool other = lstat(path, &there) == 0;

	if (other && there.st_dev == id->dev && there.st_ino == id->ino)
		return PATH_OURS;
	if (fstat(id->fd, &held) == 0 && held.st_nlink > 0)
		return PATH_RENAMED;
	return other ? PATH_REPLACED : PATH_DELETED;
}

void store_check_path(const char *path, const struct store_identity *id,
		      int watch_fd, int *last)
{
	static const char *const what[] = {
		[PATH_OURS] = "is back in place",
		[PATH_DELETED] = "was deleted",
		[PATH_REPLACED] = "was deleted and another file put in its place, which the service leaves alone",
		[PATH_RENAMED] = "was renamed",
	};
	char events[4096];
	enum path_state now;

	while (read(watch_fd, events, sizeof(events)) > 0)
		;
	now = path_state(path, id);
	if ((int)now == *last)
		return;
	*last = (int)now;
	if (now == PATH_OURS)
		log_msg(LOG_NOTICE, "Data file %s %s", path, what[now]);
	else
		log_msg(LOG_WARNING, "Data file %s %s: appends and answers go on with the service's file until it stops; it starts a new one at its next start",
			path, what[now]);
}

void store_release(struct store_identity *id)
{
	if (id->fd >= 0)
		close(id->fd);
	if (id->lock_fd >= 0)
		close(id->lock_fd);
	id->fd = id->lock_fd = -1;
}

void store_remove(const char *path, struct store_identity *id)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno != ENOENT)
			log_errno("Cannot examine data file %s: lstat", path);
	} else if (st.st_dev != id->dev || st.st_ino != id->ino) {
		log_msg(LOG_WARNING,
			"Not deleting %s: it is no longer the file this server created",
			path);
	} else if (unlink(path) != 0) {
		log_errno("Cannot delete data file %s: unlink", path);
	}
	store_release(id);
	if (id->marker)
		munmap(id->marker, sizeof(*id->marker));
	id->marker = NULL;
}
