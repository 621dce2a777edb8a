/*
 * flashctl inspect FILE... [--json]: what a firmware file is, where it lands
 * in flash, what it needs and whether it is intact.  Works without a daemon.
 * The JSON form is documented in proto/IMAGE.md.
 */
#include "bundle.h"
#include "errors.h"
#include "image.h"
#include "osver.h"
#include "platform.h"
#include "render.h"
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LAYOUTS 3

/* One flash layout era a module may be flashed under (Gen 3 has three:
 * docs/device/memory-maps.md#gen-3). */
struct slot_fit {
	const char *layout;
	const struct slot *slot;
};

static size_t fitting_slots(const struct image_module *m, struct slot_fit out[MAX_LAYOUTS])
{
	static const uint16_t gen3_eras[MAX_LAYOUTS] = {3000, 3100, 6200};
	static const uint16_t any_era[1] = {0};
	const struct platform *p = image_module_platform(m);
	if (!p)
		return 0;
	bool gen3 = p->mcu == MCU_NRF52840;
	const uint16_t *eras = gen3 ? gen3_eras : any_era;
	size_t n_eras = gen3 ? MAX_LAYOUTS : 1, n = 0;
	for (size_t i = 0; i < n_eras; i++) {
		const struct slot *s =
		    platform_find_slot(p, eras[i], m->function, m->index, MODULE_STORE_MAIN);
		if (s && m->start >= s->start && (uint64_t)image_module_flash_end(m) <= s->end)
			out[n++] = (struct slot_fit){
			    gen3 ? platform_layout_name(p, eras[i]) : "flash layout", s};
	}
	return n;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static const char *sha_verdict_name(enum image_sha_verdict v)
{
	switch (v) {
	case IMAGE_SHA_OK:
		return "ok";
	case IMAGE_SHA_MISMATCH:
		return "mismatch";
	case IMAGE_SHA_ABSENT:
		break;
	}
	return "absent";
}

/* "system part 2" in the platform's own words, else "system 2". */
static void dependency_target(const struct image_module *m, const struct image_dependency *d,
			      char *buf, size_t size)
{
	const struct platform *p = image_module_platform(m);
	const struct slot *s =
	    p ? platform_find_slot(p, 0, d->function, d->index, MODULE_STORE_MAIN) : NULL;
	if (s && d->function != MODULE_FUNCTION_USER)
		snprintf(buf, size, "%s", s->name);
	else if (d->index)
		snprintf(buf, size, "%s %u", module_function_phrase(d->function), d->index);
	else
		snprintf(buf, size, "%s", module_function_phrase(d->function));
}

/* "Device OS 2.2.0 or later (system part 1 >= 2202)" where the table pins it
 * (docs/device/releases.md#module-version-numbers). */
static void dependency_phrase(const struct image_module *m, const struct image_dependency *d,
			      char *buf, size_t size)
{
	char target[64];
	dependency_target(m, d, target, sizeof(target));
	const char *release = osver_release_for(d->function, d->version);
	if (release && d->function == MODULE_FUNCTION_BOOTLOADER)
		snprintf(buf, size, "the bootloader of Device OS %s or later (%s >= %u)", release,
			 target, d->version);
	else if (release)
		snprintf(buf, size, "Device OS %s or later (%s >= %u)", release, target,
			 d->version);
	else
		snprintf(buf, size, "%s >= %u", target, d->version);
}

/* ---- JSON ---- */

static json_t *extensions_json(const struct image_extension *ext, unsigned n)
{
	json_t *a = json_array();
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:i, s:s, s:i, s:I}", "type", ext[i].type,
						   "type_name", image_ext_type_name(ext[i].type),
						   "length", ext[i].length, "offset",
						   (json_int_t)ext[i].offset));
	return a;
}

static json_t *dependency_json(const struct image_dependency *d)
{
	if (d->function == MODULE_FUNCTION_NONE)
		return json_null();
	const char *release = osver_release_for(d->function, d->version);
	return json_pack("{s:s, s:i, s:i, s:i, s:o}", "function", module_function_name(d->function),
			 "function_id", d->function, "index", d->index, "version", d->version,
			 "release", release ? json_string(release) : json_null());
}

