/*
 * The three tables of proto/: the error catalogue (errors.def), the platform
 * catalogue (platform.c, docs/device/platforms.md, docs/device/memory-maps.md) and the module
 * version table (osver.c, docs/device/releases.md#module-version-numbers).
 */
#include "errors.h"
#include "osver.h"
#include "platform.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* ---- errors ---- */

static bool is_kebab(const char *s)
{
	if (!*s || *s == '-' || s[strlen(s) - 1] == '-')
		return false;
	for (const char *p = s; *p; p++) {
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-'))
			return false;
		if (p[0] == '-' && p[1] == '-')
			return false;
	}
	return true;
}

static void test_every_error_id_is_kebab_case_and_unique(void **state)
{
	(void)state;
	const struct error_info *t;
	size_t n = error_catalogue(&t);
	assert_true(n >= 25);
	for (size_t i = 0; i < n; i++) {
		if (!is_kebab(t[i].id))
			fail_msg("error id '%s' is not kebab-case", t[i].id);
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(t[i].id, t[j].id) == 0)
				fail_msg("error id '%s' appears twice", t[i].id);
		assert_int_equal(t[i].code, (enum error_code)(i + 1));
		assert_ptr_equal(error_info(t[i].code), &t[i]);
		assert_ptr_equal(error_info_by_id(t[i].id), &t[i]);
		assert_true(t[i].exit_status >= 1 && t[i].exit_status <= 10);
		assert_true(strlen(t[i].message) > 0 && strlen(t[i].hint) > 0);
	}
}

static void test_issue_two_ids_exist_with_their_exit_statuses(void **state)
{
	(void)state;
	static const struct {
		const char *id;
		int exit_status;
	} required[] = {
	    {"usage", 2},
	    {"image-not-a-module", 3},
	    {"image-corrupt", 3},
	    {"image-truncated", 3},
	    {"image-unsupported", 3},
	    {"wrong-platform", 4},
	    {"wrong-slot", 4},
	    {"image-too-large", 4},
	    {"dependency-unmet", 4},
	    {"not-flashable-here", 4},
	    {"device-not-found", 5},
	    {"ambiguous-target", 5},
	    {"device-gone", 6},
	    {"device-busy", 6},
	    {"permission-denied", 6},
	    {"device-protected", 4},
	    {"device-rejected", 7},
	    {"timed-out", 8},
	    {"transfer-failed", 8},
	    {"cancelled", 9},
	    {"interrupted", 9},
	    {"too-many-clients", 10},
	    {"bad-request", 2},
	    {"daemon-unreachable", 10},
	    {"internal", 1},
	};
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		const struct error_info *info = error_info_by_id(required[i].id);
		if (!info)
			fail_msg("error id '%s' is missing", required[i].id);
		assert_int_equal(info->exit_status, required[i].exit_status);
	}
	assert_null(error_info_by_id("no-such-error"));
	assert_null(error_info_by_id(NULL));
	assert_null(error_info(ERR_NONE));
	assert_null(error_info(ERR__COUNT));
	assert_string_equal(error_id(ERR_NONE), "none");
	assert_int_equal(error_exit_status(ERR_NONE), 0);
}

static void test_detail_types_come_from_the_catalogue(void **state)
{
	(void)state;
	assert_int_equal(error_detail_type(ERR_IMAGE_TRUNCATED, "expected_size"), 'i');
	assert_int_equal(error_detail_type(ERR_IMAGE_CORRUPT, "stored_crc"), 's');
	assert_int_equal(error_detail_type(ERR_AMBIGUOUS_TARGET, "candidates"), 'a');
	assert_int_equal(error_detail_type(ERR_DEVICE_REJECTED, "cause"), 's');
	assert_int_equal(error_detail_type(ERR_DEVICE_REJECTED, "device_code"), 'i');
	/* common keys, for every code */
	assert_int_equal(error_detail_type(ERR_USAGE, "file"), 's');
	assert_int_equal(error_detail_type(ERR_TIMED_OUT, "device"), 's');
	/* undeclared, and a prefix of a declared key */
	assert_int_equal(error_detail_type(ERR_USAGE, "stored_crc"), 0);
	assert_int_equal(error_detail_type(ERR_IMAGE_TRUNCATED, "expected"), 0);
	assert_int_equal(error_detail_type(ERR_IMAGE_TRUNCATED, "size"), 'i');
}

static void test_every_declared_detail_key_has_a_known_type(void **state)
{
	(void)state;
	const struct error_info *t;
	size_t n = error_catalogue(&t);
	for (size_t i = 0; i < n; i++) {
		char buf[512];
		snprintf(buf, sizeof(buf), "%s", t[i].details);
		for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
		     tok = strtok_r(NULL, ",", &save)) {
			char *colon = strchr(tok, ':');
			if (!colon || !strchr("sibao", colon[1]) || colon[2])
				fail_msg("%s: malformed detail key '%s'", t[i].id, tok);
			*colon = '\0';
			assert_int_equal(error_detail_type(t[i].code, tok), colon[1]);
		}
	}
}

