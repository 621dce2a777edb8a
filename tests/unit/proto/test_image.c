/*
 * The module parser on crafted and real images: every location rule, every
 * kind of malformed input, compressed and combined modules, files that are
 * not readable.  Crafted modules are built here with correct SHA-256 and CRC
 * so that each test breaks exactly one thing.
 */
#include "bytes.h"
#include "image.h"
#include "fixtures_present.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

/* ---- helpers ---- */

/* Recomputes SHA-256 (docs/device/module-format.md#suffix-and-checksums: bytes [0, size - 38)) and
 * the big-endian CRC-32. */
static void reseal(uint8_t *mod, size_t size)
{
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, size - 38, mod);
	sha256_digest(&ctx, 32, mod + size - 38);
	uint32_t crc = image_crc32(mod, size - 4);
	mod[size - 4] = (uint8_t)(crc >> 24);
	mod[size - 3] = (uint8_t)(crc >> 16);
	mod[size - 2] = (uint8_t)(crc >> 8);
	mod[size - 1] = (uint8_t)crc;
}

/* Recomputes only the CRC (leaves a stale SHA-256). */
static void reseal_crc(uint8_t *mod, size_t size)
{
	uint32_t crc = image_crc32(mod, size - 4);
	mod[size - 4] = (uint8_t)(crc >> 24);
	mod[size - 3] = (uint8_t)(crc >> 16);
	mod[size - 2] = (uint8_t)(crc >> 8);
	mod[size - 1] = (uint8_t)crc;
}

struct spec {
	uint16_t platform;
	uint8_t function, index, flags;
	uint16_t version;
	uint32_t start;
	size_t prefix_offset; /* bytes of "vector table" in front of the prefix */
	uint32_t word0;	      /* first word when prefix_offset > 0 */
	bool realtek;	      /* put the Realtek signature in front */
	const uint8_t *prefix_ext;
	size_t prefix_ext_len;
	size_t body_len;
	const uint8_t *suffix_var; /* in front of the 36-byte suffix tail */
	size_t suffix_var_len;
	uint8_t dep_function, dep_index;
	uint16_t dep_version;
};

/* Builds a sealed module into a new buffer; returns its size. */
static size_t build(const struct spec *s, uint8_t **ret)
{
	size_t size = s->prefix_offset + IMAGE_PREFIX_SIZE + s->prefix_ext_len + s->body_len +
		      s->suffix_var_len + 36 + 4;
	uint8_t *b = calloc(1, size);
	assert_non_null(b);
	if (s->prefix_offset >= 4)
		bytes_put_le32(b, s->word0);
	if (s->realtek) {
		static const uint8_t sig[8] = {0x99, 0x99, 0x96, 0x96, 0x3f, 0xcc, 0x66, 0xfc};
		memcpy(b, sig, sizeof(sig));
	}
	uint8_t *p = b + s->prefix_offset;
	bytes_put_le32(p, s->start);
	bytes_put_le32(p + 4, s->start + (uint32_t)size - 4);
	p[9] = s->flags;
	bytes_put_le16(p + 10, s->version);
	bytes_put_le16(p + 12, s->platform);
	p[14] = s->function;
	p[15] = s->index;
	p[16] = s->dep_function;
	p[17] = s->dep_index;
	bytes_put_le16(p + 18, s->dep_version);
	size_t off = s->prefix_offset + IMAGE_PREFIX_SIZE;
	if (s->prefix_ext_len)
		memcpy(b + off, s->prefix_ext, s->prefix_ext_len);
	off += s->prefix_ext_len;
	for (size_t i = 0; i < s->body_len; i++)
		b[off + i] = (uint8_t)(i * 7 + 1);
	off += s->body_len;
	if (s->suffix_var_len)
		memcpy(b + off, s->suffix_var, s->suffix_var_len);
	bytes_put_le16(b + size - 6, (uint16_t)(s->suffix_var_len + 36));
	reseal(b, size);
	*ret = b;
	return size;
}

/* A plain Argon user part 1 with legacy product data (id 12, version 3). */
static struct spec argon_app(void)
{
	static const uint8_t product[4] = {12, 0, 3, 0};
	return (struct spec){
	    .platform = 12,
	    .function = MODULE_FUNCTION_USER,
	    .index = 1,
	    .version = 6,
	    .start = 0xd4000,
	    .body_len = 200,
	    .suffix_var = product,
	    .suffix_var_len = sizeof(product),
	    .dep_function = MODULE_FUNCTION_SYSTEM,
	    .dep_index = 1,
	    .dep_version = 2202,
	};
}

