/*
 * aesdsocket: wires the modules together in the order the design needs.
 * Standard descriptors first, so nothing lands on them; bind next, so a
 * second instance fails before touching anything; then prepare the data
 * file, detach, write the pidfile, start the workers, and report "ready"
 * only once a worker has said it is -- so `aesdsocket -d` returning 0
 * means the port is served.  From then on this process only supervises.
 */
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "store.h"
#include "supervisor.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

struct server {
	struct options opts;
	int listen_fd;
	int ready_fd;		/* to the waiting foreground process (-d) */
	uid_t uid;
	gid_t gid;
	struct store_identity data_id;	/* fd -1 until the file exists */
	struct connection_limits limits;
	char data_file[PATH_MAX], pidfile[PATH_MAX];
};

/* Static: forked workers inherit no heap from it. */
static struct server server;

static int open_listener(struct server *s, int fd)
{
	if (fd < 0)
		fd = listener_open(s->opts.bind_address, s->opts.port);
	if (fd < 0)
		return -1;
	/* Workers accept in a loop until EAGAIN. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
	    listener_disable_nagle(fd) != 0) {
		log_errno("Cannot set up the listening socket: fcntl/setsockopt");
		close(fd);
		return -1;
	}
	s->listen_fd = fd;
	return 0;
}

/* -f and -P relative to where we started, also after -d's chdir("/"). */
static int resolve_paths(struct server *s)
{
	s->opts.data_file = lifecycle_absolute_path(s->opts.data_file,
						    s->data_file,
						    sizeof(s->data_file));
	if (s->opts.pidfile)
		s->opts.pidfile = lifecycle_absolute_path(s->opts.pidfile,
							  s->pidfile,
							  sizeof(s->pidfile));
	return s->opts.data_file && (s->pidfile[0] || !s->opts.pidfile) ?
		       0 : -1;
}

/* Any worker may hold every connection: each needs a descriptor limit
 * that fits them all (the workers inherit it); fewer connections if the
 * limit is firm. */
static void fit_descriptor_limit(struct options *opts)
{
	unsigned long need = worker_descriptors(opts->max_connections,
						opts->workers);
	unsigned long fit = lifecycle_raise_fd_limit(need);
	unsigned long spare = need - opts->max_connections;

	if (fit >= need)
		return;
	opts->max_connections = fit > spare ? (unsigned)(fit - spare) : 1;
	log_msg(LOG_WARNING,
		"The descriptor limit (%lu) allows only %u connections",
		fit, opts->max_connections);
}

/* Everything up to starting the workers; on failure the caller cleans up. */
static int start(struct server *s, int systemd_fd)
{
	if (lifecycle_setup_signals() != 0 || resolve_paths(s) != 0 ||
	    open_listener(s, systemd_fd) != 0)
		return -1;
	if (s->opts.user &&
	    lifecycle_lookup_user(s->opts.user, &s->uid, &s->gid) != 0)
		return -1;
	if (store_prepare(s->opts.data_file, s->uid, s->gid, &s->data_id) != 0)
		return -1;
	if (s->opts.daemonize && lifecycle_daemonize(&s->ready_fd) != 0)
		return -1;
	if (s->opts.pidfile && pidfile_write(s->opts.pidfile) != 0)
		return -1;
	if (s->opts.workers == 0)
		s->opts.workers = options_default_workers();
	fit_descriptor_limit(&s->opts);
	return 0;
}

static struct supervisor *start_serving(struct server *s)
{
	struct supervisor_config config = {
		.workers = s->opts.workers,
		.total_budget = s->opts.buffer_budget,
		.worker = {
			.listen_fd = s->listen_fd,
			.data_file = s->opts.data_file,
			.data_id = &s->data_id,
			.limits = &s->limits,
			.max_connections = s->opts.max_connections,
			.user = s->opts.user,
			.uid = s->uid,
			.gid = s->gid,
			.syscall_filter = s->opts.syscall_filter,
		},
	};
	struct supervisor *sup;

	s->limits = (struct connection_limits){
		.max_packet = s->opts.max_packet,
		.idle_timeout_s = s->opts.idle_timeout_s,
		.send_timeout_s = s->opts.send_timeout_s,
	};
	sup = supervisor_start(&config);
	if (sup && supervisor_wait_started(sup) != 0) {
		if (!lifecycle_stop_requested())
			log_msg(LOG_ERR, "Worker processes cannot start; stopping");
		supervisor_stop(sup);
		return NULL;
	}
	return sup;
}

static void clean_up(struct server *s)
{
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->data_id.fd >= 0)
		store_remove(s->opts.data_file, &s->data_id);
	if (s->opts.pidfile)
		pidfile_remove(s->opts.pidfile);
	log_close();
}

/* Before anything opens a file: descriptors 0-2 exist, and nothing but
 * them (and a socket systemd passed) is inherited. */
static int take_descriptors(int *systemd_fd)
{
	*systemd_fd = listener_from_systemd();
	if (*systemd_fd == -2)
		return -1;
	lifecycle_close_fds_except(systemd_fd, *systemd_fd >= 0 ? 1 : 0);
	return 0;
}

int main(int argc, char *argv[])
{
	struct server *s = &server;
	struct supervisor *supervisor = NULL;
	int systemd_fd = -1;

	s->listen_fd = s->ready_fd = -1;
	s->uid = (uid_t)-1;
	s->gid = (gid_t)-1;
	s->data_id.fd = -1;
	if (lifecycle_open_stdio() != 0)
		return EXIT_FAILURE;
	switch (options_parse(&s->opts, argc, argv, stdout, stderr)) {
	case OPTIONS_EXIT_OK:
		return EXIT_SUCCESS;
	case OPTIONS_USAGE_ERROR:
		return 2;
	case OPTIONS_RUN:
		break;
	}
	if (take_descriptors(&systemd_fd) != 0)
		return EXIT_FAILURE;
	log_open(s->opts.log_to_stderr);
	if (start(s, systemd_fd) != 0 || !(supervisor = start_serving(s))) {
		lifecycle_report_ready(s->ready_fd, false);
		if (lifecycle_stop_requested())
			log_msg(LOG_INFO, "Caught signal, exiting");
		clean_up(s);
		return lifecycle_stop_requested() ? EXIT_SUCCESS : EXIT_FAILURE;
	}
	log_msg(LOG_INFO, "Serving on port %u with %u workers, up to %u connections and %lu bytes of buffers",
		listener_port(s->listen_fd), s->opts.workers,
		s->opts.max_connections, s->opts.buffer_budget);
	lifecycle_report_ready(s->ready_fd, true);
	log_startup_done();
	/* in the log, not on stderr: a choice, not a failure to start */
	if (!s->opts.syscall_filter)
		log_msg(LOG_WARNING, "The system call filter is off (--no-syscall-filter): a worker taken over by a client can make any system call its user may");
	supervisor_run(supervisor);
	log_msg(LOG_INFO, "Caught signal, exiting");
	close(s->listen_fd);
	s->listen_fd = -1;
	supervisor_stop(supervisor);	/* the workers close their connections */
	clean_up(s);
	return EXIT_SUCCESS;
}
