/*
 * DFU leave for another transport (dfu_reset.h):
 *
 *   OPENING (retry while libusb does not list the device yet) -> STATUS
 *   (dfuse_open) -> LEAVE (dfuse_leave) -> DONE
 */
#include "dfu_reset.h"

#include "dfuse.h"
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

struct dfu_reset {
	struct event_base *base;
	enum reset_state state;
	unsigned busnum, devnum;
	char devnode[DFU_RESET_PATH_MAX];
	struct usb_dfu_dev *usb;
	struct dfuse *dfuse;
	struct event *timer, *kick;
	unsigned open_retries;
	struct error err;
	dfu_reset_done_fn done;
	void *ctx;
};

static void release(struct dfu_reset *x)
{
	usb_dfu_close(x->usb); /* detaches the dfuse first */
	x->usb = NULL;
	dfuse_free(x->dfuse);
	x->dfuse = NULL;
}

static void finish(struct dfu_reset *x, struct error *err)
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
	struct dfu_reset *x = userdata;
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

static void try_open(struct dfu_reset *x)
{
	struct error e;
	error_init(&e);
	struct dfu_descriptors desc;
	struct usb_loop *loop = usb_loop_shared(x->base, &e);
	if (!loop) {
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
		error_set(&e, ERR_INTERNAL, "out of memory");
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
	struct dfu_reset *x = arg;
	if (x->state == RESET_OPENING)
		try_open(x);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfu_reset *x = arg;
	x->done(x->ctx, error_is_set(&x->err) ? &x->err : NULL);
}

struct dfu_reset *dfu_reset_start(struct event_base *base, unsigned busnum, unsigned devnum,
				  const char *devnode, dfu_reset_done_fn done, void *ctx,
				  struct error *err)
{
	struct dfu_reset *x = calloc(1, sizeof(*x));
	if (!x) {
		error_set(err, ERR_INTERNAL, "out of memory");
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
		dfu_reset_free(x);
		error_set(err, ERR_INTERNAL, "out of memory");
		return NULL;
	}
	x->state = RESET_OPENING;
	struct timeval tv = {0, 0};
	evtimer_add(x->timer, &tv); /* from the loop: done never runs inside this call */
	return x;
}

void dfu_reset_free(struct dfu_reset *x)
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
