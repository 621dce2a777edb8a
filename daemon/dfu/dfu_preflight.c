#include "dfu_preflight.h"

#include "bytes.h"
#include "capability.h"
#include "osver.h"
#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FN_BIT(f) (1u << (f))
/* first page of the 128 KiB user slot (docs/device/memory-maps.md#gen-3) */
#define GEN3_COMPAT_USER_PAGE 0xD4000u
/* DFU_MAL_IS_PROTECTED_AREA (docs/device/dfuse.md#memory-map-strings) */
#define GEN2_PROTECTED_END 0x08020000u
#define MODULE_MAX_SIZE	   (16u << 20)
/* particle-cli: no downgrade below 6.1.1
 * (docs/device/particle-cli.md#flash-usb-with-particle-usb) */
#define SERVICE_MODE_MIN_SYSTEM 6101
/* The SoftDevice carries no module prefix in flash (docs/device/module-format.md#flags
 * DROP_MODULE_INFO); Device OS reports
 * its FWID as the radio stack version (docs/device/console.md#module-info-reply).  Nordic's SD info
 * struct sits 0x2000 into the
 * SoftDevice (base 0x1000): magic at +4, FWID at +0xC (nrf_sdm.h). */
#define GEN3_SOFTDEVICE_START 0x1000u
#define GEN3_SD_INFO	      0x3000u
#define GEN3_SD_MAGIC	      0x51B1E5DBu
/* The P2 family's user part ends at 0x08600000 and grows downward
 * (docs/device/memory-maps.md#p2-family): its start is
 * in the DYNAMIC_LOCATION extension of its suffix
 * (docs/device/module-format.md#suffix-and-checksums, docs/device/module-format.md#extensions). */
#define RTL_USER_END 0x08600000u
/* reserved u16, SHA-256, size u16 (docs/device/module-format.md#suffix-and-checksums) */
#define SUFFIX_TAIL		 36
#define SUFFIX_NONE		 0xFFFFu
#define EXT_DYNAMIC_LOCATION	 0x0002u
#define EXT_END			 0x0000u
#define EXT_DYNAMIC_LOCATION_LEN 16

static void add_probe_kind(struct dfu_readback *rb, uint32_t address, enum dfu_probe_kind kind)
{
	for (unsigned i = 0; i < rb->n_probes; i++)
		if (rb->probes[i].address == address && rb->probes[i].kind == kind)
			return;
	if (rb->n_probes >= DFU_PROBE_MAX)
		return;
	struct dfu_probe *pr = &rb->probes[rb->n_probes++];
	memset(pr, 0, sizeof(*pr));
	pr->address = address;
	pr->kind = kind;
}

static void add_probe(struct dfu_readback *rb, uint32_t address)
{
	add_probe_kind(rb, address, DFU_PROBE_PREFIX);
}

uint8_t *dfu_probe_data(struct dfu_probe *p)
{
	return p->kind == DFU_PROBE_WHOLE ? p->whole : p->buf;
}

size_t dfu_probe_size(const struct dfu_probe *p)
{
	switch (p->kind) {
	case DFU_PROBE_WHOLE:
		return p->want;
	case DFU_PROBE_SUFFIX:
		return DFU_SUFFIX_PROBE_LEN;
	default:
		return DFU_PROBE_LEN;
	}
}

/* Where the suffix probe of a module that ends (CRC included) at flash_end starts. */
static uint32_t suffix_probe_address(uint32_t flash_end)
{
	return flash_end - DFU_SUFFIX_PROBE_LEN;
}

/* A probe of any kind that read (or is to read) [at, at + DFU_SUFFIX_PROBE_LEN): the
 * P2 user part's tail read holds its suffix already. */
static const struct dfu_probe *probe_covering(const struct dfu_readback *rb, uint32_t at)
{
	for (unsigned i = 0; i < rb->n_probes; i++) {
		const struct dfu_probe *pr = &rb->probes[i];
		if (pr->kind != DFU_PROBE_WHOLE && at >= pr->address &&
		    (uint64_t)at + DFU_SUFFIX_PROBE_LEN <=
			(uint64_t)pr->address + dfu_probe_size(pr))
			return pr;
	}
	return NULL;
}

void dfu_readback_clear(struct dfu_readback *rb)
{
	for (unsigned i = 0; i < rb->n_probes; i++) {
		free(rb->probes[i].whole);
		rb->probes[i].whole = NULL;
	}
	rb->n_probes = 0;
}

