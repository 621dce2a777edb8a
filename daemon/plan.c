#include "plan.h"

#include "asset_module.h"
#include "capability.h"
#include "flash_cost.h"
#include "osver.h"
#include "platform.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FN_BIT(f) (1u << (f))
#define T_BIT(t)  (1u << (t))

/* ---- transports ----------------------------------------------------------------- */

const char *plan_transport_name(enum plan_transport t)
{
	switch (t) {
	case PLAN_TRANSPORT_SERIAL:
		return "serial";
	case PLAN_TRANSPORT_DFU:
		return "dfu";
	case PLAN_TRANSPORT_CTRL:
		return "ctrl";
	case PLAN_TRANSPORT_COUNT:
		break;
	}
	return "?";
}

enum device_mode plan_transport_mode(enum plan_transport t)
{
	return t == PLAN_TRANSPORT_DFU	  ? DEVICE_MODE_DFU
	       : t == PLAN_TRANSPORT_CTRL ? DEVICE_MODE_NORMAL
					  : DEVICE_MODE_LISTENING;
}

/* (transport.h; here, in the library the transports and the core both link) */
const char *device_mode_name(enum device_mode mode)
{
	switch (mode) {
	case DEVICE_MODE_NORMAL:
		return "normal";
	case DEVICE_MODE_LISTENING:
		return "listening";
	case DEVICE_MODE_DFU:
		return "dfu";
	case DEVICE_MODE_SAFE:
		return "safe";
	case DEVICE_MODE_UNKNOWN:
		break;
	}
	return "unknown";
}

const char *plan_step_kind_name(enum plan_step_kind k)
{
	switch (k) {
	case PLAN_STEP_SWITCH:
		return "switch-mode";
	case PLAN_STEP_WRITE:
		return "write";
	case PLAN_STEP_REBOOT:
		return "reboot";
	case PLAN_STEP_VERIFY:
		return "verify";
	}
	return "?";
}

/*
 * Which transport writes which module function, per chip family and Device OS
 * range of the device.  Sources: YMODEM goes through the device's OTA path,
 * which takes every function with a slot, on Device OS up to 5.x (6.0.0
 * removed listening-mode flashing); the DFU memory maps leave out the
 * bootloader and coprocessor firmware, which on 6.x go by control request.
 * A new transport is one more set of rows.
 */
struct plan_capability {
	enum plan_transport transport;
	enum mcu mcu;
	uint16_t platform_id; /* 0 = every platform of that chip family */
	uint16_t min_system;  /* inclusive; 0 = open */
	uint16_t max_system;  /* exclusive; 0 = open */
	uint32_t functions;
};

#define B  FN_BIT(MODULE_FUNCTION_BOOTLOADER)
#define MO FN_BIT(MODULE_FUNCTION_MONO)
#define SY FN_BIT(MODULE_FUNCTION_SYSTEM)
#define US FN_BIT(MODULE_FUNCTION_USER)
#define RS FN_BIT(MODULE_FUNCTION_RADIO_STACK)
#define NC FN_BIT(MODULE_FUNCTION_NCP)
#define AS FN_BIT(MODULE_FUNCTION_ASSET)
/* clang-format off */
static const struct plan_capability capabilities[] = {
	/* transport            chip            platform  system range  functions */
	{PLAN_TRANSPORT_SERIAL, MCU_STM32F205,  0,  0, 6000, B | MO | SY | US},
	{PLAN_TRANSPORT_SERIAL, MCU_NRF52840,   0,  0, 6000, B | SY | US | RS},
	{PLAN_TRANSPORT_SERIAL, MCU_NRF52840,  12,  0, 6000, NC}, /* Argon ESP32 */
	/* Tracker ESP32: Device OS 5.6.0 set HAL_PLATFORM_NCP_UPDATES_DISABLED
	 * (hal/src/tracker/hal_platform_config.h): the system updates it itself */
	{PLAN_TRANSPORT_SERIAL, MCU_NRF52840,  26,  0, 5600, NC},
	{PLAN_TRANSPORT_SERIAL, MCU_RTL8721D,   0,  0, 6000, B | SY | US},
	{PLAN_TRANSPORT_DFU,    MCU_STM32F205,  0,  0,    0, MO | SY | US},
	{PLAN_TRANSPORT_DFU,    MCU_STM32F103,  0,  0,    0, MO | SY | US},
	{PLAN_TRANSPORT_DFU,    MCU_NRF52840,   0,  0,    0, SY | US | RS},
	{PLAN_TRANSPORT_DFU,    MCU_RTL8721D,   0,  0,    0, SY | US},
	/* Device OS 6.x has no YMODEM: the firmware-update control request writes what
	 * DFU cannot (Device OS system/src/control/ firmware update, particle-usb
	 * updateFirmware()) */
	{PLAN_TRANSPORT_CTRL,   MCU_NRF52840,   0, 6000,  0, B},
	{PLAN_TRANSPORT_CTRL,   MCU_RTL8721D,   0, 6000,  0, B},
	/* The Argon's ESP32 (HAL_PLATFORM_NCP_UPDATABLE, hal/src/argon/hal_platform_config.h):
	 * HAL_FLASH_End() hands an NCP module to platform_ncp_update_module() */
	{PLAN_TRANSPORT_CTRL,   MCU_NRF52840,  12,    0,  0, NC},
	/* Assets (HAL_PLATFORM_ASSETS, Gen 3 and P2 from Device OS 5.5.0): HAL_FLASH_End()
	 * hands an asset module to AssetManager::storeAsset(); particle-cli sends them
	 * in normal mode by the firmware-update request */
	{PLAN_TRANSPORT_CTRL,   MCU_NRF52840,   0, 5500,  0, AS},
	{PLAN_TRANSPORT_CTRL,   MCU_RTL8721D,   0, 5500,  0, AS},
};
/* clang-format on */
#undef B
#undef MO
#undef SY
#undef US
#undef RS
#undef NC
#undef AS

uint32_t plan_writers(const struct image_module *m, const struct platform *p,
		      uint16_t system_version)
{
	uint32_t mask = 0;
	if (m->flags & IMAGE_FLAG_ENCRYPTED)
		return 0;
	for (size_t i = 0; i < sizeof(capabilities) / sizeof(capabilities[0]); i++) {
		const struct plan_capability *c = &capabilities[i];
		if (!(c->functions & FN_BIT(m->function)))
			continue;
		if (p && (c->mcu != p->mcu || (c->platform_id && c->platform_id != p->id)))
			continue;
		if (!p && c->platform_id)
			continue;
		if (system_version && c->max_system && system_version >= c->max_system)
			continue;
		if (system_version && system_version < c->min_system)
			continue;
		mask |= T_BIT(c->transport);
	}
	return mask;
}

