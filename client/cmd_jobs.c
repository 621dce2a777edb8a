/* flashctl jobs: current and recent jobs. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

static int cmd_jobs_exec(int argc, char **argv, const struct cli_global *g);

const struct cmd_entry cmd_jobs_entry = {
    .name = "jobs",
    .usage = "",
    .summary = "current and recent jobs",
    .exec = cmd_jobs_exec,
};

static int cmd_jobs_exec(int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return cmd_usage_error(g, &cmd_jobs_entry);
	json_t *reply = conn_request(g, wire_request_new(WIRE_REQ_LIST_JOBS, 0), &err);
	if (!reply)
		return render_error_free(g, &err);
	render_list(g, reply, "jobs", "no jobs", render_job_line);
	json_decref(reply);
	return 0;
}
