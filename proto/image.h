/*
 * Particle firmware module images (docs/device/module-format.md): locate the
 * module_info_t prefix, parse prefix, extensions, suffix and CRC, inflate
 * compressed modules and split combined files.  Pure functions over buffers:
 * no I/O except image_load_fd(), easy to fuzz.
 */
#pragma once

#include "cleanup.h"
#include "errors.h"
#include "platform.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGE_FILE_MAX	     (16u * 1024 * 1024) /* largest file accepted */
#define IMAGE_INFLATED_MAX   (16u * 1024 * 1024) /* largest inflated module */
#define IMAGE_MAX_MODULES    8			 /* modules in one combined file */
#define IMAGE_MAX_EXTENSIONS 16			 /* extensions kept per prefix/suffix */
#define IMAGE_PREFIX_SIZE    24
#define IMAGE_CRC_SIZE	     4
/* reserved u16, SHA-256, suffix size u16 (docs/device/module-format.md#suffix-and-checksums) */
#define IMAGE_SUFFIX_TAIL_SIZE 36
#define IMAGE_MIN_MODULE_SIZE  (IMAGE_PREFIX_SIZE + IMAGE_SUFFIX_TAIL_SIZE + IMAGE_CRC_SIZE)
/* after the prefix of a compressed module (docs/device/module-format.md#flags) */
#define IMAGE_COMPRESSION_HEADER_SIZE 8
#define IMAGE_MAX_NESTING	      1 /* a compressed module's content is not compressed again */

enum image_flag {
	IMAGE_FLAG_DROP_MODULE_INFO = 0x01,
	IMAGE_FLAG_COMPRESSED = 0x02,
	IMAGE_FLAG_COMBINED = 0x04,
	IMAGE_FLAG_ENCRYPTED = 0x08,
	IMAGE_FLAG_PREFIX_EXTENSIONS = 0x10,
};

enum image_ext_type {
	IMAGE_EXT_END = 0x0000,
	IMAGE_EXT_PRODUCT_DATA = 0x0001,
	IMAGE_EXT_DYNAMIC_LOCATION = 0x0002,
	IMAGE_EXT_DEPENDENCY = 0x0003,
	IMAGE_EXT_HASH = 0x0010,
	IMAGE_EXT_NAME = 0x0011,
	IMAGE_EXT_ASSET_DEPENDENCY = 0x0012,
	IMAGE_EXT_SECURITY_MODE = 0x0013,
	IMAGE_EXT_ASSET_TYPE = 0x0014,
	IMAGE_EXT_INVALID = 0xffff,
};

struct image_dependency {
	uint8_t function; /* 0 = none */
	uint8_t index;
	uint16_t version;
};

struct image_extension {
	uint16_t type;
	uint16_t length; /* including the 4-byte header */
	size_t offset;	 /* offset in the module's bytes */
};

enum image_sha_verdict {
	IMAGE_SHA_OK, /* stored SHA-256 matches */
	/* a warning only: devices never check it
	 * (docs/device/module-format.md#suffix-and-checksums) */
	IMAGE_SHA_MISMATCH,
	IMAGE_SHA_ABSENT, /* no suffix to hold one */
};

/* Where the module_info_t prefix was found (docs/device/module-format.md#where-the-prefix-is), each
 * with its device rule. */
enum image_prefix_rule {
	IMAGE_PREFIX_AT_START,	       /* offset 0 */
	IMAGE_PREFIX_AFTER_REALTEK,    /* 0x20, after a 32-byte Realtek image header (P2 family) */
	IMAGE_PREFIX_AFTER_GEN2_TABLE, /* 0x184, after an STM32F2 vector table (Gen 2) */
	IMAGE_PREFIX_AFTER_CORE_TABLE, /* 0x10c, after an STM32F1 vector table (Core) */
	IMAGE_PREFIX_AFTER_GEN3_TABLE, /* 0x200, after an nRF52840 vector table (Gen 3) */
};

struct image_module {
	/* Where it sits in the (outer or inflated) buffer. */
	size_t file_offset;   /* first byte of the module in the file */
	size_t size;	      /* module bytes including CRC = end - start + 4 */
	size_t prefix_offset; /* offset of module_info_t from file_offset */
	enum image_prefix_rule prefix_rule;
	bool platform_known; /* platform_id is in the platform catalogue */

	/* module_info_t (docs/device/module-format.md#prefix) */
	uint32_t start;
	uint32_t end;
	uint8_t reserved; /* MCU target on Gen 3/P2 (0x21 = ESP32 NCP) */
	uint8_t flags;
	uint16_t version;
	uint16_t platform_id;
	uint8_t function;
	uint8_t index;
	struct image_dependency deps[2];
	struct image_extension prefix_ext[IMAGE_MAX_EXTENSIONS];
	unsigned n_prefix_ext;