/* ---- the model ------------------------------------------------------------------- */

void plan_model_from_facts(const struct device_facts *facts, struct plan_model *model)
{
	memset(model, 0, sizeof(*model));
	model->complete = facts->modules_known;
	model->unknown_functions = facts->unknown_functions | FN_BIT(MODULE_FUNCTION_NCP);
	model->platform_id = facts->platform ? facts->platform->id : 0;
	for (unsigned i = 0; i < facts->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
		const struct installed_module *im = &facts->modules[i];
		if (im->store != MODULE_STORE_MAIN)
			continue;
		struct plan_module *m = &model->m[model->n++];
		memset(m, 0, sizeof(*m));
		m->function = im->function;
		m->index = im->index;
		m->version = im->version;
		for (int d = 0; d < 2; d++) {
			m->deps[d].function = im->deps[d].function;
			m->deps[d].index = im->deps[d].index;
			m->deps[d].version = im->deps[d].version;
		}
		m->failed = im->checked & (uint16_t)~im->passed;
		m->valid = m->failed == 0;
		m->platform_id = model->platform_id;
		m->bytes = im->sha256[0] ? PLAN_KNOWN : PLAN_UNKNOWN;
		memcpy(m->sha256, im->sha256, sizeof(m->sha256));
		m->has_crc = im->bytes == INSTALLED_BYTES_READ;
		m->crc = im->crc;
		if (m->bytes == PLAN_UNKNOWN)
			m->bytes_why =
			    im->bytes == INSTALLED_BYTES_UNREADABLE
				? "reading its SHA-256 and CRC back from the device failed"
			    : im->address ? "its SHA-256 and CRC were not read back"
					  : "the device reports no hash for it";
	}
}

enum plan_presence plan_model_lookup(const struct plan_model *model, uint8_t function,
				     uint8_t index, const struct plan_module **ret)
{
	if (ret)
		*ret = NULL;
	for (size_t i = 0; i < model->n; i++)
		if (model->m[i].function == function && model->m[i].index == index) {
			if (ret)
				*ret = &model->m[i];
			return PLAN_KNOWN;
		}
	if (!model->complete || (model->unknown_functions & FN_BIT(function)))
		return PLAN_UNKNOWN;
	return PLAN_ABSENT;
}

static void model_apply(struct plan_model *model, const struct image_module *im, const char *file)
{
	struct plan_module *m = NULL;
	for (size_t i = 0; i < model->n && !m; i++)
		if (model->m[i].function == im->function && model->m[i].index == im->index)
			m = &model->m[i];
	if (!m) {
		if (model->n >= PLAN_MAX_MODULES)
			return;
		m = &model->m[model->n++];
	}
	memset(m, 0, sizeof(*m));
	m->function = im->function;
	m->index = im->index;
	m->version = im->version;
	m->deps[0] = im->deps[0];
	m->deps[1] = im->deps[1];
	m->valid = true;
	m->file = file;
	m->platform_id = im->platform_id;
}

/* ---- words ------------------------------------------------------------------------ */

/* "system part 1", "bootloader", "application 1", "radio stack" */
static void module_words(uint8_t function, uint8_t index, char *buf, size_t size)
{
	const char *phrase = module_function_phrase(function);
	if (function == MODULE_FUNCTION_SYSTEM || function == MODULE_FUNCTION_USER ||
	    (function == MODULE_FUNCTION_BOOTLOADER && index != 0))
		snprintf(buf, size, "%s %u", phrase, index);
	else
		snprintf(buf, size, "%s", phrase);
}

static bool release_function(uint8_t function)
{
	return function == MODULE_FUNCTION_SYSTEM || function == MODULE_FUNCTION_MONO ||
	       function == MODULE_FUNCTION_BOOTLOADER || function == MODULE_FUNCTION_RADIO_STACK;
}

/* "Device OS 4.0.0 or later": the oldest release that brings at least this version. */
static void needed_release(uint16_t platform_id, uint8_t function, uint16_t version, char *buf,
			   size_t size, char *rel, size_t rel_size)
{
	buf[0] = rel[0] = '\0';
	if (!release_function(function))
		return;
	int fn = function == MODULE_FUNCTION_MONO ? MODULE_FUNCTION_SYSTEM : function;
	const struct os_release *r = osver_first_providing(platform_id, fn, version);
	if (!r)
		return;
	snprintf(rel, rel_size, "%s", r->version);
	snprintf(buf, size, "Device OS %s or later", r->version);
}

/* "Device OS 2.2.0–2.3.1": the releases that shipped exactly this version. */
static void shipped_release(uint16_t platform_id, uint8_t function, uint16_t version, char *buf,
			    size_t size, char *rel, size_t rel_size)
{
	buf[0] = rel[0] = '\0';
	if (!release_function(function))
		return;
	int fn = function == MODULE_FUNCTION_MONO ? MODULE_FUNCTION_SYSTEM : function;
	const struct os_release *first, *last;
	if (!osver_span(platform_id, fn, version, &first, &last))
		return;
	if (first == last || strcmp(first->version, last->version) == 0) {
		snprintf(rel, rel_size, "%s", first->version);
		snprintf(buf, size, "Device OS %s", first->version);
	} else {
		snprintf(rel, rel_size, "%s-%s", first->version, last->version);
		snprintf(buf, size, "Device OS %s\u2013%s", first->version, last->version);
	}
}

static void add_line(char lines[][PLAN_NOTE_LEN], size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_line(char lines[][PLAN_NOTE_LEN], size_t *n, const char *fmt, ...)
{
	if (*n >= PLAN_MAX_NOTES)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lines[*n], PLAN_NOTE_LEN, fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < *n; i++)
		if (strcmp(lines[i], lines[*n]) == 0)
			return; /* said already */
	(*n)++;
}

/* ---- the device's rules ------------------------------------------------------------- */

/*
 * Electron system parts of Device OS 0.7.0 to 3.3.x carry their bootloader and
 * install it at boot (HAL_REPLACE_BOOTLOADER is defined for PLATFORM_ID 10 only
 * in device-os hal/inc/bootloader_hal.h; the image comes from
 * HAL_Bootloader_Image()).  Their bootloader dependency is met by themselves.
 */
#define ELECTRON_PLATFORM_ID	   10
#define ELECTRON_CARRIES_BL_FROM   207	/* 0.7.0 */
#define ELECTRON_CARRIES_BL_BEFORE 4000 /* 4.0.0 dropped the Electron */

