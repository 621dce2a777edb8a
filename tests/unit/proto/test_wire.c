/* The wire codec (proto/wire.c): what is a valid request, and why not. */
#include "wire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Issue 13: a whitespace-only line got bad-request; it is a blank line. */
static void test_whitespace_only_lines_are_blank(void **state)
{
	(void)state;
	assert_true(wire_line_is_blank("", 0));
	assert_true(wire_line_is_blank(" \t \r", 4));
	assert_false(wire_line_is_blank(" {}", 3));
	assert_false(wire_line_is_blank("\v", 1)); /* not JSON whitespace */
	assert_false(wire_line_is_blank("\0", 1));
}

/* Issue 13: "job" alone is a subscription of its own, not "every job". */
static void test_subscribe_job_does_not_mean_every_job(void **state)
{
	(void)state;
	struct wire_subscribe sub;
	struct error err;
	error_init(&err);
	json_t *o = json_pack("{s:s}", "job", "abc");
	assert_int_equal(wire_parse_subscribe(o, &sub, &err), 0);
	assert_false(sub.jobs);
	assert_string_equal(sub.job, "abc");
	json_decref(o);
	o = json_pack("{s:b}", "jobs", 1);
	assert_int_equal(wire_parse_subscribe(o, &sub, &err), 0);
	assert_true(sub.jobs);
	assert_string_equal(sub.job, "");
	json_decref(o);
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

static long b64(const char *s, uint8_t *out, size_t cap)
{
	return wire_base64_decode(s, strlen(s), out, cap);
}

static void test_base64_is_strict_rfc4648(void **state)
{
	(void)state;
	uint8_t out[16];
	/* RFC 4648 section 10 test vectors */
	static const char *const vec[][2] = {{"", ""},
					     {"Zg==", "f"},
					     {"Zm8=", "fo"},
					     {"Zm9v", "foo"},
					     {"Zm9vYg==", "foob"},
					     {"Zm9vYmE=", "fooba"},
					     {"Zm9vYmFy", "foobar"}};
	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		long n = b64(vec[i][0], out, sizeof(out));
		assert_int_equal(n, (long)strlen(vec[i][1]));
		assert_memory_equal(out, vec[i][1], (size_t)n);
	}
	assert_int_equal(b64("Zg=", out, sizeof(out)), -1);	 /* not a multiple of 4 */
	assert_int_equal(b64("Zg", out, sizeof(out)), -1);	 /* unpadded */
	assert_int_equal(b64("Z===", out, sizeof(out)), -1);	 /* three pads */
	assert_int_equal(b64("Zg==Zm9v", out, sizeof(out)), -1); /* padding inside */
	assert_int_equal(b64("Zh==", out, sizeof(out)), -1);	 /* non-zero pad bits */
	assert_int_equal(b64("Zm9=", out, sizeof(out)), -1);	 /* non-zero pad bits */
	assert_int_equal(b64("Zm 9", out, sizeof(out)), -1);	 /* whitespace */
	assert_int_equal(b64("Zm-_", out, sizeof(out)), -1);	 /* base64url is not base64 */
	assert_int_equal(b64("Zm9vYmFy", out, 5), -2);		 /* over the cap */
	assert_int_equal(b64("Zm9vYmE=", out, 5), 5);		 /* exactly the cap */
}

static int chunk(const char *data_json, size_t *len, char *reason)
{
	char line[256];
	struct wire_upload_chunk ch;
	struct error err;
	error_init(&err);
	snprintf(line, sizeof(line), "{\"upload\":\"upload-1\",\"offset\":0,\"data\":%s}",
		 data_json);
	json_t *obj = json_loads(line, 0, NULL);
	int rc = wire_parse_upload_chunk(obj, &ch, &err);
	*len = ch.len;
	reason[0] = '\0';
	if (rc < 0)
		snprintf(reason, 32, "%s:%s", error_id(err.code),
			 json_string_value(json_object_get(
			     err.detail, err.code == ERR_BAD_REQUEST ? "field" : "reason")));
	wire_upload_chunk_clear(&ch);
	error_clear(&err);
	json_decref(obj);
	return rc;
}

