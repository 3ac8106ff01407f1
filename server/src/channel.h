/*
 * channel: how the parent and one worker talk, and the only way they do
 * (after nginx's ngx_channel).  Each worker has its own SOCK_SEQPACKET
 * socketpair with the parent, so the parent knows which worker a message
 * comes from.  Messages are one fixed-size struct: the parent sends ASSIGN
 * with the connection's descriptor (SCM_RIGHTS); the worker answers READY
 * once, then IDLE or CLOSE for each connection it was given.  The parent
 * treats what a worker sends as a request to check against its own
 * records, and never accepts a descriptor from a worker.
 */
#ifndef AESD_CHANNEL_H
#define AESD_CHANNEL_H

#include "listener.h"

#include <stdint.h>

enum channel_command {
	CHANNEL_READY = 1,	/* worker: set up, waiting for a connection */
	CHANNEL_ASSIGN,		/* parent: serve this connection (fd passed) */
	CHANNEL_IDLE,		/* worker: at a packet boundary, hand it back */
	CHANNEL_CLOSE,		/* worker: finished with it; close it */
};

struct channel_msg {
	uint32_t command;
	uint32_t conn;		/* the parent's id of the connection */
	int64_t deadline_ms;	/* ASSIGN: next packet due (mstime), 0 = none */
	char peer[PEER_NAME_LEN];	/* ASSIGN: the client, for log lines */
};

/* fds[0] is the parent's end, fds[1] the worker's; both close-on-exec
 * and non-blocking. */
int channel_pair(int fds[2]);

/* Sends one message, with fd attached unless it is -1. */
int channel_send(int channel, const struct channel_msg *msg, int fd);

/* Receives one message.  With fd NULL, descriptors are refused (a message
 * carrying one is malformed); otherwise *fd is the one passed, or -1.
 * Returns 1 for a message, 0 when the peer has closed, -1 on error with
 * errno set (EAGAIN: nothing yet; EBADMSG: malformed, discarded). */
int channel_receive(int channel, struct channel_msg *msg, int *fd);

#endif
