#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* one row per platform, as in the facts tables (kept by hand) */
/* clang-format off */
#define KIB(n) ((uint32_t)(n) * 1024u)
#define ANY_VERSION 0xffff

/* Fields left out are zero: no cellular or Wi-Fi radio, no external flash, CDC on interface 0. */
/* docs/device/platforms.md#platform-table, docs/device/platforms.md#usb-strings-and-device-ids,
 * docs/device/platforms.md#runtime-interface-layout; Device OS support ranges as system module
 * versions (docs/device/releases.md#module-version-numbers). */
static const struct platform platforms[] = {
	{.id = 0, .name = "core", .display = "Core", .gen = 1, .mcu = MCU_STM32F103,
	 .vid = 0x1d50, .cdc_pid = 0x607d, .dfu_pid = 0x607f,
	 .cdc_product = "Spark Core", .dfu_product = "CORE DFU",
	 .wifi = true,
	 .first_system_version = 0, .last_system_version = 1999},
	{.id = 6, .name = "photon", .display = "Photon", .gen = 2, .mcu = MCU_STM32F205,
	 .vid = 0x2b04, .cdc_pid = 0xc006, .dfu_pid = 0xd006,
	 .cdc_product = "Photon", .dfu_product = "Photon DFU Mode",
	 .wifi = true,
	 .first_system_version = 0, .last_system_version = 3999},
	{.id = 8, .name = "p1", .display = "P1", .gen = 2, .mcu = MCU_STM32F205,
	 .vid = 0x2b04, .cdc_pid = 0xc008, .dfu_pid = 0xd008,
	 .cdc_product = "P1", .dfu_product = "P1 DFU Mode",
	 .wifi = true,
	 .first_system_version = 0, .last_system_version = 3999},
	{.id = 10, .name = "electron", .display = "Electron", .gen = 2, .mcu = MCU_STM32F205,
	 .vid = 0x2b04, .cdc_pid = 0xc00a, .dfu_pid = 0xd00a,
	 .cdc_product = "Electron", .dfu_product = "Electron DFU Mode",
	 .cellular = true,
	 .first_system_version = 0, .last_system_version = 3999},
	{.id = 12, .name = "argon", .display = "Argon", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc00c, .dfu_pid = 0xd00c,
	 .cdc_product = "Argon CDC Mode", .dfu_product = "Argon DFU Mode",
	 .wifi = true, .ext_flash_size = 4u << 20,
	 .first_system_version = 300, .last_system_version = ANY_VERSION},
	{.id = 13, .name = "boron", .display = "Boron", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc00d, .dfu_pid = 0xd00d,
	 .cdc_product = "Boron CDC Mode", .dfu_product = "Boron DFU Mode",
	 .cellular = true, .ext_flash_size = 4u << 20,
	 .first_system_version = 300, .last_system_version = ANY_VERSION},
	{.id = 14, .name = "xenon", .display = "Xenon", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc00e, .dfu_pid = 0xd00e,
	 .cdc_product = "Xenon CDC Mode", .dfu_product = "Xenon DFU Mode",
	 .ext_flash_size = 4u << 20,
	 .first_system_version = 300, .last_system_version = 1999},
	{.id = 15, .name = "esomx", .display = "E-SoM-X", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc00f, .dfu_pid = 0xd00f,
	 .cdc_product = "E-SoM-X CDC Mode", .dfu_product = "E-SoM-X DFU Mode",
	 .cellular = true, .ext_flash_size = 8u << 20,
	 .first_system_version = 4000, .last_system_version = ANY_VERSION},
	{.id = 22, .name = "asom", .display = "A-SoM", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc016, .dfu_pid = 0xd016,
	 .cdc_product = "A SoM CDC Mode", .dfu_product = "A-SoM DFU Mode",
	 .wifi = true, .ext_flash_size = 4u << 20,
	 .first_system_version = 300, .last_system_version = ANY_VERSION},
	{.id = 23, .name = "bsom", .display = "B-SoM", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc017, .dfu_pid = 0xd017,
	 .cdc_product = "B-SoM CDC Mode", .dfu_product = "B-SoM DFU Mode",
	 .cellular = true, .ext_flash_size = 4u << 20,
	 .first_system_version = 1000, .last_system_version = ANY_VERSION},
	{.id = 24, .name = "xsom", .display = "X-SoM", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc018, .dfu_pid = 0xd018,
	 .cdc_product = "X SoM CDC Mode", .dfu_product = "X-SoM DFU Mode",
	 .ext_flash_size = 4u << 20,
	 .first_system_version = 1000, .last_system_version = 1999},
	{.id = 25, .name = "b5som", .display = "B5-SoM", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc019, .dfu_pid = 0xd019,
	 .cdc_product = "B5-SoM CDC Mode", .dfu_product = "B5-SoM DFU Mode",
	 .cellular = true, .ext_flash_size = 8u << 20,
	 .first_system_version = 1400, .last_system_version = ANY_VERSION},
	{.id = 26, .name = "tracker", .display = "Tracker", .gen = 3, .mcu = MCU_NRF52840,
	 .vid = 0x2b04, .cdc_pid = 0xc01a, .dfu_pid = 0xd01a,
	 .cdc_product = "Tracker CDC Mode", .dfu_product = "Tracker DFU Mode",
	 .cellular = true, .wifi = true, .ext_flash_size = 8u << 20,
	 .first_system_version = 1500, .last_system_version = ANY_VERSION},
	{.id = 28, .name = "trackerm", .display = "Tracker M", .gen = 4, .mcu = MCU_RTL8721D,
	 .vid = 0x2b04, .cdc_pid = 0xc01c, .dfu_pid = 0xd01c,
	 .cdc_product = "TrackerM", .dfu_product = "TrackerM DFU Mode",
	 .cellular = true, .wifi = true, .cdc_interface = 1,
	 .first_system_version = 5000, .last_system_version = ANY_VERSION},
	{.id = 32, .name = "p2", .display = "P2 / Photon 2", .gen = 4, .mcu = MCU_RTL8721D,
	 .vid = 0x2b04, .cdc_pid = 0xc020, .dfu_pid = 0xd020,
	 .cdc_product = "P2", .dfu_product = "P2 DFU Mode",
	 .wifi = true, .cdc_interface = 1,
	 .first_system_version = 5000, .last_system_version = ANY_VERSION},
	{.id = 35, .name = "msom", .display = "M-SoM", .gen = 4, .mcu = MCU_RTL8721D,
	 .vid = 0x2b04, .cdc_pid = 0xc023, .dfu_pid = 0xd023,
	 .cdc_product = "M-SoM", .dfu_product = "M-SoM DFU Mode",
	 .cellular = true, .wifi = true, .cdc_interface = 1,
	 .first_system_version = 5500, .last_system_version = ANY_VERSION},
};
/* clang-format on */

