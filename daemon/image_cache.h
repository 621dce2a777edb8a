/*
 * Firmware images received as file descriptors: read once into memory,
 * parsed, and shared between jobs by SHA-256.  The daemon never opens a path
 * a client names; it reads only regular files passed over SCM_RIGHTS.
 */
#pragma once

#include "bundle.h"
#include "errors.h"
#include "image.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct image_cache;

struct image_ref {
	struct image_ref *next;
	struct image *img;     /* for a bundle: its application (owned by bundle) */
	struct bundle *bundle; /* a .zip bundle: its assets wait here for the asset step */
	uint8_t sha256[32];
	char sha256_hex[65];
	size_t bytes; /* the file's size */
	size_t held;  /* what it counts against the limit: bytes, plus a bundle's assets */
	unsigned refs;
};

/* limit: total bytes of firmware held for all jobs (config image_memory_bytes). */
struct image_cache *image_cache_new(size_t limit);
void image_cache_free(struct image_cache *c);
/*
 * Reads fd (a regular file of at most IMAGE_FILE_MAX bytes, or a zip bundle
 * of at most BUNDLE_FILE_MAX) and returns a reference to its parsed image,
 * shared with any job that sent the same bytes.  A bundle's application is
 * the image; its assets stay on ref->bundle.  Fails with file-unreadable (not
 * a regular file, read error, too large, memory limit), the parser's image-*
 * errors or the bundle reader's bundle-* errors.  name is for messages.
 */
WARN_UNUSED_RESULT int image_cache_load_fd(struct image_cache *c, int fd, const char *name,
					   struct image_ref **ret, struct error *err);
/* The same over bytes already read (buf is taken over and freed). */
WARN_UNUSED_RESULT int image_cache_load_buffer(struct image_cache *c, uint8_t *buf, size_t len,
					       const char *name, struct image_ref **ret,
					       struct error *err);
void image_cache_put(struct image_cache *c, struct image_ref *ref);

/*
 * Reading a client's file without blocking the loop: a thread of its own reads
 * a duplicate of fd (fstat, pread: the same rules as image_cache_load_fd) and
 * cb runs on the loop when it has, or when deadline_ms passed first.  In cb,
 * image_read_take() returns the bytes (the caller owns them) or NULL with
 * file-unreadable set (the reason, "delivered no data within N ms" for the
 * deadline); then image_read_free().  image_read_free() before cb abandons the
 * read (client gone): a thread stuck in read() frees its state when it returns.
 * At most IMAGE_READERS_MAX threads exist, IMAGE_READERS_PER_UID of them for
 * one uid (owner); past that, file-unreadable at once.
 */
#define IMAGE_READERS_MAX     64
#define IMAGE_READERS_PER_UID 16
struct event_base;
struct image_read;
typedef void (*image_read_cb)(void *ctx, struct image_read *r);
struct image_read *image_read_start(struct event_base *base, int fd, const char *name, uid_t owner,
				    unsigned deadline_ms, image_read_cb cb, void *ctx,
				    struct error *err);
uint8_t *image_read_take(struct image_read *r, size_t *len, struct error *err);
void image_read_free(struct image_read *r);
/* Reader threads not yet returned (stalled ones included). */
unsigned image_readers_alive(void);
size_t image_cache_bytes(const struct image_cache *c);
size_t image_cache_count(const struct image_cache *c);

/*
 * A bundle's assets as files of the job (issue 14): for each asset of ref's
 * bundle, its asset module (proto/asset_module.h) as a new reference in out[]
 * and "assets/NAME" in names[]; the planner writes them by control request
 * after the application and skips those the device holds.  *n_out = how many
 * (0 for anything but a bundle with assets).  Fails with assets-not-flashable
 * when they do not fit into room more files of the job, or with the asset
 * builder's and the cache's errors (nothing is kept then).
 */
int image_ref_expand_assets(struct image_cache *c, const struct image_ref *ref, const char *name,
			    struct image_ref **out, char (*names)[WIRE_NAME_MAX], unsigned room,
			    unsigned *n_out, struct error *err);
