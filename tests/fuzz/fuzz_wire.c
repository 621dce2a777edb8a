/*
 * libFuzzer harness for the protocol request decoder (proto/wire.c), framed
 * as the daemon frames a connection's input (daemon/server.c): lines split at
 * '\n', a trailing '\r' dropped, blank lines skipped, each line parsed and
 * then its fields read by the typed parsers of its request.  Every request
 * gives either a parsed request or a bad-request naming why; whatever flashd
 * would send back encodes to exactly one line of valid JSON.
 */
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What flashd sends back for this request: one line, JSON, "type" present. */
static void check_answer(json_t *obj)
{
	size_t len = 0;
	char *line = wire_encode(obj, &len);
	if (!line || len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
		abort();
	json_error_t jerr;
	json_t *back = json_loadb(line, len - 1, 0, &jerr);
	if (!back || !json_is_string(json_object_get(back, "type")))
		abort();
	json_decref(back);
	free(line);
	json_decref(obj);
}

static void check_error(const struct wire_request *req, struct error *err)
{
	if (!error_is_set(err) || err->code != ERR_BAD_REQUEST || !err->message[0])
		abort();
	check_answer(wire_error_new(req->id, err));
	error_clear(err);
}

static void fields(struct wire_request *req, unsigned n_fds)
{
	struct error err;
	error_init(&err);
	int r = 0;
	switch (req->type) {
	case WIRE_REQ_FLASH: {
		struct wire_flash f;
		r = wire_parse_flash(req->obj, n_fds, &f, &err);
		if (r == 0) {
			if (f.n_images == 0 || f.n_images > WIRE_IMAGES_MAX)
				abort();
			bool used[WIRE_IMAGES_MAX] = {false};
			for (unsigned i = 0; i < f.n_images; i++) {
				if (f.images[i].upload[0]) {
					/* an in-band upload names its bytes by id, not by fd */
					if (!memchr(f.images[i].upload, '\0',
						    sizeof(f.images[i].upload)))
						abort();
					continue;
				}
				unsigned k = f.images[i].fd_index;
				if (k >= n_fds || k >= WIRE_IMAGES_MAX || used[k])
					abort();
				used[k] = true;
				if (!memchr(f.images[i].name, '\0', sizeof(f.images[i].name)))
					abort();
			}
			if (!memchr(f.target_value, '\0', sizeof(f.target_value)) || f.wait_ms < -1)
				abort();
		}
		break;
	}
	case WIRE_REQ_SUBSCRIBE: {
		struct wire_subscribe s;
		r = wire_parse_subscribe(req->obj, &s, &err);
		if (r == 0 && !s.devices && !s.jobs && !s.job[0])
			abort();
		break;
	}
	case WIRE_REQ_DEVICE_INFO:
	case WIRE_REQ_CANCEL: {
		const char *v;
		bool probe;
		r = wire_get_string(req->obj, req->type == WIRE_REQ_CANCEL ? "job" : "device",
				    WIRE_TARGET_MAX, &v, &err);
		if (r == 0 && v && strlen(v) > WIRE_TARGET_MAX)
			abort();
		if (r == 0)
			r = wire_get_bool(req->obj, "probe", false, &probe, &err);
		break;
	}
	case WIRE_REQ_HELLO: {
		long ms;
		r = wire_get_seconds_ms(req->obj, "protocol", 0, &ms, &err);
		break;
	}
	default:
		break;
	}
	if (r < 0)
		check_error(req, &err);
	else if (error_is_set(&err))
		abort();
	else
		check_answer(wire_reply_new(req->id, req->type));
}

static void one_line(const char *line, size_t len, unsigned n_fds)
{
	struct wire_request req;
	struct error err;
	error_init(&err);
	if (wire_line_is_blank(line, len))
		return;
	if (wire_parse_request(line, len, &req, &err) < 0) {
		check_error(&req, &err);
	} else {
		if (!json_is_object(req.obj) || !req.id || error_is_set(&err))
			abort();
		fields(&req, n_fds);
	}
	wire_request_clear(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* The first byte: how many file descriptors came with the request. */
	unsigned n_fds = data[0] % (WIRE_IMAGES_MAX + 2);
	const char *in = (const char *)data + 1;
	size_t n = size - 1, start = 0;
	while (start < n) {
		const char *nl = memchr(in + start, '\n', n - start);
		size_t len = nl ? (size_t)(nl - (in + start)) : n - start;
		if (len && in[start + len - 1] == '\r')
			len--;
		one_line(in + start, len, n_fds);
		start += (nl ? (size_t)(nl - (in + start)) + 1 : n - start);
	}
	return 0;
}