/* A whole-module read of size bytes at address (skipped when out of room or memory). */
static void add_whole(struct dfu_readback *rb, uint32_t address, size_t size)
{
	for (unsigned i = 0; i < rb->n_probes; i++)
		if (rb->probes[i].address == address && rb->probes[i].kind == DFU_PROBE_WHOLE)
			return;
	uint8_t *buf = rb->n_probes < DFU_PROBE_MAX ? malloc(size) : NULL;
	if (!buf)
		return;
	add_probe_kind(rb, address, DFU_PROBE_WHOLE);
	rb->probes[rb->n_probes - 1].whole = buf;
	rb->probes[rb->n_probes - 1].want = size;
}

void dfu_readback_want_suffix(struct dfu_readback *rb, uint8_t function, uint8_t index,
			      bool want_none)
{
	rb->suffix_filter = true;
	if (!want_none && function < 16 && index < 32)
		rb->suffix_wanted[function] |= 1u << index;
}

static bool suffix_wanted(const struct dfu_readback *rb, uint8_t function, uint8_t index)
{
	return !rb->suffix_filter ||
	       (function < 16 && index < 32 && (rb->suffix_wanted[function] & (1u << index)));
}

/* Whether probe a is read before probe b: those a whole number of DfuSe blocks past base
 * first, each group upward. */
static bool probe_before(uint32_t base, const struct dfu_probe *a, const struct dfu_probe *b)
{
	bool a_off = (a->address - base) % DFUSE_BLOCK != 0,
	     b_off = (b->address - base) % DFUSE_BLOCK != 0;
	return a_off != b_off ? !a_off : a->address < b->address;
}

/* Probes [from, n_probes) in the order that lets reads share one SET_ADDRESS: the device
 * reads a block number's 4 KiB block past the pointer of a read left open
 * (dfuse_set_keep_upload()), so the reads whole blocks past the first one (the lowest:
 * every slot start) go first, upward. */
static void sort_probes(struct dfu_readback *rb, unsigned from)
{
	uint32_t base = from ? rb->probes[0].address : 0;
	for (unsigned i = from + 1; i < rb->n_probes; i++) {
		struct dfu_probe pr = rb->probes[i];
		unsigned j = i;
		for (; j > from && probe_before(base, &pr, &rb->probes[j - 1]); j--)
			rb->probes[j] = rb->probes[j - 1];
		rb->probes[j] = pr;
	}
}

void dfu_readback_plan(const struct platform *p, struct dfu_readback *rb)
{
	/* Every layout era's slot starts (Gen 3 has three: docs/device/memory-maps.md#gen-3). */
	static const uint16_t eras[] = {3000, 6100, 6200};
	memset(rb, 0, sizeof(*rb));
	rb->platform = p;
	if (!p)
		return;
	for (size_t e = 0; e < sizeof(eras) / sizeof(eras[0]); e++) {
		const struct slot *s;
		size_t n = platform_slots(p, eras[e], &s);
		for (size_t i = 0; i < n; i++) {
			if (s[i].store != MODULE_STORE_MAIN || s[i].external)
				continue;
			/* Radio stacks are written without prefix, NCP lives on the
			 * coprocessor, the P2 user part grows downward (no fixed start). */
			switch (s[i].function) {
			case MODULE_FUNCTION_SYSTEM:
			case MODULE_FUNCTION_BOOTLOADER:
				add_probe(rb, s[i].start);
				break;
			case MODULE_FUNCTION_USER:
				if (p->mcu != MCU_RTL8721D)
					add_probe(rb, s[i].start);
				else if (s[i].end == RTL_USER_END)
					add_probe_kind(rb, RTL_USER_END - DFU_PROBE_LEN,
						       DFU_PROBE_TAIL);
				break;
			case MODULE_FUNCTION_MONO:
				if (p->mcu == MCU_STM32F103)
					add_probe(rb, s[i].start);
				break;
			default:
				break;
			}
		}
	}
	if (p->mcu == MCU_NRF52840)
		add_probe(rb, GEN3_SD_INFO);
	sort_probes(rb, 0);
}

/* The device's own prefix-offset rules (docs/device/memory-maps.md#gen-3,
 * docs/device/memory-maps.md#p2-family, docs/device/module-format.md#where-the-prefix-is). */
static size_t prefix_offset(const struct platform *p, const uint8_t *b, size_t len)
{
	if (len < 8)
		return 0;
	uint32_t w = bytes_le32(b);
	switch (p->mcu) {
	case MCU_STM32F205:
		return (w & 0x2FF10000u) == 0x20000000u ? 0x184 : 0;
	case MCU_STM32F103:
		return (w & 0x2FF00000u) == 0x20000000u ? 0x10C : 0;
	case MCU_NRF52840:
		return (w & 0x2FFC0000u) == 0x20000000u ? 0x200 : 0;
	case MCU_RTL8721D:
		return memcmp(b, "\x99\x99\x96\x96\x3f\xcc\x66\xfc", 8) == 0 ? 0x20 : 0;
	}
	return 0;
}

