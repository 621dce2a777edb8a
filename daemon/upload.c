#include "upload.h"

#include "image.h"
#include "log.h"
#include "settings.h"
#include "transport.h"

#include <event2/event.h>
#include <stdarg.h>
#include <nettle/sha2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct timeout_def upload_timeouts[] = {
    {"upload_idle_ms", 30000,
     "an upload that gets no chunk (or, once complete, no flash request) for this long is freed"},
    {0},
};

struct upload {
	struct upload *next;
	struct uploads *owner;
	unsigned long client;
	uid_t uid;
	char id[WIRE_UPLOAD_ID_MAX];
	char name[WIRE_NAME_MAX];
	uint8_t *bytes;
	size_t size, received;
	uint8_t expected[32];
	struct sha256_ctx sha;
	bool complete;
	struct event *idle;
};

struct uploads {
	struct event_base *base;
	struct upload_limits limits;
	struct upload *list;
	size_t count, bytes;
	unsigned long long next_id;
};

void upload_limits_default(struct upload_limits *l, size_t memory_max)
{
	l->memory_max = memory_max;
	l->per_client = WIRE_IMAGES_MAX;
	l->per_uid = 16;
	l->bytes_per_uid = 64u * 1024 * 1024;
}

void uploads_register_timeouts(void)
{
	timeouts_register(upload_timeouts);
}

struct uploads *uploads_new(struct event_base *base, const struct upload_limits *limits)
{
	struct uploads *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	/* Idempotent: main.c registers the key before the config is read. */
	uploads_register_timeouts();
	u->base = base;
	u->limits = *limits;
	return u;
}

static void upload_free(struct uploads *u, struct upload *up)
{
	for (struct upload **pp = &u->list; *pp; pp = &(*pp)->next) {
		if (*pp == up) {
			*pp = up->next;
			break;
		}
	}
	u->count--;
	u->bytes -= up->size;
	event_free(up->idle);
	free(up->bytes);
	free(up);
}

void uploads_free(struct uploads *u)
{
	if (!u)
		return;
	while (u->list)
		upload_free(u, u->list);
	free(u);
}

size_t uploads_count(const struct uploads *u)
{
	return u->count;
}

size_t uploads_bytes(const struct uploads *u)
{
	return u->bytes;
}

static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct upload *up = arg;
	log_info("upload %s (%s, %zu of %zu bytes) abandoned: freed after %u ms without use",
		 up->id, up->name, up->received, up->size, timeout_ms("upload_idle_ms"));
	upload_free(up->owner, up);
}

static void touch(struct upload *up)
{
	unsigned ms = timeout_ms("upload_idle_ms");
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(up->idle, &tv);
}

static int too_many(struct error *err, const char *kind, size_t limit, uid_t uid, const char *fmt,
		    ...) __attribute__((format(printf, 5, 6)));

static int too_many(struct error *err, const char *kind, size_t limit, uid_t uid, const char *fmt,
		    ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(err, ERR_TOO_MANY_UPLOADS, fmt, ap);
	va_end(ap);
	error_detail_str(err, "kind", kind);
	error_detail_int(err, "limit", (long long)limit);
	error_detail_int(err, "uid", uid);
	return -1;
}

int uploads_begin(struct uploads *u, unsigned long client, uid_t uid,
		  const struct wire_upload_begin *b, json_t *reply, struct error *err)
{
	/* The same limit as for a file passed as an fd, before any byte is read. */
	if (b->size > IMAGE_FILE_MAX) {
		error_set(err, ERR_UPLOAD_TOO_LARGE,
			  "%s: an upload of %llu bytes is over the limit of %u bytes", b->name,
			  b->size, (unsigned)IMAGE_FILE_MAX);
		error_detail_int(err, "size", (long long)b->size);
		error_detail_int(err, "limit", IMAGE_FILE_MAX);
		error_detail_str(err, "file", b->name);
		return -1;
	}
	size_t size = (size_t)b->size;
	unsigned n_client = 0, n_uid = 0;
	size_t uid_bytes = 0;
	for (struct upload *up = u->list; up; up = up->next) {
		n_client += up->client == client;
		if (up->uid == uid) {
			n_uid++;
			uid_bytes += up->size;
		}
	}
	if (n_client >= u->limits.per_client)
		return too_many(err, "connection", u->limits.per_client, uid,
				"this connection has %u uploads open", n_client);
	if (n_uid >= u->limits.per_uid)
		return too_many(err, "uid", u->limits.per_uid, uid, "uid %u has %u uploads open",
				(unsigned)uid, n_uid);
	if (uid_bytes + size > u->limits.bytes_per_uid)
		return too_many(err, "uid-bytes", u->limits.bytes_per_uid, uid,
				"uid %u's open uploads would hold %zu bytes", (unsigned)uid,
				uid_bytes + size);
	if (u->bytes + size > u->limits.memory_max)
		return too_many(err, "memory", u->limits.memory_max, uid,
				"the daemon's open uploads would hold %zu bytes", u->bytes + size);
	struct upload *up = calloc(1, sizeof(*up));
	if (!up || !(up->bytes = malloc(size))) {
		free(up);
		return error_set(err, ERR_INTERNAL, "out of memory for an upload of %zu bytes",
				 size);
	}
	up->idle = evtimer_new(u->base, on_idle, up);
	if (!up->idle) {
		free(up->bytes);
		free(up);
		return error_set(err, ERR_INTERNAL, "out of memory");
	}
	up->owner = u;
	up->client = client;
	up->uid = uid;
	up->size = size;
	memcpy(up->expected, b->sha256, sizeof(up->expected));
	snprintf(up->name, sizeof(up->name), "%s", b->name);
	snprintf(up->id, sizeof(up->id), "upload-%llu", ++u->next_id);
	sha256_init(&up->sha);
	up->next = u->list;
	u->list = up;
	u->count++;
	u->bytes += size;
	touch(up);
	json_object_set_new(reply, "upload", json_string(up->id));
	json_object_set_new(reply, "size", json_integer((json_int_t)size));
	json_object_set_new(reply, "chunk_bytes", json_integer(WIRE_UPLOAD_CHUNK_MAX));
	json_object_set_new(reply, "idle_timeout_s",
			    json_real(timeout_ms("upload_idle_ms") / 1000.0));
	return 0;
}