static json_t *asset_deps_json(const struct image *img, const struct image_module *m)
{
	struct bundle_asset_dep deps[BUNDLE_MAX_ENTRIES];
	unsigned n = bundle_module_asset_deps(img, m, deps, BUNDLE_MAX_ENTRIES);
	json_t *a = json_array();
	for (unsigned i = 0; i < n && i < BUNDLE_MAX_ENTRIES; i++) {
		char sha[65];
		hex(deps[i].sha256, 32, sha);
		json_array_append_new(a, json_pack("{s:s, s:i, s:s}", "name", deps[i].name,
						   "hash_type", deps[i].hash_type, "sha256", sha));
	}
	return a;
}

static json_t *module_json(const struct image *img, const struct image_module *m, unsigned position)
{
	const struct platform *p = image_module_platform(m);
	const char *release = osver_release_for(m->function, m->version);
	char desc[160], stored[65], computed[65];
	image_module_describe(m, desc, sizeof(desc));

	json_t *flags = json_array();
	for (unsigned bit = 1; bit <= 0x80; bit <<= 1)
		if ((m->flags & bit) && image_flag_name(bit))
			json_array_append_new(flags, json_string(image_flag_name(bit)));

	json_t *slots = json_array();
	struct slot_fit fit[MAX_LAYOUTS];
	size_t n_fit = fitting_slots(m, fit);
	for (size_t i = 0; i < n_fit; i++)
		json_array_append_new(slots, json_pack("{s:s, s:s, s:I, s:I}", "layout",
						       fit[i].layout, "name", fit[i].slot->name,
						       "start", (json_int_t)fit[i].slot->start,
						       "end", (json_int_t)fit[i].slot->end));

	json_t *sha = json_pack("{s:s}", "verdict", sha_verdict_name(m->sha_verdict));
	if (m->has_suffix) {
		hex(m->sha256, sizeof(m->sha256), stored);
		hex(m->sha256_computed, sizeof(m->sha256_computed), computed);
		json_object_set_new(sha, "stored", json_string(stored));
		json_object_set_new(sha, "computed", json_string(computed));
	}

	json_t *o = json_pack(
	    "{s:i, s:I, s:I, s:s, s:o, s:o, s:o, s:o, s:s, s:i, s:i, s:i, s:o, s:I, s:I, s:I, "
	    "s:s, s:i, s:i, s:o}",
	    "position", position, "offset", (json_int_t)m->file_offset, "size", (json_int_t)m->size,
	    "description", desc, "platform_id",
	    image_module_has_platform(m) ? json_integer(m->platform_id) : json_null(), "platform",
	    p ? json_string(p->name) : json_null(), "platform_display",
	    p ? json_string(p->display) : json_null(), "generation",
	    p ? json_integer(p->gen) : json_null(), "function", module_function_name(m->function),
	    "function_id", m->function, "index", m->index, "version", m->version, "release",
	    release ? json_string(release) : json_null(), "start", (json_int_t)m->start, "end",
	    (json_int_t)m->end, "prefix_offset", (json_int_t)m->prefix_offset, "prefix_rule",
	    image_prefix_rule_name(m->prefix_rule), "mcu_target", m->reserved, "flags", m->flags,
	    "flag_names", flags);
	json_object_set_new(
	    o, "dependencies",
	    json_pack("[o, o]", dependency_json(&m->deps[0]), dependency_json(&m->deps[1])));
	json_object_set_new(o, "suffix_size",
			    m->has_suffix ? json_integer(m->suffix_size) : json_null());
	json_object_set_new(o, "product_id",
			    m->has_product_data ? json_integer(m->product_id) : json_null());
	json_object_set_new(o, "product_version",
			    m->has_product_data ? json_integer(m->product_version) : json_null());
	json_object_set_new(o, "crc",
			    json_pack("{s:b, s:I, s:I}", "ok", m->crc_ok, "stored",
				      (json_int_t)m->crc_stored, "computed",
				      (json_int_t)m->crc_computed));
	json_object_set_new(o, "sha256", sha);
	json_object_set_new(o, "slots", slots);
	json_object_set_new(o, "prefix_extensions",
			    extensions_json(m->prefix_ext, m->n_prefix_ext));
	json_object_set_new(o, "suffix_extensions",
			    extensions_json(m->suffix_ext, m->n_suffix_ext));
	json_object_set_new(o, "dynamic_location",
			    m->has_dynamic_location
				? json_pack("{s:I, s:I}", "dynalib_load_address",
					    (json_int_t)m->dynalib_load_address,
					    "dynalib_start_address",
					    (json_int_t)m->dynalib_start_address)
				: json_null());
	json_object_set_new(o, "name", m->name[0] ? json_string(m->name) : json_null());
	json_object_set_new(o, "asset_dependencies", asset_deps_json(img, m));
	json_object_set_new(o, "compression",
			    (m->flags & IMAGE_FLAG_COMPRESSED) && m->inflated_size
				? json_pack("{s:i, s:i, s:I}", "method", m->compression_method,
					    "window_bits", m->window_bits, "inflated_size",
					    (json_int_t)m->inflated_size)
				: json_null());
	json_object_set_new(o, "inner",
			    m->inner && m->inner->n_modules
				? module_json(m->inner, &m->inner->modules[0], 0)
				: json_null());
	return o;
}

