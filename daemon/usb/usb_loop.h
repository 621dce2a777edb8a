/*
 * libusb-1.0 inside the libevent loop, without blocking: the daemon's USB service,
 * shared by the transports that talk to USB (daemon/dfu, daemon/ctrl).
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
 * A plain umockdev usbfs node is a regular file: epoll refuses it and it always polls
 * writable, so while a transfer is in flight libusb is polled on a 1 ms timer (flashd-sim's
 * nodes poll like usbfs, docs/testing/umockdev.md#control-transfers).  Handles are opened
 * per run and closed right after leave.
 */
#pragma once

#include "errors.h"

#include <event2/event.h>
#include <libusb.h>

struct usb_loop;

struct usb_loop *usb_loop_new(struct event_base *base, struct error *err);
/*
 * The daemon's one libusb context, shared by every USB user (DFU, control requests,
 * the core's mode switches).  Each USB transport holds it from its init() to its
 * exit() (transport.h): the first acquire makes it, the last release frees it, so
 * no transport depends on another's being built in or started first.
 * usb_loop_daemon() is the context while one is held, else NULL.
 */
struct usb_loop *usb_loop_acquire(struct event_base *base, struct error *err);
void usb_loop_release(void);
struct usb_loop *usb_loop_daemon(void);
void usb_loop_free(struct usb_loop *l);
libusb_context *usb_loop_context(struct usb_loop *l);
/* A transfer on this context was submitted (+1) or completed (-1): while one is in
 * flight on an fd the loop cannot watch, libusb is polled on a short timer. */
void usb_loop_in_flight(struct usb_loop *l, int delta);
/* The device at busnum/devnum in libusb's list, referenced (libusb_unref_device() it),
 * or NULL when it is not (or no longer) there. */
libusb_device *usb_loop_find(struct usb_loop *l, unsigned busnum, unsigned devnum);
