/* The job planner (daemon/plan.c) on real fixture modules and synthetic ones. */
#include "fixture.h"
#include "plan.h"

#include "asset_module.h"
#include "image.h"
#include "platform.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#define BL MODULE_FUNCTION_BOOTLOADER
#define SY MODULE_FUNCTION_SYSTEM
#define US MODULE_FUNCTION_USER
#define RS MODULE_FUNCTION_RADIO_STACK

/* A valid module (prefix at 0, 36-byte suffix, big-endian CRC-32), parsed. */
static struct image *synth(uint32_t start, uint8_t function, uint8_t index, uint16_t version,
			   uint16_t platform, uint8_t d0f, uint8_t d0i, uint16_t d0v, uint8_t d1f,
			   uint8_t d1i, uint16_t d1v, size_t payload)
{
	size_t total = 24 + payload + 36 + 4;
	uint8_t *b = calloc(1, total);
	uint32_t end = start + (uint32_t)total - 4;
	memcpy(b, &start, 4);
	memcpy(b + 4, &end, 4);
	memcpy(b + 10, &version, 2);
	memcpy(b + 12, &platform, 2);
	b[14] = function;
	b[15] = index;
	b[16] = d0f;
	b[17] = d0i;
	memcpy(b + 18, &d0v, 2);
	b[20] = d1f;
	b[21] = d1i;
	memcpy(b + 22, &d1v, 2);
	for (size_t i = 0; i < payload; i++)
		b[24 + i] = (uint8_t)(i * 13 + version);
	b[total - 6] = 36;
	uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(total - 4));
	b[total - 4] = (uint8_t)(crc >> 24);
	b[total - 3] = (uint8_t)(crc >> 16);
	b[total - 2] = (uint8_t)(crc >> 8);
	b[total - 1] = (uint8_t)crc;
	struct image *img = NULL;
	struct error e;
	error_init(&e);
	assert_int_equal(image_parse(b, total, &img, &e), 0);
	free(b);
	return img;
}

static void add_module(struct device_facts *f, uint8_t fn, uint8_t idx, uint16_t v, uint8_t d0f,
		       uint8_t d0i, uint16_t d0v, uint8_t d1f, uint8_t d1i, uint16_t d1v)
{
	struct installed_module *m = &f->modules[f->n_modules++];
	memset(m, 0, sizeof(*m));
	m->function = fn;
	m->index = idx;
	m->version = v;
	m->store = MODULE_STORE_MAIN;
	m->checked = m->passed = 30;
	m->deps[0].function = d0f;
	m->deps[0].index = d0i;
	m->deps[0].version = d0v;
	m->deps[1].function = d1f;
	m->deps[1].index = d1i;
	m->deps[1].version = d1v;
}

/* An Argon on Device OS 2.3.1 as DFU reads it: the radio stack named by its system part. */
static void argon_231(struct device_facts *f, bool radio_known)
{
	memset(f, 0, sizeof(*f));
	f->platform = platform_by_name("argon");
	f->system_version = 2302;
	f->modules_known = true;
	add_module(f, BL, 0, 1006, 0, 0, 0, 0, 0, 0);
	add_module(f, SY, 1, 2302, RS, 0, 202, BL, 0, 1006);
	add_module(f, US, 1, 6, SY, 1, 2302, 0, 0, 0);
	if (radio_known)
		add_module(f, RS, 0, 202, 0, 0, 0, 0, 0, 0);
	else
		f->unknown_functions = 1u << RS;
}

/* A Photon on Device OS 1.5.2 as `s` reports it. */
static void photon_152(struct device_facts *f)
{
	memset(f, 0, sizeof(*f));
	f->platform = platform_by_name("photon");
	f->system_version = 1512;
	f->modules_known = true;
	add_module(f, BL, 0, 502, 0, 0, 0, 0, 0, 0);
	add_module(f, SY, 1, 1512, SY, 2, 207, 0, 0, 0);
	add_module(f, SY, 2, 1512, SY, 1, 1512, BL, 0, 400);
	add_module(f, US, 1, 6, SY, 2, 1512, 0, 0, 0);
}

