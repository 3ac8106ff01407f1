/*
 * aesdsocket: wires the modules together in the order the design needs.
 * Bind first, so a second instance fails before touching anything; then
 * prepare the data file, detach, write the pidfile, start the workers (which
 * drop root with --user), and only then report "ready" -- so
 * `aesdsocket -d` returning 0 means the port accepts connections.
 */
#include "lifecycle.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "pool.h"
#include "store.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

struct server {
	struct options opts;
	int listen_fd;
	int ready_fd;		/* to the waiting foreground process (-d) */
	uid_t uid;
	gid_t gid;
	struct store_identity data_id;	/* fd -1 until the file exists */
};

static int open_listener(struct server *s)
{
	int fd = listener_from_systemd();

	if (fd == -2)
		return -1;
	if (fd < 0)
		fd = listener_open(s->opts.bind_address, s->opts.port);
	if (fd < 0)
		return -1;
	/* Workers race for each connection; the losers must not block. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
	    listener_disable_nagle(fd) != 0) {
		log_errno("Cannot configure the listening socket");
		close(fd);
		return -1;
	}
	s->listen_fd = fd;
	return 0;
}

/* Everything up to serving; on failure the caller cleans up. */
static int start(struct server *s)
{
	if (lifecycle_setup_signals() != 0 || open_listener(s) != 0)
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
	return 0;
}

static struct pool *start_pool(struct server *s)
{
	struct pool_config config = {
		.listen_fd = s->listen_fd,
		.data_file = s->opts.data_file,
		.data_id = s->data_id,
		.limits = {
			.max_packet = s->opts.max_packet,
			.idle_timeout_s = s->opts.idle_timeout_s,
			.send_timeout_s = s->opts.send_timeout_s,
		},
		.max_workers = s->opts.max_connections,
		.user = s->opts.user,
		.uid = s->uid,
		.gid = s->gid,
	};

	return pool_start(&config);
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

int main(int argc, char *argv[])
{
	struct server s = { .listen_fd = -1, .ready_fd = -1,
			    .uid = (uid_t)-1, .gid = (gid_t)-1,
			    .data_id = { .fd = -1 } };
	struct pool *pool = NULL;
	int rc;

	switch (options_parse(&s.opts, argc, argv, stdout, stderr)) {
	case OPTIONS_EXIT_OK:
		return EXIT_SUCCESS;
	case OPTIONS_USAGE_ERROR:
		return 2;
	case OPTIONS_RUN:
		break;
	}
	log_open(s.opts.log_to_stderr);
	if (start(&s) != 0 || !(pool = start_pool(&s))) {
		lifecycle_report_ready(s.ready_fd, false);
		clean_up(&s);
		return EXIT_FAILURE;
	}
	log_msg(LOG_INFO, "Serving on port %u with up to %u connections",
		listener_port(s.listen_fd), s.opts.max_connections);
	lifecycle_report_ready(s.ready_fd, true);
	log_startup_done();
	rc = pool_run(pool);
	if (lifecycle_stop_requested())
		log_msg(LOG_INFO, "Caught signal, exiting");
	close(s.listen_fd);	/* stop accepting; workers close their copies */
	s.listen_fd = -1;
	pool_stop(pool);
	clean_up(&s);
	return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
