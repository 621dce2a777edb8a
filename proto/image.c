/*
 * Particle module images (docs/device/module-format.md, platforms docs/device/platforms.md).
 *
 * The prefix is looked for only where a device looks for it
 * (docs/device/module-format.md#where-the-prefix-is): offset
 * 0, or after the vector table / Realtek header that the first bytes announce.
 * A candidate counts only when the platform it names is one whose devices
 * apply that very rule, and its addresses, size and CRC agree with the file.
 * Nothing is scanned for: a file that fails these rules is not a module.
 */
#include "bytes.h"
#include "image.h"

#include "osver.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* suffix size of padded / unfinished images (docs/device/module-format.md#suffix-and-checksums) */
#define SUFFIX_NONE	      0xffffu
#define SUFFIX_LEGACY_PRODUCT 4		   /* u16 product id + u16 version, no extension header */
#define SUFFIX_SHA_FROM_END   38	   /* SHA-256 starts 38 bytes before the module's end */
#define SUFFIX_SIZE_FROM_END  6		   /* suffix size field */
#define EXT_HEADER_SIZE	      4		   /* u16 type, u16 length */
#define INFLATE_FIRST_CHUNK   (64u * 1024) /* grown by doubling up to the declared size */
#define READ_CHUNK	      (64u * 1024)

/* Initial-stack-pointer tests the devices use (docs/device/memory-maps.md#gen-3,
 * docs/device/module-format.md#where-the-prefix-is). */
#define STM32_SP_MASK 0x2ff10000u
#define NRF52_SP_MASK 0x2ffc0000u
#define SP_IN_RAM     0x20000000u

static const uint8_t realtek_signature[8] = {0x99, 0x99, 0x96, 0x96, 0x3f, 0xcc, 0x66, 0xfc};

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

uint32_t image_crc32(const uint8_t *buf, size_t len)
{
	return (uint32_t)crc32_z(crc32_z(0, Z_NULL, 0), buf, len);
}

static void sha256(const uint8_t *buf, size_t len, uint8_t out[32])
{
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, len, buf);
	sha256_digest(&ctx, SHA256_DIGEST_SIZE, out);
}

/* ---- where the prefix is (docs/device/module-format.md#where-the-prefix-is) ---- */

static const struct {
	size_t offset;
	const char *name;
} prefix_rules[] = {
    [IMAGE_PREFIX_AT_START] = {0, "at the start of the file"},
    [IMAGE_PREFIX_AFTER_REALTEK] = {0x20, "after the Realtek image header (0x20)"},
    [IMAGE_PREFIX_AFTER_GEN2_TABLE] = {0x184, "after the STM32F2 vector table (0x184)"},
    [IMAGE_PREFIX_AFTER_CORE_TABLE] = {0x10c, "after the STM32F1 vector table (0x10c)"},
    [IMAGE_PREFIX_AFTER_GEN3_TABLE] = {0x200, "after the nRF52840 vector table (0x200)"},
};

/* The order candidates are tried in; offset 0 last. */
static const enum image_prefix_rule rule_order[] = {
    IMAGE_PREFIX_AFTER_REALTEK,	   IMAGE_PREFIX_AFTER_GEN2_TABLE, IMAGE_PREFIX_AFTER_CORE_TABLE,
    IMAGE_PREFIX_AFTER_GEN3_TABLE, IMAGE_PREFIX_AT_START,
};

const char *image_prefix_rule_name(enum image_prefix_rule rule)
{
	if ((size_t)rule >= sizeof(prefix_rules) / sizeof(prefix_rules[0]))
		return "unknown";
	return prefix_rules[rule].name;
}

/* Whether the first bytes of a module announce this rule. */
static bool rule_fires(enum image_prefix_rule rule, const uint8_t *p, size_t n)
{
	uint32_t word0 = n >= 4 ? bytes_le32(p) : 0;
	switch (rule) {
	case IMAGE_PREFIX_AT_START:
		return true;
	case IMAGE_PREFIX_AFTER_REALTEK:
		return n >= sizeof(realtek_signature) &&
		       memcmp(p, realtek_signature, sizeof(realtek_signature)) == 0;
	case IMAGE_PREFIX_AFTER_GEN2_TABLE:
	case IMAGE_PREFIX_AFTER_CORE_TABLE:
		/* flash_mal.c FLASH_ModuleInfo on STM32 (develop-2.x) */
		return n >= 4 && (word0 & STM32_SP_MASK) == SP_IN_RAM;
	case IMAGE_PREFIX_AFTER_GEN3_TABLE:
		return n >= 4 && (word0 & NRF52_SP_MASK) == SP_IN_RAM;
	}
	return false;
}