#define N_PLATFORMS (sizeof(platforms) / sizeof(platforms[0]))

/* Aliases people type. */
static const struct {
	const char *alias;
	uint16_t id;
} aliases[] = {
    {"photon2", 32},   {"photon-2", 32},    {"p2-photon2", 32},	 {"e-som-x", 15},
    {"esom", 15},      {"e-som", 15},	    {"a-som", 22},	 {"b-som", 23},
    {"x-som", 24},     {"b5-som", 25},	    {"b5", 25},		 {"m-som", 35},
    {"tracker-m", 28}, {"tracker-one", 26}, {"monitor-one", 26}, {"e-series", 10},
    {"spark-core", 0},
};

size_t platform_count(void)
{
	return N_PLATFORMS;
}

const struct platform *platform_at(size_t i)
{
	return i < N_PLATFORMS ? &platforms[i] : NULL;
}

const struct platform *platform_by_id(int id)
{
	for (size_t i = 0; i < N_PLATFORMS; i++)
		if (platforms[i].id == id)
			return &platforms[i];
	return NULL;
}

const struct platform *platform_by_name(const char *name)
{
	if (!name || !*name)
		return NULL;
	char *end;
	long id = strtol(name, &end, 10);
	if (*end == '\0')
		return platform_by_id((int)id);
	for (size_t i = 0; i < N_PLATFORMS; i++)
		if (strcasecmp(platforms[i].name, name) == 0 ||
		    strcasecmp(platforms[i].display, name) == 0)
			return &platforms[i];
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcasecmp(aliases[i].alias, name) == 0)
			return platform_by_id(aliases[i].id);
	return NULL;
}

