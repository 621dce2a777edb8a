#include "preflight.h"

#include "capability.h"
#include "osver.h"
#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FN_BIT(f) (1u << (f))

/* Gen 3 / P2 OTA region length (HAL_OTA_FlashLength(), docs/device/memory-maps.md#gen-3,
 * docs/device/memory-maps.md#p2-family). */
#define OTA_LEN_GEN3 (1500u * 1024u)
#define OTA_LEN_RTL  0x180000u
/* Gen 2 OTA scratch regions (docs/device/memory-maps.md#gen-2). */
#define OTA_LEN_PHOTON	 0x40000u
#define OTA_LEN_ELECTRON 0x20000u

/*
 * Compressed and combined modules: only platforms built with
 * HAL_PLATFORM_COMPRESSED_OTA (nRF52840 and RTL872x; the Gen 2 OTA code
 * handles a single uncompressed module, docs/device/module-format.md#flags), and only when the
 * installed
 * bootloader can inflate them: device-os system/src/system_cloud_internal.cpp
 * "Minimum bootloader version required to support compressed/combined OTA
 * updates: COMPRESSED_OTA_MIN_BOOTLOADER_VERSION = 1000; // 2.0.0".
 */
#define COMPRESSED_OTA_MIN_BOOTLOADER_VERSION 1000
#define COMPRESSED_OTA_MIN_SYSTEM_VERSION     2000 /* when the bootloader is not known */

const struct installed_module *preflight_installed(const struct device_facts *dev, uint8_t function,
						   uint8_t index)
{
	for (unsigned i = 0; dev && i < dev->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
		const struct installed_module *m = &dev->modules[i];
		if (m->function == function && m->index == index && m->store == MODULE_STORE_MAIN)
			return m;
	}
	return NULL;
}

static uint32_t serial_ota_length(const struct platform *p)
{
	switch (p->mcu) {
	case MCU_STM32F205:
		return p->id == 10 ? OTA_LEN_ELECTRON : OTA_LEN_PHOTON;
	case MCU_NRF52840:
		return OTA_LEN_GEN3;
	case MCU_RTL8721D:
		return OTA_LEN_RTL;
	case MCU_STM32F103:
		break;
	}
	return 0;
}

static bool compressed_ota_supported(const struct device_facts *dev)
{
	const struct platform *p = dev->platform;
	if (!p || (p->mcu != MCU_NRF52840 && p->mcu != MCU_RTL8721D))
		return false;
	const struct installed_module *bl = preflight_installed(dev, MODULE_FUNCTION_BOOTLOADER, 0);
	if (bl && dev->modules_known)
		return bl->version >= COMPRESSED_OTA_MIN_BOOTLOADER_VERSION;
	return dev->system_version >= COMPRESSED_OTA_MIN_SYSTEM_VERSION;
}

void preflight_rules_ctrl(const struct device_facts *dev, struct preflight_rules *rules)
{
	memset(rules, 0, sizeof(*rules));
	rules->transport = PREFLIGHT_TRANSPORT_CTRL;
	rules->transport_name = "ctrl";
	/* Device OS's firmware-update request takes a module as the OTA path does
	 * (system/src/control/ ... firmware_update: start with the size, chunks,
	 * finish; the module is validated and applied at the next reset). */
	rules->functions = FN_BIT(MODULE_FUNCTION_BOOTLOADER) | FN_BIT(MODULE_FUNCTION_SYSTEM) |
			   FN_BIT(MODULE_FUNCTION_USER) | FN_BIT(MODULE_FUNCTION_RADIO_STACK) |
			   FN_BIT(MODULE_FUNCTION_ASSET);
	const struct platform *p = dev->platform;
	if (p && p->id == 12)
		rules->functions |=
		    FN_BIT(MODULE_FUNCTION_NCP); /* Argon: HAL_PLATFORM_NCP_UPDATABLE */
	rules->compressed = true;
	rules->combined = true;
	rules->why_not = "the firmware-update request takes modules with a slot and assets only";
}

