/* Module read-back over UPLOAD and the DFU-specific preflight, on real fixtures. */
#include "dfu_preflight.h"
#include "fixtures_present.h"
#include "plan.h"

#include "platform.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define GEN3_MAP      "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka"
#define GEN2_MAP      "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg"
#define P2_MAP_STRING "@Internal Flash   /0x08000000/2048*004Kg"

static struct image *load(const char *rel)
{
	char path[512];
	const char *dir = getenv("FLASHD_FIXTURES");
	snprintf(path, sizeof(path), "%s/modules/%s", dir ? dir : "../shared/fixtures", rel);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		fail_msg("cannot open %s", path);
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	if (image_load_fd(fd, rel, &img, &err) < 0)
		fail_msg("%s: %s", rel, err.message);
	close(fd);
	error_clear(&err);
	return img;
}

static void info_with_map(struct dfuse_info *info, const char *map)
{
	struct error err;
	error_init(&err);
	memset(info, 0, sizeof(*info));
	snprintf(info->serial, sizeof(info->serial), "e00fce68aabbccddeeff0011");
	snprintf(info->protection, sizeof(info->protection), "sm=o");
	assert_int_equal(dfuse_map_parse(map, &info->maps[0], &err), 0);
	info->map_valid[0] = true;
}

/* Puts a module's first bytes where the read-back of its slot would find them. */
static void put_probe(struct dfu_readback *rb, const struct image *img)
{
	const struct image_module *m = &img->modules[0];
	for (unsigned i = 0; i < rb->n_probes; i++) {
		if (rb->probes[i].address != m->start)
			continue;
		size_t n = m->size < DFU_PROBE_LEN ? m->size : DFU_PROBE_LEN;
		memcpy(rb->probes[i].buf, image_module_bytes(img, m), n);
		rb->probes[i].len = DFU_PROBE_LEN;
		return;
	}
	fail_msg("no probe at 0x%x", m->start);
}

static void erased(struct dfu_readback *rb)
{
	for (unsigned i = 0; i < rb->n_probes; i++) {
		memset(rb->probes[i].buf, 0xff, DFU_PROBE_LEN);
		rb->probes[i].len = DFU_PROBE_LEN;
		rb->probes[i].read = true;
	}
}

/* A device's flash for the read-back: [base, base + size), erased where not written. */
struct fake_flash {
	uint32_t base;
	size_t size;
	uint8_t *mem;
};

static struct fake_flash *flash_with(uint32_t base, size_t size, const struct image *img)
{
	struct fake_flash *f = calloc(1, sizeof(*f));
	f->base = base;
	f->size = size;
	f->mem = malloc(size);
	memset(f->mem, 0xff, size);
	if (img) {
		const struct image_module *m = &img->modules[0];
		assert_true(m->start >= base && m->start + m->size <= base + size);
		memcpy(f->mem + (m->start - base), image_module_bytes(img, m), m->size);
	}
	return f;
}

static void flash_free(struct fake_flash *f)
{
	free(f->mem);
	free(f);
}

/* Answers the reads not answered yet, as the transport's UPLOADs would; then the
 * follow-up reads the results call for, until there are none.  Returns the rounds. */
static unsigned read_all(struct dfu_readback *rb, const struct fake_flash *f)
{
	unsigned rounds = 0, done = 0;
	do {
		for (; done < rb->n_probes; done++) {
			struct dfu_probe *pr = &rb->probes[done];
			uint8_t *buf = dfu_probe_data(pr);
			size_t n = dfu_probe_size(pr);
			for (size_t k = 0; k < n; k++) {
				uint64_t a = (uint64_t)pr->address + k;
				buf[k] = a >= f->base && a < f->base + f->size ? f->mem[a - f->base]
									       : 0xff;
			}
			pr->len = n;
			pr->read = true;
		}
		rounds++;
	} while (dfu_readback_follow(rb));
	return rounds;
}

static bool has_probe(const struct dfu_readback *rb, uint32_t a)
{
	for (unsigned i = 0; i < rb->n_probes; i++)
		if (rb->probes[i].address == a)
			return true;
	return false;
}

