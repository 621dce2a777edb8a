/*
 * struct ctrl_io over a libusb_device_handle: vendor control transfers with
 * libusb's asynchronous API (libusb_fill_control_setup +
 * libusb_submit_transfer).  The caller owns the handle and the libusb
 * context's integration into its event loop (libusb's fds as libevent
 * events); `loop_hint` tells it when a transfer starts and ends, for loops
 * that must poll libusb while one is in flight (umockdev's usbfs nodes
 * cannot be watched).  Control requests go to the device recipient: no
 * interface is claimed.
 */
#pragma once

#include "ctrl.h"

#include <libusb.h>

struct ctrl_usb_hooks {
	void (*in_flight)(void *userdata, int delta); /* +1 at submit, -1 at completion */
	/* Optional: the ctrl let go of the handle (ctrl_free() and no transfer in flight any
	 * more): the caller may close it now. */
	void (*released)(void *userdata);
	void *userdata;
};

/* A ctrl whose transfers go to handle (not closed by ctrl_free: the caller's). */
struct ctrl *ctrl_open_usb(struct event_base *base, libusb_device_handle *handle,
			   const struct ctrl_usb_hooks *hooks, const struct ctrl_options *opt,
			   struct error *err);