static void test_error_prefix_keeps_the_cause(void **state)
{
	(void)state;
	struct error e;
	error_init(&e);
	assert_int_equal(error_set(&e, ERR_IMAGE_CORRUPT, "CRC mismatch"), -1);
	error_prefix(&e, "flashing system part %d: ", 2);
	assert_string_equal(e.message, "flashing system part 2: CRC mismatch");
	assert_string_equal(e.hint, error_info(ERR_IMAGE_CORRUPT)->hint);

	/* A prefix too long for the buffer is cut; the cause stays whole. */
	char longp[ERROR_MESSAGE_MAX * 2];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	error_prefix(&e, "%s", longp);
	assert_int_equal(strlen(e.message), ERROR_MESSAGE_MAX - 1);
	const char *tail = "flashing system part 2: CRC mismatch";
	assert_string_equal(e.message + strlen(e.message) - strlen(tail), tail);
	error_clear(&e);
	error_clear(NULL);
}

static void test_default_message_and_hint_override(void **state)
{
	(void)state;
	struct error e;
	error_init(&e);
	assert_false(error_is_set(&e));
	error_set(&e, ERR_DEVICE_BUSY, NULL);
	assert_true(error_is_set(&e));
	assert_string_equal(e.message, error_info(ERR_DEVICE_BUSY)->message);
	error_hint(&e, "close %s", "minicom");
	assert_string_equal(e.hint, "close minicom");
	struct error moved;
	error_init(&moved);
	error_move(&moved, &e);
	assert_false(error_is_set(&e));
	assert_int_equal(moved.code, ERR_DEVICE_BUSY);
	error_clear(&moved);
}

static void test_error_json_round_trip_keeps_everything(void **state)
{
	(void)state;
	struct error e, back;
	error_init(&e);
	error_init(&back);
	error_set(&e, ERR_DEVICE_REJECTED, "the device said no");
	error_detail_str(&e, "cause", "image-corrupt");
	error_detail_int(&e, "device_code", -1330);
	error_detail_str(&e, "file", "tinker.bin");
	error_detail_json(&e, "device_text", json_string("Validation failed"));
	json_t *j = error_to_json(&e);
	assert_string_equal(json_string_value(json_object_get(j, "code")), "device-rejected");
	assert_int_equal(error_from_json(&back, j), 0);
	assert_int_equal(back.code, ERR_DEVICE_REJECTED);
	assert_string_equal(back.message, e.message);
	assert_string_equal(back.hint, e.hint);
	assert_true(json_equal(back.detail, e.detail));
	json_decref(j);

	/* Through text as well, as it travels on the socket. */
	j = error_to_json(&e);
	char *text = json_dumps(j, JSON_COMPACT);
	json_t *parsed = json_loads(text, 0, NULL);
	error_clear(&back);
	assert_int_equal(error_from_json(&back, parsed), 0);
	assert_true(json_equal(back.detail, e.detail));
	free(text);
	json_decref(parsed);
	json_decref(j);
	error_clear(&back);
	error_clear(&e);
}

/* Found by fuzz_console: a message or detail quoting bytes that are not UTF-8
 * (a device's words, truncation inside a sequence) made error_to_json() NULL. */
static void test_error_json_survives_text_that_is_not_utf8(void **state)
{
	(void)state;
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TRANSFER_FAILED, "the device said \"\xff\xfe\xc3\"");
	error_detail_str(&e, "reason", "caf\xc3\xa9 \xe2\x82");
	json_t *j = error_to_json(&e);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "message")),
			    "the device said \"???\"");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(j, "detail"), "reason")), "caf?? ??");
	json_decref(j);
	error_clear(&e);
}

static void test_unknown_error_id_from_json_becomes_internal_with_the_id(void **state)
{
	(void)state;
	struct error e;
	error_init(&e);
	json_t *j = json_pack("{s:s, s:s}", "code", "flux-capacitor", "message", "boom");
	assert_int_equal(error_from_json(&e, j), 0);
	assert_int_equal(e.code, ERR_INTERNAL);
	assert_string_equal(e.message, "boom");
	assert_non_null(
	    strstr(json_string_value(json_object_get(e.detail, "reason")), "flux-capacitor"));
	json_decref(j);
	error_clear(&e);

	j = json_pack("{s:i}", "code", 3);
	assert_int_equal(error_from_json(&e, j), -1);
	assert_int_equal(e.code, ERR_BAD_REQUEST);
	json_decref(j);
	error_clear(&e);
}

/* ---- platforms ---- */

