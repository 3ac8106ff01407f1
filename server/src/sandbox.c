/* sandbox: a worker's system call filter. */
#include "sandbox.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1		/* si_code of a SIGSYS the filter raised */
#endif

/*
 * What each call gets.  The filter's default, for every call not listed,
 * is KILL: the call does not run, the worker gets SIGSYS, its handler
 * records the call for the parent's log, and the worker dies of it.  A
 * worker has no use for any of those calls once it serves, so one of them
 * means either an attacker or a missing line here, and both should be
 * loud.  FAIL (an errno) is only for calls that the C library or a
 * sanitizer's runtime may make on its own in paths we do not control
 * (glibc opens /dev/tty before it reports heap corruption, the time zone
 * or locale files when it first needs them) and that every caller handles
 * as the failure they always could be.
 */
#define ALLOW SCMP_ACT_ALLOW
#define KILL SCMP_ACT_TRAP
#define FAIL(e) SCMP_ACT_ERRNO(e)

struct rule {
	const char *call;
	uint32_t action;
	unsigned count;		/* conditions, all of which must hold */
	struct scmp_arg_cmp arg[2];
};

#define NOARG { 0, 0, 0, 0 }
#define R0(call, action) { call, action, 0, { NOARG, NOARG } }
#define R1(call, action, a) { call, action, 1, { a, NOARG } }
#define R2(call, action, a, b) { call, action, 2, { a, b } }

/* Argument n equals value (all 64 bits: a value with junk in its upper
 * half, which the kernel would cut off, is not equal). */
static struct scmp_arg_cmp is(unsigned n, scmp_datum_t value)
{
	return (struct scmp_arg_cmp){ n, SCMP_CMP_EQ, value, 0 };
}

/* Argument n is below value, unsigned, all 64 bits. */
static struct scmp_arg_cmp below(unsigned n, scmp_datum_t value)
{
	return (struct scmp_arg_cmp){ n, SCMP_CMP_LT, value, 0 };
}

/* Argument n's bits in mask are those of value. */
static struct scmp_arg_cmp bits(unsigned n, scmp_datum_t mask,
				scmp_datum_t value)
{
	return (struct scmp_arg_cmp){ n, SCMP_CMP_MASKED_EQ, mask, value };
}

/* The allow-list, one line a call with why; the rest kills.  Calls a
 * system does not have (open, epoll_wait and fork on AArch64) are skipped
 * where it lacks them. */
