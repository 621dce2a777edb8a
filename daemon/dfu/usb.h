/*
 * libusb-1.0 inside the libevent loop, without blocking.
 *
 * libusb's file descriptors (libusb_get_pollfds + pollfd notifiers) become
 * libevent events asking exactly for the POLLIN/POLLOUT libusb asks for; when
 * one fires, libusb_handle_events_timeout_completed() runs with a zero
 * timeout.  A libevent timer follows libusb_get_next_timeout() for backends
 * without timerfd.  Control transfers are asynchronous only
 * (libusb_fill_control_setup + libusb_submit_transfer).
 *
 * Descriptors: libusb_get_device_descriptor() and libusb_get_config_descriptor()
 * are answered from the copy libusb read once at enumeration (on Linux from
 * sysfs `descriptors` or the usbfs node, kernel-cached, never a bus transfer),
 * so they do not block.  String descriptors need the device: they are read
 * with asynchronous GET_DESCRIPTOR transfers by dfuse.c.  SET_INTERFACE is
 * also sent as an asynchronous standard request, because
 * libusb_set_interface_alt_setting() waits for the device.  claim/release are
 * usbfs ioctls that the kernel answers without talking to the device.
 *
 * Under umockdev the usbfs node is a pty that always polls writable
 * (docs/testing/umockdev.md#control-transfers): while a handle is open libusb's POLLOUT interest
 * makes
 * the loop busy, so handles are opened per run and closed right after leave.
 */
#pragma once

#include "dfuse.h"
#include "errors.h"

#include <event2/event.h>
#include <libusb.h>

struct usb_loop;
struct usb_dfu_dev;

struct usb_loop *usb_loop_new(struct event_base *base, struct error *err);
/* The daemon's one libusb context, made on first use (every DFU user shares it). */
struct usb_loop *usb_loop_shared(struct event_base *base, struct error *err);
void usb_loop_free(struct usb_loop *l);
libusb_context *usb_loop_context(struct usb_loop *l);

/*
 * Opens the DFU device at busnum/devnum, claims its DFU interface and fills
 * desc from the cached descriptors.  devnode is for messages.  Fails with
 * permission-denied (udev hint), device-gone (not in libusb's list yet or
 * any more: callers may retry), dfu-descriptor-invalid or device-busy.
 */
int usb_dfu_open(struct usb_loop *l, unsigned busnum, unsigned devnum, const char *devnode,
		 struct usb_dfu_dev **ret, struct dfu_descriptors *desc, struct error *err);
/* The control-transfer port for dfuse_new(); completions go to the attached dfuse. */
struct dfu_io usb_dfu_io(struct usb_dfu_dev *d);
void usb_dfu_attach(struct usb_dfu_dev *d, struct dfuse *s);
/*
 * Detaches the dfuse (no more completions), cancels a transfer in flight,
 * releases the interface and closes the handle (after the cancellation has
 * completed, from the loop).  Accepts NULL.
 */
void usb_dfu_close(struct usb_dfu_dev *d);
