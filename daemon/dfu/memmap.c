#include "memmap.h"

#include "platform.h"

#include <string.h>

/*
 * A small cursor-based parser: the grammar (docs/device/dfuse.md#memory-map-strings, dfu-util's
 * dfuse_mem.c) is
 *   map     := '@' name ( '/' address '/' segment ( ',' segment )* )+
 *   segment := count '*' size [ ' ' | 'B' | 'K' | 'M' ] letter
 * Counts and sizes are decimal with optional leading zeros ("03*016Ka").
 */
struct cursor {
	const char *s;
	size_t pos;
	struct error *err;
};

static int fail(struct cursor *c, const char *reason)
{
	error_set(c->err, ERR_DFU_DESCRIPTOR_INVALID, "the DFU memory map string is malformed: %s",
		  reason);
	error_detail_str(c->err, "descriptor", c->s);
	error_detail_str(c->err, "reason", reason);
	error_detail_int(c->err, "offset", (long long)c->pos);
	return -1;
}

static char peek(const struct cursor *c)
{
	return c->s[c->pos];
}

static int parse_decimal(struct cursor *c, uint64_t limit, uint64_t *ret)
{
	uint64_t v = 0;
	size_t start = c->pos;
	while (peek(c) >= '0' && peek(c) <= '9') {
		v = v * 10 + (uint64_t)(peek(c) - '0');
		if (v > limit)
			return fail(c, "number too large");
		c->pos++;
	}
	if (c->pos == start)
		return fail(c, "expected a decimal number");
	*ret = v;
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int parse_address(struct cursor *c, uint32_t *ret)
{
	if (peek(c) != '0' || (c->s[c->pos + 1] != 'x' && c->s[c->pos + 1] != 'X'))
		return fail(c, "expected an address starting with 0x");
	c->pos += 2;
	uint64_t v = 0;
	size_t start = c->pos;
	int d;
	while ((d = hexval(peek(c))) >= 0) {
		v = (v << 4) | (uint64_t)d;
		if (v > UINT32_MAX)
			return fail(c, "address does not fit 32 bits");
		c->pos++;
	}
	if (c->pos == start)
		return fail(c, "expected hex digits after 0x");
	*ret = (uint32_t)v;
	return 0;
}

static int parse_segment(struct cursor *c, struct dfuse_map *map, uint64_t *addr)
{
	uint64_t count, size;
	if (parse_decimal(c, DFUSE_MAP_MAX_SECTORS, &count) < 0)
		return -1;
	if (count == 0)
		return fail(c, "sector count is zero");
	if (peek(c) != '*')
		return fail(c, "expected '*' after the sector count");
	c->pos++;
	if (parse_decimal(c, UINT32_MAX, &size) < 0)
		return -1;
	switch (peek(c)) {
	case 'K':
		size *= 1024;
		c->pos++;
		break;
	case 'M':
		size *= 1024 * 1024;
		c->pos++;
		break;
	case 'B':
	case ' ':
		c->pos++;
		break;
	default:
		break;
	}
	if (size == 0)
		return fail(c, "sector size is zero");
	if (size > UINT32_MAX)
		return fail(c, "sector size does not fit 32 bits");
	char letter = peek(c);
	if (letter < 'a' || letter > 'g')
		return fail(c, "expected an attribute letter a-g");
	c->pos++;
	if (*addr + count * size > (uint64_t)UINT32_MAX + 1)
		return fail(c, "segment runs past the 32-bit address space");
	if (map->n_segments >= DFUSE_MAP_MAX_SEGMENTS)
		return fail(c, "too many segments");
	struct dfuse_segment *seg = &map->segments[map->n_segments++];
	seg->start = (uint32_t)*addr;
	seg->sector_size = (uint32_t)size;
	seg->n_sectors = (uint32_t)count;
	seg->attrs = (uint8_t)(letter & 7);
	seg->letter = letter;
	*addr += count * size;
	return 0;
}

static int parse_name(struct cursor *c, struct dfuse_map *map)
{
	if (peek(c) != '@')
		return fail(c, "does not start with '@'");
	c->pos++;
	const char *slash = strchr(c->s + c->pos, '/');
	if (!slash)
		return fail(c, "no '/' after the name");
	size_t len = (size_t)(slash - (c->s + c->pos));
	while (len > 0 && c->s[c->pos + len - 1] == ' ')
		len--;
	if (len == 0)
		return fail(c, "empty name");
	if (len >= DFUSE_MAP_NAME_MAX)
		return fail(c, "name too long");
	memcpy(map->name, c->s + c->pos, len);
	map->name[len] = '\0';
	c->pos = (size_t)(slash - c->s);
	return 0;
}

int dfuse_map_parse(const char *s, struct dfuse_map *map, struct error *err)
{
	struct cursor c = {s ? s : "", 0, err};
	memset(map, 0, sizeof(*map));
	if (strnlen(c.s, DFUSE_MAP_STRING_MAX + 1) > DFUSE_MAP_STRING_MAX)
		return fail(&c, "string too long");
	if (parse_name(&c, map) < 0)
		return -1;
	/* One or more "/0xADDR/segments" groups. */
	while (peek(&c) == '/') {
		c.pos++;
		uint32_t a = 0;
		if (parse_address(&c, &a) < 0)
			return -1;
		if (peek(&c) != '/')
			return fail(&c, "expected '/' after the address");
		c.pos++;
		uint64_t addr = a;
		for (;;) {
			if (parse_segment(&c, map, &addr) < 0)
				return -1;
			if (peek(&c) != ',')
				break;
			c.pos++;
		}
	}
	if (peek(&c) != '\0')
		return fail(&c, "unexpected character");
	if (map->n_segments == 0)
		return fail(&c, "no segments");
	/* Address groups may come in any order, but one byte has one sector:
	 * overlapping segments would give overlapping erase units. */
	for (unsigned i = 0; i < map->n_segments; i++)
		for (unsigned k = i + 1; k < map->n_segments; k++)
			if (map->segments[i].start < dfuse_segment_end(&map->segments[k]) &&
			    map->segments[k].start < dfuse_segment_end(&map->segments[i]))
				return fail(&c, "segments overlap");
	return 0;
}

const struct dfuse_segment *dfuse_map_find(const struct dfuse_map *map, uint32_t addr)
{
	for (unsigned i = 0; i < map->n_segments; i++) {
		const struct dfuse_segment *seg = &map->segments[i];
		if (addr >= seg->start && addr < dfuse_segment_end(seg))
			return seg;
	}
	return NULL;
}

bool dfuse_map_range_has(const struct dfuse_map *map, uint32_t start, uint32_t len, uint8_t attrs,
			 uint32_t *ret_bad)
{
	uint64_t addr = start, end = (uint64_t)start + len;
	if (ret_bad)
		*ret_bad = start;
	if (len == 0)
		return false;
	/* Nothing wraps past the top of the address space to 0x0. */
	uint64_t top = (uint64_t)UINT32_MAX + 1, limit = end < top ? end : top;
	while (addr < limit) {
		const struct dfuse_segment *seg = dfuse_map_find(map, (uint32_t)addr);
		if (!seg || (seg->attrs & attrs) != attrs) {
			if (ret_bad)
				*ret_bad = (uint32_t)addr;
			return false;
		}
		addr = dfuse_segment_end(seg);
	}
	if (end > top) {
		if (ret_bad)
			*ret_bad = 0; /* where the range would wrap to */
		return false;
	}
	return true;
}

int dfuse_map_erase_units(const struct dfuse_map *map, uint32_t start, uint32_t len,
			  struct dfuse_erase_unit *units, size_t max, struct error *err)
{
	uint64_t addr = start, end = (uint64_t)start + len;
	size_t n = 0;
	if (end > (uint64_t)UINT32_MAX + 1) {
		/* A range that wraps past 4 GiB would erase the sectors at 0x0 (the
		 * bootloader or MBR): it is outside every map. */
		error_set(err, ERR_OUTSIDE_MEMORY_MAP,
			  "the range 0x%08x+%u runs past the end of the 32-bit address space",
			  start, len);
		error_detail_int(err, "address", start);
		error_detail_int(err, "start", start);
		error_detail_int(err, "end", (long long)end);
		error_detail_str(err, "region", map->name);
		error_detail_str(err, "needed", "erasable");
		return -1;
	}
	while (addr < end) {
		const struct dfuse_segment *seg = dfuse_map_find(map, (uint32_t)addr);
		if (!seg || !(seg->attrs & DFUSE_MEM_ERASABLE)) {
			error_set(err, ERR_OUTSIDE_MEMORY_MAP,
				  "address 0x%08llx is %s in the DFU memory map '%s'",
				  (unsigned long long)addr, seg ? "not erasable" : "not present",
				  map->name);
			error_detail_int(err, "address", (long long)addr);
			error_detail_int(err, "start", start);
			error_detail_int(err, "end", (long long)end);
			error_detail_str(err, "region", map->name);
			error_detail_str(err, "needed", "erasable");
			if (seg)
				error_detail_str(err, "attributes",
						 dfuse_mem_attr_describe(seg->attrs));
			return -1;
		}
		uint64_t sector =
		    seg->start + (addr - seg->start) / seg->sector_size * seg->sector_size;
		if (n >= max) {
			error_set(err, ERR_INTERNAL,
				  "the range 0x%08x+%u needs more than %zu erase units", start, len,
				  max);
			error_detail_str(err, "reason", "erase unit list full");
			return -1;
		}
		units[n].address = (uint32_t)sector;
		units[n].size = seg->sector_size;
		n++;
		addr = sector + seg->sector_size;
	}
	return (int)n;
}

const char *dfuse_mem_attr_describe(uint8_t attrs)
{
	static const char *const names[8] = {
	    "none",	"readable",	     "erasable",	  "readable,erasable",
	    "writable", "readable,writable", "erasable,writable", "readable,erasable,writable",
	};
	return names[attrs & 7];
}

const char *dfuse_platform_map_string(const struct platform *p)
{
	switch (p ? p->mcu : MCU_STM32F103) {
	case MCU_STM32F205:
		return "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg";
	case MCU_NRF52840:
		return "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,"
		       "8*004Ka";
	case MCU_RTL8721D:
		return "@Internal Flash   /0x08000000/2048*004Kg";
	default:
		return NULL;
	}
}