/* The rule the bootloader of a platform's MCU applies. */
static enum image_prefix_rule rule_of_platform(const struct platform *p)
{
	switch (p->mcu) {
	case MCU_STM32F103:
		return IMAGE_PREFIX_AFTER_CORE_TABLE;
	case MCU_STM32F205:
		return IMAGE_PREFIX_AFTER_GEN2_TABLE;
	case MCU_NRF52840:
		return IMAGE_PREFIX_AFTER_GEN3_TABLE;
	case MCU_RTL8721D:
		return IMAGE_PREFIX_AFTER_REALTEK;
	}
	return IMAGE_PREFIX_AT_START;
}

/* How far a candidate got; the deepest failure is the one reported. */
enum candidate_stage {
	STAGE_TOO_SHORT,
	STAGE_PLATFORM,
	STAGE_FIELDS,
	STAGE_ADDRESSES,
	STAGE_SIZE,
	STAGE_ACCEPTED,
};

static void read_prefix(struct image_module *m, const uint8_t *p)
{
	m->start = bytes_le32(p);
	m->end = bytes_le32(p + 4);
	m->reserved = p[8];
	m->flags = p[9];
	m->version = bytes_le16(p + 10);
	m->platform_id = bytes_le16(p + 12);
	m->function = p[14];
	m->index = p[15];
	for (int i = 0; i < 2; i++) {
		m->deps[i].function = p[16 + 4 * i];
		m->deps[i].index = p[17 + 4 * i];
		m->deps[i].version = bytes_le16(p + 18 + 4 * i);
	}
	m->product_id = 0xffff;
	m->product_version = 0xffff;
	m->sha_verdict = IMAGE_SHA_ABSENT;
}

static enum candidate_stage not_a_module(struct error *err, enum candidate_stage stage, size_t size,
					 const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum candidate_stage not_a_module(struct error *err, enum candidate_stage stage, size_t size,
					 const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_IMAGE_NOT_A_MODULE, "not a Particle firmware module: %s", reason);
	error_detail_int(err, "size", (long long)size);
	error_detail_str(err, "reason", reason);
	return stage;
}

static bool dependency_plausible(const struct image_dependency *d)
{
	if (d->function == MODULE_FUNCTION_NONE)
		return d->index == 0 && d->version == 0; /* BVR _validateModulePrefix */
	return d->function <= MODULE_FUNCTION_ASSET;
}

/*
 * Checks the candidate prefix that `rule` points at.  `avail` bytes follow
 * the module's first byte; `limit` caps the declared size.
 */
static enum candidate_stage check_candidate(const uint8_t *mod, size_t avail, size_t limit,
					    enum image_prefix_rule rule, unsigned module_no,
					    struct image_module *m, struct error *err)
{
	size_t off = prefix_rules[rule].offset;
	if (avail < off + IMAGE_PREFIX_SIZE || avail < IMAGE_MIN_MODULE_SIZE) {
		if (avail == 0)
			return not_a_module(err, STAGE_TOO_SHORT, avail, "the file is empty");
		return not_a_module(
		    err, STAGE_TOO_SHORT, avail,
		    "the file is only %zu byte%s long, too short for a module prefix "
		    "%s",
		    avail, avail == 1 ? "" : "s", prefix_rules[rule].name);
	}
	memset(m, 0, sizeof(*m));
	read_prefix(m, mod + off);
	m->prefix_offset = off;
	m->prefix_rule = rule;

	const struct platform *p = platform_by_id(m->platform_id);
	m->platform_known = p != NULL;
	if (p && rule != IMAGE_PREFIX_AT_START && rule_of_platform(p) != rule)
		return not_a_module(err, STAGE_PLATFORM, avail,
				    "the bytes %s name platform %s, whose devices do not put the "
				    "prefix there",
				    prefix_rules[rule].name, p->display);
	if (p && rule == IMAGE_PREFIX_AT_START && rule_fires(rule_of_platform(p), mod, avail))
		return not_a_module(err, STAGE_PLATFORM, avail,
				    "the first bytes name platform %s, but its devices would read "
				    "the prefix %s",
				    p->display, prefix_rules[rule_of_platform(p)].name);
	if (!p && rule != IMAGE_PREFIX_AT_START)
		return not_a_module(err, STAGE_PLATFORM, avail,
				    "no module prefix %s (platform id %u is unknown)",
				    prefix_rules[rule].name, m->platform_id);

	if (m->function == MODULE_FUNCTION_NONE || m->function > MODULE_FUNCTION_ASSET)
		return not_a_module(err, STAGE_FIELDS, avail,
				    "no module prefix %s (module function %u is not defined)",
				    prefix_rules[rule].name, m->function);
	if (m->flags & ~0x1fu)
		return not_a_module(err, STAGE_FIELDS, avail,
				    "no module prefix %s (undefined flag bits 0x%02x)",
				    prefix_rules[rule].name, m->flags & ~0x1fu);
	if (!dependency_plausible(&m->deps[0]) || !dependency_plausible(&m->deps[1]))
		return not_a_module(err, STAGE_FIELDS, avail,
				    "no module prefix %s (its dependency fields are not valid)",
				    prefix_rules[rule].name);