static int plan_for(const struct device_facts *dev, bool layout_known,
		    const struct dfuse_info *info, struct image *img, bool force,
		    struct dfu_plan *plan, struct error *err)
{
	struct preflight_plan pp = {0};
	pp.steps[0].img = img;
	pp.steps[0].name = "test.bin";
	pp.steps[0].module = &img->modules[0];
	pp.n_steps = 1;
	return dfu_preflight_plan(dev, layout_known, info, &pp, force, plan, err);
}

static void test_readback_plan_covers_every_gen3_layout_and_gen2_slots(void **state)
{
	(void)state;
	struct dfu_readback rb;
	dfu_readback_plan(platform_by_id(12), &rb);
	assert_true(has_probe(&rb, 0x28000));
	assert_true(has_probe(&rb, 0x30000));
	assert_true(has_probe(&rb, 0xB4000));
	assert_true(has_probe(&rb, 0xD4000));
	assert_true(has_probe(&rb, 0xF4000));
	dfu_readback_plan(platform_by_id(6), &rb);
	assert_true(has_probe(&rb, 0x08000000));
	assert_true(has_probe(&rb, 0x08020000));
	assert_true(has_probe(&rb, 0x08060000));
	assert_true(has_probe(&rb, 0x080A0000));
}

static void test_readback_of_argon_1_5_system_part_determines_old_layout(void **state)
{
	(void)state;
	struct image *sys = load("argon/argon-system-part1@1.5.0.bin");
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, GEN3_MAP);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	put_probe(&rb, sys);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	assert_int_equal(facts.platform->id, 12);
	assert_string_equal(facts.device_id, "e00fce68aabbccddeeff0011");
	assert_int_equal(facts.system_version, sys->modules[0].version);
	assert_int_equal(facts.n_modules, 2);
	assert_int_equal(facts.modules[0].address, 0x30000);
	assert_int_equal(facts.modules[0].slot_size, sys->modules[0].size);
	assert_int_equal(facts.protection, DEVICE_PROTECTION_OPEN);
	/* No SoftDevice info struct readable: the radio stack is what the system part needs. */
	const struct image_module *m = &sys->modules[0];
	uint16_t radio = 0;
	for (int d = 0; d < 2; d++)
		if (m->deps[d].function == MODULE_FUNCTION_RADIO_STACK)
			radio = m->deps[d].version;
	assert_true(radio > 0);
	assert_int_equal(facts.modules[1].function, MODULE_FUNCTION_RADIO_STACK);
	assert_int_equal(facts.modules[1].version, radio);
	image_free(sys);
}

static void test_softdevice_fwid_is_the_installed_radio_stack_version(void **state)
{
	(void)state;
	struct image *sys = load("argon/argon-system-part1@2.2.0.bin");
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, GEN3_MAP);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	put_probe(&rb, sys);
	/* Nordic's SD info struct at 0x3000: magic 0x51B1E5DB at +4, FWID 0x00CA at +0xC. */
	bool found = false;
	for (unsigned i = 0; i < rb.n_probes; i++) {
		if (rb.probes[i].address != 0x3000)
			continue;
		memcpy(rb.probes[i].buf + 4, "\xdb\xe5\xb1\x51", 4);
		memcpy(rb.probes[i].buf + 0xc, "\xca\x00", 2);
		found = true;
	}
	assert_true(found);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	assert_int_equal(facts.n_modules, 2);
	assert_int_equal(facts.modules[1].function, MODULE_FUNCTION_RADIO_STACK);
	assert_int_equal(facts.modules[1].version, 0xca);
	image_free(sys);
}

static void test_erased_gen3_device_has_unknown_layout_and_app_is_refused(void **state)
{
	(void)state;
	struct image *app = load("argon/tinker-0.8.0-rc.27-argon.bin");
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	assert_false(dfu_readback_facts(&rb, &info, &facts));
	assert_int_equal(plan_for(&facts, false, &info, app, true, &plan, &err), -1);
	assert_int_equal(err.code, ERR_LAYOUT_UNKNOWN);
	error_clear(&err);
	image_free(app);
}