const struct platform *platform_by_usb(uint16_t vid, uint16_t pid, enum platform_usb_mode *ret_mode)
{
	for (size_t i = 0; i < N_PLATFORMS; i++) {
		const struct platform *p = &platforms[i];
		if (p->vid != vid)
			continue;
		if (p->cdc_pid == pid || p->dfu_pid == pid) {
			if (ret_mode)
				*ret_mode = p->cdc_pid == pid ? PLATFORM_USB_CDC : PLATFORM_USB_DFU;
			return p;
		}
	}
	if (ret_mode)
		*ret_mode = PLATFORM_USB_NONE;
	return NULL;
}

/* one row per slot, as in the facts tables (kept by hand): function, index, store, start, end;
 * .external is left out (false) in every row: no slot below is in external flash */
/* clang-format off */
/* docs/device/memory-maps.md#gen-2 Photon / P1 */
static const struct slot slots_photon[] = {
	{MODULE_FUNCTION_BOOTLOADER, 0, MODULE_STORE_MAIN, 0x08000000, 0x08004000, .name = "bootloader"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x08020000, 0x08060000, .name = "system part 1"},
	{MODULE_FUNCTION_SYSTEM, 2, MODULE_STORE_MAIN, 0x08060000, 0x080a0000, .name = "system part 2"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0x080a0000, 0x080c0000, .name = "user part"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_FACTORY, 0x080e0000, 0x08100000, .name = "factory app"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x08020000, 0x08080000, .name = "monolithic"},
};

/* docs/device/memory-maps.md#gen-2 Electron: note system module 1/2/3 versus the file names. */
static const struct slot slots_electron[] = {
	{MODULE_FUNCTION_BOOTLOADER, 0, MODULE_STORE_MAIN, 0x08000000, 0x08004000, .name = "bootloader"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x08020000, 0x08040000, .name = "system module 1"},
	{MODULE_FUNCTION_SYSTEM, 2, MODULE_STORE_MAIN, 0x08040000, 0x08060000, .name = "system module 2"},
	{MODULE_FUNCTION_SYSTEM, 3, MODULE_STORE_MAIN, 0x08060000, 0x08080000, .name = "system module 3"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0x08080000, 0x080a0000, .name = "user part"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_FACTORY, 0x080a0000, 0x080c0000, .name = "factory app"},
};

/* docs/device/memory-maps.md#gen-2 Core: monolithic firmware after the 20 KiB bootloader (details
 * UNVERIFIED). */
static const struct slot slots_core[] = {
	{MODULE_FUNCTION_BOOTLOADER, 0, MODULE_STORE_MAIN, 0x08000000, 0x08005000, .name = "bootloader"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x08005000, 0x08020000, .name = "monolithic"},
};

/*
 * docs/device/memory-maps.md#gen-3 Gen 3.  The NCP slot (ESP32 on Argon/Tracker) is the
 * coprocessor's own
 * flash; its extent is INFERRED (4 MiB ESP32 module).
 */
#define GEN3_COMMON \
	{MODULE_FUNCTION_BOOTLOADER, 0, MODULE_STORE_MAIN, 0xf4000, 0x100000, .name = "bootloader"}, \
	{MODULE_FUNCTION_NCP, 0, MODULE_STORE_MAIN, 0x0, 0x400000, .name = "network coprocessor"}