/* The P2 family's user slot is filled from its end: the start varies with the size. */
static bool grows_downward(const struct platform *p, const struct slot *s)
{
	return p->mcu == MCU_RTL8721D && s->function == MODULE_FUNCTION_USER &&
	       s->end == RTL_USER_END;
}

/* A slot of any layout era that holds function/index at start (module end `end`, the
 * CRC's address): it starts there, or it grows downward and the module fills its end. */
static bool slot_matches(const struct platform *p, uint32_t start, uint32_t end, uint8_t function,
			 uint8_t index)
{
	static const uint16_t eras[] = {3000, 6100, 6200};
	for (size_t e = 0; e < sizeof(eras) / sizeof(eras[0]); e++) {
		const struct slot *s;
		size_t n = platform_slots(p, eras[e], &s);
		for (size_t i = 0; i < n; i++) {
			if (s[i].function != function || s[i].index != index)
				continue;
			if (s[i].start == start)
				return true;
			if (grows_downward(p, &s[i]) && start >= s[i].start &&
			    (uint64_t)end + 4 == s[i].end)
				return true;
		}
	}
	return false;
}

/*
 * The start address a module's suffix names in its DYNAMIC_LOCATION extension
 * (docs/device/module-format.md#suffix-and-checksums:
 * [extensions][reserved, SHA-256, size][CRC] ending at the probe's end;
 * docs/device/module-format.md#extensions).  The
 * extensions are walked from the suffix's first byte to the fixed tail.
 */
static bool tail_module_start(const struct dfu_probe *pr, uint32_t *start)
{
	if (!pr->read || pr->len < DFU_PROBE_LEN)
		return false;
	const uint8_t *end = pr->buf + DFU_PROBE_LEN - 4; /* the CRC */
	unsigned size = bytes_le16(end - 2);
	if (size == SUFFIX_NONE || size < SUFFIX_TAIL || size > DFU_PROBE_LEN - 4)
		return false;
	const uint8_t *ext = end - size, *ext_end = end - SUFFIX_TAIL;
	while (ext + 4 <= ext_end) {
		unsigned type = bytes_le16(ext), len = bytes_le16(ext + 2);
		if (type == EXT_END || len < 4 || len > (size_t)(ext_end - ext))
			return false;
		if (type == EXT_DYNAMIC_LOCATION && len >= EXT_DYNAMIC_LOCATION_LEN) {
			*start = bytes_le32(ext + 4);
			return true;
		}
		ext += len;
	}
	return false;
}

static bool parse_probe(const struct platform *p, const struct dfu_probe *pr,
			struct installed_module *m)
{
	if (!pr->read || pr->kind != DFU_PROBE_PREFIX)
		return false;
	size_t off = prefix_offset(p, pr->buf, pr->len);
	if (off + IMAGE_PREFIX_SIZE > pr->len)
		return false;
	const uint8_t *b = pr->buf + off;
	uint32_t start = bytes_le32(b), end = bytes_le32(b + 4);
	uint8_t function = b[14], index = b[15];
	if (start != pr->address || end <= start || end - start > MODULE_MAX_SIZE)
		return false;
	if (bytes_le16(b + 12) != p->id || !slot_matches(p, start, end, function, index))
		return false;
	memset(m, 0, sizeof(*m));
	/* PLATFORM (docs/device/validation.md): the prefix's platform id is the device's, or it is
	 * not listed. */
	m->checked = m->passed = MODULE_CHECK_PLATFORM;
	m->function = function;
	m->index = index;
	m->store = MODULE_STORE_MAIN;
	m->version = bytes_le16(b + 10);
	m->address = start;
	m->slot_size = end + 4 - start; /* DFU read-back: bytes the module occupies */
	for (int d = 0; d < 2; d++) {
		m->deps[d].function = b[16 + 4 * d];
		m->deps[d].index = b[17 + 4 * d];
		m->deps[d].version = bytes_le16(b + 18 + 4 * d);
	}
	return true;
}

/* The P2 user part's start, from a tail read: plausible when inside the slot with room
 * for a prefix before the suffix. */
static bool follow_tail(const struct platform *p, const struct dfu_probe *pr, uint32_t *start)
{
	if (pr->kind != DFU_PROBE_TAIL || !tail_module_start(pr, start))
		return false;
	const struct slot *s =
	    platform_find_slot(p, 6200, MODULE_FUNCTION_USER, 1, MODULE_STORE_MAIN);
	uint32_t tail_end = pr->address + DFU_PROBE_LEN;
	return s && *start >= s->start && *start + IMAGE_PREFIX_SIZE + SUFFIX_TAIL < tail_end;
}