void preflight_rules_serial(const struct device_facts *dev, struct preflight_rules *rules)
{
	memset(rules, 0, sizeof(*rules));
	rules->transport = PREFLIGHT_TRANSPORT_SERIAL;
	rules->transport_name = "serial";
	const struct platform *p = dev->platform;
	uint16_t version = capability_version(dev->os_version, dev->system_version);
	/* capability.c's table: never on the Core; Device OS 6.0.0 removed it
	 * (docs/device/releases.md#capabilities-by-release).
	 * An unknown platform or version is tried: the device's answer decides. */
	if (!capability_has(CAPABILITY_YMODEM, p, version, true)) {
		/* asked without the version: does the platform ever have it? */
		rules->why_not = capability_has(CAPABILITY_YMODEM, p, 0, true)
				     ? "Device OS 6.0.0 and later removed YMODEM flashing (use DFU)"
				     : "the Core has no YMODEM listening-mode flashing";
		return;
	}
	/* On <= 5.x YMODEM goes through the OTA path, which writes every kind
	 * with a slot, including bootloaders and NCP firmware that DFU cannot
	 * write (docs/device/dfuse.md#what-can-be-flashed-over-dfu). */
	rules->functions = FN_BIT(MODULE_FUNCTION_BOOTLOADER) | FN_BIT(MODULE_FUNCTION_MONO) |
			   FN_BIT(MODULE_FUNCTION_SYSTEM) | FN_BIT(MODULE_FUNCTION_USER) |
			   FN_BIT(MODULE_FUNCTION_RADIO_STACK);
	/* Only the Argon and the Tracker have an updatable ESP32 NCP
	 * (docs/device/dfuse.md#what-can-be-flashed-over-dfu);
	 * elsewhere the device answers -1310 (docs/device/ymodem.md#end-of-transfer). */
	if (capability_has(CAPABILITY_UPDATABLE_NCP, p, version, false))
		rules->functions |= FN_BIT(MODULE_FUNCTION_NCP);
	rules->compressed = rules->combined = compressed_ota_supported(dev);
	rules->encrypted = false;
	rules->max_file_size = p ? serial_ota_length(p) : 0;
	rules->why_not = "the serial listening-mode path writes bootloaders, system parts, "
			 "applications, radio stacks and NCP firmware only";
}

/* ---- ordering --------------------------------------------------------------- */

static int function_rank(const struct image_module *m)
{
	switch (m->function) {
	case MODULE_FUNCTION_BOOTLOADER:
		return 0 + (m->index == 0 ? 1 : 0); /* P2 KM0 parts before the KM4 bootloader */
	case MODULE_FUNCTION_RADIO_STACK:
		return 2;
	case MODULE_FUNCTION_NCP:
		return 3;
	case MODULE_FUNCTION_SYSTEM:
	case MODULE_FUNCTION_MONO:
		return 4;
	case MODULE_FUNCTION_USER:
		return 6;
	default:
		return 7;
	}
}

/* Does img provide (function, index) in at least this version? */
static bool image_provides(const struct image *img, uint8_t function, uint8_t index,
			   uint16_t version)
{
	for (unsigned k = 0; k < img->n_modules; k++)
		if (img->modules[k].function == function && img->modules[k].index == index &&
		    img->modules[k].version >= version)
			return true;
	return false;
}

/*
 * Does image i wait for another image of the job?  It does when one of its
 * dependencies is met neither by the images already placed nor by what is
 * installed, but some other unplaced image would meet it.  Versions matter:
 * Electron system modules depend on each other in a cycle by slot (1 -> 3,
 * 3 -> 2, 2 -> 1) but not by version against what is installed.
 */