	if (m->end <= m->start)
		return not_a_module(err, STAGE_ADDRESSES, avail,
				    "the prefix %s ends (0x%08x) before it starts (0x%08x)",
				    prefix_rules[rule].name, m->end, m->start);
	uint64_t declared = (uint64_t)m->end - m->start + IMAGE_CRC_SIZE;
	if (declared > limit)
		return not_a_module(err, STAGE_ADDRESSES, avail,
				    "the prefix %s declares a %llu-byte module, more than the %zu "
				    "bytes any Particle flash slot holds",
				    prefix_rules[rule].name, (unsigned long long)declared, limit);
	if (declared < off + IMAGE_PREFIX_SIZE + IMAGE_SUFFIX_TAIL_SIZE + IMAGE_CRC_SIZE)
		return not_a_module(err, STAGE_ADDRESSES, avail,
				    "the prefix %s declares a %llu-byte module, too small to hold "
				    "itself, a suffix and a CRC",
				    prefix_rules[rule].name, (unsigned long long)declared);
	m->size = (size_t)declared;
	if (m->size > avail) {
		error_set(err, ERR_IMAGE_TRUNCATED,
			  "the file ends %zu bytes into a module of %zu bytes (%s, 0x%08x-0x%08x)",
			  avail, m->size, p ? p->display : "unknown platform", m->start, m->end);
		error_detail_int(err, "size", (long long)avail);
		error_detail_int(err, "expected_size", (long long)m->size);
		error_detail_int(err, "module", module_no);
		return STAGE_SIZE;
	}
	return STAGE_ACCEPTED;
}

/* Finds the module starting at mod: the first candidate every check accepts. */
static int locate_prefix(const uint8_t *mod, size_t avail, size_t limit, unsigned module_no,
			 struct image_module *m, struct error *err)
{
	struct error best, tmp;
	int best_stage = -1;
	error_init(&best);
	error_init(&tmp);
	for (size_t i = 0; i < sizeof(rule_order) / sizeof(rule_order[0]); i++) {
		enum image_prefix_rule rule = rule_order[i];
		if (!rule_fires(rule, mod, avail))
			continue;
		enum candidate_stage stage =
		    check_candidate(mod, avail, limit, rule, module_no, m, &tmp);
		if (stage == STAGE_ACCEPTED) {
			error_clear(&best);
			return 0;
		}
		if ((int)stage > best_stage) {
			error_move(&best, &tmp);
			best_stage = (int)stage;
		} else {
			error_clear(&tmp);
		}
	}
	error_move(err, &best);
	return -1;
}

/* ---- extensions (docs/device/module-format.md#extensions) ---- */

static int corrupt(struct error *err, unsigned module_no, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int corrupt(struct error *err, unsigned module_no, size_t offset, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_IMAGE_CORRUPT, "the module's structure is damaged: %s", reason);
	error_detail_str(err, "reason", reason);
	error_detail_int(err, "module", module_no);
	error_detail_int(err, "offset", (long long)offset);
	return -1;
}

static int unsupported(struct error *err, const struct image_module *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int unsupported(struct error *err, const struct image_module *m, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_IMAGE_UNSUPPORTED, "the module uses a format flashd does not handle: %s",
		  reason);
	error_detail_str(err, "reason", reason);
	error_detail_int(err, "flags", m->flags);
	error_detail_str(err, "module_function", module_function_name(m->function));
	return -1;
}

/*
 * Walks {u16 type, u16 length incl. header, data} records in [from, to).
 * END and INVALID stop the walk; a prefix list must end with END.
 */
static int parse_extensions(const uint8_t *mod, size_t from, size_t to, bool need_end,
			    const char *where, struct image_module *m, unsigned module_no,
			    struct image_extension *out, unsigned *n, size_t *ret_end,
			    struct error *err)
{
	size_t pos = from;
	*n = 0;
	while (to - pos >= EXT_HEADER_SIZE) {
		uint16_t type = bytes_le16(mod + pos), len = bytes_le16(mod + pos + 2);
		if (type == IMAGE_EXT_INVALID) {
			*ret_end = pos;
			return 0;
		}
		if (len < EXT_HEADER_SIZE || len > to - pos)
			return corrupt(
			    err, module_no, pos,
			    "%s extension %u (type 0x%04x) at offset %zu claims %u bytes, "
			    "but %zu are left",
			    where, *n + 1, type, pos, len, to - pos);
		if (*n == IMAGE_MAX_EXTENSIONS)
			return unsupported(err, m, "more than %d %s extensions",
					   IMAGE_MAX_EXTENSIONS, where);
		out[(*n)++] = (struct image_extension){type, len, pos};
		pos += len;
		if (type == IMAGE_EXT_END) {
			*ret_end = pos;
			return 0;
		}
	}
	if (need_end)
		return corrupt(err, module_no, pos, "the %s extensions have no END record", where);
	if (pos != to)
		return corrupt(err, module_no, pos, "%zu stray bytes after the %s extensions",
			       to - pos, where);
	*ret_end = pos;
	return 0;
}