/*
 * Issue 13, "can't tell is treated as absent": an Argon whose system part was erased
 * (flashd killed during the erase) has no system part naming its SoftDevice, and the
 * SoftDevice has no prefix.  The radio stack is unknown, not absent: flashing the
 * system part again is planned (with a warning), not refused with "no radio stack".
 */
static void test_unread_radio_stack_is_unknown_not_absent(void **state)
{
	(void)state;
	struct image *bl = load("argon/argon-bootloader@2.2.0.bin");
	struct image *sys = load("argon/argon-system-part1@2.2.0.bin");
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, GEN3_MAP);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	put_probe(&rb, bl);
	dfu_readback_facts(&rb, &info, &facts);
	assert_true(facts.modules_known);
	assert_true(facts.unknown_functions & (1u << MODULE_FUNCTION_RADIO_STACK));
	struct plan *plan = malloc(sizeof(*plan));
	struct preflight_input in = {sys, "argon-system-part1@2.2.0.bin"};
	struct plan_options o = {.mode = DEVICE_MODE_DFU};
	struct error err;
	error_init(&err);
	assert_int_equal(plan_build(&facts, &in, 1, &o, plan, &err), 0);
	assert_int_equal(plan->n_writes, 1);
	bool said = false;
	for (size_t i = 0; i < plan->n_warnings; i++)
		said |= strstr(plan->warnings[i], "radio stack") &&
			strstr(plan->warnings[i], "cannot read");
	assert_true(said);
	/* read via the system part that names it: known (and then met) */
	dfu_readback_clear(&rb);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	put_probe(&rb, bl);
	put_probe(&rb, sys);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	assert_false(facts.unknown_functions & (1u << MODULE_FUNCTION_RADIO_STACK));
	assert_false(facts.unknown_functions & (1u << MODULE_FUNCTION_BOOTLOADER));
	/* a slot whose UPLOAD failed is unknown too, not empty */
	for (unsigned i = 0; i < rb.n_probes; i++)
		if (rb.probes[i].address == 0xF4000)
			rb.probes[i].read = false;
	dfu_readback_facts(&rb, &info, &facts);
	assert_true(facts.unknown_functions & (1u << MODULE_FUNCTION_BOOTLOADER));
	dfu_readback_clear(&rb);
	free(plan);
	image_free(bl);
	image_free(sys);
}

/* A 3.1+ Argon application: user part index 2 at 0xB4000 (synthetic module). */
static struct image *fake_app_256k(uint32_t size)
{
	struct image *img = calloc(1, sizeof(*img));
	img->data = calloc(1, size);
	img->len = size;
	img->n_modules = 1;
	struct image_module *m = &img->modules[0];
	m->size = size;
	m->start = 0xB4000;
	m->end = 0xB4000 + size - 4;
	m->platform_id = 12;
	m->function = MODULE_FUNCTION_USER;
	m->index = 2;
	m->version = 6;
	m->deps[0] = (struct image_dependency){MODULE_FUNCTION_SYSTEM, 1, 3103};
	m->crc_ok = true;
	return img;
}

static void test_3_1_argon_app_on_1_5_argon_is_refused_even_with_force(void **state)
{
	(void)state;
	struct image *sys = load("argon/argon-system-part1@1.5.0.bin");
	struct image *app = fake_app_256k(0x3000);
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	dfu_readback_plan(platform_by_id(12), &rb);
	erased(&rb);
	put_probe(&rb, sys);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	assert_int_equal(plan_for(&facts, true, &info, app, true, &plan, &err), -1);
	assert_int_equal(err.code, ERR_WRONG_SLOT);
	assert_int_equal(plan.n_writes, 0);
	error_clear(&err);
	image_free(sys);
	image_free(app);
}

static void test_3_1_app_on_4_x_device_also_erases_the_0xd4000_page(void **state)
{
	(void)state;
	struct image *app = fake_app_256k(0x3000);
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	facts.platform = platform_by_id(12);
	facts.system_version = 4003;
	assert_int_equal(plan_for(&facts, true, &info, app, false, &plan, &err), 0);
	assert_int_equal(plan.n_writes, 2);
	assert_true(plan.writes[0].erase_only);
	assert_int_equal(plan.writes[0].address, 0xD4000);
	assert_int_equal(plan.writes[0].len, 4096);
	assert_int_equal(plan.writes[1].address, 0xB4000);
	assert_int_equal(plan.writes[1].len, 0x3000);
	image_free(app);
}

