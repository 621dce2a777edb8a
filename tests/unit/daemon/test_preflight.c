/* Preflight against real fixture modules and synthetic device facts. */
#include "fixture.h"
#include "fixtures_present.h"
#include "preflight.h"

#include "platform.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define S(fn, i, v)                                                                                \
	{                                                                                          \
		fn, i, v, 0, 0, 0                                                                  \
	}
#define SD(fn, i, v, df, di, dv)                                                                   \
	{                                                                                          \
		fn, i, v, df, di, dv                                                               \
	}

static const struct fixture_module photon_152[] = {
    S("b", 0, 502),
    SD("s", 1, 1512, MODULE_FUNCTION_SYSTEM, 2, 1512),
    SD("s", 2, 1512, MODULE_FUNCTION_SYSTEM, 1, 1512),
    SD("u", 1, 2, MODULE_FUNCTION_SYSTEM, 2, 1),
};

static const struct fixture_module photon_220[] = {
    S("b", 0, 1006),
    SD("s", 1, 2202, MODULE_FUNCTION_SYSTEM, 2, 207),
    SD("s", 2, 2202, MODULE_FUNCTION_SYSTEM, 1, 2202),
};

static const struct fixture_module electron_152[] = {
    S("b", 0, 502),
    SD("s", 1, 1512, MODULE_FUNCTION_SYSTEM, 3, 1512),
    SD("s", 2, 1512, MODULE_FUNCTION_SYSTEM, 1, 1512),
    SD("s", 3, 1512, MODULE_FUNCTION_SYSTEM, 2, 110),
};

static const struct fixture_module gen3_220[] = {
    S("b", 0, 1006),
    SD("s", 1, 2202, MODULE_FUNCTION_BOOTLOADER, 0, 1005),
    S("a", 0, 202),
};

static const struct fixture_module gen3_401[] = {
    S("b", 0, 1101),
    SD("s", 1, 4003, MODULE_FUNCTION_BOOTLOADER, 0, 1101),
    S("a", 0, 202),
};

static int run(const struct device_facts *dev, struct image **imgs, const char **names, size_t n,
	       bool force, struct preflight_plan *plan, struct error *err)
{
	struct preflight_input in[PREFLIGHT_MAX_IMAGES];
	for (size_t i = 0; i < n; i++) {
		in[i].img = imgs[i];
		in[i].name = names[i];
	}
	struct preflight_rules rules;
	preflight_rules_serial(dev, &rules);
	return preflight_check(dev, "/dev/ttyACM0", in, n, &rules, force, plan, err);
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

static void test_electron_app_on_photon_is_refused_as_wrong_platform(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = fixture_load("electron/electron_tinker.bin");
	const char *name = "electron_tinker.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_WRONG_PLATFORM);
	assert_string_equal(detail_str(&e, "image_platform"), "electron");
	assert_string_equal(detail_str(&e, "device_platform"), "photon");
	assert_int_equal(detail_int(&e, "image_platform_id"), 10);
	assert_int_equal(detail_int(&e, "device_platform_id"), 6);
	assert_non_null(strstr(e.hint, "this file was built for Electron; the device on "
				       "/dev/ttyACM0 is a Photon: rebuild it for photon"));
	assert_int_equal(plan.n_steps, 0);
	error_clear(&e);

	/* --force skips the platform check; the slot follows the image's own
	 * platform, so the device gets to judge it (it validates before applying). */
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), 0);
	assert_int_equal(plan.n_steps, 1);

	char diag[256];
	enum error_code cause;
	assert_true(preflight_diagnose(&dev, img, diag, sizeof(diag), &cause));
	assert_int_equal(cause, ERR_WRONG_PLATFORM);
	assert_string_equal(diag, "the file was built for Electron; the device is a Photon");
	image_free(img);
}

static void test_matching_photon_app_passes(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = fixture_load("photon/photon_tinker.bin");
	const char *name = "photon_tinker.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), 0);
	assert_int_equal(plan.n_steps, 1);
	assert_ptr_equal(plan.steps[0].img, img);
	char diag[64];
	assert_false(preflight_diagnose(&dev, img, diag, sizeof(diag), NULL));
	image_free(img);
}

/* photon_tinker made to need system part 2 >= 2202 (Device OS 2.2.0). */
static struct image *app_needing_220(void)
{
	struct image *img = fixture_load("photon/photon_tinker.bin");
	img->modules[0].deps[0].version = 2202;
	return img;
}

