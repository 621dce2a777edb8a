/*
 * The bundle reader (proto/bundle.c) on zips built here the way `particle
 * compile` lays them out (binary-version-reader's
 * createApplicationAndAssetBundle(): the application at the top, raw assets
 * under assets/, optional env.json), and on every kind of bad zip: bombs,
 * unsafe names, no or two firmware files, too many entries, forged sizes,
 * truncation and CRC errors.
 * The application with assets is the real P2 Tinker re-stamped with
 * asset dependencies (tests/unit/bundle_zip.h says how).
 */
#include "asset_module.h"
#include "bundle.h"
#include "fixtures_present.h"
#include "image.h"
#include "platform.h"

#include <nettle/sha2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include <cmocka.h>

#include "bundle_zip.h"

static const char *const fixtures_read[] = {P2_APP, NULL};

static const char *detail_str(const struct error *e, const char *key)
{
	return json_string_value(json_object_get(e->detail, key));
}

static long long detail_int(const struct error *e, const char *key)
{
	return json_integer_value(json_object_get(e->detail, key));
}

/* Parses and expects the error code in *err (initialised here; the caller
 * clears it) and frees any returned bundle after checking *ret is set only if
 * allowed. */
static void expect_error(const uint8_t *zip, size_t len, enum error_code code, bool returns_bundle,
			 struct error *err)
{
	struct bundle *b = NULL;
	error_init(err);
	assert_int_equal(bundle_parse(zip, len, &b, err), -1);
	if (err->code != code)
		fail_msg("expected %s, got %s: %s", error_id(code), error_id(err->code),
			 err->message);
	assert_true(returns_bundle ? b != NULL : b == NULL);
	assert_true(err->message[0] != '\0');
	bundle_free(b);
}

static const uint8_t logo[] = "\x89PNG\r\n\x1a\n a small logo";
static uint8_t sound[3000];

static void fill_sound(void)
{
	for (size_t i = 0; i < sizeof(sound); i++)
		sound[i] = (uint8_t)(i * 7 + (i >> 5));
}

/* ---- layouts particle compile makes ---- */

static void test_application_only_bundle_is_the_application(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}};
	uint8_t *zip = make_zip(e, 1, DEFLATE, &zip_len);
	assert_true(bundle_is_zip(zip, zip_len));

	struct bundle *b = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(bundle_parse(zip, zip_len, &b, &err), 0);
	assert_false(error_is_set(&err));
	assert_string_equal(b->app_name, APP_NAME);
	assert_int_equal(b->n_assets, 0);
	assert_int_equal(b->n_deps, 0);
	assert_int_equal(b->n_entries, 1);
	assert_int_equal(b->app->len, app_len);
	assert_memory_equal(b->app->data, app, app_len);
	assert_int_equal(b->app->modules[0].platform_id, 32);
	assert_int_equal(b->app->modules[0].function, MODULE_FUNCTION_USER);
	assert_true(b->app->modules[0].crc_ok);
	bundle_free(b);
	free(zip);
	free(app);
}

static void test_application_with_two_assets_cross_checks(void **state)
{
	(void)state;
	fill_sound();
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)},
				{"sound.raw", sound, sizeof(sound)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 2, &app_len);
	static const char env[] = "{\n  \"COLOR\": \"blue\"\n}";
	struct blob e[] = {
	    {APP_NAME, app, app_len},
	    {"assets/", NULL, 0},
	    {"assets/logo.png", logo, sizeof(logo)},
	    {"assets/sound.raw", sound, sizeof(sound)},
	    {"env.json", (const uint8_t *)env, sizeof(env) - 1},
	    {"assets/.DS_Store", (const uint8_t *)"x", 1},
	};
	uint8_t *zip = make_zip(e, 6, DEFLATE, &zip_len);

	struct bundle *b = NULL;
	struct error err;
	error_init(&err);
	if (bundle_parse(zip, zip_len, &b, &err) != 0)
		fail_msg("%s: %s", error_id(err.code), err.message);
	assert_int_equal(b->n_entries, 6);
	assert_int_equal(b->n_assets, 2);
	assert_int_equal(b->n_deps, 2);
	assert_string_equal(b->assets[0].name, "logo.png");
	assert_int_equal(b->assets[0].size, sizeof(logo));
	assert_memory_equal(b->assets[0].data, logo, sizeof(logo));
	assert_string_equal(b->assets[1].name, "sound.raw");
	uint8_t sha[32];
	sha256_of(sound, sizeof(sound), sha);
	assert_memory_equal(b->assets[1].sha256, sha, 32);
	for (unsigned i = 0; i < 2; i++)
		assert_true(b->deps[i].in_bundle && b->deps[i].hash_ok);
	assert_true(b->has_env);
	assert_int_equal(b->env_size, sizeof(env) - 1);
	assert_int_equal(b->n_ignored, 1); /* .DS_Store, as particle-cli leaves it out */
	assert_int_equal(bundle_assets_bytes(b), sizeof(logo) + sizeof(sound));
	/* The re-stamped application is a valid P2 user part with prefix extensions. */
	const struct image_module *m = &b->app->modules[0];
	assert_true(m->crc_ok);
	assert_int_equal(m->sha_verdict, IMAGE_SHA_OK);
	assert_true(m->flags & IMAGE_FLAG_PREFIX_EXTENSIONS);
	assert_int_equal(m->start % 8, 0);
	assert_int_equal(m->dynalib_load_address, bytes_le32(app + app_len - 4 - 62 + 8));
	bundle_free(b);
	free(zip);
	free(app);
}

