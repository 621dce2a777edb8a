/*
 * Particle application bundles: the .zip that `particle compile` and Particle
 * Workbench make for a project with assets.  Its layout is the one
 * binary-version-reader's createApplicationAndAssetBundle() writes and
 * unpackApplicationAndAssetBundle() reads (lib/moduleEncoding.js):
 *
 *   NAME.bin          the application module, at the top of the zip
 *   assets/NAME       each asset's raw bytes (not wrapped in an asset module)
 *   env.json          optional: environment variables, for display only
 *
 * and the application carries one ASSET_DEPENDENCY extension (0x0012: u8
 * hash type 0 = SHA-256, u8 hash length, hash, then the name) per asset, whose
 * hash is the SHA-256 of the raw asset bytes.  Anything else in the zip is
 * ignored, as Particle's reader ignores it.
 *
 * Pure functions over a memory buffer (libzip reads it through a buffer
 * source): no file or device I/O, easy to fuzz.  Every limit below is checked
 * from the zip's central directory before anything is inflated, and again
 * while inflating.
 */
#pragma once

#include "cleanup.h"

#include "errors.h"
#include "image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BUNDLE_MAX_ENTRIES    64u		  /* entries in the zip, directories included */
#define BUNDLE_TOTAL_MAX      (64u * 1024 * 1024) /* sum of uncompressed entry sizes */
#define BUNDLE_FILE_MAX	      (BUNDLE_TOTAL_MAX + 1024u * 1024) /* the zip: entries + headers */
#define BUNDLE_RATIO_MAX      100u	   /* uncompressed : compressed, per entry */
#define BUNDLE_RATIO_MIN_SIZE (64u * 1024) /* entries smaller than this are not ratio-checked */
#define BUNDLE_NAME_MAX	      256u	   /* bytes of an entry name, NUL excluded */
#define BUNDLE_ASSETS_DIR     "assets/"
#define BUNDLE_ENV_FILE	      "env.json"

struct bundle_asset {
	char name[BUNDLE_NAME_MAX + 1]; /* as the application names it: the part after assets/ */
	uint8_t *data;			/* raw bytes, owned */
	size_t size;
	uint8_t sha256[32];
};

/* One ASSET_DEPENDENCY extension of the application. */
struct bundle_asset_dep {
	char name[BUNDLE_NAME_MAX + 1];
	uint8_t hash_type; /* 0 = SHA-256, the only one Device OS and particle-cli use */
	uint8_t sha256[32];
	bool in_bundle; /* an asset of this name is in the zip */
	bool hash_ok;	/* ... and its SHA-256 matches */
};

struct bundle {
	size_t zip_size;
	uint8_t zip_sha256[32];
	unsigned n_entries;  /* entries in the central directory */
	uint64_t total_size; /* sum of their uncompressed sizes */
	char app_name[BUNDLE_NAME_MAX + 1];
	struct image *app; /* parsed application (image_parse), owned */
	struct bundle_asset assets[BUNDLE_MAX_ENTRIES];
	unsigned n_assets;
	struct bundle_asset_dep deps[BUNDLE_MAX_ENTRIES];
	unsigned n_deps;
	bool has_env; /* env.json is present */
	size_t env_size;
	char ignored[8][BUNDLE_NAME_MAX + 1]; /* entries neither application, asset nor env */
	unsigned n_ignored;		      /* all of them, even past the 8 kept */
};

/* "PK\3\4" (an entry follows) or "PK\5\6" (an empty zip's end record). */
bool bundle_is_zip(const uint8_t *buf, size_t len);

/*
 * Reads a bundle from buf (not kept).  Fails with bundle-corrupt (not a zip,
 * truncated, CRC or consistency errors, encrypted or unknown compression),
 * bundle-too-many-entries, bundle-too-large, bundle-compression-ratio,
 * bundle-unsafe-name, bundle-no-application, bundle-several-applications,
 * bundle-asset-mismatch, or the application's image-* errors (prefixed with
 * its name in the zip).  Returns 0 or -1.  On -1 *ret is NULL, except for
 * bundle-asset-mismatch and an application whose CRC-32 fails
 * (image-corrupt): then the bundle is returned fully read, so that callers can
 * show what it holds; the caller frees it.
 */
int bundle_parse(const uint8_t *buf, size_t len, struct bundle **ret, struct error *err);
void bundle_free(struct bundle *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct bundle *, bundle_free)

/* The asset dependencies an application module declares (ASSET_DEPENDENCY
 * extensions in its prefix or suffix), at most max; returns how many it has
 * (which may be more than max).  Unusable records (hash type or length not
 * SHA-256's, empty name) count but are filled with hash_type 0xff. */
unsigned bundle_app_asset_deps(const struct image *img, struct bundle_asset_dep *out, unsigned max);

/* The same for one module of an image (no look inside compressed ones). */
unsigned bundle_module_asset_deps(const struct image *img, const struct image_module *m,
				  struct bundle_asset_dep *out, unsigned max);

/* Bytes of all assets. */
uint64_t bundle_assets_bytes(const struct bundle *b);