bool dfu_readback_follow(struct dfu_readback *rb)
{
	const struct platform *p = rb->platform;
	unsigned before = rb->n_probes;
	for (unsigned i = 0; p && i < before; i++) {
		const struct dfu_probe *pr = &rb->probes[i];
		struct installed_module m;
		uint32_t start;
		if (follow_tail(p, pr, &start))
			add_probe(rb, start);
		else if (parse_probe(p, pr, &m) && m.function == MODULE_FUNCTION_USER &&
			 m.slot_size <= DFU_WHOLE_MAX)
			add_whole(rb, m.address, m.slot_size);
		else if (parse_probe(p, pr, &m) && m.slot_size >= IMAGE_MIN_MODULE_SIZE &&
			 suffix_wanted(rb, m.function, m.index) &&
			 !probe_covering(rb, suffix_probe_address(m.address + m.slot_size)))
			/* the rest: its SHA-256 and CRC, a few dozen bytes (issue 11) */
			add_probe_kind(rb, suffix_probe_address(m.address + m.slot_size),
				       DFU_PROBE_SUFFIX);
	}
	sort_probes(rb, before);
	return rb->n_probes > before;
}

/* The last DFU_SUFFIX_PROBE_LEN bytes of a module
 * (docs/device/module-format.md#suffix-and-checksums: reserved u16, SHA-256, suffix size u16,
 * CRC-32 big-endian): the stored SHA-256 and CRC, as the image parser reads them from a file.  An
 * erased or unfinished end reads as a hash no file has, so it never matches. */
static void identity_facts(const uint8_t *tail, struct installed_module *m)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *sha = tail + 2;
	for (int k = 0; k < 32; k++) {
		m->sha256[2 * k] = digits[sha[k] >> 4];
		m->sha256[2 * k + 1] = digits[sha[k] & 15];
	}
	m->sha256[64] = '\0';
	const uint8_t *crc = tail + DFU_SUFFIX_PROBE_LEN - 4;
	m->crc = (uint32_t)crc[0] << 24 | (uint32_t)crc[1] << 16 | (uint32_t)crc[2] << 8 | crc[3];
	m->bytes = INSTALLED_BYTES_READ;
}

/* INTEGRITY (docs/device/module-format.md#suffix-and-checksums, docs/device/validation.md): the
 * CRC-32 over the module's bytes before the CRC, stored
 * big-endian in its last 4 bytes, when the whole module was read. */
static void integrity_facts(const struct dfu_readback *rb, struct installed_module *m)
{
	for (unsigned i = 0; i < rb->n_probes; i++) {
		const struct dfu_probe *pr = &rb->probes[i];
		if (pr->kind != DFU_PROBE_WHOLE || pr->address != m->address)
			continue;
		if (!pr->read || pr->len != m->slot_size || pr->len < IMAGE_PREFIX_SIZE + 4) {
			m->bytes = INSTALLED_BYTES_UNREADABLE;
			continue;
		}
		const uint8_t *crc = pr->whole + pr->len - 4;
		uint32_t stored = (uint32_t)crc[0] << 24 | crc[1] << 16 | crc[2] << 8 | crc[3];
		m->checked |= MODULE_CHECK_INTEGRITY;
		if (image_crc32(pr->whole, pr->len - 4) == stored) {
			m->passed |= MODULE_CHECK_INTEGRITY;
			/* what the planner compares to skip a rewrite */
			if (pr->len >= IMAGE_PREFIX_SIZE + DFU_SUFFIX_PROBE_LEN)
				identity_facts(pr->whole + pr->len - DFU_SUFFIX_PROBE_LEN, m);
		}
		return;
	}
}

/* The suffix tail and CRC of a module read at its end (DFU_PROBE_SUFFIX): its
 * identity, or the fact that the bytes could not be read (then the planner
 * writes the module and says why, never skips it by its version alone). */
static void suffix_facts(const struct dfu_readback *rb, struct installed_module *m)
{
	if (m->bytes == INSTALLED_BYTES_READ || m->slot_size < IMAGE_MIN_MODULE_SIZE)
		return;
	uint32_t at = suffix_probe_address(m->address + m->slot_size);
	const struct dfu_probe *pr = probe_covering(rb, at);
	if (!pr)
		return;
	if (pr->read && pr->len == dfu_probe_size(pr))
		identity_facts(pr->buf + (at - pr->address), m);
	else
		m->bytes = INSTALLED_BYTES_UNREADABLE;
}

/* The radio stack's version: the SoftDevice FWID when its info struct is readable, else the
 * radio-stack dependency of the installed system part (that system part ran with it). */
