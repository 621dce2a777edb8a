/* flashctl list: the devices the daemon sees. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

static int cmd_list_exec(int argc, char **argv, const struct cli_global *g);

const struct cmd_entry cmd_list_entry = {
    .name = "list",
    .usage = "",
    .summary = "the devices flashd sees",
    .exec = cmd_list_exec,
};

static int cmd_list_exec(int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return cmd_usage_error(g, &cmd_list_entry);
	json_t *reply = conn_request(g, wire_request_new(WIRE_REQ_LIST_DEVICES, 0), &err);
	if (!reply)
		return render_error_free(g, &err);
	render_list(g, reply, "devices", "no devices", render_device_line);
	json_decref(reply);
	return 0;
}