static bool bootloader_carried(const struct plan_model *model)
{
	if (model->platform_id != ELECTRON_PLATFORM_ID)
		return false;
	for (size_t i = 0; i < model->n; i++)
		if (model->m[i].function == MODULE_FUNCTION_SYSTEM &&
		    model->m[i].version >= ELECTRON_CARRIES_BL_FROM &&
		    model->m[i].version < ELECTRON_CARRIES_BL_BEFORE)
			return true;
	return false;
}

enum dep_verdict {
	DEP_MET,
	DEP_UNMET,
	DEP_UNKNOWN,
};

static enum dep_verdict dep_check(const struct plan_model *model,
				  const struct image_dependency *dep,
				  const struct plan_module **have)
{
	*have = NULL;
	if (dep->function == MODULE_FUNCTION_NONE)
		return DEP_MET;
	enum plan_presence p = plan_model_lookup(model, dep->function, dep->index, have);
	if (p == PLAN_UNKNOWN)
		return DEP_UNKNOWN;
	if (p == PLAN_KNOWN && (*have)->version >= dep->version)
		return DEP_MET;
	if (dep->function == MODULE_FUNCTION_BOOTLOADER && bootloader_carried(model))
		return DEP_MET;
	return DEP_UNMET;
}

/* What the device has, for messages: "bootloader 1006 (Device OS 2.2.0–2.3.1)", "no bootloader". */
static void have_words(const struct plan_model *model, const struct image_dependency *dep,
		       const struct plan_module *have, char *buf, size_t size, char *rel,
		       size_t rel_size)
{
	char what[48], shipped[96];
	module_words(dep->function, dep->index, what, sizeof(what));
	rel[0] = '\0';
	if (!have) {
		snprintf(buf, size, "no %s", what);
		return;
	}
	shipped_release(model->platform_id, dep->function, have->version, shipped, sizeof(shipped),
			rel, rel_size);
	snprintf(buf, size, "%s %s%u%s%s%s", what, have->file ? "version " : "", have->version,
		 shipped[0] ? " (" : "", shipped, shipped[0] ? ")" : "");
}

/*
 * A dependency that does not hold: dependency-unmet naming the file (or the
 * installed module), what it needs, the release that brings it and what the
 * device will have.
 */
static void unmet_error(const struct plan_model *model, const struct plan_module *who,
			const char *file, const struct image_dependency *dep,
			const struct plan_module *have, bool at_update, struct error *err)
{
	char who_words[48], need_words[48], need_rel[64], need_r[32], have_str[160], have_r[48];
	module_words(who->function, who->index, who_words, sizeof(who_words));
	module_words(dep->function, dep->index, need_words, sizeof(need_words));
	needed_release(model->platform_id, dep->function, dep->version, need_rel, sizeof(need_rel),
		       need_r, sizeof(need_r));
	have_words(model, dep, have, have_str, sizeof(have_str), have_r, sizeof(have_r));
	char need[160];
	snprintf(need, sizeof(need), "%s \u2265 %u%s%s%s", need_words, dep->version,
		 need_rel[0] ? " (" : "", need_rel, need_rel[0] ? ")" : "");
	if (file && who->file) {
		/* a module the job writes */
		error_set(err, ERR_DEPENDENCY_UNMET, "%s needs %s; the device %s %s%s", file, need,
			  have && have->file ? "would have" : "has", have_str,
			  at_update ? " when it is written" : "");
		if (have && have->file)
			error_hint(err,
				   "add %s of the same release as %s to this job (or flash it "
				   "first)",
				   need_words, file);
		else
			error_hint(err,
				   "add the %s of the same release to this job (flashctl flash "
				   "<%s>.bin %s)",
				   need_words, module_function_name(dep->function), file);
	} else {
		/* an installed module the job would break */
		if (have && have->file)
			error_set(
			    err, ERR_DEPENDENCY_UNMET,
			    "the installed %s (version %u) needs %s; this job installs %s: the "
			    "device would boot into safe mode",
			    who_words, who->version, need, have_str);
		else
			error_set(
			    err, ERR_DEPENDENCY_UNMET,
			    "the installed %s (version %u) needs %s; the device would have %s "
			    "after this job: it would boot into safe mode",
			    who_words, who->version, need, have_str);
		error_hint(err,
			   "flash a %s that works with the new modules in the same job, or "
			   "a newer %s; --force writes anyway",
			   who_words, need_words);
		error_detail_str(err, "broken_module", who_words);
	}
	error_detail_str(err, "module_function", module_function_name(who->function));
	error_detail_int(err, "module_index", who->index);
	error_detail_int(err, "module_version", who->version);
	error_detail_str(err, "required_function", module_function_name(dep->function));
	error_detail_int(err, "required_index", dep->index);
	error_detail_int(err, "required_version", dep->version);
	error_detail_str(err, "required_release", need_r);
	error_detail_int(err, "installed_version", have ? have->version : 0);
	error_detail_str(err, "installed_release", have_r);
	if (file)
		error_detail_str(err, "file", file);
	error_detail_str(err, "check", at_update ? "update" : "boot");
}

/*
 * The checks the device makes when a module is written: device-os
 * hal/src/nRF52840/ota_flash_hal.cpp (and the stm32f2xx one) HAL_FLASH_End()
 * fetches the OTA module with userDepsOptional and INTEGRITY |
 * DEPENDENCIES_FULL; validate_module_dependencies() then skips user parts,
 * needs dependency 1 met by the installed module of that function and index,
 * dependency 2 too unless it is a bootloader, and a dependency on a slot the
 * platform lacks fails; validate_module_dependencies_full() refuses a system
 * part that another installed system part needs in a higher version.
 */
static int update_check(const struct plan_model *model, const struct image_module *im,
			const char *file, char warn[][PLAN_NOTE_LEN], size_t *n_warn,
			struct error *err)
{
	if (im->function == MODULE_FUNCTION_USER)
		return 0;
	struct plan_module who = {
	    .function = im->function, .index = im->index, .version = im->version, .file = file};
	for (int d = 0; d < 2; d++) {
		const struct image_dependency *dep = &im->deps[d];
		if (d == 1 && dep->function == MODULE_FUNCTION_BOOTLOADER)
			continue;
		const struct plan_module *have;
		enum dep_verdict v = dep_check(model, dep, &have);
		if (v == DEP_UNKNOWN) {
			char w[48];
			module_words(dep->function, dep->index, w, sizeof(w));
			add_line(warn, n_warn,
				 "%s needs %s \u2265 %u, which flashd cannot read on this device: "
				 "the device checks it itself",
				 file, w, dep->version);
		} else if (v == DEP_UNMET) {
			unmet_error(model, &who, file, dep, have, true, err);
			return -1;
		}
	}
	if (im->function != MODULE_FUNCTION_SYSTEM)
		return 0;
	for (size_t i = 0; i < model->n; i++) {
		const struct plan_module *o = &model->m[i];
		if (o->function != MODULE_FUNCTION_SYSTEM || o->index == im->index)
			continue;
		for (int d = 0; d < 2; d++)
			if (o->deps[d].function == im->function && o->deps[d].index == im->index &&
			    o->deps[d].version > im->version) {
				struct plan_module newer = who;
				unmet_error(model, o, o->file, &o->deps[d], &newer, true, err);
				/* "the installed system part 2 needs system part 1 >= X; this job
				 * installs a lower version" */
				if (file)
					error_detail_str(err, "file", file);
				return -1;
			}
	}
	return 0;
}

