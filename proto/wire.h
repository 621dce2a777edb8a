/*
 * The flashd wire protocol codec (proto/PROTOCOL.md): newline-delimited JSON
 * objects between flashctl (or any client) and flashd.  Pure functions over
 * strings and JSON values; no I/O.  Both sides use it, so a change here is a
 * change of the protocol.
 */
#pragma once

#include "errors.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_PROTOCOL_VERSION 1
/* Largest request line the daemon accepts (bytes, newline excluded). */
#define WIRE_REQUEST_MAX (64u * 1024)
/* Largest JSON nesting a request may have: requests are flat. */
#define WIRE_DEPTH_MAX 8
/* Images (file descriptors) in one flash request. */
#define WIRE_IMAGES_MAX 8
#define WIRE_NAME_MAX	256
#define WIRE_TARGET_MAX 256

/*
 * In-band uploads (clients that cannot pass fds, e.g. Node.js): the bytes of
 * an image travel base64-encoded in upload-chunk requests of at most
 * WIRE_UPLOAD_CHUNK_MAX decoded bytes.  Such a line is longer than
 * WIRE_REQUEST_MAX, so upload-chunk alone may use up to WIRE_LINE_MAX (the
 * server allows that once the connection has begun an upload).
 */
#define WIRE_UPLOAD_CHUNK_MAX (64u * 1024)
/* base64 of a full chunk (87384 characters) plus room for its envelope. */
#define WIRE_UPLOAD_B64_MAX (4u * ((WIRE_UPLOAD_CHUNK_MAX + 2) / 3))
#define WIRE_LINE_MAX	    (96u * 1024)
#define WIRE_UPLOAD_ID_MAX  32

enum wire_request_type {
	WIRE_REQ_HELLO,
	WIRE_REQ_LIST_DEVICES,
	WIRE_REQ_DEVICE_INFO,
	WIRE_REQ_FLASH,
	WIRE_REQ_LIST_JOBS,
	WIRE_REQ_CANCEL,
	WIRE_REQ_SUBSCRIBE,
	WIRE_REQ_HISTORY,
	WIRE_REQ_UPLOAD_BEGIN,
	WIRE_REQ_UPLOAD_CHUNK,
	WIRE_REQ_AUTO_ADD,
	WIRE_REQ_AUTO_LIST,
	WIRE_REQ_AUTO_REMOVE,
	WIRE_REQ_AUTO_PAUSE,
	WIRE_REQ_AUTO_RESUME,
	WIRE_REQ_AUTO_RELOAD,
	WIRE_REQ_STATION,
	WIRE_REQ__COUNT
};
const char *wire_request_name(enum wire_request_type t);
int wire_request_from_name(const char *name); /* -1 if unknown */

/* A parsed request: the object and its envelope. */
struct wire_request {
	enum wire_request_type type;
	json_t *id;  /* borrowed from obj: integer or string */
	json_t *obj; /* owned */
};

/* A line of only JSON whitespace (space, tab, CR, LF): ignored like a blank line. */
bool wire_line_is_blank(const char *line, size_t len);

/*
 * Parses one request line (without its newline).  Fails with bad-request
 * (detail reason, field, request) on malformed JSON, a non-object, a missing
 * or mistyped "id" or "request", an unknown request, or a line over
 * WIRE_REQUEST_MAX (WIRE_LINE_MAX for upload-chunk).  On failure req->id may still be set (when the
 * id was readable) so the error can echo it; call wire_request_clear() either way.
 */
WARN_UNUSED_RESULT int wire_parse_request(const char *line, size_t len, struct wire_request *req,
					  struct error *err);
void wire_request_clear(struct wire_request *req);

/* Typed optional fields: absent -> default; wrong type -> bad-request naming the field. */
WARN_UNUSED_RESULT int wire_get_bool(const json_t *obj, const char *key, bool def, bool *out,
				     struct error *err);
WARN_UNUSED_RESULT int wire_get_string(const json_t *obj, const char *key, size_t max,
				       const char **out,
				       struct error *err); /* *out = NULL when absent */
/* Seconds as a JSON number (integer or real), converted to milliseconds;
 * true = -1 (forever), absent/false = def. */
WARN_UNUSED_RESULT int wire_get_seconds_ms(const json_t *obj, const char *key, long def,
					   long *out_ms, struct error *err);