static uint8_t *read_fixture(const char *rel, size_t *len)
{
	const char *dir = getenv("FLASHD_FIXTURES");
	char path[1024];
	snprintf(path, sizeof(path), "%s/modules/%s", dir ? dir : "../shared/fixtures", rel);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open fixture %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* realloc() failure injection for the parser (linked with -Wl,--wrap=realloc):
 * while fail_realloc is set, every realloc of the parser fails. */
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static bool fail_realloc;
void *__wrap_realloc(void *p, size_t n)
{
	return fail_realloc ? NULL : __real_realloc(p, n);
}

/* Parses and expects a failure with this code into *err (the caller clears
 * it); *ret stays NULL. */
static void expect_failure(const uint8_t *buf, size_t len, enum error_code code, struct error *err)
{
	struct image *img = (struct image *)1;
	error_init(err);
	int r = image_parse(buf, len, &img, err);
	if (r == 0 || err->code != code)
		fail_msg("expected %s, got %s: %s", error_id(code), error_id(err->code),
			 err->message);
	if (code != ERR_IMAGE_CORRUPT || !json_object_get(err->detail, "stored_crc"))
		assert_null(img);
	image_free(img);
}

static struct image *expect_ok(const uint8_t *buf, size_t len)
{
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	if (image_parse(buf, len, &img, &err) < 0)
		fail_msg("parse failed: %s: %s", error_id(err.code), err.message);
	assert_non_null(img);
	return img;
}

static const char *detail_str(const struct error *e, const char *key)
{
	return json_string_value(json_object_get(e->detail, key));
}

static long long detail_int(const struct error *e, const char *key)
{
	return json_integer_value(json_object_get(e->detail, key));
}

/* ---- location rules (docs/device/module-format.md#where-the-prefix-is) ---- */

static void test_plain_user_part_parses_with_every_field(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->n_modules, 1);
	const struct image_module *m = &img->modules[0];
	assert_int_equal(m->prefix_offset, 0);
	assert_int_equal(m->prefix_rule, IMAGE_PREFIX_AT_START);
	assert_int_equal(m->platform_id, 12);
	assert_int_equal(m->function, MODULE_FUNCTION_USER);
	assert_int_equal(m->size, n);
	assert_int_equal(m->deps[0].version, 2202);
	assert_true(m->crc_ok);
	assert_int_equal(m->sha_verdict, IMAGE_SHA_OK);
	assert_true(m->has_product_data);
	assert_int_equal(m->product_id, 12);
	assert_int_equal(m->product_version, 3);
	assert_int_equal(image_module_bytes(img, m)[0], b[0]);
	image_free(img);
	free(b);
}

static void test_gen3_vector_table_puts_prefix_at_0x200(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = {.platform = 13,
			 .function = MODULE_FUNCTION_SYSTEM,
			 .index = 1,
			 .version = 2202,
			 .start = 0x30000,
			 .prefix_offset = 0x200,
			 .word0 = 0x2003f000,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].prefix_offset, 0x200);
	assert_int_equal(img->modules[0].prefix_rule, IMAGE_PREFIX_AFTER_GEN3_TABLE);
	image_free(img);
	free(b);
}

static void test_gen2_vector_table_puts_prefix_at_0x184(void **state)
{
	(void)state;
	uint8_t *b;
	/* 0x20020000 satisfies both the Gen 2 and the Gen 3 mask
	 * (docs/device/module-format.md#where-the-prefix-is). */
	struct spec s = {.platform = 6,
			 .function = MODULE_FUNCTION_SYSTEM,
			 .index = 1,
			 .version = 2202,
			 .start = 0x08020000,
			 .prefix_offset = 0x184,
			 .word0 = 0x20020000,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].prefix_offset, 0x184);
	assert_int_equal(img->modules[0].prefix_rule, IMAGE_PREFIX_AFTER_GEN2_TABLE);
	image_free(img);
	free(b);
}

static void test_gen2_platform_behind_gen3_rule_is_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	/* A Photon prefix at 0x200: the Gen 3 mask fires, but no Photon reads there. */
	struct spec s = {.platform = 6,
			 .function = MODULE_FUNCTION_SYSTEM,
			 .index = 1,
			 .version = 2202,
			 .start = 0x08020000,
			 .prefix_offset = 0x200,
			 .word0 = 0x20020000,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	assert_non_null(detail_str(&e, "reason"));
	error_clear(&e);
	free(b);
}

static void test_gen3_platform_behind_gen2_rule_is_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = {.platform = 12,
			 .function = MODULE_FUNCTION_SYSTEM,
			 .index = 1,
			 .version = 2202,
			 .start = 0x30000,
			 .prefix_offset = 0x184,
			 .word0 = 0x20020000,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
}

static void test_core_vector_table_puts_prefix_at_0x10c(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = {.platform = 0,
			 .function = MODULE_FUNCTION_MONO,
			 .version = 207,
			 .start = 0x08005000,
			 .prefix_offset = 0x10c,
			 .word0 = 0x20005000,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].prefix_offset, 0x10c);
	assert_int_equal(img->modules[0].prefix_rule, IMAGE_PREFIX_AFTER_CORE_TABLE);
	image_free(img);
	free(b);
}

static void test_realtek_header_puts_prefix_at_0x20_for_p2_only(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = {.platform = 32,
			 .function = MODULE_FUNCTION_BOOTLOADER,
			 .version = 2400,
			 .start = 0x08004000,
			 .prefix_offset = 0x20,
			 .realtek = true,
			 .body_len = 64};
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].prefix_offset, 0x20);
	assert_int_equal(img->modules[0].prefix_rule, IMAGE_PREFIX_AFTER_REALTEK);
	image_free(img);
	free(b);

	s.platform = 12; /* an Argon prefix behind a Realtek header */
	n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
}

static void test_prefix_at_start_is_refused_when_its_platform_would_look_elsewhere(void **state)
{
	(void)state;
	uint8_t *b;
	/* Start address 0x20000000 looks like a stack pointer to an nRF52 bootloader,
	 * which would then read the prefix at 0x200. */
	struct spec s = argon_app();
	s.start = 0x20000000;
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
}

