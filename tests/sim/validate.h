/*
 * The device's own judgement of its modules (docs/device/validation.md,
 * docs/device/ymodem.md#end-of-transfer): which slots
 * hold what, which checks pass, what the bootloader does at the next boot,
 * and the verdict on an image received over YMODEM.  Shared by DFU leave,
 * the YMODEM engine's ota_finish and the `s` reply.
 */
#pragma once

#include "flash.h"
#include "sim.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Validation flags (hal/inc/ota_flash_hal.h, docs/device/validation.md). */
#define VALID_INTEGRITY	   0x02u
#define VALID_DEPENDENCIES 0x04u
#define VALID_RANGE	   0x08u
#define VALID_PLATFORM	   0x10u
#define VALID_CHECKED	   (VALID_INTEGRITY | VALID_DEPENDENCIES | VALID_RANGE | VALID_PLATFORM)

/* System error codes of docs/device/ymodem.md#end-of-transfer. */
#define OTA_MODULE_NOT_FOUND	    (-1300)
#define OTA_VALIDATION_FAILED	    (-1320)
#define OTA_INTEGRITY_CHECK_FAILED  (-1330)
#define OTA_DEPENDENCY_CHECK_FAILED (-1340)
#define OTA_INVALID_ADDRESS	    (-1350)
#define OTA_INVALID_PLATFORM	    (-1360)
#define OTA_INVALID_FORMAT	    (-1370)

#define VALIDATE_MAX_MODULES 12

struct vmodule {
	uint8_t function, index, store;
	uint32_t address; /* where it sits in flash (slot) */
	uint32_t slot_size;
	uint32_t start, end; /* from its prefix */
	uint8_t flags;
	uint16_t version;
	uint16_t platform_id;
	uint8_t dep_function[2], dep_index[2];
	uint16_t dep_version[2];
	unsigned checked, passed;
	bool reported;
	/* radio stack: the device synthesises its entry
	 * (docs/device/console.md#module-info-reply) */
	bool synthetic;
	uint8_t sha256[32];
};

struct vscan {
	struct vmodule m[VALIDATE_MAX_MODULES];
	unsigned n;
};

/* Prefix offset by the device's rule for this MCU (docs/device/memory-maps.md#gen-3,
 * docs/device/module-format.md#where-the-prefix-is). */
size_t validate_prefix_offset(const struct platform *p, const uint8_t *img, size_t len);

void validate_scan(struct flash *f, const struct platform *p, uint16_t layout_version,
		   uint16_t radio_version, struct vscan *out);
/* The system part version found in flash (0 if none): picks the flash layout. */
uint16_t validate_system_version(const struct vscan *s);
/*
 * What the bootloader and Device OS do at the next boot: SIM_MODE_DFU
 * (system firmware invalid: the bootloader stays in DFU), SIM_MODE_SAFE
 * (application or dependencies fail) or SIM_MODE_NORMAL.
 */
enum sim_mode validate_boot_mode(const struct vscan *s, const struct platform *p);

/*
 * Validation of an image received into the OTA region (docs/device/ymodem.md#end-of-transfer,
 * docs/device/validation.md with the
 * update-time rules).  Returns 0 or the negative system error; *ret_mask =
 * checked XOR passed.  *ret_module (optional) describes the module.
 */
int validate_ota(const struct vscan *installed, const struct platform *p, uint16_t layout_version,
		 const uint8_t *img, size_t len, unsigned *ret_mask, struct vmodule *ret_module);

/* Appends the names of failed checks ("integrity", ...) to a JSON array. */

void validate_failed_names(unsigned checked, unsigned passed, json_t *array);