static const struct slot slots_gen3_v1[] = { /* Device OS <= 3.0.x */
	{MODULE_FUNCTION_RADIO_STACK, 0, MODULE_STORE_MAIN, 0x1000, 0x30000, .name = "radio stack"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x30000, 0xd4000, .name = "system part 1"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0xd4000, 0xf4000, .name = "user part (128 KiB)"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x30000, 0xf4000, .name = "monolithic"},
	GEN3_COMMON,
};

static const struct slot slots_gen3_v2[] = { /* Device OS 3.1.0 - 6.1.x */
	{MODULE_FUNCTION_RADIO_STACK, 0, MODULE_STORE_MAIN, 0x1000, 0x30000, .name = "radio stack"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x30000, 0xb4000, .name = "system part 1"},
	{MODULE_FUNCTION_USER, 2, MODULE_STORE_MAIN, 0xb4000, 0xf4000, .name = "user part (256 KiB)"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0xd4000, 0xf4000, .name = "user part (128 KiB, compat)"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x30000, 0xf4000, .name = "monolithic"},
	GEN3_COMMON,
};

static const struct slot slots_gen3_v3[] = { /* Device OS >= 6.2.0 */
	{MODULE_FUNCTION_RADIO_STACK, 0, MODULE_STORE_MAIN, 0x1000, 0x27000, .name = "radio stack"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x28000, 0xb4000, .name = "system part 1"},
	{MODULE_FUNCTION_USER, 2, MODULE_STORE_MAIN, 0xb4000, 0xf4000, .name = "user part (256 KiB)"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0xd4000, 0xf4000, .name = "user part (128 KiB, compat)"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x28000, 0xf4000, .name = "monolithic"},
	GEN3_COMMON,
};

/* docs/device/memory-maps.md#p2-family P2 family: the user part grows downward from 0x08600000. */
static const struct slot slots_rtl[] = {
	{MODULE_FUNCTION_BOOTLOADER, 1, MODULE_STORE_MAIN, 0x08000000, 0x08002000, .name = "KM0 MBR"},
	{MODULE_FUNCTION_BOOTLOADER, 0, MODULE_STORE_MAIN, 0x08004000, 0x08014000, .name = "bootloader"},
	{MODULE_FUNCTION_BOOTLOADER, 2, MODULE_STORE_MAIN, 0x08014000, 0x0805e000, .name = "KM0 part 1"},
	{MODULE_FUNCTION_SYSTEM, 1, MODULE_STORE_MAIN, 0x08060000, 0x081e0000, .name = "system part 1"},
	{MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN, 0x08480000, 0x08600000, .name = "user part"},
	{MODULE_FUNCTION_MONO, 0, MODULE_STORE_MAIN, 0x08060000, 0x08460000, .name = "monolithic"},
};
/* clang-format on */

#define SLOTS(a) (*ret = (a), sizeof(a) / sizeof((a)[0]))

size_t platform_slots(const struct platform *p, uint16_t system_version, const struct slot **ret)
{
	*ret = NULL;
	if (!p)
		return 0;
	switch (p->mcu) {
	case MCU_STM32F103:
		return SLOTS(slots_core);
	case MCU_STM32F205:
		return p->id == 10 ? SLOTS(slots_electron) : SLOTS(slots_photon);
	case MCU_NRF52840:
		if (system_version != 0 && system_version < 3100)
			return SLOTS(slots_gen3_v1);
		if (system_version != 0 && system_version < 6200)
			return SLOTS(slots_gen3_v2);
		return SLOTS(slots_gen3_v3);
	case MCU_RTL8721D:
		return SLOTS(slots_rtl);
	}
	return 0;
}

const char *platform_layout_name(const struct platform *p, uint16_t system_version)
{
	if (!p || p->mcu != MCU_NRF52840)
		return "flash layout";
	if (system_version == 0)
		return "Device OS 6.2+ layout (installed version unknown)";
	if (system_version < 3100)
		return "Device OS 3.0 and earlier layout";
	if (system_version < 6200)
		return "Device OS 3.1-6.1 layout";
	return "Device OS 6.2+ layout";
}