static void test_prefix_elsewhere_is_not_found_by_scanning(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	/* The same valid module behind 16 bytes of junk: nothing points at it. */
	uint8_t *shifted = calloc(1, n + 16);
	memcpy(shifted + 16, b, n);
	struct error e;
	expect_failure(shifted, n + 16, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(shifted);
	free(b);
}

/* ---- malformed input ---- */

static void test_empty_input_is_not_a_module(void **state)
{
	(void)state;
	struct error e;
	expect_failure((const uint8_t *)"", 0, ERR_IMAGE_NOT_A_MODULE, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "empty"));
	assert_int_equal(detail_int(&e, "size"), 0);
	error_clear(&e);
}

static void test_one_byte_is_not_a_module(void **state)
{
	(void)state;
	uint8_t b = 0xa5;
	struct error e;
	expect_failure(&b, 1, ERR_IMAGE_NOT_A_MODULE, &e);
	assert_int_equal(detail_int(&e, "size"), 1);
	error_clear(&e);
}

static void test_every_short_prefix_of_a_module_fails_cleanly(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	for (size_t len = 0; len < n; len++) {
		struct image *img = NULL;
		struct error err;
		error_init(&err);
		assert_int_equal(image_parse(b, len, &img, &err), -1);
		assert_null(img);
		assert_true(err.code == ERR_IMAGE_NOT_A_MODULE || err.code == ERR_IMAGE_TRUNCATED);
		if (len >= IMAGE_MIN_MODULE_SIZE)
			assert_int_equal(err.code, ERR_IMAGE_TRUNCATED);
		error_clear(&err);
	}
	free(b);
}

static void test_prefix_pointing_past_the_end_is_truncated(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le32(b + 4, s.start + 0x10000); /* end address 64 KiB on */
	struct error e;
	expect_failure(b, n, ERR_IMAGE_TRUNCATED, &e);
	assert_int_equal(detail_int(&e, "size"), (long long)n);
	assert_int_equal(detail_int(&e, "expected_size"), 0x10000 + 4);
	error_clear(&e);
	free(b);
}

static void test_real_system_part_cut_in_half_is_truncated(void **state)
{
	(void)state;
	size_t n;
	uint8_t *b = read_fixture("photon/photon-system-part1@2.2.0.bin", &n);
	struct error e;
	expect_failure(b, n / 2, ERR_IMAGE_TRUNCATED, &e);
	assert_int_equal(detail_int(&e, "expected_size"), (long long)n);
	error_clear(&e);
	free(b);
}

static void test_huge_declared_size_is_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le32(b, 0);
	bytes_put_le32(b + 4, 0xfffffff0u);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	assert_non_null(strstr(e.message, "declares"));
	error_clear(&e);
	free(b);
}

static void test_end_before_start_is_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le32(b + 4, s.start - 4);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
}

static void test_suffix_size_ffff_with_good_crc_is_unsupported(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le16(b + n - 6, 0xffff);
	reseal(b, n);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_UNSUPPORTED, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "0xffff"));
	error_clear(&e);
	free(b);
}

static void test_suffix_size_larger_than_module_is_corrupt(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le16(b + n - 6, 0xfff0);
	reseal(b, n);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_CORRUPT, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "suffix size"));
	error_clear(&e);
	free(b);
}

static void test_suffix_size_below_tail_is_corrupt(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	bytes_put_le16(b + n - 6, 10);
	reseal(b, n);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_CORRUPT, &e);
	error_clear(&e);
	free(b);
}

static void test_flipped_byte_is_corrupt_and_still_described(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	b[100] ^= 0x01;
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_parse(b, n, &img, &err), -1);
	assert_int_equal(err.code, ERR_IMAGE_CORRUPT);
	assert_non_null(detail_str(&err, "stored_crc"));
	assert_non_null(detail_str(&err, "computed_crc"));
	assert_non_null(img);
	assert_false(img->modules[0].crc_ok);
	assert_int_equal(img->modules[0].platform_id, 12);
	assert_int_equal(img->modules[0].product_id, 12);
	image_free(img);
	error_clear(&err);
	free(b);
}

static void test_sha_mismatch_is_only_a_warning(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	b[n - 20] ^= 0xff; /* inside the stored SHA-256 */
	reseal_crc(b, n);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].sha_verdict, IMAGE_SHA_MISMATCH);
	image_free(img);
	free(b);
}

static void test_real_softdevice_with_sha_mismatch_is_valid(void **state)
{
	(void)state;
	size_t n;
	uint8_t *b = read_fixture("argon/argon-softdevice@2.0.1.bin", &n);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].sha_verdict, IMAGE_SHA_MISMATCH);
	assert_int_equal(img->modules[0].flags, IMAGE_FLAG_DROP_MODULE_INFO);
	assert_false(img->modules[0].has_product_data);
	image_free(img);
	free(b);
}

static void test_undefined_function_or_flags_are_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	s.function = 42;
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
	s = argon_app();
	s.flags = 0x80;
	n = build(&s, &b);
	expect_failure(b, n, ERR_IMAGE_NOT_A_MODULE, &e);
	error_clear(&e);
	free(b);
}