static void test_stored_entries_read_too(void **state)
{
	(void)state;
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 1, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, STORE, &zip_len);
	struct bundle *b = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(bundle_parse(zip, zip_len, &b, &err), 0);
	assert_int_equal(b->n_assets, 1);
	bundle_free(b);
	free(zip);
	free(app);
}

/* ---- assets that do not match the application ---- */

static void test_missing_asset_is_named(void **state)
{
	(void)state;
	fill_sound();
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)},
				{"sound.raw", sound, sizeof(sound)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 2, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_ASSET_MISMATCH, true, &err);
	assert_string_equal(detail_str(&err, "problem"), "missing");
	assert_string_equal(detail_str(&err, "asset"), "sound.raw");
	assert_non_null(strstr(err.message, "sound.raw"));
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_extra_asset_is_named(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_ASSET_MISMATCH, true, &err);
	assert_string_equal(detail_str(&err, "problem"), "extra");
	assert_string_equal(detail_str(&err, "asset"), "logo.png");
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_changed_asset_is_a_hash_mismatch(void **state)
{
	(void)state;
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 1, &app_len);
	static const uint8_t other[] = "\x89PNG\r\n\x1a\n another logo";
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", other, sizeof(other)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_ASSET_MISMATCH, true, &err);
	assert_string_equal(detail_str(&err, "problem"), "hash-mismatch");
	uint8_t sha[32];
	char hex[65];
	sha256_of(logo, sizeof(logo), sha);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", sha[i]);
	assert_string_equal(detail_str(&err, "expected_sha256"), hex);
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_damaged_application_is_image_corrupt_and_described(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	app[app_len / 2] ^= 0xff;
	struct blob e[] = {{APP_NAME, app, app_len}};
	uint8_t *zip = make_zip(e, 1, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_IMAGE_CORRUPT, true, &err);
	assert_non_null(strstr(err.message, APP_NAME));
	error_clear(&err);
	free(zip);
	free(app);
}

/* ---- hostile and broken zips ---- */

