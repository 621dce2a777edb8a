#include "validate.h"

#include "bytes.h"

#include <jansson.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

size_t validate_prefix_offset(const struct platform *p, const uint8_t *img, size_t len)
{
	static const uint8_t realtek_sig[8] = {0x99, 0x99, 0x96, 0x96, 0x3f, 0xcc, 0x66, 0xfc};
	if (len < 8)
		return 0;
	switch (p->mcu) {
	case MCU_STM32F205: /* FLASH_ModuleInfo (develop-2.x): stack-pointer-like first word */
		return (bytes_le32(img) & 0x2FF10000u) == 0x20000000u ? 0x184 : 0;
	case MCU_NRF52840:
		return (bytes_le32(img) & 0x2FFC0000u) == 0x20000000u ? 0x200 : 0;
	case MCU_RTL8721D:
		return memcmp(img, realtek_sig, 8) == 0 ? 0x20 : 0;
	case MCU_STM32F103:
		return 0x10c;
	}
	return 0;
}

/* Reads module_info_t at img+off into m; false if it cannot be a module. */
static bool read_prefix(const uint8_t *pre, struct vmodule *m)
{
	m->start = bytes_le32(pre);
	m->end = bytes_le32(pre + 4);
	m->flags = pre[9];
	m->version = bytes_le16(pre + 10);
	m->platform_id = bytes_le16(pre + 12);
	m->function = pre[14];
	m->index = pre[15];
	for (int i = 0; i < 2; i++) {
		m->dep_function[i] = pre[16 + 4 * i];
		m->dep_index[i] = pre[17 + 4 * i];
		m->dep_version[i] = bytes_le16(pre + 18 + 4 * i);
	}
	return m->function >= MODULE_FUNCTION_RESOURCE && m->function <= MODULE_FUNCTION_ASSET &&
	       m->end > m->start && m->end - m->start <= (16u << 20);
}

static const uint8_t *peek(struct flash *f, uint32_t addr, size_t len)
{
	return flash_peek(f, 0, addr, len);
}

/* CRC-32 over [start, end) read at the module's declared address (FLASH_VerifyCRC32). */
static bool integrity_in_flash(struct flash *f, const struct vmodule *m)
{
	const uint8_t *b = peek(f, m->start, (size_t)(m->end - m->start) + 4);
	if (!b)
		return false;
	uint32_t crc = (uint32_t)crc32(0L, b, m->end - m->start);
	return crc == be32(b + (m->end - m->start));
}

static void read_sha(struct flash *f, struct vmodule *m)
{
	const uint8_t *b = peek(f, m->end - 34, 32); /* [size-38, size-6) of the file */
	if (b)
		memcpy(m->sha256, b, 32);
}

/* P2 user part: the slot's end is fixed; its start comes from the suffix's DYNAMIC_LOCATION. */
static bool locate_rtl_user(struct flash *f, const struct slot *s, uint32_t *ret_start)
{
	const uint8_t *sz = peek(f, s->end - 6, 2);
	if (!sz)
		return false;
	uint16_t size = bytes_le16(sz);
	if (size < 36 || size > 1024)
		return false;
	uint32_t suffix = s->end - 4 - size;
	const uint8_t *ext = peek(f, suffix, 16);
	if (!ext || bytes_le16(ext) != 0x0002 || bytes_le16(ext + 2) != 16)
		return false;
	*ret_start = bytes_le32(ext + 4);
	return *ret_start >= s->start && *ret_start < s->end;
}

static bool slot_holds(const struct slot *s, const struct vmodule *m)
{
	return s->function == m->function && s->index == m->index && m->start >= s->start &&
	       m->end <= s->end;
}

static void add_module(struct flash *f, const struct platform *p, const struct slot *s, uint32_t at,
		       struct vscan *out)
{
	if (out->n >= VALIDATE_MAX_MODULES)
		return;
	const uint8_t *head = peek(f, at, 0x220);
	if (!head)
		return;
	size_t off = validate_prefix_offset(p, head, 0x220);
	struct vmodule *m = &out->m[out->n];
	memset(m, 0, sizeof(*m));
	if (!read_prefix(head + off, m))
		return; /* erased or garbage: an empty slot */
	m->store = s->store;
	m->address = at;
	m->slot_size = s->end - s->start;
	m->checked = VALID_CHECKED;
	/* RANGE: the prefix names this slot and the module lies inside it, where it sits. */
	if (slot_holds(s, m) && m->start == at)
		m->passed |= VALID_RANGE;
	if (m->platform_id == p->id)
		m->passed |= VALID_PLATFORM;
	if (integrity_in_flash(f, m))
		m->passed |= VALID_INTEGRITY;
	read_sha(f, m);
	out->n++;
}

