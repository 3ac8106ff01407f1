/* channel: fixed-size messages and descriptors between parent and worker. */
#include "channel.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int channel_pair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC |
			  SOCK_NONBLOCK, 0, fds);
}

int channel_send(int channel, const struct channel_msg *msg, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { (void *)msg, sizeof(*msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&control, 0, sizeof(control));
		mh.msg_control = control.buf;
		mh.msg_controllen = sizeof(control.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	do {
		n = sendmsg(channel, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*msg) ? 0 : -1;
}

/* Takes the descriptors a message carried: the first one goes to *kept
 * when kept is not NULL, every other one is closed.  Returns how many
 * there were. */
static size_t take_passed_fds(struct msghdr *mh, int *kept)
{
	struct cmsghdr *cm;
	size_t total = 0;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t i, count;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < count; i++, total++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (kept && total == 0)
				*kept = fd;
			else
				close(fd);
		}
	}
	return total;
}

int channel_receive(int channel, struct channel_msg *msg, int *fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = { msg, sizeof(*msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf) };
	int passed = -1;
	size_t count;
	ssize_t n;

	if (fd)
		*fd = -1;
	do {
		n = recvmsg(channel, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n <= 0)
		return (int)n;
	count = take_passed_fds(&mh, fd ? &passed : NULL);
	if (n != (ssize_t)sizeof(*msg) || (mh.msg_flags & (MSG_TRUNC |
	    MSG_CTRUNC)) || (!fd && count > 0)) {
		if (passed >= 0)
			close(passed);
		errno = EBADMSG;
		return -1;
	}
	if (fd)
		*fd = passed;
	msg->peer[sizeof(msg->peer) - 1] = '\0';
	return 1;
}
