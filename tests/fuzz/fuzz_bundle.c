/*
 * libFuzzer harness for the bundle reader (proto/bundle.c): any input must
 * give either a bundle or a catalogue error, never a crash, a leak or UB, and
 * what is returned must keep the reader's promises (limits, safe names,
 * hashes that match the bytes, cross-check flags that agree).
 *
 * libzip is the system's (not instrumented), so nearly every mutation of a
 * zip's bytes stops at its CRC-32 check.  Inputs whose first byte is odd are
 * therefore read as a list of entries instead, zipped here (stored) and then
 * parsed: that reaches the names, the classification, the application parser
 * and the asset cross-check with whatever the fuzzer makes up.
 *   entry := name bytes, '\0', u16 little-endian length, that many data bytes
 *
 * Every asset of a bundle is also turned into the asset module flashd writes
 * (proto/asset_module.c), which must read back as that asset and parse as one
 * asset module; and the raw input is read as an asset module too.
 */
#include "asset_module.h"
#include "bundle.h"
#include "image.h"
#include "platform.h"

#include <nettle/sha2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_asset_module(const struct bundle_asset *a)
{
	uint8_t *m = NULL;
	size_t len = 0;
	struct error err;
	error_init(&err);
	if (asset_module_build(a->name, a->data, a->size, &m, &len, &err) < 0) {
		if (err.code != ERR_BUNDLE_ASSET_MISMATCH || strlen(a->name) <= ASSET_NAME_MAX)
			abort();
		error_clear(&err);
		return;
	}
	struct asset_module_info info;
	if (asset_module_read(m, len, &info) < 0 || strcmp(info.name, a->name) != 0 ||
	    memcmp(info.sha256, a->sha256, 32) != 0 || info.data_size != a->size ||
	    (a->size && memcmp(m + info.data_offset, a->data, a->size) != 0))
		abort();
	struct image *img = NULL;
	if (image_parse(m, len, &img, &err) < 0 || img->n_modules != 1 ||
	    img->modules[0].function != MODULE_FUNCTION_ASSET || !img->modules[0].crc_ok)
		abort();
	image_free(img);
	free(m);
}

static void check_bundle(const struct bundle *b)
{
	if (!b->app || b->n_assets > BUNDLE_MAX_ENTRIES || b->n_deps > BUNDLE_MAX_ENTRIES ||
	    b->n_entries > BUNDLE_MAX_ENTRIES || b->total_size > BUNDLE_TOTAL_MAX)
		abort();
	if (strchr(b->app_name, '/') || strlen(b->app_name) < 5)
		abort();
	for (unsigned i = 0; i < b->n_assets; i++) {
		const struct bundle_asset *a = &b->assets[i];
		uint8_t sha[32];
		struct sha256_ctx ctx;
		sha256_init(&ctx);
		sha256_update(&ctx, a->size, a->data);
		sha256_digest(&ctx, 32, sha);
		if (memcmp(sha, a->sha256, 32) != 0 || !a->name[0] || strchr(a->name, '/') ||
		    strcmp(a->name, "..") == 0)
			abort();
		if (a->size) {
			volatile uint8_t sink = a->data[0] ^ a->data[a->size - 1];
			(void)sink;
		}
		check_asset_module(a);
	}
	for (unsigned i = 0; i < b->n_deps; i++)
		if (b->deps[i].hash_ok && !b->deps[i].in_bundle)
			abort();
}

static void parse_and_check(const uint8_t *data, size_t size)
{
	struct bundle *b = NULL;
	struct error err;
	error_init(&err);
	int r = bundle_parse(data, size, &b, &err);
	if (r == 0 && (!b || error_is_set(&err)))
		abort();
	if (r < 0) {
		if (!error_is_set(&err))
			abort();
		/* A bundle comes back only for a mismatch or a damaged application. */
		if (b && err.code != ERR_BUNDLE_ASSET_MISMATCH && err.code != ERR_IMAGE_CORRUPT)
			abort();
		if (err.code == ERR_INTERNAL)
			abort();
		json_t *j = error_to_json(&err);
		if (!j)
			abort();
		json_decref(j);
	}
	if (b)
		check_bundle(b);
	error_clear(&err);
	bundle_free(b);
}

/* The structured form: entries zipped (stored) into a memory buffer. */
static void entries_to_zip(const uint8_t *data, size_t size)
{
	zip_error_t ze;
	zip_error_init(&ze);
	zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &ze);
	zip_t *za = src ? zip_open_from_source(src, ZIP_TRUNCATE, &ze) : NULL;
	zip_error_fini(&ze);
	if (!za) {
		zip_source_free(src);
		return;
	}
	zip_source_keep(src);
	size_t pos = 0;
	for (unsigned n = 0; pos < size && n < BUNDLE_MAX_ENTRIES + 2; n++) {
		const uint8_t *nul = memchr(data + pos, 0, size - pos);
		if (!nul || (size_t)(nul - data) + 3 > size)
			break;
		char name[BUNDLE_NAME_MAX + 8];
		size_t nl = (size_t)(nul - (data + pos));
		if (nl == 0 || nl >= sizeof(name))
			break;
		memcpy(name, data + pos, nl);
		name[nl] = '\0';
		pos += nl + 1;
		size_t len = (size_t)(data[pos] | data[pos + 1] << 8);
		pos += 2;
		if (len > size - pos)
			len = size - pos;
		zip_source_t *s = zip_source_buffer(za, data + pos, len, 0);
		zip_int64_t idx = s ? zip_file_add(za, name, s, ZIP_FL_ENC_UTF_8) : -1;
		if (idx < 0)
			zip_source_free(s);
		else
			zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
		pos += len;
	}
	if (zip_close(za) < 0) {
		zip_discard(za);
		zip_source_free(src);
		return;
	}
	zip_stat_t st;
	if (zip_source_stat(src, &st) == 0 && (st.valid & ZIP_STAT_SIZE) && st.size > 0 &&
	    zip_source_open(src) == 0) {
		uint8_t *buf = malloc(st.size);
		if (buf && zip_source_read(src, buf, st.size) == (zip_int64_t)st.size)
			parse_and_check(buf, st.size);
		free(buf);
		zip_source_close(src);
	}
	zip_source_free(src);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct asset_module_info info;
	if (asset_module_read(data, size, &info) == 0 &&
	    (info.data_offset + info.data_size > size || strlen(info.name) > ASSET_NAME_MAX))
		abort();
	if (size > 0 && (data[0] & 1))
		entries_to_zip(data + 1, size - 1);
	else
		parse_and_check(data, size);
	return 0;
}