static void add_warnings(json_t *warnings, const struct image_module *m)
{
	if (m->sha_verdict == IMAGE_SHA_MISMATCH)
		json_array_append_new(warnings,
				      json_string("the SHA-256 in the suffix does not match the "
						  "contents (devices never check it; Particle's "
						  "radio-stack modules ship like this)"));
	if (m->inner)
		for (unsigned i = 0; i < m->inner->n_modules; i++)
			add_warnings(warnings, &m->inner->modules[i]);
}

/* size, sha256, modules and warnings of an image into o. */
static void image_fields(json_t *o, const struct image *img)
{
	json_t *modules = json_array(), *warnings = json_array();
	if (img) {
		char sha[65];
		hex(img->sha256, sizeof(img->sha256), sha);
		json_object_set_new(o, "size", json_integer((json_int_t)img->len));
		json_object_set_new(o, "sha256", json_string(sha));
		for (unsigned i = 0; i < img->n_modules; i++) {
			json_array_append_new(modules, module_json(img, &img->modules[i], i));
			add_warnings(warnings, &img->modules[i]);
		}
	}
	json_object_set_new(o, "modules", modules);
	json_object_set_new(o, "warnings", warnings);
}

static void print_json(const char *file, const struct image *img, const struct error *err)
{
	json_t *o = json_pack("{s:s, s:s, s:b}", "type", "image", "file", file, "valid",
			      !error_is_set(err));
	image_fields(o, img);
	if (error_is_set(err))
		json_object_set_new(o, "error", error_to_json(err));
	render_json_line(o);
	json_decref(o);
}

/* ---- human ---- */

