/*
 * Leaves DFU mode on a device that another transport put there: open, the
 * DfuSe status dance of dfuse_open(), then the leave of docs/device/dfuse.md#requests-and-states (a
 * zero-length
 * DNLOAD and exactly one GETSTATUS; a reset that overtakes it counts as
 * leaving), release.  Used by the serial transport to reset a Gen 3 / P2
 * device on Device OS 3.0-5.x after a failed transfer (14400 baud -> DFU ->
 * leave): the device refuses a second `f` until it resets (docs/device/ymodem.md#cancellation).
 */
#pragma once

#include "errors.h"

struct event_base;
struct dfu_reset;

/* Called once, from the loop; the reset may be freed from here.  err NULL = left. */
typedef void (*dfu_reset_done_fn)(void *ctx, struct error *err);

/* The device at busnum/devnum (devnode for messages), in DFU mode now. */
struct dfu_reset *dfu_reset_start(struct event_base *base, unsigned busnum, unsigned devnum,
				  const char *devnode, dfu_reset_done_fn done, void *ctx,
				  struct error *err);
/* Stops and releases the device (say, once it re-enumerated). Accepts NULL. */
void dfu_reset_free(struct dfu_reset *x);