/* ---- skipping what is installed ------------------------------------------------------ */

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

/*
 * Whether the device already holds this module identically (issue 11): same
 * function, index and version, valid, and the same bytes as far as flashd could
 * read them: the suffix's SHA-256 (from `s`, or read over DFU from the end
 * address the installed prefix names) and, over DFU, the stored CRC-32.  A module
 * whose bytes could not be read is never identical by its version alone (an
 * application's version is its ABI number; a rebuilt system part keeps its
 * version): it is written, and *unverified says why.
 */
static bool installed_identically(const struct plan_model *model, const struct image_module *m,
				  char *why, size_t size, char *unverified, size_t usize)
{
	if (m->function == MODULE_FUNCTION_ASSET)
		return false; /* plan_build() asks asset_installed() with the file */
	const struct plan_module *im;
	if (plan_model_lookup(model, m->function, m->index, &im) != PLAN_KNOWN ||
	    im->version != m->version || !im->valid)
		return false;
	char words[48];
	module_words(m->function, m->index, words, sizeof(words));
	if (im->bytes != PLAN_KNOWN || !m->has_suffix) {
		snprintf(unverified, usize,
			 "the device has %s version %u already, but %s: written, since the same "
			 "version does not prove the same bytes",
			 words, m->version,
			 !m->has_suffix ? "the file has no suffix to compare" : im->bytes_why);
		return false;
	}
	char sha[65];
	hex(m->sha256, 32, sha);
	if (strcmp(sha, im->sha256) != 0 || (im->has_crc && im->crc != m->crc_stored))
		return false;
	if (im->has_crc)
		snprintf(why, size,
			 "the device has this %s already (version %u, same SHA-256 %.12s\u2026 "
			 "and CRC-32 %08x, read back from the device)",
			 words, m->version, sha, m->crc_stored);
	else
		snprintf(why, size,
			 "the device has this %s already (version %u, same SHA-256 %.12s\u2026)",
			 words, m->version, sha);
	return true;
}

/* An asset module the device's asset store holds already (same name, same
 * SHA-256 of the raw bytes), as GET_ASSET_INFO reported it. */
static bool asset_installed(const struct device_facts *facts, const struct image *img, char *why,
			    size_t size)
{
	struct asset_module_info a;
	if (!facts->assets_known || img->n_modules != 1 ||
	    img->modules[0].function != MODULE_FUNCTION_ASSET ||
	    asset_module_read(img->data, img->len, &a) < 0)
		return false;
	for (unsigned i = 0; i < facts->n_assets && i < DEVICE_FACTS_MAX_ASSETS; i++)
		if (strcmp(facts->assets[i].name, a.name) == 0 &&
		    memcmp(facts->assets[i].sha256, a.sha256, 32) == 0) {
			char sha[65];
			hex(a.sha256, 32, sha);
			snprintf(why, size,
				 "the device has the asset %s already (same SHA-256 %.12s\u2026)",
				 a.name, sha);
			return true;
		}
	return false;
}

/* ---- ordering, end state, transports ----------------------------------------------- */

static int function_rank(const struct image_module *m)
{
	switch (m->function) {
	case MODULE_FUNCTION_BOOTLOADER:
		return m->index == 0 ? 1 : 0; /* P2 KM0 parts before the KM4 bootloader */
	case MODULE_FUNCTION_RADIO_STACK:
		return 2;
	case MODULE_FUNCTION_NCP:
		return 3;
	case MODULE_FUNCTION_SYSTEM:
	case MODULE_FUNCTION_MONO:
		return 4 + m->index;
	case MODULE_FUNCTION_USER:
		return 20;
	default:
		return 30;
	}
}

/* Applies every module of the file to the model after its update-time checks. */
static int try_file(struct plan_model *model, const struct preflight_input *in,
		    char warn[][PLAN_NOTE_LEN], size_t *n_warn, struct error *err)
{
	for (unsigned k = 0; k < in->img->n_modules; k++) {
		const struct image_module *m = &in->img->modules[k];
		if (m->function == MODULE_FUNCTION_ASSET)
			continue; /* the asset store is not a module slot */
		if (update_check(model, m, in->name, warn, n_warn, err) < 0)
			return -1;
		model_apply(model, m, in->name);
	}
	return 0;
}

/*
 * Every module at the next boot: both dependencies, user parts included, as the
 * device judges them outside an update (validate_module_dependencies() with
 * userOptional false: HAL_Verify_User_Dependencies() for the application, the
 * module list behind `s` for the rest; a failing one means safe mode).
 */
static int end_state_check(const struct plan_model *before, const struct plan_model *after,
			   const struct plan_options *opts, struct plan *plan, struct error *err)
{
	int rc = 0;
	for (size_t i = 0; i < after->n; i++) {
		const struct plan_module *m = &after->m[i];
		char who[48];
		module_words(m->function, m->index, who, sizeof(who));
		if (!m->file && !m->valid) {
			/* reported invalid before the job: the job may be the repair */
			const char *names[MODULE_CHECKS_MAX];
			unsigned n = module_checks_failed(m->failed, 0, names);
			add_line(plan->warnings, &plan->n_warnings,
				 "the installed %s (version %u) is already invalid (%s failed)",
				 who, m->version, n ? names[0] : "a check");
		}
		for (int d = 0; d < 2; d++) {
			const struct image_dependency *dep = &m->deps[d];
			if (dep->function == MODULE_FUNCTION_NONE ||
			    (dep->function == m->function && dep->index == m->index))
				continue; /* own slot: checked against the old one at update time */
			const struct plan_module *have;
			enum dep_verdict v = dep_check(after, dep, &have);
			char need[48];
			module_words(dep->function, dep->index, need, sizeof(need));
			if (v == DEP_UNKNOWN) {
				add_line(plan->warnings, &plan->n_warnings,
					 "%s needs %s \u2265 %u, which flashd cannot read on this "
					 "device: the device checks it itself",
					 m->file ? m->file : who, need, dep->version);
				continue;
			}
			if (v == DEP_MET)
				continue;
			if (!m->file) {
				/* Untouched: unmet before the job too?  Then it is not made worse.
				 */
				const struct plan_module *was;
				if (dep_check(before, dep, &was) != DEP_MET) {
					add_line(
					    plan->warnings, &plan->n_warnings,
					    "the installed %s (version %u) needs %s \u2265 %u, "
					    "which the device lacks already; this job does not "
					    "change that",
					    who, m->version, need, dep->version);
					continue;
				}
			}
			struct error e;
			error_init(&e);
			unmet_error(after, m, m->file, dep, have, false, &e);
			if (opts->force) {
				add_line(plan->overrides, &plan->n_overrides, "%s", e.message);
				error_clear(&e);
				continue;
			}
			if (rc == 0) {
				error_move(err, &e);
				rc = -1;
			}
			error_clear(&e);
		}
	}
	return rc;
}

