#include "osver.h"

#include "platform.h"

#include <stdio.h>
#include <string.h>

/* rows of four, as in docs/device/releases.md#module-version-numbers (kept by hand) */
/* clang-format off */
/* Rows come from docs/device/releases.md#module-version-numbers and from fixtures whose file names
 * carry the release. */
static const struct os_release releases[] = {
	{"0.5.2", 17, 0, 0},       {"0.6.4", 110, 0, 0},      {"0.7.0", 207, 101, 0},
	{"0.8.0-rc.27", 326, 215, 182}, {"1.0.0", 1000, 201, 202}, {"1.0.1", 1002, 201, 202},
	{"1.1.0", 1102, 301, 202}, {"1.2.1", 1213, 311, 202}, {"1.4.4", 1406, 501, 202},
	{"1.5.0", 1502, 501, 202}, {"1.5.2", 1512, 502, 202}, {"2.0.0", 2008, 1003, 202},
	{"2.0.1", 2011, 1005, 202}, {"2.2.0", 2202, 1006, 202}, {"2.3.1", 2302, 1006, 202},
	{"3.0.0", 3005, 1005, 202}, {"3.1.0", 3103, 1100, 202}, {"4.0.0", 4003, 1101, 202},
	{"4.2.0", 4200, 1200, 202}, {"5.0.0", 5002, 2000, 202}, {"5.3.1", 5301, 2101, 202},
	{"5.9.0", 5901, 2700, 202}, {"6.0.0", 6000, 3000, 202}, {"6.2.0", 6200, 3100, 202},
};
/* clang-format on */

#define N_RELEASES (sizeof(releases) / sizeof(releases[0]))

unsigned osver_count(void)
{
	return N_RELEASES;
}

const struct os_release *osver_at(unsigned i)
{
	return i < N_RELEASES ? &releases[i] : NULL;
}

const struct os_release *osver_by_release(const char *version)
{
	for (size_t i = 0; version && i < N_RELEASES; i++)
		if (strcmp(releases[i].version, version) == 0)
			return &releases[i];
	return NULL;
}

const struct os_release *osver_by_system_version(uint16_t system_version)
{
	for (size_t i = 0; i < N_RELEASES; i++)
		if (releases[i].system == system_version)
			return &releases[i];
	return NULL;
}

const char *osver_release_for(int module_function, uint16_t module_version)
{
	if (module_function == MODULE_FUNCTION_SYSTEM || module_function == MODULE_FUNCTION_MONO) {
		const struct os_release *r = osver_by_system_version(module_version);
		return r ? r->version : NULL;
	}
	if (module_function == MODULE_FUNCTION_BOOTLOADER) {
		/* Bootloader versions are shared by several releases: name one only if unique. */
		const char *found = NULL;
		for (size_t i = 0; i < N_RELEASES; i++) {
			if (releases[i].bootloader != module_version)
				continue;
			if (found)
				return NULL;
			found = releases[i].version;
		}
		return found;
	}
	return NULL;
}

uint16_t osver_module_version(const struct os_release *r, int platform_id, int module_function)
{
	(void)platform_id; /* one column per module for now; per-platform rows come with the
			      generated table */
	if (!r)
		return 0;
	switch (module_function) {
	case MODULE_FUNCTION_SYSTEM:
	case MODULE_FUNCTION_MONO:
		return r->system;
	case MODULE_FUNCTION_BOOTLOADER:
		return r->bootloader;
	case MODULE_FUNCTION_RADIO_STACK:
		return r->radio_stack;
	default:
		return 0;
	}
}

const struct os_release *osver_first_providing(int platform_id, int module_function,
					       uint16_t min_version)
{
	for (size_t i = 0; i < N_RELEASES; i++) {
		uint16_t v = osver_module_version(&releases[i], platform_id, module_function);
		if (v != 0 && v >= min_version)
			return &releases[i];
	}
	return NULL;
}

bool osver_span(int platform_id, int module_function, uint16_t version,
		const struct os_release **ret_first, const struct os_release **ret_last)
{
	*ret_first = *ret_last = NULL;
	for (size_t i = 0; version != 0 && i < N_RELEASES; i++) {
		if (osver_module_version(&releases[i], platform_id, module_function) != version)
			continue;
		if (!*ret_first)
			*ret_first = &releases[i];
		*ret_last = &releases[i];
	}
	return *ret_first != NULL;
}

int osver_parse(const char *s, int *ret_major, int *ret_minor, int *ret_patch)
{
	int major, minor, patch, n = 0;
	if (!s || sscanf(s, "%d.%d.%d%n", &major, &minor, &patch, &n) != 3)
		return -1;
	if (s[n] != '\0' && s[n] != '-' && s[n] != '+')
		return -1;
	if (major < 0 || minor < 0 || patch < 0 || major > 99 || minor > 99 || patch > 99)
		return -1;
	*ret_major = major;
	*ret_minor = minor;
	*ret_patch = patch;
	return 0;
}

int osver_compare(const char *a, const char *b)
{
	int a1 = 0, a2 = 0, a3 = 0, b1 = 0, b2 = 0, b3 = 0;
	osver_parse(a, &a1, &a2, &a3);
	osver_parse(b, &b1, &b2, &b3);
	if (a1 != b1)
		return a1 < b1 ? -1 : 1;
	if (a2 != b2)
		return a2 < b2 ? -1 : 1;
	if (a3 != b3)
		return a3 < b3 ? -1 : 1;
	return 0;
}