/* Plans the 256 KiB app for an Argon on system_version (0 = unknown), the app
 * depending on system part 1 of dep_version; returns whether the 0xD4000 page is erased. */
static bool erases_compat_page(uint16_t system_version, uint16_t dep_version)
{
	struct image *app = fake_app_256k(0x3000);
	app->modules[0].deps[0].version = dep_version;
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	facts.platform = platform_by_id(12);
	facts.system_version = system_version;
	assert_int_equal(plan_for(&facts, true, &info, app, false, &plan, &err), 0);
	bool erased_page = false;
	for (unsigned i = 0; i < plan.n_writes; i++)
		erased_page |= plan.writes[i].erase_only && plan.writes[i].address == 0xD4000;
	image_free(app);
	return erased_page;
}

/* CAPABILITY_COMPAT_PAGE_ERASE: from the 3.1.0 layout (system 3100, 3.1.0-alpha.1;
 * 3.1.0 itself ships 3103), asked with the device's layout or, unknown, with the
 * application's dependency. */
static void test_compat_page_erase_follows_the_layout_or_the_apps_dependency(void **state)
{
	(void)state;
	assert_true(erases_compat_page(3103, 3103)); /* 3.1.0 */
	assert_true(erases_compat_page(3100, 3100)); /* 3.1.0-alpha.1: the new layout */
	assert_true(erases_compat_page(6200, 3103));
	assert_true(erases_compat_page(0, 3103)); /* device unknown: the app was built for 3.1.0 */
	assert_true(erases_compat_page(0, 4003));
	assert_false(erases_compat_page(0, 0)); /* neither known: nothing erased */
}

static void test_photon_user_part_is_one_write_at_its_prefix_address(void **state)
{
	(void)state;
	struct image *app = load("photon/tinker-0.4.5-photon.bin");
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN2_MAP);
	facts.platform = platform_by_id(6);
	assert_int_equal(plan_for(&facts, true, &info, app, false, &plan, &err), 0);
	assert_int_equal(plan.n_writes, 1);
	assert_int_equal(plan.writes[0].address, 0x080A0000);
	assert_int_equal(plan.writes[0].len, app->len);
	assert_ptr_equal(plan.writes[0].data, app->data);
	image_free(app);
}

static void test_bootloader_is_not_flashable_over_dfu_with_serial_hint(void **state)
{
	(void)state;
	struct image *bl = load("argon/argon-bootloader@2.2.0.bin");
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	facts.platform = platform_by_id(12);
	facts.system_version = 2200;
	assert_int_equal(plan_for(&facts, true, &info, bl, true, &plan, &err), -1);
	assert_int_equal(err.code, ERR_NOT_FLASHABLE_HERE);
	assert_non_null(strstr(err.hint, "serial"));
	error_clear(&err);
	image_free(bl);
}

static void test_radio_stack_is_written_without_its_prefix(void **state)
{
	(void)state;
	struct image *sd = load("argon/argon-softdevice@2.0.1.bin");
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN3_MAP);
	facts.platform = platform_by_id(12);
	facts.system_version = 2200;
	assert_true(sd->modules[0].flags & IMAGE_FLAG_DROP_MODULE_INFO);
	if (plan_for(&facts, true, &info, sd, false, &plan, &err) < 0)
		fail_msg("%s", err.message);
	assert_int_equal(plan.n_writes, 1);
	assert_int_equal(plan.writes[0].address, sd->modules[0].start);
	assert_int_equal(plan.writes[0].len, sd->modules[0].size - IMAGE_PREFIX_SIZE);
	assert_ptr_equal(plan.writes[0].data, sd->data + IMAGE_PREFIX_SIZE);
	image_free(sd);
}

static void test_protected_device_refuses_dfu_writes(void **state)
{
	(void)state;
	struct image *app = load("photon/tinker-0.4.5-photon.bin");
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	info_with_map(&info, GEN2_MAP);
	facts.platform = platform_by_id(6);
	facts.protection = DEVICE_PROTECTION_PROTECTED;
	assert_int_equal(plan_for(&facts, true, &info, app, true, &plan, &err), -1);
	assert_int_equal(err.code, ERR_DEVICE_PROTECTED);
	error_clear(&err);
	image_free(app);
}

