/* Unit tests of the store: fresh start, appends, size bookkeeping, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/aesd-store-XXXXXX");
	if (!mkdtemp(fx->dir))
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/data", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char other[160];

	unlink(fx->path);
	snprintf(other, sizeof(other), "%s/target", fx->dir);
	unlink(other);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static size_t read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, size);
	close(fd);
	assert_true(n >= 0);
	return (size_t)n;
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void prepare_removes_stale_file(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct stat st;

	write_file(fx->path, "left by a crash\n");
	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_true(st.st_ino == id.ino);
	store_release(&id);
}

static void appends_report_end_offsets(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store s;
	char buf[64];
	off_t end = 0;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&s, fx->path, &id), 0);
	assert_int_equal(store_append(&s, "one\n", 4, &end), 0);
	assert_int_equal(end, 4);
	assert_int_equal(store_append(&s, "\n", 1, &end), 0);
	assert_int_equal(end, 5);
	assert_int_equal(store_append(&s, "three\n", 6, &end), 0);
	assert_int_equal(end, 11);
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 11);
	assert_memory_equal(buf, "one\n\nthree\n", 11);
	store_close(&s);
	store_release(&id);
}

static void two_openers_share_the_end(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store a, b;
	off_t end = 0;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&a, fx->path, &id), 0);
	assert_int_equal(store_open(&b, fx->path, &id), 0);
	assert_int_equal(store_append(&a, "aa\n", 3, &end), 0);
	assert_int_equal(store_append(&b, "bbbb\n", 5, &end), 0);
	assert_int_equal(end, 8);	/* b's end counts a's packet */
	store_close(&a);
	store_close(&b);
	store_release(&id);
}

static void failed_append_leaves_file_unchanged(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct rlimit old, small = { 10, 10 };
	struct store s;
	char buf[64];
	off_t end = 0;

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&s, fx->path, &id), 0);
	assert_int_equal(store_append(&s, "12345\n", 6, &end), 0);
	getrlimit(RLIMIT_FSIZE, &old);
	small.rlim_max = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	/* 4 of these bytes fit: a short write, then EFBIG */
	end = -1;
	assert_int_equal(store_append(&s, "abcdefgh\n", 9, &end), -1);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(end, -1);	/* no end reported for a failure */
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 6);
	assert_memory_equal(buf, "12345\n", 6);
	assert_int_equal(store_append(&s, "ok\n", 3, &end), 0);
	assert_int_equal(end, 9);
	store_close(&s);
	store_release(&id);
}

/* Fault injection for the appends below (linked with --wrap). */
static int die_in_next_write;	/* write half, then be killed */
static int fail_truncates;	/* ftruncate() fails with EIO */

ssize_t __real_write(int fd, const void *buf, size_t len);
ssize_t __wrap_write(int fd, const void *buf, size_t len);
int __real_ftruncate(int fd, off_t length);
int __wrap_ftruncate(int fd, off_t length);

ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
	if (die_in_next_write) {
		__real_write(fd, buf, len / 2);
		raise(SIGKILL);
	}
	return __real_write(fd, buf, len);
}

int __wrap_ftruncate(int fd, off_t length)
{
	if (fail_truncates) {
		errno = EIO;
		return -1;
	}
	return __real_ftruncate(fd, length);
}

/* What a worker killed in the middle of an append leaves behind: a child
 * process opens the file as a worker does and dies halfway through. */
static void append_and_die(const char *path, const struct store_identity *id,
			   const char *packet)
{
	struct store s;
	off_t end;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		if (store_open(&s, path, id) == 0) {
			die_in_next_write = 1;
			store_append(&s, packet, strlen(packet), &end);
		}
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* A file with one whole packet, then the torn half of a second one; s is
 * left open as another worker's store. */
static void open_with_torn_tail(const struct fixture *fx,
				struct store_identity *id, struct store *s,
				const char *half_written)
{
	off_t end = 0;

	assert_int_equal(store_prepare(fx->path, -1, -1, id), 0);
	assert_int_equal(store_open(s, fx->path, id), 0);
	assert_int_equal(store_append(s, "whole\n", 6, &end), 0);
	append_and_die(fx->path, id, half_written);
}

/* After the torn tail was cut, "next\n" follows the whole packet. */
static void assert_cut_then_appended(const struct fixture *fx,
				     struct store_identity *id,
				     struct store *s)
{
	off_t end = 0;
	char buf[64];

	assert_int_equal(store_append(s, "next\n", 5, &end), 0);
	assert_int_equal(end, 11);
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 11);
	assert_memory_equal(buf, "whole\nnext\n", 11);
	store_close(s);
	store_remove(fx->path, id);
}

static void torn_append_is_cut_off_by_next_appender(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store s;
	char buf[64];

	open_with_torn_tail(fx, &id, &s, "half a packet\n");
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 6 + 7);
	assert_cut_then_appended(fx, &id, &s);
}

static void torn_file_refuses_appends_until_it_is_cut(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store s;
	off_t end = 0;
	char buf[64];

	open_with_torn_tail(fx, &id, &s, "torn\n");
	fail_truncates = 1;
	/* the torn bytes cannot be cut: nothing may be appended after them */
	assert_int_equal(store_append(&s, "lost?\n", 6, &end), -1);
	assert_int_equal(store_append(&s, "again\n", 6, &end), -1);
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 6 + 2);
	fail_truncates = 0;
	/* the next append that can cut recovers, then appends */
	assert_cut_then_appended(fx, &id, &s);
}

