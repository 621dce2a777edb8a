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

#define WIRE_PROTOCOL_VERSION 1
/* Largest request line the daemon accepts (bytes, newline excluded). */
#define WIRE_REQUEST_MAX (64u * 1024)
/* Largest JSON nesting a request may have: requests are flat. */
#define WIRE_DEPTH_MAX 8
/* Images (file descriptors) in one flash request. */
#define WIRE_IMAGES_MAX 8
#define WIRE_NAME_MAX	256
#define WIRE_TARGET_MAX 256

enum wire_request_type {
	WIRE_REQ_HELLO,
	WIRE_REQ_LIST_DEVICES,
	WIRE_REQ_DEVICE_INFO,
	WIRE_REQ_FLASH,
	WIRE_REQ_LIST_JOBS,
	WIRE_REQ_CANCEL,
	WIRE_REQ_SUBSCRIBE,
	WIRE_REQ_HISTORY,
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

/*
 * Parses one request line (without its newline).  Fails with bad-request
 * (detail reason, field, request) on malformed JSON, a non-object, a missing
 * or mistyped "id" or "request", an unknown request, or a line over
 * WIRE_REQUEST_MAX.  On failure req->id may still be set (when the id was
 * readable) so the error can echo it; call wire_request_clear() either way.
 */
int wire_parse_request(const char *line, size_t len, struct wire_request *req, struct error *err);
void wire_request_clear(struct wire_request *req);

/* Typed optional fields: absent -> default; wrong type -> bad-request naming the field. */
int wire_get_bool(const json_t *obj, const char *key, bool def, bool *out, struct error *err);
int wire_get_string(const json_t *obj, const char *key, size_t max, const char **out,
		    struct error *err); /* *out = NULL when absent */
/* Seconds as a JSON number (integer or real), converted to milliseconds;
 * true = -1 (forever), absent/false = def. */
int wire_get_seconds_ms(const json_t *obj, const char *key, long def, long *out_ms,
			struct error *err);

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
	} images[WIRE_IMAGES_MAX];
	unsigned n_images;
	enum wire_target_kind target;
	char target_value[WIRE_TARGET_MAX];
	bool all;
	bool force, verify, dry_run, detach, cancel_on_disconnect;
	long wait_ms; /* 0 none, -1 forever */
};
/* The "images" array of a flash or auto-add request (request names it in errors):
 * fills out->images and out->n_images. */
int wire_parse_images(const json_t *req, const char *request, unsigned n_fds,
		      struct wire_flash *out, struct error *err);
/* Validates and extracts a flash request's fields (fd indexes < n_fds, each used once). */
int wire_parse_flash(const json_t *req, unsigned n_fds, struct wire_flash *out, struct error *err);

struct wire_subscribe {
	bool devices, jobs;
	char job[64]; /* only this job's events, "" = all */
};
int wire_parse_subscribe(const json_t *req, struct wire_subscribe *out, struct error *err);

/* Builders: every object carries "type". */
json_t *wire_reply_new(const json_t *id,
		       enum wire_request_type t); /* {"type":"reply","id":..,"request":..} */
json_t *wire_event_new(const char *event);	  /* {"type":"event","event":..} */
/* {"type":"error","id":..,"code":..,"message":..,"hint":..,"detail":{}} (id omitted if NULL) */
json_t *wire_error_new(const json_t *id, const struct error *e);
/* Client side: {"request":..,"id":id}. */
json_t *wire_request_new(enum wire_request_type t, long long id);

/* Encodes a value as one line ending in '\n' (malloc'd); NULL on failure. */
char *wire_encode(const json_t *value, size_t *ret_len);