static const struct vmodule *find_installed(const struct vscan *s, uint8_t function, uint8_t index)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->m[i].function == function && s->m[i].index == index &&
		    s->m[i].store == MODULE_STORE_MAIN)
			return &s->m[i];
	return NULL;
}

static bool dep_met(const struct vscan *s, uint8_t function, uint8_t index, uint16_t version)
{
	if (function == MODULE_FUNCTION_NONE)
		return true;
	const struct vmodule *d = find_installed(s, function, index);
	return d && d->version >= version;
}

/* Boot-time dependency rule: both dependencies must be met (HAL_Verify_User_Dependencies). */
static void check_dependencies(struct vscan *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		struct vmodule *m = &s->m[i];
		if (m->synthetic) {
			m->passed |= VALID_DEPENDENCIES;
			continue;
		}
		if (dep_met(s, m->dep_function[0], m->dep_index[0], m->dep_version[0]) &&
		    dep_met(s, m->dep_function[1], m->dep_index[1], m->dep_version[1]))
			m->passed |= VALID_DEPENDENCIES;
	}
}

/* docs/device/console.md#module-info-reply: which slots `s` would print. */
static void mark_reported(struct vscan *s, const struct platform *p)
{
	const struct vmodule *user = NULL;
	for (unsigned i = 0; i < s->n; i++) {
		struct vmodule *m = &s->m[i];
		bool intact = m->passed & VALID_INTEGRITY;
		m->reported = true;
		if (m->store == MODULE_STORE_FACTORY && !intact)
			m->reported = false;
		if (m->function == MODULE_FUNCTION_USER && p->mcu == MCU_NRF52840) {
			/* A failing Gen 3 user slot is zeroed; only one user part is shown. */
			if (!intact || user)
				m->reported = false;
			else
				user = m;
		}
	}
}

void validate_scan(struct flash *f, const struct platform *p, uint16_t layout_version,
		   uint16_t radio_version, struct vscan *out)
{
	memset(out, 0, sizeof(*out));
	const struct slot *slots;
	size_t n = platform_slots(p, layout_version, &slots);
	for (size_t i = 0; i < n; i++) {
		const struct slot *s = &slots[i];
		switch (s->function) {
		case MODULE_FUNCTION_MONO: /* overlaps the system slots */
		case MODULE_FUNCTION_NCP:  /* another MCU's flash */
		case MODULE_FUNCTION_RADIO_STACK:
			continue;
		case MODULE_FUNCTION_USER:
			if (p->mcu == MCU_RTL8721D) {
				uint32_t start;
				if (locate_rtl_user(f, s, &start))
					add_module(f, p, s, start, out);
				continue;
			}
			break;
		default:
			break;
		}
		add_module(f, p, s, s->start, out);
	}
	if (p->mcu == MCU_NRF52840 && out->n < VALIDATE_MAX_MODULES) {
		/* The SoftDevice carries no prefix in flash; its entry is synthesised
		 * (docs/device/console.md#module-info-reply). */
		const struct slot *rs =
		    platform_find_slot(p, layout_version, MODULE_FUNCTION_RADIO_STACK, 0, 0);
		struct vmodule *m = &out->m[out->n++];
		memset(m, 0, sizeof(*m));
		m->function = MODULE_FUNCTION_RADIO_STACK;
		m->address = rs ? rs->start : 0x1000;
		m->slot_size = rs ? rs->end - rs->start : 0;
		m->start = m->address;
		m->end = m->address + m->slot_size;
		m->version = radio_version;
		m->platform_id = p->id;
		m->checked = m->passed = VALID_CHECKED;
		m->synthetic = true;
	}
	check_dependencies(out);
	mark_reported(out, p);
}

uint16_t validate_system_version(const struct vscan *s)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->m[i].function == MODULE_FUNCTION_SYSTEM && s->m[i].index <= 1 &&
		    (s->m[i].passed & VALID_INTEGRITY))
			return s->m[i].version;
	return 0;
}