static void radio_stack_facts(const struct dfu_readback *rb, struct device_facts *facts)
{
	uint16_t version = 0;
	for (unsigned i = 0; i < rb->n_probes; i++) {
		const struct dfu_probe *pr = &rb->probes[i];
		if (pr->address == GEN3_SD_INFO && pr->read && pr->len >= 0x10 &&
		    bytes_le32(pr->buf + 4) == GEN3_SD_MAGIC)
			version = bytes_le16(pr->buf + 0xc);
	}
	for (unsigned i = 0; i < facts->n_modules && !version; i++) {
		const struct installed_module *m = &facts->modules[i];
		if (m->function != MODULE_FUNCTION_SYSTEM || m->index != 1)
			continue;
		for (int d = 0; d < 2; d++)
			if (m->deps[d].function == MODULE_FUNCTION_RADIO_STACK)
				version = m->deps[d].version;
	}
	if (!version) {
		/* Neither the SoftDevice's info nor a system part names it: not read,
		 * which is not the same as absent (the planner treats it as unknown). */
		facts->unknown_functions |= 1u << MODULE_FUNCTION_RADIO_STACK;
		return;
	}
	if (facts->n_modules >= DEVICE_FACTS_MAX_MODULES)
		return;
	struct installed_module *m = &facts->modules[facts->n_modules++];
	memset(m, 0, sizeof(*m));
	m->function = MODULE_FUNCTION_RADIO_STACK;
	m->store = MODULE_STORE_MAIN;
	m->version = version;
	m->address = GEN3_SOFTDEVICE_START;
}

/* A slot whose read failed says nothing about what is there: its function is unknown
 * (device_facts.h), not absent. */
static void unread_facts(const struct dfu_readback *rb, struct device_facts *facts)
{
	static const uint16_t eras[] = {3000, 6100, 6200};
	for (unsigned i = 0; i < rb->n_probes; i++) {
		const struct dfu_probe *pr = &rb->probes[i];
		if (pr->read || pr->address == GEN3_SD_INFO)
			continue;
		if (pr->kind == DFU_PROBE_TAIL) {
			facts->unknown_functions |= 1u << MODULE_FUNCTION_USER;
			continue;
		}
		for (size_t e = 0; e < sizeof(eras) / sizeof(eras[0]); e++) {
			const struct slot *s;
			size_t n = platform_slots(rb->platform, eras[e], &s);
			for (size_t k = 0; k < n; k++)
				if (s[k].start == pr->address)
					facts->unknown_functions |= 1u << s[k].function;
		}
	}
}

bool dfu_readback_facts(const struct dfu_readback *rb, const struct dfuse_info *info,
			struct device_facts *facts)
{
	const struct platform *p = rb->platform;
	memset(facts, 0, sizeof(*facts));
	facts->platform = p;
	if (info) {
		snprintf(facts->device_id, sizeof(facts->device_id), "%.*s", DEVICE_ID_LEN,
			 info->serial);
		facts->protection = info->protected_device ? DEVICE_PROTECTION_PROTECTED
				    : info->service_mode   ? DEVICE_PROTECTION_SERVICE
				    : info->protection[0]  ? DEVICE_PROTECTION_OPEN
							   : DEVICE_PROTECTION_UNKNOWN;
	}
	if (!p)
		return false;
	bool system_found = false;
	for (unsigned i = 0; i < rb->n_probes && facts->n_modules < DEVICE_FACTS_MAX_MODULES; i++) {
		struct installed_module m;
		if (!parse_probe(p, &rb->probes[i], &m))
			continue;
		integrity_facts(rb, &m);
		suffix_facts(rb, &m);
		facts->modules[facts->n_modules++] = m;
		if (m.function == MODULE_FUNCTION_SYSTEM && m.index == 1) {
			facts->system_version = m.version;
			system_found = true;
		}
	}
	if (facts->system_version) {
		const char *rel = osver_release_for(MODULE_FUNCTION_SYSTEM, facts->system_version);
		if (rel)
			snprintf(facts->os_version, sizeof(facts->os_version), "%s", rel);
	}
	if (p->mcu == MCU_NRF52840)
		radio_stack_facts(rb, facts);
	unread_facts(rb, facts);
	/* The list is what is installed at the known slots; user parts up to DFU_WHOLE_MAX
	 * carry an integrity verdict, the rest only what their prefixes say. */
	facts->modules_known = true;
	/* Gen 3 has three layouts; the system part's start says which
	 * (docs/device/memory-maps.md#gen-3).  The others
	 * have one layout per platform. */
	if (p->mcu == MCU_NRF52840)
		return system_found;
	return true;
}

