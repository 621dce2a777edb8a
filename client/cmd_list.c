/* flashctl list: the devices the daemon sees. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

int cmd_list(int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return render_usage_error(g, "usage: flashctl list");
	json_t *reply = conn_request(g, wire_request_new(WIRE_REQ_LIST_DEVICES, 0), &err);
	if (!reply)
		return render_error_free(g, &err);
	render_list(g, reply, "devices", "no devices", render_device_line);
	json_decref(reply);
	return 0;
}