static void test_upload_chunk_limits(void **state)
{
	(void)state;
	size_t len;
	char reason[32];
	assert_int_equal(chunk("\"Zm9v\"", &len, reason), 0);
	assert_int_equal(len, 3);
	assert_int_equal(chunk("\"Zm9\"", &len, reason), -1);
	assert_string_equal(reason, "upload-invalid:bad-base64");
	assert_int_equal(chunk("\"\"", &len, reason), -1);
	assert_string_equal(reason, "upload-invalid:empty-chunk");
	assert_int_equal(chunk("5", &len, reason), -1);
	assert_string_equal(reason, "bad-request:data");

	/* 65536 bytes decode; 65537 (the same number of base64 groups) do not. */
	for (size_t n = WIRE_UPLOAD_CHUNK_MAX - 1; n <= WIRE_UPLOAD_CHUNK_MAX + 1; n++) {
		size_t chars = 4 * ((n + 2) / 3);
		char *b = malloc(chars + 1);
		memset(b, 'A', chars);
		if (n % 3 == 1)
			memcpy(b + chars - 2, "==", 2);
		else if (n % 3 == 2)
			b[chars - 1] = '=';
		b[chars] = '\0';
		json_t *obj = json_pack("{s:s, s:i, s:s}", "upload", "u", "offset", 0, "data", b);
		struct wire_upload_chunk ch;
		struct error err;
		error_init(&err);
		int rc = wire_parse_upload_chunk(obj, &ch, &err);
		if (n <= WIRE_UPLOAD_CHUNK_MAX) {
			assert_int_equal(rc, 0);
			assert_int_equal(ch.len, n);
		} else {
			assert_int_equal(rc, -1);
			assert_int_equal(err.code, ERR_UPLOAD_INVALID);
			assert_int_equal(json_integer_value(json_object_get(err.detail, "limit")),
					 WIRE_UPLOAD_CHUNK_MAX);
		}
		wire_upload_chunk_clear(&ch);
		error_clear(&err);
		json_decref(obj);
		free(b);
	}
}

static void test_line_limits(void **state)
{
	(void)state;
	/* A chunk's line may be longer than any other request, up to WIRE_LINE_MAX. */
	size_t n = WIRE_REQUEST_MAX + 1000;
	char *line = malloc(WIRE_LINE_MAX + 2);
	struct wire_request req;
	struct error err;
	error_init(&err);
	int k = snprintf(line, 128, "{\"request\":\"upload-chunk\",\"id\":1,\"data\":\"");
	memset(line + k, 'A', n - (size_t)k - 2);
	memcpy(line + n - 2, "\"}", 2);
	assert_int_equal(wire_parse_request(line, n, &req, &err), 0);
	wire_request_clear(&req);
	k = snprintf(line, 128, "{\"request\":\"list-devices\",\"id\":1,\"pad\":\"");
	memset(line + k, 'A', n - (size_t)k - 2);
	memcpy(line + n - 2, "\"}", 2);
	assert_int_equal(wire_parse_request(line, n, &req, &err), -1);
	assert_int_equal(json_integer_value(json_object_get(err.detail, "limit")),
			 WIRE_REQUEST_MAX);
	assert_int_equal(json_integer_value(req.id), 1);
	wire_request_clear(&req);
	error_clear(&err);
	assert_int_equal(wire_parse_request(line, WIRE_LINE_MAX + 1, &req, &err), -1);
	assert_int_equal(json_integer_value(json_object_get(err.detail, "limit")), WIRE_LINE_MAX);
	wire_request_clear(&req);
	error_clear(&err);
	free(line);
}

static void test_flash_images_by_upload(void **state)
{
	(void)state;
	struct wire_flash f;
	char field[32];
	assert_int_equal(flash("{\"images\":[{\"name\":\"a.bin\",\"upload\":\"upload-1\"},"
			       "{\"name\":\"b.bin\",\"fd\":0}]}",
			       1, &f, field),
			 0);
	assert_string_equal(f.images[0].upload, "upload-1");
	assert_string_equal(f.images[1].upload, "");
	assert_int_equal(f.images[1].fd_index, 0);
	flash("{\"images\":[{\"upload\":\"u\"},{\"upload\":\"u\"}]}", 0, &f, field);
	assert_string_equal(field, "upload");
	flash("{\"images\":[{\"upload\":\"u\",\"fd\":0}]}", 1, &f, field);
	assert_string_equal(field, "upload");
	flash("{\"images\":[{\"upload\":7}]}", 0, &f, field);
	assert_string_equal(field, "upload");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_each_malformed_request_is_bad_request_naming_the_field),
	    cmocka_unit_test(test_unknown_request_keeps_id_for_the_error),
	    cmocka_unit_test(test_flash_request_fields),
	    cmocka_unit_test(test_encode_is_one_line),
	    cmocka_unit_test(test_base64_is_strict_rfc4648),
	    cmocka_unit_test(test_upload_chunk_limits),
	    cmocka_unit_test(test_line_limits),
	    cmocka_unit_test(test_flash_images_by_upload),
	    cmocka_unit_test(test_whitespace_only_lines_are_blank),
	    cmocka_unit_test(test_subscribe_job_does_not_mean_every_job),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