void dfu_preflight_rules(const struct device_facts *dev, struct preflight_rules *rules)
{
	(void)dev;
	memset(rules, 0, sizeof(*rules));
	rules->transport = PREFLIGHT_TRANSPORT_DFU;
	rules->transport_name = "dfu";
	rules->functions = FN_BIT(MODULE_FUNCTION_SYSTEM) | FN_BIT(MODULE_FUNCTION_USER) |
			   FN_BIT(MODULE_FUNCTION_MONO) | FN_BIT(MODULE_FUNCTION_RADIO_STACK);
	rules->compressed = true; /* inflated here */
	rules->combined = true;	  /* split here */
	rules->encrypted = false;
	rules->why_not = "the DFU memory maps do not expose bootloaders, network-coprocessor "
			 "firmware or encrypted modules";
}

static int not_flashable(const struct image_module *m, struct error *err)
{
	const char *why = m->flags & IMAGE_FLAG_ENCRYPTED	      ? "encrypted modules"
			  : m->function == MODULE_FUNCTION_BOOTLOADER ? "bootloaders"
			  : m->function == MODULE_FUNCTION_NCP ? "network-coprocessor firmware"
							       : "this module kind";
	error_set(err, ERR_NOT_FLASHABLE_HERE, "%s cannot be written over DFU", why);
	error_detail_str(err, "module_function", module_function_name(m->function));
	error_detail_str(err, "transport", "dfu");
	error_detail_str(err, "reason", why);
	error_hint(err, "flash it over serial in listening mode (Device OS 5.x and earlier: "
			"flashctl flash --serial), or with particle-cli in normal mode");
	return -1;
}

static int check_map(const struct dfuse_info *info, const struct platform *p, uint32_t addr,
		     size_t len, struct error *err)
{
	uint32_t bad = addr;
	const char *why = NULL;
	if (!info || !info->map_valid[0])
		why = "the device did not describe its internal flash";
	else if (!dfuse_map_range_has(&info->maps[0], addr, (uint32_t)len,
				      DFUSE_MEM_ERASABLE | DFUSE_MEM_WRITABLE, &bad))
		why = "not erasable and writable";
	else if (p->mcu == MCU_STM32F205 && addr < GEN2_PROTECTED_END)
		why = "below 0x08020000, which the Gen 2 bootloader refuses to touch";
	if (!why)
		return 0;
	error_set(err, ERR_OUTSIDE_MEMORY_MAP,
		  "0x%08x-0x%08zx does not fit the DFU memory map: address 0x%08x is %s", addr,
		  addr + len, bad, why);
	error_detail_int(err, "alt", 0);
	error_detail_int(err, "address", bad);
	error_detail_int(err, "start", addr);
	error_detail_int(err, "end", (long long)(addr + len));
	error_detail_str(err, "needed", "erasable,writable");
	if (info && info->map_valid[0]) {
		error_detail_str(err, "region", info->maps[0].name);
		const struct dfuse_segment *seg = dfuse_map_find(&info->maps[0], bad);
		error_detail_str(err, "attributes",
				 seg ? dfuse_mem_attr_describe(seg->attrs) : "absent");
	}
	return -1;
}

/* Whether a 256 KiB-slot application also needs the old 128 KiB slot's first page
 * erased (CAPABILITY_COMPAT_PAGE_ERASE), asked with the layout's system version and
 * with the version of the system part the application depends on. */
static bool compat_page_erase(const struct platform *p, uint16_t layout_version,
			      const struct image_module *m)
{
	return capability_has(CAPABILITY_COMPAT_PAGE_ERASE, p, layout_version, false) ||
	       (m->deps[0].function == MODULE_FUNCTION_SYSTEM &&
		capability_has(CAPABILITY_COMPAT_PAGE_ERASE, p, m->deps[0].version, false));
}

static int check_slot(const struct device_facts *dev, uint16_t layout_version,
		      const struct dfu_write *w, struct error *err)
{
	const struct slot *s = platform_find_slot(dev->platform, layout_version, w->function,
						  w->index, MODULE_STORE_MAIN);
	if (s && w->address >= s->start && (uint64_t)w->address + w->len <= s->end)
		return 0;
	error_set(err, ERR_WRONG_SLOT, "%s %u at 0x%08x-0x%08zx does not fit the %s of this device",
		  module_function_phrase(w->function), w->index, w->address, w->address + w->len,
		  platform_layout_name(dev->platform, layout_version));
	error_detail_str(err, "module_function", module_function_name(w->function));
	error_detail_int(err, "module_index", w->index);
	error_detail_int(err, "start", w->address);
	error_detail_int(err, "end", (long long)(w->address + w->len));
	if (s) {
		error_detail_int(err, "slot_start", s->start);
		error_detail_int(err, "slot_end", s->end);
	}
	if (dev->os_version[0])
		error_detail_str(err, "device_os", dev->os_version);
	return -1;
}

