/*
 * daemon/ctrl in a libevent loop against the first Particle device libusb
 * finds (flashd-sim under umockdev): runs the operations named on the
 * command line and prints one JSON object per operation.
 *
 *   ctrl-probe OP...   OP: id, serial, version, mode, modules, listen, update=FILE
 */
#include "ctrl_usb.h"

#include <jansson.h>
#include <libusb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static bool done;
static json_t *result;

static void on_done(struct ctrl *c, const struct ctrl_result *res, struct error *err, void *ud)
{
	(void)c;
	(void)ud;
	done = true;
	if (err) {
		json_object_set_new(result, "error", error_to_json(err));
		return;
	}
	if (res)
		json_object_set_new(result, "busy_retries", json_integer(res->busy_retries));
	if (res && res->text[0])
		json_object_set_new(result, "text", json_string(res->text));
	if (res && res->op == CTRL_OP_DEVICE_MODE)
		json_object_set_new(result, "mode", json_integer(res->mode));
	if (res && res->op == CTRL_OP_MODULE_INFO) {
		json_t *a = json_array();
		for (unsigned i = 0; i < res->n_modules; i++)
			json_array_append_new(
			    a, json_pack("{s:i,s:i,s:i,s:b}", "function", res->modules[i].function,
					 "index", res->modules[i].index, "version",
					 res->modules[i].version, "valid",
					 installed_module_valid(&res->modules[i])));
		json_object_set_new(result, "modules", a);
	}
}

static void pump(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct timeval zero = {0, 0};
	libusb_handle_events_timeout_completed(arg, &zero, NULL);
}

int main(int argc, char **argv)
{
	libusb_context *ctx;
	if (libusb_init(&ctx) < 0)
		return 2;
	libusb_device **list;
	ssize_t n = libusb_get_device_list(ctx, &list);
	libusb_device_handle *h = NULL;
	for (ssize_t i = 0; i < n && !h; i++) {
		struct libusb_device_descriptor dd;
		if (libusb_get_device_descriptor(list[i], &dd) == 0 && dd.idVendor == 0x2b04)
			libusb_open(list[i], &h);
	}
	libusb_free_device_list(list, 1);
	if (!h) {
		fprintf(stderr, "ctrl-probe: no Particle device\n");
		return 2;
	}
	struct event_base *base = event_base_new();
	/* umockdev's usbfs nodes cannot be watched: poll libusb every millisecond */
	struct event *tick = event_new(base, -1, EV_PERSIST, pump, ctx);
	struct timeval ms = {0, 1000};
	event_add(tick, &ms);
	struct ctrl_options opt = {
	    getenv("CTRL_REQUEST_MS") ? (unsigned)atoi(getenv("CTRL_REQUEST_MS")) : 0, NULL};
	struct error err;
	error_init(&err);
	struct ctrl *c = ctrl_open_usb(base, h, NULL, &opt, &err);
	static const struct {
		const char *name;
		enum ctrl_op op;
	} ops[] = {{"id", CTRL_OP_DEVICE_ID},		{"serial", CTRL_OP_SERIAL_NUMBER},
		   {"version", CTRL_OP_SYSTEM_VERSION}, {"mode", CTRL_OP_DEVICE_MODE},
		   {"modules", CTRL_OP_MODULE_INFO},	{"listen", CTRL_OP_START_LISTENING}};
	for (int a = 1; a < argc; a++) {
		result = json_pack("{s:s}", "op", argv[a]);
		done = false;
		struct timeval t0, t1;
		gettimeofday(&t0, NULL);
		int rc = -1;
		if (strncmp(argv[a], "update=", 7) == 0) {
			FILE *f = fopen(argv[a] + 7, "rb");
			static uint8_t buf[4 << 20];
			size_t len = f ? fread(buf, 1, sizeof(buf), f) : 0;
			if (f)
				fclose(f);
			rc = ctrl_firmware_update(c, buf, len, NULL, on_done, NULL, &err);
		}
		for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
			if (strcmp(argv[a], ops[i].name) == 0)
				rc = ctrl_op_start(c, ops[i].op, on_done, NULL, &err);
		if (rc < 0) {
			fprintf(stderr, "ctrl-probe: %s: %s\n", argv[a], err.message);
			return 2;
		}
		while (!done)
			event_base_loop(base, EVLOOP_ONCE);
		gettimeofday(&t1, NULL);
		json_object_set_new(result, "ms",
				    json_integer((t1.tv_sec - t0.tv_sec) * 1000 +
						 (t1.tv_usec - t0.tv_usec) / 1000));
		char *s = json_dumps(result, JSON_COMPACT);
		printf("%s\n", s);
		fflush(stdout);
		free(s);
		json_decref(result);
	}
	ctrl_free(c);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	event_free(tick);
	libusb_close(h);
	event_base_free(base);
	libusb_exit(ctx);
	return 0;
}
