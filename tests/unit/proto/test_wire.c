/* The wire codec (proto/wire.c): what is a valid request, and why not. */
#include "wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static const char *reason_of(const char *line)
{
	static char reason[256];
	struct wire_request req;
	struct error err;
	error_init(&err);
	int rc = wire_parse_request(line, strlen(line), &req, &err);
	snprintf(reason, sizeof(reason), "%s",
		 rc == 0 ? "ok"
		 : json_string_value(json_object_get(err.detail, "field"))
		     ? json_string_value(json_object_get(err.detail, "field"))
		     : "-");
	if (rc < 0)
		assert_int_equal(err.code, ERR_BAD_REQUEST);
	error_clear(&err);
	wire_request_clear(&req);
	return reason;
}

static void test_each_malformed_request_is_bad_request_naming_the_field(void **state)
{
	(void)state;
	assert_string_equal(reason_of("{\"request\":\"hello\",\"id\":1}"), "ok");
	assert_string_equal(reason_of("{\"request\":\"hello\",\"id\":\"a\"}"), "ok");
	assert_string_equal(reason_of("{\"request\":\"hello\""), "-");	       /* malformed JSON */
	assert_string_equal(reason_of("[1,2]"), "-");			       /* not an object */
	assert_string_equal(reason_of("\"hello\""), "-");		       /* not an object */
	assert_string_equal(reason_of("{\"id\":1}"), "request");	       /* no request */
	assert_string_equal(reason_of("{\"request\":5,\"id\":1}"), "request"); /* wrong type */
	assert_string_equal(reason_of("{\"request\":\"reboot\",\"id\":1}"), "request");
	assert_string_equal(reason_of("{\"request\":\"hello\"}"), "id");
	assert_string_equal(reason_of("{\"request\":\"hello\",\"id\":[1]}"), "id");
	assert_string_equal(reason_of("{\"request\":\"hello\",\"id\":1,\"type\":\"event\"}"),
			    "type");
	assert_string_equal(reason_of("{\"request\":\"hello\",\"id\":1,\"id\":2}"), "-");
	assert_string_equal(
	    reason_of("{\"a\":[[[[[[[[[[[1]]]]]]]]]],\"request\":\"hello\",\"id\":1}"), "-");
}

static void test_unknown_request_keeps_id_for_the_error(void **state)
{
	(void)state;
	struct wire_request req;
	struct error err;
	error_init(&err);
	const char *line = "{\"request\":\"nope\",\"id\":42}";
	assert_int_equal(wire_parse_request(line, strlen(line), &req, &err), -1);
	assert_int_equal(json_integer_value(req.id), 42);
	json_t *obj = wire_error_new(req.id, &err);
	assert_string_equal(json_string_value(json_object_get(obj, "type")), "error");
	assert_string_equal(json_string_value(json_object_get(obj, "code")), "bad-request");
	assert_int_equal(json_integer_value(json_object_get(obj, "id")), 42);
	json_decref(obj);
	error_clear(&err);
	wire_request_clear(&req);
}

static int flash(const char *json, unsigned n_fds, struct wire_flash *f, char *field)
{
	json_t *obj = json_loads(json, 0, NULL);
	struct error err;
	error_init(&err);
	assert_non_null(obj);
	int rc = wire_parse_flash(obj, n_fds, f, &err);
	const char *fl = json_string_value(json_object_get(err.detail, "field"));
	snprintf(field, 32, "%s", rc == 0 ? "ok" : fl ? fl : "-");
	error_clear(&err);
	json_decref(obj);
	return rc;
}

static void test_flash_request_fields(void **state)
{
	(void)state;
	struct wire_flash f;
	char field[32];
	assert_int_equal(flash("{\"images\":[{\"name\":\"/a/b/app.bin\",\"fd\":0}],"
			       "\"target\":{\"platform\":\"photon\",\"all\":true},"
			       "\"options\":{\"wait\":2.5,\"force\":true,\"dry-run\":true}}",
			       1, &f, field),
			 0);
	assert_string_equal(f.images[0].name, "app.bin");
	assert_int_equal(f.target, WIRE_TARGET_PLATFORM);
	assert_true(f.all);
	assert_true(f.force);
	assert_true(f.dry_run);
	assert_true(f.detach);
	assert_int_equal(f.wait_ms, 2500);
	assert_int_equal(
	    flash("{\"images\":[{\"fd\":0}],\"options\":{\"wait\":true}}", 1, &f, field), 0);
	assert_int_equal(f.wait_ms, -1);
	assert_int_equal(f.target, WIRE_TARGET_ANY);

	flash("{\"images\":[]}", 1, &f, field);
	assert_string_equal(field, "images");
	flash("{\"images\":[{\"fd\":1}]}", 1, &f, field);
	assert_string_equal(field, "fd");
	flash("{\"images\":[{\"fd\":0},{\"fd\":0}]}", 2, &f, field);
	assert_string_equal(field, "fd");
	flash("{\"images\":[{\"fd\":\"0\"}]}", 1, &f, field);
	assert_string_equal(field, "fd");
	flash("{\"images\":[{\"fd\":0}],\"target\":{\"device\":\"x\",\"usb\":\"1-1\"}}", 1, &f,
	      field);
	assert_string_equal(field, "target");
	flash("{\"images\":[{\"fd\":0}],\"target\":{\"device\":\"x\",\"all\":true}}", 1, &f, field);
	assert_string_equal(field, "all");
	flash("{\"images\":[{\"fd\":0}],\"options\":{\"force\":1}}", 1, &f, field);
	assert_string_equal(field, "force");
	flash("{\"images\":[{\"fd\":0}],\"options\":{\"wait\":-1}}", 1, &f, field);
	assert_string_equal(field, "wait");
	flash("{\"images\":[{\"fd\":0}],\"target\":{\"device\":\"\"}}", 1, &f, field);
	assert_string_equal(field, "device");
}

static void test_encode_is_one_line(void **state)
{
	(void)state;
	json_t *ev = wire_event_new("device-added");
	json_object_set_new(ev, "text", json_string("a\nb"));
	size_t len;
	char *line = wire_encode(ev, &len);
	assert_int_equal(line[len - 1], '\n');
	assert_null(memchr(line, '\n', len - 1));
	free(line);
	json_decref(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_each_malformed_request_is_bad_request_naming_the_field),
	    cmocka_unit_test(test_unknown_request_keeps_id_for_the_error),
	    cmocka_unit_test(test_flash_request_fields),
	    cmocka_unit_test(test_encode_is_one_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
