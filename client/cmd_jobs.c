/* flashctl jobs: current and recent jobs. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

int cmd_jobs(int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return render_usage_error(g, "usage: flashctl jobs");
	json_t *reply = conn_request(g, wire_request_new(WIRE_REQ_LIST_JOBS, 0), &err);
	if (!reply)
		return render_error_free(g, &err);
	render_list(g, reply, "jobs", "no jobs", render_job_line);
	json_decref(reply);
	return 0;
}