/* Takes what flashd uses from known extensions; unknown ones are kept as listed. */
static void apply_extensions(const uint8_t *mod, struct image_module *m,
			     const struct image_extension *ext, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *d = mod + ext[i].offset + EXT_HEADER_SIZE;
		size_t dlen = ext[i].length - EXT_HEADER_SIZE;
		switch (ext[i].type) {
		case IMAGE_EXT_PRODUCT_DATA:
			/* BVR encodes u16 0xffff, u16 product id, u16 version */
			if (dlen >= 6) {
				m->has_product_data = true;
				m->product_id = bytes_le16(d + 2);
				m->product_version = bytes_le16(d + 4);
			}
			break;
		case IMAGE_EXT_DYNAMIC_LOCATION:
			if (dlen >= 12) {
				m->has_dynamic_location = true;
				m->dynalib_load_address = bytes_le32(d + 4);
				m->dynalib_start_address = bytes_le32(d + 8);
			}
			break;
		case IMAGE_EXT_NAME: {
			size_t k = 0;
			for (; k < dlen && k < sizeof(m->name) - 1 && d[k]; k++)
				m->name[k] = d[k] >= 0x20 && d[k] < 0x7f ? (char)d[k] : '?';
			m->name[k] = '\0';
			break;
		}
		default:
			break;
		}
	}
}

/* ---- suffix (docs/device/module-format.md#suffix-and-checksums) ---- */

/* Reads suffix size and checks it fits; returns the suffix's first byte. */
static int locate_suffix(const uint8_t *mod, struct image_module *m, unsigned module_no,
			 size_t *ret_suffix_start, struct error *err)
{
	size_t body_start = m->prefix_offset + IMAGE_PREFIX_SIZE;
	m->suffix_size = bytes_le16(mod + m->size - SUFFIX_SIZE_FROM_END);
	if (m->suffix_size == SUFFIX_NONE)
		return unsupported(err, m,
				   "it has no suffix (suffix size 0xffff): a padded or unfinished "
				   "build output, which particle-cli refuses too");
	if (m->suffix_size < IMAGE_SUFFIX_TAIL_SIZE ||
	    m->suffix_size > m->size - IMAGE_CRC_SIZE - body_start)
		return corrupt(err, module_no, m->size - SUFFIX_SIZE_FROM_END,
			       "suffix size %u does not fit between the prefix and the CRC "
			       "(%zu bytes)",
			       m->suffix_size, m->size - IMAGE_CRC_SIZE - body_start);
	m->has_suffix = true;
	*ret_suffix_start = m->size - IMAGE_CRC_SIZE - m->suffix_size;
	return 0;
}

static int parse_suffix(const uint8_t *mod, struct image_module *m, unsigned module_no,
			size_t suffix_start, struct error *err)
{
	size_t var = m->suffix_size - IMAGE_SUFFIX_TAIL_SIZE;
	if (var == SUFFIX_LEGACY_PRODUCT) {
		m->has_product_data = true;
		m->product_id = bytes_le16(mod + suffix_start);
		m->product_version = bytes_le16(mod + suffix_start + 2);
	} else if (var > 0) {
		size_t end;
		if (parse_extensions(mod, suffix_start, suffix_start + var, false, "suffix", m,
				     module_no, m->suffix_ext, &m->n_suffix_ext, &end, err) < 0)
			return -1;
		apply_extensions(mod, m, m->suffix_ext, m->n_suffix_ext);
	}
	memcpy(m->sha256, mod + m->size - SUFFIX_SHA_FROM_END, sizeof(m->sha256));
	sha256(mod, m->size - SUFFIX_SHA_FROM_END, m->sha256_computed);
	m->sha_verdict = memcmp(m->sha256, m->sha256_computed, sizeof(m->sha256)) == 0
			     ? IMAGE_SHA_OK
			     : IMAGE_SHA_MISMATCH;
	return 0;
}

/* ---- compressed modules (docs/device/module-format.md#flags flag 0x02) ---- */

static int parse_owned(uint8_t *data, size_t len, int depth, struct image **ret, struct error *err);

