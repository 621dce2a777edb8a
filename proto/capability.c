#include "capability.h"

#include "osver.h"

#include <stddef.h>

#define MCU_BIT(m) (1u << (m))
#define ANY_MCU	   0u

/*
 * One row: the capability holds on these MCUs (ANY_MCU = all) and, if set,
 * these platform ids (bit N = platform id N; 0 = every platform of the MCUs),
 * for system module versions from `since` (inclusive) to `until` (exclusive;
 * 0 = still holds).  A capability holds where any of its rows does, and
 * nowhere else.
 */
struct capability_row {
	enum capability cap;
	unsigned mcus;
	uint64_t platforms;
	uint16_t since, until;
};

#define GEN2	     MCU_BIT(MCU_STM32F205)
#define GEN3	     MCU_BIT(MCU_NRF52840)
#define P2_FAMILY    MCU_BIT(MCU_RTL8721D)
#define NOT_CORE     (GEN2 | GEN3 | P2_FAMILY)
#define PLATFORM(id) ((uint64_t)1 << (id))

/* System module versions of the releases the rows name (proto/osver_table.h). */
#define V0_8_0_RC1 300	/* first Gen 2 release with control requests */
#define V3_0_0	   3000 /* below every 3.0.0 build (3.0.0 ships 3005) */
#define V3_1_0	   3100 /* the Gen 3 flash layout change (3.1.0 ships 3103) */
#define V5_6_0	   5600 /* Tracker NCP updates disabled (HAL_PLATFORM_NCP_UPDATES_DISABLED) */
#define V6_0_0	   6000

/* clang-format off */
static const struct capability_row rows[] = {
	/* Device OS 6.0.0 removed entering listening mode at 28800 baud
	 * (START_YMODEM_FLASHER_SERIAL_SPEED in build/module-defaults.mk, last in
	 * 5.9.0) and the YMODEM receiver; the Core never flashed over YMODEM in
	 * listening mode. */
	{.cap = CAPABILITY_YMODEM, .mcus = NOT_CORE, .until = V6_0_0},
	{.cap = CAPABILITY_LISTENING_CONSOLE, .mcus = ANY_MCU, .until = V6_0_0},
	/* Gen 3 and P2 on 3.0-5.x: the OTA update stays "running" after a broken
	 * transfer (observed, not found in a source). */
	{.cap = CAPABILITY_RESET_AFTER_FAILED_TRANSFER, .mcus = GEN3 | P2_FAMILY,
	 .since = V3_0_0, .until = V6_0_0},
	/* Gen 3 layout from 3.1.0: the 256 KiB user part at 0xb4000 overlaps the
	 * old 128 KiB slot at 0xd4000. */
	{.cap = CAPABILITY_COMPAT_PAGE_ERASE, .mcus = GEN3, .since = V3_1_0},
	/* particle-usb src/device.js, enterDfuMode(): since 0.8.0 on Gen 2 and
	 * 0.9.0 (the first release) on Gen 3. */
	{.cap = CAPABILITY_CONTROL_REQUESTS, .mcus = GEN2, .since = V0_8_0_RC1},
	{.cap = CAPABILITY_CONTROL_REQUESTS, .mcus = GEN3 | P2_FAMILY},
	/* The ESP32 of the Argon (12: HAL_PLATFORM_NCP_UPDATABLE in
	 * hal/src/argon/hal_platform_config.h) and of the Tracker (26) until 5.6.0 set
	 * HAL_PLATFORM_NCP_UPDATES_DISABLED (platform_ncp_update_module() then answers
	 * NOT_SUPPORTED). */
	{.cap = CAPABILITY_UPDATABLE_NCP, .mcus = GEN3, .platforms = PLATFORM(12)},
	{.cap = CAPABILITY_UPDATABLE_NCP, .mcus = GEN3, .platforms = PLATFORM(26), .until = V5_6_0},
};
/* clang-format on */

#define N_ROWS (sizeof(rows) / sizeof(rows[0]))

static bool row_has_platform(const struct capability_row *r, const struct platform *p)
{
	if (r->mcus != ANY_MCU && !(r->mcus & MCU_BIT(p->mcu)))
		return false;
	return !r->platforms || (p->id < 64 && (r->platforms & PLATFORM(p->id)));
}

static bool row_has_version(const struct capability_row *r, uint16_t v)
{
	return v >= r->since && (!r->until || v < r->until);
}

static bool row_version_free(const struct capability_row *r)
{
	return !r->since && !r->until;
}

/* Whether a row applies: certainly, maybe (a fact it depends on is unknown), or not. */
enum fit { FIT_NO, FIT_MAYBE, FIT_YES };

static enum fit platform_fit(const struct capability_row *r, const struct platform *p)
{
	if (p)
		return row_has_platform(r, p) ? FIT_YES : FIT_NO;
	return r->mcus == ANY_MCU && !r->platforms ? FIT_YES : FIT_MAYBE;
}

static enum fit version_fit(const struct capability_row *r, uint16_t v)
{
	if (v)
		return row_has_version(r, v) ? FIT_YES : FIT_NO;
	return row_version_free(r) ? FIT_YES : FIT_MAYBE;
}

enum capability_answer capability_of(enum capability cap, const struct platform *platform,
				     uint16_t system_version)
{
	bool maybe = false;
	for (size_t i = 0; i < N_ROWS; i++) {
		const struct capability_row *r = &rows[i];
		if (r->cap != cap)
			continue;
		enum fit fp = platform_fit(r, platform), fv = version_fit(r, system_version);
		if (fp == FIT_NO || fv == FIT_NO)
			continue;
		if (fp == FIT_YES && fv == FIT_YES)
			return CAPABILITY_YES;
		maybe = true;
	}
	return maybe ? CAPABILITY_UNKNOWN : CAPABILITY_NO;
}

uint16_t capability_version(const char *os_version, uint16_t system_version)
{
	if (system_version)
		return system_version;
	if (!os_version || !*os_version)
		return 0;
	const struct os_release *r = osver_by_release(os_version);
	if (r && r->system)
		return r->system;
	int major, minor, patch;
	if (osver_parse(os_version, &major, &minor, &patch) < 0)
		return 0;
	return (uint16_t)(major * 1000 + minor * 100 + patch);
}

const char *capability_name(enum capability cap)
{
	switch (cap) {
	case CAPABILITY_YMODEM:
		return "ymodem";
	case CAPABILITY_LISTENING_CONSOLE:
		return "listening-console";
	case CAPABILITY_RESET_AFTER_FAILED_TRANSFER:
		return "reset-after-failed-transfer";
	case CAPABILITY_COMPAT_PAGE_ERASE:
		return "compat-page-erase";
	case CAPABILITY_CONTROL_REQUESTS:
		return "control-requests";
	case CAPABILITY_UPDATABLE_NCP:
		return "updatable-ncp";
	case CAPABILITY__COUNT:
		break;
	}
	return "unknown";
}
