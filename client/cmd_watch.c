/* flashctl watch: the devices now, then every device and job event. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <stdio.h>

static void print_event(void *ctx, json_t *event)
{
	render_event(ctx, event);
}

static int cmd_watch_exec(int argc, char **argv, const struct cli_global *g)
{
	struct conn c;
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return cmd_usage_error(g, &cmd_watch_entry);
	if (conn_open(&c, g, &err) < 0)
		return render_error_free(g, &err);
	/* Subscribe first, then list: nothing falls between the two. */
	json_t *sub = wire_request_new(WIRE_REQ_SUBSCRIBE, 0);
	json_object_set_new(sub, "devices", json_true());
	json_object_set_new(sub, "jobs", json_true());
	json_t *reply = conn_call(&c, sub, NULL, 0, NULL, NULL, &err);
	json_decref(sub);
	json_decref(reply);
	json_t *req = wire_request_new(WIRE_REQ_LIST_DEVICES, 0);
	if (reply)
		reply = conn_call(&c, req, NULL, 0, print_event, (void *)g, &err);
	json_decref(req);
	if (!reply) {
		conn_close(&c);
		return render_error_free(g, &err);
	}
	json_t *dev;
	size_t i;
	if (g->json)
		render_json_line(reply);
	else
		json_array_foreach(json_object_get(reply, "devices"), i, dev)
		{
			printf("%-15s ", "device-present");
			render_device_line(g, dev);
		}
	json_decref(reply);
	for (;;) {
		json_t *ev = conn_read(&c, -1, &err);
		if (!ev)
			break;
		render_event(g, ev);
		json_decref(ev);
	}
	conn_close(&c);
	return render_error_free(g, &err);
}

const struct cmd_entry cmd_watch_entry = {
    .name = "watch",
    .usage = "",
    .summary = "devices and jobs as they change",
    .exec = cmd_watch_exec,
};
