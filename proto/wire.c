#include "wire.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static const char *const request_names[WIRE_REQ__COUNT] = {
    [WIRE_REQ_HELLO] = "hello",
    [WIRE_REQ_LIST_DEVICES] = "list-devices",
    [WIRE_REQ_DEVICE_INFO] = "device-info",
    [WIRE_REQ_FLASH] = "flash",
    [WIRE_REQ_LIST_JOBS] = "list-jobs",
    [WIRE_REQ_CANCEL] = "cancel",
    [WIRE_REQ_SUBSCRIBE] = "subscribe",
    [WIRE_REQ_HISTORY] = "history",
    [WIRE_REQ_UPLOAD_BEGIN] = "upload-begin",
    [WIRE_REQ_UPLOAD_CHUNK] = "upload-chunk",
    [WIRE_REQ_AUTO_ADD] = "auto-add",
    [WIRE_REQ_AUTO_LIST] = "auto-list",
    [WIRE_REQ_AUTO_REMOVE] = "auto-remove",
    [WIRE_REQ_AUTO_PAUSE] = "auto-pause",
    [WIRE_REQ_AUTO_RESUME] = "auto-resume",
    [WIRE_REQ_AUTO_RELOAD] = "auto-reload",
    [WIRE_REQ_STATION] = "station",
};

const char *wire_request_name(enum wire_request_type t)
{
	return (unsigned)t < WIRE_REQ__COUNT ? request_names[t] : "?";
}

int wire_request_from_name(const char *name)
{
	for (int i = 0; name && i < WIRE_REQ__COUNT; i++)
		if (strcmp(request_names[i], name) == 0)
			return i;
	return -1;
}

const char *wire_target_kind_name(enum wire_target_kind k)
{
	switch (k) {
	case WIRE_TARGET_ANY:
		return "any";
	case WIRE_TARGET_DEVICE:
		return "device";
	case WIRE_TARGET_PORT:
		return "port";
	case WIRE_TARGET_USB:
		return "usb";
	case WIRE_TARGET_PLATFORM:
		return "platform";
	}
	return "?";
}

static int bad(struct error *err, const char *request, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(struct error *err, const char *request, const char *field, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_BAD_REQUEST, "bad request: %s", reason);
	error_detail_str(err, "reason", reason);
	if (request)
		error_detail_str(err, "request", request);
	if (field)
		error_detail_str(err, "field", field);
	return -1;
}

static int depth_of(const json_t *v, int depth)
{
	const char *key;
	json_t *child;
	size_t i;
	int max = depth;
	if (depth > WIRE_DEPTH_MAX)
		return depth;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, child)
		{
			int d = depth_of(child, depth + 1);
			if (d > max)
				max = d;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			int d = depth_of(child, depth + 1);
			if (d > max)
				max = d;
		}
	}
	return max;
}

bool wire_line_is_blank(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n')
			return false;
	return true;
}

