/*
 * The daemon's image intake (daemon/image_cache.c) with zip bundles: a
 * bundle's application becomes the image that jobs flash, its assets stay on
 * the reference and become asset modules, files of the job (one reference
 * each, named assets/NAME), refused with assets-not-flashable when they do
 * not fit into the job, a broken bundle fails with its bundle-*
 * error, and the assets count against the memory limit.
 */
#include "fixtures_present.h"
#include "image_cache.h"
#include "asset_module.h"
#include "platform.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "bundle_zip.h"

static const char *const fixtures_read[] = {P2_APP, NULL};

static const uint8_t logo[] = "\x89PNG\r\n\x1a\n the logo";

/* An fd holding buf (a memfd: a regular file, as the daemon requires). */
static int fd_of(const uint8_t *buf, size_t len)
{
	int fd = memfd_create("bundle", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	return fd;
}

static struct image_ref *load(struct image_cache *c, const uint8_t *buf, size_t len,
			      struct error *err)
{
	int fd = fd_of(buf, len);
	struct image_ref *ref = NULL;
	error_init(err);
	int rc = image_cache_load_fd(c, fd, "app.zip", &ref, err);
	close(fd);
	assert_true(rc == 0 ? ref != NULL : ref == NULL);
	return ref;
}

static void test_application_only_bundle_flashes_as_its_application(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}};
	uint8_t *zip = make_zip(e, 1, DEFLATE, &zip_len);
	struct image_cache *c = image_cache_new(1u << 26);
	struct error err;
	struct image_ref *ref = load(c, zip, zip_len, &err);
	assert_non_null(ref);
	assert_non_null(ref->bundle);
	assert_ptr_equal(ref->img, ref->bundle->app);
	assert_memory_equal(ref->img->data, app, app_len);
	assert_int_equal(ref->bytes, zip_len); /* the job record shows the file sent */
	struct image_ref *out[WIRE_IMAGES_MAX];
	char names[WIRE_IMAGES_MAX][WIRE_NAME_MAX];
	unsigned n = 99;
	assert_int_equal(image_ref_expand_assets(c, ref, "app.zip", out, names, 7, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_false(error_is_set(&err));
	image_cache_put(c, ref);
	assert_int_equal(image_cache_bytes(c), 0);
	image_cache_free(c);
	free(zip);
	free(app);
}

static void test_bundle_with_assets_keeps_them_as_asset_modules(void **state)
{
	(void)state;
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 1, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct image_cache *c = image_cache_new(1u << 26);
	struct error err;
	struct image_ref *ref = load(c, zip, zip_len, &err);
	assert_non_null(ref);
	assert_int_equal(ref->bundle->n_assets, 1);
	assert_memory_equal(ref->bundle->assets[0].data, logo, sizeof(logo));
	assert_int_equal(image_cache_bytes(c), zip_len + sizeof(logo));
	struct image_ref *out[WIRE_IMAGES_MAX];
	char names[WIRE_IMAGES_MAX][WIRE_NAME_MAX];
	unsigned n = 99;
	/* no room in the job: refused, nothing kept */
	assert_int_equal(image_ref_expand_assets(c, ref, "app.zip", out, names, 0, &n, &err), -1);
	assert_int_equal(err.code, ERR_ASSETS_NOT_FLASHABLE);
	assert_int_equal(n, 0);
	assert_int_equal(json_integer_value(json_object_get(err.detail, "assets")), 1);
	error_clear(&err);
	assert_int_equal(image_cache_count(c), 1);
	/* room: one asset module, function asset, naming the asset and its hash */
	assert_int_equal(image_ref_expand_assets(c, ref, "app.zip", out, names, 7, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(names[0], "assets/logo.png");
	assert_int_equal(out[0]->img->n_modules, 1);
	assert_int_equal(out[0]->img->modules[0].function, MODULE_FUNCTION_ASSET);
	assert_true(out[0]->img->modules[0].crc_ok);
	struct asset_module_info ai;
	assert_int_equal(asset_module_read(out[0]->img->data, out[0]->img->len, &ai), 0);
	assert_string_equal(ai.name, "logo.png");
	assert_memory_equal(ai.sha256, ref->bundle->assets[0].sha256, 32);
	assert_memory_equal(out[0]->img->data + ai.data_offset, logo, sizeof(logo));
	assert_int_equal(ai.data_size, sizeof(logo));
	image_cache_put(c, out[0]);
	/* The same bytes again share the reference. */
	struct image_ref *again = load(c, zip, zip_len, &err);
	assert_ptr_equal(again, ref);
	image_cache_put(c, again);
	image_cache_put(c, ref);
	assert_int_equal(image_cache_count(c), 0);
	image_cache_free(c);
	free(zip);
	free(app);
}

static void test_broken_bundle_fails_with_its_error_and_file(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"../evil", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct image_cache *c = image_cache_new(1u << 26);
	struct error err;
	assert_null(load(c, zip, zip_len, &err));
	assert_int_equal(err.code, ERR_BUNDLE_UNSAFE_NAME);
	assert_string_equal(json_string_value(json_object_get(err.detail, "file")), "app.zip");
	assert_true(strncmp(err.message, "app.zip: ", 9) == 0);
	error_clear(&err);
	/* A mismatched bundle is not kept either. */
	struct blob e2[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	free(zip);
	zip = make_zip(e2, 2, DEFLATE, &zip_len);
	assert_null(load(c, zip, zip_len, &err));
	assert_int_equal(err.code, ERR_BUNDLE_ASSET_MISMATCH);
	error_clear(&err);
	assert_int_equal(image_cache_count(c), 0);
	image_cache_free(c);
	free(zip);
	free(app);
}

static void test_assets_count_against_the_memory_limit(void **state)
{
	(void)state;
	static uint8_t big[200000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 31 + (i >> 7)); /* compresses, but not 100:1 */
	struct blob assets[] = {{"big.raw", big, sizeof(big)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 1, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/big.raw", big, sizeof(big)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct image_cache *c = image_cache_new(zip_len + sizeof(big) - 1);
	struct error err;
	assert_null(load(c, zip, zip_len, &err));
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_non_null(strstr(err.message, "too much firmware"));
	error_clear(&err);
	assert_int_equal(image_cache_bytes(c), 0);
	image_cache_free(c);
	free(zip);
	free(app);
}

int main(void)
{
	fixtures_present_or_skip(fixtures_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_application_only_bundle_flashes_as_its_application),
	    cmocka_unit_test(test_bundle_with_assets_keeps_them_as_asset_modules),
	    cmocka_unit_test(test_broken_bundle_fails_with_its_error_and_file),
	    cmocka_unit_test(test_assets_count_against_the_memory_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