static bool waits_on_job(const struct device_facts *dev, const struct preflight_input *images,
			 size_t n_images, const bool *placed, size_t i)
{
	const struct image *img = images[i].img;
	for (unsigned k = 0; k < img->n_modules; k++) {
		const struct image_module *m = &img->modules[k];
		for (int d = 0; d < 2; d++) {
			const struct image_dependency *dep = &m->deps[d];
			if (dep->function == MODULE_FUNCTION_NONE)
				continue;
			/* A module that depends on its own slot (Tracker system part:
			 * system 1 >= 3001) refers to what is installed. */
			if (dep->function == m->function && dep->index == m->index)
				continue;
			bool met = false;
			for (size_t j = 0; j < n_images && !met; j++)
				if (placed[j] && image_provides(images[j].img, dep->function,
								dep->index, dep->version))
					met = true;
			if (!met && dev && dev->modules_known) {
				const struct installed_module *im =
				    preflight_installed(dev, dep->function, dep->index);
				met = im && im->version >= dep->version;
			}
			if (met)
				continue;
			for (size_t j = 0; j < n_images; j++)
				if (j != i && !placed[j] &&
				    image_provides(images[j].img, dep->function, dep->index,
						   dep->version))
					return true;
		}
	}
	return false;
}

int preflight_files_check(const struct preflight_input *images, size_t n, struct error *err)
{
	if (n > PREFLIGHT_MAX_IMAGES)
		return error_set(err, ERR_BAD_REQUEST, "a job holds at most %d files",
				 PREFLIGHT_MAX_IMAGES);
	for (size_t i = 0; i < n; i++)
		if (!images[i].img || images[i].img->n_modules == 0)
			return error_set(err, ERR_IMAGE_NOT_A_MODULE, "%s holds no module",
					 images[i].name ? images[i].name : "a file");
	return 0;
}

int preflight_order(const struct device_facts *dev, const struct preflight_input *images,
		    size_t n_images, size_t *order, struct error *err)
{
	if (preflight_files_check(images, n_images, err) < 0)
		return -1;
	bool placed[PREFLIGHT_MAX_IMAGES] = {false};
	for (size_t n = 0; n < n_images; n++) {
		size_t best = SIZE_MAX;
		bool best_ready = false;
		for (size_t i = 0; i < n_images; i++) {
			if (placed[i])
				continue;
			bool ready = !waits_on_job(dev, images, n_images, placed, i);
			int rank = function_rank(&images[i].img->modules[0]);
			if (best == SIZE_MAX || (ready && !best_ready) ||
			    (ready == best_ready &&
			     rank < function_rank(&images[best].img->modules[0]))) {
				best = i;
				best_ready = ready;
			}
		}
		/* nothing ready: a cycle the installed versions do not break; rank order */
		placed[best] = true;
		order[n] = best;
	}
	return 0;
}

/* ---- checks ----------------------------------------------------------------- */

static const char *platform_label(uint16_t id, char *buf, size_t size)
{
	const struct platform *p = platform_by_id(id);
	if (p)
		return p->display;
	snprintf(buf, size, "unknown platform %u", id);
	return buf;
}

static int check_platform(const struct device_facts *dev, const char *label, const char *name,
			  const struct image_module *m, struct error *err)
{
	const struct platform *dp = dev->platform;
	if (!dp || m->platform_id == dp->id || m->function == MODULE_FUNCTION_ASSET)
		return 0; /* asset modules name no platform (particle-cli exempts them too) */
	char buf[48];
	const struct platform *ip = platform_by_id(m->platform_id);
	const char *iname = platform_label(m->platform_id, buf, sizeof(buf));
	error_set(err, ERR_WRONG_PLATFORM, "%s was built for %s; the device on %s is a%s %s", name,
		  iname, label, strchr("AEIOU", dp->display[0]) ? "n" : "", dp->display);
	error_hint(err, "this file was built for %s; the device on %s is a%s %s: rebuild it for %s",
		   iname, label, strchr("AEIOU", dp->display[0]) ? "n" : "", dp->display, dp->name);
	error_detail_str(err, "image_platform", ip ? ip->name : iname);
	error_detail_int(err, "image_platform_id", m->platform_id);
	error_detail_str(err, "device_platform", dp->name);
	error_detail_int(err, "device_platform_id", dp->id);
	return -1;
}