int wire_parse_request(const char *line, size_t len, struct wire_request *req, struct error *err)
{
	json_error_t jerr;
	memset(req, 0, sizeof(*req));
	if (len > WIRE_LINE_MAX) {
		bad(err, NULL, NULL, "message of %zu bytes is over the limit", len);
		error_detail_int(err, "limit", WIRE_LINE_MAX);
		return -1;
	}
	req->obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req->obj)
		return bad(err, NULL, NULL, "malformed JSON: %s (column %d)", jerr.text,
			   jerr.column);
	if (!json_is_object(req->obj))
		return bad(err, NULL, NULL, "a request must be a JSON object");
	if (depth_of(req->obj, 0) > WIRE_DEPTH_MAX)
		return bad(err, NULL, NULL, "request nested deeper than %d levels", WIRE_DEPTH_MAX);
	json_t *id = json_object_get(req->obj, "id");
	if (json_is_integer(id) || (json_is_string(id) && json_string_length(id) <= 128))
		req->id = id;
	json_t *type = json_object_get(req->obj, "type");
	if (type && !(json_is_string(type) && strcmp(json_string_value(type), "request") == 0))
		return bad(err, NULL, "type", "\"type\" must be \"request\" when present");
	json_t *name = json_object_get(req->obj, "request");
	if (!name)
		return bad(err, NULL, "request", "missing \"request\"");
	if (!json_is_string(name))
		return bad(err, NULL, "request", "\"request\" must be a string");
	int t = wire_request_from_name(json_string_value(name));
	if (t < 0)
		return bad(err, json_string_value(name), "request", "unknown request \"%.64s\"",
			   json_string_value(name));
	req->type = (enum wire_request_type)t;
	/* Only an upload chunk (base64 of up to 64 KiB) may be longer than a request. */
	if (len > WIRE_REQUEST_MAX && req->type != WIRE_REQ_UPLOAD_CHUNK) {
		bad(err, json_string_value(name), NULL, "message of %zu bytes is over the limit",
		    len);
		error_detail_int(err, "limit", WIRE_REQUEST_MAX);
		return -1;
	}
	if (!id)
		return bad(err, json_string_value(name), "id", "missing \"id\"");
	if (!req->id)
		return bad(err, json_string_value(name), "id",
			   "\"id\" must be an integer or a short string");
	return 0;
}

void wire_request_clear(struct wire_request *req)
{
	json_decref(req->obj);
	memset(req, 0, sizeof(*req));
}

static const char *req_name(const json_t *obj)
{
	return json_string_value(json_object_get(obj, "request"));
}