static void test_range_in_read_only_segment_is_outside_memory_map_even_forced(void **state)
{
	(void)state;
	struct image *app = load("photon/tinker-0.4.5-photon.bin");
	struct dfuse_info info;
	struct device_facts facts = {0};
	struct dfu_plan plan;
	struct error err;
	error_init(&err);
	/* A map whose user area is read-only ('a'). */
	info_with_map(&info, "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Ka");
	facts.platform = platform_by_id(6);
	assert_int_equal(plan_for(&facts, true, &info, app, true, &plan, &err), -1);
	assert_int_equal(err.code, ERR_OUTSIDE_MEMORY_MAP);
	assert_string_equal(json_string_value(json_object_get(err.detail, "attributes")),
			    "readable");
	error_clear(&err);
	image_free(app);
}

#define P2_MAP	    "@Internal Flash   /0x08000000/2048*004Kg"
#define P2_USER_END 0x08600000u

/* docs/device/memory-maps.md#p2-family: the P2 user part ends at 0x08600000; where it starts is in
 * its suffix. */
static void test_p2_user_part_is_found_through_its_suffix_dynamic_location(void **state)
{
	(void)state;
	struct image *app = load("p2/tinker-5.0.0-p2.bin");
	const struct image_module *im = &app->modules[0];
	struct fake_flash *f = flash_with(0x08480000, P2_USER_END - 0x08480000, app);
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, P2_MAP);
	dfu_readback_plan(platform_by_id(32), &rb);
	assert_false(has_probe(&rb, im->start)); /* not fixed: not planned */
	/* the tail first, then the prefix it names, then the whole module for its CRC */
	assert_int_equal(read_all(&rb, f), 3);
	assert_true(has_probe(&rb, 0x085F4000));
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	struct installed_module m = {0};
	bool found = false;
	for (unsigned i = 0; i < facts.n_modules; i++)
		if (facts.modules[i].function == MODULE_FUNCTION_USER) {
			m = facts.modules[i];
			found = true;
		}
	assert_true(found);
	assert_int_equal(m.index, 1);
	assert_int_equal(m.version, 6);
	assert_int_equal(m.address, 0x085F4000);
	assert_int_equal(m.slot_size, 49152);
	assert_int_equal(m.deps[0].function, MODULE_FUNCTION_SYSTEM);
	assert_int_equal(m.deps[0].index, 1);
	assert_int_equal(m.deps[0].version, 5002);
	assert_true(facts.modules_known);
	assert_int_equal(m.checked, MODULE_CHECK_INTEGRITY | MODULE_CHECK_PLATFORM);
	assert_true(installed_module_valid(&m));
	dfu_readback_clear(&rb);
	flash_free(f);
	image_free(app);
}

static void test_erased_p2_user_slot_reports_no_user_part(void **state)
{
	(void)state;
	struct fake_flash *f = flash_with(0x08480000, P2_USER_END - 0x08480000, NULL);
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, P2_MAP);
	dfu_readback_plan(platform_by_id(32), &rb);
	unsigned planned = rb.n_probes;
	assert_int_equal(read_all(&rb, f), 1);
	assert_int_equal(rb.n_probes, planned);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	for (unsigned i = 0; i < facts.n_modules; i++)
		assert_int_not_equal(facts.modules[i].function, MODULE_FUNCTION_USER);
	dfu_readback_clear(&rb);
	flash_free(f);
}