static void test_unknown_platform_with_good_crc_is_unsupported(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	s.platform = 37;
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_UNSUPPORTED, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "37"));
	error_clear(&e);
	free(b);
}

static void test_trailing_bytes_after_the_crc_are_not_a_module(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	uint8_t *padded = malloc(n + 100);
	memcpy(padded, b, n);
	memset(padded + n, 0xff, 100);
	struct error e;
	expect_failure(padded, n + 100, ERR_IMAGE_NOT_A_MODULE, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "100 bytes"));
	error_clear(&e);
	free(padded);
	free(b);
}

static void test_oversized_buffer_is_refused_before_parsing(void **state)
{
	(void)state;
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	static const uint8_t one = 0;
	/* The length check comes first: the buffer is never read. */
	assert_int_equal(image_parse(&one, (size_t)IMAGE_FILE_MAX + 1, &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_int_equal(detail_int(&err, "limit"), IMAGE_FILE_MAX);
	error_clear(&err);
}

/* ---- extensions ---- */

static const uint8_t p2_suffix_ext[26] = {
    0x02, 0x00, 0x10, 0x00, 0x00, 0x40, 0x5f, 0x08, 0x88, 0x40, 0x5f, 0x08, 0xe8,
    0x54, 0x3f, 0x02, 0x01, 0x00, 0x0a, 0x00, 0xff, 0xff, 0x20, 0x00, 0x04, 0x00,
};

static struct spec p2_app(void)
{
	return (struct spec){
	    .platform = 32,
	    .function = MODULE_FUNCTION_USER,
	    .index = 1,
	    .version = 6,
	    .start = 0x085f4000,
	    .body_len = 128,
	    .suffix_var = p2_suffix_ext,
	    .suffix_var_len = sizeof(p2_suffix_ext),
	    .dep_function = MODULE_FUNCTION_SYSTEM,
	    .dep_index = 1,
	    .dep_version = 5002,
	};
}

static void test_suffix_extensions_give_product_and_dynamic_location(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = p2_app();
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	const struct image_module *m = &img->modules[0];
	assert_int_equal(m->n_suffix_ext, 2);
	assert_int_equal(m->suffix_ext[0].type, IMAGE_EXT_DYNAMIC_LOCATION);
	assert_true(m->has_dynamic_location);
	assert_int_equal(m->dynalib_load_address, 0x085f4088);
	assert_int_equal(m->product_id, 32);
	assert_int_equal(m->product_version, 4);
	image_free(img);
	free(b);
}

static void test_suffix_extension_length_zero_or_overflowing_is_corrupt(void **state)
{
	(void)state;
	static const uint16_t bad_lengths[] = {0, 2, 3, 27, 0xffff};
	for (size_t i = 0; i < sizeof(bad_lengths) / sizeof(bad_lengths[0]); i++) {
		uint8_t ext[26];
		memcpy(ext, p2_suffix_ext, sizeof(ext));
		bytes_put_le16(ext + 2, bad_lengths[i]);
		struct spec s = p2_app();
		s.suffix_var = ext;
		uint8_t *b;
		size_t n = build(&s, &b);
		struct error e;
		expect_failure(b, n, ERR_IMAGE_CORRUPT, &e);
		assert_non_null(strstr(detail_str(&e, "reason"), "claims"));
		error_clear(&e);
		free(b);
	}
}

static void test_more_extensions_than_the_limit_are_unsupported(void **state)
{
	(void)state;
	uint8_t ext[4 * (IMAGE_MAX_EXTENSIONS + 1)];
	for (size_t i = 0; i <= IMAGE_MAX_EXTENSIONS; i++) {
		bytes_put_le16(ext + 4 * i, 0x0100); /* unknown type, header only */
		bytes_put_le16(ext + 4 * i + 2, 4);
	}
	struct spec s = p2_app();
	s.suffix_var = ext;
	s.suffix_var_len = sizeof(ext);
	uint8_t *b;
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_UNSUPPORTED, &e);
	error_clear(&e);
	free(b);
}

static void test_prefix_extensions_are_parsed_up_to_end(void **state)
{
	(void)state;
	/* NAME "cat", then END with 1 byte of padding (docs/device/module-format.md#extensions). */
	static const uint8_t ext[] = {0x11, 0x00, 0x07, 0x00, 'c',  'a',
				      't',  0x00, 0x00, 0x05, 0x00, 0x00};
	struct spec s = p2_app();
	s.flags = IMAGE_FLAG_PREFIX_EXTENSIONS;
	s.prefix_ext = ext;
	s.prefix_ext_len = sizeof(ext);
	uint8_t *b;
	size_t n = build(&s, &b);
	struct image *img = expect_ok(b, n);
	assert_int_equal(img->modules[0].n_prefix_ext, 2);
	assert_string_equal(img->modules[0].name, "cat");
	image_free(img);
	free(b);
}

static void test_prefix_extensions_without_end_are_corrupt(void **state)
{
	(void)state;
	/* Flag 0x10 on a module whose bytes after the prefix are not extensions:
	 * the walk must stop at the suffix, never loop or read past it. */
	struct spec s = argon_app();
	s.flags = IMAGE_FLAG_PREFIX_EXTENSIONS;
	uint8_t ext[8] = {0x11, 0x00, 0x04, 0x00, 0x11, 0x00, 0x04, 0x00};
	s.prefix_ext = ext;
	s.prefix_ext_len = sizeof(ext);
	s.body_len = 0;
	uint8_t *b;
	size_t n = build(&s, &b);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_CORRUPT, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "END"));
	error_clear(&e);
	free(b);
}

