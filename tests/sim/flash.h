/*
 * Flash memory model of one simulated device: one region per DFU alt
 * setting (docs/device/dfuse.md#memory-map-strings), sectors/pages from the region's DfuSe memory
 * map,
 * NOR semantics (erase sets 0xFF, programming can only clear bits).
 */
#pragma once

#include "platform.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLASH_MAX_REGIONS  3
#define FLASH_MAX_SEGMENTS 8
#define FLASH_MAP_MAX	   160

struct flash_segment {
	uint32_t start; /* absolute */
	uint32_t count;
	uint32_t sector_size;
	char attr; /* DfuSe letter a-g */
};

struct flash_region {
	int alt;
	char name[32];		      /* "Internal Flash" */
	char map[FLASH_MAP_MAX];      /* "@Internal Flash   /0x08000000/..." */
	char map_prot[FLASH_MAP_MAX]; /* the Device Protection variant ('b' only) */
	uint32_t base;
	uint32_t size;
	bool external; /* Gen 3 QSPI / P1 serial flash */
	struct flash_segment seg[FLASH_MAX_SEGMENTS];
	unsigned n_seg;
	uint8_t *mem;
};

struct flash {
	const struct platform *platform;
	struct flash_region region[FLASH_MAX_REGIONS];
	unsigned n_regions;
};

/* os: the bootloader's Device OS release (maps changed names and sizes,
 * docs/device/dfuse.md#memory-map-strings). */
struct flash *flash_new(const struct platform *p, const char *os);
void flash_free(struct flash *f);

struct flash_region *flash_region(struct flash *f, int alt);
/* The region holding [addr, addr+len) on alt, or NULL. */
struct flash_region *flash_region_at(struct flash *f, int alt, uint32_t addr, size_t len);
/* Sector/page containing addr: its start, size and attribute letter; -1 if outside. */
int flash_sector(const struct flash_region *r, uint32_t addr, uint32_t *ret_start,
		 uint32_t *ret_size, char *ret_attr);
bool flash_attr_erasable(char attr);
bool flash_attr_writable(char attr);
bool flash_attr_readable(char attr);

/* Erases the sector holding addr (0xFF); returns its size, or -1. */
long flash_erase_sector(struct flash *f, int alt, uint32_t addr);
/* Erases every sector touching [addr, addr+len). */
int flash_erase_range(struct flash *f, int alt, uint32_t addr, size_t len);
/* NOR programming: new = old AND data (a write never erases).  -1 if outside. */
int flash_program(struct flash *f, int alt, uint32_t addr, const uint8_t *data, size_t len);
int flash_read(struct flash *f, int alt, uint32_t addr, uint8_t *buf, size_t len);
/* Direct pointer into alt's memory, or NULL when [addr, addr+len) is outside. */
const uint8_t *flash_peek(struct flash *f, int alt, uint32_t addr, size_t len);

/* Writes one dump per region into dir as "<device>-alt<N>.bin"; appends
 * {"alt","name","base","size","dump"} objects to regions. */
int flash_dump(struct flash *f, const char *dir, const char *device, json_t *regions);
