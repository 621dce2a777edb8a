/* libusb-1.0 inside the libevent loop (usb_loop.h). */
#include "usb_loop.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>

/* libusb's fds: its event fd, its timer fd and one per open device.  A station has
 * dozens of boards open at once (a DFU job holds its handle for the whole write); past
 * this many the timer polls every fd every 10 ms instead, which adds up to 10 ms to
 * every transfer of every device (at 32 boards in DFU at once, 34 fds did). */
#define USB_MAX_POLLFDS 512
/* How often libusb is polled while a transfer is in flight on an fd that epoll refuses. */
#define USB_UNWATCHABLE_POLL_US 1000

struct usb_pollfd {
	int fd;
	struct event *ev; /* NULL when the loop refused the fd (unwatched) */
};

struct usb_loop {
	struct event_base *base;
	libusb_context *ctx;
	struct usb_pollfd fds[USB_MAX_POLLFDS];
	unsigned n_fds;
	struct event *timer;
	bool overflow;	    /* more fds than USB_MAX_POLLFDS: the timer polls instead */
	unsigned unwatched; /* fds epoll refused (EPERM: regular files, e.g. under umockdev) */
	unsigned in_flight; /* transfers submitted and not completed */
};

static void update_timer(struct usb_loop *l);

static void handle_events(struct usb_loop *l)
{
	struct timeval zero = {0, 0};
	libusb_handle_events_timeout_completed(l->ctx, &zero, NULL);
	update_timer(l);
}

static void on_fd(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	handle_events(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	handle_events(arg);
}

/* Arms the timer for libusb's next transfer timeout when it has no timerfd. */
static void update_timer(struct usb_loop *l)
{
	struct timeval tv;
	if (l->overflow) {
		tv = (struct timeval){0, 10000};
		evtimer_add(l->timer, &tv);
		return;
	}
	if (l->unwatched && l->in_flight) {
		/* An fd the loop cannot watch is always ready (poll(2) semantics of a regular
		 * file): poll libusb on a short timer, only while a transfer waits. */
		tv = (struct timeval){0, USB_UNWATCHABLE_POLL_US};
		evtimer_add(l->timer, &tv);
		return;
	}
	if (libusb_pollfds_handle_timeouts(l->ctx))
		return;
	int r = libusb_get_next_timeout(l->ctx, &tv);
	if (r == 1)
		evtimer_add(l->timer, &tv);
	else
		evtimer_del(l->timer);
}

static void unwatch(struct usb_loop *l, struct usb_pollfd *p)
{
	if (p->ev)
		event_free(p->ev);
	else if (l->unwatched)
		l->unwatched--;
	p->ev = NULL;
}

static void on_pollfd_added(int fd, short events, void *user_data)
{
	struct usb_loop *l = user_data;
	short what = EV_PERSIST;
	/* Ask only for what libusb asks for (docs/testing/umockdev.md#control-transfers: a pty is
	 * always writable). */
	if (events & POLLIN)
		what |= EV_READ;
	if (events & POLLOUT)
		what |= EV_WRITE;
	struct usb_pollfd *p = NULL;
	for (unsigned i = 0; i < l->n_fds && !p; i++)
		if (l->fds[i].fd == fd)
			p = &l->fds[i];
	if (p) {
		unwatch(l, p);
	} else {
		if (l->n_fds >= USB_MAX_POLLFDS) {
			l->overflow = true;
			update_timer(l);
			return;
		}
		p = &l->fds[l->n_fds++];
		p->fd = fd;
		p->ev = NULL;
	}
	p->ev = event_new(l->base, fd, what, on_fd, l);
	if (p->ev && event_add(p->ev, NULL) < 0) {
		/* epoll refuses regular files (EPERM); umockdev's usbfs nodes can be one. */
		event_free(p->ev);
		p->ev = NULL;
	}
	if (!p->ev)
		l->unwatched++;
	update_timer(l);
}

static void on_pollfd_removed(int fd, void *user_data)
{
	struct usb_loop *l = user_data;
	for (unsigned i = 0; i < l->n_fds; i++) {
		if (l->fds[i].fd != fd)
			continue;
		unwatch(l, &l->fds[i]);
		l->fds[i] = l->fds[--l->n_fds];
		return;
	}
}

void usb_loop_in_flight(struct usb_loop *l, int delta)
{
	if (delta > 0)
		l->in_flight++;
	else if (l->in_flight)
		l->in_flight--;
	update_timer(l);
}

/* The daemon's context: set by the DFU transport's init(), cleared by its exit(). */
/* The daemon's one context and how many transports hold it (usb_loop_acquire()). */
static struct usb_loop *daemon_loop;
static unsigned daemon_holders;

struct usb_loop *usb_loop_daemon(void)
{
	return daemon_loop;
}

struct usb_loop *usb_loop_new(struct event_base *base, struct error *err)
{
	struct usb_loop *l = calloc(1, sizeof(*l));
	if (!l) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	l->base = base;
	int r = libusb_init(&l->ctx);
	if (r < 0) {
		error_set(err, ERR_INTERNAL, "libusb could not start: %s", libusb_error_name(r));
		error_detail_str(err, "reason", libusb_error_name(r));
		free(l);
		return NULL;
	}
	l->timer = evtimer_new(base, on_timer, l);
	if (!l->timer) {
		usb_loop_free(l);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	libusb_set_pollfd_notifiers(l->ctx, on_pollfd_added, on_pollfd_removed, l);
	const struct libusb_pollfd **fds = libusb_get_pollfds(l->ctx);
	for (size_t i = 0; fds && fds[i]; i++)
		on_pollfd_added(fds[i]->fd, fds[i]->events, l);
	libusb_free_pollfds(fds);
	return l;
}

void usb_loop_free(struct usb_loop *l)
{
	if (!l)
		return;
	libusb_set_pollfd_notifiers(l->ctx, NULL, NULL, NULL);
	for (unsigned i = 0; i < l->n_fds; i++)
		unwatch(l, &l->fds[i]);
	if (l->timer)
		event_free(l->timer);
	libusb_exit(l->ctx);
	free(l);
}

libusb_context *usb_loop_context(struct usb_loop *l)
{
	return l->ctx;
}

libusb_device *usb_loop_find(struct usb_loop *l, unsigned busnum, unsigned devnum)
{
	libusb_device **list = NULL;
	libusb_device *dev = NULL;
	ssize_t n = libusb_get_device_list(l->ctx, &list);
	for (ssize_t i = 0; i < n; i++) {
		if (libusb_get_bus_number(list[i]) == busnum &&
		    libusb_get_device_address(list[i]) == devnum) {
			dev = libusb_ref_device(list[i]);
			break;
		}
	}
	libusb_free_device_list(list, 1);
	return dev;
}

struct usb_loop *usb_loop_acquire(struct event_base *base, struct error *err)
{
	if (!daemon_loop) {
		daemon_loop = usb_loop_new(base, err);
		if (!daemon_loop)
			return NULL;
	}
	daemon_holders++;
	return daemon_loop;
}

void usb_loop_release(void)
{
	if (daemon_holders == 0 || --daemon_holders > 0)
		return;
	usb_loop_free(daemon_loop);
	daemon_loop = NULL;
}