static int check_kind(const struct device_facts *dev, const char *name, const struct image *img,
		      const struct image_module *m, const struct preflight_rules *rules,
		      struct error *err)
{
	const char *why = NULL;
	if (!(rules->functions & FN_BIT(m->function)))
		why = rules->why_not;
	else if ((m->flags & IMAGE_FLAG_ENCRYPTED) && !rules->encrypted)
		why = "encrypted modules are written by Particle's tools only";
	else if ((m->flags & IMAGE_FLAG_COMPRESSED) && !rules->compressed)
		why = "compressed modules need Device OS 2.0.0 or later on a Gen 3 or P2 device";
	else if ((img->n_modules > 1 || (m->flags & IMAGE_FLAG_COMBINED)) && !rules->combined)
		why = "combined files need Device OS 2.0.0 or later on a Gen 3 or P2 device";
	if (!why)
		return 0;
	error_set(err, ERR_NOT_FLASHABLE_HERE, "%s (%s) cannot be written over %s: %s", name,
		  module_function_phrase(m->function), rules->transport_name, why);
	error_detail_str(err, "module_function", module_function_name(m->function));
	error_detail_str(err, "transport", rules->transport_name);
	error_detail_str(err, "reason", why);
	(void)dev;
	return -1;
}

static const char *device_os_label(const struct device_facts *dev)
{
	return dev->os_version[0] ? dev->os_version : "unknown";
}

static int check_slot(const struct device_facts *dev, const char *name,
		      const struct image_module *m, struct error *err)
{
	const struct platform *p = dev->platform;
	if (!p || m->platform_id != p->id)
		return 0;
	const struct slot *s =
	    platform_find_slot(p, dev->system_version, m->function, m->index, MODULE_STORE_MAIN);
	uint32_t start = m->start, end = image_module_flash_end(m);
	/* NCP firmware lives in the coprocessor's flash: its prefix start is 0. */
	bool rtl_user = p->mcu == MCU_RTL8721D && m->function == MODULE_FUNCTION_USER;
	if (s && start >= s->start && start < s->end && end > s->end) {
		error_set(
		    err, ERR_IMAGE_TOO_LARGE,
		    "%s needs %u bytes from 0x%08x; the %s slot of a %s ends at 0x%08x (%u bytes)",
		    name, end - start, start, s->name, p->display, s->end, s->end - s->start);
		error_detail_int(err, "size", end - start);
		error_detail_int(err, "limit", s->end - start);
		error_detail_int(err, "slot_start", s->start);
		error_detail_int(err, "slot_end", s->end);
		return -1;
	}
	if (s && rtl_user && end == s->end && start < s->start) {
		/* P2 user parts grow down from a fixed end
		 * (docs/device/memory-maps.md#p2-family). */
		error_set(err, ERR_IMAGE_TOO_LARGE, "%s needs %u bytes; the %s slot holds %u", name,
			  end - start, s->name, s->end - s->start);
		error_detail_int(err, "size", end - start);
		error_detail_int(err, "limit", s->end - s->start);
		error_detail_int(err, "slot_start", s->start);
		error_detail_int(err, "slot_end", s->end);
		return -1;
	}
	if (s && start >= s->start && end <= s->end)
		return 0;
	if (s)
		error_set(err, ERR_WRONG_SLOT,
			  "%s (%s %u at 0x%08x-0x%08x) does not fit the %s slot 0x%08x-0x%08x of a "
			  "%s with Device OS %s (%s)",
			  name, module_function_phrase(m->function), m->index, start, end, s->name,
			  s->start, s->end, p->display, device_os_label(dev),
			  platform_layout_name(p, dev->system_version));
	else
		error_set(err, ERR_WRONG_SLOT,
			  "%s is a %s %u, which has no slot on a %s with Device OS %s (%s)", name,
			  module_function_phrase(m->function), m->index, p->display,
			  device_os_label(dev), platform_layout_name(p, dev->system_version));
	error_detail_str(err, "module_function", module_function_name(m->function));
	error_detail_int(err, "module_index", m->index);
	error_detail_int(err, "start", start);
	error_detail_int(err, "end", end);
	if (s) {
		error_detail_int(err, "slot_start", s->start);
		error_detail_int(err, "slot_end", s->end);
	}
	error_detail_str(err, "device_os", device_os_label(dev));
	return -1;
}