/* ---- compressed modules (flag 0x02) ---- */

/* Wraps a sealed inner module as BVR's compressModule does. */
static size_t compress_module(const uint8_t *inner, size_t inner_len, size_t prefix_offset,
			      uint32_t declared, uint8_t method, uint8_t wbits, uint8_t **ret)
{
	uLong bound = compressBound((uLong)inner_len) + 64;
	uint8_t *z = malloc(bound);
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = (Bytef *)inner;
	zs.avail_in = (uInt)inner_len;
	zs.next_out = z;
	zs.avail_out = (uInt)bound;
	assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
	size_t zlen = zs.total_out;
	deflateEnd(&zs);

	size_t suffix = bytes_le16(inner + inner_len - 6);
	size_t size = IMAGE_PREFIX_SIZE + 8 + zlen + suffix + 4;
	uint8_t *b = calloc(1, size);
	memcpy(b, inner + prefix_offset, IMAGE_PREFIX_SIZE);
	uint32_t start =
	    (uint32_t)(inner[prefix_offset] | inner[prefix_offset + 1] << 8 |
		       inner[prefix_offset + 2] << 16 | (uint32_t)inner[prefix_offset + 3] << 24);
	bytes_put_le32(b + 4, start + (uint32_t)size - 4);
	b[9] |= IMAGE_FLAG_COMPRESSED;
	bytes_put_le16(b + 24, 8);
	b[26] = method;
	b[27] = wbits;
	bytes_put_le32(b + 28, declared);
	memcpy(b + 32, z, zlen);
	memcpy(b + 32 + zlen, inner + inner_len - 4 - suffix, suffix);
	reseal(b, size);
	free(z);
	*ret = b;
	return size;
}

static void test_compressed_module_inflates_to_its_inner_module(void **state)
{
	(void)state;
	size_t n;
	uint8_t *inner = read_fixture("boron/boron-system-part1@2.2.0.bin", &n);
	uint8_t *b;
	size_t cn = compress_module(inner, n, 0x200, (uint32_t)n, 0, 0, &b);
	struct image *img = expect_ok(b, cn);
	const struct image_module *m = &img->modules[0];
	assert_true(m->flags & IMAGE_FLAG_COMPRESSED);
	assert_int_equal(m->inflated_size, n);
	assert_int_equal(m->window_bits, 15);
	assert_non_null(m->inner);
	assert_int_equal(m->inner->n_modules, 1);
	assert_int_equal(m->inner->modules[0].prefix_offset, 0x200);
	assert_int_equal(m->inner->modules[0].version, 2202);
	assert_memory_equal(m->inner->data, inner, n);
	image_free(img);
	free(b);
	free(inner);
}

static void test_real_compressed_fixture_has_inner_module(void **state)
{
	(void)state;
	size_t n;
	uint8_t *b = read_fixture("generated/tinker-argon.compressed.bin", &n);
	struct image *img = expect_ok(b, n);
	assert_non_null(img->modules[0].inner);
	assert_int_equal(img->modules[0].inner->len, 11972);
	image_free(img);
	free(b);
}

static void test_compressed_declaring_less_than_it_inflates_is_corrupt(void **state)
{
	(void)state;
	uint8_t *inner, *b;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t cn = compress_module(inner, n, 0, (uint32_t)n - 1, 0, 0, &b);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_CORRUPT, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "more bytes than declared"));
	error_clear(&e);
	free(b);
	free(inner);
}

static void test_compressed_declaring_more_than_it_inflates_is_corrupt(void **state)
{
	(void)state;
	uint8_t *inner, *b;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t cn = compress_module(inner, n, 0, (uint32_t)n + 1, 0, 0, &b);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_CORRUPT, &e);
	error_clear(&e);
	free(b);
	free(inner);
}

static void test_inflate_without_memory_is_out_of_memory_not_corrupt(void **state)
{
	(void)state;
	/* A sound compressed module of 1 MiB: inflating grows its buffer past the
	 * first chunk, and that growth fails here.  The file is fine; the machine
	 * is short of memory, and the error must say so. */
	size_t big = 1u << 20;
	uint8_t *zeros = calloc(1, big);
	assert_non_null(zeros);
	struct spec s = argon_app();
	uint8_t *inner;
	size_t n = build(&s, &inner);
	memcpy(zeros, inner, IMAGE_PREFIX_SIZE);
	bytes_put_le16(zeros + big - 6, 40); /* the outer module copies a 40-byte suffix */
	uint8_t *b;
	size_t cn = compress_module(zeros, big, 0, (uint32_t)big, 0, 0, &b);
	fail_realloc = true;
	struct error e;
	expect_failure(b, cn, ERR_OUT_OF_MEMORY, &e);
	fail_realloc = false;
	assert_true(json_integer_value(json_object_get(e.detail, "size")) > 64 * 1024);
	error_clear(&e);
	free(b);
	free(zeros);
	free(inner);
	(void)n;
}