static int build(const struct device_facts *f, struct image **imgs, const char **names, size_t n,
		 bool force, enum device_mode mode, struct plan *plan, struct error *err)
{
	struct preflight_input in[PREFLIGHT_MAX_IMAGES];
	for (size_t i = 0; i < n; i++) {
		in[i].img = imgs[i];
		in[i].name = names[i];
	}
	struct plan_options o = {.force = force, .mode = mode};
	return plan_build(f, in, n, &o, plan, err);
}

static const char *detail_str(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_string_value(v) : NULL;
}

static long long detail_int(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_integer_value(v) : -1;
}

static struct image *argon_sys_402(void)
{
	/* Argon lists the radio stack first and the bootloader second (device-os
	 * modules/shared/system_module_version.mk) */
	return synth(0x30000, SY, 1, 4006, 12, RS, 0, 202, BL, 0, 1101, 4000);
}

static struct image *argon_bl_402(void)
{
	return synth(0xf4000, BL, 0, 1101, 12, 0, 0, 0, 0, 0, 0, 2000);
}

static void test_argon_system_part_without_its_bootloader_is_refused(void **state)
{
	(void)state;
	struct device_facts f;
	argon_231(&f, true);
	struct image *img = argon_sys_402();
	const char *name = "argon-system-part1@4.0.2.bin";
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_DFU, plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	/* the releases come from proto/osver.c's table (generated: a pre-release may head a
	 * span, so only the major versions are pinned here) */
	assert_non_null(strstr(e.message,
			       "argon-system-part1@4.0.2.bin needs bootloader \u2265 1101 "
			       "(Device OS "));
	assert_non_null(
	    strstr(e.message, " or later); the device has bootloader 1006 (Device OS 2."));
	assert_int_equal(detail_int(&e, "required_version"), 1101);
	assert_int_equal(detail_int(&e, "installed_version"), 1006);
	assert_string_equal(detail_str(&e, "required_function"), "bootloader");
	assert_string_equal(detail_str(&e, "file"), name);
	assert_string_equal(detail_str(&e, "check"), "boot");
	assert_non_null(strstr(e.hint, "bootloader"));
	assert_int_equal(plan->n_steps, 0);
	error_clear(&e);
	/* rewrite (write identical modules again) overrides no refusal */
	struct preflight_input in = {.img = img, .name = name};
	struct plan_options ro = {.rewrite = true, .mode = DEVICE_MODE_DFU};
	assert_int_equal(plan_build(&f, &in, 1, &ro, plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	error_clear(&e);
	/* --force writes it and says what it overrode */
	assert_int_equal(build(&f, &img, &name, 1, true, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->n_overrides, 1);
	assert_non_null(strstr(plan->overrides[0], "bootloader \u2265 1101"));
	image_free(img);
	free(plan);
}

static void test_argon_bootloader_and_system_part_in_any_order(void **state)
{
	(void)state;
	struct device_facts f;
	argon_231(&f, true);
	struct image *imgs[2] = {argon_sys_402(), argon_bl_402()};
	const char *names[2] = {"argon-system-part1@4.0.2.bin", "argon-bootloader@4.0.2.bin"};
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, imgs, names, 2, false, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_order, 2);
	assert_int_equal(plan->order[0], 1); /* the bootloader first */
	assert_int_equal(plan->order[1], 0);
	/* DFU cannot write the bootloader: the whole job goes over serial, one switch */
	assert_int_equal(plan->first_transport, PLAN_TRANSPORT_SERIAL);
	assert_false(plan->mixed_transports);
	size_t switches = 0, writes = 0;
	for (size_t i = 0; i < plan->n_steps; i++) {
		switches += plan->steps[i].kind == PLAN_STEP_SWITCH;
		writes += plan->steps[i].kind == PLAN_STEP_WRITE;
	}
	assert_int_equal(switches, 1);
	assert_int_equal(writes, 2);
	assert_int_equal(plan->steps[plan->n_steps - 1].kind, PLAN_STEP_VERIFY);
	char text[160];
	plan_step_describe(&plan->steps[0], text, sizeof(text));
	assert_string_equal(text, "switching to listening mode (DFU leave, then 28800 baud)");
	json_t *j = plan_to_json(plan);
	assert_int_equal(json_integer_value(json_object_get(j, "writes")), 2);
	assert_true(json_array_size(json_object_get(j, "steps")) == plan->n_steps);
	json_decref(j);
	/* same in the other order of files */
	struct image *rev[2] = {imgs[1], imgs[0]};
	const char *rnames[2] = {names[1], names[0]};
	assert_int_equal(build(&f, rev, rnames, 2, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->order[0], 0);
	assert_int_equal(plan->steps[0].kind, PLAN_STEP_WRITE); /* already listening */
	/* running: listening mode by the start-listening request where the ctrl transport
	 * runs (the device takes control requests), else by 28800 baud */
	assert_int_equal(build(&f, rev, rnames, 2, false, DEVICE_MODE_NORMAL, plan, &e), 0);
	assert_int_equal(plan->steps[0].kind, PLAN_STEP_SWITCH);
	plan_step_describe(&plan->steps[0], text, sizeof(text));
	assert_string_equal(text, "switching to listening mode (start-listening control request)");
	struct preflight_input rin[2] = {{.img = rev[0], .name = rnames[0]},
					 {.img = rev[1], .name = rnames[1]}};
	struct plan_options no_ctrl = {.mode = DEVICE_MODE_NORMAL,
				       .transports =
					   1u << PLAN_TRANSPORT_SERIAL | 1u << PLAN_TRANSPORT_DFU};
	assert_int_equal(plan_build(&f, rin, 2, &no_ctrl, plan, &e), 0);
	plan_step_describe(&plan->steps[0], text, sizeof(text));
	assert_string_equal(text, "switching to listening mode (28800 baud)");
	image_free(imgs[0]);
	image_free(imgs[1]);
	free(plan);
}

static void test_unknown_radio_stack_is_a_warning_not_a_refusal(void **state)
{
	(void)state;
	struct device_facts f;
	argon_231(&f, false);
	struct image *imgs[2] = {argon_sys_402(), argon_bl_402()};
	const char *names[2] = {"argon-system-part1@4.0.2.bin", "argon-bootloader@4.0.2.bin"};
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, imgs, names, 2, false, DEVICE_MODE_DFU, plan, &e), 0);
	bool said = false;
	for (size_t i = 0; i < plan->n_warnings; i++)
		said |= strstr(plan->warnings[i], "\u2265 202, which flashd cannot read") != NULL;
	assert_true(said);
	/* an absent radio stack (the list is complete and names none) is refused */
	f.unknown_functions = 0;
	assert_int_equal(build(&f, imgs, names, 2, false, DEVICE_MODE_DFU, plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_non_null(strstr(e.message, "the device has no radio stack"));
	error_clear(&e);
	image_free(imgs[0]);
	image_free(imgs[1]);
	free(plan);
}

static void test_photon_220_system_parts_need_their_bootloader(void **state)
{
	(void)state;
	struct device_facts f;
	photon_152(&f);
	struct image *imgs[4] = {fixture_load("photon/tinker-0.4.5-photon.bin"),
				 fixture_load("photon/photon-system-part2@2.2.0.bin"),
				 fixture_load("photon/photon-system-part1@2.2.0.bin"),
				 fixture_load("photon/photon-bootloader@2.2.0+lto.bin")};
	const char *names[4] = {"tinker-0.4.5-photon.bin", "photon-system-part2@2.2.0.bin",
				"photon-system-part1@2.2.0.bin", "photon-bootloader@2.2.0+lto.bin"};
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	/* system parts alone: the device takes them (a bootloader in slot 2 is not checked
	 * at update time) but would boot into safe mode */
	assert_int_equal(build(&f, imgs + 1, names + 1, 2, false, DEVICE_MODE_LISTENING, plan, &e),
			 -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_int_equal(detail_int(&e, "required_version"), 1003);
	assert_non_null(strstr(e.message, "needs bootloader \u2265 1003"));
	assert_non_null(strstr(e.message, "bootloader 502"));
	error_clear(&e);
	/* everything in reverse order: bootloader, part 1, part 2, application */
	assert_int_equal(build(&f, imgs, names, 4, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_order, 4);
	assert_int_equal(plan->order[0], 3);
	assert_int_equal(plan->order[1], 2);
	assert_int_equal(plan->order[2], 1);
	assert_int_equal(plan->order[3], 0);
	assert_int_equal(plan->first_transport, PLAN_TRANSPORT_SERIAL);
	for (size_t i = 0; i < 4; i++)
		image_free(imgs[i]);
	free(plan);
}

static void test_downgrade_that_breaks_the_application_is_refused(void **state)
{
	(void)state;
	struct device_facts f;
	photon_152(&f);
	struct image *img = fixture_load("photon/photon-system-part2@1.5.0.bin");
	const char *name = "photon-system-part2@1.5.0.bin";
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_LISTENING, plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_non_null(strstr(e.message, "application 1"));
	assert_non_null(strstr(e.message, "system part 2 \u2265 1512"));
	assert_non_null(strstr(e.message, "safe mode"));
	assert_string_equal(detail_str(&e, "module_function"), "user");
	error_clear(&e);
	assert_int_equal(build(&f, &img, &name, 1, true, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_true(plan->n_overrides >= 1);
	assert_non_null(strstr(plan->overrides[0], "application 1"));
	image_free(img);
	free(plan);
}

static void test_intermediate_states_order_a_downgrade(void **state)
{
	(void)state;
	/* Photon on 2.2.0: part 2 needs part 1 >= 2202.  Writing part 1 @1.5.0 first would
	 * fail the device's DEPENDENCIES_FULL check; part 2 must go first. */
	struct device_facts f;
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("photon");
	f.system_version = 2202;
	f.modules_known = true;
	add_module(&f, BL, 0, 1006, 0, 0, 0, 0, 0, 0);
	add_module(&f, SY, 1, 2202, SY, 2, 207, 0, 0, 0);
	add_module(&f, SY, 2, 2202, SY, 1, 2202, BL, 0, 1003);
	struct image *imgs[2] = {fixture_load("photon/photon-system-part1@1.5.0.bin"),
				 fixture_load("photon/photon-system-part2@1.5.0.bin")};
	const char *names[2] = {"photon-system-part1@1.5.0.bin", "photon-system-part2@1.5.0.bin"};
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, imgs, names, 2, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->order[0], 1);
	assert_int_equal(plan->order[1], 0);
	/* part 1 alone cannot be written at all */
	assert_int_equal(build(&f, imgs, names, 1, false, DEVICE_MODE_LISTENING, plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_string_equal(detail_str(&e, "check"), "update");
	error_clear(&e);
	image_free(imgs[0]);
	image_free(imgs[1]);
	free(plan);
}

static void test_electron_system_parts_carry_their_bootloader(void **state)
{
	(void)state;
	struct device_facts f;
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("electron");
	f.system_version = 1512;
	f.modules_known = true;
	add_module(&f, BL, 0, 502, 0, 0, 0, 0, 0, 0);
	add_module(&f, SY, 1, 1512, SY, 3, 1512, 0, 0, 0);
	add_module(&f, SY, 2, 1512, SY, 1, 1512, BL, 0, 400);
	add_module(&f, SY, 3, 1512, SY, 2, 110, 0, 0, 0);
	struct image *imgs[3] = {fixture_load("electron/electron-system-part3@2.2.0.bin"),
				 fixture_load("electron/electron-system-part2@2.2.0.bin"),
				 fixture_load("electron/electron-system-part1@2.2.0.bin")};
	const char *names[3] = {"electron-system-part3@2.2.0.bin",
				"electron-system-part2@2.2.0.bin",
				"electron-system-part1@2.2.0.bin"};
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, imgs, names, 3, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	/* the cycle 1 -> 3 -> 2 -> 1 by slot is broken by the installed versions */
	assert_int_equal(plan->order[0], 2); /* system part 3 (file part1) */
	assert_int_equal(plan->order[1], 1);
	assert_int_equal(plan->order[2], 0);
	for (size_t i = 0; i < 3; i++)
		image_free(imgs[i]);
	free(plan);
}

static void test_identical_application_is_skipped(void **state)
{
	(void)state;
	struct device_facts f;
	photon_152(&f);
	struct image *img = fixture_load("photon/tinker-0.4.5-photon.bin");
	const char *name = "tinker-0.4.5-photon.bin";
	struct installed_module *u = &f.modules[3];
	u->version = img->modules[0].version;
	u->deps[0].version = img->modules[0].deps[0].version;
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		u->sha256[2 * i] = digits[img->modules[0].sha256[i] >> 4];
		u->sha256[2 * i + 1] = digits[img->modules[0].sha256[i] & 15];
	}
	u->sha256[64] = '\0';
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 0);
	assert_int_equal(plan->n_skipped, 1);
	assert_non_null(strstr(plan->skip_reason[0], "same SHA-256"));
	/* --force writes it anyway */
	assert_int_equal(build(&f, &img, &name, 1, true, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	/* so does rewrite (auto-flash, skip_installed = no), overriding nothing */
	struct preflight_input in = {.img = img, .name = name};
	struct plan_options ro = {.rewrite = true, .mode = DEVICE_MODE_LISTENING};
	assert_int_equal(plan_build(&f, &in, 1, &ro, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->n_overrides, 0);
	/* another application of the same version is not skipped */
	u->sha256[0] = u->sha256[0] == '0' ? '1' : '0';
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	/* and without a hash an application is never taken as identical */
	u->sha256[0] = '\0';
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	image_free(img);
	free(plan);
}

/* issue 11 over DFU: a system part is identical by its suffix SHA-256 and stored CRC-32
 * read back at its end; the same version whose bytes could not be read is written, and
 * the plan says why. */
static void test_system_part_identity_is_its_sha_and_crc_never_its_version(void **state)
{
	(void)state;
	struct device_facts f;
	argon_231(&f, true);
	struct image *img = synth(0x30000, SY, 1, 2302, 12, RS, 0, 202, BL, 0, 1006, 4000);
	const char *name = "argon-system-part1.bin";
	struct installed_module *sys = &f.modules[1]; /* system part 1 (argon_231) */
	assert_int_equal(sys->function, SY);
	sys->version = 2302;
	sys->address = 0x30000;
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		sys->sha256[2 * i] = digits[img->modules[0].sha256[i] >> 4];
		sys->sha256[2 * i + 1] = digits[img->modules[0].sha256[i] & 15];
	}
	sys->sha256[64] = '\0';
	sys->bytes = INSTALLED_BYTES_READ;
	sys->crc = img->modules[0].crc_stored;
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 0);
	assert_int_equal(plan->n_skipped, 1);
	assert_non_null(strstr(plan->skip_reason[0], "same SHA-256"));
	assert_non_null(strstr(plan->skip_reason[0], "CRC-32"));
	/* the same SHA-256 with another CRC: not the same bytes */
	sys->crc ^= 1;
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->n_unverified, 0);
	/* unreadable: written, and the plan says why */
	sys->crc ^= 1;
	sys->sha256[0] = '\0';
	sys->bytes = INSTALLED_BYTES_UNREADABLE;
	assert_int_equal(build(&f, &img, &name, 1, false, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->n_skipped, 0);
	assert_int_equal(plan->n_unverified, 1);
	assert_non_null(strstr(plan->unverified[0], "reading its SHA-256 and CRC back"));
	json_t *j = plan_to_json(plan);
	assert_int_equal(json_array_size(json_object_get(j, "unverified")), 1);
	json_decref(j);
	image_free(img);
	free(plan);
}

static void test_repairing_a_broken_board_works(void **state)
{
	(void)state;
	/* Photon with 2.2.0 system parts on the 1.5.2 bootloader: part 2 fails its
	 * dependencies (the device runs safe mode).  The bootloader alone repairs it;
	 * an application alone does not make it worse: a warning, not a refusal. */
	struct device_facts f;
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("photon");
	f.system_version = 2202;
	f.modules_known = true;
	add_module(&f, BL, 0, 502, 0, 0, 0, 0, 0, 0);
	add_module(&f, SY, 1, 2202, SY, 2, 207, 0, 0, 0);
	add_module(&f, SY, 2, 2202, SY, 1, 2202, BL, 0, 1003);
	f.modules[2].passed &= (uint16_t)~MODULE_CHECK_DEPENDENCIES;
	struct image *bl = fixture_load("photon/photon-bootloader@2.2.0+lto.bin");
	struct image *app = fixture_load("photon/tinker-0.4.5-photon.bin");
	const char *bn = "photon-bootloader@2.2.0+lto.bin", *an = "tinker-0.4.5-photon.bin";
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	assert_int_equal(build(&f, &bl, &bn, 1, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(build(&f, &app, &an, 1, false, DEVICE_MODE_LISTENING, plan, &e), 0);
	assert_true(plan->n_warnings >= 1);
	bool said = false;
	for (size_t i = 0; i < plan->n_warnings; i++)
		said |= strstr(plan->warnings[i], "system part 2") != NULL;
	assert_true(said);
	image_free(bl);
	image_free(app);
	free(plan);
}

static void test_capability_table(void **state)
{
	(void)state;
	const struct platform *argon = platform_by_name("argon");
	struct image *bl = argon_bl_402();
	struct image *sys = argon_sys_402();
	assert_int_equal(plan_writers(&bl->modules[0], argon, 2302), 1u << PLAN_TRANSPORT_SERIAL);
	assert_int_equal(plan_writers(&sys->modules[0], argon, 2302),
			 (1u << PLAN_TRANSPORT_SERIAL) | (1u << PLAN_TRANSPORT_DFU));
	/* Device OS 6.x: no YMODEM, DFU does not reach the bootloader: the firmware-update
	 * control request writes it */
	assert_int_equal(plan_writers(&bl->modules[0], argon, 6200), 1u << PLAN_TRANSPORT_CTRL);
	assert_int_equal(plan_writers(&sys->modules[0], argon, 6200), 1u << PLAN_TRANSPORT_DFU);
	struct device_facts f;
	argon_231(&f, true);
	f.system_version = 6200;
	f.modules[1].version = 6200;
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	const char *name = "argon-bootloader@4.0.2.bin";
	/* without the control-request transport: nothing writes it */
	struct preflight_input in = {bl, name};
	struct plan_options o = {.force = true,
				 .mode = DEVICE_MODE_DFU,
				 .transports =
				     (1u << PLAN_TRANSPORT_SERIAL) | (1u << PLAN_TRANSPORT_DFU)};
	assert_int_equal(plan_build(&f, &in, 1, &o, plan, &e), -1);
	assert_int_equal(e.code, ERR_NOT_FLASHABLE_HERE);
	error_clear(&e);
	/* with it: DFU leave, the update by request, the reset, the verdict by request */
	assert_int_equal(build(&f, &bl, &name, 1, true, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->first_transport, PLAN_TRANSPORT_CTRL);
	assert_int_equal(plan->steps[0].kind, PLAN_STEP_SWITCH);
	assert_int_equal(plan->steps[1].kind, PLAN_STEP_WRITE);
	assert_int_equal(plan->steps[1].transport, PLAN_TRANSPORT_CTRL);
	assert_int_equal(plan->steps[2].kind, PLAN_STEP_REBOOT);
	assert_int_equal(plan->steps[3].kind, PLAN_STEP_VERIFY);
	assert_int_equal(plan->steps[3].transport, PLAN_TRANSPORT_CTRL);
	/* a running device: no switch at all */
	assert_int_equal(build(&f, &bl, &name, 1, true, DEVICE_MODE_NORMAL, plan, &e), 0);
	assert_int_equal(plan->steps[0].kind, PLAN_STEP_WRITE);
	assert_int_equal(plan->steps[0].transport, PLAN_TRANSPORT_CTRL);
	image_free(bl);
	image_free(sys);
	free(plan);
}

/* The asset module of (name, bytes), parsed. */
static struct image *asset(const char *name, const char *text)
{
	uint8_t *m;
	size_t len;
	struct error e;
	error_init(&e);
	assert_int_equal(
	    asset_module_build(name, (const uint8_t *)text, strlen(text), &m, &len, &e), 0);
	struct image *img = NULL;
	assert_int_equal(image_parse(m, len, &img, &e), 0);
	free(m);
	return img;
}

static void test_assets_go_by_request_after_the_application_unless_stored(void **state)
{
	(void)state;
	struct device_facts f;
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("p2");
	f.system_version = 5900;
	f.modules_known = true;
	add_module(&f, SY, 1, 5900, 0, 0, 0, 0, 0, 0);
	struct image *imgs[3] = {asset("logo.png", "a logo"),
				 synth(0x085f4000, US, 2, 6, 32, SY, 1, 5900, 0, 0, 0, 2000),
				 asset("sound.raw", "a sound")};
	const char *names[3] = {"assets/logo.png", "app.bin", "assets/sound.raw"};
	assert_int_equal(plan_writers(&imgs[0]->modules[0], f.platform, 5900),
			 1u << PLAN_TRANSPORT_CTRL);
	assert_int_equal(plan_writers(&imgs[0]->modules[0], f.platform, 5400), 0);
	assert_int_equal(plan_writers(&imgs[0]->modules[0], platform_by_name("photon"), 3000), 0);
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	/* the asset store unknown: every file written, the application first */
	assert_int_equal(build(&f, imgs, names, 3, false, DEVICE_MODE_DFU, plan, &e), 0);
	assert_int_equal(plan->n_writes, 3);
	assert_int_equal(plan->order[0], 1);
	size_t w = 0;
	for (size_t i = 0; i < plan->n_steps; i++)
		if (plan->steps[i].kind == PLAN_STEP_WRITE)
			assert_int_equal(plan->steps[i].transport,
					 w++ == 0 ? PLAN_TRANSPORT_DFU : PLAN_TRANSPORT_CTRL);
	char summary[256];
	plan_summary(plan, summary, sizeof(summary));
	assert_non_null(strstr(summary, "asset logo.png, asset sound.raw"));
	/* the store holds logo.png (same hash) and an older sound.raw: only sound.raw */
	struct asset_module_info a;
	assert_int_equal(asset_module_read(imgs[0]->data, imgs[0]->len, &a), 0);
	f.assets_known = true;
	f.n_assets = 2;
	snprintf(f.assets[0].name, sizeof(f.assets[0].name), "logo.png");
	memcpy(f.assets[0].sha256, a.sha256, 32);
	snprintf(f.assets[1].name, sizeof(f.assets[1].name), "sound.raw");
	assert_int_equal(build(&f, &imgs[0], &names[0], 1, false, DEVICE_MODE_NORMAL, plan, &e), 0);
	assert_int_equal(plan->n_writes, 0);
	assert_int_equal(plan->n_skipped, 1);
	assert_non_null(strstr(plan->skip_reason[0], "logo.png"));
	assert_int_equal(build(&f, &imgs[2], &names[2], 1, false, DEVICE_MODE_NORMAL, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	/* a Photon has no asset store: assets-not-flashable before any byte */
	struct device_facts ph;
	photon_152(&ph);
	assert_int_equal(build(&ph, &imgs[0], &names[0], 1, false, DEVICE_MODE_NORMAL, plan, &e),
			 -1);
	assert_int_equal(e.code, ERR_ASSETS_NOT_FLASHABLE);
	assert_string_equal(detail_str(&e, "platform"), "photon");
	error_clear(&e);
	for (int i = 0; i < 3; i++)
		image_free(imgs[i]);
	free(plan);
}

static void test_ncp_only_on_the_argon(void **state)
{
	(void)state;
	struct image *argon_ncp = synth(0, MODULE_FUNCTION_NCP, 0, 9, 12, 0, 0, 0, 0, 0, 0, 500);
	struct image *boron_ncp = synth(0, MODULE_FUNCTION_NCP, 0, 9, 13, 0, 0, 0, 0, 0, 0, 500);
	struct image *tracker_ncp = synth(0, MODULE_FUNCTION_NCP, 0, 9, 26, 0, 0, 0, 0, 0, 0, 500);
	const struct platform *argon = platform_by_name("argon");
	const struct platform *tracker = platform_by_name("tracker");
	assert_int_equal(plan_writers(&argon_ncp->modules[0], argon, 6200),
			 1u << PLAN_TRANSPORT_CTRL);
	assert_int_equal(plan_writers(&argon_ncp->modules[0], argon, 5900),
			 (1u << PLAN_TRANSPORT_SERIAL) | (1u << PLAN_TRANSPORT_CTRL));
	assert_int_equal(plan_writers(&tracker_ncp->modules[0], tracker, 5502),
			 1u << PLAN_TRANSPORT_SERIAL);
	assert_int_equal(plan_writers(&tracker_ncp->modules[0], tracker, 5600), 0);
	assert_int_equal(plan_writers(&boron_ncp->modules[0], platform_by_name("boron"), 5900), 0);
	struct plan *plan = malloc(sizeof(*plan));
	struct error e;
	error_init(&e);
	struct device_facts f;
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("boron");
	f.system_version = 6200;
	f.modules_known = true;
	const char *name = "ncp.bin";
	assert_int_equal(build(&f, &boron_ncp, &name, 1, true, DEVICE_MODE_NORMAL, plan, &e), -1);
	assert_int_equal(e.code, ERR_NCP_NOT_UPDATABLE);
	assert_string_equal(detail_str(&e, "platform"), "boron");
	error_clear(&e);
	f.platform = tracker;
	f.system_version = 5900;
	assert_int_equal(build(&f, &tracker_ncp, &name, 1, true, DEVICE_MODE_NORMAL, plan, &e), -1);
	assert_int_equal(e.code, ERR_NCP_NOT_UPDATABLE);
	assert_non_null(strstr(detail_str(&e, "reason"), "5.6.0"));
	error_clear(&e);
	f.platform = argon;
	f.system_version = 6200;
	assert_int_equal(build(&f, &argon_ncp, &name, 1, false, DEVICE_MODE_NORMAL, plan, &e), 0);
	assert_int_equal(plan->n_writes, 1);
	assert_int_equal(plan->first_transport, PLAN_TRANSPORT_CTRL);
	image_free(argon_ncp);
	image_free(boron_ncp);
	image_free(tracker_ncp);
	free(plan);
}

static void test_invalid_modules_after_reboot(void **state)
{
	(void)state;
	struct device_facts f;
	photon_152(&f);
	json_t *a = json_array();
	assert_int_equal(plan_invalid_modules(&f, a), 0);
	f.modules[3].passed &= (uint16_t)~MODULE_CHECK_DEPENDENCIES;
	assert_int_equal(plan_invalid_modules(&f, a), 1);
	json_t *m = json_array_get(a, 0);
	assert_string_equal(json_string_value(json_object_get(m, "module")), "application 1");
	assert_string_equal(
	    json_string_value(json_array_get(json_object_get(m, "failed_checks"), 0)),
	    "dependencies");
	json_decref(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_argon_system_part_without_its_bootloader_is_refused),
	    cmocka_unit_test(test_argon_bootloader_and_system_part_in_any_order),
	    cmocka_unit_test(test_unknown_radio_stack_is_a_warning_not_a_refusal),
	    cmocka_unit_test(test_photon_220_system_parts_need_their_bootloader),
	    cmocka_unit_test(test_downgrade_that_breaks_the_application_is_refused),
	    cmocka_unit_test(test_intermediate_states_order_a_downgrade),
	    cmocka_unit_test(test_electron_system_parts_carry_their_bootloader),
	    cmocka_unit_test(test_identical_application_is_skipped),
	    cmocka_unit_test(test_system_part_identity_is_its_sha_and_crc_never_its_version),
	    cmocka_unit_test(test_repairing_a_broken_board_works),
	    cmocka_unit_test(test_capability_table),
	    cmocka_unit_test(test_invalid_modules_after_reboot),
	    cmocka_unit_test(test_assets_go_by_request_after_the_application_unless_stored),
	    cmocka_unit_test(test_ncp_only_on_the_argon),
	};
	cmocka_set_message_output(CM_OUTPUT_TAP);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