static int check_crc(const char *name, unsigned module_no, const struct image_module *m,
		     struct error *err)
{
	if (m->crc_ok)
		return 0;
	char stored[16], computed[16];
	snprintf(stored, sizeof(stored), "%08x", m->crc_stored);
	snprintf(computed, sizeof(computed), "%08x", m->crc_computed);
	error_set(err, ERR_IMAGE_CORRUPT,
		  "%s is damaged: its CRC-32 is %s but its contents give %s", name, stored,
		  computed);
	error_detail_str(err, "stored_crc", stored);
	error_detail_str(err, "computed_crc", computed);
	error_detail_int(err, "module", module_no);
	error_detail_int(err, "offset", (long long)(m->file_offset + m->size - 4));
	return -1;
}

static int check_file_size(const char *name, const struct image *img,
			   const struct preflight_rules *rules, const struct device_facts *dev,
			   struct error *err)
{
	if (!rules->max_file_size || img->len <= rules->max_file_size)
		return 0;
	error_set(err, ERR_IMAGE_TOO_LARGE,
		  "%s is %zu bytes; a %s takes at most %u bytes over %s (its OTA region)", name,
		  img->len, dev->platform ? dev->platform->display : "device", rules->max_file_size,
		  rules->transport_name);
	error_detail_int(err, "size", (long long)img->len);
	error_detail_int(err, "limit", rules->max_file_size);
	return -1;
}

/* On a known platform, the releases published for it (bootloader and radio stack
 * numbers differ per platform, and a release for one need not exist for another):
 * needed, the oldest that brings at least this version ("2.2.0", "4.2.0 or later");
 * installed, the ones that shipped exactly it ("2.2.0", "2.2.0-2.3.1"); "" when none
 * did, never a neighbour's.  Returns false when the platform or function is not one
 * the release table answers for. */
static bool platform_release_label(const struct platform *p, uint8_t function, uint16_t version,
				   bool needed, char *buf, size_t size)
{
	if (!p ||
	    (function != MODULE_FUNCTION_SYSTEM && function != MODULE_FUNCTION_MONO &&
	     function != MODULE_FUNCTION_BOOTLOADER && function != MODULE_FUNCTION_RADIO_STACK))
		return false;
	int fn = function == MODULE_FUNCTION_MONO ? MODULE_FUNCTION_SYSTEM : function;
	buf[0] = '\0';
	if (needed) {
		const struct os_release *r = osver_first_providing(p->id, fn, version);
		if (r)
			snprintf(buf, size, "%s%s", r->version,
				 osver_module_version(r, p->id, fn) == version ? "" : " or later");
		return true;
	}
	const struct os_release *first, *last;
	if (osver_span(p->id, fn, version, &first, &last))
		snprintf(buf, size, "%s%s%s", first->version,
			 strcmp(first->version, last->version) == 0 ? "" : "-",
			 strcmp(first->version, last->version) == 0 ? "" : last->version);
	return true;
}

/* The release a module version belongs to, exact or "after X"
 * (docs/device/releases.md#module-version-numbers: no formula); on a known platform,
 * platform_release_label(). */