enum wire_target_kind {
	WIRE_TARGET_ANY,      /* no target: the only device attached */
	WIRE_TARGET_DEVICE,   /* device id or registry key */
	WIRE_TARGET_PORT,     /* tty path, resolved to its USB port at submit time */
	WIRE_TARGET_USB,      /* USB port path "1-1.2" */
	WIRE_TARGET_PLATFORM, /* platform name: exactly one device unless all */
};
const char *wire_target_kind_name(enum wire_target_kind k);

struct wire_flash {
	struct {
		char name[WIRE_NAME_MAX]; /* basename for messages */
		unsigned fd_index;	  /* index into the fds sent with the request */
		/* "" for an fd; else the id of a finished upload on this connection */
		char upload[WIRE_UPLOAD_ID_MAX];
	} images[WIRE_IMAGES_MAX];
	unsigned n_images;
	enum wire_target_kind target;
	char target_value[WIRE_TARGET_MAX];
	bool all;
	bool force, verify, dry_run, detach, cancel_on_disconnect;
	long wait_ms; /* 0 none, -1 forever */
};
/* The "images" array of a flash or auto-add request (request names it in errors):
 * fills out->images and out->n_images.  Each image has "fd" (an index < n_fds,
 * each used once) or "upload" (an upload id, each used once). */
WARN_UNUSED_RESULT int wire_parse_images(const json_t *req, const char *request, unsigned n_fds,
					 struct wire_flash *out, struct error *err);
/* Validates and extracts a flash request's fields (its images as above). */
WARN_UNUSED_RESULT int wire_parse_flash(const json_t *req, unsigned n_fds, struct wire_flash *out,
					struct error *err);

/* upload-begin: {"size":N,"sha256":"64 hex","name":"app.bin"} */
struct wire_upload_begin {
	unsigned long long size;
	uint8_t sha256[32];
	char name[WIRE_NAME_MAX];
};
/* Fails with bad-request on a missing or mistyped field (size >= 1, sha256 64 hex digits). */
WARN_UNUSED_RESULT int wire_parse_upload_begin(const json_t *req, struct wire_upload_begin *out,
					       struct error *err);

/* upload-chunk: {"upload":ID,"offset":N,"data":"base64"} */
struct wire_upload_chunk {
	char upload[WIRE_UPLOAD_ID_MAX];
	unsigned long long offset;
	uint8_t *data; /* decoded, malloc'd; wire_upload_chunk_clear() frees it */
	size_t len;
};
/* bad-request for a missing or mistyped field; upload-invalid (reason "bad-base64",
 * "chunk-too-large" with limit) for data that is not strict base64 or decodes to
 * more than WIRE_UPLOAD_CHUNK_MAX bytes. */
WARN_UNUSED_RESULT int wire_parse_upload_chunk(const json_t *req, struct wire_upload_chunk *out,
					       struct error *err);
void wire_upload_chunk_clear(struct wire_upload_chunk *c);

/*
 * Strict base64 (RFC 4648 section 4, padded, no whitespace) of n characters into
 * out (cap bytes).  Returns the decoded length, -1 when s is not base64, -2 when
 * it decodes to more than cap bytes.
 */
long wire_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap);

/* One subscribe request; the server adds it to what the connection has already. */
struct wire_subscribe {
	bool devices;
	bool jobs;    /* every job's events */
	char job[64]; /* this one job's events ("" = none named) */
};
/* Job ids a connection may subscribe to one by one. */
#define WIRE_SUBSCRIBE_JOBS_MAX 64
WARN_UNUSED_RESULT int wire_parse_subscribe(const json_t *req, struct wire_subscribe *out,
					    struct error *err);

/* Builders: every object carries "type". */
json_t *wire_reply_new(const json_t *id,
		       enum wire_request_type t); /* {"type":"reply","id":..,"request":..} */
json_t *wire_event_new(const char *event);	  /* {"type":"event","event":..} */
/* {"type":"error","id":..,"code":..,"message":..,"hint":..,"detail":{}} (id omitted if NULL) */
json_t *wire_error_new(const json_t *id, const struct error *e);
/* Client side: {"request":..,"id":id}. */
json_t *wire_request_new(enum wire_request_type t, long long id);

/* A station's recent failures (the MQTT status's "failures", flashctl fleet): at
 * most WIRE_FAILURES_MAX, newest last; an entry is a history record cut to job,
 * device, platform, result, error, error_message and ended. */
#define WIRE_FAILURES_MAX 5
void wire_failures_add(json_t *failures, const json_t *record);

/* Encodes a value as one line ending in '\n' (malloc'd); NULL on failure. */
char *wire_encode(const json_t *value, size_t *ret_len);
