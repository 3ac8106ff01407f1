/* options: defaults, --help and range-checked parsing of the command line. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_PORT 9000
#define DEFAULT_DATA_FILE "/var/tmp/aesdsocketdata"
#define DEFAULT_MAX_CONNECTIONS 10240
#define DEFAULT_BUFFER_BUDGET (32UL * 1024 * 1024)
#define DEFAULT_MAX_PACKET (1024UL * 1024)
#define DEFAULT_IDLE_TIMEOUT 60
#define DEFAULT_SEND_TIMEOUT 10

#define MAX_CONNECTIONS_LIMIT 65536
#define BUFFER_BUDGET_MIN 4096UL
#define BUFFER_BUDGET_LIMIT (1024UL * 1024 * 1024)
#define MAX_PACKET_LIMIT (1024UL * 1024 * 1024)
#define TIMEOUT_LIMIT 86400

/* getopt_long's value for the options that have no letter */
#define OPT_NO_SYSCALL_FILTER 256

static const char usage_text[] =
	"Usage: aesdsocket [OPTION]...\n"
	"Serve the aesd packet protocol on TCP: every newline-terminated packet\n"
	"is appended to the data file, and the whole file is sent back.\n"
	"\n"
	"  -d, --daemon              run in the background once listening\n"
	"  -p, --port PORT           TCP port to listen on (default 9000)\n"
	"  -b, --bind ADDRESS        numeric IPv4/IPv6 address to listen on\n"
	"                            (default: every address)\n"
	"  -f, --data-file PATH      data file (default /var/tmp/aesdsocketdata)\n"
	"  -P, --pidfile PATH        write the server's pid here; removed at exit\n"
	"  -s, --log-stderr          copy log lines to stderr\n"
	"  -u, --user NAME           drop root privileges to NAME after binding\n"
	"  -c, --max-connections N   connections open at once, 1-65536 (default\n"
	"                            10240); when full, one idle for a second or\n"
	"                            more is closed to make room, else new\n"
	"                            clients wait\n"
	"  -w, --workers N           worker processes, each serving many\n"
	"                            connections, 1-256 (default: one per CPU,\n"
	"                            at least 2); --max-workers is an old name\n"
	"  -B, --buffer-budget BYTES  bytes of packets not yet stored that all\n"
	"                            workers may hold (default 33554432); when\n"
	"                            full, the client holding most is cut off\n"
	"  -m, --max-packet BYTES    longest packet, newline included\n"
	"                            (default 1048576); longer ones disconnect\n"
	"  -i, --idle-timeout SEC    close a connection that completes no packet\n"
	"                            for this long (default 60, 0 = never)\n"
	"  -t, --send-timeout SEC    a response must be read within SEC seconds\n"
	"                            plus 1 s per 64 KiB (default 10, 0 = never)\n"
	"      --no-syscall-filter   do not confine the workers' system calls\n"
	"                            (for valgrind, which makes them itself);\n"
	"                            a warning says so at start\n"
	"  -h, --help                show this help and exit\n"
	"  -V, --version             show the version and exit\n"
	"\n"
	"A listening socket passed by systemd (LISTEN_FDS) is used instead of\n"
	"--port and --bind.  SIGINT or SIGTERM (and SIGHUP in the foreground)\n"
	"stops the server and deletes the data file.\n";

static const struct option long_options[] = {
	{ "daemon", no_argument, NULL, 'd' },
	{ "port", required_argument, NULL, 'p' },
	{ "bind", required_argument, NULL, 'b' },
	{ "data-file", required_argument, NULL, 'f' },
	{ "pidfile", required_argument, NULL, 'P' },
	{ "log-stderr", no_argument, NULL, 's' },
	{ "user", required_argument, NULL, 'u' },
	{ "max-connections", required_argument, NULL, 'c' },
	{ "workers", required_argument, NULL, 'w' },
	{ "max-workers", required_argument, NULL, 'w' },
	{ "buffer-budget", required_argument, NULL, 'B' },
	{ "max-packet", required_argument, NULL, 'm' },
	{ "idle-timeout", required_argument, NULL, 'i' },
	{ "send-timeout", required_argument, NULL, 't' },
	{ "no-syscall-filter", no_argument, NULL, OPT_NO_SYSCALL_FILTER },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

void options_defaults(struct options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->port = DEFAULT_PORT;
	opts->data_file = DEFAULT_DATA_FILE;
	opts->max_connections = DEFAULT_MAX_CONNECTIONS;
	opts->workers = 0;	/* options_default_workers() */
	opts->buffer_budget = DEFAULT_BUFFER_BUDGET;
	opts->max_packet = DEFAULT_MAX_PACKET;
	opts->idle_timeout_s = DEFAULT_IDLE_TIMEOUT;
	opts->send_timeout_s = DEFAULT_SEND_TIMEOUT;
	opts->syscall_filter = true;
}

unsigned options_default_workers(void)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (cpus < 2)
		return 2;
	return cpus > MAX_WORKERS_LIMIT ? MAX_WORKERS_LIMIT : (unsigned)cpus;
}