static void test_app_needing_newer_device_os_is_refused_naming_both_versions(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = app_needing_220();
	const char *name = "app.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_int_equal(detail_int(&e, "required_version"), 2202);
	assert_string_equal(detail_str(&e, "required_release"), "2.2.0");
	assert_int_equal(detail_int(&e, "installed_version"), 1512);
	assert_string_equal(detail_str(&e, "installed_release"), "1.5.2");
	assert_string_equal(detail_str(&e, "required_function"), "system");
	assert_int_equal(detail_int(&e, "required_index"), 2);
	assert_non_null(strstr(e.message, "2.2.0"));
	assert_non_null(strstr(e.message, "1.5.2"));
	assert_non_null(strstr(e.hint, "first"));
	error_clear(&e);
	/* --force sends it anyway (the device judges) */
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), 0);
	image_free(img);
}

static void test_job_carrying_system_parts_is_ordered_by_prefix_and_passes(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	/* submitted app first, then part 2, the bootloader, part 1 */
	struct image *imgs[4] = {
	    app_needing_220(),
	    fixture_load("photon/photon-system-part2@2.2.0.bin"),
	    fixture_load("photon/photon-bootloader@2.2.0+lto.bin"),
	    fixture_load("photon/photon-system-part1@2.2.0.bin"),
	};
	const char *names[4] = {"app.bin", "b.bin", "c.bin", "d.bin"};
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, imgs, names, 4, false, &plan, &e), 0);
	assert_int_equal(plan.n_steps, 4);
	assert_int_equal(plan.steps[0].job_index, 2); /* bootloader */
	assert_int_equal(plan.steps[1].job_index, 3); /* system part 1 */
	assert_int_equal(plan.steps[2].job_index, 1); /* system part 2 needs part 1 2202 */
	assert_int_equal(plan.steps[3].job_index, 0); /* the application */
	for (int i = 0; i < 4; i++)
		image_free(imgs[i]);
}

static void test_electron_system_modules_follow_prefixes_not_file_names(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "electron", "1.5.2", electron_152, 4);
	/* system-part1.bin holds module 3, part2 module 1, part3 module 2
	 * (docs/device/memory-maps.md#gen-2) */
	struct image *imgs[3] = {
	    fixture_load("electron/electron-system-part3@2.2.0.bin"),
	    fixture_load("electron/electron-system-part2@2.2.0.bin"),
	    fixture_load("electron/electron-system-part1@2.2.0.bin"),
	};
	const char *names[3] = {"system-part3.bin", "system-part2.bin", "system-part1.bin"};
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, imgs, names, 3, false, &plan, &e), 0);
	assert_int_equal(plan.n_steps, 3);
	/* module 3 needs module 2 >= 110 (installed); module 1 needs module 3 >= 2202;
	 * module 2 needs module 1 >= 2202 */
	assert_int_equal(plan.steps[0].module->index, 3);
	assert_int_equal(plan.steps[1].module->index, 1);
	assert_int_equal(plan.steps[2].module->index, 2);
	for (int i = 0; i < 3; i++)
		image_free(imgs[i]);
}

static void test_system_part_downgrade_under_a_newer_sibling_is_refused(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "2.2.0", photon_220, 3);
	struct image *img = fixture_load("photon/photon-system-part1@1.5.0.bin");
	const char *name = "system-part1@1.5.0.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_int_equal(detail_int(&e, "required_version"), 2202);
	assert_int_equal(detail_int(&e, "installed_version"), 1502);
	error_clear(&e);
	image_free(img);
}

static void test_corrupt_module_is_refused_even_with_force(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "boron", "2.2.0", gen3_220, 3);
	struct image *img = fixture_load("not-modules/boron-tinker-corrupt.bin");
	const char *name = "boron-tinker-corrupt.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), -1);
	assert_int_equal(e.code, ERR_IMAGE_CORRUPT);
	assert_non_null(detail_str(&e, "stored_crc"));
	assert_string_not_equal(detail_str(&e, "stored_crc"), detail_str(&e, "computed_crc"));
	error_clear(&e);
	image_free(img);
}

static void test_module_past_its_slot_is_too_large(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = fixture_load("photon/photon_tinker.bin");
	img->modules[0].end = 0x080c0100; /* 256 bytes past the 128 KiB user slot */
	const char *name = "big.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), -1);
	assert_int_equal(e.code, ERR_IMAGE_TOO_LARGE);
	assert_int_equal(detail_int(&e, "slot_end"), 0x080c0000);
	error_clear(&e);
	image_free(img);
}

