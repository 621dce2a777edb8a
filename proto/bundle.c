/*
 * Particle application bundles (bundle.h), read with libzip.
 *
 * libzip rather than libarchive: a bundle is a zip and nothing else, and
 * libzip reads only zips (libarchive's reader brings two dozen formats and
 * filters this parser would have to fence off); it reads the central
 * directory, so every entry's declared sizes and compression method are
 * known before one byte is inflated; it verifies each entry's CRC-32 and
 * size at the end of the read (ZIP_ER_CRC, ZIP_ER_INCONS); ZIP_CHECKCONS
 * compares the local headers with the central directory; and it reads from a
 * memory buffer (zip_source_buffer_create) without touching a file.
 */
#include "bundle.h"

#include <nettle/sha2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#define EXT_HEADER_SIZE	   4
#define HASH_TYPE_SHA256   0
#define HASH_TYPE_UNUSABLE 0xff
#define ZIP_EOCD_SIZE	   22u /* end of central directory record without comment */

static const char *const ignored_basenames[] = {".DS_Store", "Thumbs.db", "desktop.ini"};

bool bundle_is_zip(const uint8_t *buf, size_t len)
{
	return len >= 4 && buf[0] == 'P' && buf[1] == 'K' &&
	       ((buf[2] == 3 && buf[3] == 4) || (buf[2] == 5 && buf[3] == 6));
}

static void sha256(const uint8_t *buf, size_t len, uint8_t out[32])
{
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, len, buf);
	sha256_digest(&ctx, 32, out);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Whether s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		unsigned n, cp;
		if (*p < 0x80) {
			p++;
			continue;
		} else if ((*p & 0xe0) == 0xc0) {
			n = 1, cp = *p & 0x1f;
		} else if ((*p & 0xf0) == 0xe0) {
			n = 2, cp = *p & 0x0f;
		} else if ((*p & 0xf8) == 0xf0) {
			n = 3, cp = *p & 0x07;
		} else {
			return false;
		}
		for (unsigned k = 1; k <= n; k++) {
			if ((p[k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += n + 1;
	}
	return true;
}

/* Printable copy of a name for messages (control bytes shown as '?'). */
static void printable(const char *in, char *out, size_t size)
{
	size_t k = 0;
	for (; in[k] && k + 1 < size; k++)
		out[k] = (unsigned char)in[k] < 0x20 || in[k] == 0x7f ? '?' : in[k];
	out[k] = '\0';
	/* Messages and JSON need UTF-8: drop a sequence cut by the size, else mask the rest. */
	for (int cut = 0; cut < 3 && k > 0 && !utf8_valid(out); cut++)
		if ((unsigned char)out[k - 1] >= 0x80)
			out[--k] = '\0';
	if (!utf8_valid(out))
		for (char *c = out; *c; c++)
			if ((unsigned char)*c >= 0x80)
				*c = '?';
}

void bundle_free(struct bundle *b)
{
	if (!b)
		return;
	image_free(b->app);
	for (unsigned i = 0; i < b->n_assets; i++)
		free(b->assets[i].data);
	free(b);
}

uint64_t bundle_assets_bytes(const struct bundle *b)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < b->n_assets; i++)
		n += b->assets[i].size;
	return n;
}

/* ---- the application's ASSET_DEPENDENCY extensions ---- */

