/*
 * The platform catalogue: identities, USB ids and flash slots of every
 * Particle platform flashd knows (docs/device/platforms.md, docs/device/memory-maps.md).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mcu {
	MCU_STM32F103, /* Core */
	MCU_STM32F205, /* Gen 2 */
	MCU_NRF52840,  /* Gen 3 */
	MCU_RTL8721D,  /* P2 family */
};

/* Module functions (module_info_t.module_function,
 * docs/device/module-format.md#module-functions). */
enum module_function {
	MODULE_FUNCTION_NONE = 0,
	MODULE_FUNCTION_RESOURCE = 1,
	MODULE_FUNCTION_BOOTLOADER = 2,
	MODULE_FUNCTION_MONO = 3,
	MODULE_FUNCTION_SYSTEM = 4,
	MODULE_FUNCTION_USER = 5,
	MODULE_FUNCTION_SETTINGS = 6,
	MODULE_FUNCTION_NCP = 7,
	MODULE_FUNCTION_RADIO_STACK = 8,
	MODULE_FUNCTION_ASSET = 9,
};

/* Validation checks (module_validation_flags_t, docs/device/validation.md): the bits of a module's
 * checked (vc) and passed (vv) masks in the `s` reply, and of the failed-check
 * mask 0.6.1-1.5.x print after "Validation failed:" (docs/device/ymodem.md#end-of-transfer). */
enum module_check {
	MODULE_CHECK_INTEGRITY = 0x02,
	MODULE_CHECK_DEPENDENCIES = 0x04,
	MODULE_CHECK_RANGE = 0x08,
	MODULE_CHECK_PLATFORM = 0x10,
	MODULE_CHECK_PRODUCT = 0x20,
	MODULE_CHECK_DEPENDENCIES_FULL = 0x40,
};
#define MODULE_CHECK_END  0x80 /* MODULE_VALIDATION_END: no check at or above it */
#define MODULE_CHECKS_MAX 7    /* bits below MODULE_CHECK_END */

enum module_store {
	MODULE_STORE_MAIN = 0,
	MODULE_STORE_FACTORY = 1,
	MODULE_STORE_BACKUP = 2,
	MODULE_STORE_SCRATCHPAD = 3,
};

struct platform {
	uint16_t id;
	const char *name;    /* build / device-constants name: "photon", "bsom" */
	const char *display; /* "Photon", "B-SoM" */
	int gen;	     /* 1, 2, 3; the P2 family is 4 here (device-constants) */
	enum mcu mcu;
	uint16_t vid;
	uint16_t cdc_pid;
	uint16_t dfu_pid;
	const char *cdc_product; /* USB iProduct in runtime (CDC) mode */
	const char *dfu_product; /* USB iProduct in DFU mode */
	bool cellular;
	bool wifi;
	uint32_t ext_flash_size; /* Gen 3 external QSPI flash, bytes; 0 = none */
	/* interface number of the CDC comm interface
	 * (docs/device/platforms.md#runtime-interface-layout) */
	uint8_t cdc_interface;
	uint16_t first_system_version; /* first Device OS supporting it, as system module version */
	uint16_t last_system_version;  /* last one (0xffff = still supported) */
};

/* A flash slot ("module bounds") the device validates modules against. */
struct slot {
	uint8_t function; /* enum module_function */
	uint8_t index;
	uint8_t store; /* enum module_store */
	uint32_t start;
	uint32_t end;  /* exclusive */
	bool external; /* Gen 3 external flash (DFU alt 2 at 0x80000000 + offset) */
	const char *name;
};

size_t platform_count(void);
const struct platform *platform_at(size_t i);
const struct platform *platform_by_id(int id);
/* Accepts names, display names and common aliases ("photon2", "b-som"), case-insensitive,
 * and decimal ids. */
const struct platform *platform_by_name(const char *name);
enum platform_usb_mode { PLATFORM_USB_NONE, PLATFORM_USB_CDC, PLATFORM_USB_DFU };
const struct platform *platform_by_usb(uint16_t vid, uint16_t pid,
				       enum platform_usb_mode *ret_mode);

/*
 * Slots for a platform under the flash layout of a given installed system
 * module version (0 = unknown: the newest layout).  Gen 3 has three layouts:
 * < 3100 (Device OS ≤ 3.0.x), 3100–6199, ≥ 6200 (docs/device/memory-maps.md#gen-3).
 */
size_t platform_slots(const struct platform *p, uint16_t system_version, const struct slot **ret);
const struct slot *platform_find_slot(const struct platform *p, uint16_t system_version,
				      uint8_t function, uint8_t index, uint8_t store);
/* Layout era name for messages: "Device OS 3.1–6.1 layout". */
const char *platform_layout_name(const struct platform *p, uint16_t system_version);

const char *module_function_name(int function);	  /* "system", "user", "radio-stack" ... */
const char *module_function_phrase(int function); /* "system part", "application", ... */
char module_function_letter(int function);	  /* s-JSON letter: 's', 'u', 'b' ... */
int module_function_from_letter(char c);	  /* -1 if unknown */
const char *module_store_name(int store);	  /* "main", "factory", ... */
const char *module_check_name(unsigned bit);	  /* "integrity", ...; "unknown" */
/* The checks in mask, by name in bit order ("unknown" for a bit no check uses);
 * returns how many. */
unsigned module_checks_named(unsigned mask, const char *ret[MODULE_CHECKS_MAX]);
/* The checks in checked but not in passed, as module_checks_named(). */
unsigned module_checks_failed(unsigned checked, unsigned passed,
			      const char *ret[MODULE_CHECKS_MAX]);
/* The named checks of mask joined with ", " ("range, platform" for 0x18);
 * "unknown" if it names none. */
void module_checks_text(unsigned mask, char *buf, size_t size);