static struct upload *find(struct uploads *u, unsigned long client, const char *id,
			   struct error *err)
{
	for (struct upload *up = u->list; up; up = up->next)
		if (up->client == client && strcmp(up->id, id) == 0)
			return up;
	error_set(err, ERR_UPLOAD_NOT_FOUND, "no upload %s is open on this connection", id);
	error_detail_str(err, "upload", id);
	error_detail_int(err, "idle_timeout_ms", timeout_ms("upload_idle_ms"));
	return NULL;
}

static void hex(const uint8_t *sha, char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", sha[i]);
}

static int invalid(struct error *err, const struct upload *up, const char *reason,
		   unsigned long long offset, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int invalid(struct error *err, const struct upload *up, const char *reason,
		   unsigned long long offset, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(err, ERR_UPLOAD_INVALID, fmt, ap);
	va_end(ap);
	error_detail_str(err, "reason", reason);
	error_detail_str(err, "upload", up->id);
	error_detail_str(err, "file", up->name);
	error_detail_int(err, "offset", (long long)offset);
	error_detail_int(err, "expected_offset", (long long)up->received);
	error_detail_int(err, "size", (long long)up->size);
	return -1;
}

int uploads_chunk(struct uploads *u, unsigned long client, const struct wire_upload_chunk *ch,
		  json_t *reply, struct error *err)
{
	struct upload *up = find(u, client, ch->upload, err);
	if (!up)
		return -1;
	if (up->complete)
		return invalid(err, up, "already-complete", ch->offset,
			       "upload %s is complete: a chunk at offset %llu came after its last "
			       "byte",
			       up->id, ch->offset);
	if (ch->offset != up->received)
		return invalid(err, up, "wrong-offset", ch->offset,
			       "upload %s: a chunk at offset %llu, but %zu bytes are in (chunks "
			       "come in order)",
			       up->id, ch->offset, up->received);
	if (ch->len > up->size - up->received)
		return invalid(err, up, "past-end", ch->offset,
			       "upload %s: a chunk of %zu bytes at offset %llu ends past the "
			       "announced size of %zu bytes",
			       up->id, ch->len, ch->offset, up->size);
	memcpy(up->bytes + up->received, ch->data, ch->len);
	sha256_update(&up->sha, ch->len, ch->data);
	up->received += ch->len;
	touch(up);
	if (up->received == up->size) {
		uint8_t sha[32];
		sha256_digest(&up->sha, sizeof(sha), sha);
		if (memcmp(sha, up->expected, sizeof(sha)) != 0) {
			char want[65], got[65];
			hex(up->expected, want);
			hex(sha, got);
			error_set(err, ERR_UPLOAD_CHECKSUM_MISMATCH,
				  "%s: the %zu bytes of upload %s have SHA-256 %.12s…, not the "
				  "announced %.12s…",
				  up->name, up->size, up->id, got, want);
			error_detail_str(err, "upload", up->id);
			error_detail_str(err, "file", up->name);
			error_detail_int(err, "size", (long long)up->size);
			error_detail_str(err, "expected_sha256", want);
			error_detail_str(err, "computed_sha256", got);
			upload_free(u, up);
			return -1;
		}
		up->complete = true;
		char h[65];
		hex(sha, h);
		json_object_set_new(reply, "sha256", json_string(h));
	}
	json_object_set_new(reply, "upload", json_string(up->id));
	json_object_set_new(reply, "received", json_integer((json_int_t)up->received));
	json_object_set_new(reply, "size", json_integer((json_int_t)up->size));
	json_object_set_new(reply, "complete", json_boolean(up->complete));
	return 0;
}

const uint8_t *uploads_get(struct uploads *u, unsigned long client, const char *id, size_t *ret_len,
			   struct error *err)
{
	struct upload *up = find(u, client, id, err);
	if (!up)
		return NULL;
	if (!up->complete) {
		invalid(err, up, "incomplete", up->received,
			"upload %s has %zu of its %zu bytes: a flash request needs all of them",
			up->id, up->received, up->size);
		return NULL;
	}
	touch(up); /* a flash request that failed: the client may resend it */
	*ret_len = up->size;
	return up->bytes;
}

void uploads_release(struct uploads *u, unsigned long client, const char *id)
{
	for (struct upload *up = u->list; up; up = up->next) {
		if (up->client == client && strcmp(up->id, id) == 0) {
			upload_free(u, up);
			return;
		}
	}
}

void uploads_client_gone(struct uploads *u, unsigned long client)
{
	for (struct upload *up = u->list, *next; up; up = next) {
		next = up->next;
		if (up->client == client)
			upload_free(u, up);
	}
}
