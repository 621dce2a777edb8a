/* flashctl jobs: current and recent jobs. */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <stdio.h>

int cmd_jobs(int argc, char **argv, const struct cli_global *g)
{
	struct conn c;
	struct error err;
	error_init(&err);
	(void)argv;
	if (argc > 1)
		return render_usage_error(g, "usage: flashctl jobs");
	if (conn_open(&c, g, &err) < 0)
		return render_error_free(g, &err);
	json_t *req = wire_request_new(WIRE_REQ_LIST_JOBS, 0);
	json_t *reply = conn_call(&c, req, NULL, 0, NULL, NULL, &err);
	json_decref(req);
	conn_close(&c);
	if (!reply)
		return render_error_free(g, &err);
	if (g->json) {
		render_json_line(reply);
	} else {
		json_t *job;
		size_t i;
		json_t *jobs = json_object_get(reply, "jobs");
		if (json_array_size(jobs) == 0)
			printf("no jobs\n");
		json_array_foreach(jobs, i, job) render_job_line(g, job);
	}
	json_decref(reply);
	return 0;
}
