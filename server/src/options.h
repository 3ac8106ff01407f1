/*
 * options: the command line.  Owns the defaults, the --help text and the
 * range-checked parsing of every value (no atoi: trailing junk, signs and
 * out-of-range numbers are usage errors).  It performs no I/O other than
 * printing help, version and usage errors to the streams it is given.
 */
#ifndef AESD_OPTIONS_H
#define AESD_OPTIONS_H

#include <stdbool.h>
#include <stdio.h>

#define AESD_VERSION "1.0.0"

#define MAX_WORKERS_LIMIT 256

struct options {
	bool daemonize;
	bool log_to_stderr;
	unsigned port;
	const char *bind_address;	/* NULL: every address */
	const char *data_file;
	const char *pidfile;		/* NULL: none */
	const char *user;		/* NULL: keep the current user */
	unsigned max_connections;	/* open at once, in all workers */
	unsigned workers;		/* worker processes; 0: one per CPU */
	unsigned long buffer_budget;	/* bytes of packets being received */
	unsigned long max_packet;
	unsigned idle_timeout_s;	/* 0: never */
	unsigned send_timeout_s;	/* 0: never */
	bool syscall_filter;		/* confine the workers (sandbox.h) */
};

enum options_result {
	OPTIONS_RUN,		/* start the server with *opts */
	OPTIONS_EXIT_OK,	/* --help or --version printed */
	OPTIONS_USAGE_ERROR,	/* message printed; exit status 2 */
};

void options_defaults(struct options *opts);

/* The number of workers when none is given: one per online CPU, at
 * least 2 (so that one hung worker never stops the service). */
unsigned options_default_workers(void);

/* Parses argv into *opts (starting from defaults).  Help and version go to
 * out, errors to err.  Resets getopt's state, so it may be called again. */
enum options_result options_parse(struct options *opts, int argc,
				  char *const argv[], FILE *out, FILE *err);

/* Parses a decimal number in [min, max]; returns 0, or -1 on any junk. */
int parse_number(const char *text, unsigned long min, unsigned long max,
		 unsigned long *value);

#endif
