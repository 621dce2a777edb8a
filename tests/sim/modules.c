#include "modules.h"

#include "bytes.h"

#include <nettle/sha2.h>
#include <string.h>
#include <zlib.h>

/* Sizes of the synthesised modules: small, so dumps stay quick to compare. */
#define SYNTH_BOOTLOADER_SIZE 12288u
#define SYNTH_SYSTEM_SIZE     49152u
#define SYNTH_USER_SIZE	      4096u
#define SYNTH_RADIO_SIZE      16384u
/* user module_version = the app ABI number (docs/device/releases.md#module-version-numbers) */
#define TINKER_VERSION 6

uint8_t *modules_build(const struct module_desc *d)
{
	uint8_t *b = g_malloc(d->len);
	/* Deterministic, non-erased payload. */
	uint32_t x = 0x9e3779b9u ^ d->start ^ ((uint32_t)d->function << 8) ^ d->version;
	for (size_t i = 0; i < d->len; i++) {
		x = x * 1664525u + 1013904223u;
		b[i] = (uint8_t)(x >> 24);
	}
	if (d->prefix_offset == 0x184 || d->prefix_offset == 0x200)
		/* initial stack pointer: the device's vector-table test */
		bytes_put_le32(b, 0x2000f000u);
	if (d->realtek_header) {
		static const uint8_t sig[8] = {0x99, 0x99, 0x96, 0x96, 0x3f, 0xcc, 0x66, 0xfc};
		memcpy(b, sig, 8);
		bytes_put_le32(b + 8, (uint32_t)d->len);
		bytes_put_le32(b + 12, d->start + 0x20);
	}
	uint32_t end = d->start + (uint32_t)d->len - 4;
	uint8_t *p = b + d->prefix_offset;
	memset(p, 0, 24);
	bytes_put_le32(p, d->start);
	bytes_put_le32(p + 4, end);
	bytes_put_le16(p + 10, d->version);
	bytes_put_le16(p + 12, d->platform_id);
	p[14] = d->function;
	p[15] = d->index;
	for (int i = 0; i < 2; i++) {
		p[16 + 4 * i] = d->dep_function[i];
		p[17 + 4 * i] = d->dep_function[i] ? d->dep_index[i] : 0;
		bytes_put_le16(p + 18 + 4 * i, d->dep_function[i] ? d->dep_version[i] : 0);
	}
	/* Suffix (docs/device/module-format.md#suffix-and-checksums), ending at
	 * module_end_address. */
	size_t suffix = d->rtl_suffix ? 62 : 40;
	uint8_t *s = b + d->len - 4 - suffix;
	memset(s, 0, suffix);
	if (d->rtl_suffix) {
		bytes_put_le16(s, 0x0002);
		bytes_put_le16(s + 2, 16);
		bytes_put_le32(s + 4, d->start);
		bytes_put_le32(s + 8, 0);
		bytes_put_le32(s + 12, 0);
		bytes_put_le16(s + 16, 0x0001);
		bytes_put_le16(s + 18, 10);
		bytes_put_le32(s + 20, (uint32_t)d->platform_id << 16);
		bytes_put_le16(s + 24, 1);
	} else {
		bytes_put_le16(s, d->platform_id); /* product id = platform id since 4.0.0 */
		bytes_put_le16(s + 2, 1);
	}
	bytes_put_le16(b + d->len - 6, (uint16_t)suffix);
	struct sha256_ctx sha;
	sha256_init(&sha);
	sha256_update(&sha, d->len - 38, b);
	sha256_digest(&sha, SHA256_DIGEST_SIZE, b + d->len - 38);
	uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(d->len - 4));
	b[d->len - 4] = (uint8_t)(crc >> 24);
	b[d->len - 3] = (uint8_t)(crc >> 16);
	b[d->len - 2] = (uint8_t)(crc >> 8);
	b[d->len - 1] = (uint8_t)crc;
	return b;
}