static void test_zip_bomb_is_refused_before_inflating(void **state)
{
	(void)state;
	size_t app_len, zip_len, bomb_len = 10u * 1024 * 1024;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	uint8_t *bomb = calloc(1, bomb_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/bomb.raw", bomb, bomb_len}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	free(bomb);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_COMPRESSION_RATIO, false, &err);
	assert_string_equal(detail_str(&err, "entry"), "assets/bomb.raw");
	assert_int_equal(detail_int(&err, "uncompressed"), (long long)bomb_len);
	assert_int_equal(detail_int(&err, "limit"), BUNDLE_RATIO_MAX);
	error_clear(&err);
	free(zip);
	free(app);
}

/* Offsets of the local and central headers of the entry named name. */
static void find_headers(uint8_t *zip, size_t len, const char *name, size_t *local, size_t *central)
{
	size_t nl = strlen(name);
	*local = *central = 0;
	for (size_t i = 0; i + 46 + nl <= len; i++) {
		if (zip[i] == 'P' && zip[i + 1] == 'K' && zip[i + 2] == 3 && zip[i + 3] == 4 &&
		    memcmp(zip + i + 30, name, nl) == 0)
			*local = i;
		if (zip[i] == 'P' && zip[i + 1] == 'K' && zip[i + 2] == 1 && zip[i + 3] == 2 &&
		    memcmp(zip + i + 46, name, nl) == 0)
			*central = i;
	}
	assert_true(*local || *central);
	assert_true(*central);
}

static void test_forged_sizes_over_64_mib_are_refused_from_the_directory(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/big.raw", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	size_t local, central;
	find_headers(zip, zip_len, "assets/big.raw", &local, &central);
	bytes_put_le32(zip + local + 22, 0x7fffffffu);	 /* uncompressed size, local header */
	bytes_put_le32(zip + central + 24, 0x7fffffffu); /* ... and central directory */
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_TOO_LARGE, false, &err);
	assert_int_equal(detail_int(&err, "limit"), BUNDLE_TOTAL_MAX);
	assert_string_equal(detail_str(&err, "entry"), "assets/big.raw");
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_dotdot_entry_is_an_unsafe_name(void **state)
{
	(void)state;
	static const char *const names[] = {"assets/../../etc/cron.d/x", "../app.bin",
					    "assets\\..\\..\\x"};
	size_t app_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	for (size_t i = 0; i < 3; i++) {
		size_t zip_len;
		struct blob e[] = {{APP_NAME, app, app_len}, {names[i], logo, sizeof(logo)}};
		uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
		struct error err;
		expect_error(zip, zip_len, ERR_BUNDLE_UNSAFE_NAME, false, &err);
		assert_string_equal(detail_str(&err, "entry"), names[i]);
		assert_non_null(strstr(detail_str(&err, "reason"), ".."));
		error_clear(&err);
		free(zip);
	}
	free(app);
}

static void test_absolute_entry_is_an_unsafe_name(void **state)
{
	(void)state;
	static const char *const names[] = {"/etc/passwd", "C:/x/app.bin"};
	size_t app_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	for (size_t i = 0; i < 2; i++) {
		size_t zip_len;
		struct blob e[] = {{APP_NAME, app, app_len}, {names[i], logo, sizeof(logo)}};
		uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
		struct error err;
		expect_error(zip, zip_len, ERR_BUNDLE_UNSAFE_NAME, false, &err);
		assert_non_null(strstr(detail_str(&err, "reason"), "absolute"));
		error_clear(&err);
		free(zip);
	}
	free(app);
}

static void test_escape_bytes_never_reach_a_terminal_and_long_names_are_unsafe(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	/* An escape sequence in a name (written as "assets/Xred", then patched): a name not
	 * flagged UTF-8 is CP437, where libzip reads 0x1b as an arrow, so nothing reaches a
	 * terminal raw; the name is then only an asset the application does not list. */
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/Xred", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	size_t local, central;
	find_headers(zip, zip_len, "assets/Xred", &local, &central);
	zip[local + 30 + 7] = zip[central + 46 + 7] = 0x1b;
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_ASSET_MISMATCH, true, &err);
	for (const char *c = err.message; *c; c++)
		assert_true((unsigned char)*c >= 0x20);
	assert_non_null(strstr(err.message, "\xe2\x86\x90red")); /* U+2190 */
	error_clear(&err);
	free(zip);

	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	memcpy(longname, "assets/", 7);
	longname[sizeof(longname) - 1] = '\0';
	struct blob e2[] = {{APP_NAME, app, app_len}, {longname, logo, sizeof(logo)}};
	zip = make_zip(e2, 2, DEFLATE, &zip_len);
	expect_error(zip, zip_len, ERR_BUNDLE_UNSAFE_NAME, false, &err);
	assert_non_null(strstr(err.message, "longer than 256"));
	error_clear(&err);
	free(zip);
	free(app);
}

/* Found by fuzz_bundle: a name flagged UTF-8 that is not (overlong 0xc1 0x80) and holds
 * DEL made an error message that was not UTF-8, which JSON cannot carry. */
static void test_bad_utf8_name_gives_an_error_json_can_carry(void **state)
{
	(void)state;
	size_t zip_len;
	struct blob e[] = {{":t\x7f\xc1\x80\xdc\x86s", (const uint8_t *)"ss", 2}};
	uint8_t *zip = make_zip(e, 1, STORE | FLAG_UTF8, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_UNSAFE_NAME, false, &err);
	json_t *j = error_to_json(&err);
	assert_non_null(j);
	assert_non_null(json_object_get(json_object_get(j, "detail"), "entry"));
	json_decref(j);
	error_clear(&err);
	free(zip);
}

