/* flashctl cancel JOB */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <stdio.h>

static int cmd_cancel_exec(int argc, char **argv, const struct cli_global *g);

const struct cmd_entry cmd_cancel_entry = {
    .name = "cancel",
    .usage = "JOB",
    .summary = "stop a job",
    .exec = cmd_cancel_exec,
};

static int cmd_cancel_exec(int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	if (argc != 2)
		return cmd_usage_error(g, &cmd_cancel_entry);
	json_t *req = wire_request_new(WIRE_REQ_CANCEL, 0);
	json_object_set_new(req, "job", json_string(argv[1]));
	json_t *reply = conn_request(g, req, &err);
	if (!reply)
		return render_error_free(g, &err);
	if (g->json)
		render_json_line(reply);
	else if (json_is_true(json_object_get(reply, "already_ended")))
		printf("job %s had already ended\n", argv[1]);
	else
		printf("job %s: cancel requested\n", argv[1]);
	json_decref(reply);
	return 0;
}