/* A suffix naming a start outside the slot (garbage in the tail) is not followed. */
static void test_p2_suffix_naming_a_start_outside_the_user_slot_is_ignored(void **state)
{
	(void)state;
	struct image *app = load("p2/tinker-5.0.0-p2.bin");
	struct fake_flash *f = flash_with(0x08480000, P2_USER_END - 0x08480000, app);
	/* DYNAMIC_LOCATION's start is the first field after the suffix's first extension
	 * header: 62-byte suffix + CRC end the file
	 * (docs/device/module-format.md#suffix-and-checksums). */
	uint8_t *dyn = f->mem + f->size - 4 - 62;
	assert_int_equal(dyn[0] | dyn[1] << 8, 2);
	memcpy(dyn + 4, "\x00\x00\x40\x08", 4); /* 0x08400000: below the user slot */
	struct dfu_readback rb;
	dfu_readback_plan(platform_by_id(32), &rb);
	unsigned planned = rb.n_probes;
	assert_int_equal(read_all(&rb, f), 1); /* nothing followed */
	assert_int_equal(rb.n_probes, planned);
	assert_false(has_probe(&rb, 0x08400000));
	dfu_readback_clear(&rb);
	flash_free(f);
	image_free(app);
}

static void put_le32(uint8_t *b, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

/* The user part found by read-back, and its integrity verdict. */
static struct installed_module user_part_of(const struct device_facts *facts)
{
	for (unsigned i = 0; i < facts->n_modules; i++)
		if (facts->modules[i].function == MODULE_FUNCTION_USER)
			return facts->modules[i];
	fail_msg("no user part in the read-back");
	return (struct installed_module){0};
}

/* docs/device/validation.md INTEGRITY: a user part read whole whose CRC does not match fails the
 * check, as
 * the device itself would judge it at boot; an intact one passes. */
static void test_photon_user_part_read_whole_gets_a_true_integrity_verdict(void **state)
{
	(void)state;
	struct image *app = load("photon/tinker-0.4.5-photon.bin");
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, GEN2_MAP);
	for (int corrupt = 0; corrupt < 2; corrupt++) {
		struct fake_flash *f = flash_with(0x08000000, 1u << 20, app);
		if (corrupt)
			f->mem[0x080A0000 - 0x08000000 + app->modules[0].size / 2] ^= 0x40;
		struct dfu_readback rb;
		dfu_readback_plan(platform_by_id(6), &rb);
		assert_int_equal(read_all(&rb, f), 2); /* prefixes, then the user part whole */
		assert_true(dfu_readback_facts(&rb, &info, &facts));
		struct installed_module m = user_part_of(&facts);
		assert_int_equal(m.address, 0x080A0000);
		assert_int_equal(m.checked, MODULE_CHECK_INTEGRITY | MODULE_CHECK_PLATFORM);
		assert_int_equal(installed_module_valid(&m), !corrupt);
		/* an intact one also gives its SHA-256 (the planner's "installed identically") */
		if (!corrupt) {
			char hex[65];
			for (int k = 0; k < 32; k++)
				snprintf(hex + 2 * k, 3, "%02x", app->modules[0].sha256[k]);
			assert_string_equal(m.sha256, hex);
		}
		/* the system parts: prefixes only, no integrity verdict claimed */
		for (unsigned i = 0; i < facts.n_modules; i++)
			if (facts.modules[i].function == MODULE_FUNCTION_SYSTEM)
				assert_int_equal(facts.modules[i].checked, MODULE_CHECK_PLATFORM);
		dfu_readback_clear(&rb);
		flash_free(f);
	}
	image_free(app);
}

/* issue 11: a system part is read at its end too (the suffix's SHA-256 and the CRC-32, 40
 * bytes at the end its prefix names): identity without reading it all; a failed read of
 * that end makes its bytes unreadable, not identical. */