static void print_module(const struct image *img, const struct image_module *m, const char *indent)
{
	const struct platform *p = image_module_platform(m);
	char buf[192];

	printf("%s%s\n", indent, image_module_describe(m, buf, sizeof(buf)));
	if (p)
		printf("%s  platform   %s (id %u, %s)\n", indent, p->display, p->id,
		       p->gen == 1   ? "Gen 1"
		       : p->gen == 2 ? "Gen 2"
		       : p->gen == 3 ? "Gen 3"
				     : "P2 family");
	else if (!image_module_has_platform(m))
		printf("%s  platform   none (an asset names no platform)\n", indent);
	else
		printf("%s  platform   unknown (id %u)\n", indent, m->platform_id);
	printf("%s  addresses  0x%08x-0x%08x (%zu bytes with CRC), prefix %s\n", indent, m->start,
	       image_module_flash_end(m), m->size, image_prefix_rule_name(m->prefix_rule));

	struct slot_fit fit[MAX_LAYOUTS];
	size_t n_fit = fitting_slots(m, fit);
	for (size_t i = 0; i < n_fit; i++)
		printf("%s  %s 0x%08x-0x%08x, %s (%s)\n", indent,
		       i == 0 ? "slot      " : "          ", fit[i].slot->start, fit[i].slot->end,
		       fit[i].slot->name, fit[i].layout);
	if (!image_module_has_platform(m))
		printf("%s  slot       none: the device keeps an asset in its asset store\n",
		       indent);
	else if (n_fit == 0 && !(m->flags & IMAGE_FLAG_COMPRESSED))
		printf("%s  slot       none: no slot of %s holds %s %u at these addresses\n",
		       indent, p ? p->display : "this platform", module_function_name(m->function),
		       m->index);

	bool needs = false;
	for (int i = 0; i < 2; i++) {
		if (m->deps[i].function == MODULE_FUNCTION_NONE)
			continue;
		dependency_phrase(m, &m->deps[i], buf, sizeof(buf));
		printf("%s  %s %s\n", indent, needs ? "          " : "needs     ", buf);
		needs = true;
	}
	if (!needs)
		printf("%s  needs      nothing\n", indent);

	if (m->crc_ok)
		printf("%s  CRC-32     ok (%08x)\n", indent, m->crc_computed);
	else
		printf("%s  CRC-32     FAILED (stored %08x, contents give %08x)\n", indent,
		       m->crc_stored, m->crc_computed);
	char sha[65] = "";
	if (m->has_suffix)
		hex(m->sha256, sizeof(m->sha256), sha);
	switch (m->sha_verdict) {
	case IMAGE_SHA_OK:
		printf("%s  SHA-256    ok (%s)\n", indent, sha);
		break;
	case IMAGE_SHA_MISMATCH:
		printf("%s  SHA-256    does not match (stored %s); a warning only: devices never "
		       "check it\n",
		       indent, sha);
		break;
	case IMAGE_SHA_ABSENT:
		printf("%s  SHA-256    none\n", indent);
		break;
	}
	if (m->has_product_data && !(m->product_id == 0xffff && m->product_version == 0xffff))
		printf("%s  product    id %u, version %u\n", indent, m->product_id,
		       m->product_version);
	else
		printf("%s  product    none\n", indent);
	if (m->flags) {
		printf("%s  flags      0x%02x", indent, m->flags);
		for (unsigned bit = 1; bit <= 0x80; bit <<= 1)
			if ((m->flags & bit) && image_flag_name(bit))
				printf(" %s", image_flag_name(bit));
		printf("\n");
	}
	if (m->reserved)
		printf("%s  MCU target 0x%02x%s\n", indent, m->reserved,
		       m->reserved == 0x21 ? " (ESP32 network coprocessor)" : "");
	if (m->name[0])
		printf("%s  name       %s\n", indent, m->name);
	struct bundle_asset_dep deps[BUNDLE_MAX_ENTRIES];
	unsigned n_deps = bundle_module_asset_deps(img, m, deps, BUNDLE_MAX_ENTRIES);
	for (unsigned i = 0; i < n_deps && i < BUNDLE_MAX_ENTRIES; i++) {
		char dsha[65];
		hex(deps[i].sha256, 32, dsha);
		printf("%s  %s %s (SHA-256 %s)\n", indent, i ? "          " : "assets    ",
		       deps[i].name, deps[i].hash_type == 0 ? dsha : "unusable");
	}
	if (m->flags & IMAGE_FLAG_COMPRESSED && m->inflated_size)
		printf("%s  inflates   to %u bytes (raw deflate, %u-bit window)\n", indent,
		       m->inflated_size, m->window_bits);
	if (m->inner)
		for (unsigned i = 0; i < m->inner->n_modules; i++) {
			printf("%s  contains:\n", indent);
			char deeper[32];
			snprintf(deeper, sizeof(deeper), "%s    ", indent);
			print_module(m->inner, &m->inner->modules[i], deeper);
		}
}

static void print_human(const char *file, const struct image *img)
{
	printf("%s:", file);
	if (img->n_modules > 1) {
		printf(" combined file with %u modules\n", img->n_modules);
		for (unsigned i = 0; i < img->n_modules; i++) {
			printf("  module %u of %u, at offset %zu:\n", i + 1, img->n_modules,
			       img->modules[i].file_offset);
			print_module(img, &img->modules[i], "    ");
		}
	} else {
		printf("\n");
		print_module(img, &img->modules[0], "  ");
	}
}

/* ---- bundles (.zip from particle compile) ---- */

static const char *asset_status(const struct bundle *b, const struct bundle_asset *a,
				const struct bundle_asset_dep **ret_dep)
{
	*ret_dep = NULL;
	for (unsigned i = 0; i < b->n_deps; i++)
		if (strcmp(b->deps[i].name, a->name) == 0) {
			*ret_dep = &b->deps[i];
			return b->deps[i].hash_ok ? "ok" : "hash-mismatch";
		}
	return "extra";
}