static void read_dep(const uint8_t *ext, size_t len, struct bundle_asset_dep *out)
{
	memset(out, 0, sizeof(*out));
	out->hash_type = HASH_TYPE_UNUSABLE;
	const uint8_t *d = ext + EXT_HEADER_SIZE;
	size_t dlen = len - EXT_HEADER_SIZE;
	if (dlen < 2 || dlen < 2u + d[1])
		return;
	size_t hash_len = d[1], name_len = dlen - 2 - hash_len;
	const uint8_t *name = d + 2 + hash_len;
	if (name_len > BUNDLE_NAME_MAX)
		name_len = BUNDLE_NAME_MAX;
	bool printable_name = true;
	for (size_t k = 0; k < name_len && name[k]; k++) {
		out->name[k] = (char)name[k];
		if (name[k] < 0x20 || name[k] == 0x7f)
			printable_name = false;
	}
	/* A name no zip entry can have is shown safely and never matches. */
	if (!printable_name || !utf8_valid(out->name)) {
		for (char *c = out->name; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
		return;
	}
	if (d[0] == HASH_TYPE_SHA256 && hash_len == sizeof(out->sha256) && out->name[0]) {
		out->hash_type = HASH_TYPE_SHA256;
		memcpy(out->sha256, d + 2, sizeof(out->sha256));
	}
}

unsigned bundle_module_asset_deps(const struct image *img, const struct image_module *m,
				  struct bundle_asset_dep *out, unsigned max)
{
	const uint8_t *mod = image_module_bytes(img, m);
	const struct image_extension *lists[2] = {m->prefix_ext, m->suffix_ext};
	unsigned counts[2] = {m->n_prefix_ext, m->n_suffix_ext}, n = 0;
	for (int l = 0; l < 2; l++)
		for (unsigned i = 0; i < counts[l]; i++) {
			const struct image_extension *e = &lists[l][i];
			if (e->type != IMAGE_EXT_ASSET_DEPENDENCY)
				continue;
			if (n < max)
				read_dep(mod + e->offset, e->length, &out[n]);
			n++;
		}
	return n;
}

unsigned bundle_app_asset_deps(const struct image *img, struct bundle_asset_dep *out, unsigned max)
{
	if (!img || img->n_modules == 0)
		return 0;
	const struct image_module *m = &img->modules[0];
	unsigned n = bundle_module_asset_deps(img, m, out, max);
	/* A compressed application keeps its prefix extensions inside the deflated part. */
	if (n == 0 && m->inner && m->inner->n_modules)
		n = bundle_module_asset_deps(m->inner, &m->inner->modules[0], out, max);
	return n;
}

/* ---- errors ---- */

static int corrupt(struct error *err, const char *entry, int zip_code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int corrupt(struct error *err, const char *entry, int zip_code, const char *fmt, ...)
{
	char reason[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (entry) {
		char name[96];
		printable(entry, name, sizeof(name));
		error_set(err, ERR_BUNDLE_CORRUPT, "the bundle is damaged: %s: %s", name, reason);
		error_detail_str(err, "entry", name);
	} else {
		error_set(err, ERR_BUNDLE_CORRUPT, "the bundle is damaged: %s", reason);
	}
	error_detail_str(err, "reason", reason);
	if (zip_code)
		error_detail_int(err, "zip_error", zip_code);
	return -1;
}

static int zip_failed(struct error *err, const char *entry, zip_error_t *ze)
{
	int code = zip_error_code_zip(ze);
	switch (code) {
	case ZIP_ER_NOPASSWD:
	case ZIP_ER_WRONGPASSWD:
	case ZIP_ER_ENCRNOTSUPP:
		return corrupt(err, entry, code, "it is encrypted, and Particle bundles never are");
	case ZIP_ER_COMPNOTSUPP:
		return corrupt(err, entry, code,
			       "it uses a compression method other than deflate or store");
	case ZIP_ER_EXISTS:
		return corrupt(err, entry, code, "two of its entries have the same name");
	case ZIP_ER_CRC:
		return corrupt(err, entry, code,
			       "its CRC-32 does not match its contents (CRC error)");
	default:
		return corrupt(err, entry, code, "%s", zip_error_strerror(ze));
	}
}

static int unsafe_name(struct error *err, const char *entry, const char *why)
{
	char name[BUNDLE_NAME_MAX + 1];
	printable(entry, name, sizeof(name));
	error_set(err, ERR_BUNDLE_UNSAFE_NAME, "the bundle holds an entry named \"%s\": %s", name,
		  why);
	error_detail_str(err, "entry", name);
	error_detail_str(err, "reason", why);
	return -1;
}

/* ---- names ---- */

/* NULL when the name is safe, else why not. */
static const char *name_problem(const char *name)
{
	size_t len = strlen(name);
	if (len == 0)
		return "an empty name";
	if (len > BUNDLE_NAME_MAX)
		return "a name longer than 256 bytes";
	if (name[0] == '/' || name[0] == '\\')
		return "an absolute path";
	if (len >= 2 && name[1] == ':' &&
	    ((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z')))
		return "an absolute path (drive letter)";
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return "a control character in the name";
	if (!utf8_valid(name))
		return "a name that is not valid UTF-8";
	/* Components split at '/' and '\' (zips made on Windows): none may be "..". */
	const char *p = name;
	while (*p) {
		size_t n = strcspn(p, "/\\");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return "a \"..\" component, which would leave the bundle's folder";
		p += n;
		if (*p)
			p++;
	}
	return NULL;
}

enum entry_kind { ENTRY_DIR, ENTRY_APP, ENTRY_ASSET, ENTRY_ENV, ENTRY_IGNORED };

static enum entry_kind classify(const char *name)
{
	size_t len = strlen(name);
	if (name[len - 1] == '/')
		return ENTRY_DIR;
	if (strcmp(name, BUNDLE_ENV_FILE) == 0)
		return ENTRY_ENV;
	if (!strchr(name, '/'))
		return len > 4 && strcmp(name + len - 4, ".bin") == 0 ? ENTRY_APP : ENTRY_IGNORED;
	size_t dir = strlen(BUNDLE_ASSETS_DIR);
	if (strncmp(name, BUNDLE_ASSETS_DIR, dir) != 0 || strchr(name + dir, '/'))
		return ENTRY_IGNORED;
	for (size_t i = 0; i < sizeof(ignored_basenames) / sizeof(ignored_basenames[0]); i++)
		if (strcmp(name + dir, ignored_basenames[i]) == 0)
			return ENTRY_IGNORED;
	return ENTRY_ASSET;
}

/* ---- reading ---- */

/* Inflates entry i (declared size `size`) into a new buffer; the read must end
 * exactly at the declared size, and libzip checks the CRC-32 at its end. */
static uint8_t *read_entry(zip_t *za, zip_uint64_t i, const char *name, uint64_t size,
			   struct error *err)
{
	zip_file_t *zf = zip_fopen_index(za, i, 0);
	if (!zf) {
		zip_failed(err, name, zip_get_error(za));
		return NULL;
	}
	uint8_t *buf = malloc(size + 1);
	if (!buf) {
		zip_fclose(zf);
		error_set(err, ERR_INTERNAL, "out of memory reading %s from the bundle", name);
		return NULL;
	}
	uint64_t got = 0;
	for (;;) {
		/* One byte more than declared: an entry that inflates past its size is refused. */
		zip_int64_t n = zip_fread(zf, buf + got, size + 1 - got);
		if (n < 0) {
			zip_failed(err, name, zip_file_get_error(zf));
			goto fail;
		}
		if (n == 0)
			break;
		got += (uint64_t)n;
		if (got > size) {
			corrupt(err, name, 0,
				"it inflates to more than the %llu bytes its header declares",
				(unsigned long long)size);
			goto fail;
		}
	}
	if (got != size) {
		corrupt(err, name, 0, "it inflates to %llu bytes, but its header declares %llu",
			(unsigned long long)got, (unsigned long long)size);
		goto fail;
	}
	zip_fclose(zf);
	return buf;
fail:
	zip_fclose(zf);
	free(buf);
	return NULL;
}

static json_t *names_json(zip_t *za, zip_uint64_t n)
{
	json_t *a = json_array();
	for (zip_uint64_t i = 0; i < n; i++) {
		const char *name = zip_get_name(za, i, 0);
		char p[BUNDLE_NAME_MAX + 1];
		printable(name ? name : "?", p, sizeof(p));
		json_array_append_new(a, json_string(p));
	}
	return a;
}

/* The whole directory: limits, names, what each entry is.  Nothing inflated. */
static int scan(zip_t *za, struct bundle *b, zip_int64_t *app_index, uint64_t *app_size,
		zip_int64_t *asset_index, struct error *err)
{
	zip_int64_t n = zip_get_num_entries(za, 0);
	if (n < 0)
		return corrupt(err, NULL, 0, "its central directory cannot be read");
	if ((uint64_t)n > BUNDLE_MAX_ENTRIES) {
		error_set(err, ERR_BUNDLE_TOO_MANY_ENTRIES,
			  "the bundle has %lld entries; a bundle may have at most %u", (long long)n,
			  BUNDLE_MAX_ENTRIES);
		error_detail_int(err, "entries", n);
		error_detail_int(err, "limit", BUNDLE_MAX_ENTRIES);
		return -1;
	}
	b->n_entries = (unsigned)n;

	zip_stat_t st[BUNDLE_MAX_ENTRIES];
	const char *names[BUNDLE_MAX_ENTRIES];
	for (zip_int64_t i = 0; i < n; i++) {
		zip_stat_init(&st[i]);
		if (zip_stat_index(za, (zip_uint64_t)i, 0, &st[i]) < 0)
			return zip_failed(err, NULL, zip_get_error(za));
		if (!(st[i].valid & ZIP_STAT_NAME) || !(st[i].valid & ZIP_STAT_SIZE) ||
		    !(st[i].valid & ZIP_STAT_COMP_SIZE))
			return corrupt(err, NULL, 0, "entry %lld has no name or sizes",
				       (long long)i);
		names[i] = st[i].name;
		const char *why = name_problem(names[i]);
		if (why)
			return unsafe_name(err, names[i], why);
		for (zip_int64_t k = 0; k < i; k++)
			if (strcmp(names[k], names[i]) == 0)
				return unsafe_name(err, names[i], "it appears twice in the zip");
	}

	/* Sizes, from the directory, before anything is inflated. */
	uint64_t total = 0;
	for (zip_int64_t i = 0; i < n; i++) {
		total += st[i].size;
		if (st[i].size > BUNDLE_TOTAL_MAX || total > BUNDLE_TOTAL_MAX) {
			char name[96];
			printable(names[i], name, sizeof(name));
			error_set(err, ERR_BUNDLE_TOO_LARGE,
				  "the bundle's entries unpack to more than %u bytes (%s alone "
				  "declares %llu)",
				  BUNDLE_TOTAL_MAX, name, (unsigned long long)st[i].size);
			error_detail_int(err, "size",
					 (long long)(total > INT64_MAX ? INT64_MAX : total));
			error_detail_int(err, "limit", BUNDLE_TOTAL_MAX);
			error_detail_str(err, "entry", name);
			return -1;
		}
	}
	b->total_size = total;
	for (zip_int64_t i = 0; i < n; i++) {
		if (st[i].size < BUNDLE_RATIO_MIN_SIZE)
			continue;
		/* size <= BUNDLE_TOTAL_MAX here, so comp_size * ratio cannot overflow when smaller.
		 */
		if (st[i].comp_size < st[i].size &&
		    st[i].size > st[i].comp_size * (uint64_t)BUNDLE_RATIO_MAX) {
			char name[96];
			printable(names[i], name, sizeof(name));
			error_set(err, ERR_BUNDLE_COMPRESSION_RATIO,
				  "%s in the bundle inflates from %llu to %llu bytes, more than "
				  "%u times its size: a zip bomb, not a firmware bundle",
				  name, (unsigned long long)st[i].comp_size,
				  (unsigned long long)st[i].size, BUNDLE_RATIO_MAX);
			error_detail_str(err, "entry", name);
			error_detail_int(err, "compressed", (long long)st[i].comp_size);
			error_detail_int(err, "uncompressed", (long long)st[i].size);
			error_detail_int(err, "limit", BUNDLE_RATIO_MAX);
			return -1;
		}
	}

	*app_index = -1;
	for (zip_int64_t i = 0; i < n; i++) {
		switch (classify(names[i])) {
		case ENTRY_DIR:
			break;
		case ENTRY_APP:
			if (*app_index >= 0) {
				char first[96], second[96];
				printable(names[*app_index], first, sizeof(first));
				printable(names[i], second, sizeof(second));
				error_set(err, ERR_BUNDLE_SEVERAL_APPLICATIONS,
					  "the bundle holds two firmware files at its top, %s and "
					  "%s; a bundle has exactly one application",
					  first, second);
				json_t *apps = json_pack("[s,s]", first, second);
				error_detail_json(err, "applications", apps);
				return -1;
			}
			*app_index = i;
			*app_size = st[i].size;
			snprintf(b->app_name, sizeof(b->app_name), "%s", names[i]);
			break;
		case ENTRY_ASSET: {
			struct bundle_asset *a = &b->assets[b->n_assets];
			snprintf(a->name, sizeof(a->name), "%s",
				 names[i] + strlen(BUNDLE_ASSETS_DIR));
			a->size = st[i].size;
			asset_index[b->n_assets++] = i;
			break;
		}
		case ENTRY_ENV:
			b->has_env = true;
			b->env_size = st[i].size;
			break;
		case ENTRY_IGNORED:
			if (b->n_ignored < sizeof(b->ignored) / sizeof(b->ignored[0]))
				printable(names[i], b->ignored[b->n_ignored],
					  sizeof(b->ignored[0]));
			b->n_ignored++;
			break;
		}
	}
	if (*app_index < 0) {
		error_set(err, ERR_BUNDLE_NO_APPLICATION,
			  "the bundle has no firmware file: no .bin at the top of the zip "
			  "(%lld entries)",
			  (long long)n);
		error_detail_json(err, "entries", names_json(za, (zip_uint64_t)n));
		return -1;
	}
	return 0;
}

/* Every dependency against the assets; the first problem becomes the error. */
static int cross_check(struct bundle *b, struct error *err)
{
	const char *problem = NULL, *asset = NULL;
	char expected[65] = "", actual[65] = "";
	unsigned problems = 0;
	for (unsigned i = 0; i < b->n_deps; i++) {
		struct bundle_asset_dep *d = &b->deps[i];
		for (unsigned k = 0; k < b->n_assets; k++) {
			if (strcmp(b->assets[k].name, d->name) != 0)
				continue;
			d->in_bundle = true;
			d->hash_ok = d->hash_type == HASH_TYPE_SHA256 &&
				     memcmp(d->sha256, b->assets[k].sha256, 32) == 0;
			if (!d->hash_ok && !problem) {
				problem = d->hash_type == HASH_TYPE_SHA256 ? "hash-mismatch"
									   : "hash-type";
				asset = d->name;
				hex(d->sha256, 32, expected);
				hex(b->assets[k].sha256, 32, actual);
			}
		}
		if (!d->in_bundle && !problem) {
			problem = "missing";
			asset = d->name;
			hex(d->sha256, 32, expected);
		}
		problems += !d->in_bundle || !d->hash_ok;
	}
	for (unsigned k = 0; k < b->n_assets; k++) {
		bool listed = false;
		for (unsigned i = 0; i < b->n_deps && !listed; i++)
			listed = strcmp(b->assets[k].name, b->deps[i].name) == 0;
		if (listed)
			continue;
		problems++;
		if (!problem) {
			problem = "extra";
			asset = b->assets[k].name;
			hex(b->assets[k].sha256, 32, actual);
		}
	}
	if (!problem)
		return 0;

	char name[96];
	printable(asset, name, sizeof(name));
	if (strcmp(problem, "missing") == 0)
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "%s depends on the asset %s, which is not in the bundle's assets/ folder",
			  b->app_name, name);
	else if (strcmp(problem, "extra") == 0)
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "the bundle holds assets/%s, which %s does not list among its assets",
			  name, b->app_name);
	else if (strcmp(problem, "hash-type") == 0)
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "%s lists the asset %s with a hash that is not SHA-256", b->app_name,
			  name);
	else
		error_set(err, ERR_BUNDLE_ASSET_MISMATCH,
			  "assets/%s in the bundle is not the asset %s was built with: its "
			  "SHA-256 is %s, the application expects %s",
			  name, b->app_name, actual, expected);
	error_detail_str(err, "asset", name);
	error_detail_str(err, "problem", problem);
	if (expected[0])
		error_detail_str(err, "expected_sha256", expected);
	if (actual[0])
		error_detail_str(err, "sha256", actual);
	error_detail_int(err, "problems", problems);
	return -1;
}

static int read_bundle(zip_t *za, struct bundle *b, struct error *err)
{
	zip_int64_t app_index = -1, asset_index[BUNDLE_MAX_ENTRIES];
	uint64_t app_size = 0;
	if (scan(za, b, &app_index, &app_size, asset_index, err) < 0)
		return -1;
	for (unsigned k = 0; k < b->n_assets; k++) {
		struct bundle_asset *a = &b->assets[k];
		char entry[BUNDLE_NAME_MAX + 1];
		snprintf(entry, sizeof(entry), "%s%s", BUNDLE_ASSETS_DIR, a->name);
		a->data = read_entry(za, (zip_uint64_t)asset_index[k], entry, a->size, err);
		if (!a->data)
			return -1;
		sha256(a->data, a->size, a->sha256);
	}
	uint8_t *app = read_entry(za, (zip_uint64_t)app_index, b->app_name, app_size, err);
	if (!app)
		return -1;
	int rc = image_parse(app, app_size, &b->app, err);
	free(app);
	if (rc < 0) {
		char name[96];
		printable(b->app_name, name, sizeof(name));
		error_prefix(err, "%s in the bundle: ", name);
		if (!b->app)
			return -1;
		/* A damaged application is kept for display, like image_parse() does. */
		b->n_deps = bundle_app_asset_deps(b->app, b->deps, BUNDLE_MAX_ENTRIES);
		return 1;
	}
	unsigned n = bundle_app_asset_deps(b->app, b->deps, BUNDLE_MAX_ENTRIES);
	b->n_deps = n < BUNDLE_MAX_ENTRIES ? n : BUNDLE_MAX_ENTRIES;
	return cross_check(b, err) < 0 ? 1 : 0;
}

int bundle_parse(const uint8_t *buf, size_t len, struct bundle **ret, struct error *err)
{
	*ret = NULL;
	if (len > BUNDLE_FILE_MAX) {
		error_set(err, ERR_BUNDLE_TOO_LARGE,
			  "the bundle is %zu bytes; bundles are at most %u", len, BUNDLE_FILE_MAX);
		error_detail_int(err, "size", (long long)len);
		error_detail_int(err, "limit", BUNDLE_FILE_MAX);
		return -1;
	}
	/* libzip takes 0 bytes for an empty archive; a zip has at least its 22-byte end record. */
	if (len < ZIP_EOCD_SIZE)
		return corrupt(err, NULL, ZIP_ER_NOZIP,
			       "it is %zu bytes long, shorter than the smallest zip (%u bytes)",
			       len, ZIP_EOCD_SIZE);
	struct bundle *b = calloc(1, sizeof(*b));
	if (!b)
		return error_set(err, ERR_INTERNAL, "out of memory");
	b->zip_size = len;
	sha256(buf, len, b->zip_sha256);

	zip_error_t ze;
	zip_error_init(&ze);
	zip_source_t *src = zip_source_buffer_create(buf, len, 0, &ze);
	if (!src) {
		zip_failed(err, NULL, &ze);
		zip_error_fini(&ze);
		bundle_free(b);
		return -1;
	}
	zip_t *za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
	if (!za) {
		int code = zip_error_code_zip(&ze);
		if (code == ZIP_ER_NOZIP)
			corrupt(err, NULL, code,
				"it is not a zip file (no end of central directory)");
		else
			zip_failed(err, NULL, &ze);
		zip_source_free(src);
		zip_error_fini(&ze);
		bundle_free(b);
		return -1;
	}
	zip_error_fini(&ze);
	int rc = read_bundle(za, b, err);
	zip_discard(za);
	if (rc < 0) {
		bundle_free(b);
		return -1;
	}
	*ret = b;
	return rc > 0 ? -1 : 0;
}