static void test_platform_lookup_by_id_name_alias_and_usb(void **state)
{
	(void)state;
	assert_string_equal(platform_by_id(6)->name, "photon");
	assert_null(platform_by_id(7));
	assert_int_equal(platform_by_name("Photon")->id, 6);
	assert_int_equal(platform_by_name("photon2")->id, 32);
	assert_int_equal(platform_by_name("B-SoM")->id, 23);
	assert_int_equal(platform_by_name("13")->id, 13);
	assert_null(platform_by_name(""));
	assert_null(platform_by_name(NULL));
	assert_null(platform_by_name("toaster"));

	enum platform_usb_mode mode;
	assert_int_equal(platform_by_usb(0x2b04, 0xd00d, &mode)->id, 13);
	assert_int_equal(mode, PLATFORM_USB_DFU);
	assert_int_equal(platform_by_usb(0x2b04, 0xc020, &mode)->id, 32);
	assert_int_equal(mode, PLATFORM_USB_CDC);
	assert_int_equal(platform_by_usb(0x1d50, 0x607f, &mode)->id, 0);
	assert_null(platform_by_usb(0x2b04, 0xc0ff, &mode));
	assert_int_equal(mode, PLATFORM_USB_NONE);
}

static void test_particle_pids_follow_the_platform_id(void **state)
{
	(void)state;
	/* docs/device/platforms.md#platform-table: CDC 0xC0xx, DFU 0xD0xx with xx the platform id,
	 * for every 0x2B04 platform. */
	for (size_t i = 0; i < platform_count(); i++) {
		const struct platform *p = platform_at(i);
		if (p->vid != 0x2b04)
			continue;
		assert_int_equal(p->cdc_pid, 0xc000 | p->id);
		assert_int_equal(p->dfu_pid, 0xd000 | p->id);
		assert_ptr_equal(platform_by_id(p->id), p);
	}
	assert_null(platform_at(platform_count()));
}

static void test_gen3_layout_depends_on_the_installed_system_version(void **state)
{
	(void)state;
	const struct platform *boron = platform_by_id(13);
	/* docs/device/memory-maps.md#gen-3: system part 1 starts at 0x30000 before 6.2.0, at
	 * 0x28000 after. */
	assert_int_equal(platform_find_slot(boron, 3005, 4, 1, MODULE_STORE_MAIN)->end, 0xd4000);
	assert_int_equal(platform_find_slot(boron, 4003, 4, 1, MODULE_STORE_MAIN)->end, 0xb4000);
	assert_int_equal(platform_find_slot(boron, 6200, 4, 1, MODULE_STORE_MAIN)->start, 0x28000);
	/* The 256 KiB user part exists only from 3.1.0 on. */
	assert_null(platform_find_slot(boron, 3005, 5, 2, MODULE_STORE_MAIN));
	assert_int_equal(platform_find_slot(boron, 3103, 5, 2, MODULE_STORE_MAIN)->start, 0xb4000);
	/* Unknown installed version: the newest layout. */
	assert_int_equal(platform_find_slot(boron, 0, 4, 1, MODULE_STORE_MAIN)->start, 0x28000);
	assert_string_equal(platform_layout_name(boron, 3005), "Device OS 3.0 and earlier layout");

	/* Electron has three system modules, Photon two (docs/device/memory-maps.md#gen-2). */
	assert_non_null(platform_find_slot(platform_by_id(10), 0, 4, 3, MODULE_STORE_MAIN));
	assert_null(platform_find_slot(platform_by_id(6), 0, 4, 3, MODULE_STORE_MAIN));
	assert_int_equal(
	    platform_find_slot(platform_by_id(6), 0, 5, 1, MODULE_STORE_FACTORY)->start,
	    0x080e0000);
	const struct slot *s;
	assert_int_equal(platform_slots(NULL, 0, &s), 0);
}

static void test_module_function_names_and_letters_round_trip(void **state)
{
	(void)state;
	assert_string_equal(module_function_name(MODULE_FUNCTION_RADIO_STACK), "radio-stack");
	assert_string_equal(module_function_phrase(MODULE_FUNCTION_USER), "application");
	assert_string_equal(module_function_name(99), "unknown");
	assert_string_equal(module_function_name(-1), "unknown");
	for (int f = MODULE_FUNCTION_NONE; f <= MODULE_FUNCTION_ASSET; f++) {
		char c = module_function_letter(f);
		if (c != '_')
			assert_int_equal(module_function_from_letter(c), f);
	}
	assert_int_equal(module_function_from_letter('s'), MODULE_FUNCTION_SYSTEM);
	assert_int_equal(module_function_from_letter('_'), -1);
	assert_string_equal(module_store_name(MODULE_STORE_FACTORY), "factory");
	assert_string_equal(module_store_name(9), "unknown");
}