static void test_compression_bomb_stops_at_the_declared_size(void **state)
{
	(void)state;
	/* 2 MiB of zeros deflate to ~2 KiB; the header claims 1 MiB.  Inflating
	 * must stop one byte past the declared size, whatever the stream holds. */
	size_t big = 2u << 20;
	uint8_t *zeros = calloc(1, big);
	struct spec s = argon_app();
	uint8_t *inner;
	size_t n = build(&s, &inner);
	memcpy(zeros, inner, IMAGE_PREFIX_SIZE);
	bytes_put_le16(zeros + big - 6, 40);
	uint8_t *b;
	size_t cn = compress_module(zeros, big, 0, 1u << 20, 0, 0, &b);
	assert_true(cn < 16 * 1024);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_CORRUPT, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "more bytes than declared"));
	error_clear(&e);
	free(b);

	/* Declaring more than the limit is refused before inflating anything. */
	cn = compress_module(zeros, big, 0, IMAGE_INFLATED_MAX + 1, 0, 0, &b);
	expect_failure(b, cn, ERR_IMAGE_UNSUPPORTED, &e);
	assert_non_null(strstr(detail_str(&e, "reason"), "limit"));
	error_clear(&e);
	free(b);
	free(zeros);
	free(inner);
	(void)n;
}

static void test_unknown_compression_method_or_window_is_unsupported(void **state)
{
	(void)state;
	uint8_t *inner, *b;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t cn = compress_module(inner, n, 0, (uint32_t)n, 1, 0, &b);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_UNSUPPORTED, &e);
	error_clear(&e);
	free(b);
	cn = compress_module(inner, n, 0, (uint32_t)n, 0, 20, &b);
	expect_failure(b, cn, ERR_IMAGE_UNSUPPORTED, &e);
	error_clear(&e);
	free(b);
	free(inner);
}

static void test_garbage_deflate_data_is_corrupt(void **state)
{
	(void)state;
	uint8_t *inner, *b;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t cn = compress_module(inner, n, 0, (uint32_t)n, 0, 0, &b);
	memset(b + 32, 0xff, 16); /* 0xff...: an invalid block type */
	reseal(b, cn);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_CORRUPT, &e);
	error_clear(&e);
	free(b);
	free(inner);
}

static void test_compressed_inside_compressed_is_unsupported(void **state)
{
	(void)state;
	uint8_t *inner, *once, *twice;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t n1 = compress_module(inner, n, 0, (uint32_t)n, 0, 0, &once);
	size_t n2 = compress_module(once, n1, 0, (uint32_t)n1, 0, 0, &twice);
	struct error e;
	expect_failure(twice, n2, ERR_IMAGE_UNSUPPORTED, &e);
	assert_non_null(strstr(e.message, "compressed"));
	error_clear(&e);
	free(inner);
	free(once);
	free(twice);
}

static void test_compressed_content_of_another_module_is_corrupt(void **state)
{
	(void)state;
	uint8_t *inner, *b;
	struct spec s = argon_app();
	size_t n = build(&s, &inner);
	size_t cn = compress_module(inner, n, 0, (uint32_t)n, 0, 0, &b);
	b[15] = 2; /* the wrapper now claims user part 2 */
	reseal(b, cn);
	struct error e;
	expect_failure(b, cn, ERR_IMAGE_CORRUPT, &e);
	error_clear(&e);
	free(b);
	free(inner);
}

/* ---- combined modules (flag 0x04) ---- */

/* Sets COMBINED on a sealed module and reseals it, as BVR's combineModules. */
static void mark_combined(uint8_t *mod, size_t size, size_t prefix_offset)
{
	mod[prefix_offset + 9] |= IMAGE_FLAG_COMBINED;
	reseal(mod, size);
}

static void test_combined_file_from_two_fixtures_gives_both_modules(void **state)
{
	(void)state;
	size_t n1, n2;
	uint8_t *a = read_fixture("photon/photon-system-part1@2.2.0.bin", &n1);
	uint8_t *b = read_fixture("photon/photon-system-part2@2.2.0.bin", &n2);
	mark_combined(a, n1, 0x184);
	uint8_t *both = malloc(n1 + n2);
	memcpy(both, a, n1);
	memcpy(both + n1, b, n2);
	struct image *img = expect_ok(both, n1 + n2);
	assert_int_equal(img->n_modules, 2);
	assert_int_equal(img->modules[0].index, 1);
	assert_int_equal(img->modules[1].index, 2);
	assert_int_equal(img->modules[1].file_offset, n1);
	assert_int_equal(img->modules[1].prefix_offset, 0x184);
	assert_memory_equal(image_module_bytes(img, &img->modules[1]), b, 64);
	image_free(img);

	/* The first module flipped: corrupt, but both still described. */
	both[1000] ^= 1;
	struct image *img2 = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_parse(both, n1 + n2, &img2, &err), -1);
	assert_int_equal(err.code, ERR_IMAGE_CORRUPT);
	assert_non_null(img2);
	assert_int_equal(img2->n_modules, 2);
	assert_false(img2->modules[0].crc_ok);
	assert_true(img2->modules[1].crc_ok);
	image_free(img2);
	error_clear(&err);
	free(both);
	free(a);
	free(b);
}