static void test_a_name_twice_is_corrupt(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len},
			   {"assets/a1", logo, sizeof(logo)},
			   {"assets/a2", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 3, STORE, &zip_len);
	/* libzip will not write two entries of one name: rename a2 to a1 in both headers. */
	size_t local, central;
	find_headers(zip, zip_len, "assets/a2", &local, &central);
	zip[local + 30 + 8] = '1';
	zip[central + 46 + 8] = '1';
	/* libzip itself refuses the directory (ZIP_ER_EXISTS); bundle.c checks it again. */
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_CORRUPT, false, &err);
	assert_non_null(strstr(detail_str(&err, "reason"), "same name"));
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_zip_without_firmware_lists_its_entries(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	/* A project folder zipped whole: the .bin is not at the top. */
	struct blob e[] = {{"project/" APP_NAME, app, app_len},
			   {"assets/logo.png", logo, sizeof(logo)},
			   {"README.md", (const uint8_t *)"hi", 2}};
	uint8_t *zip = make_zip(e, 3, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_NO_APPLICATION, false, &err);
	json_t *entries = json_object_get(err.detail, "entries");
	assert_int_equal(json_array_size(entries), 3);
	assert_string_equal(json_string_value(json_array_get(entries, 0)), "project/" APP_NAME);
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_two_firmware_files_are_refused(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{"a.bin", app, app_len}, {"b.bin", app, app_len}};
	uint8_t *zip = make_zip(e, 2, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_SEVERAL_APPLICATIONS, false, &err);
	assert_int_equal(json_array_size(json_object_get(err.detail, "applications")), 2);
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_too_many_entries_are_refused(void **state)
{
	(void)state;
	enum { N = BUNDLE_MAX_ENTRIES + 1 };
	struct blob e[N];
	char names[N][32];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "assets/a%02d", i);
		e[i] = (struct blob){names[i], logo, sizeof(logo)};
	}
	size_t zip_len;
	uint8_t *zip = make_zip(e, N, DEFLATE, &zip_len);
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_TOO_MANY_ENTRIES, false, &err);
	assert_int_equal(detail_int(&err, "entries"), N);
	assert_int_equal(detail_int(&err, "limit"), BUNDLE_MAX_ENTRIES);
	error_clear(&err);
	free(zip);
	/* 64 is allowed (and then the missing firmware is what fails). */
	zip = make_zip(e, N - 1, DEFLATE, &zip_len);
	expect_error(zip, zip_len, ERR_BUNDLE_NO_APPLICATION, false, &err);
	error_clear(&err);
	free(zip);
}

static void test_every_truncation_is_corrupt(void **state)
{
	(void)state;
	size_t app_len, zip_len;
	uint8_t *app = read_fixture(P2_APP, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}};
	uint8_t *zip = make_zip(e, 1, DEFLATE, &zip_len);
	for (size_t cut = 0; cut < zip_len; cut += zip_len / 97 + 1) {
		struct bundle *b = NULL;
		struct error err;
		error_init(&err);
		assert_int_equal(bundle_parse(zip, cut, &b, &err), -1);
		assert_null(b);
		assert_int_equal(err.code, ERR_BUNDLE_CORRUPT);
		error_clear(&err);
	}
	free(zip);
	free(app);
}

static void test_crc_error_in_a_stored_entry_is_corrupt(void **state)
{
	(void)state;
	struct blob assets[] = {{"logo.png", logo, sizeof(logo)}};
	size_t app_len, zip_len;
	uint8_t *app = restamp_p2(assets, 1, &app_len);
	struct blob e[] = {{APP_NAME, app, app_len}, {"assets/logo.png", logo, sizeof(logo)}};
	uint8_t *zip = make_zip(e, 2, STORE, &zip_len);
	uint8_t *at = memmem(zip, zip_len, "a small logo", 12);
	assert_non_null(at);
	at[2] ^= 0x20;
	struct error err;
	expect_error(zip, zip_len, ERR_BUNDLE_CORRUPT, false, &err);
	assert_string_equal(detail_str(&err, "entry"), "assets/logo.png");
	assert_int_equal(detail_int(&err, "zip_error"), ZIP_ER_CRC);
	assert_non_null(strstr(err.message, "CRC"));
	error_clear(&err);
	free(zip);
	free(app);
}