static void place(struct flash *f, const struct module_desc *d)
{
	uint8_t *img = modules_build(d);
	flash_program(f, 0, d->start, img, d->len);
	g_free(img);
}

static struct module_desc desc(uint32_t start, size_t len, size_t off, uint8_t function,
			       uint8_t index, uint16_t version, uint16_t platform_id)
{
	struct module_desc d = {.start = start,
				.len = len,
				.prefix_offset = off,
				.function = function,
				.index = index,
				.version = version,
				.platform_id = platform_id};
	return d;
}

static void dep(struct module_desc *d, int slot, uint8_t function, uint8_t index, uint16_t version)
{
	d->dep_function[slot] = function;
	d->dep_index[slot] = index;
	d->dep_version[slot] = version;
}

/*
 * docs/device/memory-maps.md#gen-2 and the dependency chains of docs/device/validation.md / the
 * fixtures' prefixes.  The
 * bootloader and SoftDevice dependencies are the release's own (proto/osver:
 * the MODULE_DEPENDENCY defines of Device OS's part build files at its tag);
 * 0 means the release's system part declares none.
 */
static void install_gen2(struct flash *f, const struct sim_spec *sp)
{
	uint16_t pid = sp->platform->id, sys = sp->system_version, bl = sp->bootloader_version;
	uint16_t bl_dep = sp->bootloader_dep;
	struct module_desc d =
	    desc(0x08000000, SYNTH_BOOTLOADER_SIZE, 0x184, MODULE_FUNCTION_BOOTLOADER, 0, bl, pid);
	place(f, &d);
	if (pid == 10) {
		/* Electron: module 1 @0x08020000, 2 @0x08040000, 3 @0x08060000 (no vector table).
		 */
		d = desc(0x08020000, SYNTH_SYSTEM_SIZE, 0x184, MODULE_FUNCTION_SYSTEM, 1, sys, pid);
		dep(&d, 0, MODULE_FUNCTION_SYSTEM, 3, sys);
		place(f, &d);
		d = desc(0x08040000, SYNTH_SYSTEM_SIZE, 0x184, MODULE_FUNCTION_SYSTEM, 2, sys, pid);
		dep(&d, 0, MODULE_FUNCTION_SYSTEM, 1, sys);
		if (bl_dep)
			dep(&d, 1, MODULE_FUNCTION_BOOTLOADER, 0, bl_dep);
		place(f, &d);
		d = desc(0x08060000, SYNTH_SYSTEM_SIZE, 0, MODULE_FUNCTION_SYSTEM, 3, sys, pid);
		dep(&d, 0, MODULE_FUNCTION_SYSTEM, 2, 110);
		place(f, &d);
		d = desc(0x08080000, SYNTH_USER_SIZE, 0, MODULE_FUNCTION_USER, 1, TINKER_VERSION,
			 pid);
	} else {
		d = desc(0x08020000, SYNTH_SYSTEM_SIZE, 0x184, MODULE_FUNCTION_SYSTEM, 1, sys, pid);
		dep(&d, 0, MODULE_FUNCTION_SYSTEM, 2, 207);
		place(f, &d);
		d = desc(0x08060000, SYNTH_SYSTEM_SIZE, 0x184, MODULE_FUNCTION_SYSTEM, 2, sys, pid);
		dep(&d, 0, MODULE_FUNCTION_SYSTEM, 1, sys);
		if (bl_dep)
			dep(&d, 1, MODULE_FUNCTION_BOOTLOADER, 0, bl_dep);
		place(f, &d);
		d = desc(0x080a0000, SYNTH_USER_SIZE, 0, MODULE_FUNCTION_USER, 1, TINKER_VERSION,
			 pid);
	}
	dep(&d, 0, MODULE_FUNCTION_SYSTEM, 2, sys);
	place(f, &d);
}