/* out-of-memory for an allocation of size bytes, with what it was for. */
static int out_of_memory(struct error *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int out_of_memory(struct error *err, size_t size, const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	error_set(err, ERR_OUT_OF_MEMORY, "out of memory %s (%zu bytes)", what, size);
	error_detail_int(err, "size", (long long)size);
	return -1;
}

static int inflate_error(struct error *err, unsigned module_no, size_t offset, const char *what,
			 z_stream *zs)
{
	return corrupt(err, module_no, offset, "the compressed data %s%s%s", what,
		       zs->msg ? ": " : "", zs->msg ? zs->msg : "");
}

/* Inflates raw deflate data to exactly out_len bytes (a declared, capped size). */
static int inflate_exact(const uint8_t *in, size_t in_len, size_t out_len, int window_bits,
			 unsigned module_no, size_t offset, uint8_t **ret, struct error *err)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, -window_bits) != Z_OK)
		return error_set(err, ERR_INTERNAL, "zlib refused window bits %d", window_bits);
	size_t cap = out_len < INFLATE_FIRST_CHUNK ? out_len : INFLATE_FIRST_CHUNK;
	_cleanup_free_ uint8_t *buf = malloc(cap ? cap : 1);
	size_t produced = 0;
	int rc = -1;
	if (!buf) {
		out_of_memory(err, cap, "inflating module %u", module_no);
		goto out;
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_len;
	for (;;) {
		uint8_t overflow;
		if (produced == cap && cap < out_len) {
			size_t ncap = cap * 2 < out_len ? cap * 2 : out_len;
			uint8_t *nbuf = realloc(buf, ncap);
			if (!nbuf) { /* the machine's shortage, not the file's damage */
				out_of_memory(err, ncap, "inflating module %u", module_no);
				goto out;
			}
			buf = nbuf;
			cap = ncap;
		}
		bool full = produced == cap;
		zs.next_out = full ? &overflow : buf + produced;
		zs.avail_out = full ? 1 : (uInt)(cap - produced);
		uInt before = zs.avail_out;
		int z = inflate(&zs, Z_NO_FLUSH);
		if (full && zs.avail_out == 0) {
			inflate_error(err, module_no, offset,
				      "inflates to more bytes than declared", &zs);
			goto out;
		}
		if (!full)
			produced += before - zs.avail_out;
		if (z == Z_STREAM_END)
			break;
		if (z == Z_OK)
			continue;
		inflate_error(err, module_no, offset,
			      z == Z_BUF_ERROR ? "ends before its deflate stream does"
					       : "is not a valid deflate stream",
			      &zs);
		goto out;
	}
	if (produced != out_len) {
		corrupt(err, module_no, offset,
			"the compressed data inflates to %zu bytes, but its header declares %zu",
			produced, out_len);
		goto out;
	}
	*ret = TAKE_PTR(buf);
	rc = 0;
out:
	inflateEnd(&zs);
	return rc;
}

static int parse_compressed(const uint8_t *mod, struct image_module *m, unsigned module_no,
			    size_t header, size_t suffix_start, int depth, struct error *err)
{
	if (suffix_start - header < IMAGE_COMPRESSION_HEADER_SIZE)
		return corrupt(err, module_no, header, "no room for the compression header");
	uint16_t hsize = bytes_le16(mod + header);
	m->compression_method = mod[header + 2];
	m->window_bits = mod[header + 3] ? mod[header + 3] : 15;
	m->inflated_size = bytes_le32(mod + header + 4);
	if (hsize < IMAGE_COMPRESSION_HEADER_SIZE || hsize > suffix_start - header)
		return corrupt(err, module_no, header, "compression header size %u is not valid",
			       hsize);
	if (m->compression_method != 0)
		return unsupported(err, m, "compression method %u (only 0, raw deflate, exists)",
				   m->compression_method);
	if (m->window_bits < 8 || m->window_bits > 15)
		return unsupported(err, m, "deflate window of %u bits", m->window_bits);
	if (m->inflated_size > IMAGE_INFLATED_MAX)
		return unsupported(err, m, "it inflates to %u bytes, above flashd's limit of %u",
				   m->inflated_size, IMAGE_INFLATED_MAX);
	if (depth >= IMAGE_MAX_NESTING)
		return unsupported(err, m, "a compressed module inside a compressed module");

	size_t data = header + hsize;
	uint8_t *out = NULL;
	if (inflate_exact(mod + data, suffix_start - data, m->inflated_size, m->window_bits,
			  module_no, data, &out, err) < 0)
		return -1;
	if (m->flags & IMAGE_FLAG_DROP_MODULE_INFO) {
		/* BVR compresses only the payload of such modules: no inner prefix. */
		free(out);
		return 0;
	}
	int r = parse_owned(out, m->inflated_size, depth + 1, &m->inner, err);
	if (r < 0) {
		error_prefix(err, "inside the compressed module: ");
		return -1;
	}
	const struct image_module *in = &m->inner->modules[0];
	if (in->platform_id != m->platform_id || in->function != m->function ||
	    in->index != m->index)
		return corrupt(err, module_no, data,
			       "the compressed content is %s %u/%u for platform %u, not what its "
			       "wrapper says (%s %u/%u for platform %u)",
			       module_function_name(in->function), in->function, in->index,
			       in->platform_id, module_function_name(m->function), m->function,
			       m->index, m->platform_id);
	return 0;
}

