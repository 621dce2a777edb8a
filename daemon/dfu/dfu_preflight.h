/*
 * What is in flash before erasing, and the DFU-specific preflight.
 *
 * A device in DFU mode has no module list: the installed module prefixes are
 * read back with UPLOAD at the platform's slot addresses (prefix offset rules
 * docs/device/memory-maps.md#gen-3, docs/device/module-format.md#where-the-prefix-is; the P2
 * family's user part, which grows downward from 0x08600000,
 * through the start its suffix names) and turned into struct device_facts; on
 * Gen 3 the system part's position tells which of the three layouts is
 * installed (docs/device/memory-maps.md#gen-3).  The checks
 * here are the ones only DFU needs (memory map, slot overlap with what is
 * really installed, Device Protection, module kinds DFU cannot write); the
 * generic ones (platform, slot, size, CRC, dependencies, ordering) are
 * preflight.c's.  Pure functions: the transport does the UPLOADs.
 */
#pragma once

#include "device_facts.h"
#include "dfuse.h"
#include "errors.h"
#include "image.h"
#include "preflight.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DFU_PROBE_MAX 24
#define DFU_PROBE_LEN 0x220 /* vector table (≤ 0x200) + 24-byte prefix, rounded */
/* User parts up to this size are read whole to check their CRC (128 KiB Gen 2 and 256 KiB
 * Gen 3 slots: tens of UPLOADs).  System parts (up to 1.5 MiB) keep the prefix-only read:
 * reading them whole would add seconds to every DFU job and probe. */
#define DFU_WHOLE_MAX (256u << 10)
#define DFU_WRITE_MAX (PREFLIGHT_MAX_IMAGES * IMAGE_MAX_MODULES + 1)

enum dfu_probe_kind {
	DFU_PROBE_PREFIX, /* a module start: vector table / Realtek header + prefix */
	/* The DFU_PROBE_LEN bytes that end at a fixed module end (the P2 user part grows
	 * downward from 0x08600000, docs/device/memory-maps.md#p2-family): CRC and suffix, whose
	 * DYNAMIC_LOCATION
	 * extension names the module's start (docs/device/module-format.md#suffix-and-checksums,
	 * docs/device/module-format.md#extensions). */
	DFU_PROBE_TAIL,
	/* A whole module (a user part of at most DFU_WHOLE_MAX bytes), to check its CRC-32
	 * the way the device does at boot (docs/device/module-format.md#suffix-and-checksums,
	 * docs/device/validation.md INTEGRITY). */
	DFU_PROBE_WHOLE,
	/* The last DFU_SUFFIX_PROBE_LEN bytes of a module whose prefix was read (its end
	 * address is in the prefix): the suffix's fixed tail (reserved, SHA-256, size) and the
	 * CRC-32, what identifies the module's bytes without reading them all (issue 11).  A
	 * few dozen bytes over one UPLOAD. */
	DFU_PROBE_SUFFIX,
};

/* reserved u16 + SHA-256 + suffix size u16 + CRC-32
 * (docs/device/module-format.md#suffix-and-checksums) */
#define DFU_SUFFIX_PROBE_LEN 40

/* One UPLOAD read: dfu_probe_size() bytes at address into dfu_probe_data(). */
struct dfu_probe {
	uint32_t address;
	enum dfu_probe_kind kind;
	uint8_t buf[DFU_PROBE_LEN];
	uint8_t *whole; /* DFU_PROBE_WHOLE: want bytes, owned by the readback */
	size_t want;	/* DFU_PROBE_WHOLE: the module's size */
	size_t len;	/* bytes read */
	bool read;
};

uint8_t *dfu_probe_data(struct dfu_probe *p);
size_t dfu_probe_size(const struct dfu_probe *p);

