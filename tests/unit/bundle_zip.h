/*
 * Zip bundles for unit tests, laid out as `particle compile` makes them
 * (binary-version-reader's createApplicationAndAssetBundle()): make_zip()
 * writes entries into a memory zip with libzip; restamp_p2() gives the real
 * P2 Tinker the ASSET_DEPENDENCY extensions binary-version-reader's
 * updateModuleAssetDependencies() adds to a P2 user part (it grows down, so
 * they go in front, after the prefix): prefix-extensions flag, one 0x0012
 * record per asset, an END record padded so the new start address stays
 * 8-byte aligned, the start address and the DYNAMIC_LOCATION extension's
 * start moved down, SHA-256 and CRC-32 redone.  No published fixture carries
 * asset dependencies.  Include after <cmocka.h>.
 */
#pragma once

#include "bytes.h"
#include "image.h"

#include <nettle/sha2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#define P2_APP	 "p2/tinker-5.0.0-p2.bin"
#define APP_NAME "p2_firmware_1700000000000.bin"

static inline void sha256_of(const uint8_t *b, size_t n, uint8_t out[32])
{
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, n, b);
	sha256_digest(&ctx, 32, out);
}

static inline void reseal(uint8_t *mod, size_t size)
{
	sha256_of(mod, size - 38, mod + size - 38);
	uint32_t crc = image_crc32(mod, size - 4);
	mod[size - 4] = (uint8_t)(crc >> 24);
	mod[size - 3] = (uint8_t)(crc >> 16);
	mod[size - 2] = (uint8_t)(crc >> 8);
	mod[size - 1] = (uint8_t)crc;
}

static inline uint8_t *read_fixture(const char *rel, size_t *len)
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
	uint8_t *b = malloc((size_t)n);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

struct blob {
	const char *name;
	const uint8_t *data;
	size_t len;
};

/* The P2 Tinker with one ASSET_DEPENDENCY record per asset (see the top). */
static inline uint8_t *restamp_p2(const struct blob *assets, size_t n_assets, size_t *ret_len)
{
	size_t len;
	uint8_t *orig = read_fixture(P2_APP, &len);
	size_t ext_len = 4; /* END */
	for (size_t i = 0; i < n_assets; i++)
		ext_len += 4 + 2 + 32 + strlen(assets[i].name);
	uint32_t end = bytes_le32(orig + 4);
	size_t size = len + ext_len;
	uint32_t start = end - (uint32_t)(size - 4);
	size_t pad = start % 8;
	size += pad;
	start = end - (uint32_t)(size - 4);

	uint8_t *m = calloc(1, size);
	assert_non_null(m);
	memcpy(m, orig, 24);
	bytes_put_le32(m, start);
	m[9] |= IMAGE_FLAG_PREFIX_EXTENSIONS;
	size_t pos = 24;
	for (size_t i = 0; i < n_assets; i++) {
		size_t nl = strlen(assets[i].name);
		bytes_put_le16(m + pos, IMAGE_EXT_ASSET_DEPENDENCY);
		bytes_put_le16(m + pos + 2, (uint16_t)(4 + 2 + 32 + nl));
		m[pos + 4] = 0;	 /* SHA-256 */
		m[pos + 5] = 32; /* hash length */
		sha256_of(assets[i].data, assets[i].len, m + pos + 6);
		memcpy(m + pos + 38, assets[i].name, nl);
		pos += 38 + nl;
	}
	bytes_put_le16(m + pos, IMAGE_EXT_END);
	bytes_put_le16(m + pos + 2, (uint16_t)(4 + pad));
	pos += 4 + pad;
	memcpy(m + pos, orig + 24, len - 24);
	assert_int_equal(pos + len - 24, size);
	/* DYNAMIC_LOCATION (first suffix extension of a P2 user part): its start moves too. */
	size_t suffix = size - 4 - 62;
	assert_int_equal(m[suffix], IMAGE_EXT_DYNAMIC_LOCATION);
	bytes_put_le32(m + suffix + 4, start);
	reseal(m, size);
	free(orig);
	*ret_len = size;
	return m;
}

enum { STORE = 1, DEFLATE = 2, FLAG_UTF8 = 4 /* names written as flagged UTF-8, unchecked */ };

/* A zip of the entries, as an allocated buffer (libzip writes it into memory). */
static inline uint8_t *make_zip(const struct blob *e, size_t n, int method, size_t *ret_len)
{
	zip_error_t ze;
	zip_error_init(&ze);
	zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &ze);
	assert_non_null(src);
	zip_t *za = zip_open_from_source(src, ZIP_TRUNCATE, &ze);
	assert_non_null(za);
	zip_source_keep(src);
	for (size_t i = 0; i < n; i++) {
		zip_int64_t idx;
		size_t nl = strlen(e[i].name);
		if (nl && e[i].name[nl - 1] == '/') {
			idx = zip_dir_add(za, e[i].name, ZIP_FL_ENC_UTF_8);
		} else {
			zip_source_t *s = zip_source_buffer(za, e[i].data, e[i].len, 0);
			assert_non_null(s);
			idx =
			    zip_file_add(za, e[i].name, s,
					 method & FLAG_UTF8 ? ZIP_FL_ENC_UTF_8 : ZIP_FL_ENC_GUESS);
			if (idx >= 0)
				zip_set_file_compression(
				    za, (zip_uint64_t)idx,
				    method == STORE ? ZIP_CM_STORE : ZIP_CM_DEFLATE, 9);
		}
		if (idx < 0)
			fail_msg("zip_add %s: %s", e[i].name, zip_strerror(za));
	}
	if (zip_close(za) < 0)
		fail_msg("zip_close: %s", zip_strerror(za));
	zip_stat_t st;
	assert_int_equal(zip_source_stat(src, &st), 0);
	uint8_t *buf = malloc(st.size ? st.size : 1);
	assert_non_null(buf);
	assert_int_equal(zip_source_open(src), 0);
	assert_int_equal(zip_source_read(src, buf, st.size), (zip_int64_t)st.size);
	zip_source_close(src);
	zip_source_free(src);
	*ret_len = st.size;
	return buf;
}
