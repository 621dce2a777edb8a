#include "usb.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define USB_MAX_POLLFDS 32 /* libusb uses a handful: event fd, timer fd, one per open device */
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

struct usb_dfu_dev {
	struct usb_loop *loop;
	libusb_device_handle *handle;
	uint8_t interface;
	struct libusb_transfer *xfer;
	uint8_t buf[LIBUSB_CONTROL_SETUP_SIZE + DFUSE_MAX_TRANSFER];
	bool busy;    /* a transfer is in flight */
	bool closing; /* close requested while busy */
	bool claimed;
	struct dfuse *dfuse;
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

struct usb_loop *usb_loop_shared(struct event_base *base, struct error *err)
{
	static struct usb_loop *shared;
	if (!shared)
		shared = usb_loop_new(base, err);
	return shared;
}

struct usb_loop *usb_loop_new(struct event_base *base, struct error *err)
{
	struct usb_loop *l = calloc(1, sizeof(*l));
	if (!l) {
		error_set(err, ERR_INTERNAL, "out of memory");
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

/* ---- one DFU device ----------------------------------------------------------------- */

static void close_now(struct usb_dfu_dev *d)
{
	if (d->claimed)
		libusb_release_interface(d->handle, d->interface);
	if (d->handle)
		libusb_close(d->handle);
	libusb_free_transfer(d->xfer);
	free(d);
}

static int transfer_status(enum libusb_transfer_status st)
{
	switch (st) {
	case LIBUSB_TRANSFER_COMPLETED:
		return 0;
	case LIBUSB_TRANSFER_STALL:
		return LIBUSB_ERROR_PIPE;
	case LIBUSB_TRANSFER_NO_DEVICE:
		return LIBUSB_ERROR_NO_DEVICE;
	case LIBUSB_TRANSFER_TIMED_OUT:
		return LIBUSB_ERROR_TIMEOUT;
	case LIBUSB_TRANSFER_OVERFLOW:
		return LIBUSB_ERROR_OVERFLOW;
	case LIBUSB_TRANSFER_CANCELLED:
		return LIBUSB_ERROR_INTERRUPTED;
	case LIBUSB_TRANSFER_ERROR:
	default:
		return LIBUSB_ERROR_IO;
	}
}

static void LIBUSB_CALL on_transfer(struct libusb_transfer *xfer)
{
	struct usb_dfu_dev *d = xfer->user_data;
	d->busy = false;
	if (d->loop->in_flight)
		d->loop->in_flight--;
	if (d->closing) {
		close_now(d);
		return;
	}
	if (!d->dfuse)
		return;
	int st = transfer_status(xfer->status);
	dfuse_transfer_done(d->dfuse, st, libusb_control_transfer_get_data(xfer),
			    st == 0 ? (size_t)xfer->actual_length : 0);
}

static int usb_control(void *ctx, const struct dfu_setup *s, const uint8_t *out,
		       unsigned timeout_ms)
{
	struct usb_dfu_dev *d = ctx;
	if (d->busy)
		return LIBUSB_ERROR_BUSY;
	if (s->length > DFUSE_MAX_TRANSFER)
		return LIBUSB_ERROR_INVALID_PARAM;
	libusb_fill_control_setup(d->buf, s->request_type, s->request, s->value, s->index,
				  s->length);
	if (!(s->request_type & LIBUSB_ENDPOINT_IN) && s->length && out)
		memcpy(d->buf + LIBUSB_CONTROL_SETUP_SIZE, out, s->length);
	libusb_fill_control_transfer(d->xfer, d->handle, d->buf, on_transfer, d, timeout_ms);
	int r = libusb_submit_transfer(d->xfer);
	if (r < 0)
		return r;
	d->busy = true;
	d->loop->in_flight++;
	update_timer(d->loop);
	return 0;
}

static int read_descriptors(libusb_device *dev, struct dfu_descriptors *desc, uint8_t *interface,
			    struct error *err)
{
	struct libusb_device_descriptor dd;
	struct libusb_config_descriptor *cfg = NULL;
	memset(desc, 0, sizeof(*desc));
	/* Both are served from libusb's enumeration-time copy: no bus traffic. */
	int r = libusb_get_device_descriptor(dev, &dd);
	if (r == 0)
		r = libusb_get_config_descriptor(dev, 0, &cfg);
	if (r < 0)
		return dfu_usb_error_set(err, r, "reading descriptors");
	desc->vid = dd.idVendor;
	desc->pid = dd.idProduct;
	desc->bcd_device = dd.bcdDevice;
	desc->i_serial = dd.iSerialNumber;
	bool found = false;
	for (int i = 0; i < cfg->bNumInterfaces && !found; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];
		for (int a = 0; a < itf->num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &itf->altsetting[a];
			if (alt->bInterfaceClass != 0xfe || alt->bInterfaceSubClass != 0x01)
				continue;
			found = true;
			*interface = alt->bInterfaceNumber;
			if (desc->n_alts < DFUSE_MAX_ALTS &&
			    alt->bAlternateSetting < DFUSE_MAX_ALTS) {
				desc->alt_string[alt->bAlternateSetting] = alt->iInterface;
				if (alt->bAlternateSetting + 1 > desc->n_alts)
					desc->n_alts = (uint8_t)(alt->bAlternateSetting + 1);
			}
			if (!desc->has_functional && alt->extra)
				dfu_descriptors_parse_functional(desc, alt->extra,
								 (size_t)alt->extra_length);
		}
	}
	/* Some devices put the functional descriptor after the interfaces. */
	if (!desc->has_functional && cfg->extra)
		dfu_descriptors_parse_functional(desc, cfg->extra, (size_t)cfg->extra_length);
	libusb_free_config_descriptor(cfg);
	desc->interface = *interface;
	if (!found) {
		error_set(err, ERR_DFU_DESCRIPTOR_INVALID, "the device has no DFU interface");
		error_detail_str(err, "reason", "no interface of class FE/01");
		return -1;
	}
	return 0;
}

int usb_dfu_open(struct usb_loop *l, unsigned busnum, unsigned devnum, const char *devnode,
		 struct usb_dfu_dev **ret, struct dfu_descriptors *desc, struct error *err)
{
	libusb_device **list = NULL;
	libusb_device *dev = NULL;
	*ret = NULL;
	ssize_t n = libusb_get_device_list(l->ctx, &list);
	for (ssize_t i = 0; i < n; i++) {
		if (libusb_get_bus_number(list[i]) == busnum &&
		    libusb_get_device_address(list[i]) == devnum) {
			dev = libusb_ref_device(list[i]);
			break;
		}
	}
	libusb_free_device_list(list, 1);
	if (!dev) {
		error_set(err, ERR_DEVICE_GONE,
			  "the DFU device %s is not (or no longer) on the bus",
			  devnode ? devnode : "");
		error_detail_str(err, "phase", "open");
		return -1;
	}
	struct usb_dfu_dev *d = calloc(1, sizeof(*d));
	uint8_t interface = 0;
	int r = d ? read_descriptors(dev, desc, &interface, err) : -1;
	if (!d)
		error_set(err, ERR_INTERNAL, "out of memory");
	if (r == 0) {
		d->loop = l;
		d->interface = interface;
		d->xfer = libusb_alloc_transfer(0);
		r = libusb_open(dev, &d->handle);
		if (r < 0) {
			dfu_usb_error_set(err, r, "opening the DFU device");
			if (r == LIBUSB_ERROR_ACCESS) {
				error_detail_str(err, "path", devnode ? devnode : "");
				error_detail_int(err, "errno", EACCES);
			}
			r = -1;
		}
	}
	if (r == 0) {
		r = libusb_claim_interface(d->handle, interface);
		if (r < 0) {
			dfu_usb_error_set(err, r, "claiming the DFU interface");
			r = -1;
		} else {
			d->claimed = true;
		}
	}
	libusb_unref_device(dev);
	if (r < 0) {
		if (d)
			close_now(d);
		return -1;
	}
	*ret = d;
	return 0;
}

struct dfu_io usb_dfu_io(struct usb_dfu_dev *d)
{
	return (struct dfu_io){usb_control, d};
}

void usb_dfu_attach(struct usb_dfu_dev *d, struct dfuse *s)
{
	d->dfuse = s;
}

void usb_dfu_close(struct usb_dfu_dev *d)
{
	if (!d)
		return;
	d->dfuse = NULL;
	if (d->busy) {
		/* The callback (CANCELLED, or NO_DEVICE when it is gone) finishes the close. */
		d->closing = true;
		if (libusb_cancel_transfer(d->xfer) == 0)
			return;
		/* Not cancellable (the device is gone and usbfs has forgotten the URB): no
		 * callback will come.  libusb_close() drops the transfer from its in-flight
		 * list, after which it may be freed. */
		d->busy = false;
		if (d->loop->in_flight)
			d->loop->in_flight--;
	}
	close_now(d);
}
