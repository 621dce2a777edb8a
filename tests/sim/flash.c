#include "flash.h"

#include "osver.h"

#include <errno.h>
#include <glib.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * Memory-map strings per platform and bootloader era, exactly as
 * docs/device/dfuse.md#memory-map-strings
 * lists them (three spaces after the name).
 */
static const char *gen3_ext_map(const struct platform *p, const char *os)
{
	if (p->ext_flash_size <= (4u << 20))
		return "@External Flash   /0x80000000/1024*004Kg";
	/* 8 MiB parts: 1.5.x and 3.0.0 bootloaders used 8 KiB units. */
	if ((osver_compare(os, "1.5.0") >= 0 && osver_compare(os, "1.6.0") < 0) ||
	    (osver_compare(os, "3.0.0") >= 0 && osver_compare(os, "3.1.0") < 0))
		return "@External Flash   /0x80000000/1024*008Kg";
	return "@External Flash   /0x80000000/2048*004Kg";
}

static int parse_map(struct flash_region *r)
{
	/* "@Name   /0xBASE/N*SSSKx,N*SSSKx" */
	const char *slash = strchr(r->map, '/');
	if (!slash)
		return -1;
	size_t nlen = (size_t)(slash - r->map - 1);
	while (nlen > 0 && r->map[nlen] == ' ')
		nlen--;
	snprintf(r->name, sizeof(r->name), "%.*s", (int)nlen, r->map + 1);
	char *end;
	r->base = (uint32_t)strtoul(slash + 1, &end, 16);
	uint32_t addr = r->base;
	const char *s = end + 1;
	r->n_seg = 0;
	r->size = 0;
	while (*s && r->n_seg < FLASH_MAX_SEGMENTS) {
		struct flash_segment *g = &r->seg[r->n_seg++];
		g->count = (uint32_t)strtoul(s, &end, 10);
		g->sector_size = (uint32_t)strtoul(end + 1, &end, 10);
		if (*end == 'K')
			g->sector_size *= 1024, end++;
		else if (*end == 'M')
			g->sector_size *= 1024 * 1024, end++;
		g->attr = *end++;
		g->start = addr;
		addr += g->count * g->sector_size;
		r->size += g->count * g->sector_size;
		s = *end == ',' ? end + 1 : end;
	}
	/* Protected variant: every attribute letter becomes 'b'
	 * (docs/device/dfuse.md#memory-map-strings). */
	memcpy(r->map_prot, r->map, sizeof(r->map_prot));
	char *tail = strchr(strchr(r->map_prot, '/') + 1, '/');
	for (char *c = tail; c && *c; c++)
		if (*c >= 'a' && *c <= 'g' && (c[1] == ',' || c[1] == '\0'))
			*c = 'b';
	return 0;
}

static void add_region(struct flash *f, const char *map, bool external)
{
	struct flash_region *r = &f->region[f->n_regions];
	r->alt = (int)f->n_regions;
	snprintf(r->map, sizeof(r->map), "%s", map);
	parse_map(r);
	r->external = external;
	r->mem = g_malloc(r->size);
	memset(r->mem, 0xff, r->size);
	f->n_regions++;
}

struct flash *flash_new(const struct platform *p, const char *os)
{
	struct flash *f = g_new0(struct flash, 1);
	f->platform = p;
	bool dct_name = osver_compare(os, "5.3.0") >= 0;
	switch (p->mcu) {
	case MCU_STM32F205:
		add_region(f, "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg",
			   false);
		add_region(f, "@DCT Flash   /0x00000000/01*016Kg", false);
		if (p->id == 8)
			add_region(f, "@Serial Flash   /0x00000000/256*004Kg", true);
		break;
	case MCU_NRF52840:
		add_region(f,
			   "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,"
			   "4*004Kg,8*004Ka",
			   false);
		add_region(f,
			   dct_name ? "@DCT Flash   /0x00000000/1*016Ke"
				    : "@DCD Flash   /0x00000000/1*016Ke",
			   false);
		add_region(f, gen3_ext_map(p, os), true);
		break;
	case MCU_RTL8721D:
		add_region(f, "@Internal Flash   /0x08000000/2048*004Kg", false);
		add_region(f,
			   dct_name ? "@DCT Flash   /0x00000000/1*016Ke"
				    : "@DCD Flash   /0x00000000/1*016Ke",
			   false);
		break;
	case MCU_STM32F103:
		break;
	}
	return f;
}

void flash_free(struct flash *f)
{
	if (!f)
		return;
	for (unsigned i = 0; i < f->n_regions; i++)
		g_free(f->region[i].mem);
	g_free(f);
}