static void release_label(const struct platform *p, uint8_t function, uint16_t version, bool needed,
			  char *buf, size_t size)
{
	if (platform_release_label(p, function, version, needed, buf, size))
		return;
	const char *exact = osver_release_for(function, version);
	if (exact) {
		snprintf(buf, size, "%s", exact);
		return;
	}
	buf[0] = '\0';
	if (function != MODULE_FUNCTION_SYSTEM && function != MODULE_FUNCTION_MONO &&
	    function != MODULE_FUNCTION_BOOTLOADER)
		return;
	const struct os_release *below = NULL, *above = NULL;
	for (unsigned i = 0; i < osver_count(); i++) {
		const struct os_release *r = osver_at(i);
		uint16_t v = function == MODULE_FUNCTION_BOOTLOADER ? r->bootloader : r->system;
		if (!v)
			continue;
		if (v < version &&
		    (!below || v >= (function == MODULE_FUNCTION_BOOTLOADER ? below->bootloader
									    : below->system)))
			below = r;
		if (v > version && !above)
			above = r;
	}
	if (below && above)
		snprintf(buf, size, "between %s and %s", below->version, above->version);
	else if (below)
		snprintf(buf, size, "after %s", below->version);
	else if (above)
		snprintf(buf, size, "before %s", above->version);
}

struct provided {
	uint8_t function, index;
	uint16_t version;
	const char *name;
};

struct dep_state {
	struct provided planned[PREFLIGHT_MAX_IMAGES * IMAGE_MAX_MODULES];
	size_t n_planned;
};

static int unmet(const struct device_facts *dev, const char *name, const struct image_module *m,
		 const struct image_dependency *dep, bool have, uint16_t have_version,
		 struct error *err)
{
	char req_rel[64], inst_rel[64], desc[128], what[96];
	release_label(dev->platform, dep->function, dep->version, true, req_rel, sizeof(req_rel));
	release_label(dev->platform, dep->function, have_version, false, inst_rel,
		      sizeof(inst_rel));
	image_module_describe(m, desc, sizeof(desc));
	if (dep->function == MODULE_FUNCTION_BOOTLOADER && dep->index == 0)
		snprintf(what, sizeof(what), "%s", module_function_phrase(dep->function));
	else
		snprintf(what, sizeof(what), "%s %u", module_function_phrase(dep->function),
			 dep->index);
	if (have)
		error_set(err, ERR_DEPENDENCY_UNMET,
			  "%s (%s) needs %s version %u%s%s%s; the device has version %u%s%s%s",
			  name, desc, what, dep->version, req_rel[0] ? " (Device OS " : "", req_rel,
			  req_rel[0] ? ")" : "", have_version, inst_rel[0] ? " (Device OS " : "",
			  inst_rel, inst_rel[0] ? ")" : "");
	else
		error_set(err, ERR_DEPENDENCY_UNMET,
			  "%s (%s) needs %s version %u%s%s%s; the device has no %s", name, desc,
			  what, dep->version, req_rel[0] ? " (Device OS " : "", req_rel,
			  req_rel[0] ? ")" : "", what);
	if (dep->function == MODULE_FUNCTION_SYSTEM || dep->function == MODULE_FUNCTION_MONO)
		error_hint(err,
			   "flash Device OS %s system parts first, or add them to the same job "
			   "before the application (flashctl flash system-part*.bin %s)",
			   req_rel[0] ? req_rel : "(a newer release)", name);
	else
		error_hint(err,
			   "flash %s version %u or later first, or add it to the same job "
			   "(flashctl flash <%s>.bin %s)",
			   what, dep->version, module_function_name(dep->function), name);
	error_detail_str(err, "required_function", module_function_name(dep->function));
	error_detail_int(err, "required_index", dep->index);
	error_detail_int(err, "required_version", dep->version);
	error_detail_str(err, "required_release", req_rel);
	error_detail_int(err, "installed_version", have ? have_version : 0);
	error_detail_str(err, "installed_release", inst_rel);
	(void)dev;
	return -1;
}