/* ---- one module ---- */

/* Parses everything after the CRC check.  Only called with a matching CRC,
 * so every inconsistency found here is in the module as built. */
static int parse_body(const uint8_t *mod, struct image_module *m, unsigned module_no, int depth,
		      struct error *err)
{
	size_t suffix_start = 0, body = m->prefix_offset + IMAGE_PREFIX_SIZE;
	if (locate_suffix(mod, m, module_no, &suffix_start, err) < 0)
		return -1;
	if (m->flags & IMAGE_FLAG_PREFIX_EXTENSIONS) {
		if (parse_extensions(mod, body, suffix_start, true, "prefix", m, module_no,
				     m->prefix_ext, &m->n_prefix_ext, &body, err) < 0)
			return -1;
		apply_extensions(mod, m, m->prefix_ext, m->n_prefix_ext);
	}
	if (parse_suffix(mod, m, module_no, suffix_start, err) < 0)
		return -1;
	if (m->flags & IMAGE_FLAG_ENCRYPTED)
		return 0; /* shown as such; its content is opaque */
	if (m->flags & IMAGE_FLAG_COMPRESSED)
		return parse_compressed(mod, m, module_no, body, suffix_start, depth, err);
	return 0;
}

/*
 * Parses the module at img->data + off.  Returns 0, 1 when only its CRC is
 * wrong (err says so, m is filled from the prefix), or -1.
 */
static int parse_module(struct image *img, size_t off, int depth, struct image_module *m,
			struct error *err)
{
	const uint8_t *mod = img->data + off;
	unsigned module_no = img->n_modules;
	size_t limit = depth ? IMAGE_INFLATED_MAX : IMAGE_FILE_MAX;
	if (locate_prefix(mod, img->len - off, limit, module_no, m, err) < 0)
		return -1;
	m->file_offset = off;
	m->crc_stored = be32(mod + m->size - IMAGE_CRC_SIZE);
	m->crc_computed = image_crc32(mod, m->size - IMAGE_CRC_SIZE);
	m->crc_ok = m->crc_stored == m->crc_computed;

	if (!m->platform_known) {
		/* Only an offset-0 candidate gets here: without a known platform, the
		 * CRC alone says whether this is a module at all. */
		if (!m->crc_ok) {
			not_a_module(err, STAGE_PLATFORM, img->len - off,
				     "no module prefix at the start of the file (platform id %u is "
				     "unknown and the CRC does not match)",
				     m->platform_id);
			return -1;
		}
		return unsupported(err, m,
				   "it was built for platform id %u, which flashd does not know",
				   m->platform_id);
	}
	if (m->crc_ok)
		return parse_body(mod, m, module_no, depth, err);

	/* Damaged: keep what the prefix says and whatever of the suffix is sane. */
	size_t suffix_start = 0;
	struct error ignored;
	error_init(&ignored);
	if (locate_suffix(mod, m, module_no, &suffix_start, &ignored) == 0 &&
	    parse_suffix(mod, m, module_no, suffix_start, &ignored) < 0) {
		m->product_id = m->product_version = 0xffff;
		m->has_product_data = false;
		m->n_suffix_ext = 0;
	}
	error_clear(&ignored);
	char stored[16], computed[16];
	snprintf(stored, sizeof(stored), "%08x", m->crc_stored);
	snprintf(computed, sizeof(computed), "%08x", m->crc_computed);
	error_set(err, ERR_IMAGE_CORRUPT,
		  "the file is damaged: its contents give CRC-32 %s, but it stores %s", computed,
		  stored);
	error_detail_str(err, "stored_crc", stored);
	error_detail_str(err, "computed_crc", computed);
	error_detail_int(err, "module", module_no);
	error_detail_int(err, "offset", (long long)(off + m->size - IMAGE_CRC_SIZE));
	return 1;
}

/* ---- whole files ---- */