struct flash_region *flash_region(struct flash *f, int alt)
{
	return alt >= 0 && (unsigned)alt < f->n_regions ? &f->region[alt] : NULL;
}

struct flash_region *flash_region_at(struct flash *f, int alt, uint32_t addr, size_t len)
{
	struct flash_region *r = flash_region(f, alt);
	if (!r || addr < r->base || len > r->size || addr - r->base > r->size - len)
		return NULL;
	return r;
}

int flash_sector(const struct flash_region *r, uint32_t addr, uint32_t *ret_start,
		 uint32_t *ret_size, char *ret_attr)
{
	for (unsigned i = 0; i < r->n_seg; i++) {
		const struct flash_segment *g = &r->seg[i];
		uint64_t end = (uint64_t)g->start + (uint64_t)g->count * g->sector_size;
		if (addr >= g->start && addr < end) {
			uint32_t k = (addr - g->start) / g->sector_size;
			*ret_start = g->start + k * g->sector_size;
			*ret_size = g->sector_size;
			*ret_attr = g->attr;
			return 0;
		}
	}
	return -1;
}

/* dfu-util: memtype = letter & 7; bit0 readable, bit1 erasable, bit2 writable
 * (docs/device/dfuse.md#memory-map-strings). */
bool flash_attr_readable(char attr)
{
	return (attr & 7) & 1;
}

bool flash_attr_erasable(char attr)
{
	return (attr & 7) & 2;
}

bool flash_attr_writable(char attr)
{
	return (attr & 7) & 4;
}

long flash_erase_sector(struct flash *f, int alt, uint32_t addr)
{
	struct flash_region *r = flash_region(f, alt);
	uint32_t start, size;
	char attr;
	if (!r || flash_sector(r, addr, &start, &size, &attr) < 0)
		return -1;
	memset(r->mem + (start - r->base), 0xff, size);
	return size;
}

int flash_erase_range(struct flash *f, int alt, uint32_t addr, size_t len)
{
	uint32_t a = addr;
	while (a < addr + len) {
		long n = flash_erase_sector(f, alt, a);
		if (n < 0)
			return -1;
		/* the sector just erased exists: flash_erase_sector() found it */
		struct flash_region *r = flash_region(f, alt);
		uint32_t start = 0, size = 0;
		char attr;
		if (!r || flash_sector(r, a, &start, &size, &attr) < 0 || size == 0)
			return -1;
		a = start + size;
	}
	return 0;
}

int flash_program(struct flash *f, int alt, uint32_t addr, const uint8_t *data, size_t len)
{
	struct flash_region *r = flash_region_at(f, alt, addr, len);
	if (!r)
		return -1;
	uint8_t *m = r->mem + (addr - r->base);
	for (size_t i = 0; i < len; i++)
		m[i] &= data[i];
	return 0;
}

int flash_read(struct flash *f, int alt, uint32_t addr, uint8_t *buf, size_t len)
{
	const uint8_t *m = flash_peek(f, alt, addr, len);
	if (!m)
		return -1;
	memcpy(buf, m, len);
	return 0;
}

const uint8_t *flash_peek(struct flash *f, int alt, uint32_t addr, size_t len)
{
	struct flash_region *r = flash_region_at(f, alt, addr, len);
	return r ? r->mem + (addr - r->base) : NULL;
}

static int write_all(const char *path, const uint8_t *buf, size_t len)
{
	gchar *tmp = g_strdup_printf("%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc = -1;
	if (fd >= 0) {
		size_t done = 0;
		while (done < len) {
			ssize_t n = write(fd, buf + done, len - done);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			done += (size_t)n;
		}
		if (close(fd) == 0 && done == len && rename(tmp, path) == 0)
			rc = 0;
	}
	if (rc < 0)
		unlink(tmp);
	g_free(tmp);
	return rc;
}

int flash_dump(struct flash *f, const char *dir, const char *device, json_t *regions)
{
	int rc = 0;
	for (unsigned i = 0; i < f->n_regions; i++) {
		struct flash_region *r = &f->region[i];
		gchar *file = g_strdup_printf("%s-alt%d.bin", device, r->alt);
		gchar *path = g_build_filename(dir, file, NULL);
		if (write_all(path, r->mem, r->size) < 0)
			rc = -1;
		json_array_append_new(regions,
				      json_pack("{s:i,s:s,s:I,s:I,s:s}", "alt", r->alt, "name",
						r->name, "base", (json_int_t)r->base, "size",
						(json_int_t)r->size, "dump", file));
		g_free(path);
		g_free(file);
	}
	return rc;
}