static void symlink_at_data_path_is_refused(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	char target[160], buf[64];

	snprintf(target, sizeof(target), "%s/target", fx->dir);
	write_file(target, "precious\n");
	assert_int_equal(symlink(target, fx->path), 0);
	assert_int_equal(store_prepare(fx->path, -1, -1, &id), -1);
	assert_int_equal(read_file(target, buf, sizeof(buf)), 9);
	assert_memory_equal(buf, "precious\n", 9);
}

static void replaced_file_is_never_written_nor_deleted(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store s;
	char buf[64], other[160];
	off_t end = 0;

	snprintf(other, sizeof(other), "%s/target", fx->dir);
	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	write_file(other, "someone else's\n");	/* a distinct inode */
	assert_int_equal(rename(other, fx->path), 0);
	/* workers keep appending to the file the server created */
	assert_int_equal(store_open(&s, fx->path, &id), 0);
	assert_int_equal(store_append(&s, "ours\n", 5, &end), 0);
	assert_int_equal(end, 5);
	store_close(&s);
	store_remove(fx->path, &id);	/* not ours: must stay */
	assert_int_equal(read_file(fx->path, buf, sizeof(buf)), 15);
	assert_memory_equal(buf, "someone else's\n", 15);
}

static void deleted_file_keeps_serving(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store a, b;
	off_t end = 0;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&a, fx->path, &id), 0);
	assert_int_equal(store_append(&a, "one\n", 4, &end), 0);
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(store_open(&b, fx->path, &id), 0);
	assert_int_equal(store_append(&b, "two\n", 4, &end), 0);
	assert_int_equal(end, 8);
	store_close(&a);
	store_close(&b);
	store_remove(fx->path, &id);
}

static void remove_deletes_our_file(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	store_remove(fx->path, &id);
	assert_int_equal(access(fx->path, F_OK), -1);
}

static void busy_lock_is_not_waited_for(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store a, b;
	off_t end = 0;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&a, fx->path, &id), 0);
	assert_int_equal(store_open(&b, fx->path, &id), 0);
	/* a holds the lock (a worker stopped in its append, say) */
	assert_int_equal(flock(a.lock_fd, LOCK_EX), 0);
	assert_int_equal(store_append(&b, "later\n", 6, &end), STORE_BUSY);
	assert_int_equal(flock(a.lock_fd, LOCK_UN), 0);
	assert_int_equal(store_append(&b, "later\n", 6, &end), STORE_OK);
	assert_int_equal(end, 6);
	store_close(&a);
	store_close(&b);
	store_remove(fx->path, &id);
}

static void a_reader_locking_the_file_does_not_stop_appends(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct store s;
	off_t end = 0;
	int reader;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	assert_int_equal(store_open(&s, fx->path, &id), 0);
	reader = open(fx->path, O_RDONLY);
	assert_true(reader >= 0);
	assert_int_equal(flock(reader, LOCK_EX), 0);
	assert_int_equal(store_append(&s, "goes on\n", 8, &end), STORE_OK);
	close(reader);
	store_close(&s);
	store_remove(fx->path, &id);
}

static void created_0640_whatever_the_umask(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	mode_t masks[] = { 0, 022, 077 }, old;
	struct stat st;
	size_t i;

	for (i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		old = umask(masks[i]);
		assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
		umask(old);
		assert_int_equal(stat(fx->path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0640);
		store_remove(fx->path, &id);
	}
}

static void changes_at_the_path_are_seen_once(void **state)
{
	struct fixture *fx = *state;
	struct store_identity id;
	struct pollfd watch = { .events = POLLIN };
	int last = 0, seen;

	assert_int_equal(store_prepare(fx->path, -1, -1, &id), 0);
	watch.fd = store_watch(fx->path);
	assert_true(watch.fd >= 0);
	assert_int_equal(poll(&watch, 1, 0), 0);
	assert_int_equal(unlink(fx->path), 0);
	assert_int_equal(poll(&watch, 1, 1000), 1);
	store_check_path(fx->path, &id, watch.fd, &last);
	assert_int_not_equal(last, 0);
	seen = last;
	store_check_path(fx->path, &id, watch.fd, &last);
	assert_int_equal(last, seen);
	assert_int_equal(poll(&watch, 1, 0), 0);	/* events taken */
	close(watch.fd);
	store_remove(fx->path, &id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(prepare_removes_stale_file,
						setup, teardown),
		cmocka_unit_test_setup_teardown(appends_report_end_offsets,
						setup, teardown),
		cmocka_unit_test_setup_teardown(two_openers_share_the_end,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			failed_append_leaves_file_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(
			torn_append_is_cut_off_by_next_appender, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			torn_file_refuses_appends_until_it_is_cut, setup,
			teardown),
		cmocka_unit_test_setup_teardown(symlink_at_data_path_is_refused,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			replaced_file_is_never_written_nor_deleted, setup,
			teardown),
		cmocka_unit_test_setup_teardown(deleted_file_keeps_serving,
						setup, teardown),
		cmocka_unit_test_setup_teardown(remove_deletes_our_file, setup,
						teardown),
		cmocka_unit_test_setup_teardown(busy_lock_is_not_waited_for,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_reader_locking_the_file_does_not_stop_appends, setup,
			teardown),
		cmocka_unit_test_setup_teardown(created_0640_whatever_the_umask,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			changes_at_the_path_are_seen_once, setup, teardown),
	};

	log_open(false);
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