static void test_combined_flag_on_the_last_module_is_truncated(void **state)
{
	(void)state;
	uint8_t *b;
	struct spec s = argon_app();
	size_t n = build(&s, &b);
	mark_combined(b, n, 0);
	struct error e;
	expect_failure(b, n, ERR_IMAGE_TRUNCATED, &e);
	error_clear(&e);
	free(b);
}

static void test_more_combined_modules_than_the_limit_are_unsupported(void **state)
{
	(void)state;
	uint8_t *one;
	struct spec s = argon_app();
	size_t n = build(&s, &one);
	mark_combined(one, n, 0);
	size_t count = IMAGE_MAX_MODULES + 1;
	uint8_t *all = malloc(n * count);
	for (size_t i = 0; i < count; i++)
		memcpy(all + i * n, one, n);
	struct error e;
	expect_failure(all, n * count, ERR_IMAGE_UNSUPPORTED, &e);
	error_clear(&e);
	free(all);
	free(one);
}

/* ---- files ---- */

static void test_directory_is_file_unreadable(void **state)
{
	(void)state;
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path("/tmp", &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_int_equal(detail_int(&err, "errno"), EISDIR);
	assert_string_equal(detail_str(&err, "file"), "/tmp");
	assert_null(img);
	error_clear(&err);
}

static void test_fifo_is_refused_without_blocking(void **state)
{
	(void)state;
	char path[] = "/tmp/flashd-test-fifo-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path(path, &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_non_null(strstr(detail_str(&err, "reason"), "regular"));
	error_clear(&err);
	unlink(path);
}

static void test_read_error_is_file_unreadable(void **state)
{
	(void)state;
	/* Reading /proc/self/mem at offset 0 fails with EIO even for root. */
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path("/proc/self/mem", &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_int_equal(detail_int(&err, "errno"), EIO);
	error_clear(&err);
}

static void test_missing_file_is_file_unreadable(void **state)
{
	(void)state;
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path("/nonexistent/firmware.bin", &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_int_equal(detail_int(&err, "errno"), ENOENT);
	error_clear(&err);
}

static void test_proc_file_with_zero_size_is_read_to_the_end(void **state)
{
	(void)state;
	/* st_size is 0, yet it has content: it must be read, then refused as text. */
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path("/proc/self/status", &img, &err), -1);
	assert_int_equal(err.code, ERR_IMAGE_NOT_A_MODULE);
	assert_true(detail_int(&err, "size") > 100);
	error_clear(&err);
}

static void test_file_over_the_size_limit_is_refused_unread(void **state)
{
	(void)state;
	char path[] = "/tmp/flashd-test-big-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)IMAGE_FILE_MAX + 1), 0); /* sparse */
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_fd(fd, "big.bin", &img, &err), -1);
	assert_int_equal(err.code, ERR_FILE_UNREADABLE);
	assert_int_equal(detail_int(&err, "limit"), IMAGE_FILE_MAX);
	assert_string_equal(detail_str(&err, "file"), "big.bin");
	error_clear(&err);
	close(fd);
	unlink(path);
}

static void test_real_file_loads_by_path(void **state)
{
	(void)state;
	const char *dir = getenv("FLASHD_FIXTURES");
	char path[1024];
	snprintf(path, sizeof(path), "%s/modules/electron/electron_tinker.bin",
		 dir ? dir : "../shared/fixtures");
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_load_path(path, &img, &err), 0);
	assert_int_equal(img->len, 5776);
	assert_int_equal(img->modules[0].platform_id, 10);
	image_free(img);
	image_free(NULL);
}

/* ---- descriptions ---- */

static void assert_describes(const char *fixture, const char *want)
{
	size_t n;
	uint8_t *b = read_fixture(fixture, &n);
	struct image *img = expect_ok(b, n);
	char buf[160];
	assert_string_equal(image_module_describe(&img->modules[0], buf, sizeof(buf)), want);
	image_free(img);
	free(b);
}

