/*
 * The configuration file's keys for issue 16: the socket's group and mode,
 * the lock directory, per-uid limits; no admin group unless one is named.
 */
#include "settings.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_defaults_are_the_fair_share_and_no_admin_group(void **state)
{
	(void)state;
	struct config c;
	config_defaults(&c);
	assert_string_equal(c.admin_group, "");
	assert_string_equal(c.socket_group, "flashd");
	assert_int_equal(c.socket_mode, 0660);
	assert_false(c.world_socket);
	assert_string_equal(c.lock_dir, "");
	assert_int_equal(c.replug_timeout_s, 30);
	assert_int_equal(c.clients_per_uid, 32);
	assert_int_equal(c.jobs_per_uid, 16);
	assert_int_equal(c.waiting_jobs_per_uid, 8);
}

static void test_keys_are_read(void **state)
{
	(void)state;
	struct config c;
	struct error e;
	error_init(&e);
	config_defaults(&c);
	assert_int_equal(config_parse(&c,
				      "[daemon]\n"
				      "admin_group = wheel\n"
				      "socket_group = plugdev\n"
				      "socket_mode = 0600\n"
				      "world_socket = yes\n"
				      "lock_dir = /var/lock/flashd\n"
				      "replug_timeout_s = 0\n"
				      "[limits]\n"
				      "clients_per_uid = 4\n"
				      "jobs_per_uid = 3\n"
				      "waiting_jobs_per_uid = 2\n",
				      "test", &e),
			 0);
	assert_string_equal(c.admin_group, "wheel");
	assert_string_equal(c.socket_group, "plugdev");
	assert_int_equal(c.socket_mode, 0600);
	assert_true(c.world_socket);
	assert_string_equal(c.lock_dir, "/var/lock/flashd");
	assert_int_equal(c.replug_timeout_s, 0);
	assert_int_equal(c.clients_per_uid, 4);
	assert_int_equal(c.jobs_per_uid, 3);
	assert_int_equal(c.waiting_jobs_per_uid, 2);
}

static void test_bad_values_are_usage_errors(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "[daemon]\nsocket_mode = 0999\n",	 "[daemon]\nsocket_mode = rw\n",
	    "[daemon]\nworld_socket = maybe\n",	 "[daemon]\nlock_dir = relative/dir\n",
	    "[limits]\njobs_per_uid = 0\n",	 "[daemon]\nreplug_timeout_s = 3601\n",
	    "[daemon]\nreplug_timeout_s = -1\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config c;
		struct error e;
		error_init(&e);
		config_defaults(&c);
		assert_int_equal(config_parse(&c, bad[i], "test", &e), -1);
		assert_int_equal(e.code, ERR_USAGE);
		error_clear(&e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_are_the_fair_share_and_no_admin_group),
	    cmocka_unit_test(test_keys_are_read),
	    cmocka_unit_test(test_bad_values_are_usage_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
