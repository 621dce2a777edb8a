/*
 * DfuSe memory maps: the alt settings' iInterface strings
 * ("@Internal Flash   /0x08000000/03*016Ka,01*016Kg,...", docs/device/dfuse.md#memory-map-strings),
 * parsed into segments of equal sectors with readable/erasable/writable
 * attributes, and the queries the download path needs (which region holds an
 * address, which erase units cover a range).  Pure functions, no I/O.
 */
#pragma once

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits for strings that come from a device. */
#define DFUSE_MAP_STRING_MAX   255 /* a USB string descriptor holds at most 126 UTF-16 units */
#define DFUSE_MAP_NAME_MAX     64
#define DFUSE_MAP_MAX_SEGMENTS 32
#define DFUSE_MAP_MAX_SECTORS  65536 /* per segment */

/* Attribute bits: dfu-util's `letter & 7` (dfu-util src/dfuse_mem.c), table in
 * docs/device/dfuse.md#memory-map-strings. */
enum dfuse_mem_attr {
	DFUSE_MEM_READABLE = 0x1,
	DFUSE_MEM_ERASABLE = 0x2,
	DFUSE_MEM_WRITABLE = 0x4,
};

struct dfuse_segment {
	uint32_t start;	      /* first address */
	uint32_t sector_size; /* bytes */
	uint32_t n_sectors;
	uint8_t attrs; /* enum dfuse_mem_attr */
	char letter;   /* as sent by the device ('a'..'g') */
};

struct dfuse_map {
	char name[DFUSE_MAP_NAME_MAX]; /* "Internal Flash" (trailing blanks dropped) */
	struct dfuse_segment segments[DFUSE_MAP_MAX_SEGMENTS];
	unsigned n_segments;
};

/* One erase unit (a page on Gen 3/P2, an STM32 sector on Gen 2). */
struct dfuse_erase_unit {
	uint32_t address;
	uint32_t size;
};

/*
 * Parses a memory-map string.  Fails (ERR_DFU_DESCRIPTOR_INVALID with reason
 * and offset) on anything that is not `@name/0xADDR/N*SIZE[ BKM]x,...`
 * (several address groups separated by '/'), on letters outside a–g, zero
 * sizes, overflowing addresses or more than the limits above.
 */
WARN_UNUSED_RESULT int dfuse_map_parse(const char *s, struct dfuse_map *map, struct error *err);

static inline uint64_t dfuse_segment_end(const struct dfuse_segment *seg)
{
	return (uint64_t)seg->start + (uint64_t)seg->sector_size * seg->n_sectors;
}

/* The segment containing addr, or NULL. */
const struct dfuse_segment *dfuse_map_find(const struct dfuse_map *map, uint32_t addr);

/*
 * True when every byte of [start, start + len) lies in segments that have all
 * the attribute bits in attrs.  len 0 is never inside.  *ret_bad (may be NULL)
 * gets the first address that fails.
 */
bool dfuse_map_range_has(const struct dfuse_map *map, uint32_t start, uint32_t len, uint8_t attrs,
			 uint32_t *ret_bad);

/*
 * The erase units (sectors of the map) that cover [start, start + len), in
 * ascending order, each exactly once.  Fails when a byte of the range is
 * outside the map or in a non-erasable sector, or when more than max units
 * would be needed.  Returns the number of units or -1.
 */
int dfuse_map_erase_units(const struct dfuse_map *map, uint32_t start, uint32_t len,
			  struct dfuse_erase_unit *units, size_t max, struct error *err);

/*
 * The memory map of alt 0 (the MCU's internal flash) that the platform's DFU
 * bootloader describes on a device without Device Protection, known without
 * the device: the same string on every bootloader release of a chip family
 * (Device OS bootloader/src/stm32f2xx/inc/usbd_flash_if.h FLASH_IF_STRING,
 * bootloader/src/nRF52840/usbd_dfu_mal.h and bootloader/src/rtl872x/usbd_dfu_mal.h
 * INTERNAL_FLASH_IF_STRING).  NULL for a platform flashd has no map for (the Core).
 * A protected device describes every sector erasable-only instead: only the
 * live descriptors say that.
 */
struct platform;
const char *dfuse_platform_map_string(const struct platform *p);

/* "r-w" style summary of attributes: "readable,erasable,writable" / "read-only". */
const char *dfuse_mem_attr_describe(uint8_t attrs);