static void test_garbage_and_empty_input_are_corrupt(void **state)
{
	(void)state;
	static const uint8_t garbage[] = "PK\3\4 this is not really a zip file at all";
	struct error err;
	expect_error(garbage, sizeof(garbage), ERR_BUNDLE_CORRUPT, false, &err);
	error_clear(&err);
	expect_error(garbage, 0, ERR_BUNDLE_CORRUPT, false, &err);
	error_clear(&err);
	assert_false(bundle_is_zip(garbage + 4, sizeof(garbage) - 4));
	assert_false(bundle_is_zip(garbage, 3));
}

static void test_empty_zip_has_no_application(void **state)
{
	(void)state;
	/* An empty zip is its end-of-central-directory record alone. */
	static const uint8_t eocd[22] = {'P', 'K', 5, 6};
	assert_true(bundle_is_zip(eocd, sizeof(eocd)));
	struct error err;
	expect_error(eocd, sizeof(eocd), ERR_BUNDLE_NO_APPLICATION, false, &err);
	error_clear(&err);
}

/* An asset module's platform field is 0 (createAssetModule() leaves it so): that is
 * not the Core, the module names no platform. */
static void test_asset_module_names_no_platform(void **state)
{
	(void)state;
	static const uint8_t data[] = "\x89PNG not really";
	uint8_t *mod = NULL;
	size_t len = 0;
	struct error err;
	error_init(&err);
	assert_int_equal(asset_module_build("logo.png", data, sizeof(data), &mod, &len, &err), 0);
	struct image *img = NULL;
	assert_int_equal(image_parse(mod, len, &img, &err), 0);
	assert_int_equal(img->n_modules, 1);
	const struct image_module *m = &img->modules[0];
	assert_int_equal(m->function, MODULE_FUNCTION_ASSET);
	assert_int_equal(m->platform_id, 0);
	assert_false(image_module_has_platform(m));
	assert_null(image_module_platform(m));
	char desc[160];
	image_module_describe(m, desc, sizeof(desc));
	assert_string_equal(desc, "asset 'logo.png', v0");
	/* A module built for a platform still has it. */
	size_t app_len = 0;
	uint8_t *app_bytes = read_fixture(P2_APP, &app_len);
	struct image *app = NULL;
	assert_int_equal(image_parse(app_bytes, app_len, &app, &err), 0);
	free(app_bytes);
	assert_true(image_module_has_platform(&app->modules[0]));
	assert_non_null(image_module_platform(&app->modules[0]));
	assert_string_equal(image_module_platform(&app->modules[0])->name, "p2");
	image_free(app);
	image_free(img);
	free(mod);
	error_clear(&err);
}

int main(void)
{
	fixtures_present_or_skip(fixtures_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_application_only_bundle_is_the_application),
	    cmocka_unit_test(test_asset_module_names_no_platform),
	    cmocka_unit_test(test_application_with_two_assets_cross_checks),
	    cmocka_unit_test(test_stored_entries_read_too),
	    cmocka_unit_test(test_missing_asset_is_named),
	    cmocka_unit_test(test_extra_asset_is_named),
	    cmocka_unit_test(test_changed_asset_is_a_hash_mismatch),
	    cmocka_unit_test(test_damaged_application_is_image_corrupt_and_described),
	    cmocka_unit_test(test_zip_bomb_is_refused_before_inflating),
	    cmocka_unit_test(test_forged_sizes_over_64_mib_are_refused_from_the_directory),
	    cmocka_unit_test(test_dotdot_entry_is_an_unsafe_name),
	    cmocka_unit_test(test_absolute_entry_is_an_unsafe_name),
	    cmocka_unit_test(test_escape_bytes_never_reach_a_terminal_and_long_names_are_unsafe),
	    cmocka_unit_test(test_bad_utf8_name_gives_an_error_json_can_carry),
	    cmocka_unit_test(test_a_name_twice_is_corrupt),
	    cmocka_unit_test(test_zip_without_firmware_lists_its_entries),
	    cmocka_unit_test(test_two_firmware_files_are_refused),
	    cmocka_unit_test(test_too_many_entries_are_refused),
	    cmocka_unit_test(test_every_truncation_is_corrupt),
	    cmocka_unit_test(test_crc_error_in_a_stored_entry_is_corrupt),
	    cmocka_unit_test(test_garbage_and_empty_input_are_corrupt),
	    cmocka_unit_test(test_empty_zip_has_no_application),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