int parse_number(const char *text, unsigned long min, unsigned long max,
		 unsigned long *value)
{
	unsigned long long parsed;
	char *end;

	/* strtoull accepts leading space and a sign; a number here does not */
	if (text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	parsed = strtoull(text, &end, 10);
	if (errno != 0 || *end != '\0' || parsed < min || parsed > max)
		return -1;
	*value = (unsigned long)parsed;
	return 0;
}

struct numeric_option {
	int letter;
	const char *name;
	unsigned long min, max;
};

static const struct numeric_option numeric_options[] = {
	{ 'p', "port", 1, 65535 },
	{ 'c', "max-connections", 1, MAX_CONNECTIONS_LIMIT },
	{ 'w', "workers", 1, MAX_WORKERS_LIMIT },
	{ 'B', "buffer-budget", BUFFER_BUDGET_MIN, BUFFER_BUDGET_LIMIT },
	{ 'm', "max-packet", 1, MAX_PACKET_LIMIT },
	{ 'i', "idle-timeout", 0, TIMEOUT_LIMIT },
	{ 't', "send-timeout", 0, TIMEOUT_LIMIT },
};

static int parse_numeric_option(int letter, const char *text, FILE *err,
				unsigned long *value)
{
	size_t i;

	for (i = 0; i < sizeof(numeric_options) / sizeof(numeric_options[0]);
	     i++) {
		const struct numeric_option *n = &numeric_options[i];

		if (n->letter != letter)
			continue;
		if (parse_number(text, n->min, n->max, value) == 0)
			return 0;
		fprintf(err,
			"aesdsocket: invalid --%s '%s': expected a whole number from %lu to %lu\n",
			n->name, text, n->min, n->max);
		return -1;
	}
	return -1;
}

static int require_nonempty(const char *name, const char *text, FILE *err)
{
	if (text[0] != '\0')
		return 0;
	fprintf(err, "aesdsocket: --%s needs a non-empty value\n", name);
	return -1;
}

/* Applies one parsed option; returns -1 on a bad value. */
static int apply_option(struct options *opts, int letter, const char *arg,
			FILE *err)
{
	unsigned long n;

	switch (letter) {
	case 'd': opts->daemonize = true; return 0;
	case OPT_NO_SYSCALL_FILTER: opts->syscall_filter = false; return 0;
	case 's': opts->log_to_stderr = true; return 0;
	case 'b': opts->bind_address = arg;
		return require_nonempty("bind", arg, err);
	case 'f': opts->data_file = arg;
		return require_nonempty("data-file", arg, err);
	case 'P': opts->pidfile = arg;
		return require_nonempty("pidfile", arg, err);
	case 'u': opts->user = arg;
		return require_nonempty("user", arg, err);
	}
	if (parse_numeric_option(letter, arg, err, &n) != 0)
		return -1;
	switch (letter) {
	case 'p': opts->port = (unsigned)n; break;
	case 'c': opts->max_connections = (unsigned)n; break;
	case 'w': opts->workers = (unsigned)n; break;
	case 'B': opts->buffer_budget = n; break;
	case 'm': opts->max_packet = n; break;
	case 'i': opts->idle_timeout_s = (unsigned)n; break;
	case 't': opts->send_timeout_s = (unsigned)n; break;
	}
	return 0;
}

static enum options_result usage_error(FILE *err)
{
	fprintf(err, "Try 'aesdsocket --help' for more information.\n");
	return OPTIONS_USAGE_ERROR;
}

enum options_result options_parse(struct options *opts, int argc,
				  char *const argv[], FILE *out, FILE *err)
{
	int letter;

	options_defaults(opts);
	optind = 0;	/* glibc and musl: full reinitialisation */
	opterr = 0;	/* our messages, on err */
	while ((letter = getopt_long(argc, argv, ":dp:b:f:P:su:c:w:B:m:i:t:hV",
				     long_options, NULL)) != -1) {
		switch (letter) {
		case 'h':
			fputs(usage_text, out);
			return OPTIONS_EXIT_OK;
		case 'V':
			fprintf(out, "aesdsocket %s\n", AESD_VERSION);
			return OPTIONS_EXIT_OK;
		case ':':
			fprintf(err, "aesdsocket: option '%s' needs a value\n",
				argv[optind - 1]);
			return usage_error(err);
		case '?':
			if (optopt)
				fprintf(err, "aesdsocket: unknown option '-%c'\n",
					optopt);
			else
				fprintf(err, "aesdsocket: unknown option '%s'\n",
					argv[optind - 1]);
			return usage_error(err);
		default:
			if (apply_option(opts, letter, optarg, err) != 0)
				return usage_error(err);
		}
	}
	if (optind < argc) {
		fprintf(err, "aesdsocket: unexpected argument '%s'\n",
			argv[optind]);
		return usage_error(err);
	}
	return OPTIONS_RUN;
}