static int check_deps(const struct device_facts *dev, const char *name,
		      const struct image_module *m, const struct dep_state *st, struct error *err)
{
	if (!dev->modules_known)
		return 0; /* nothing to compare with; the device judges */
	for (int d = 0; d < 2; d++) {
		const struct image_dependency *dep = &m->deps[d];
		if (dep->function == MODULE_FUNCTION_NONE)
			continue;
		/* docs/device/validation.md: a bootloader dependency in slot 2 is not enforced
		 * during updates
		 * (Argon system parts list it there on purpose). */
		if (d == 1 && dep->function == MODULE_FUNCTION_BOOTLOADER)
			continue;
		bool have = false;
		uint16_t version = 0;
		/* modules earlier in the job win: they will be installed by then */
		for (size_t i = st->n_planned; i-- > 0;)
			if (st->planned[i].function == dep->function &&
			    st->planned[i].index == dep->index) {
				have = true;
				version = st->planned[i].version;
				break;
			}
		if (!have) {
			const struct installed_module *im =
			    preflight_installed(dev, dep->function, dep->index);
			if (im) {
				have = true;
				version = im->version;
			}
		}
		if (!have || version < dep->version)
			return unmet(dev, name, m, dep, have, version, err);
	}
	return 0;
}

/* DEPENDENCIES_FULL (docs/device/validation.md): a new system part must still satisfy the installed
 * modules that depend on its slot (no downgrade under a sibling). */
static int check_siblings(const struct device_facts *dev, const char *name,
			  const struct image_module *m, const struct dep_state *st,
			  struct error *err)
{
	if (m->function != MODULE_FUNCTION_SYSTEM || !dev->modules_known)
		return 0;
	for (unsigned i = 0; i < dev->n_modules; i++) {
		const struct installed_module *im = &dev->modules[i];
		if (im->store != MODULE_STORE_MAIN || im->function != MODULE_FUNCTION_SYSTEM ||
		    (im->function == m->function && im->index == m->index))
			continue;
		bool replaced = false;
		for (size_t k = 0; k < st->n_planned; k++)
			if (st->planned[k].function == im->function &&
			    st->planned[k].index == im->index)
				replaced = true;
		if (replaced)
			continue;
		for (int d = 0; d < 2; d++) {
			if (im->deps[d].function != m->function || im->deps[d].index != m->index ||
			    im->deps[d].version <= m->version)
				continue;
			char rel[64], desc[128];
			release_label(dev->platform, m->function, im->deps[d].version, true, rel,
				      sizeof(rel));
			image_module_describe(m, desc, sizeof(desc));
			error_set(
			    err, ERR_DEPENDENCY_UNMET,
			    "%s (%s) would break the installed system part %u version %u, which "
			    "needs %s %u version %u%s%s",
			    name, desc, im->index, im->version, module_function_phrase(m->function),
			    m->index, im->deps[d].version, rel[0] ? " (Device OS " : "",
			    rel[0] ? rel : "");
			if (rel[0])
				strncat(err->message, ")",
					sizeof(err->message) - strlen(err->message) - 1);
			error_hint(err,
				   "flash every system part of one Device OS release together, "
				   "in one job");
			error_detail_str(err, "required_function",
					 module_function_name(m->function));
			error_detail_int(err, "required_index", m->index);
			error_detail_int(err, "required_version", im->deps[d].version);
			error_detail_str(err, "required_release", rel);
			error_detail_int(err, "installed_version", m->version);
			char mine[64];
			release_label(dev->platform, m->function, m->version, false, mine,
				      sizeof(mine));
			error_detail_str(err, "installed_release", mine);
			return -1;
		}
	}
	return 0;
}

