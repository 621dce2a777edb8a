/*
 * In-band uploads (proto/PROTOCOL.md, "Uploads"): firmware images sent as
 * bytes over the socket by clients that cannot pass file descriptors (Node.js,
 * browsers' native hosts).  A client announces an upload's size and SHA-256
 * (upload-begin), sends its bytes in order in chunks of at most
 * WIRE_UPLOAD_CHUNK_MAX bytes (upload-chunk), and names the finished upload in
 * a flash request instead of an fd.  The bytes are hashed as they arrive and
 * checked against the announced SHA-256 when the last one is in.
 *
 * Limits, all checked at upload-begin before any byte is accepted: one file at
 * most IMAGE_FILE_MAX bytes (as for fds: upload-too-large), uploads open per
 * connection and per uid, bytes announced per uid, and bytes held for all
 * uploads together (image_memory_bytes, as for fds) (too-many-uploads).  An
 * upload that gets neither a chunk nor a flash request for upload_idle_ms is
 * freed, and so are a connection's uploads when it closes.
 *
 * An upload belongs to the connection that began it: ids are looked up per
 * connection, so one client can never use another's bytes.
 */
#pragma once

#include "errors.h"
#include "wire.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct uploads;

struct upload_limits {
	size_t memory_max;    /* bytes held for all open uploads (image_memory_bytes) */
	unsigned per_client;  /* uploads open on one connection */
	unsigned per_uid;     /* uploads open for one uid, all connections */
	size_t bytes_per_uid; /* bytes announced by one uid's open uploads */
};

/* Default limits: per_client WIRE_IMAGES_MAX, per_uid 16, 64 MiB per uid. */
void upload_limits_default(struct upload_limits *l, size_t memory_max);
/* Registers the timeout key upload_idle_ms (default 30000) before the config is read. */
void uploads_register_timeouts(void);

struct uploads *uploads_new(struct event_base *base, const struct upload_limits *limits);
void uploads_free(struct uploads *u);

/* upload-begin for connection client (uid): fills reply ("upload", "size",
 * "chunk_bytes", "idle_timeout_s") or fails with upload-too-large or
 * too-many-uploads. */
int uploads_begin(struct uploads *u, unsigned long client, uid_t uid,
		  const struct wire_upload_begin *b, json_t *reply, struct error *err);
/* upload-chunk: appends the bytes (they must start where the upload's bytes
 * so far end); fills reply ("upload", "received", "size", "complete", and
 * "sha256" once complete).  Fails with upload-not-found, upload-invalid
 * (wrong-offset, past-end, already-complete), or upload-checksum-mismatch when
 * the last byte is in and the SHA-256 differs (the upload is then freed). */
int uploads_chunk(struct uploads *u, unsigned long client, const struct wire_upload_chunk *ch,
		  json_t *reply, struct error *err);
/* A complete, verified upload's bytes (owned by the upload) for a flash request;
 * fails with upload-not-found or upload-invalid ("incomplete"). */
const uint8_t *uploads_get(struct uploads *u, unsigned long client, const char *id, size_t *ret_len,
			   struct error *err);
/* A flash request created its jobs from the upload: it is freed. */
void uploads_release(struct uploads *u, unsigned long client, const char *id);
/* The connection closed: its uploads are freed. */
void uploads_client_gone(struct uploads *u, unsigned long client);

size_t uploads_count(const struct uploads *u);
size_t uploads_bytes(const struct uploads *u); /* bytes reserved (announced) */
