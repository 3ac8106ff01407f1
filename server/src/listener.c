/* listener: the listening socket, socket activation and peer names. */
#include "listener.h"

#include "log.h"
#include "options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The kernel caps it at net.core.somaxconn; ask for plenty so bursts of
 * clients wait for a worker instead of being reset. */
#define LISTEN_BACKLOG 4096
#define SD_LISTEN_FDS_START 3

static int set_int_option(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof(value));
}

/* Fills addr with the wildcard address, dual-stack IPv6 if available. */
static int wildcard_address(unsigned port, struct sockaddr_storage *addr,
			    socklen_t *len)
{
	int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(addr, 0, sizeof(*addr));
	if (probe >= 0) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)addr;

		close(probe);
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_any;
		in6->sin6_port = htons((unsigned short)port);
		*len = sizeof(*in6);
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)addr;

		if (errno != EAFNOSUPPORT)
			log_errno("Cannot listen on IPv6, using IPv4: socket(AF_INET6)");
		in4->sin_family = AF_INET;
		in4->sin_addr.s_addr = htonl(INADDR_ANY);
		in4->sin_port = htons((unsigned short)port);
		*len = sizeof(*in4);
	}
	return 0;
}

static int numeric_address(const char *text, unsigned port,
			   struct sockaddr_storage *addr, socklen_t *len)
{
	struct addrinfo hints, *found;
	char service[8];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(text, service, &hints, &found);
	if (rc != 0) {
		log_msg(LOG_ERR, "Cannot listen on '%s': %s", text,
			gai_strerror(rc));
		return -1;
	}
	memcpy(addr, found->ai_addr, found->ai_addrlen);
	*len = found->ai_addrlen;
	freeaddrinfo(found);
	return 0;
}

int listener_open(const char *bind_address, unsigned port)
{
	struct sockaddr_storage addr;
	socklen_t len;
	int fd;

	if (bind_address ? numeric_address(bind_address, port, &addr, &len) :
			   wildcard_address(port, &addr, &len))
		return -1;
	fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_errno("Cannot create the listening socket: socket");
		return -1;
	}
	if (set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1) != 0 ||
	    (addr.ss_family == AF_INET6 && !bind_address &&
	     set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) != 0)) {
		log_errno("Cannot set up the listening socket: setsockopt");
		close(fd);
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&addr, len) != 0) {
		log_errno("Cannot bind to %s port %u: bind",
			  bind_address ? bind_address : "every address", port);
		close(fd);
		return -1;
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		log_errno("Cannot listen on port %u: listen", port);
		close(fd);
		return -1;
	}
	return fd;
}

static int is_listening_stream(int fd)
{
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
		return 0;
	len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
		return 0;
	return type == SOCK_STREAM && listening;
}

int listener_from_systemd(void)
{
	const char *pid_text = getenv("LISTEN_PID");
	const char *fds_text = getenv("LISTEN_FDS");
	unsigned long pid, fds;
	int result = -1;

	if (pid_text && fds_text &&
	    parse_number(pid_text, 1, 0x7fffffffUL, &pid) == 0 &&
	    (pid_t)pid == getpid()) {
		if (parse_number(fds_text, 0, 1024, &fds) != 0 || fds != 1 ||
		    !is_listening_stream(SD_LISTEN_FDS_START)) {
			log_msg(LOG_ERR,
				"Socket activation needs exactly one listening stream socket (LISTEN_FDS=%s)",
				fds_text);
			result = -2;
		} else {
			result = SD_LISTEN_FDS_START;
		}
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return result;
}

int listener_disable_nagle(int fd)
{
	return set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

unsigned listener_port(int fd)
{
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);

	if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
		return 0;
	if (addr.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
	if (addr.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&addr)->sin_port);
	return 0;
}

void listener_peer_name(const struct sockaddr_storage *peer,
			char name[PEER_NAME_LEN])
{
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
	const struct sockaddr_in *in4 = (const struct sockaddr_in *)peer;
	const char *done = NULL;

	if (peer->ss_family == AF_INET) {
		done = inet_ntop(AF_INET, &in4->sin_addr, name, PEER_NAME_LEN);
	} else if (peer->ss_family == AF_INET6 &&
		   IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
		/* the last four bytes are the IPv4 address */
		done = inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], name,
				 PEER_NAME_LEN);
	} else if (peer->ss_family == AF_INET6) {
		done = inet_ntop(AF_INET6, &in6->sin6_addr, name,
				 PEER_NAME_LEN);
	}
	if (!done)
		snprintf(name, PEER_NAME_LEN, "unknown address");
}
