/*
 * Module version numbers versus Device OS releases (docs/device/releases.md#module-version-numbers
 * and the shared fixtures).  Module versions are opaque numbers compared
 * numerically; a release is named only where the table pins it exactly.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct os_release {
	const char *version;  /* "2.2.0" */
	uint16_t system;      /* system part module version */
	uint16_t bootloader;  /* bootloader module version shipped with it (0 = unknown) */
	uint16_t radio_stack; /* Gen 3 SoftDevice module version it needs (0 = unknown) */
};

/* The release with exactly this version string, or NULL. */
const struct os_release *osver_by_release(const char *version);
/* The release whose system module version is exactly this, or NULL. */
const struct os_release *osver_by_system_version(uint16_t system_version);
/* "2.2.0" when a system or bootloader module version pins a release, else NULL. */
const char *osver_release_for(int module_function, uint16_t module_version);
/*
 * Per-platform questions (the planner's messages and flashd-sim's rows).
 * platform_id is the module prefix's platform id (6 Photon, 12 Argon, ...);
 * module_function is MODULE_FUNCTION_SYSTEM, _BOOTLOADER or _RADIO_STACK.
 */
/* The version of that module the release ships for the platform (0 = unknown). */
uint16_t osver_module_version(const struct os_release *r, int platform_id, int module_function);
/* The oldest release whose module of that function for the platform is >= min_version, or NULL. */
const struct os_release *osver_first_providing(int platform_id, int module_function,
					       uint16_t min_version);
/* The first and last releases that shipped exactly this module version on the
 * platform ("bootloader 1006: 2.2.0-2.3.1"); false (and NULLs) when none did. */
bool osver_span(int platform_id, int module_function, uint16_t version,
		const struct os_release **ret_first, const struct os_release **ret_last);
/* Parses "MAJOR.MINOR.PATCH[-pre]"; returns 0 and fills the parts, -1 if malformed. */
int osver_parse(const char *s, int *ret_major, int *ret_minor, int *ret_patch);
/* Compares two version strings numerically (major, minor, patch). */
int osver_compare(const char *a, const char *b);
/* The table, for documentation and the simulator. */
unsigned osver_count(void);
const struct os_release *osver_at(unsigned i);