static int add_rules(scmp_filter_ctx ctx, const struct sandbox_worker *w)
{
	const scmp_datum_t self = (scmp_datum_t)getpid();
	const struct rule rules[] = {
		/* the event loop */
		R0("epoll_pwait", ALLOW),
		R0("epoll_ctl", ALLOW),
		/* clients: new ones from the listening socket only, whose
		 * bytes it reads (MSG_PEEK too) and answers from the file */
		R1("accept4", ALLOW, is(0, (scmp_datum_t)w->listen_fd)),
		R0("recvfrom", ALLOW),
		R0("sendfile", ALLOW),
		/* the data file: append, lock, size, cut back a torn append
		 * (fstat is newfstatat(fd, "", AT_EMPTY_PATH) in glibc) */
		R0("write", ALLOW),
		R0("read", ALLOW),
		R0("flock", ALLOW),
		R0("fstat", ALLOW),
		R1("newfstatat", ALLOW, bits(3, AT_EMPTY_PATH, AT_EMPTY_PATH)),
		R0("ftruncate", ALLOW),
		R0("close", ALLOW),
		/* the log: datagrams to /dev/log from its own socket (log.h),
		 * never a TCP Fast Open connect */
		R2("sendto", ALLOW, is(0, (scmp_datum_t)w->log_fd),
		   bits(3, MSG_FASTOPEN, 0)),
		/* time (the vDSO's fallback), and sleeping */
		R0("clock_gettime", ALLOW),
		R0("clock_nanosleep", ALLOW),
		/* memory, never executable, never a file's */
		R0("brk", ALLOW),
		R2("mmap", ALLOW, bits(2, PROT_EXEC, 0),
		   bits(3, MAP_ANONYMOUS, MAP_ANONYMOUS)),
		R1("mprotect", ALLOW, bits(2, PROT_EXEC, 0)),
		R0("munmap", ALLOW),
		R0("mremap", ALLOW),
		R0("madvise", ALLOW),
		/* signals: its own only; any handler but SIGSYS's, which
		 * must stay the one that dies (signals 1-30, 32-63, 64) */
		R0("rt_sigprocmask", ALLOW),
		R0("rt_sigreturn", ALLOW),
		R0("sigaltstack", ALLOW),	/* ASan's, at exit */
		R1("rt_sigaction", ALLOW, below(0, SIGSYS)),
		R1("rt_sigaction", ALLOW, bits(0, ~(scmp_datum_t)0x1f, 0x20)),
		R1("rt_sigaction", ALLOW, is(0, 64)),
		R1("kill", ALLOW, is(0, self)),
		R1("tgkill", ALLOW, is(0, self)),
		R0("getpid", ALLOW),
		R0("gettid", ALLOW),
		/* the rest of a process's life */
		R0("futex", ALLOW),
		R0("sched_yield", ALLOW),
		R0("getrandom", ALLOW),
		R0("restart_syscall", ALLOW),
		R0("exit", ALLOW),
		R0("exit_group", ALLOW),
		/* what the C library may try on its own: fails */
		R0("open", FAIL(EACCES)),
		R0("openat", FAIL(EACCES)),
		R0("openat2", FAIL(EACCES)),
		R0("socket", FAIL(EAFNOSUPPORT)),
		/* ENOSYS, as for a kernel without it, so that a library
		 * falls back to clone(), which kills */
		R0("clone3", FAIL(ENOSYS)),
	};
	size_t i;

	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		const struct rule *r = &rules[i];
		int nr = seccomp_syscall_resolve_name(r->call), rc;

		if (nr == __NR_SCMP_ERROR) {
			log_msg(LOG_ERR, "seccomp_syscall_resolve_name: this libseccomp does not know %s",
				r->call);
			return -1;
		}
		if (nr < 0)
			continue;	/* not a call of this architecture */
		rc = seccomp_rule_add_array(ctx, r->action, nr, r->count, r->arg);
		if (rc != 0) {
			log_msg(LOG_ERR, "seccomp_rule_add(%s): %s", r->call,
				strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* The kernel lets a call that the filter allows whatever its arguments
 * through from a cache, without running the filter; a call with
 * conditions runs it.  Those a worker makes all the time are checked
 * first: the file's size at each append, each new client, each log line. */
static const char *const hot_calls[] = { "newfstatat", "accept4", "sendto" };

static int put_hot_calls_first(scmp_filter_ctx ctx)
{
	size_t i;

	for (i = 0; i < sizeof(hot_calls) / sizeof(hot_calls[0]); i++) {
		int nr = seccomp_syscall_resolve_name(hot_calls[i]), rc;

		if (nr < 0)
			continue;
		rc = seccomp_syscall_priority(ctx, nr, 255);
		if (rc != 0) {
			log_msg(LOG_ERR, "seccomp_syscall_priority(%s): %s",
				hot_calls[i], strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------ a call that kills */

static struct sandbox_report *report;
static struct sigaction before;	/* SIGSYS's handler until now */

/* Records the call the filter refused, then lets SIGSYS end the worker:
 * SA_RESETHAND has made it fatal already, and the filter keeps this
 * handler from being replaced, so no denied call can be survived. */
static void on_sigsys(int signo, siginfo_t *info, void *context)
{
	if (info->si_code != SYS_SECCOMP) {
		/* sent with kill(): the handler before decides (a stop) */
		if (before.sa_flags & SA_SIGINFO)
			before.sa_sigaction(signo, info, context);
		else if (before.sa_handler == SIG_DFL)
			raise(signo);
		else if (before.sa_handler != SIG_IGN)
			before.sa_handler(signo);
		return;
	}
	if (report) {
		__atomic_store_n(&report->nr, info->si_syscall,
				 __ATOMIC_RELAXED);
		__atomic_store_n(&report->arch, info->si_arch,
				 __ATOMIC_RELAXED);
	}
	raise(SIGSYS);	/* blocked in here: taken as this returns */
}

static int catch_sigsys(struct sandbox_report *where)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	report = where;
	if (sigaction(SIGSYS, &sa, &before) == 0)
		return 0;
	log_errno("sigaction(SIGSYS)");
	return -1;
}

/* ---------------------------------------------------- the filter */

/* Filter attributes: a call of another architecture (int 0x80 on
 * x86_64) kills too, and a tracer may skip a call (strace's fault
 * injection and gdb do, by setting its number to -1). */
static int set_attributes(scmp_filter_ctx ctx)
{
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, KILL);

	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_API_TSKIP, 1);
	if (rc == 0)
		rc = seccomp_rule_add(ctx, ALLOW, -1, 0);
	if (rc != 0)
		log_msg(LOG_ERR, "seccomp_attr_set: %s", strerror(-rc));
	return rc == 0 ? 0 : -1;
}

int sandbox_confine(const struct sandbox_worker *w)
{
	scmp_filter_ctx ctx = seccomp_init(KILL);
	int rc;

	if (!ctx) {
		log_msg(LOG_ERR, "seccomp_init: cannot allocate the filter");
		return -1;
	}
	if (set_attributes(ctx) != 0 || add_rules(ctx, w) != 0 ||
	    put_hot_calls_first(ctx) != 0 || catch_sigsys(w->report) != 0) {
		seccomp_release(ctx);
		return -1;
	}
	rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		log_msg(LOG_ERR, "seccomp_load: %s (the kernel needs CONFIG_SECCOMP_FILTER; --no-syscall-filter runs unconfined)",
			strerror(-rc));
		return -1;
	}
	return 0;
}

/* ----------------------------------------------------------- limits */

/* Where the hard limit may not move (valgrind keeps descriptors of its
 * own above it), the soft limit alone bounds the worker. */
static int limit_descriptors(rlim_t most)
{
	struct rlimit files = { most, most };

	if (setrlimit(RLIMIT_NOFILE, &files) == 0)
		return 0;
	if (getrlimit(RLIMIT_NOFILE, &files) != 0)
		return -1;
	files.rlim_cur = most;
	return setrlimit(RLIMIT_NOFILE, &files);
}

int sandbox_limit(unsigned long files)
{
	const struct rlimit no_core = { 0, 0 };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		log_errno("Cannot restrict the worker: prctl(PR_SET_NO_NEW_PRIVS)");
		return -1;
	}
	if (setrlimit(RLIMIT_CORE, &no_core) != 0) {
		log_errno("Cannot restrict the worker: setrlimit(RLIMIT_CORE, 0)");
		return -1;
	}
	if (limit_descriptors((rlim_t)files) != 0) {
		log_errno("Cannot restrict the worker: setrlimit(RLIMIT_NOFILE, %lu)",
			  files);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------- the parent's side */

struct sandbox_report *sandbox_map_reports(unsigned count)
{
	void *reports = mmap(NULL, count * sizeof(struct sandbox_report),
			     PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			     -1, 0);

	if (reports != MAP_FAILED)
		return reports;
	log_errno("Cannot map the workers' system call reports");
	return NULL;
}

void sandbox_unmap_reports(struct sandbox_report *reports, unsigned count)
{
	if (reports)
		munmap(reports, count * sizeof(struct sandbox_report));
}

void sandbox_clear_report(struct sandbox_report *r)
{
	__atomic_store_n(&r->arch, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&r->nr, 0, __ATOMIC_RELAXED);
}

/* Whatever the worker wrote, this only ever becomes text: libseccomp
 * looks the number up in its tables, and an unknown architecture or
 * number is printed as a number. */
void sandbox_describe(const struct sandbox_report *r, char *buf, size_t size)
{
	uint32_t arch = __atomic_load_n(&r->arch, __ATOMIC_RELAXED);
	int32_t nr = __atomic_load_n(&r->nr, __ATOMIC_RELAXED);
	char *name = NULL;

	if (arch == 0) {
		snprintf(buf, size, "a call it did not record");
		return;
	}
	if (nr >= 0)
		name = seccomp_syscall_resolve_num_arch(arch, nr);
	if (name)
		snprintf(buf, size, "%s", name);
	else
		snprintf(buf, size, "system call %ld of architecture 0x%lx",
			 (long)nr, (unsigned long)arch);
	free(name);
}
