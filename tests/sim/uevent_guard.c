/*
 * Guard against a race in libumockdev 0.17.16's uevent sender: it connects to
 * each client's event socket, then sendmsg()s, and abort()s when the client
 * closed its monitor in between (ECONNREFUSED on sendmsg; the connect path
 * already ignores it, and umockdev 0.17.17 ignores both).  dfu-util or libusb
 * closing a monitor while the simulator removes a device is enough, so the
 * simulator died now and then (often under valgrind).
 *
 * flashd-sim's own sendmsg() interposes the library's (the executable comes
 * first in symbol lookup): a datagram to a named Unix address whose reader
 * is gone counts as sent, as the newer umockdev does.
 *
 * A full reader (EAGAIN: a Unix datagram socket queues net.unix.max_dgram_qlen,
 * 10, datagrams) is waited for, up to UEVENT_WAIT_MS: the library retries for
 * 15 ms and then exits, and 32 devices re-enumerating at once (5 uevents each)
 * outran a host whose loop was busy for that long.  The kernel never fails a
 * uevent for a slow listener, and a libudev monitor's receive buffer holds far
 * more than a burst of them: waiting is the nearer model.  Every other call
 * and error goes through unchanged.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

#define UEVENT_WAIT_MS 10000

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	static sendmsg_fn next;
	if (!next)
		next = (sendmsg_fn)dlsym(RTLD_NEXT, "sendmsg");
	if (!next) {
		errno = ENOSYS;
		return -1;
	}
	ssize_t n = next(fd, msg, flags);
	bool named_unix =
	    msg && msg->msg_name && ((const struct sockaddr *)msg->msg_name)->sa_family == AF_UNIX;
	for (int waited = 0; n < 0 && errno == EAGAIN && named_unix && waited < UEVENT_WAIT_MS;
	     waited += 10) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		poll(&p, 1, 10);
		n = next(fd, msg, flags);
	}
	if (n < 0 && errno == ECONNREFUSED && named_unix) {
		ssize_t len = 0;
		for (size_t i = 0; i < msg->msg_iovlen; i++)
			len += (ssize_t)msg->msg_iov[i].iov_len;
		return len;
	}
	return n;
}
