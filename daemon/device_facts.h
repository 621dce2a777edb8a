/*
 * What flashd knows about a live device: filled by the transports (serial
 * `s`/`v`/`i` replies, DFU descriptors and UPLOAD reads of module prefixes),
 * kept in the registry, and checked against images by preflight.
 */
#pragma once

#include "platform.h"

#include <stdbool.h>
#include <stdint.h>

#define DEVICE_FACTS_MAX_MODULES 16
#define DEVICE_ID_LEN		 24
#define DEVICE_FACTS_MAX_ASSETS	 16

struct installed_module {
	uint8_t function; /* enum module_function */
	uint8_t index;
	uint8_t store; /* enum module_store */
	uint16_t version;
	uint32_t slot_size; /* `s` reports the slot's maximum size */
	uint32_t address;   /* start address when known (DFU reads), else 0 */
	uint16_t checked;   /* vc */
	uint16_t passed;    /* vv */
	struct {
		uint8_t function;
		uint8_t index;
		uint16_t version;
	} deps[2];
	char sha256[65]; /* user parts: hex, lowercase; "" if unknown */
	/* What flashd read of the module's own bytes (issue 11: identity by SHA-256 and
	 * CRC where the device lets them be read): over DFU the suffix's SHA-256 and the
	 * CRC-32 at the end address the prefix names, or the whole module. */
	enum installed_bytes {
		INSTALLED_BYTES_UNREAD = 0, /* not read (the console and control requests
					       report a hash for user parts only) */
		INSTALLED_BYTES_READ,	    /* sha256 and crc are the device's bytes */
		INSTALLED_BYTES_UNREADABLE, /* the read was tried and failed */
	} bytes;
	uint32_t crc; /* bytes READ: the stored CRC-32 (as the image's crc_stored) */
};

/* One asset in the device's asset store (Device OS 5.5.0+ AssetManager), as
 * GET_ASSET_INFO (control request 91, Device OS 5.6.0+) reports it. */
struct installed_asset {
	char name[65];
	uint8_t sha256[32]; /* of the raw asset bytes */
	uint32_t size;	    /* raw bytes */
};

enum device_protection {
	DEVICE_PROTECTION_UNKNOWN = 0,
	DEVICE_PROTECTION_OPEN,
	DEVICE_PROTECTION_PROTECTED,
	DEVICE_PROTECTION_SERVICE,
};

struct device_facts {
	const struct platform *platform; /* NULL if unknown */
	char device_id[DEVICE_ID_LEN + 1];
	char os_version[24];	 /* "2.2.0" from `v`, "" if unknown */
	uint16_t system_version; /* installed system part 1 module version, 0 if unknown */
	bool modules_known;	 /* the list below is complete */
	/* Functions whose absence from the list says nothing (bit 1 << enum module_function):
	 * what flashd cannot read on this device, e.g. a SoftDevice over DFU when no
	 * installed system part names it.  The planner treats them as unknown. */
	uint32_t unknown_functions;
	struct installed_module modules[DEVICE_FACTS_MAX_MODULES];
	unsigned n_modules;
	enum device_protection protection;
	/* Running, and its CDC interface has no tty node (no cdc_acm binding): only
	 * control requests reach it until it is in DFU mode (set by the ctrl
	 * transport, cleared by the registry when a tty appears). */
	bool no_tty;
	/* The asset store: complete when assets_known (read by control request),
	 * else nothing is known of it. */
	bool assets_known;
	struct installed_asset assets[DEVICE_FACTS_MAX_ASSETS];
	unsigned n_assets;
};

static inline bool installed_module_valid(const struct installed_module *m)
{
	return (m->checked & m->passed) == m->checked;
}