int wire_get_bool(const json_t *obj, const char *key, bool def, bool *out, struct error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = def;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return bad(err, req_name(obj), key, "\"%s\" must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

int wire_get_string(const json_t *obj, const char *key, size_t max, const char **out,
		    struct error *err)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return bad(err, req_name(obj), key, "\"%s\" must be a string", key);
	if (json_string_length(v) == 0 || json_string_length(v) >= max)
		return bad(err, req_name(obj), key, "\"%s\" must have 1 to %zu characters", key,
			   max - 1);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return bad(err, req_name(obj), key, "\"%s\" contains a NUL character", key);
	*out = json_string_value(v);
	return 0;
}

int wire_get_seconds_ms(const json_t *obj, const char *key, long def, long *out_ms,
			struct error *err)
{
	json_t *v = json_object_get(obj, key);
	*out_ms = def;
	if (!v || json_is_null(v) || json_is_false(v))
		return 0;
	if (json_is_true(v)) {
		*out_ms = -1;
		return 0;
	}
	if (!json_is_number(v))
		return bad(err, req_name(obj), key, "\"%s\" must be a number of seconds or true",
			   key);
	double s = json_number_value(v);
	/* A day is far beyond any plausible wait; larger values are typos. */
	if (!isfinite(s) || s < 0 || s > 86400)
		return bad(err, req_name(obj), key, "\"%s\" must be between 0 and 86400 seconds",
			   key);
	*out_ms = (long)(s * 1000.0 + 0.5);
	return 0;
}

static void basename_copy(char *dst, size_t size, const char *name)
{
	const char *slash = strrchr(name, '/');
	snprintf(dst, size, "%s", slash && slash[1] ? slash + 1 : name);
}

int wire_parse_images(const json_t *req, const char *request, unsigned n_fds,
		      struct wire_flash *out, struct error *err)
{
	json_t *images = json_object_get(req, "images");
	json_t *img;
	size_t i;
	bool used[WIRE_IMAGES_MAX] = {0};
	if (!json_is_array(images))
		return bad(err, request, "images", "\"images\" must be an array");
	if (json_array_size(images) == 0)
		return bad(err, request, "images", "\"images\" is empty");
	if (json_array_size(images) > WIRE_IMAGES_MAX) {
		bad(err, request, "images", "more than %d images in one job", WIRE_IMAGES_MAX);
		error_detail_int(err, "limit", WIRE_IMAGES_MAX);
		return -1;
	}
	json_array_foreach(images, i, img)
	{
		const char *name = NULL;
		if (!json_is_object(img))
			return bad(err, request, "images", "each image must be an object");
		const char *upload = NULL;
		if (wire_get_string(img, "upload", WIRE_UPLOAD_ID_MAX, &upload, err) < 0)
			return -1;
		json_t *fd = json_object_get(img, "fd");
		if (upload && fd)
			return bad(err, request, "upload",
				   "image %zu: give \"fd\" or \"upload\", not both", i);
		if (wire_get_string(img, "name", WIRE_NAME_MAX, &name, err) < 0)
			return -1;
		basename_copy(out->images[i].name, sizeof(out->images[i].name),
			      name ? name : "image");
		if (upload) {
			for (size_t k = 0; k < i; k++)
				if (strcmp(out->images[k].upload, upload) == 0)
					return bad(err, request, "upload",
						   "image %zu: upload %s used twice", i, upload);
			snprintf(out->images[i].upload, sizeof(out->images[i].upload), "%s",
				 upload);
			out->images[i].fd_index = WIRE_IMAGES_MAX;
			continue;
		}
		if (!json_is_integer(fd))
			return bad(err, request, "fd",
				   "image %zu: \"fd\" must be an integer (or give \"upload\")", i);
		json_int_t idx = json_integer_value(fd);
		if (idx < 0 || idx >= (json_int_t)n_fds || idx >= WIRE_IMAGES_MAX)
			return bad(err, request, "fd",
				   "image %zu: fd index %lld but %u file descriptors were passed",
				   i, (long long)idx, n_fds);
		if (used[idx])
			return bad(err, request, "fd", "image %zu: fd index %lld used twice", i,
				   (long long)idx);
		used[idx] = true;
		out->images[i].fd_index = (unsigned)idx;
	}
	out->n_images = (unsigned)json_array_size(images);
	return 0;
}

static int parse_target(const json_t *req, struct wire_flash *out, struct error *err)
{
	static const struct {
		const char *key;
		enum wire_target_kind kind;
	} keys[] = {{"device", WIRE_TARGET_DEVICE},
		    {"port", WIRE_TARGET_PORT},
		    {"usb", WIRE_TARGET_USB},
		    {"platform", WIRE_TARGET_PLATFORM}};
	json_t *target = json_object_get(req, "target");
	out->target = WIRE_TARGET_ANY;
	if (!target || json_is_null(target))
		return 0;
	if (!json_is_object(target))
		return bad(err, "flash", "target", "\"target\" must be an object");
	unsigned found = 0;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		const char *v;
		if (wire_get_string(target, keys[k].key, WIRE_TARGET_MAX, &v, err) < 0)
			return -1;
		if (!v)
			continue;
		found++;
		out->target = keys[k].kind;
		snprintf(out->target_value, sizeof(out->target_value), "%s", v);
	}
	if (found > 1)
		return bad(err, "flash", "target",
			   "give at most one of device, port, usb, platform");
	if (wire_get_bool(target, "all", false, &out->all, err) < 0)
		return -1;
	if (out->all && out->target != WIRE_TARGET_PLATFORM)
		return bad(err, "flash", "all", "\"all\" needs a \"platform\" target");
	return 0;
}

static int parse_options(const json_t *req, struct wire_flash *out, struct error *err)
{
	json_t *o = json_object_get(req, "options");
	if (!o || json_is_null(o)) {
		out->detach = true;
		return 0;
	}
	if (!json_is_object(o))
		return bad(err, "flash", "options", "\"options\" must be an object");
	if (wire_get_bool(o, "force", false, &out->force, err) < 0 ||
	    wire_get_bool(o, "verify", false, &out->verify, err) < 0 ||
	    wire_get_bool(o, "dry-run", false, &out->dry_run, err) < 0 ||
	    wire_get_bool(o, "detach", true, &out->detach, err) < 0 ||
	    wire_get_bool(o, "cancel-on-disconnect", false, &out->cancel_on_disconnect, err) < 0 ||
	    wire_get_seconds_ms(o, "wait", 0, &out->wait_ms, err) < 0)
		return -1;
	return 0;
}

