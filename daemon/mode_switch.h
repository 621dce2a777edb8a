/*
 * Mode switches, in one place (issue 11): the core's step driver
 * (job_steps.c) makes the plan's "switch-mode" steps and the resets after a
 * failed write with these; a transport uses only the switch into its own
 * protocol's mode (mode_switch_listening() before YMODEM).
 *
 *  - listening mode: line coding 28800 baud on the CDC port (Device OS <= 5.x;
 *    the device's USB CDC driver enters listening mode on that speed,
 *    device-os hal usb_hal: START_LISTENING_MODE_SERIAL_SPEED);
 *  - DFU mode: line coding 14400 baud (START_DFU_FLASHER_SERIAL_SPEED);
 *  - DFU leave: the DfuSe zero-length DNLOAD and one GETSTATUS (a reset that
 *    overtakes the GETSTATUS counts as leaving).
 *
 * cdc-acm sends SET_LINE_CODING only when the line coding changes, so a
 * switch on a port left at that speed goes through 9600 first.  The baud
 * switches take the port with its lock (serial/port.h: flock and the HDB lock
 * file), so no other program is writing to it at that moment.
 */
#pragma once

#include "errors.h"

struct event_base;
struct serial_port;
struct dfu_leave;

#define MODE_SWITCH_BAUD_LISTEN 28800
#define MODE_SWITCH_BAUD_DFU	14400

/* On a port the caller holds (locked): asks for listening mode (9600, then 28800). */
WARN_UNUSED_RESULT int mode_switch_listening(struct serial_port *port, struct error *err);
/*
 * Opens tty with its lock (lock_dir as serial_port_open(); NULL = /run/lock),
 * sets 14400 baud and closes it: the firmware resets into DFU.  Fails with
 * device-busy naming the holder, permission-denied, device-gone.
 */
WARN_UNUSED_RESULT int mode_switch_dfu(const char *tty, const char *lock_dir, struct error *err);

/* Called once, from the loop; the leave may be freed from here.  err NULL = left. */
typedef void (*dfu_leave_done_fn)(void *ctx, struct error *err);
/*
 * Leaves DFU mode on the device at busnum/devnum (devnode for messages), in DFU
 * mode now: open (retried while libusb does not list it yet), the DfuSe status
 * dance, the leave, release.  Uses the libusb context of the DFU transport
 * (made by its init(), transport.h); fails with internal when there is none.
 */
WARN_UNUSED_RESULT struct dfu_leave *mode_switch_dfu_leave(struct event_base *base, unsigned busnum,
							   unsigned devnum, const char *devnode,
							   dfu_leave_done_fn done, void *ctx,
							   struct error *err);
/* Stops and releases the device (say, once it re-enumerated).  Accepts NULL. */
void mode_switch_dfu_leave_free(struct dfu_leave *x);