/*
 * Typical time a write takes, per KiB: the flash the bytes land in (erase + program,
 * the datasheet figures of flash_cost.c) plus the USB full-speed bus:
 *  - USB 2.0 5.8.4 table 5-9: at most 19 bulk packets of 64 bytes per 1 ms frame
 *    (842 us per KiB); a YMODEM block (1 KiB) and a firmware-update chunk wait for
 *    the device's reply: one more frame per KiB.
 * DFU writes the module's own slot; YMODEM and the firmware-update request write the
 * OTA staging area (flash_kind_of()), which the device copies at the reset (counted
 * in the reboot step).  Modules land in whole sectors: 128 KiB ones on Gen 2.
 */
#define USB_FS_US_PER_KIB   842 /* 1024 / (19 * 64) ms */
#define REPLY_FRAME_US_KIB  1000
#define WRITE_STEP_OVERHEAD 500 /* ms: opening the device, the first request */

static unsigned estimate_write_ms(enum plan_transport t, const struct platform *p, uint64_t bytes)
{
	enum flash_kind f = flash_kind_of(p, t != PLAN_TRANSPORT_DFU);
	uint32_t unit = f == FLASH_STM32F2 ? 128 * 1024 : 4096;
	uint64_t us_per_kib = (uint64_t)flash_erase_us(f, unit) * 1024 / unit +
			      flash_program_us(f, 1024) + USB_FS_US_PER_KIB;
	if (t != PLAN_TRANSPORT_DFU)
		us_per_kib += REPLY_FRAME_US_KIB;
	return (unsigned)((bytes + 1023) / 1024 * us_per_kib / 1000) + WRITE_STEP_OVERHEAD;
}

static void add_step(struct plan *plan, struct plan_step s)
{
	if (plan->n_steps >= PLAN_MAX_STEPS)
		return;
	plan->steps[plan->n_steps++] = s;
	plan->estimate_ms += s.estimate_ms;
}

static void add_switch(struct plan *plan, enum device_mode from, enum plan_transport to,
		       bool by_request)
{
	struct plan_step s = {.kind = PLAN_STEP_SWITCH, .transport = to, .from = from};
	s.to = plan_transport_mode(to);
	if (to == PLAN_TRANSPORT_DFU && by_request)
		s.how = "enter-DFU control request";
	else if (to == PLAN_TRANSPORT_DFU)
		s.how = "14400 baud";
	else if (to == PLAN_TRANSPORT_CTRL)
		s.how = "DFU leave";
	else if (from == DEVICE_MODE_DFU)
		s.how = "DFU leave, then 28800 baud";
	else if (by_request)
		s.how = "start-listening control request"; /* 28800 baud if it fails */
	else
		s.how = "28800 baud";
	s.estimate_ms = from == DEVICE_MODE_DFU ? 5000 : 2000;
	add_step(plan, s);
}

/* The transport the device is in (no switch needed), if any. */
static int current_transport(const struct device_facts *facts, enum device_mode mode,
			     uint32_t built)
{
	if (mode == DEVICE_MODE_DFU)
		return PLAN_TRANSPORT_DFU;
	/* without the serial transport (no tty: job_plan.c) a running device takes
	 * control requests as it is */
	if (!(built & T_BIT(PLAN_TRANSPORT_SERIAL)) && (built & T_BIT(PLAN_TRANSPORT_CTRL)))
		return PLAN_TRANSPORT_CTRL;
	if (mode == DEVICE_MODE_LISTENING)
		return PLAN_TRANSPORT_SERIAL;
	/* normal, safe, unknown: listening mode is one 28800 away on <= 5.x; on 6.x the
	 * running device takes control requests as it is */
	if (facts->system_version && facts->system_version >= 6000)
		return PLAN_TRANSPORT_CTRL;
	return PLAN_TRANSPORT_SERIAL;
}

/*
 * Who reads the verdict after the last reboot: the listening-mode console
 * (`s`) where the Device OS the device then runs has one, else module info by
 * control request where it answers them (Device OS 6.x).
 */
static enum plan_transport verifier(const struct platform *p, uint16_t sysver, uint32_t built)
{
	if ((built & T_BIT(PLAN_TRANSPORT_CTRL)) &&
	    (!(built & T_BIT(PLAN_TRANSPORT_SERIAL)) ||
	     !capability_has(CAPABILITY_LISTENING_CONSOLE, p, sysver, true)) &&
	    capability_has(CAPABILITY_CONTROL_REQUESTS, p, sysver, false))
		return PLAN_TRANSPORT_CTRL;
	return PLAN_TRANSPORT_SERIAL;
}

