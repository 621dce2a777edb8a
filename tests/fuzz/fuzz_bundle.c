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
 */
#include "bundle.h"

#include <nettle/sha2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
	if (size > 0 && (data[0] & 1))
		entries_to_zip(data + 1, size - 1);
	else
		parse_and_check(data, size);
	return 0;
}