static void test_system_part_identity_is_read_from_its_suffix(void **state)
{
	(void)state;
	struct image *sysp = load("photon/photon-system-part2@2.2.0.bin");
	const struct image_module *im = &sysp->modules[0];
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, GEN2_MAP);
	for (int fail_read = 0; fail_read < 2; fail_read++) {
		struct fake_flash *f = flash_with(0x08000000, 1u << 20, sysp);
		struct dfu_readback rb;
		dfu_readback_plan(platform_by_id(6), &rb);
		assert_int_equal(read_all(&rb, f), 2); /* prefixes, then the suffix */
		bool found = false;
		for (unsigned i = 0; i < rb.n_probes; i++)
			if (rb.probes[i].kind == DFU_PROBE_SUFFIX) {
				assert_int_equal(rb.probes[i].address,
						 im->start + im->size - DFU_SUFFIX_PROBE_LEN);
				if (fail_read)
					rb.probes[i].read = false;
				found = true;
			}
		assert_true(found);
		assert_true(dfu_readback_facts(&rb, &info, &facts));
		const struct installed_module *m = NULL;
		for (unsigned i = 0; i < facts.n_modules; i++)
			if (facts.modules[i].address == im->start)
				m = &facts.modules[i];
		assert_non_null(m);
		if (fail_read) {
			assert_int_equal(m->bytes, INSTALLED_BYTES_UNREADABLE);
			assert_string_equal(m->sha256, "");
		} else {
			char hex[65];
			for (int k = 0; k < 32; k++)
				snprintf(hex + 2 * k, 3, "%02x", im->sha256[k]);
			assert_int_equal(m->bytes, INSTALLED_BYTES_READ);
			assert_string_equal(m->sha256, hex);
			assert_int_equal(m->crc, im->crc_stored);
		}
		dfu_readback_clear(&rb);
		flash_free(f);
	}
	image_free(sysp);
}

static void test_user_part_larger_than_the_whole_read_limit_keeps_the_prefix_read(void **state)
{
	(void)state;
	/* A P2 user part of 1 MiB: its prefix and suffix are read, not its body. */
	uint32_t size = 1u << 20, start = P2_USER_END - size;
	struct fake_flash *f = flash_with(0x08480000, P2_USER_END - 0x08480000, NULL);
	uint8_t *mod = f->mem + (start - f->base);
	memset(mod, 0x5a, size);
	memset(mod, 0, 24);
	put_le32(mod, start);
	put_le32(mod + 4, P2_USER_END - 4);
	mod[10] = 6;
	mod[12] = 32;
	mod[14] = MODULE_FUNCTION_USER;
	mod[15] = 1;
	uint8_t *suffix = mod + size - 4 - 62;
	memset(suffix, 0, 62);
	suffix[0] = 2;
	suffix[2] = 16;
	put_le32(suffix + 4, start);
	suffix[16] = 1;
	suffix[18] = 10;
	suffix[60] = 62;
	struct dfu_readback rb;
	struct dfuse_info info;
	struct device_facts facts;
	info_with_map(&info, P2_MAP);
	dfu_readback_plan(platform_by_id(32), &rb);
	assert_int_equal(read_all(&rb, f), 2); /* tail, prefix; no whole read */
	for (unsigned i = 0; i < rb.n_probes; i++)
		assert_int_not_equal(rb.probes[i].kind, DFU_PROBE_WHOLE);
	assert_true(dfu_readback_facts(&rb, &info, &facts));
	struct installed_module m = user_part_of(&facts);
	assert_int_equal(m.address, start);
	assert_int_equal(m.slot_size, size);
	assert_int_equal(m.checked, MODULE_CHECK_PLATFORM); /* no integrity verdict */
	dfu_readback_clear(&rb);
	flash_free(f);
}

/* Every fixture this file reads. */
static const char *const fixtures_read[] = {
    "argon/argon-bootloader@2.2.0.bin",
    "argon/argon-softdevice@2.0.1.bin",
    "argon/argon-system-part1@1.5.0.bin",
    "argon/argon-system-part1@2.2.0.bin",
    "argon/tinker-0.8.0-rc.27-argon.bin",
    "p2/tinker-5.0.0-p2.bin",
    "photon/tinker-0.4.5-photon.bin",
    "photon/photon-system-part2@2.2.0.bin",
    NULL,
};

/* A dry run on a device not in DFU mode checks against the map the platform's bootloader
 * describes: the same verdict, word for word, as against the device's descriptors. */