int wire_parse_flash(const json_t *req, unsigned n_fds, struct wire_flash *out, struct error *err)
{
	memset(out, 0, sizeof(*out));
	if (wire_parse_images(req, "flash", n_fds, out, err) < 0 ||
	    parse_target(req, out, err) < 0 || parse_options(req, out, err) < 0)
		return -1;
	return 0;
}

/* ---- uploads ----------------------------------------------------------- */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int wire_parse_upload_begin(const json_t *req, struct wire_upload_begin *out, struct error *err)
{
	const char *sha, *name;
	memset(out, 0, sizeof(*out));
	json_t *size = json_object_get(req, "size");
	if (!json_is_integer(size) || json_integer_value(size) < 1)
		return bad(err, "upload-begin", "size",
			   "\"size\" must be the number of bytes to upload (at least 1)");
	out->size = (unsigned long long)json_integer_value(size);
	if (wire_get_string(req, "sha256", 65, &sha, err) < 0)
		return -1;
	if (!sha || strlen(sha) != 64)
		return bad(err, "upload-begin", "sha256",
			   "\"sha256\" must be the SHA-256 of the bytes, 64 hex digits");
	for (int i = 0; i < 32; i++) {
		int hi = hex_value(sha[2 * i]), lo = hex_value(sha[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return bad(err, "upload-begin", "sha256",
				   "\"sha256\" must be the SHA-256 of the bytes, 64 hex digits");
		out->sha256[i] = (uint8_t)(hi << 4 | lo);
	}
	if (wire_get_string(req, "name", WIRE_NAME_MAX, &name, err) < 0)
		return -1;
	basename_copy(out->name, sizeof(out->name), name ? name : "upload");
	return 0;
}

static int upload_invalid(struct error *err, const char *reason, const char *upload,
			  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int upload_invalid(struct error *err, const char *reason, const char *upload,
			  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(err, ERR_UPLOAD_INVALID, fmt, ap);
	va_end(ap);
	error_detail_str(err, "reason", reason);
	error_detail_str(err, "upload", upload);
	return -1;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long wire_base64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	if (n % 4)
		return -1;
	size_t pad = n >= 1 && s[n - 1] == '=' ? (n >= 2 && s[n - 2] == '=' ? 2 : 1) : 0;
	size_t len = n / 4 * 3 - pad;
	if (len > cap)
		return -2;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		bool last = i + 4 == n;
		for (int k = 0; k < 4; k++) {
			bool padding = last && (size_t)k >= 4 - pad;
			v[k] = padding ? 0 : b64_value((unsigned char)s[i + (size_t)k]);
			if (v[k] < 0)
				return -1;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		/* Canonical only: the bits a padded group leaves unused must be 0. */
		if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))))
			return -1;
		uint8_t b[3] = {(uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w};
		for (int k = 0; k < 3 && o < len; k++)
			out[o++] = b[k];
	}
	return (long)len;
}

