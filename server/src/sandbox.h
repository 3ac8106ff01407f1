/*
 * sandbox: what confines a worker, the process that parses what clients
 * send.  Owns its limits (no privilege through exec, no core dump, no
 * more descriptors than serving needs) and the system call filter it
 * loads once it is ready to serve (seccomp, built with libseccomp): the
 * allow-list, the
 * choice for each refused call between failing it with an errno and
 * killing the worker, the worker's SIGSYS handler that records which call
 * killed it, and the reports in which the parent finds that call's name
 * for its log.  A report is written by the worker and only ever read by
 * the parent to name a call in a log line: a worker that lies there can at
 * worst put a wrong name in that line.
 */
#ifndef AESD_SANDBOX_H
#define AESD_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

/* What a worker killed by the filter recorded of the call, in memory it
 * shares with the parent.  arch 0: nothing recorded. */
struct sandbox_report {
	uint32_t arch;		/* AUDIT_ARCH_* of the call */
	int32_t nr;		/* its number on that architecture */
};

/* What the filter needs to know of the worker it confines. */
struct sandbox_worker {
	int listen_fd;		/* the only descriptor accept4() may take */
	int log_fd;		/* the only one sendto() may address */
	struct sandbox_report *report;	/* where SIGSYS records the call */
};

/* The parent, before forking: count reports, all clear, in shared
 * memory; NULL (logged) if they cannot be mapped. */
struct sandbox_report *sandbox_map_reports(unsigned count);
void sandbox_unmap_reports(struct sandbox_report *reports, unsigned count);
void sandbox_clear_report(struct sandbox_report *report);

/* The worker, as soon as it runs as its user: no_new_privs, no core dump,
 * and at most files descriptors.  0, or -1 (logged). */
int sandbox_limit(unsigned long files);

/* The worker, once it has everything it needs and before it accepts:
 * from here on, only the calls serving needs.  0, or -1 (logged). */
int sandbox_confine(const struct sandbox_worker *w);

/* The parent, for a worker killed by SIGSYS: what it called, e.g.
 * "execve", from its report (or a number, or that none was recorded). */
void sandbox_describe(const struct sandbox_report *report, char *buf,
		      size_t size);

#endif
