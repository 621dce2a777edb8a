/*
 * Firmware images received as file descriptors: read once into memory,
 * parsed, and shared between jobs by SHA-256.  The daemon never opens a path
 * a client names; it reads only regular files passed over SCM_RIGHTS.
 */
#pragma once

#include "errors.h"
#include "image.h"

#include <stddef.h>
#include <stdint.h>

struct image_cache;

struct image_ref {
	struct image_ref *next;
	struct image *img;
	uint8_t sha256[32];
	char sha256_hex[65];
	size_t bytes;
	unsigned refs;
};

/* limit: total bytes of firmware held for all jobs (config image_memory_bytes). */
struct image_cache *image_cache_new(size_t limit);
void image_cache_free(struct image_cache *c);
/*
 * Reads fd (a regular file of at most IMAGE_FILE_MAX bytes) and returns a
 * reference to its parsed image, shared with any job that sent the same
 * bytes.  Fails with file-unreadable (not a regular file, read error, too
 * large, memory limit) or the parser's image-* errors.  name is for messages.
 */
int image_cache_load_fd(struct image_cache *c, int fd, const char *name, struct image_ref **ret,
			struct error *err);
/* The same for bytes already in memory (an upload): takes buf (malloc'd) in any case. */
int image_cache_load_buffer(struct image_cache *c, uint8_t *buf, size_t len, const char *name,
			    struct image_ref **ret, struct error *err);
void image_cache_put(struct image_cache *c, struct image_ref *ref);
size_t image_cache_bytes(const struct image_cache *c);
size_t image_cache_count(const struct image_cache *c);
