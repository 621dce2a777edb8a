/*
 * Mode switches (mode_switch.h).  The DFU leave:
 *
 *   OPENING (retry while libusb does not list the device yet) -> STATUS
 *   (dfuse_open) -> LEAVE (dfuse_leave) -> DONE
 */
#include "mode_switch.h"

#include "dfuse.h"
#include "port.h"
#include "usb.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#define DFU_RESET_OPEN_RETRY_MS 100
#define DFU_RESET_OPEN_RETRIES	50 /* udev can announce the node before libusb lists it */
#define DFU_RESET_PATH_MAX	256

enum reset_state {
	RESET_OPENING,
	RESET_STATUS,
	RESET_LEAVE,
	RESET_DONE,
};

struct dfu_leave {
	struct event_base *base;
	enum reset_state state;
	unsigned busnum, devnum;
	char devnode[DFU_RESET_PATH_MAX];
	struct usb_dfu_dev *usb;
	struct dfuse *dfuse;
	struct event *timer, *kick;
	unsigned open_retries;
	struct error err;
	dfu_leave_done_fn done;
	void *ctx;
};

static void release(struct dfu_leave *x)
{
	usb_dfu_close(x->usb); /* detaches the dfuse first */
	x->usb = NULL;
	dfuse_free(x->dfuse);
	x->dfuse = NULL;
}

static void finish(struct dfu_leave *x, struct error *err)
{
	if (x->state == RESET_DONE)
		return;
	x->state = RESET_DONE;
	evtimer_del(x->timer);
	if (err)
		error_move(&x->err, err);
	/* docs/device/dfuse.md#requests-and-states: nothing more is sent after the leave */
	release(x);
	event_active(x->kick, 0, 0);
}

static void on_dfuse_done(struct dfuse *s, int result, struct error *err, void *userdata)
{
	(void)s;
	struct dfu_leave *x = userdata;
	struct error e;
	error_init(&e);
	if (result < 0) {
		finish(x, err);
		return;
	}
	if (x->state == RESET_STATUS) {
		x->state = RESET_LEAVE;
		if (dfuse_leave(x->dfuse, on_dfuse_done, x, &e) < 0)
			finish(x, &e);
		return;
	}
	finish(x, NULL);
}

static void try_open(struct dfu_leave *x)
{
	struct error e;
	error_init(&e);
	struct dfu_descriptors desc;
	struct usb_loop *loop = usb_loop_daemon();
	if (!loop) {
		error_set(&e, ERR_INTERNAL,
			  "no USB transport holds a libusb context (their init() failed or did not "
			  "run), so the device cannot be taken out of DFU mode");
		finish(x, &e);
		return;
	}
	if (usb_dfu_open(loop, x->busnum, x->devnum, x->devnode, &x->usb, &desc, &e) < 0) {
		if (e.code == ERR_DEVICE_GONE && ++x->open_retries < DFU_RESET_OPEN_RETRIES) {
			error_clear(&e);
			struct timeval tv = {0, DFU_RESET_OPEN_RETRY_MS * 1000};
			evtimer_add(x->timer, &tv);
			return;
		}
		finish(x, &e);
		return;
	}
	struct dfu_io io = usb_dfu_io(x->usb);
	x->dfuse = dfuse_new(x->base, &io, &desc);
	if (!x->dfuse) {
		error_set(&e, ERR_OUT_OF_MEMORY, NULL);
		finish(x, &e);
		return;
	}
	usb_dfu_attach(x->usb, x->dfuse);
	x->state = RESET_STATUS;
	if (dfuse_open(x->dfuse, on_dfuse_done, x, &e) < 0)
		finish(x, &e);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfu_leave *x = arg;
	if (x->state == RESET_OPENING)
		try_open(x);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfu_leave *x = arg;
	x->done(x->ctx, error_is_set(&x->err) ? &x->err : NULL);
}

struct dfu_leave *mode_switch_dfu_leave(struct event_base *base, unsigned busnum, unsigned devnum,
					const char *devnode, dfu_leave_done_fn done, void *ctx,
					struct error *err)
{
	struct dfu_leave *x = calloc(1, sizeof(*x));
	if (!x) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	x->base = base;
	x->busnum = busnum;
	x->devnum = devnum;
	snprintf(x->devnode, sizeof(x->devnode), "%s", devnode ? devnode : "");
	x->done = done;
	x->ctx = ctx;
	error_init(&x->err);
	x->timer = evtimer_new(base, on_timer, x);
	x->kick = event_new(base, -1, 0, on_kick, x);
	if (!x->timer || !x->kick) {
		mode_switch_dfu_leave_free(x);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	x->state = RESET_OPENING;
	struct timeval tv = {0, 0};
	evtimer_add(x->timer, &tv); /* from the loop: done never runs inside this call */
	return x;
}

void mode_switch_dfu_leave_free(struct dfu_leave *x)
{
	if (!x)
		return;
	release(x);
	if (x->timer)
		event_free(x->timer);
	if (x->kick)
		event_free(x->kick);
	error_clear(&x->err);
	free(x);
}

/* ---- line codings ---------------------------------------------------------- */

int mode_switch_listening(struct serial_port *port, struct error *err)
{
	if (serial_port_set_baud(port, 9600, err) < 0)
		return -1;
	return serial_port_set_baud(port, MODE_SWITCH_BAUD_LISTEN, err);
}

static int dfu_on_port(struct serial_port *port, struct error *err)
{
	return serial_port_set_baud(port, MODE_SWITCH_BAUD_DFU, err);
}

int mode_switch_dfu(const char *tty, const char *lock_dir, struct error *err)
{
	struct serial_port *port;
	if (serial_port_open(tty, lock_dir, &port, err) < 0) {
		if (err->code == ERR_DEVICE_NOT_FOUND) {
			error_clear(err);
			error_set(err, ERR_DEVICE_GONE, "cannot open %s to switch it to DFU mode",
				  tty);
		}
		return -1;
	}
	int r = dfu_on_port(port, err);
	serial_port_close(port);
	if (r < 0) {
		error_prefix(err, "switching %s to DFU mode: ", tty);
		if (err->code == ERR_TRANSFER_FAILED)
			error_detail_str(err, "phase", "switching-mode");
	}
	return r;
}
