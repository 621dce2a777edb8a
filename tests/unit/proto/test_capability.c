/*
 * proto/capability: what a device can do by platform and Device OS version,
 * answered from one table (YMODEM, listening console, reset after a failed
 * transfer, compat page erase, control requests, NCP updates).
 */
#include "capability.h"
#include "platform.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static const struct platform *P(const char *name)
{
	const struct platform *p = platform_by_name(name);
	assert_non_null(p);
	return p;
}

static void test_device_os_6_removed_ymodem_and_the_listening_console(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("argon"), 5901), CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("argon"), 5999), CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("argon"), 6000), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("p2"), 6200), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_LISTENING_CONSOLE, P("photon"), 1512),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_LISTENING_CONSOLE, P("bsom"), 6000),
			 CAPABILITY_NO);
}

static void test_the_core_has_a_console_but_no_ymodem_nor_control_requests(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("core"), 1000), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, P("core"), 0), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_LISTENING_CONSOLE, P("core"), 1000),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("core"), 1000),
			 CAPABILITY_NO);
}

static void test_reset_after_a_failed_transfer_is_gen3_and_p2_on_3_0_to_5_x(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("boron"), 2202),
			 CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("boron"), 3005),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("p2"), 5500),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("p2"), 6000),
			 CAPABILITY_NO);
	/* Gen 2 never needs it, whatever the version. */
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("electron"), 3005),
			 CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, P("electron"), 0),
			 CAPABILITY_NO);
}

static void test_compat_page_erase_is_the_gen3_layout_from_3_1(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_COMPAT_PAGE_ERASE, P("argon"), 3005),
			 CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_COMPAT_PAGE_ERASE, P("argon"), 3100),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_COMPAT_PAGE_ERASE, P("argon"), 6200),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_COMPAT_PAGE_ERASE, P("p2"), 6200), CAPABILITY_NO);
}

static void test_control_requests_from_0_8_on_gen2_and_always_on_gen3(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("photon"), 207),
			 CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("photon"), 300),
			 CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("photon"), 0),
			 CAPABILITY_UNKNOWN);
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("xenon"), 0), CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_CONTROL_REQUESTS, P("msom"), 6200),
			 CAPABILITY_YES);
}

static void test_only_the_argon_and_the_tracker_have_an_updatable_ncp(void **state)
{
	(void)state;
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("argon"), 0), CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("argon"), 6200), CAPABILITY_YES);
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("tracker"), 5502),
			 CAPABILITY_YES);
	/* 5.6.0 disabled the Tracker's (HAL_PLATFORM_NCP_UPDATES_DISABLED) */
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("tracker"), 5901),
			 CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("tracker"), 0),
			 CAPABILITY_UNKNOWN);
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, P("boron"), 5901), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_UPDATABLE_NCP, NULL, 5901), CAPABILITY_UNKNOWN);
}

static void test_unknown_facts_give_unknown_only_where_the_answer_depends_on_them(void **state)
{
	(void)state;
	/* platform unknown: no platform has YMODEM on 6.x; some have it on 5.x */
	assert_int_equal(capability_of(CAPABILITY_YMODEM, NULL, 6200), CAPABILITY_NO);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, NULL, 5901), CAPABILITY_UNKNOWN);
	/* every platform has the console below 6.0 */
	assert_int_equal(capability_of(CAPABILITY_LISTENING_CONSOLE, NULL, 5901), CAPABILITY_YES);
	/* version unknown */
	assert_int_equal(capability_of(CAPABILITY_LISTENING_CONSOLE, P("argon"), 0),
			 CAPABILITY_UNKNOWN);
	assert_int_equal(capability_of(CAPABILITY_YMODEM, NULL, 0), CAPABILITY_UNKNOWN);
	assert_true(capability_has(CAPABILITY_LISTENING_CONSOLE, P("argon"), 0, true));
	assert_false(capability_has(CAPABILITY_LISTENING_CONSOLE, P("argon"), 0, false));
	assert_false(capability_has(CAPABILITY_LISTENING_CONSOLE, P("argon"), 6000, true));
}

static void test_release_strings_become_system_module_versions_at_the_edge(void **state)
{
	(void)state;
	assert_int_equal(capability_version("1.5.2", 0), 1512);
	assert_int_equal(capability_version("3.0.0", 0), 3005); /* from the release table */
	assert_int_equal(capability_version("3.1.0", 0), 3103);
	assert_int_equal(capability_version("6.2.0", 1512), 1512); /* the module wins */
	assert_int_equal(capability_version("9.1.2", 0), 9102);	   /* newer than the table */
	assert_int_equal(capability_version("not a version", 0), 0);
	assert_int_equal(capability_version("", 0), 0);
	assert_int_equal(capability_version(NULL, 0), 0);
}

static void test_every_capability_has_a_name_and_holds_somewhere(void **state)
{
	(void)state;
	for (int c = 0; c < CAPABILITY__COUNT; c++) {
		assert_string_not_equal(capability_name((enum capability)c), "unknown");
		bool somewhere = false;
		for (size_t i = 0; i < platform_count() && !somewhere; i++)
			for (uint16_t v = 100; v <= 6400 && !somewhere; v += 100)
				somewhere = capability_of((enum capability)c, platform_at(i), v) ==
					    CAPABILITY_YES;
		assert_true(somewhere);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_device_os_6_removed_ymodem_and_the_listening_console),
	    cmocka_unit_test(test_the_core_has_a_console_but_no_ymodem_nor_control_requests),
	    cmocka_unit_test(test_reset_after_a_failed_transfer_is_gen3_and_p2_on_3_0_to_5_x),
	    cmocka_unit_test(test_compat_page_erase_is_the_gen3_layout_from_3_1),
	    cmocka_unit_test(test_control_requests_from_0_8_on_gen2_and_always_on_gen3),
	    cmocka_unit_test(test_only_the_argon_and_the_tracker_have_an_updatable_ncp),
	    cmocka_unit_test(test_unknown_facts_give_unknown_only_where_the_answer_depends_on_them),
	    cmocka_unit_test(test_release_strings_become_system_module_versions_at_the_edge),
	    cmocka_unit_test(test_every_capability_has_a_name_and_holds_somewhere),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