/* docs/device/validation.md: vc 0x1e, vv 0x0e = the platform check failed; 1.5.x prints 0x18. */
static void test_failed_checks_are_named_in_bit_order(void **state)
{
	(void)state;
	const char *names[MODULE_CHECKS_MAX];
	assert_int_equal(module_checks_failed(0x1e, 0x1e, names), 0);
	assert_int_equal(module_checks_failed(0x1e, 0x0e, names), 1);
	assert_string_equal(names[0], "platform");
	assert_int_equal(module_checks_failed(0x7f, 0x00, names), 7);
	assert_string_equal(names[0], "unknown"); /* 0x01 is no check */
	assert_string_equal(names[6], "dependencies-full");
	/* what was checked, passed or not (registry "checked") */
	assert_int_equal(module_checks_named(0x12, names), 2);
	assert_string_equal(names[0], "integrity");
	assert_string_equal(names[1], "platform");
	assert_int_equal(module_checks_named(0, names), 0);
	char buf[96];
	module_checks_text(0x18, buf, sizeof(buf));
	assert_string_equal(buf, "range, platform");
	module_checks_text(0x01, buf, sizeof(buf));
	assert_string_equal(buf, "unknown");
	assert_string_equal(module_check_name(MODULE_CHECK_PRODUCT), "product");
}

/* ---- Device OS versions ---- */

static void test_release_is_named_only_where_the_table_pins_it(void **state)
{
	(void)state;
	assert_string_equal(osver_release_for(MODULE_FUNCTION_SYSTEM, 2202), "2.2.0");
	assert_string_equal(osver_release_for(MODULE_FUNCTION_SYSTEM, 6200), "6.2.0");
	assert_null(osver_release_for(MODULE_FUNCTION_SYSTEM, 2203));
	/* Bootloader 1006 shipped with 2.2.0 and 2.3.1: no single release. */
	assert_null(osver_release_for(MODULE_FUNCTION_BOOTLOADER, 1006));
	assert_string_equal(osver_release_for(MODULE_FUNCTION_BOOTLOADER, 3100), "6.2.0");
	/* User part versions are app ABI numbers, unrelated to releases
	 * (docs/device/releases.md#module-version-numbers). */
	assert_null(osver_release_for(MODULE_FUNCTION_USER, 6));
	assert_int_equal(osver_by_release("5.9.0")->system, 5901);
	assert_null(osver_by_release("9.9.9"));
	assert_int_equal(osver_by_system_version(1512)->bootloader, 502);
}

static void test_release_strings_parse_and_compare_numerically(void **state)
{
	(void)state;
	int a, b, c;
	assert_int_equal(osver_parse("0.8.0-rc.27", &a, &b, &c), 0);
	assert_int_equal(a * 10000 + b * 100 + c, 800);
	assert_int_equal(osver_parse("1.2", &a, &b, &c), -1);
	assert_int_equal(osver_parse("1.2.3x", &a, &b, &c), -1);
	assert_int_equal(osver_parse(NULL, &a, &b, &c), -1);
	assert_true(osver_compare("1.10.0", "1.9.0") > 0);
	assert_true(osver_compare("2.2.0", "2.2.0") == 0);
	assert_true(osver_compare("5.3.1", "6.0.0") < 0);
	/* The table is ordered (its system versions: test_osver.c). */
	for (unsigned i = 1; i < osver_count(); i++)
		assert_true(osver_compare(osver_at(i - 1)->version, osver_at(i)->version) < 0);
	assert_null(osver_at(osver_count()));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_error_id_is_kebab_case_and_unique),
	    cmocka_unit_test(test_issue_two_ids_exist_with_their_exit_statuses),
	    cmocka_unit_test(test_detail_types_come_from_the_catalogue),
	    cmocka_unit_test(test_every_declared_detail_key_has_a_known_type),
	    cmocka_unit_test(test_error_prefix_keeps_the_cause),
	    cmocka_unit_test(test_default_message_and_hint_override),
	    cmocka_unit_test(test_error_json_round_trip_keeps_everything),
	    cmocka_unit_test(test_error_json_survives_text_that_is_not_utf8),
	    cmocka_unit_test(test_unknown_error_id_from_json_becomes_internal_with_the_id),
	    cmocka_unit_test(test_platform_lookup_by_id_name_alias_and_usb),
	    cmocka_unit_test(test_particle_pids_follow_the_platform_id),
	    cmocka_unit_test(test_gen3_layout_depends_on_the_installed_system_version),
	    cmocka_unit_test(test_module_function_names_and_letters_round_trip),
	    cmocka_unit_test(test_failed_checks_are_named_in_bit_order),
	    cmocka_unit_test(test_release_is_named_only_where_the_table_pins_it),
	    cmocka_unit_test(test_release_strings_parse_and_compare_numerically),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