static void test_256k_user_part_on_pre_3_1_layout_is_wrong_slot(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "argon", "2.2.0", gen3_220, 3);
	/* an Argon application built for Device OS >= 3.1 (user part 2 at 0xB4000) */
	struct image *img = fixture_load("argon/tinker-0.8.0-rc.27-argon.bin");
	img->modules[0].index = 2;
	img->modules[0].start = 0xb4000;
	img->modules[0].end = 0xb6ec0;
	img->modules[0].deps[0].version = 3103;
	const char *name = "tinker-3.1.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), -1);
	assert_int_equal(e.code, ERR_WRONG_SLOT);
	assert_int_equal(detail_int(&e, "module_index"), 2);
	assert_string_equal(detail_str(&e, "device_os"), "2.2.0");
	error_clear(&e);
	image_free(img);
}

static void test_boron_app_on_argon_passes_only_with_force(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "argon", "4.0.0", gen3_401, 3);
	struct image *img = fixture_load("boron/tinker-0.8.0-rc.27-boron.bin");
	const char *name = "tinker-boron.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_WRONG_PLATFORM);
	assert_non_null(strstr(e.hint, "built for Boron"));
	assert_non_null(strstr(e.hint, "is an Argon"));
	error_clear(&e);
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), 0);
	image_free(img);
}

static void test_serial_rules_follow_device_os(void **state)
{
	(void)state;
	struct device_facts dev;
	struct preflight_rules r;
	fixture_facts(&dev, "boron", "2.2.0", gen3_220, 3);
	preflight_rules_serial(&dev, &r);
	assert_true(r.functions & (1u << MODULE_FUNCTION_BOOTLOADER));
	assert_false(r.functions & (1u << MODULE_FUNCTION_NCP)); /* no updatable NCP */
	assert_true(r.compressed && r.combined);		 /* bootloader 1006 >= 1000 */
	assert_int_equal(r.max_file_size, 1500 * 1024);

	fixture_facts(&dev, "argon", "1.5.2", NULL, 0);
	dev.modules_known = false;
	preflight_rules_serial(&dev, &r);
	assert_true(r.functions & (1u << MODULE_FUNCTION_NCP));
	assert_false(r.compressed); /* bootloaders before 2.0.0 cannot inflate */

	fixture_facts(&dev, "photon", "2.2.0", photon_220, 3);
	preflight_rules_serial(&dev, &r);
	assert_false(r.compressed); /* Gen 2 never */

	fixture_facts(&dev, "argon", "6.2.0", NULL, 0);
	preflight_rules_serial(&dev, &r);
	assert_int_equal(r.functions, 0);
	struct image *img = fixture_load("argon/tinker-0.8.0-rc.27-argon.bin");
	const char *name = "tinker.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, true, &plan, &e), -1);
	assert_int_equal(e.code, ERR_NOT_FLASHABLE_HERE);
	assert_string_equal(detail_str(&e, "transport"), "serial");
	error_clear(&e);
	image_free(img);
}

/* The YMODEM and NCP answers come from proto/capability's table: the Core never,
 * 6.x no longer, an unknown platform or version is tried, the NCP only where known. */
static void test_serial_rules_ask_the_capability_table(void **state)
{
	(void)state;
	struct device_facts dev;
	struct preflight_rules r;
	fixture_facts(&dev, "core", "1.5.2", NULL, 0);
	assert_non_null(dev.platform);
	preflight_rules_serial(&dev, &r);
	assert_int_equal(r.functions, 0);
	assert_non_null(strstr(r.why_not, "Core"));

	fixture_facts(&dev, "photon", "6.2.0", NULL, 0);
	dev.system_version = 0; /* the release string alone decides */
	preflight_rules_serial(&dev, &r);
	assert_int_equal(r.functions, 0);
	assert_non_null(strstr(r.why_not, "6.0.0"));

	fixture_facts(&dev, "argon", "", NULL, 0); /* version unknown: tried */
	preflight_rules_serial(&dev, &r);
	assert_true(r.functions & (1u << MODULE_FUNCTION_USER));
	assert_true(r.functions & (1u << MODULE_FUNCTION_NCP));

	fixture_facts(&dev, "tracker", "5.5.0", NULL, 0);
	preflight_rules_serial(&dev, &r);
	assert_true(r.functions & (1u << MODULE_FUNCTION_NCP));
	/* 5.6.0 disabled host updates of the Tracker's NCP (HAL_PLATFORM_NCP_UPDATES_DISABLED) */
	fixture_facts(&dev, "tracker", "5.9.0", NULL, 0);
	preflight_rules_serial(&dev, &r);
	assert_false(r.functions & (1u << MODULE_FUNCTION_NCP));

	fixture_facts(&dev, "argon", "5.9.0", NULL, 0);
	dev.platform = NULL; /* platform unknown: tried, but no NCP */
	preflight_rules_serial(&dev, &r);
	assert_true(r.functions & (1u << MODULE_FUNCTION_USER));
	assert_false(r.functions & (1u << MODULE_FUNCTION_NCP));
}

