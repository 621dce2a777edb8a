/*
 * The modules installed on a simulated device, synthesised at start-up so
 * that they are consistent with its platform and Device OS (docs/device/memory-maps.md,
 * docs/device/module-format.md):
 * prefixes at the device's offsets, suffixes, SHA-256 and big-endian
 * CRC-32.  No fixture is needed at run time.
 */
#pragma once

#include "flash.h"
#include "sim.h"

#include <stddef.h>
#include <stdint.h>

/* Writes bootloader, system part(s) and an application (Tinker-like) into f. */
void modules_install(struct flash *f, const struct sim_spec *spec);

/*
 * Builds one module file: total size len, prefix at prefix_offset, 40-byte
 * suffix (62 with DYNAMIC_LOCATION on RTL872x user parts/bootloaders).
 * Exposed for tests of the validation model.  g_free() the result.
 */
struct module_desc {
	uint32_t start;
	size_t len;
	size_t prefix_offset;
	uint8_t function, index;
	uint16_t version;
	uint16_t platform_id;
	uint8_t dep_function[2], dep_index[2];
	uint16_t dep_version[2];
	bool rtl_suffix;
	bool realtek_header;
};
uint8_t *modules_build(const struct module_desc *d);