static int parse_modules(struct image *img, int depth, struct error *soft, struct error *err)
{
	size_t off = 0;
	for (;;) {
		if (img->n_modules == IMAGE_MAX_MODULES) {
			error_set(err, ERR_IMAGE_UNSUPPORTED,
				  "the combined file holds more than %d modules",
				  IMAGE_MAX_MODULES);
			error_detail_str(err, "reason", "too many combined modules");
			return -1;
		}
		struct image_module *m = &img->modules[img->n_modules];
		struct error e;
		error_init(&e);
		int r = parse_module(img, off, depth, m, &e);
		if (r < 0) {
			/* Not counted in n_modules, so image_free() would not see it. */
			image_free(m->inner);
			m->inner = NULL;
			if (img->n_modules > 0)
				error_prefix(&e,
					     "module %u of the combined file: ", img->n_modules);
			error_move(err, &e);
			return -1;
		}
		if (r > 0 && !error_is_set(soft))
			error_move(soft, &e);
		error_clear(&e);
		img->n_modules++;
		off += m->size;
		if (!(m->flags & IMAGE_FLAG_COMBINED))
			break;
		if (off == img->len) {
			error_set(err, ERR_IMAGE_TRUNCATED,
				  "module %u is marked as followed by another (combined), but the "
				  "file ends after it",
				  img->n_modules - 1);
			error_detail_int(err, "size", (long long)img->len);
			error_detail_int(err, "module", img->n_modules - 1);
			return -1;
		}
	}
	if (off != img->len) {
		char reason[160];
		snprintf(reason, sizeof(reason),
			 "%zu bytes follow the module's CRC-32 (a padded image, or two files "
			 "joined without the combined flag)",
			 img->len - off);
		error_set(err, ERR_IMAGE_NOT_A_MODULE, "not a Particle firmware module: %s",
			  reason);
		error_detail_int(err, "size", (long long)img->len);
		error_detail_str(err, "reason", reason);
		return -1;
	}
	return 0;
}

/* Takes ownership of data. */
static int parse_owned(uint8_t *data, size_t len, int depth, struct image **ret, struct error *err)
{
	*ret = NULL;
	struct image *img = calloc(1, sizeof(*img));
	if (!img) {
		free(data);
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	}
	img->data = data;
	img->len = len;
	sha256(data, len, img->sha256);

	struct error soft;
	error_init(&soft);
	if (parse_modules(img, depth, &soft, err) < 0) {
		error_clear(&soft);
		image_free(img);
		return -1;
	}
	*ret = img;
	if (error_is_set(&soft)) {
		error_move(err, &soft);
		return -1;
	}
	return 0;
}

static int too_large(struct error *err, size_t size)
{
	error_set(err, ERR_FILE_UNREADABLE,
		  "the file is %zu bytes; firmware files are at most %u bytes", size,
		  IMAGE_FILE_MAX);
	error_detail_int(err, "size", (long long)size);
	error_detail_int(err, "limit", IMAGE_FILE_MAX);
	error_detail_str(err, "reason", "too large to be a firmware module");
	return -1;
}

int image_parse(const uint8_t *buf, size_t len, struct image **ret, struct error *err)
{
	*ret = NULL;
	if (len > IMAGE_FILE_MAX)
		return too_large(err, len);
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	if (len)
		memcpy(copy, buf, len);
	return parse_owned(copy, len, 0, ret, err);
}

void image_free(struct image *img)
{
	if (!img)
		return;
	for (unsigned i = 0; i < img->n_modules; i++)
		image_free(img->modules[i].inner);
	free(img->data);
	free(img);
}

const uint8_t *image_module_bytes(const struct image *img, const struct image_module *m)
{
	return img->data + m->file_offset;
}

/* ---- files ---- */

static int unreadable(struct error *err, const char *name, int errnum, const char *reason)
{
	error_set(err, ERR_FILE_UNREADABLE, "%s: %s", name, reason);
	error_detail_int(err, "errno", errnum);
	error_detail_str(err, "reason", reason);
	return -1;
}

static void name_error(struct error *err, const char *name)
{
	error_detail_str(err, "file", name);
}