/* The write must not reach into another installed module (e.g. a 3.1+ app at 0xB4000 over
 * the end of a 1.5.x system part that runs to 0xCAF40). */
static int check_overlap(const struct device_facts *dev, const struct dfu_write *w,
			 struct error *err)
{
	for (unsigned i = 0; i < dev->n_modules; i++) {
		const struct installed_module *m = &dev->modules[i];
		if (!m->address || !m->slot_size)
			continue;
		if (m->function == w->function &&
		    (m->index == w->index || m->function == MODULE_FUNCTION_USER))
			continue; /* replaced (or, for the old user slot, invalidated) */
		uint64_t a0 = w->address, a1 = (uint64_t)w->address + w->len;
		uint64_t b0 = m->address, b1 = (uint64_t)m->address + m->slot_size;
		if (a0 < b1 && b0 < a1) {
			const char *rel = osver_release_for(m->function, m->version);
			error_set(err, ERR_WRONG_SLOT,
				  "%s %u at 0x%08x-0x%08llx would overwrite the installed %s %u "
				  "(0x%08x-0x%08llx%s%s)",
				  module_function_phrase(w->function), w->index, w->address,
				  (unsigned long long)a1, module_function_phrase(m->function),
				  m->index, m->address, (unsigned long long)b1,
				  rel ? ", Device OS " : "", rel ? rel : "");
			error_detail_str(err, "module_function", module_function_name(w->function));
			error_detail_int(err, "module_index", w->index);
			error_detail_int(err, "start", w->address);
			error_detail_int(err, "end", (long long)a1);
			error_detail_int(err, "slot_start", m->address);
			error_detail_int(err, "slot_end", (long long)b1);
			if (dev->os_version[0])
				error_detail_str(err, "device_os", dev->os_version);
			error_hint(err,
				   "update Device OS on the device first (flash the system part "
				   "this application was built for), then the application");
			return -1;
		}
	}
	return 0;
}

static int check_protection(const struct device_facts *dev, const struct image_module *m,
			    struct error *err)
{
	if (dev->protection == DEVICE_PROTECTION_PROTECTED) {
		error_set(
		    err, ERR_DEVICE_PROTECTED,
		    "the device has Device Protection enabled: it refuses DFU writes and reads");
		error_detail_str(err, "protection", "protected");
		error_detail_str(err, "reason", "protected devices accept no DFU writes or UPLOAD");
		return -1;
	}
	if (dev->protection == DEVICE_PROTECTION_SERVICE && m->function == MODULE_FUNCTION_SYSTEM &&
	    m->version < SERVICE_MODE_MIN_SYSTEM) {
		error_set(
		    err, ERR_DEVICE_PROTECTED,
		    "a protected device in service mode only accepts Device OS 6.1.1 or later "
		    "(system part version %u < %u)",
		    m->version, SERVICE_MODE_MIN_SYSTEM);
		error_detail_str(err, "protection", "service");
		error_detail_str(err, "reason", "downgrade below 6.1.1 on a protected device");
		error_detail_int(err, "module_version", m->version);
		error_detail_int(err, "minimum_version", SERVICE_MODE_MIN_SYSTEM);
		error_hint(err, "flash Device OS 6.1.1 or later");
		return -1;
	}
	return 0;
}

/* The bytes a module puts in flash: inflated when compressed, without prefix for
 * DROP_MODULE_INFO (docs/device/module-format.md#flags, particle-cli strips the 24 bytes). */
static void module_payload(const struct image *img, const struct image_module *m,
			   const struct image **ret_img, const struct image_module **ret_m,
			   const uint8_t **data, size_t *len)
{
	if ((m->flags & IMAGE_FLAG_COMPRESSED) && m->inner && m->inner->n_modules > 0) {
		img = m->inner;
		m = &m->inner->modules[0];
	}
	*ret_img = img;
	*ret_m = m;
	*data = image_module_bytes(img, m);
	*len = m->size;
	if (m->flags & IMAGE_FLAG_DROP_MODULE_INFO) {
		*data += IMAGE_PREFIX_SIZE;
		*len -= IMAGE_PREFIX_SIZE;
	}
}

static bool job_has_system(const struct preflight_plan *pp, uint16_t *version)
{
	for (size_t i = 0; i < pp->n_steps; i++) {
		const struct image *img = pp->steps[i].img;
		for (unsigned k = 0; k < img->n_modules; k++)
			if (img->modules[k].function == MODULE_FUNCTION_SYSTEM) {
				*version = img->modules[k].version;
				return true;
			}
	}
	return false;
}