enum sim_mode validate_boot_mode(const struct vscan *s, const struct platform *p)
{
	/* Bootloader (is_application_valid): every system slot must hold an intact module. */
	const struct slot *slots;
	size_t n = platform_slots(p, validate_system_version(s), &slots);
	bool deps_ok = true;
	for (size_t i = 0; i < n; i++) {
		if (slots[i].function != MODULE_FUNCTION_SYSTEM)
			continue;
		const struct vmodule *m = find_installed(s, MODULE_FUNCTION_SYSTEM, slots[i].index);
		unsigned need = VALID_INTEGRITY | VALID_RANGE | VALID_PLATFORM;
		if (!m || (m->passed & need) != need || m->address != slots[i].start)
			return SIM_MODE_DFU;
		deps_ok &= (m->passed & VALID_DEPENDENCIES) != 0;
	}
	/* Device OS: failing system dependencies or application checks -> safe mode. */
	if (!deps_ok)
		return SIM_MODE_SAFE;
	for (unsigned i = 0; i < s->n; i++) {
		const struct vmodule *m = &s->m[i];
		if (m->function == MODULE_FUNCTION_USER && m->store == MODULE_STORE_MAIN &&
		    (m->reported || p->mcu != MCU_NRF52840) && m->passed != m->checked)
			return SIM_MODE_SAFE;
		if (m->function == MODULE_FUNCTION_USER && p->mcu == MCU_NRF52840 && !m->reported &&
		    !(m->passed & VALID_INTEGRITY)) {
			/* A corrupt Gen 3 application is zeroed and not run: safe mode. */
			return SIM_MODE_SAFE;
		}
	}
	return SIM_MODE_NORMAL;
}

int validate_ota(const struct vscan *installed, const struct platform *p, uint16_t layout_version,
		 const uint8_t *img, size_t len, unsigned *ret_mask, struct vmodule *ret_module)
{
	struct vmodule m;
	memset(&m, 0, sizeof(m));
	*ret_mask = 0;
	size_t off = validate_prefix_offset(p, img, len);
	if (len < off + 24 || !read_prefix(img + off, &m)) {
		*ret_mask = VALID_CHECKED;
		return OTA_MODULE_NOT_FOUND;
	}
	if (p->mcu != MCU_STM32F205 && (m.flags & 0x03) && off != 0)
		return OTA_INVALID_FORMAT;
	m.checked = VALID_CHECKED;
	const struct slot *s =
	    platform_find_slot(p, layout_version, m.function, m.index, MODULE_STORE_MAIN);
	bool found = s && m.end >= s->start && m.end <= s->end;
	if (found && m.start >= s->start)
		m.passed |= VALID_RANGE;
	if (m.platform_id == p->id)
		m.passed |= VALID_PLATFORM;
	size_t body = m.end - m.start;
	if (body + 4 <= len && (uint32_t)crc32(0L, img, (uInt)body) == be32(img + body))
		m.passed |= VALID_INTEGRITY;
	/* Update-time rules: user parts skip dependencies; a bootloader in slot 2 is ignored. */
	bool deps = m.function == MODULE_FUNCTION_USER ||
		    (dep_met(installed, m.dep_function[0], m.dep_index[0], m.dep_version[0]) &&
		     (m.dep_function[1] == MODULE_FUNCTION_BOOTLOADER ||
		      dep_met(installed, m.dep_function[1], m.dep_index[1], m.dep_version[1])));
	if (deps)
		m.passed |= VALID_DEPENDENCIES;
	if (s)
		m.address = s->start, m.slot_size = s->end - s->start;
	if (ret_module)
		*ret_module = m;
	*ret_mask = m.checked ^ m.passed;
	if (!found)
		return OTA_MODULE_NOT_FOUND;
	/* validityResultToSystemError(): integrity, dependencies, range, platform. */
	if (!(m.passed & VALID_INTEGRITY))
		return OTA_INTEGRITY_CHECK_FAILED;
	if (!(m.passed & VALID_DEPENDENCIES))
		return OTA_DEPENDENCY_CHECK_FAILED;
	if (!(m.passed & VALID_RANGE))
		return OTA_INVALID_ADDRESS;
	if (!(m.passed & VALID_PLATFORM))
		return OTA_INVALID_PLATFORM;
	return 0;
}

void validate_failed_names(unsigned checked, unsigned passed, json_t *array)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{VALID_INTEGRITY, "integrity"},
		     {VALID_RANGE, "range"},
		     {VALID_PLATFORM, "platform"},
		     {VALID_DEPENDENCIES, "dependencies"}};
	unsigned failed = checked & ~passed;
	for (unsigned i = 0; i < G_N_ELEMENTS(names); i++)
		if (failed & names[i].bit)
			json_array_append_new(array, json_string(names[i].name));
}