static void test_descriptions_say_what_the_file_is(void **state)
{
	(void)state;
	assert_describes("photon/tinker-0.4.5-photon.bin", "Photon application (user part 1), v3");
	assert_describes("argon/argon-system-part1@2.2.0.bin",
			 "Argon system part 1, v2202 (Device OS 2.2.0)");
	/* Electron file-name trap (docs/device/memory-maps.md#gen-2): system-part1.bin holds system
	 * module 3. */
	assert_describes("electron/electron-system-part1@2.2.0.bin",
			 "Electron system module 3, v2202 (Device OS 2.2.0)");
	assert_describes("boron/boron-bootloader@2.2.0.bin", "Boron bootloader, v1006");
	assert_describes("argon/argon-softdevice@2.0.1.bin",
			 "Argon radio stack (SoftDevice), v202");
	assert_describes("core/core_tinker-8e55851b.bin",
			 "Core monolithic firmware, v207 (Device OS 0.7.0)");
	char small[8];
	struct image_module m = {.platform_id = 6, .function = MODULE_FUNCTION_USER, .index = 1};
	image_module_describe(&m, small, sizeof(small));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

/* Every fixture the main group reads. */
static const char *const fixtures_read[] = {
    "argon/argon-softdevice@2.0.1.bin",
    "argon/argon-system-part1@2.2.0.bin",
    "boron/boron-bootloader@2.2.0.bin",
    "boron/boron-system-part1@2.2.0.bin",
    "core/core_tinker-8e55851b.bin",
    "electron/electron-system-part1@2.2.0.bin",
    "electron/electron_tinker.bin",
    "photon/photon-system-part1@2.2.0.bin",
    "photon/photon-system-part2@2.2.0.bin",
    "photon/tinker-0.4.5-photon.bin",
    NULL,
};

/*
 * A compressed module made by Particle's encoder: a test of its own (argument
 * "compressed-fixture"), since the fetched fixture set has it only where Node's zlib reproduces it
 * byte for byte.
 */
static const char *const compressed_fixture_read[] = {
    "generated/tinker-argon.compressed.bin",
    NULL,
};

static int run_compressed_fixture(void)
{
	fixtures_present_or_skip(compressed_fixture_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_real_compressed_fixture_has_inner_module),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "compressed-fixture") == 0)
		return run_compressed_fixture();
	fixtures_present_or_skip(fixtures_read);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_user_part_parses_with_every_field),
	    cmocka_unit_test(test_gen3_vector_table_puts_prefix_at_0x200),
	    cmocka_unit_test(test_gen2_vector_table_puts_prefix_at_0x184),
	    cmocka_unit_test(test_gen2_platform_behind_gen3_rule_is_not_a_module),
	    cmocka_unit_test(test_gen3_platform_behind_gen2_rule_is_not_a_module),
	    cmocka_unit_test(test_core_vector_table_puts_prefix_at_0x10c),
	    cmocka_unit_test(test_realtek_header_puts_prefix_at_0x20_for_p2_only),
	    cmocka_unit_test(
		test_prefix_at_start_is_refused_when_its_platform_would_look_elsewhere),
	    cmocka_unit_test(test_prefix_elsewhere_is_not_found_by_scanning),
	    cmocka_unit_test(test_empty_input_is_not_a_module),
	    cmocka_unit_test(test_one_byte_is_not_a_module),
	    cmocka_unit_test(test_every_short_prefix_of_a_module_fails_cleanly),
	    cmocka_unit_test(test_prefix_pointing_past_the_end_is_truncated),
	    cmocka_unit_test(test_real_system_part_cut_in_half_is_truncated),
	    cmocka_unit_test(test_huge_declared_size_is_not_a_module),
	    cmocka_unit_test(test_end_before_start_is_not_a_module),
	    cmocka_unit_test(test_suffix_size_ffff_with_good_crc_is_unsupported),
	    cmocka_unit_test(test_suffix_size_larger_than_module_is_corrupt),
	    cmocka_unit_test(test_suffix_size_below_tail_is_corrupt),
	    cmocka_unit_test(test_flipped_byte_is_corrupt_and_still_described),
	    cmocka_unit_test(test_sha_mismatch_is_only_a_warning),
	    cmocka_unit_test(test_real_softdevice_with_sha_mismatch_is_valid),
	    cmocka_unit_test(test_undefined_function_or_flags_are_not_a_module),
	    cmocka_unit_test(test_unknown_platform_with_good_crc_is_unsupported),
	    cmocka_unit_test(test_trailing_bytes_after_the_crc_are_not_a_module),
	    cmocka_unit_test(test_oversized_buffer_is_refused_before_parsing),
	    cmocka_unit_test(test_suffix_extensions_give_product_and_dynamic_location),
	    cmocka_unit_test(test_suffix_extension_length_zero_or_overflowing_is_corrupt),
	    cmocka_unit_test(test_more_extensions_than_the_limit_are_unsupported),
	    cmocka_unit_test(test_prefix_extensions_are_parsed_up_to_end),
	    cmocka_unit_test(test_prefix_extensions_without_end_are_corrupt),
	    cmocka_unit_test(test_compressed_module_inflates_to_its_inner_module),
	    cmocka_unit_test(test_compressed_declaring_less_than_it_inflates_is_corrupt),
	    cmocka_unit_test(test_compressed_declaring_more_than_it_inflates_is_corrupt),
	    cmocka_unit_test(test_compression_bomb_stops_at_the_declared_size),
	    cmocka_unit_test(test_inflate_without_memory_is_out_of_memory_not_corrupt),
	    cmocka_unit_test(test_unknown_compression_method_or_window_is_unsupported),
	    cmocka_unit_test(test_garbage_deflate_data_is_corrupt),
	    cmocka_unit_test(test_compressed_inside_compressed_is_unsupported),
	    cmocka_unit_test(test_compressed_content_of_another_module_is_corrupt),
	    cmocka_unit_test(test_combined_file_from_two_fixtures_gives_both_modules),
	    cmocka_unit_test(test_combined_flag_on_the_last_module_is_truncated),
	    cmocka_unit_test(test_more_combined_modules_than_the_limit_are_unsupported),
	    cmocka_unit_test(test_directory_is_file_unreadable),
	    cmocka_unit_test(test_fifo_is_refused_without_blocking),
	    cmocka_unit_test(test_read_error_is_file_unreadable),
	    cmocka_unit_test(test_missing_file_is_file_unreadable),
	    cmocka_unit_test(test_proc_file_with_zero_size_is_read_to_the_end),
	    cmocka_unit_test(test_file_over_the_size_limit_is_refused_unread),
	    cmocka_unit_test(test_real_file_loads_by_path),
	    cmocka_unit_test(test_descriptions_say_what_the_file_is),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