static int no_writer(const struct preflight_input *in, const struct image_module *m,
		     const struct device_facts *facts, struct error *err)
{
	char words[48];
	module_words(m->function, m->index, words, sizeof(words));
	const struct platform *p = facts->platform;
	const char *pname = p ? p->display : "this device";
	if (m->function == MODULE_FUNCTION_NCP && !(m->flags & IMAGE_FLAG_ENCRYPTED)) {
		const char *why =
		    !p ? "its platform is not known, and only the Argon's NCP takes firmware from "
			 "a host"
		    : p->id == 26
			? "Device OS 5.6.0 and later update the Tracker's ESP32 themselves "
			  "(HAL_PLATFORM_NCP_UPDATES_DISABLED)"
		    : p->id == 12
			? "no transport of this build reaches the Argon's NCP on this Device OS"
			: "its network coprocessor is not updatable from a host (Device OS sets "
			  "HAL_PLATFORM_NCP_UPDATABLE for the Argon only)";
		error_set(err, ERR_NCP_NOT_UPDATABLE,
			  "%s (NCP firmware) cannot be written to %s: %s", in->name, pname, why);
		if (p) {
			error_detail_str(err, "platform", p->name);
			error_detail_int(err, "platform_id", p->id);
		}
		error_detail_str(err, "device_os",
				 facts->os_version[0] ? facts->os_version : "unknown");
		error_detail_str(err, "reason", why);
		error_detail_str(err, "file", in->name);
		return -1;
	}
	if (m->function == MODULE_FUNCTION_ASSET) {
		const char *why =
		    p && p->mcu != MCU_NRF52840 && p->mcu != MCU_RTL8721D
			? "only Gen 3 and P2-family devices have an asset store"
			: "assets need Device OS 5.5.0 or later (HAL_PLATFORM_ASSETS), written by "
			  "USB control request";
		error_set(err, ERR_ASSETS_NOT_FLASHABLE,
			  "the asset %s cannot be written to %s%s%s: %s", in->name, pname,
			  facts->os_version[0] ? " on Device OS " : "", facts->os_version, why);
		if (p)
			error_detail_str(err, "platform", p->name);
		error_detail_str(err, "device_os",
				 facts->os_version[0] ? facts->os_version : "unknown");
		error_detail_str(err, "reason", why);
		error_detail_str(err, "file", in->name);
		error_detail_str(err, "transport", "ctrl");
		return -1;
	}
	const char *why =
	    (m->flags & IMAGE_FLAG_ENCRYPTED)
		? "encrypted modules are written by Particle's tools only"
	    : facts->system_version >= 6000
		? "Device OS 6.0.0 and later removed YMODEM flashing, and DFU does not "
		  "reach this module"
		: "neither YMODEM nor DFU writes this kind of module on this device";
	error_set(err, ERR_NOT_FLASHABLE_HERE, "%s (%s) cannot be written to this device: %s",
		  in->name, words, why);
	error_detail_str(err, "module_function", module_function_name(m->function));
	error_detail_str(err, "reason", why);
	error_detail_str(err, "file", in->name);
	return -1;
}

int plan_build(const struct device_facts *facts, const struct preflight_input *files,
	       size_t n_files, const struct plan_options *opts, struct plan *plan,
	       struct error *err)
{
	memset(plan, 0, sizeof(*plan));
	if (preflight_files_check(files, n_files, err) < 0)
		return -1;
	struct plan_model *before = malloc(sizeof(*before));
	struct plan_model *model = malloc(sizeof(*model));
	struct plan_model *trial = malloc(sizeof(*trial));
	if (!before || !model || !trial) {
		free(before);
		free(model);
		free(trial);
		return error_set(err, ERR_INTERNAL, "out of memory");
	}
	plan_model_from_facts(facts, before);
	*model = *before;
	int rc = 0;

	/* 1. what is installed already */
	bool todo[PREFLIGHT_MAX_IMAGES];
	size_t n_todo = 0;
	for (size_t i = 0; i < n_files; i++) {
		todo[i] = true;
		const struct image *img = files[i].img;
		bool same = !opts->force && !opts->rewrite && img->n_modules > 0;
		char why[200] = "", unverified[PLAN_NOTE_LEN] = "";
		if (same && img->modules[0].function == MODULE_FUNCTION_ASSET)
			same = asset_installed(facts, img, why, sizeof(why));
		else
			for (unsigned k = 0; same && k < img->n_modules; k++)
				same = installed_identically(before, &img->modules[k], why,
							     sizeof(why), unverified,
							     sizeof(unverified));
		if (!same && unverified[0])
			add_line(plan->unverified, &plan->n_unverified, "%s: %s", files[i].name,
				 unverified);
		if (same) {
			todo[i] = false;
			plan->skipped[plan->n_skipped] = i;
			snprintf(plan->skip_reason[plan->n_skipped], sizeof(plan->skip_reason[0]),
				 "%s", why);
			plan->n_skipped++;
		} else {
			n_todo++;
		}
	}

	/* 2. order: each step must pass the update-time checks in the state before it */
	while (plan->n_order < n_todo) {
		size_t best = SIZE_MAX;
		size_t first_failed = SIZE_MAX;
		struct error first_err;
		error_init(&first_err);
		for (size_t i = 0; i < n_files; i++) {
			if (!todo[i])
				continue;
			*trial = *model;
			struct error e;
			error_init(&e);
			char w[PLAN_MAX_NOTES][PLAN_NOTE_LEN];
			size_t nw = 0;
			if (try_file(trial, &files[i], w, &nw, &e) < 0) {
				if (first_failed == SIZE_MAX ||
				    function_rank(&files[i].img->modules[0]) <
					function_rank(&files[first_failed].img->modules[0])) {
					error_clear(&first_err);
					error_move(&first_err, &e);
					first_failed = i;
				}
				error_clear(&e);
				continue;
			}
			if (best == SIZE_MAX || function_rank(&files[i].img->modules[0]) <
						    function_rank(&files[best].img->modules[0]))
				best = i;
		}
		if (best == SIZE_MAX) {
			/* nothing can go next */
			if (!opts->force) {
				error_move(err, &first_err);
				rc = -1;
				break;
			}
			add_line(plan->overrides, &plan->n_overrides, "%s", first_err.message);
			best = first_failed;
		}
		error_clear(&first_err);
		/* apply for real, keeping the warnings */
		struct error e;
		error_init(&e);
		if (try_file(model, &files[best], plan->warnings, &plan->n_warnings, &e) < 0) {
			/* forced: write it anyway */
			error_clear(&e);
			for (unsigned k = 0; k < files[best].img->n_modules; k++)
				model_apply(model, &files[best].img->modules[k], files[best].name);
		}
		todo[best] = false;
		plan->order[plan->n_order++] = best;
	}

	/* 3. the end state, at the next boot */
	if (rc == 0 && end_state_check(before, model, opts, plan, err) < 0)
		rc = -1;

