/* Unit tests for sandbox.c: the filter, loaded for real in forked
 * children, and how the parent names a call from a report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sandbox_report *report;
static pid_t parent;	/* of the confined child, which may not ask */
static int fds[2];	/* a pipe: descriptors a child has before it is confined */

static int setup(void **state)
{
	(void)state;
	report = sandbox_map_reports(1);
	return report && pipe(fds) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	sandbox_unmap_reports(report, 1);
	close(fds[0]);
	close(fds[1]);
	return 0;
}

/* Runs body in a child confined as a worker (listening socket and log
 * socket: none); returns its wait status. */
static int confined(void (*body)(void))
{
	struct sandbox_worker w = { .listen_fd = -1, .log_fd = -1,
				    .report = report };
	int status;
	pid_t pid;

	sandbox_clear_report(report);
	parent = getpid();
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (sandbox_confine(&w) != 0)
			_exit(99);
		body();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* In a child: exits with code unless cond holds. */
#define EXPECT(cond, code)                  \
	do {                                \
		if (!(cond))                \
			_exit(code);        \
	} while (0)

static void assert_exited_0(int status)
{
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The child died of SIGSYS and its report names call. */
static void assert_killed_at(int status, const char *call)
{
	char name[80];

	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGSYS);
	sandbox_describe(report, name, sizeof(name));
	assert_string_equal(name, call);
}

/* --------------------------------------------- what serving needs */

static void serve_like_a_worker(void)
{
	char byte = 'x';
	void *p;

	EXPECT(write(fds[1], &byte, 1) == 1 && read(fds[0], &byte, 1) == 1, 2);
	p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	EXPECT(p != MAP_FAILED, 3);
	EXPECT(mprotect(p, 4096, PROT_READ) == 0, 4);
	EXPECT(munmap(p, 1 << 20) == 0, 5);
	free(malloc(1 << 20));
	EXPECT(kill(getpid(), 0) == 0, 6);	/* itself */
}

static void test_what_serving_needs_is_allowed(void **state)
{
	(void)state;
	assert_exited_0(confined(serve_like_a_worker));
}

/* ---------------------------------------- refused with an errno */

static void open_and_socket_fail(void)
{
	EXPECT(open("/dev/null", O_RDONLY) == -1 && errno == EACCES, 1);
	EXPECT(openat(AT_FDCWD, "/", O_RDONLY) == -1 && errno == EACCES, 2);
	EXPECT(socket(AF_INET, SOCK_STREAM, 0) == -1 &&
	       errno == EAFNOSUPPORT, 3);
	EXPECT(socket(AF_UNIX, SOCK_DGRAM, 0) == -1 &&
	       errno == EAFNOSUPPORT, 4);
#ifdef SYS_clone3
	EXPECT(syscall(SYS_clone3, NULL, 0) == -1 && errno == ENOSYS, 5);
#endif
}

static void test_libc_s_own_calls_fail_with_an_errno(void **state)
{
	(void)state;
	assert_exited_0(confined(open_and_socket_fail));
}

/* ------------------------------------------------------- kills */

static void signal_the_parent(void)
{
	kill(parent, 0);
	_exit(1);
}

static void exec_a_shell(void)
{
	char *argv[] = { "sh", "-c", "exit 7", NULL };

	execve("/bin/sh", argv, NULL);
	_exit(1);
}

static void map_executable_memory(void)
{
	mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS,
	     -1, 0);
	_exit(1);
}

static void trace_the_parent(void)
{
	ptrace(PTRACE_ATTACH, parent, NULL, NULL);
	_exit(1);
}

static void test_an_attacker_s_calls_kill_and_are_named(void **state)
{
	(void)state;
	assert_killed_at(confined(signal_the_parent), "kill");
	assert_killed_at(confined(exec_a_shell), "execve");
	assert_killed_at(confined(map_executable_memory), "mmap");
	assert_killed_at(confined(trace_the_parent), "ptrace");
}

/* ------------------------------- no way around the SIGSYS handler */

static void replace_the_sigsys_handler(void)
{
	struct sigaction ignore;

	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	sigaction(SIGSYS, &ignore, NULL);
	_exit(1);
}

/* The kernel reads a signal number as an int: junk in the upper half of
 * the register must not pass for another signal. */
static void replace_it_with_junk_in_the_upper_half(void)
{
	struct sigaction ignore;

	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	syscall(SYS_rt_sigaction, (1UL << 32) | SIGSYS, &ignore, NULL, 8);
	_exit(1);
}

/* Blocked, SIGSYS still ends it: the kernel forces it (its default,
 * with nothing recorded), and the call never runs. */
static void block_sigsys_then_call_getppid(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (syscall(SYS_getppid) > 0)	/* not on the list either */
		_exit(2);
	_exit(1);
}

static void test_a_denied_call_cannot_be_survived(void **state)
{
	(void)state;
	assert_killed_at(confined(replace_the_sigsys_handler),
			 "rt_sigaction");
	assert_killed_at(confined(replace_it_with_junk_in_the_upper_half),
			 "rt_sigaction");
	assert_killed_at(confined(block_sigsys_then_call_getppid),
			 "a call it did not record");
}

/* ------------------------------------------------- the parent's text */

static void test_a_report_only_ever_becomes_text(void **state)
{
	struct sandbox_report r;
	char name[80];

	(void)state;
	r = (struct sandbox_report){ AUDIT_ARCH_X86_64, 59 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name, "execve");
	r = (struct sandbox_report){ AUDIT_ARCH_AARCH64, 221 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name, "execve");
	r = (struct sandbox_report){ 0, 59 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name, "a call it did not record");
	/* what a lying worker may write */
	r = (struct sandbox_report){ 0x1234, 59 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name, "system call 59 of architecture 0x1234");
	r = (struct sandbox_report){ AUDIT_ARCH_X86_64, -5 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name, "system call -5 of architecture 0xc000003e");
	r = (struct sandbox_report){ AUDIT_ARCH_X86_64, 1 << 30 };
	sandbox_describe(&r, name, sizeof(name));
	assert_string_equal(name,
			    "system call 1073741824 of architecture 0xc000003e");
	/* a buffer too small is cut, never overrun */
	r = (struct sandbox_report){ AUDIT_ARCH_X86_64, 59 };
	sandbox_describe(&r, name, 4);
	assert_string_equal(name, "exe");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_what_serving_needs_is_allowed),
		cmocka_unit_test(test_libc_s_own_calls_fail_with_an_errno),
		cmocka_unit_test(test_an_attacker_s_calls_kill_and_are_named),
		cmocka_unit_test(test_a_denied_call_cannot_be_survived),
		cmocka_unit_test(test_a_report_only_ever_becomes_text),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
