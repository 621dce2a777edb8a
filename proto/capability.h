/*
 * What a device can do, by platform and Device OS version: one table
 * (capability.c), asked through one function, instead of version thresholds
 * spread over the transports.  The idea is fwupd's quirk files
 * (plugins/dfu/dfu.quirk): per-device behaviour is data, not code.
 *
 * One unit: the installed system module version (device_facts.system_version,
 * module_info_t.module_version of system part 1: 1512 for 1.5.2, 3103 for
 * 3.1.0, 6200 for 6.2.0).  A release string ("5.9.0", from the console's `v`)
 * is converted at the edge with capability_version().
 */
#pragma once

#include "platform.h"

#include <stdint.h>

enum capability {
	/* The listening-mode YMODEM receiver (`f`).  Not on the Core; Device OS
	 * 6.0.0 removed it. */
	CAPABILITY_YMODEM,
	/* Listening mode over the CDC port (entered at 28800 baud) with its
	 * console (`v`, `i`, `s`, `x`).  Device OS 6.0.0 removed it. */
	CAPABILITY_LISTENING_CONSOLE,
	/* A failed or cancelled YMODEM transfer leaves the OTA update "running"
	 * and the next `f` is refused until the device is reset (Gen 3 and P2 on
	 * Device OS 3.0-5.x; inferred from device behaviour, not from a source). */
	CAPABILITY_RESET_AFTER_FAILED_TRANSFER,
	/* A 256 KiB-slot application needs the first page of the old 128 KiB
	 * slot erased, so that the stale application there is not started
	 * (Gen 3 flash layout of Device OS 3.1.0 and later). */
	CAPABILITY_COMPAT_PAGE_ERASE,
	/* Particle USB vendor control requests in normal mode (particle-usb:
	 * enterDfuMode() and friends): Gen 2 since 0.8.0, Gen 3 and P2 always,
	 * never the Core. */
	CAPABILITY_CONTROL_REQUESTS,
	/* An ESP32 network coprocessor whose firmware a host can update: the
	 * Argon; the Tracker before Device OS 5.6.0. */
	CAPABILITY_UPDATABLE_NCP,
	CAPABILITY__COUNT
};

enum capability_answer {
	CAPABILITY_NO = 0,
	CAPABILITY_YES = 1,
	/* The platform or the version is not known and the answer depends on it;
	 * the caller decides what to try. */
	CAPABILITY_UNKNOWN = -1,
};

/* platform may be NULL, system_version 0 (unknown). */
enum capability_answer capability_of(enum capability cap, const struct platform *platform,
				     uint16_t system_version);
/* The same as a plain yes/no, with what an unknown answer should count as. */
static inline bool capability_has(enum capability cap, const struct platform *platform,
				  uint16_t system_version, bool if_unknown)
{
	enum capability_answer a = capability_of(cap, platform, system_version);
	return a == CAPABILITY_UNKNOWN ? if_unknown : a == CAPABILITY_YES;
}

/*
 * The system module version to ask with: system_version when known (non-zero),
 * else the one the release table gives for os_version, else, for a release newer
 * than the table, major * 1000 + minor * 100 + patch (close to Device OS's own
 * numbering: 1.5.2 ships 1512, 6.2.0 ships 6200; near enough for the table's
 * thresholds); 0 if neither is known.
 */
uint16_t capability_version(const char *os_version, uint16_t system_version);

/* "ymodem", "listening-console", ... for logs and tests. */
const char *capability_name(enum capability cap);