	/* 4. transports: one for every write if one can, preferring the mode the device is in */
	if (rc == 0 && plan->n_order > 0) {
		const struct platform *p = facts->platform;
		uint32_t built = opts->transports ? opts->transports : ~0u;
		uint32_t common = built;
		uint32_t writers[PREFLIGHT_MAX_IMAGES];
		uint16_t sysver = facts->system_version;
		for (size_t n = 0; n < plan->n_order; n++) {
			const struct preflight_input *in = &files[plan->order[n]];
			uint32_t w = built;
			for (unsigned k = 0; k < in->img->n_modules; k++) {
				const struct image_module *m = &in->img->modules[k];
				const struct image_module *inner =
				    m->inner && m->inner->n_modules ? &m->inner->modules[0] : m;
				w &= plan_writers(inner, p, sysver);
				if (!w) {
					rc = no_writer(in, inner, facts, err);
					break;
				}
			}
			if (rc < 0)
				break;
			writers[n] = w;
			common &= w;
			for (unsigned k = 0; k < in->img->n_modules; k++)
				if (in->img->modules[k].function == MODULE_FUNCTION_SYSTEM &&
				    in->img->modules[k].index <= 1)
					sysver = in->img->modules[k].version;
		}
		if (rc == 0) {
			int cur = current_transport(facts, opts->mode, built);
			if (cur >= 0 && !(built & T_BIT(cur)))
				cur = -1;
			int chosen = -1;
			if (cur >= 0 && (common & T_BIT(cur)))
				chosen = cur;
			for (int t = 0; chosen < 0 && t < PLAN_TRANSPORT_COUNT; t++)
				if (common & T_BIT(t))
					chosen = t;
			enum device_mode mode = opts->mode;
			uint16_t running = facts->system_version; /* the Device OS at each step */
			int at = -1;
			if (cur >= 0 && (plan_transport_mode((enum plan_transport)cur) == mode ||
					 (cur == PLAN_TRANSPORT_CTRL && mode != DEVICE_MODE_DFU)))
				at = cur;
			for (size_t n = 0; n < plan->n_order; n++) {
				const struct preflight_input *in = &files[plan->order[n]];
				int t = chosen;
				if (t < 0)
					t = at >= 0 && (writers[n] & T_BIT(at)) ? at
					    : writers[n] & T_BIT(PLAN_TRANSPORT_SERIAL)
						? PLAN_TRANSPORT_SERIAL
					    : writers[n] & T_BIT(PLAN_TRANSPORT_DFU)
						? PLAN_TRANSPORT_DFU
						: PLAN_TRANSPORT_CTRL;
				if (n == 0)
					plan->first_transport = (enum plan_transport)t;
				else if ((enum plan_transport)t != plan->first_transport)
					plan->mixed_transports = true;
				if (t != at) {
					/* a running device that takes control requests is asked
					 * for DFU mode or listening mode by request (particle-usb
					 * src/device.js, enterDfuMode(), enterListeningMode())
					 * rather than by 14400 or 28800 baud */
					bool by_request =
					    at == PLAN_TRANSPORT_CTRL ||
					    (mode != DEVICE_MODE_DFU &&
					     (built & T_BIT(PLAN_TRANSPORT_CTRL)) &&
					     capability_has(CAPABILITY_CONTROL_REQUESTS, p, running,
							    false));
					add_switch(plan, mode, (enum plan_transport)t, by_request);
					at = t;
					mode = plan_transport_mode((enum plan_transport)t);
				}
				struct plan_step s = {.kind = PLAN_STEP_WRITE,
						      .transport = (enum plan_transport)t,
						      .file = plan->order[n],
						      .name = in->name,
						      .img = in->img,
						      .bytes = in->img->len};
				s.estimate_ms = estimate_write_ms(s.transport, p, s.bytes);
				add_step(plan, s);
				plan->bytes += s.bytes;
				plan->n_writes++;
				for (unsigned k = 0; k < in->img->n_modules; k++)
					if (in->img->modules[k].function ==
						MODULE_FUNCTION_SYSTEM &&
					    in->img->modules[k].index <= 1)
						running = in->img->modules[k].version;
				if (t == PLAN_TRANSPORT_CTRL)
					/* Device OS resets to apply the update */
					add_step(plan, (struct plan_step){
							   .kind = PLAN_STEP_REBOOT,
							   .transport = PLAN_TRANSPORT_CTRL,
							   .how = "reset after the update",
							   .estimate_ms = 6000});
				if (t == PLAN_TRANSPORT_SERIAL)
					/* the device resets to apply each YMODEM file */
					add_step(plan, (struct plan_step){
							   .kind = PLAN_STEP_REBOOT,
							   .transport = PLAN_TRANSPORT_SERIAL,
							   .how = "reset after the transfer",
							   .estimate_ms = 6000});
			}
			if (at == PLAN_TRANSPORT_DFU)
				add_step(plan, (struct plan_step){.kind = PLAN_STEP_REBOOT,
								  .transport = PLAN_TRANSPORT_DFU,
								  .how = "DFU leave",
								  .estimate_ms = 5000});
			/* the asset store is read by control request only (GET_ASSET_INFO):
			 * a job that writes assets is verified there where the device takes
			 * them */
			bool assets = false;
			for (size_t n = 0; n < plan->n_order; n++)
				assets |= files[plan->order[n]].img->modules[0].function ==
					  MODULE_FUNCTION_ASSET;
			enum plan_transport v = verifier(p, sysver, built);
			if (assets && (built & T_BIT(PLAN_TRANSPORT_CTRL)) &&
			    capability_has(CAPABILITY_CONTROL_REQUESTS, p, sysver, false))
				v = PLAN_TRANSPORT_CTRL;
			add_step(plan, (struct plan_step){.kind = PLAN_STEP_VERIFY,
							  .transport = v,
							  .estimate_ms = 2000});
		}
	}
	free(before);
	free(model);
	free(trial);
	if (rc < 0)
		plan->n_steps = plan->n_writes = plan->n_order = 0;
	return rc;
}

/* ---- for people and clients ------------------------------------------------------- */

static void step_module_words(const struct plan_step *s, char *buf, size_t size)
{
	if (!s->img || s->img->n_modules == 0) {
		snprintf(buf, size, "%s", s->name ? s->name : "a file");
		return;
	}
	if (s->img->n_modules > 1) {
		snprintf(buf, size, "%u modules", s->img->n_modules);
		return;
	}
	if (s->img->modules[0].function == MODULE_FUNCTION_ASSET && s->img->modules[0].name[0]) {
		snprintf(buf, size, "asset %s", s->img->modules[0].name); /* its NAME extension */
		return;
	}
	module_words(s->img->modules[0].function, s->img->modules[0].index, buf, size);
}

void plan_step_describe(const struct plan_step *s, char *buf, size_t size)
{
	char words[96];
	switch (s->kind) {
	case PLAN_STEP_SWITCH:
		snprintf(buf, size, "switching to %s mode (%s)",
			 s->to == DEVICE_MODE_DFU      ? "DFU"
			 : s->to == DEVICE_MODE_NORMAL ? "normal"
						       : "listening",
			 s->how);
		return;
	case PLAN_STEP_WRITE:
		step_module_words(s, words, sizeof(words));
		snprintf(buf, size, "writing %s over %s", words,
			 s->transport == PLAN_TRANSPORT_DFU    ? "DFU"
			 : s->transport == PLAN_TRANSPORT_CTRL ? "control requests"
							       : "serial");
		return;
	case PLAN_STEP_REBOOT:
		snprintf(buf, size, "rebooting (%s)", s->how ? s->how : "reset");
		return;
	case PLAN_STEP_VERIFY:
		snprintf(buf, size, "verifying every module the device reports%s",
			 s->transport == PLAN_TRANSPORT_CTRL ? " (module info by control request)"
							     : "");
		return;
	}
	buf[0] = '\0';
}