static void print_bundle_json(const char *file, const struct bundle *b, const struct error *err)
{
	json_t *o = json_pack("{s:s, s:s, s:b}", "type", "bundle", "file", file, "valid",
			      !error_is_set(err));
	if (b) {
		char sha[65];
		hex(b->zip_sha256, 32, sha);
		json_object_set_new(o, "size", json_integer((json_int_t)b->zip_size));
		json_object_set_new(o, "sha256", json_string(sha));
		json_object_set_new(o, "entries", json_integer(b->n_entries));
		json_object_set_new(o, "uncompressed_size",
				    json_integer((json_int_t)b->total_size));
		json_t *app = json_pack("{s:s}", "name", b->app_name);
		image_fields(app, b->app);
		json_object_set_new(o, "application", app);
		json_t *assets = json_array();
		for (unsigned i = 0; i < b->n_assets; i++) {
			const struct bundle_asset *a = &b->assets[i];
			const struct bundle_asset_dep *d;
			const char *status = asset_status(b, a, &d);
			hex(a->sha256, 32, sha);
			json_array_append_new(assets,
					      json_pack("{s:s, s:I, s:s, s:s}", "name", a->name,
							"size", (json_int_t)a->size, "sha256", sha,
							"status", status));
		}
		json_object_set_new(o, "assets", assets);
		json_t *missing = json_array();
		for (unsigned i = 0; i < b->n_deps; i++)
			if (!b->deps[i].in_bundle)
				json_array_append_new(missing, json_string(b->deps[i].name));
		json_object_set_new(o, "missing_assets", missing);
		json_object_set_new(o, "env",
				    b->has_env ? json_pack("{s:s, s:I}", "name", BUNDLE_ENV_FILE,
							   "size", (json_int_t)b->env_size)
					       : json_null());
		json_t *ignored = json_array();
		for (unsigned i = 0; i < b->n_ignored && i < 8; i++)
			json_array_append_new(ignored, json_string(b->ignored[i]));
		json_object_set_new(o, "ignored", ignored);
	} else {
		json_object_set_new(o, "application", json_null());
		json_object_set_new(o, "assets", json_array());
	}
	if (error_is_set(err))
		json_object_set_new(o, "error", error_to_json(err));
	render_json_line(o);
	json_decref(o);
}

static void print_bundle_human(const char *file, const struct bundle *b)
{
	printf("%s: bundle (zip of %u entr%s, %zu bytes; unpacks to %llu bytes)\n", file,
	       b->n_entries, b->n_entries == 1 ? "y" : "ies", b->zip_size,
	       (unsigned long long)b->total_size);
	printf("  application %s\n", b->app_name);
	if (b->app)
		for (unsigned i = 0; i < b->app->n_modules; i++)
			print_module(b->app, &b->app->modules[i], "    ");
	if (b->n_assets == 0 && b->n_deps == 0)
		printf("  assets      none: it flashes like the .bin alone\n");
	else
		printf("  assets      %u in assets/, %llu bytes; the application lists %u\n",
		       b->n_assets, (unsigned long long)bundle_assets_bytes(b), b->n_deps);
	for (unsigned i = 0; i < b->n_assets; i++) {
		const struct bundle_asset *a = &b->assets[i];
		const struct bundle_asset_dep *d;
		const char *status = asset_status(b, a, &d);
		char sha[65];
		hex(a->sha256, 32, sha);
		printf("    %-24s %10zu bytes  SHA-256 %.16s...  %s\n", a->name, a->size, sha,
		       strcmp(status, "ok") == 0      ? "ok (the application lists it)"
		       : strcmp(status, "extra") == 0 ? "NOT listed by the application"
						      : "DIFFERS from what the application lists");
	}
	for (unsigned i = 0; i < b->n_deps; i++)
		if (!b->deps[i].in_bundle)
			printf("    %-24s MISSING: the application lists it, the bundle lacks it\n",
			       b->deps[i].name);
	if (b->has_env)
		printf("  environment %s, %zu bytes (not flashed)\n", BUNDLE_ENV_FILE, b->env_size);
	for (unsigned i = 0; i < b->n_ignored && i < 8; i++)
		printf("  %s %s\n", i ? "           " : "ignored    ", b->ignored[i]);
	if (b->n_ignored > 8)
		printf("              ... and %u more\n", b->n_ignored - 8);
}