static int check_image(const struct device_facts *dev, const char *label,
		       const struct preflight_input *in, const struct preflight_rules *rules,
		       bool force, struct dep_state *st, struct error *err)
{
	const struct image *img = in->img;
	const char *name = in->name ? in->name : "image";
	if (!img || img->n_modules == 0)
		return error_set(err, ERR_IMAGE_NOT_A_MODULE, "%s holds no module", name);
	for (unsigned k = 0; k < img->n_modules; k++)
		if (check_crc(name, k, &img->modules[k], err) < 0)
			return -1;
	if (check_file_size(name, img, rules, dev, err) < 0)
		return -1;
	for (unsigned k = 0; k < img->n_modules; k++) {
		const struct image_module *m = &img->modules[k];
		if (check_kind(dev, name, img, m, rules, err) < 0)
			return -1;
		if (!force && check_platform(dev, label, name, m, err) < 0)
			return -1;
		if (check_slot(dev, name, m, err) < 0)
			return -1;
		if (m->inner && m->inner->n_modules > 0 &&
		    check_slot(dev, name, &m->inner->modules[0], err) < 0)
			return -1;
		if (!force && !rules->planned && check_deps(dev, name, m, st, err) < 0)
			return -1;
		if (!force && !rules->planned && check_siblings(dev, name, m, st, err) < 0)
			return -1;
	}
	for (unsigned k = 0; k < img->n_modules; k++) {
		struct provided *p = &st->planned[st->n_planned++];
		p->function = img->modules[k].function;
		p->index = img->modules[k].index;
		p->version = img->modules[k].version;
		p->name = name;
	}
	return 0;
}

int preflight_check(const struct device_facts *dev, const char *device_label,
		    const struct preflight_input *images, size_t n_images,
		    const struct preflight_rules *rules, bool force, struct preflight_plan *plan,
		    struct error *err)
{
	size_t order[PREFLIGHT_MAX_IMAGES];
	memset(plan, 0, sizeof(*plan));
	if (rules->planned) {
		if (preflight_files_check(images, n_images, err) < 0)
			return -1;
		for (size_t i = 0; i < n_images; i++)
			order[i] = i;
	} else if (preflight_order(dev, images, n_images, order, err) < 0) {
		return -1;
	}
	struct dep_state *st = calloc(1, sizeof(*st));
	if (!st)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	const char *label = device_label && *device_label ? device_label : "the port";
	int r = 0;
	for (size_t n = 0; n < n_images && r == 0; n++) {
		const struct preflight_input *in = &images[order[n]];
		r = check_image(dev, label, in, rules, force, st, err);
		if (r < 0) {
			if (in->name)
				error_detail_str(err, "file", in->name);
			break;
		}
		struct preflight_step *s = &plan->steps[plan->n_steps++];
		s->img = in->img;
		s->job_index = order[n];
		s->name = in->name;
		s->module = &in->img->modules[0];
	}
	free(st);
	if (r < 0)
		memset(plan, 0, sizeof(*plan));
	return r;
}

bool preflight_diagnose(const struct device_facts *dev, const struct image *img, char *buf,
			size_t size, enum error_code *ret_cause)
{
	struct error e;
	error_init(&e);
	struct preflight_rules rules;
	memset(&rules, 0, sizeof(rules));
	rules.transport_name = "any";
	rules.functions = ~0u;
	rules.compressed = rules.combined = rules.encrypted = true;
	struct preflight_input in = {img, "the file"};
	struct preflight_plan *plan = calloc(1, sizeof(*plan));
	int r = plan ? preflight_check(dev, "the port", &in, 1, &rules, false, plan, &e) : 0;
	free(plan);
	buf[0] = '\0';
	if (ret_cause)
		*ret_cause = r < 0 ? e.code : ERR_NONE;
	if (r < 0 && e.code == ERR_WRONG_PLATFORM && dev->platform) {
		char tmp[48];
		const char *iname = platform_label(img->modules[0].platform_id, tmp, sizeof(tmp));
		snprintf(buf, size, "the file was built for %s; the device is a%s %s", iname,
			 strchr("AEIOU", dev->platform->display[0]) ? "n" : "",
			 dev->platform->display);
	} else if (r < 0) {
		snprintf(buf, size, "%s", e.message);
	}
	error_clear(&e);
	return r < 0;
}
