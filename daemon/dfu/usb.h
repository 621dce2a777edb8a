/*
 * One DFU device over the shared libusb loop (usb/usb_loop.h): descriptors
 * from libusb's enumeration-time copy, asynchronous control transfers only.
 * String descriptors and SET_INTERFACE are asynchronous requests (dfuse.c);
 * claim/release are usbfs ioctls the kernel answers without the device.
 */
#pragma once

#include "dfuse.h"
#include "errors.h"
#include "usb_loop.h"

#include <event2/event.h>
#include <libusb.h>

struct usb_dfu_dev;

/*
 * Opens the DFU device at busnum/devnum, claims its DFU interface and fills
 * desc from the cached descriptors.  devnode is for messages.  Fails with
 * permission-denied (udev hint), device-gone (not in libusb's list yet or
 * any more: callers may retry), dfu-descriptor-invalid or device-busy.
 */
WARN_UNUSED_RESULT int usb_dfu_open(struct usb_loop *l, unsigned busnum, unsigned devnum,
				    const char *devnode, struct usb_dfu_dev **ret,
				    struct dfu_descriptors *desc, struct error *err);
/* The control-transfer port for dfuse_new(); completions go to the attached dfuse. */
struct dfu_io usb_dfu_io(struct usb_dfu_dev *d);
void usb_dfu_attach(struct usb_dfu_dev *d, struct dfuse *s);
/*
 * Detaches the dfuse (no more completions), cancels a transfer in flight,
 * releases the interface and closes the handle (after the cancellation has
 * completed, from the loop).  Accepts NULL.
 */
void usb_dfu_close(struct usb_dfu_dev *d);