void plan_summary(const struct plan *plan, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
#define PUT(...)                                                                                   \
	do {                                                                                       \
		if (len < size)                                                                    \
			len += (size_t)snprintf(buf + len, size - len, __VA_ARGS__);               \
	} while (0)
	if (plan->n_writes == 0) {
		PUT("nothing to write");
	} else {
		static const char *const over[PLAN_TRANSPORT_COUNT] = {
		    [PLAN_TRANSPORT_SERIAL] = "serial",
		    [PLAN_TRANSPORT_DFU] = "DFU",
		    [PLAN_TRANSPORT_CTRL] = "control requests",
		};
		uint32_t used = 0;
		for (size_t i = 0; i < plan->n_steps; i++)
			if (plan->steps[i].kind == PLAN_STEP_WRITE)
				used |= T_BIT(plan->steps[i].transport);
		PUT("%zu write%s over ", plan->n_writes, plan->n_writes == 1 ? "" : "s");
		unsigned k = 0, n_used = (unsigned)__builtin_popcount(used);
		for (int t = 0; t < PLAN_TRANSPORT_COUNT; t++) {
			if (!(used & T_BIT(t)))
				continue;
			k++;
			PUT("%s%s", k == 1 ? "" : k == n_used ? " and " : ", ", over[t]);
		}
		PUT(" (");
		size_t w = 0;
		for (size_t i = 0; i < plan->n_steps; i++) {
			if (plan->steps[i].kind != PLAN_STEP_WRITE)
				continue;
			char words[96];
			step_module_words(&plan->steps[i], words, sizeof(words));
			PUT("%s%s", w++ ? ", " : "", words);
		}
		PUT("), %llu KiB, about %u s", (unsigned long long)(plan->bytes + 1023) / 1024,
		    (plan->estimate_ms + 999) / 1000);
	}
	if (plan->n_skipped)
		PUT("; %zu file%s installed already", plan->n_skipped,
		    plan->n_skipped == 1 ? "" : "s");
#undef PUT
	if (len >= size && size > 0)
		buf[size - 1] = '\0';
}

json_t *plan_to_json(const struct plan *plan)
{
	json_t *o = json_object();
	json_t *steps = json_array();
	for (size_t i = 0; i < plan->n_steps; i++) {
		const struct plan_step *s = &plan->steps[i];
		char text[160];
		plan_step_describe(s, text, sizeof(text));
		json_t *j = json_pack("{s:i,s:s,s:s,s:f}", "step", (int)i + 1, "kind",
				      plan_step_kind_name(s->kind), "description", text,
				      "estimate_s", s->estimate_ms / 1000.0);
		if (s->kind == PLAN_STEP_SWITCH) {
			json_object_set_new(j, "from", json_string(device_mode_name(s->from)));
			json_object_set_new(j, "to", json_string(device_mode_name(s->to)));
			json_object_set_new(j, "how", json_string(s->how));
		}
		if (s->kind == PLAN_STEP_WRITE || s->kind == PLAN_STEP_SWITCH ||
		    s->kind == PLAN_STEP_VERIFY)
			json_object_set_new(j, "transport",
					    json_string(plan_transport_name(s->transport)));
		if (s->kind == PLAN_STEP_REBOOT && s->how)
			json_object_set_new(j, "how", json_string(s->how));
		if (s->kind == PLAN_STEP_WRITE) {
			json_object_set_new(j, "file", json_string(s->name ? s->name : ""));
			json_object_set_new(j, "bytes", json_integer((json_int_t)s->bytes));
			if (s->img && s->img->n_modules > 0) {
				const struct image_module *m = &s->img->modules[0];
				json_object_set_new(j, "module_function",
						    json_string(module_function_name(m->function)));
				json_object_set_new(j, "module_index", json_integer(m->index));
				json_object_set_new(j, "module_version", json_integer(m->version));
			}
		}
		json_array_append_new(steps, j);
	}
	json_object_set_new(o, "steps", steps);
	json_t *skipped = json_array();
	for (size_t i = 0; i < plan->n_skipped; i++)
		json_array_append_new(skipped,
				      json_pack("{s:i,s:s}", "file_index", (int)plan->skipped[i],
						"reason", plan->skip_reason[i]));
	json_object_set_new(o, "skipped", skipped);
	json_t *w = json_array();
	for (size_t i = 0; i < plan->n_warnings; i++)
		json_array_append_new(w, json_string(plan->warnings[i]));
	json_object_set_new(o, "warnings", w);
	json_t *ov = json_array();
	for (size_t i = 0; i < plan->n_overrides; i++)
		json_array_append_new(ov, json_string(plan->overrides[i]));
	json_object_set_new(o, "overrides", ov);
	json_t *un = json_array();
	for (size_t i = 0; i < plan->n_unverified; i++)
		json_array_append_new(un, json_string(plan->unverified[i]));
	json_object_set_new(o, "unverified", un);
	json_object_set_new(o, "writes", json_integer((json_int_t)plan->n_writes));
	json_object_set_new(o, "bytes", json_integer((json_int_t)plan->bytes));
	json_object_set_new(o, "estimate_s", json_real(plan->estimate_ms / 1000.0));
	return o;
}

size_t plan_invalid_modules(const struct device_facts *now, json_t *invalid)
{
	size_t n = 0;
	for (unsigned i = 0; i < now->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
		const struct installed_module *m = &now->modules[i];
		if (m->store != MODULE_STORE_MAIN || installed_module_valid(m))
			continue;
		const char *names[MODULE_CHECKS_MAX];
		unsigned k = module_checks_failed(m->checked, m->passed, names);
		json_t *checks = json_array();
		for (unsigned c = 0; c < k; c++)
			json_array_append_new(checks, json_string(names[c]));
		char words[48];
		module_words(m->function, m->index, words, sizeof(words));
		json_array_append_new(
		    invalid, json_pack("{s:s,s:s,s:i,s:i,s:o}", "module", words, "function",
				       module_function_name(m->function), "index", m->index,
				       "version", m->version, "failed_checks", checks));
		n++;
	}
	return n;
}
