/*
 * Auto-flash rules (daemon/rules.c): rule files (fields, defaults, labels,
 * errors that leave the other rules loaded, hooks only from files nobody else
 * may write), socket rules (no hooks, quotas, images stored by SHA-256,
 * persistence across a restart with the done-set) and matching.
 */
#include "image.h"
#include "rules.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[256], rules_dir[300], state_dir[300], image_path[320];

static void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A valid Photon user part (prefix, payload, 36-byte suffix, CRC-32 big endian). */
static size_t make_module(uint8_t *out, uint16_t version)
{
	const uint32_t start = 0x080a0000, payload = 200;
	size_t total = 24 + payload + 36 + 4;
	memset(out, 0, total);
	put32le(out, start);
	put32le(out + 4, start + (uint32_t)total - 4);
	out[10] = (uint8_t)version;
	out[11] = (uint8_t)(version >> 8);
	out[12] = 6; /* photon */
	out[14] = 5; /* user part */
	out[15] = 1;
	for (uint32_t i = 0; i < payload; i++)
		out[24 + i] = (uint8_t)(i * 13 + 7);
	size_t n = 24 + payload + 2; /* product data 0 0 */
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, n, out);
	sha256_digest(&ctx, 32, out + n);
	n += 32;
	out[n++] = 36;
	out[n++] = 0;
	uint32_t crc = image_crc32(out, n);
	out[n++] = (uint8_t)(crc >> 24);
	out[n++] = (uint8_t)(crc >> 16);
	out[n++] = (uint8_t)(crc >> 8);
	out[n++] = (uint8_t)crc;
	return n;
}

static void write_file(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void write_file(const char *path, const char *fmt, ...)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	chmod(path, 0644);
}

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/rules-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(rules_dir, sizeof(rules_dir), "%s/rules.d", dir);
	snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
	snprintf(image_path, sizeof(image_path), "%s/app.bin", dir);
	assert_int_equal(mkdir(rules_dir, 0755), 0);
	assert_int_equal(mkdir(state_dir, 0755), 0);
	uint8_t buf[512];
	size_t n = make_module(buf, 7);
	FILE *f = fopen(image_path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, n, f), n);
	fclose(f);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct auto_config cfg(void)
{
	struct auto_config c;
	auto_config_defaults(&c);
	snprintf(c.rules_dir, sizeof(c.rules_dir), "%s", rules_dir);
	return c;
}

static struct device photon(const char *id, const char *port, enum device_mode mode)
{
	struct device d;
	memset(&d, 0, sizeof(d));
	d.s.present = true;
	d.s.mode = mode;
	snprintf(d.s.key, sizeof(d.s.key), "%s", id);
	snprintf(d.s.facts.device_id, sizeof(d.s.facts.device_id), "%s", id);
	snprintf(d.s.port_path, sizeof(d.s.port_path), "%s", port);
	d.s.facts.platform = platform_by_name("photon");
	return d;
}

static void test_rule_file(void **state)
{
	(void)state;
	char path[400];
	snprintf(path, sizeof(path), "%s/line.conf", rules_dir);
	write_file(path,
		   "# a comment\n[rule]\nplatform = photon\nport = 1-2\nlabel = Slot 1\n"
		   "device = 3A00*\nmode = listening\nimage = %s\nonce = yes\npriority = 4\n"
		   "on_success = /usr/bin/printf \"%%s|\\\"q\\\"\" 'two words'\n"
		   "[rule]\nid = other\nplatform = photonn\nimage = %s\n"
		   "[rule]\nid = rel\nimage = app.bin\n"
		   "[labels]\n1-3 = Slot 2\n",
		   image_path, image_path);
	struct auto_config c = cfg();
	struct image_cache *ic = image_cache_new(1 << 20);
	struct rules *r = rules_new(state_dir, &c, ic);
	json_t *res = rules_reload_files(r);
	assert_int_equal(json_integer_value(json_object_get(res, "rules")), 1);
	json_t *errors = json_object_get(res, "errors");
	assert_int_equal(json_array_size(errors), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 0), "code")),
			    "rule-invalid");
	json_t *d0 = json_object_get(json_array_get(errors, 0), "detail");
	assert_string_equal(json_string_value(json_object_get(d0, "field")), "platform");
	assert_int_equal(json_integer_value(json_object_get(d0, "line")), 12); /* the section */
	json_decref(res);

	struct rule *rule = rules_find(r, "line");
	assert_non_null(rule);
	assert_true(rule->once);
	assert_true(rule->skip_installed);
	assert_int_equal(rule->priority, 4);
	assert_string_equal(rule->on_success[0], "/usr/bin/printf");
	assert_string_equal(rule->on_success[1], "%s|\"q\"");
	assert_string_equal(rule->on_success[2], "two words");
	assert_null(rule->on_success[3]);
	assert_string_equal(rules_port_label(r, "1-2"), "Slot 1");
	assert_string_equal(rules_port_label(r, "1-3"), "Slot 2");

	struct device a = photon("3a001d000a47353138383101", "1-2", DEVICE_MODE_LISTENING);
	assert_int_equal(rule_matches(rule, &a), RULE_YES);
	struct device b = photon("3a001d000a47353138383101", "1-9", DEVICE_MODE_LISTENING);
	assert_int_equal(rule_matches(rule, &b), RULE_NO); /* port */
	struct device e = photon("e00fce68aabbccddeeff0001", "1-2", DEVICE_MODE_LISTENING);
	assert_int_equal(rule_matches(rule, &e), RULE_NO); /* id glob */
	struct device m = photon("3a001d000a47353138383101", "1-2", DEVICE_MODE_DFU);
	assert_int_equal(rule_matches(rule, &m), RULE_NO); /* mode */
	m.s.mode = DEVICE_MODE_UNKNOWN; /* a CDC port nobody has talked to: probe first */
	assert_int_equal(rule_matches(rule, &m), RULE_NEED_FACTS);
	a.s.facts.platform = platform_by_name("electron");
	assert_int_equal(rule_matches(rule, &a), RULE_NO);

	/* A file others may write: its hook is refused, the rule with it. */
	chmod(path, 0666);
	res = rules_reload_files(r);
	assert_int_equal(json_integer_value(json_object_get(res, "rules")), 0);
	assert_string_equal(json_string_value(json_object_get(
				json_array_get(json_object_get(res, "errors"), 0), "code")),
			    "hook-not-allowed");
	json_decref(res);
	rules_free(r);
	image_cache_free(ic);
}