/* Reads a whole regular file of at most limit bytes; NULL with err set. */
static uint8_t *read_file(int fd, const char *file, size_t limit, size_t *ret_len,
			  struct error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > limit) {
		int e = errno;
		error_set(err, ERR_FILE_UNREADABLE, "%s: %s", file,
			  S_ISREG(st.st_mode) ? "larger than a bundle may be"
					      : "not a regular file");
		error_detail_str(err, "file", file);
		if ((uint64_t)st.st_size > limit) {
			error_detail_int(err, "size", st.st_size);
			error_detail_int(err, "limit", (long long)limit);
		} else {
			error_detail_int(err, "errno", e);
		}
		return NULL;
	}
	size_t len = (size_t)st.st_size, got = 0;
	uint8_t *buf = malloc(len ? len : 1);
	while (buf && got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			error_set(err, ERR_FILE_UNREADABLE, "%s: %s", file,
				  n < 0 ? strerror(errno) : "the file shrank while it was read");
			error_detail_str(err, "file", file);
			free(buf);
			return NULL;
		}
		got += (size_t)n;
	}
	if (!buf)
		error_set(err, ERR_INTERNAL, "out of memory reading %s", file);
	*ret_len = len;
	return buf;
}

/* 1 when file is a zip (and *ret / err say what it holds), 0 when it is not. */
static int load_bundle(const char *file, struct bundle **ret, struct error *err)
{
	*ret = NULL;
	int fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	uint8_t head[4];
	if (fd < 0 || pread(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
	    !bundle_is_zip(head, sizeof(head))) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	size_t len = 0;
	uint8_t *buf = read_file(fd, file, BUNDLE_FILE_MAX, &len, err);
	close(fd);
	if (!buf)
		return 1;
	if (bundle_parse(buf, len, ret, err) < 0) {
		error_prefix(err, "%s: ", file);
		error_detail_str(err, "file", file);
	}
	free(buf);
	return 1;
}

static int inspect_bundle(const char *file, const struct cli_global *g, struct bundle *b,
			  struct error *err)
{
	if (g->json) {
		print_bundle_json(file, b, err);
	} else {
		if (b)
			print_bundle_human(file, b);
		if (error_is_set(err)) {
			fflush(stdout);
			render_error(g, err);
		}
	}
	int status = error_is_set(err) ? error_exit_status(err->code) : 0;
	error_clear(err);
	bundle_free(b);
	return status;
}

static int inspect_one(const char *file, const struct cli_global *g)
{
	struct image *img = NULL;
	struct error err;
	error_init(&err);
	struct bundle *b = NULL;
	if (load_bundle(file, &b, &err))
		return inspect_bundle(file, g, b, &err);
	/* The verdict is read from err below; a damaged image is still shown. */
	(void)!image_load_path(file, &img, &err);
	if (g->json) {
		print_json(file, img, &err);
	} else {
		if (img)
			print_human(file, img);
		if (error_is_set(&err)) {
			fflush(stdout);
			render_error(g, &err);
		}
	}
	int status = error_is_set(&err) ? error_exit_status(err.code) : 0;
	error_clear(&err);
	image_free(img);
	return status;
}

static const struct option inspect_options[] = {
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

static int cmd_inspect_exec(int argc, char **argv, const struct cli_global *g)
{
	struct cli_global local = *g;
	int c;
	while ((c = getopt_long(argc, argv, "jh", inspect_options, NULL)) != -1) {
		switch (c) {
		case 'j':
			local.json = true;
			break;
		case 'h':
			printf("Usage: flashctl %s %s\n", cmd_inspect_entry.name,
			       cmd_inspect_entry.usage);
			return 0;
		default:
			return cmd_usage_error(&local, &cmd_inspect_entry);
		}
	}
	if (optind >= argc)
		return render_usage_error(&local, "inspect needs at least one FILE");
	int worst = 0;
	for (int i = optind; i < argc; i++) {
		int status = inspect_one(argv[i], &local);
		if (status > worst)
			worst = status;
	}
	return worst;
}

const struct cmd_entry cmd_inspect_entry = {
    .name = "inspect",
    .options = inspect_options,
    .usage = "FILE... [--json]",
    .summary = "describe firmware files (no daemon needed)",
    .exec = cmd_inspect_exec,
};