static void test_static_map_gives_the_verdict_of_the_live_map(void **state)
{
	(void)state;
	assert_string_equal(dfuse_platform_map_string(platform_by_id(6)), GEN2_MAP);
	assert_string_equal(dfuse_platform_map_string(platform_by_id(12)), GEN3_MAP);
	assert_string_equal(dfuse_platform_map_string(platform_by_id(32)), P2_MAP_STRING);
	assert_null(dfuse_platform_map_string(platform_by_id(0))); /* the Core: none known */
	assert_null(dfuse_platform_map_string(NULL));

	struct image *photon = load("photon/tinker-0.4.5-photon.bin");
	struct image *argon = load("argon/tinker-0.8.0-rc.27-argon.bin");
	struct preflight_plan pp = {0};
	pp.steps[0] = (struct preflight_step){
	    .img = photon, .name = "test.bin", .module = &photon->modules[0]};
	pp.n_steps = 1;
	struct error live, stat;
	error_init(&live);
	error_init(&stat);
	/* the Photon's application on an Argon (forced): outside the nRF52840's flash */
	struct dfuse_info info;
	info_with_map(&info, GEN3_MAP);
	struct device_facts facts = {0};
	facts.platform = platform_by_id(12);
	facts.system_version = 1512;
	struct dfu_plan plan;
	assert_int_equal(plan_for(&facts, true, &info, photon, true, &plan, &live), -1);
	assert_int_equal(live.code, ERR_OUTSIDE_MEMORY_MAP);
	assert_int_equal(dfu_preflight_static_map(facts.platform, &pp, &stat), -1);
	assert_int_equal(stat.code, ERR_OUTSIDE_MEMORY_MAP);
	assert_string_equal(stat.message, live.message);
	/* on a Photon it fits */
	error_clear(&stat);
	assert_int_equal(dfu_preflight_static_map(platform_by_id(6), &pp, &stat), 0);
	/* the Argon's application fits the Argon's map, not the Photon's */
	pp.steps[0] =
	    (struct preflight_step){.img = argon, .name = "test.bin", .module = &argon->modules[0]};
	assert_int_equal(dfu_preflight_static_map(platform_by_id(12), &pp, &stat), 0);
	assert_int_equal(dfu_preflight_static_map(platform_by_id(6), &pp, &stat), -1);
	assert_int_equal(stat.code, ERR_OUTSIDE_MEMORY_MAP);
	error_clear(&stat);
	/* no map for the Core: nothing checked */
	assert_int_equal(dfu_preflight_static_map(platform_by_id(0), &pp, &stat), 1);
	assert_false(error_is_set(&stat));
	error_clear(&live);
	image_free(photon);
	image_free(argon);
}

int main(void)
{
	fixtures_present_or_skip(fixtures_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_readback_plan_covers_every_gen3_layout_and_gen2_slots),
	    cmocka_unit_test(test_readback_of_argon_1_5_system_part_determines_old_layout),
	    cmocka_unit_test(test_softdevice_fwid_is_the_installed_radio_stack_version),
	    cmocka_unit_test(test_unread_radio_stack_is_unknown_not_absent),
	    cmocka_unit_test(test_erased_gen3_device_has_unknown_layout_and_app_is_refused),
	    cmocka_unit_test(test_3_1_argon_app_on_1_5_argon_is_refused_even_with_force),
	    cmocka_unit_test(test_3_1_app_on_4_x_device_also_erases_the_0xd4000_page),
	    cmocka_unit_test(test_compat_page_erase_follows_the_layout_or_the_apps_dependency),
	    cmocka_unit_test(test_photon_user_part_is_one_write_at_its_prefix_address),
	    cmocka_unit_test(test_bootloader_is_not_flashable_over_dfu_with_serial_hint),
	    cmocka_unit_test(test_radio_stack_is_written_without_its_prefix),
	    cmocka_unit_test(test_protected_device_refuses_dfu_writes),
	    cmocka_unit_test(test_range_in_read_only_segment_is_outside_memory_map_even_forced),
	    cmocka_unit_test(test_static_map_gives_the_verdict_of_the_live_map),
	    cmocka_unit_test(test_p2_user_part_is_found_through_its_suffix_dynamic_location),
	    cmocka_unit_test(test_erased_p2_user_slot_reports_no_user_part),
	    cmocka_unit_test(test_p2_suffix_naming_a_start_outside_the_user_slot_is_ignored),
	    cmocka_unit_test(test_photon_user_part_read_whole_gets_a_true_integrity_verdict),
	    cmocka_unit_test(test_user_part_larger_than_the_whole_read_limit_keeps_the_prefix_read),
	    cmocka_unit_test(test_system_part_identity_is_read_from_its_suffix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