int image_load_fd(int fd, const char *name, struct image **ret, struct error *err)
{
	_cleanup_free_ uint8_t *buf = NULL;
	struct stat st;
	*ret = NULL;
	if (fstat(fd, &st) < 0) {
		unreadable(err, name, errno, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		unreadable(err, name, EISDIR, "is a directory, not a firmware file");
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		unreadable(err, name, EINVAL,
			   "is not a regular file (a FIFO, socket or device cannot be flashed)");
		goto fail;
	}
	if ((uint64_t)st.st_size > IMAGE_FILE_MAX) {
		too_large(err, (size_t)st.st_size);
		error_prefix(err, "%s: ", name);
		goto fail;
	}
	/* Read to EOF rather than trusting st_size: /proc-like files report 0. */
	size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : READ_CHUNK, len = 0;
	buf = malloc(cap);
	for (;;) {
		if (!buf) {
			out_of_memory(err, cap, "reading %s", name);
			goto fail;
		}
		if (len == cap) {
			if (cap > IMAGE_FILE_MAX) {
				too_large(err, len);
				error_prefix(err, "%s: ", name);
				goto fail;
			}
			uint8_t *nbuf = realloc(buf, cap * 2);
			if (!nbuf)
				free(TAKE_PTR(buf));
			buf = nbuf;
			cap *= 2;
			continue;
		}
		ssize_t n = pread(fd, buf + len, cap - len, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			unreadable(err, name, e, strerror(e));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > IMAGE_FILE_MAX) {
		too_large(err, len);
		error_prefix(err, "%s: ", name);
		goto fail;
	}
	int r = parse_owned(TAKE_PTR(buf), len, 0, ret, err);
	if (r < 0) {
		error_prefix(err, "%s: ", name);
		name_error(err, name);
	}
	return r;
fail:
	name_error(err, name);
	return -1;
}

int image_load_path(const char *path, struct image **ret, struct error *err)
{
	*ret = NULL;
	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno;
		unreadable(err, path, e, strerror(e));
		name_error(err, path);
		return -1;
	}
	int r = image_load_fd(fd, path, ret, err);
	close(fd);
	return r;
}

/* ---- names ---- */

const char *image_flag_name(unsigned flag)
{
	switch (flag) {
	case IMAGE_FLAG_DROP_MODULE_INFO:
		return "drop-module-info";
	case IMAGE_FLAG_COMPRESSED:
		return "compressed";
	case IMAGE_FLAG_COMBINED:
		return "combined";
	case IMAGE_FLAG_ENCRYPTED:
		return "encrypted";
	case IMAGE_FLAG_PREFIX_EXTENSIONS:
		return "prefix-extensions";
	default:
		return NULL;
	}
}

const char *image_ext_type_name(unsigned type)
{
	switch (type) {
	case IMAGE_EXT_END:
		return "end";
	case IMAGE_EXT_PRODUCT_DATA:
		return "product-data";
	case IMAGE_EXT_DYNAMIC_LOCATION:
		return "dynamic-location";
	case IMAGE_EXT_DEPENDENCY:
		return "dependency";
	case IMAGE_EXT_HASH:
		return "hash";
	case IMAGE_EXT_NAME:
		return "name";
	case IMAGE_EXT_ASSET_DEPENDENCY:
		return "asset-dependency";
	case IMAGE_EXT_SECURITY_MODE:
		return "security-mode";
	case IMAGE_EXT_ASSET_TYPE:
		return "asset-type";
	case IMAGE_EXT_INVALID:
		return "invalid";
	default:
		return "unknown";
	}
}

const struct platform *image_module_platform(const struct image_module *m)
{
	return image_module_has_platform(m) ? platform_by_id(m->platform_id) : NULL;
}

char *image_module_describe(const struct image_module *m, char *buf, size_t size)
{
	const struct platform *p = image_module_platform(m);
	char plat[48];
	if (p)
		snprintf(plat, sizeof(plat), "%s", p->display);
	else
		snprintf(plat, sizeof(plat), "platform %u", m->platform_id);
	/* Slot names carry each family's wording ("system module 3" on the Electron). */
	const struct slot *s =
	    p ? platform_find_slot(p, 0, m->function, m->index, MODULE_STORE_MAIN) : NULL;
	const char *release = osver_release_for(m->function, m->version);
	char rel[32] = "";
	if (release)
		snprintf(rel, sizeof(rel), " (Device OS %s)", release);

	switch (m->function) {
	case MODULE_FUNCTION_USER:
		snprintf(buf, size, "%s application (user part %u), v%u", plat, m->index,
			 m->version);
		break;
	case MODULE_FUNCTION_SYSTEM:
		if (s)
			snprintf(buf, size, "%s %s, v%u%s", plat, s->name, m->version, rel);
		else
			snprintf(buf, size, "%s system part %u, v%u%s", plat, m->index, m->version,
				 rel);
		break;
	case MODULE_FUNCTION_BOOTLOADER:
		if (m->index != 0 && s)
			snprintf(buf, size, "%s bootloader (%s), v%u%s", plat, s->name, m->version,
				 rel);
		else if (m->index != 0)
			snprintf(buf, size, "%s bootloader %u, v%u%s", plat, m->index, m->version,
				 rel);
		else
			snprintf(buf, size, "%s bootloader, v%u%s", plat, m->version, rel);
		break;
	case MODULE_FUNCTION_ASSET:
		if (m->name[0])
			snprintf(buf, size, "asset '%s', v%u", m->name, m->version);
		else
			snprintf(buf, size, "asset, v%u", m->version);
		break;
	default:
		if (m->index != 0)
			snprintf(buf, size, "%s %s %u, v%u%s", plat,
				 module_function_phrase(m->function), m->index, m->version, rel);
		else
			snprintf(buf, size, "%s %s, v%u%s", plat,
				 module_function_phrase(m->function), m->version, rel);
		break;
	}
	return buf;
}