static void test_compressed_module_refused_where_bootloader_cannot_inflate(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = fixture_load("photon/photon_tinker.bin");
	img->modules[0].flags |= IMAGE_FLAG_COMPRESSED;
	const char *name = "tinker.compressed.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_NOT_FLASHABLE_HERE);
	error_clear(&e);
	image_free(img);
}

static void test_unknown_installed_modules_skip_dependency_check(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", NULL, 0);
	dev.modules_known = false;
	struct image *img = app_needing_220();
	const char *name = "app.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), 0);
	image_free(img);
}

/* Every fixture this file reads. */
static const char *const fixtures_read[] = {
    "argon/tinker-0.8.0-rc.27-argon.bin",
    "boron/tinker-0.8.0-rc.27-boron.bin",
    "electron/electron-system-part1@2.2.0.bin",
    "electron/electron-system-part2@2.2.0.bin",
    "electron/electron-system-part3@2.2.0.bin",
    "electron/electron_tinker.bin",
    "not-modules/boron-tinker-corrupt.bin",
    "photon/photon-bootloader@2.2.0+lto.bin",
    "photon/photon-system-part1@1.5.0.bin",
    "photon/photon-system-part1@2.2.0.bin",
    "photon/photon-system-part2@2.2.0.bin",
    "photon/photon_tinker.bin",
    NULL,
};

/* A bootloader version no Photon release has: the message names no release of another
 * platform ("Device OS 4.2.0" is not a Photon release) and no "bootloader 0"; the
 * installed bootloader's releases are the Photon's. */
static void test_release_words_are_the_platforms_own(void **state)
{
	(void)state;
	struct device_facts dev;
	fixture_facts(&dev, "photon", "1.5.2", photon_152, 4);
	struct image *img = fixture_load("photon/photon_tinker.bin");
	img->modules[0].deps[0] = (struct image_dependency){
	    .function = MODULE_FUNCTION_BOOTLOADER, .index = 0, .version = 2000};
	const char *name = "app.bin";
	struct preflight_plan plan;
	struct error e;
	error_init(&e);
	assert_int_equal(run(&dev, &img, &name, 1, false, &plan, &e), -1);
	assert_int_equal(e.code, ERR_DEPENDENCY_UNMET);
	assert_string_equal(detail_str(&e, "required_release"), "");
	assert_null(strstr(e.message, "Device OS 4"));
	assert_null(strstr(e.message, "Device OS 5"));
	assert_null(strstr(e.message, "between"));
	assert_null(strstr(e.message, "bootloader 0"));
	assert_non_null(strstr(e.message, "needs bootloader version 2000;"));
	/* 502 shipped with the Photon's 1.5.x releases, none other */
	const char *inst = detail_str(&e, "installed_release");
	assert_non_null(inst);
	assert_true(inst && (inst[0] == '\0' || strncmp(inst, "1.5.", 4) == 0));
	error_clear(&e);
	image_free(img);
}

int main(void)
{
	fixtures_present_or_skip(fixtures_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_electron_app_on_photon_is_refused_as_wrong_platform),
	    cmocka_unit_test(test_matching_photon_app_passes),
	    cmocka_unit_test(test_app_needing_newer_device_os_is_refused_naming_both_versions),
	    cmocka_unit_test(test_release_words_are_the_platforms_own),
	    cmocka_unit_test(test_job_carrying_system_parts_is_ordered_by_prefix_and_passes),
	    cmocka_unit_test(test_electron_system_modules_follow_prefixes_not_file_names),
	    cmocka_unit_test(test_system_part_downgrade_under_a_newer_sibling_is_refused),
	    cmocka_unit_test(test_corrupt_module_is_refused_even_with_force),
	    cmocka_unit_test(test_module_past_its_slot_is_too_large),
	    cmocka_unit_test(test_256k_user_part_on_pre_3_1_layout_is_wrong_slot),
	    cmocka_unit_test(test_boron_app_on_argon_passes_only_with_force),
	    cmocka_unit_test(test_serial_rules_follow_device_os),
	    cmocka_unit_test(test_serial_rules_ask_the_capability_table),
	    cmocka_unit_test(test_compressed_module_refused_where_bootloader_cannot_inflate),
	    cmocka_unit_test(test_unknown_installed_modules_skip_dependency_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
