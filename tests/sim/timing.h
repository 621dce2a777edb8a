/*
 * Work durations of the simulated devices, from the MCU and flash
 * datasheets.  ONE place for every constant; --time-scale multiplies them
 * (0 = instant, 1 = real-device speed).
 */
#pragma once

#include "platform.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Erase of one sector/page of the given size (internal or external flash). */
unsigned timing_erase_us(const struct platform *p, bool external, uint32_t sector_size);
/* Programming of len bytes. */
unsigned timing_program_us(const struct platform *p, bool external, size_t len);
/* Host -> device bulk transfer of len bytes over USB full speed (CDC data). */
unsigned timing_usb_bulk_us(size_t len);
/* Device -> host: a DFU UPLOAD control transfer returning len bytes (bus time of its
 * setup, data and status stages; reading the flash is memory-mapped and negligible). */
unsigned timing_dfu_upload_us(const struct platform *p, size_t len);
/* DFU leave -> reset (docs/device/dfuse.md#requests-and-states: a 500-count timer, ~500 ms). */
unsigned timing_dfu_leave_reset_us(const struct platform *p);
/* Reset -> USB enumeration of the next mode (bootloader or Device OS). */
unsigned timing_boot_us(const struct platform *p, bool into_dfu);
/* Applies --time-scale to a duration; returns milliseconds, rounded up. */
unsigned timing_scale_ms(double scale, unsigned us);
