/* worker: one connection process, serving one connection at a time. */
#include "worker.h"

#include "channel.h"
#include "lifecycle.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

/* A closed channel (EPIPE) is the parent letting go of this worker, as
 * when the service stops: nothing went wrong, so nothing is logged. */
static void log_report_failure(void)
{
	if (errno != EPIPE)
		log_errno("Cannot report to the parent process");
}

/* Everything up to READY: only the channel and the data file stay open,
 * and the data file is reopened after the privilege drop, so that the
 * worker has exactly its user's access to it (and needs no capability
 * beyond switching users, as under the systemd unit). */
static int get_ready(const struct worker_setup *w, struct store *store)
{
	int keep[2] = { w->channel, w->data_id->fd };
	struct store_identity id = *w->data_id;
	const struct channel_msg ready = { .command = CHANNEL_READY };

	if (keep[0] > keep[1]) {
		keep[0] = w->data_id->fd;
		keep[1] = w->channel;
	}
	lifecycle_close_fds_except(keep, 2);
	log_reopen();
	if (w->user && lifecycle_drop_privileges(w->user, w->uid, w->gid) != 0)
		return -1;
	/* If the parent dies, stop as if it had told us to.  (Set after the
	 * privilege drop, which clears it.) */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != w->parent)
		return -1;
	if (store_open(store, w->data_file, &id) != 0)
		return -1;
	store_release(&id);
	if (channel_send(w->channel, &ready, -1) != 0) {
		log_report_failure();
		store_close(store);
		return -1;
	}
	return 0;
}

/* Waits for the parent's next message; false when it is time to end. */
static bool next_assignment(int channel, struct channel_msg *msg, int *fd)
{
	struct pollfd pfd = { .fd = channel, .events = POLLIN };
	int n;

	do {
		if (lifecycle_stop_requested())
			return false;
		/* Nothing is waiting right after a report: wait first. */
		if (ppoll(&pfd, 1, NULL, lifecycle_wait_mask()) < 0 &&
		    errno != EINTR)
			return false;
		n = channel_receive(channel, msg, fd);
	} while (n < 0 && (errno == EAGAIN || errno == EINTR));
	if (n > 0 && msg->command == CHANNEL_ASSIGN && *fd >= 0)
		return true;
	if (n > 0) {
		log_msg(LOG_ERR, "Unexpected message %u from the parent process",
			(unsigned)msg->command);
		if (*fd >= 0)
			close(*fd);
	}
	return false;	/* retired, or the parent is gone */
}

static void serve_until_retired(const struct worker_setup *w,
				struct store *store)
{
	struct framer framer;
	/* The parent closing the channel stops a turn too: it may lack the
	 * capability to signal a worker that runs as another user. */
	const struct turn_context context = { store, &framer, w->limits,
					      w->channel };
	struct channel_msg msg;
	int fd;

	framer_init(&framer, w->limits->max_packet);
	while (next_assignment(w->channel, &msg, &fd)) {
		struct channel_msg report = { .conn = msg.conn };

		report.command = connection_serve_turn(fd, msg.peer,
						       msg.deadline_ms,
						       &context) == TURN_IDLE ?
					 CHANNEL_IDLE : CHANNEL_CLOSE;
		if (channel_send(w->channel, &report, -1) != 0) {
			log_report_failure();
			break;
		}
	}
	framer_free(&framer);
}

void worker_run(const struct worker_setup *w)
{
	struct store store;

	if (get_ready(w, &store) != 0)
		_exit(WORKER_CANNOT_START);
	serve_until_retired(w, &store);
	store_close(&store);
	log_close();
	_exit(EXIT_SUCCESS);
}