int wire_parse_upload_chunk(const json_t *req, struct wire_upload_chunk *out, struct error *err)
{
	const char *upload;
	memset(out, 0, sizeof(*out));
	if (wire_get_string(req, "upload", WIRE_UPLOAD_ID_MAX, &upload, err) < 0)
		return -1;
	if (!upload)
		return bad(err, "upload-chunk", "upload", "missing \"upload\"");
	snprintf(out->upload, sizeof(out->upload), "%s", upload);
	json_t *offset = json_object_get(req, "offset");
	if (!json_is_integer(offset) || json_integer_value(offset) < 0)
		return bad(err, "upload-chunk", "offset",
			   "\"offset\" must be the chunk's byte offset in the upload");
	out->offset = (unsigned long long)json_integer_value(offset);
	json_t *data = json_object_get(req, "data");
	if (!json_is_string(data))
		return bad(err, "upload-chunk", "data", "\"data\" must be a base64 string");
	size_t n = json_string_length(data);
	if (n == 0)
		return upload_invalid(err, "empty-chunk", upload, "upload %s: an empty chunk",
				      upload);
	/* Refused before decoding: a string this long cannot fit one chunk. */
	if (n > WIRE_UPLOAD_B64_MAX) {
		upload_invalid(err, "chunk-too-large", upload,
			       "upload %s: a chunk of %zu base64 characters is over %u bytes",
			       upload, n, WIRE_UPLOAD_CHUNK_MAX);
		error_detail_int(err, "limit", WIRE_UPLOAD_CHUNK_MAX);
		return -1;
	}
	out->data = malloc(n / 4 * 3 + 3);
	if (!out->data)
		return error_set(err, ERR_INTERNAL, "out of memory");
	long len = wire_base64_decode(json_string_value(data), n, out->data, WIRE_UPLOAD_CHUNK_MAX);
	if (len == -2) {
		upload_invalid(err, "chunk-too-large", upload,
			       "upload %s: the chunk decodes to more than %u bytes", upload,
			       WIRE_UPLOAD_CHUNK_MAX);
		error_detail_int(err, "limit", WIRE_UPLOAD_CHUNK_MAX);
		wire_upload_chunk_clear(out);
		return -1;
	}
	if (len < 0) {
		upload_invalid(err, "bad-base64", upload,
			       "upload %s: \"data\" is not padded base64 (RFC 4648)", upload);
		wire_upload_chunk_clear(out);
		return -1;
	}
	out->len = (size_t)len;
	return 0;
}

void wire_upload_chunk_clear(struct wire_upload_chunk *c)
{
	free(c->data);
	c->data = NULL;
	c->len = 0;
}

int wire_parse_subscribe(const json_t *req, struct wire_subscribe *out, struct error *err)
{
	const char *job;
	memset(out, 0, sizeof(*out));
	if (wire_get_bool(req, "devices", false, &out->devices, err) < 0 ||
	    wire_get_bool(req, "jobs", false, &out->jobs, err) < 0 ||
	    wire_get_string(req, "job", sizeof(out->job), &job, err) < 0)
		return -1;
	if (job)
		snprintf(out->job, sizeof(out->job), "%s", job);
	if (!out->devices && !out->jobs && !out->job[0])
		return bad(err, "subscribe", "devices", "subscribe to \"devices\" and/or \"jobs\"");
	return 0;
}

json_t *wire_reply_new(const json_t *id, enum wire_request_type t)
{
	return json_pack("{s:s, s:O, s:s}", "type", "reply", "id", id ? id : json_null(), "request",
			 wire_request_name(t));
}

json_t *wire_event_new(const char *event)
{
	return json_pack("{s:s, s:s}", "type", "event", "event", event);
}

json_t *wire_error_new(const json_t *id, const struct error *e)
{
	json_t *obj = json_pack("{s:s}", "type", "error");
	if (id)
		json_object_set(obj, "id", (json_t *)id);
	json_t *body = error_to_json(e);
	json_object_update(obj, body);
	json_decref(body);
	return obj;
}

json_t *wire_request_new(enum wire_request_type t, long long id)
{
	return json_pack("{s:s, s:I}", "request", wire_request_name(t), "id", (json_int_t)id);
}

char *wire_encode(const json_t *value, size_t *ret_len)
{
	char *s = json_dumps(value, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *line = realloc(s, n + 2);
	if (!line) {
		free(s);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	if (ret_len)
		*ret_len = n + 1;
	return line;
}

void wire_failures_add(json_t *failures, const json_t *record)
{
	static const char *const keys[] = {"job",   "device",	     "platform", "result",
					   "error", "error_message", "ended"};
	json_t *f = json_object();
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(record, keys[i]);
		json_object_set_new(f, keys[i], v ? json_incref(v) : json_null());
	}
	json_array_append_new(failures, f);
	while (json_array_size(failures) > WIRE_FAILURES_MAX)
		json_array_remove(failures, 0);
}
