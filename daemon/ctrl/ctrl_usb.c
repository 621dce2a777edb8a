/* struct ctrl_io over libusb's asynchronous control transfers (ctrl_usb.h). */
#include "ctrl_usb.h"

#include <stdlib.h>
#include <string.h>

struct ctrl_usb {
	struct ctrl *ctrl;
	libusb_device_handle *handle;
	struct ctrl_usb_hooks hooks;
	struct libusb_transfer *xfer;
	uint8_t *in_buf; /* where IN data goes */
	bool busy;
	uint8_t buf[LIBUSB_CONTROL_SETUP_SIZE + CTRL_TRANSFER_MAX];
};

static enum ctrl_io_status io_status(enum libusb_transfer_status st)
{
	switch (st) {
	case LIBUSB_TRANSFER_COMPLETED:
		return CTRL_IO_OK;
	case LIBUSB_TRANSFER_STALL:
		return CTRL_IO_STALL;
	case LIBUSB_TRANSFER_TIMED_OUT:
		return CTRL_IO_TIMEOUT;
	case LIBUSB_TRANSFER_NO_DEVICE:
		return CTRL_IO_GONE;
	case LIBUSB_TRANSFER_CANCELLED:
		return CTRL_IO_CANCELLED;
	default:
		return CTRL_IO_ERROR;
	}
}

static const char *status_text(enum libusb_transfer_status st)
{
	return libusb_error_name(st == LIBUSB_TRANSFER_COMPLETED   ? LIBUSB_SUCCESS
				 : st == LIBUSB_TRANSFER_STALL	   ? LIBUSB_ERROR_PIPE
				 : st == LIBUSB_TRANSFER_TIMED_OUT ? LIBUSB_ERROR_TIMEOUT
				 : st == LIBUSB_TRANSFER_NO_DEVICE ? LIBUSB_ERROR_NO_DEVICE
				 : st == LIBUSB_TRANSFER_OVERFLOW  ? LIBUSB_ERROR_OVERFLOW
								   : LIBUSB_ERROR_IO);
}

static void LIBUSB_CALL on_transfer(struct libusb_transfer *xfer)
{
	struct ctrl_usb *u = xfer->user_data;
	u->busy = false;
	if (u->hooks.in_flight)
		u->hooks.in_flight(u->hooks.userdata, -1);
	size_t actual = xfer->actual_length > 0 ? (size_t)xfer->actual_length : 0;
	if (u->in_buf && actual)
		memcpy(u->in_buf, libusb_control_transfer_get_data(xfer), actual);
	enum ctrl_io_status st = io_status(xfer->status);
	ctrl_io_complete(u->ctrl, st, actual, st == CTRL_IO_OK ? NULL : status_text(xfer->status));
}

static int usb_submit(void *ctx, const struct ctrl_setup *s, uint8_t *buf, unsigned timeout_ms,
		      enum ctrl_io_status *status)
{
	struct ctrl_usb *u = ctx;
	if (s->length > CTRL_TRANSFER_MAX) {
		*status = CTRL_IO_ERROR;
		return -1;
	}
	libusb_fill_control_setup(u->buf, s->request_type, s->request, s->value, s->index,
				  s->length);
	bool in = s->request_type & LIBUSB_ENDPOINT_IN;
	if (!in && s->length)
		memcpy(u->buf + LIBUSB_CONTROL_SETUP_SIZE, buf, s->length);
	u->in_buf = in ? buf : NULL;
	libusb_fill_control_transfer(u->xfer, u->handle, u->buf, on_transfer, u, timeout_ms);
	int r = libusb_submit_transfer(u->xfer);
	if (r < 0) {
		*status = r == LIBUSB_ERROR_NO_DEVICE ? CTRL_IO_GONE : CTRL_IO_ERROR;
		return -1;
	}
	u->busy = true;
	if (u->hooks.in_flight)
		u->hooks.in_flight(u->hooks.userdata, +1);
	return 0;
}

static void usb_cancel(void *ctx)
{
	struct ctrl_usb *u = ctx;
	if (u->busy)
		libusb_cancel_transfer(u->xfer);
}

static void usb_release(void *ctx)
{
	struct ctrl_usb *u = ctx;
	struct ctrl_usb_hooks hooks = u->hooks;
	libusb_free_transfer(u->xfer);
	free(u);
	if (hooks.released)
		hooks.released(hooks.userdata);
}

struct ctrl *ctrl_open_usb(struct event_base *base, libusb_device_handle *handle,
			   const struct ctrl_usb_hooks *hooks, const struct ctrl_options *opt,
			   struct error *err)
{
	struct ctrl_usb *u = calloc(1, sizeof(*u));
	if (u)
		u->xfer = libusb_alloc_transfer(0);
	if (!u || !u->xfer) {
		free(u);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	u->handle = handle;
	if (hooks)
		u->hooks = *hooks;
	struct ctrl_io io = {usb_submit, usb_cancel, usb_release, u};
	u->ctrl = ctrl_new(base, io, opt);
	if (!u->ctrl) {
		u->hooks.released = NULL; /* the handle stays the caller's on failure */
		usb_release(u);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	return u->ctrl;
}
