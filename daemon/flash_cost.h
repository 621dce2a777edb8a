/*
 * What writing flash costs, by the parts' datasheets (typical figures): the one
 * table the daemon's estimates draw on (the planner's time estimate in plan.c,
 * the DFU read-back's cost model in dfu/dfu_diff.c).  flashd-sim charges the same
 * figures from the same sources in tests/sim/timing.c.
 */
#pragma once

#include "platform.h"

#include <stdbool.h>
#include <stdint.h>

enum flash_kind {
	FLASH_STM32F2, /* Gen 2 internal flash: 16, 64 and 128 KiB sectors */
	FLASH_NRF52,   /* Gen 3 internal flash: 4 KiB pages */
	FLASH_SPI_NOR, /* Gen 3 external QSPI flash, the P2's XIP flash: 4 KiB sectors */
	FLASH_KIND_COUNT,
};

/* The flash a write to p lands in.  DFU writes the module's own slot (internal
 * flash; the P2's is SPI NOR); a staged write (YMODEM, the firmware-update request)
 * writes the OTA area, which is the external flash on Gen 3 and the P2.  An unknown
 * platform (NULL) gets the slowest per KiB, the nRF52840's. */
enum flash_kind flash_kind_of(const struct platform *p, bool staged);

/* Erasing one erase unit (sector or page) of size bytes; where the flash erases
 * 4 KiB at a time, a larger unit counts as its 4 KiB pages. */
unsigned flash_erase_us(enum flash_kind k, uint32_t size);

/* Programming len bytes. */
unsigned flash_program_us(enum flash_kind k, uint32_t len);