static void install_gen3(struct flash *f, const struct sim_spec *sp)
{
	uint16_t pid = sp->platform->id, sys = sp->system_version, bl = sp->bootloader_version;
	struct module_desc d =
	    desc(0xf4000, SYNTH_BOOTLOADER_SIZE, 0x200, MODULE_FUNCTION_BOOTLOADER, 0, bl, pid);
	place(f, &d);
	/* SoftDevice: raw image, its prefix is dropped when flashed (flag 0x01). */
	uint8_t *raw = g_malloc(SYNTH_RADIO_SIZE);
	for (size_t i = 0; i < SYNTH_RADIO_SIZE; i++)
		raw[i] = (uint8_t)(i * 7 + 3);
	flash_program(f, 0, 0x1000, raw, SYNTH_RADIO_SIZE);
	g_free(raw);
	uint32_t sys_start = sys >= 6200 ? 0x28000 : 0x30000;
	d = desc(sys_start, SYNTH_SYSTEM_SIZE, 0x200, MODULE_FUNCTION_SYSTEM, 1, sys, pid);
	/* Argon lists the bootloader as dependency 2 (docs/device/validation.md). */
	int bl_slot = pid == 12 ? 1 : 0;
	if (sp->bootloader_dep)
		dep(&d, bl_slot, MODULE_FUNCTION_BOOTLOADER, 0, sp->bootloader_dep);
	if (sp->radio_dep)
		dep(&d, 1 - bl_slot, MODULE_FUNCTION_RADIO_STACK, 0, sp->radio_dep);
	place(f, &d);
	if (sys >= 3100)
		d = desc(0xb4000, SYNTH_USER_SIZE, 0, MODULE_FUNCTION_USER, 2, TINKER_VERSION, pid);
	else
		d = desc(0xd4000, SYNTH_USER_SIZE, 0, MODULE_FUNCTION_USER, 1, TINKER_VERSION, pid);
	dep(&d, 0, MODULE_FUNCTION_SYSTEM, 1, sys);
	place(f, &d);
}

static void install_rtl(struct flash *f, const struct sim_spec *sp)
{
	uint16_t pid = sp->platform->id, sys = sp->system_version, bl = sp->bootloader_version;
	/* The prebootloader part 1 and the bootloader's dependency on it: equal in every
	 * release's system_module_version.mk (PREBOOTLOADER_PART1_VERSION/_DEPENDENCY). */
	uint16_t prebl = sp->prebootloader_version ? sp->prebootloader_version : 9;
	struct module_desc d =
	    desc(0x08014000, SYNTH_BOOTLOADER_SIZE, 0, MODULE_FUNCTION_BOOTLOADER, 2, prebl, pid);
	place(f, &d);
	d = desc(0x08004000, SYNTH_BOOTLOADER_SIZE, 0x20, MODULE_FUNCTION_BOOTLOADER, 0, bl, pid);
	d.realtek_header = true;
	d.rtl_suffix = true;
	dep(&d, 0, MODULE_FUNCTION_BOOTLOADER, 2, prebl);
	place(f, &d);
	d = desc(0x08060000, SYNTH_SYSTEM_SIZE, 0, MODULE_FUNCTION_SYSTEM, 1, sys, pid);
	if (sp->bootloader_dep)
		dep(&d, 0, MODULE_FUNCTION_BOOTLOADER, 0, sp->bootloader_dep);
	place(f, &d);
	/* The user part grows downward from 0x08600000 (docs/device/memory-maps.md#p2-family). */
	d = desc(0x08600000 - SYNTH_USER_SIZE, SYNTH_USER_SIZE, 0, MODULE_FUNCTION_USER, 1,
		 TINKER_VERSION, pid);
	d.rtl_suffix = true;
	dep(&d, 0, MODULE_FUNCTION_SYSTEM, 1, sys);
	place(f, &d);
}

void modules_install(struct flash *f, const struct sim_spec *spec)
{
	switch (spec->platform->mcu) {
	case MCU_STM32F205:
		install_gen2(f, spec);
		break;
	case MCU_NRF52840:
		install_gen3(f, spec);
		break;
	case MCU_RTL8721D:
		install_rtl(f, spec);
		break;
	case MCU_STM32F103:
		break;
	}
}