int dfu_preflight_plan(const struct device_facts *dev, bool layout_known,
		       const struct dfuse_info *info, const struct preflight_plan *pp, bool force,
		       struct dfu_plan *plan, struct error *err)
{
	(void)force; /* memory map, slot and overlap checks are never forced (issue 7) */
	memset(plan, 0, sizeof(*plan));
	uint16_t layout_version = dev->system_version, job_system = 0;
	bool brings_system = job_has_system(pp, &job_system);
	if (brings_system)
		layout_version = job_system;
	if (!layout_known && !brings_system && dev->platform &&
	    dev->platform->mcu == MCU_NRF52840) {
		error_set(
		    err, ERR_LAYOUT_UNKNOWN,
		    "no system part was found at 0x28000 or 0x30000, so it is unknown which of "
		    "the Gen 3 flash layouts the device uses");
		error_detail_str(err, "reason", "no system part prefix found by UPLOAD");
		return -1;
	}
	for (size_t i = 0; i < pp->n_steps; i++) {
		const struct image *img = pp->steps[i].img;
		for (unsigned k = 0; k < img->n_modules; k++) {
			const struct image *mi;
			const struct image_module *m;
			struct dfu_write w = {0};
			module_payload(img, &img->modules[k], &mi, &m, &w.data, &w.len);
			if ((m->flags & IMAGE_FLAG_ENCRYPTED) ||
			    !(FN_BIT(m->function) &
			      (FN_BIT(MODULE_FUNCTION_SYSTEM) | FN_BIT(MODULE_FUNCTION_USER) |
			       FN_BIT(MODULE_FUNCTION_MONO) | FN_BIT(MODULE_FUNCTION_RADIO_STACK))))
				return not_flashable(m, err);
			if (check_protection(dev, m, err) < 0)
				return -1;
			w.address = m->start;
			w.name = pp->steps[i].name;
			w.job_index = pp->steps[i].job_index;
			w.function = m->function;
			w.index = m->index;
			w.version = m->version;
			if (check_map(info, dev->platform, w.address, w.len, err) < 0 ||
			    check_slot(dev, layout_version, &w, err) < 0 ||
			    (!brings_system && check_overlap(dev, &w, err) < 0)) {
				error_prefix(err, "%s: ", w.name ? w.name : "image");
				return -1;
			}
			/* docs/device/memory-maps.md#gen-3: a 256 KiB-slot application on Device OS
			 * ≥ 3.1 leaves the old
			 * 128 KiB slot's first page erased so the stale app is not picked.
			 * capability.c says where: the layout the device will run, or, when
			 * that is unknown, the one the application was built against. */
			if (m->function == MODULE_FUNCTION_USER && m->index == 2 &&
			    compat_page_erase(dev->platform, layout_version, m) &&
			    w.address + w.len <= GEN3_COMPAT_USER_PAGE &&
			    plan->n_writes + 1 < DFU_WRITE_MAX) {
				plan->writes[plan->n_writes++] =
				    (struct dfu_write){.address = GEN3_COMPAT_USER_PAGE,
						       .len = 4096,
						       .erase_only = true,
						       .name = "invalidate-128k-user-part",
						       .function = MODULE_FUNCTION_USER,
						       .index = 1,
						       .job_index = pp->steps[i].job_index};
			}
			if (plan->n_writes >= DFU_WRITE_MAX)
				return error_set(err, ERR_INTERNAL, "too many modules in one job");
			plan->writes[plan->n_writes++] = w;
		}
	}
	return 0;
}

int dfu_preflight_static_map(const struct platform *p, const struct preflight_plan *pp,
			     struct error *err)
{
	const char *map = dfuse_platform_map_string(p);
	if (!map)
		return 1;
	struct dfuse_info *info = calloc(1, sizeof(*info));
	if (!info)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	int rc = dfuse_map_parse(map, &info->maps[0], err);
	info->map_valid[0] = rc == 0;
	for (size_t i = 0; rc == 0 && i < pp->n_steps; i++) {
		const struct image *img = pp->steps[i].img;
		for (unsigned k = 0; rc == 0 && k < img->n_modules; k++) {
			const struct image *mi;
			const struct image_module *m;
			const uint8_t *data;
			size_t len;
			module_payload(img, &img->modules[k], &mi, &m, &data, &len);
			(void)mi;
			(void)data;
			if (check_map(info, p, m->start, len, err) < 0) {
				error_prefix(
				    err, "%s: ", pp->steps[i].name ? pp->steps[i].name : "image");
				rc = -1;
			}
		}
	}
	free(info);
	return rc;
}
