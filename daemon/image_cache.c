#include "image_cache.h"

#include <errno.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct image_cache {
	struct image_ref *refs;
	size_t bytes, limit, count;
};

struct image_cache *image_cache_new(size_t limit)
{
	struct image_cache *c = calloc(1, sizeof(*c));
	if (c)
		c->limit = limit;
	return c;
}

void image_cache_free(struct image_cache *c)
{
	if (!c)
		return;
	while (c->refs) {
		struct image_ref *r = c->refs;
		c->refs = r->next;
		image_free(r->img);
		free(r);
	}
	free(c);
}

size_t image_cache_bytes(const struct image_cache *c)
{
	return c->bytes;
}

size_t image_cache_count(const struct image_cache *c)
{
	return c->count;
}

static int unreadable(struct error *err, int errnum, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int unreadable(struct error *err, int errnum, const char *name, const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_FILE_UNREADABLE, "%s: %s", name, reason);
	error_detail_str(err, "reason", reason);
	error_detail_str(err, "file", name);
	if (errnum)
		error_detail_int(err, "errno", errnum);
	return -1;
}

/* Reads the whole file with pread (the client's file offset does not matter). */
static uint8_t *read_all(int fd, const char *name, size_t *ret_len, struct error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		unreadable(err, errno, name, "fstat failed: %s", strerror(errno));
		return NULL;
	}
	/* Pipes, sockets and devices could block the daemon or never end. */
	if (!S_ISREG(st.st_mode)) {
		unreadable(err, 0, name, "not a regular file");
		return NULL;
	}
	if ((uint64_t)st.st_size > IMAGE_FILE_MAX) {
		unreadable(err, 0, name, "%lld bytes is over the limit", (long long)st.st_size);
		error_detail_int(err, "size", st.st_size);
		error_detail_int(err, "limit", IMAGE_FILE_MAX);
		return NULL;
	}
	size_t len = (size_t)st.st_size;
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf) {
		unreadable(err, ENOMEM, name, "out of memory");
		return NULL;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, buf + got, len - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			unreadable(err, r < 0 ? errno : 0, name, "read failed: %s",
				   r < 0 ? strerror(errno) : "file shrank while reading");
			free(buf);
			return NULL;
		}
		got += (size_t)r;
	}
	*ret_len = len;
	return buf;
}

int image_cache_load_fd(struct image_cache *c, int fd, const char *name, struct image_ref **ret,
			struct error *err)
{
	size_t len = 0;
	uint8_t *buf = read_all(fd, name, &len, err);
	if (!buf)
		return -1;
	return image_cache_load_buffer(c, buf, len, name, ret, err);
}

int image_cache_load_buffer(struct image_cache *c, uint8_t *buf, size_t len, const char *name,
			    struct image_ref **ret, struct error *err)
{
	uint8_t sha[32];
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, len, buf);
	sha256_digest(&ctx, sizeof(sha), sha);
	for (struct image_ref *r = c->refs; r; r = r->next) {
		if (memcmp(r->sha256, sha, sizeof(sha)) == 0) {
			free(buf);
			r->refs++;
			*ret = r;
			return 0;
		}
	}
	if (c->bytes + len > c->limit) {
		free(buf);
		unreadable(err, 0, name, "the daemon holds too much firmware for other jobs");
		error_detail_int(err, "limit", (long long)c->limit);
		return -1;
	}
	struct image *img = NULL;
	int rc = image_parse(buf, len, &img, err);
	free(buf);
	if (rc < 0) {
		/* A damaged image is returned for display; it is not flashed. */
		image_free(img);
		error_detail_str(err, "file", name);
		return -1;
	}
	struct image_ref *r = calloc(1, sizeof(*r));
	if (!r) {
		image_free(img);
		return unreadable(err, ENOMEM, name, "out of memory");
	}
	r->img = img;
	memcpy(r->sha256, sha, sizeof(sha));
	for (int i = 0; i < 32; i++)
		snprintf(r->sha256_hex + 2 * i, 3, "%02x", sha[i]);
	r->bytes = len;
	r->refs = 1;
	r->next = c->refs;
	c->refs = r;
	c->bytes += len;
	c->count++;
	*ret = r;
	return 0;
}

void image_cache_put(struct image_cache *c, struct image_ref *ref)
{
	if (!ref || --ref->refs > 0)
		return;
	for (struct image_ref **pp = &c->refs; *pp; pp = &(*pp)->next) {
		if (*pp == ref) {
			*pp = ref->next;
			break;
		}
	}
	c->bytes -= ref->bytes;
	c->count--;
	image_free(ref->img);
	free(ref);
}