	/* Suffix (docs/device/module-format.md#suffix-and-checksums) */
	bool has_suffix; /* false when suffix size is 0xffff or unusable */
	uint16_t suffix_size;
	bool has_product_data;	     /* the suffix carries product id/version (suffix size > 36) */
	uint16_t product_id;	     /* 0xffff = none */
	uint16_t product_version;    /* 0xffff = none */
	uint8_t sha256[32];	     /* stored */
	uint8_t sha256_computed[32]; /* of bytes [0, size - 38) */
	enum image_sha_verdict sha_verdict;
	struct image_extension suffix_ext[IMAGE_MAX_EXTENSIONS];
	unsigned n_suffix_ext;
	/* From the DYNAMIC_LOCATION extension, when present. */
	bool has_dynamic_location;
	uint32_t dynalib_load_address;
	uint32_t dynalib_start_address;
	/* From a NAME extension, when present (NUL-terminated, truncated). */
	char name[64];

	/* CRC-32 (IEEE), stored big-endian in the last 4 bytes of the module. */
	uint32_t crc_stored;
	uint32_t crc_computed;
	bool crc_ok;

	/* Compressed modules (flag 0x02): the header after the prefix and the
	 * inflated inner module (NULL when the outer CRC failed). */
	uint8_t compression_method; /* 0 = raw deflate, the only one defined */
	uint8_t window_bits;	    /* 8..15 (0 in the file means 15) */
	uint32_t inflated_size;	    /* declared size of the inner module */
	struct image *inner;
};

/* A parsed file: one module, or several for combined files (flag 0x04). */
struct image {
	uint8_t *data; /* owned copy of the file (or of the inflated bytes) */
	size_t len;
	uint8_t sha256[32]; /* of the whole file: identity for sharing between jobs */
	struct image_module modules[IMAGE_MAX_MODULES];
	unsigned n_modules;
};

/*
 * Parses a buffer (copied).  Fails with image-not-a-module, image-truncated,
 * image-corrupt, image-unsupported, file-unreadable (over IMAGE_FILE_MAX).
 * Returns 0 or -1.  On -1 *ret is NULL, except when a module's CRC-32 does
 * not match (image-corrupt with detail stored_crc): then the image is still
 * returned in *ret, fully parsed, so that callers can show what it is; the
 * caller frees it.
 */
WARN_UNUSED_RESULT int image_parse(const uint8_t *buf, size_t len, struct image **ret,
				   struct error *err);
/* Reads an fd (regular file, at most IMAGE_FILE_MAX) and parses it.  Errors
 * carry name as their "file" detail and message prefix.  Same *ret rule. */
WARN_UNUSED_RESULT int image_load_fd(int fd, const char *name, struct image **ret,
				     struct error *err);
/* Opens path without blocking on FIFOs, then image_load_fd().  ENOENT, EACCES,
 * directories and special files fail with file-unreadable. */
WARN_UNUSED_RESULT int image_load_path(const char *path, struct image **ret, struct error *err);
void image_free(struct image *img);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct image *, image_free)

/* Pointer to a module's bytes (its first byte in flash). */
const uint8_t *image_module_bytes(const struct image *img, const struct image_module *m);

/* "at the start of the file", "after the nRF52840 vector table (0x200)". */
const char *image_prefix_rule_name(enum image_prefix_rule rule);
/* "compressed", "combined", ... for one flag bit; NULL for an unknown bit. */
const char *image_flag_name(unsigned flag);
/* "product-data", "dynamic-location", ... ; "unknown" otherwise. */
const char *image_ext_type_name(unsigned type);
/* The CRC-32 (zlib/IEEE) the device computes over a module
 * (docs/device/module-format.md#suffix-and-checksums). */
uint32_t image_crc32(const uint8_t *buf, size_t len);

/*
 * One line a user understands: "Photon application (user part 1), v4".
 * Writes at most size bytes; returns buf.
 */
char *image_module_describe(const struct image_module *m, char *buf, size_t size);

/*
 * Whether the module names a platform.  An asset module does not: its prefix's
 * platform field is 0 because binary-version-reader's createAssetModule()
 * (lib/moduleEncoding.js) leaves it so, and Device OS's AssetReader::validate()
 * (system/src/asset_manager.cpp) never reads it; 0 there is not the Core.
 */
static inline bool image_module_has_platform(const struct image_module *m)
{
	return m->function != MODULE_FUNCTION_ASSET;
}
/* The platform the module was built for: NULL for an asset (it has none) or an
 * id not in the catalogue (image_module_has_platform() tells which). */
const struct platform *image_module_platform(const struct image_module *m);

/* The module's end address rounded out to include the CRC: start + size. */
static inline uint32_t image_module_flash_end(const struct image_module *m)
{
	return m->end + 4;
}
