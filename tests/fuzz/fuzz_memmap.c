/*
 * libFuzzer harness for the DfuSe memory-map string parser and its queries
 * (daemon/dfu/memmap.c).  The map string comes from the device (an alt
 * setting's iInterface string); the range comes from a module's prefix, which
 * comes from the user's file: both are hostile.  Checked beyond "no crash":
 * a parsed map stays inside the 32-bit address space, dfuse_map_find agrees
 * with a plain scan, and a range is never reported inside the map, nor split
 * into erase units, across the top of the address space (a wrap to 0x0 would
 * erase the bootloader).
 *
 * Input: start (4 bytes LE), len (4 bytes LE), attrs (1 byte), then the string.
 */
#include "bytes.h"
#include "memmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_UNITS 4096

static const struct dfuse_segment *scan(const struct dfuse_map *m, uint64_t addr)
{
	for (unsigned i = 0; i < m->n_segments; i++)
		if (addr >= m->segments[i].start && addr < dfuse_segment_end(&m->segments[i]))
			return &m->segments[i];
	return NULL;
}

static void check_map(const struct dfuse_map *m)
{
	if (m->n_segments == 0 || m->n_segments > DFUSE_MAP_MAX_SEGMENTS || !m->name[0] ||
	    !memchr(m->name, '\0', sizeof(m->name)))
		abort();
	for (unsigned i = 0; i < m->n_segments; i++) {
		const struct dfuse_segment *s = &m->segments[i];
		if (!s->sector_size || !s->n_sectors || s->n_sectors > DFUSE_MAP_MAX_SECTORS ||
		    dfuse_segment_end(s) > (uint64_t)UINT32_MAX + 1 || s->letter < 'a' ||
		    s->letter > 'g' || s->attrs != (s->letter & 7))
			abort();
		if (dfuse_map_find(m, s->start) != scan(m, s->start))
			abort();
		uint64_t last = dfuse_segment_end(s) - 1;
		if (dfuse_map_find(m, (uint32_t)last) != scan(m, last))
			abort();
		(void)dfuse_mem_attr_describe(s->attrs);
	}
}

static void check_range(const struct dfuse_map *m, uint32_t start, uint32_t len, uint8_t attrs)
{
	uint64_t end = (uint64_t)start + len;
	uint32_t bad = 0;
	bool in = dfuse_map_range_has(m, start, len, attrs, &bad);
	if (in) {
		/* Every byte is in a segment with the attributes: check both ends and
		 * every segment boundary in between. */
		if (len == 0 || end > (uint64_t)UINT32_MAX + 1)
			abort();
		const struct dfuse_segment *s;
		for (uint64_t a = start; a < end; a = dfuse_segment_end(s)) {
			s = scan(m, a);
			if (!s || (s->attrs & attrs) != attrs)
				abort();
		}
	} else if (len > 0 && end <= (uint64_t)UINT32_MAX + 1) {
		const struct dfuse_segment *s = scan(m, bad);
		if (bad < start || bad >= end || (s && (s->attrs & attrs) == attrs))
			abort();
	}

	struct dfuse_erase_unit *units = malloc(MAX_UNITS * sizeof(*units));
	struct error err;
	error_init(&err);
	int n = dfuse_map_erase_units(m, start, len, units, MAX_UNITS, &err);
	if (n < 0) {
		if (!error_is_set(&err))
			abort();
	} else {
		if (error_is_set(&err) || (len > 0 && n == 0) || (len == 0 && n != 0))
			abort();
		if (n > 0 && (end > (uint64_t)UINT32_MAX + 1 || units[0].address > start ||
			      (uint64_t)units[n - 1].address + units[n - 1].size < end))
			abort();
		for (int i = 0; i < n; i++) {
			const struct dfuse_segment *s = scan(m, units[i].address);
			if (!s || !(s->attrs & DFUSE_MEM_ERASABLE) ||
			    (uint64_t)units[i].address + units[i].size > dfuse_segment_end(s))
				abort();
			if (i > 0 && units[i].address <= units[i - 1].address)
				abort(); /* ascending, each once */
		}
	}
	error_clear(&err);
	free(units);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 9 || size > 9 + 2 * DFUSE_MAP_STRING_MAX)
		return 0;
	char s[2 * DFUSE_MAP_STRING_MAX + 1];
	memcpy(s, data + 9, size - 9);
	s[size - 9] = '\0';
	struct dfuse_map map;
	struct error err;
	error_init(&err);
	int r = dfuse_map_parse(s, &map, &err);
	if (r < 0) {
		if (err.code != ERR_DFU_DESCRIPTOR_INVALID)
			abort();
		json_t *j = error_to_json(&err);
		if (!j)
			abort();
		json_decref(j);
		error_clear(&err);
		return 0;
	}
	if (error_is_set(&err))
		abort();
	check_map(&map);
	/* The range scaled to the map: a raw 32-bit length mostly misses it. */
	uint32_t start = bytes_le32(data), len = bytes_le32(data + 4);
	if (data[8] & 0x80)
		len &= 0x3ffff;
	check_range(&map, start, len, data[8] & 7);
	return 0;
}