struct dfu_readback {
	const struct platform *platform;
	struct dfu_probe probes[DFU_PROBE_MAX];
	unsigned n_probes;
	/* Which modules' suffixes to read (dfu_readback_want_suffix()); without a
	 * filter every module's. */
	bool suffix_filter;
	uint32_t suffix_wanted[16]; /* bit index per function */
};

/* Reads the suffix (SHA-256, CRC) only of the modules asked for here: the ones a job
 * brings, which the planner compares.  Call after dfu_readback_plan(); with no call
 * every module's suffix is read, with only want_none = true none. */
void dfu_readback_want_suffix(struct dfu_readback *rb, uint8_t function, uint8_t index,
			      bool want_none);

/* The slot starts worth reading for this platform (every layout era), and the tail of
 * the P2 family's user part. */
void dfu_readback_plan(const struct platform *p, struct dfu_readback *rb);

/*
 * After the planned reads: adds the reads their results call for (the P2 user
 * part's prefix at the start its suffix names; small user parts whole, for their
 * CRC; every other module's suffix tail and CRC at the end its prefix names).  Returns true when it
 * added any: read those, then call it again.  Reads it added once are not added again.
 */
bool dfu_readback_follow(struct dfu_readback *rb);
/* Frees the whole-module buffers; rb may then be planned again. */
void dfu_readback_clear(struct dfu_readback *rb);

/*
 * Turns the reads into facts: platform, device id, installed modules (with
 * address, version, dependencies), system_version, and whether the flash
 * layout is known.  Returns true when the layout is determined.
 */
bool dfu_readback_facts(const struct dfu_readback *rb, const struct dfuse_info *info,
			struct device_facts *facts);

/* One contiguous write of the plan. */
struct dfu_write {
	uint8_t alt;
	uint32_t address;
	const uint8_t *data; /* into the job's image (not owned) */
	size_t len;
	bool erase_only; /* the 0xD4000 invalidation page: erase, write nothing */
	const char *name;
	uint8_t function;
	uint8_t index;
	uint16_t version; /* the module's */
	size_t job_index; /* job_image() index of the file it comes from */
};

struct dfu_plan {
	struct dfu_write writes[DFU_WRITE_MAX];
	unsigned n_writes;
};

/* preflight.c rules for DFU: system, user, monolithic, radio stack; no bootloader/NCP/encrypted. */
void dfu_preflight_rules(const struct device_facts *dev, struct preflight_rules *rules);

/*
 * The DFU checks of issue 7 over an ordered preflight plan, and the writes:
 *  - layout known (Gen 3) unless the job brings its own system part;
 *  - every write range inside a writable+erasable region of alt 0's memory
 *    map and inside the module's slot, not overlapping another installed
 *    module (force never bypasses these);
 *  - Device Protection (protected → refused; service mode → system parts
 *    ≥ 6.1.1 only);
 *  - DROP_MODULE_INFO written without its prefix; compressed modules
 *    inflated; combined files split;
 *  - Gen 3 application in the 256 KiB slot on Device OS ≥ 3.1: erase the
 *    page at 0xD4000 first (as particle-cli does, docs/device/memory-maps.md#gen-3).
 */
int dfu_preflight_plan(const struct device_facts *dev, bool layout_known,
		       const struct dfuse_info *info, const struct preflight_plan *pp, bool force,
		       struct dfu_plan *plan, struct error *err);

/*
 * A dry run on a device that is not in DFU mode (it switches no mode): the
 * memory-map check of dfu_preflight_plan() over the same write ranges, against
 * the map the platform's bootloader describes (dfuse_platform_map_string())
 * instead of the device's descriptors.  Slots and the size were checked by the
 * generic preflight; Device Protection, the Gen 3 layout and the overlap with
 * what is installed need the device in DFU mode and are not checked here.
 * Returns 0, 1 when flashd has no map for the platform (nothing checked), or -1
 * with outside-memory-map as dfu_preflight_plan() gives it.
 */
int dfu_preflight_static_map(const struct platform *p, const struct preflight_plan *pp,
			     struct error *err);