const struct slot *platform_find_slot(const struct platform *p, uint16_t system_version,
				      uint8_t function, uint8_t index, uint8_t store)
{
	const struct slot *s;
	size_t n = platform_slots(p, system_version, &s);
	for (size_t i = 0; i < n; i++)
		if (s[i].function == function && s[i].index == index && s[i].store == store)
			return &s[i];
	return NULL;
}

static const struct {
	const char *name;
	const char *phrase;
	char letter;
} functions[] = {
    [MODULE_FUNCTION_NONE] = {"none", "unknown module", 'n'},
    [MODULE_FUNCTION_RESOURCE] = {"resource", "resource module", 'r'},
    [MODULE_FUNCTION_BOOTLOADER] = {"bootloader", "bootloader", 'b'},
    [MODULE_FUNCTION_MONO] = {"monolithic", "monolithic firmware", 'm'},
    [MODULE_FUNCTION_SYSTEM] = {"system", "system part", 's'},
    [MODULE_FUNCTION_USER] = {"user", "application", 'u'},
    [MODULE_FUNCTION_SETTINGS] = {"settings", "settings module", '_'},
    [MODULE_FUNCTION_NCP] = {"ncp", "network coprocessor firmware", 'c'},
    [MODULE_FUNCTION_RADIO_STACK] = {"radio-stack", "radio stack (SoftDevice)", 'a'},
    [MODULE_FUNCTION_ASSET] = {"asset", "asset", 't'},
};

#define N_FUNCTIONS (sizeof(functions) / sizeof(functions[0]))

const char *module_function_name(int function)
{
	return function >= 0 && (size_t)function < N_FUNCTIONS ? functions[function].name
							       : "unknown";
}

const char *module_function_phrase(int function)
{
	return function >= 0 && (size_t)function < N_FUNCTIONS ? functions[function].phrase
							       : "unknown module";
}

char module_function_letter(int function)
{
	return function >= 0 && (size_t)function < N_FUNCTIONS ? functions[function].letter : '_';
}

int module_function_from_letter(char c)
{
	for (size_t i = 0; i < N_FUNCTIONS; i++)
		if (functions[i].letter == c && c != '_')
			return (int)i;
	return -1;
}

const char *module_store_name(int store)
{
	static const char *const names[] = {"main", "factory", "backup", "scratchpad"};
	return store >= 0 && store < 4 ? names[store] : "unknown";
}

const char *module_check_name(unsigned bit)
{
	switch (bit) {
	case MODULE_CHECK_INTEGRITY:
		return "integrity";
	case MODULE_CHECK_DEPENDENCIES:
		return "dependencies";
	case MODULE_CHECK_RANGE:
		return "range";
	case MODULE_CHECK_PLATFORM:
		return "platform";
	case MODULE_CHECK_PRODUCT:
		return "product";
	case MODULE_CHECK_DEPENDENCIES_FULL:
		return "dependencies-full";
	}
	return "unknown";
}

unsigned module_checks_named(unsigned mask, const char *ret[MODULE_CHECKS_MAX])
{
	unsigned n = 0;
	for (unsigned bit = 1; bit < MODULE_CHECK_END; bit <<= 1)
		if (mask & bit)
			ret[n++] = module_check_name(bit);
	return n;
}

unsigned module_checks_failed(unsigned checked, unsigned passed, const char *ret[MODULE_CHECKS_MAX])
{
	return module_checks_named(checked & ~passed, ret);
}

void module_checks_text(unsigned mask, char *buf, size_t size)
{
	size_t o = 0;
	buf[0] = '\0';
	for (unsigned bit = 1; bit < MODULE_CHECK_END; bit <<= 1) {
		const char *name = module_check_name(bit);
		if ((mask & bit) && strcmp(name, "unknown") != 0 && o < size)
			o += (size_t)snprintf(buf + o, size - o, "%s%s", o ? ", " : "", name);
	}
	if (!buf[0])
		snprintf(buf, size, "unknown");
}