static void test_installed_and_os(void **state)
{
	(void)state;
	char path[400];
	snprintf(path, sizeof(path), "%s/os.conf", rules_dir);
	write_file(path, "[rule]\nos_older_than = 2.0.0\nimage = %s\n", image_path);
	struct auto_config c = cfg();
	struct image_cache *ic = image_cache_new(1 << 20);
	struct rules *r = rules_new(NULL, &c, ic);
	rules_load(r);
	struct rule *rule = rules_find(r, "os");
	assert_non_null(rule);
	struct device d = photon("3a001d000a47353138383101", "1-1", DEVICE_MODE_LISTENING);
	assert_int_equal(rule_matches(rule, &d), RULE_NEED_FACTS);
	snprintf(d.s.facts.os_version, sizeof(d.s.facts.os_version), "1.5.2");
	assert_int_equal(rule_matches(rule, &d), RULE_YES);
	snprintf(d.s.facts.os_version, sizeof(d.s.facts.os_version), "2.3.0");
	assert_int_equal(rule_matches(rule, &d), RULE_NO);
	rules_free(r);
	image_cache_free(ic);
}

static struct rule *add(struct rules *r, uid_t uid, const char *extra, struct error *err)
{
	char text[512];
	snprintf(text, sizeof(text),
		 "{\"request\":\"auto-add\",\"id\":1,\"platform\":\"photon\",\"images\":"
		 "[{\"name\":\"/x/app.bin\",\"fd\":0}]%s}",
		 extra);
	json_t *req = json_loads(text, 0, NULL);
	assert_non_null(req);
	int fd = open(image_path, O_RDONLY);
	struct rule *rule = rules_add_request(r, req, &fd, 1, uid, err);
	close(fd);
	json_decref(req);
	return rule;
}

static void test_socket_rules(void **state)
{
	(void)state;
	struct auto_config c = cfg();
	c.max_rules_per_uid = 2;
	struct image_cache *ic = image_cache_new(1 << 20);
	struct rules *r = rules_new(state_dir, &c, ic);
	rules_load(r);
	struct error err;
	error_init(&err);

	assert_null(add(r, 1000, ",\"on_success\":[\"/bin/true\"]", &err));
	assert_int_equal(err.code, ERR_HOOK_NOT_ALLOWED);
	error_clear(&err);
	assert_null(add(r, 1000, ",\"bogus\":1", &err));
	assert_int_equal(err.code, ERR_RULE_INVALID);
	error_clear(&err);

	struct rule *a = add(r, 1000, ",\"once\":true,\"label\":\"L\"", &err);
	assert_non_null(a);
	assert_string_equal(a->images[0].name, "app.bin");
	char stored[600];
	snprintf(stored, sizeof(stored), "%s/auto/images/%s", state_dir,
		 a->images[0].ref->sha256_hex);
	assert_int_equal(access(stored, R_OK), 0);
	assert_non_null(add(r, 1000, "", &err));
	assert_null(add(r, 1000, "", &err));
	assert_int_equal(err.code, ERR_RULE_QUOTA_EXCEEDED);
	error_clear(&err);
	assert_non_null(add(r, 1001, "", &err)); /* another uid has its own quota */
	{
		struct auto_config small = cfg();
		small.max_image_bytes_per_uid = 100; /* below the image's size */
		struct rules *r2 = rules_new(NULL, &small, ic);
		assert_null(add(r2, 1000, "", &err));
		assert_int_equal(err.code, ERR_RULE_QUOTA_EXCEEDED);
		assert_non_null(err.detail);
		assert_non_null(json_object_get(err.detail, "bytes"));
		error_clear(&err);
		rules_free(r2);
	}

	rules_done_add(r, a, "3a001d000a47353138383101");
	rules_set_paused(r, a, true);
	char id[RULE_ID_MAX];
	snprintf(id, sizeof(id), "%s", a->id);
	rules_free(r);

	/* A restart: the rules, their images and the done-set are back. */
	r = rules_new(state_dir, &c, ic);
	rules_load(r);
	a = rules_find(r, id);
	assert_non_null(a);
	assert_true(a->once);
	assert_true(a->paused);
	assert_string_equal(a->label, "L");
	assert_true(rule_done_has(a, "3A001D000A47353138383101"));
	assert_false(rule_done_has(a, "3a001d000a47353138383102"));
	rules_remove(r, a);
	assert_null(rules_find(r, id));
	/* The image is still used by the other rules. */
	assert_int_equal(access(stored, R_OK), 0);
	rules_free(r);
	image_cache_free(ic);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rule_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_installed_and_os, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_socket_rules, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
