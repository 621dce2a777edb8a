/*
 * flashctl flash FILE... [--device ID | --port TTY | --usb PORTPATH |
 *                         --platform NAME [--all]] [--wait[=S]] [--force]
 *                         [--verify] [--dry-run] [--detach]
 *
 * Opens the files itself and passes them to flashd as file descriptors (the
 * daemon never opens a client's path), then follows the jobs' events until
 * each has ended (unless --detach).
 */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct flash_args {
	const char *target_key;
	const char *target_value;
	bool all, force, verify, dry_run, detach;
	json_t *wait; /* NULL, true, or seconds */
};

static int parse(int argc, char **argv, const struct cli_global *g, struct flash_args *a)
{
	static const struct option opts[] = {
	    {"device", required_argument, NULL, 'd'}, {"port", required_argument, NULL, 'p'},
	    {"usb", required_argument, NULL, 'u'},    {"platform", required_argument, NULL, 'P'},
	    {"all", no_argument, NULL, 'a'},	      {"wait", optional_argument, NULL, 'w'},
	    {"force", no_argument, NULL, 'f'},	      {"verify", no_argument, NULL, 'v'},
	    {"dry-run", no_argument, NULL, 'n'},      {"detach", no_argument, NULL, 'D'},
	    {"json", no_argument, NULL, 'j'},	      {0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *key = NULL;
		switch (c) {
		case 'd':
			key = "device";
			break;
		case 'p':
			key = "port";
			break;
		case 'u':
			key = "usb";
			break;
		case 'P':
			key = "platform";
			break;
		case 'a':
			a->all = true;
			break;
		case 'w': {
			char *end;
			json_decref(a->wait);
			if (!optarg) {
				a->wait = json_true();
				break;
			}
			double s = strtod(optarg, &end);
			if (*end || end == optarg || s < 0)
				return render_usage_error(g, "--wait=S needs a number of seconds");
			a->wait = json_real(s);
			break;
		}
		case 'f':
			a->force = true;
			break;
		case 'v':
			a->verify = true;
			break;
		case 'n':
			a->dry_run = true;
			break;
		case 'D':
			a->detach = true;
			break;
		case 'j':
			((struct cli_global *)g)->json = true;
			break;
		default:
			return render_usage_error(g,
						  "usage: flashctl flash FILE... [--device ID | "
						  "--port TTY | --usb PORTPATH | --platform NAME "
						  "[--all]] [--wait[=S]] [--force] [--verify] "
						  "[--dry-run] [--detach]");
		}
		if (key) {
			if (a->target_key)
				return render_usage_error(
				    g, "give at most one of --device, --port, --usb, --platform");
			a->target_key = key;
			a->target_value = optarg;
		}
	}
	if (a->all && (!a->target_key || strcmp(a->target_key, "platform") != 0))
		return render_usage_error(g, "--all needs --platform NAME");
	if (optind >= argc)
		return render_usage_error(g, "flash needs at least one FILE");
	if (argc - optind > WIRE_IMAGES_MAX)
		return render_usage_error(g, "too many files for one job");
	return 0;
}

static int open_files(int n, char **paths, int *fds, const struct cli_global *g)
{
	for (int i = 0; i < n; i++) {
		fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			struct error e;
			error_init(&e);
			error_set(&e, ERR_FILE_UNREADABLE, "cannot open %s: %s", paths[i],
				  strerror(errno));
			error_detail_str(&e, "file", paths[i]);
			error_detail_int(&e, "errno", errno);
			int status = render_error(g, &e);
			error_clear(&e);
			while (i-- > 0)
				close(fds[i]);
			return status;
		}
	}
	return 0;
}

static json_t *build_request(const struct flash_args *a, int n, char **paths)
{
	json_t *req = wire_request_new(WIRE_REQ_FLASH, 0);
	json_t *images = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(images, json_pack("{s:s, s:i}", "name", paths[i], "fd", i));
	json_object_set_new(req, "images", images);
	json_t *target = json_object();
	if (a->target_key)
		json_object_set_new(target, a->target_key, json_string(a->target_value));
	if (a->all)
		json_object_set_new(target, "all", json_true());
	json_object_set_new(req, "target", target);
	json_object_set_new(req, "options",
			    json_pack("{s:b, s:b, s:b, s:b, s:O}", "force", a->force, "verify",
				      a->verify, "dry-run", a->dry_run, "detach", a->detach, "wait",
				      a->wait ? a->wait : json_false()));
	return req;
}

/* A terminal user picks one of several candidates; returns its key or NULL. */
static const char *pick(const struct cli_global *g, const json_t *candidates)
{
	json_t *dev;
	size_t i;
	if (!g->is_tty || g->json || !isatty(STDIN_FILENO))
		return NULL;
	fprintf(stderr, "Several devices match:\n");
	json_array_foreach(candidates, i, dev)
	{
		fprintf(stderr, "  [%zu] ", i + 1);
		fflush(stderr);
		render_device_line(g, dev);
	}
	fprintf(stderr, "Flash which one? [1-%zu] ", json_array_size(candidates));
	char line[32];
	if (!fgets(line, sizeof(line), stdin))
		return NULL;
	long k = strtol(line, NULL, 10);
	if (k < 1 || (size_t)k > json_array_size(candidates))
		return NULL;
	return json_string_value(json_object_get(json_array_get(candidates, (size_t)k - 1), "key"));
}

struct follow {
	const struct cli_global *g;
	json_t *pending; /* job ids not ended yet */
	int status;
};

static void on_event(void *ctx, json_t *ev)
{
	struct follow *f = ctx;
	const char *job = json_string_value(json_object_get(ev, "job"));
	if (!job || !json_object_get(f->pending, job))
		return; /* other clients' jobs */
	render_event(f->g, ev);
	if (strcmp(json_string_value(json_object_get(ev, "event")), "job-ended") != 0)
		return;
	json_object_del(f->pending, job);
	const json_t *err = json_object_get(ev, "error");
	if (json_is_object(err) && f->status == 0) {
		const struct error_info *info =
		    error_info_by_id(json_string_value(json_object_get(err, "code")));
		f->status = info ? info->exit_status : 1;
	}
}

static int follow_jobs(struct conn *c, const struct cli_global *g, json_t *reply)
{
	struct follow f = {g, json_object(), 0};
	struct error err;
	json_t *job;
	size_t i;
	error_init(&err);
	json_array_foreach(json_object_get(reply, "jobs"), i, job) json_object_set_new(
	    f.pending, json_string_value(json_object_get(job, "id")), json_true());
	while (json_object_size(f.pending) > 0) {
		json_t *ev = conn_read(c, -1, &err);
		if (!ev) {
			json_decref(f.pending);
			return render_error_free(g, &err);
		}
		if (json_is_string(json_object_get(ev, "event")))
			on_event(&f, ev);
		json_decref(ev);
	}
	json_decref(f.pending);
	return f.status;
}

int cmd_flash(int argc, char **argv, const struct cli_global *g)
{
	struct flash_args a = {0};
	struct error err;
	struct conn c;
	int fds[WIRE_IMAGES_MAX];
	int status = parse(argc, argv, g, &a);
	error_init(&err);
	if (status)
		return status;
	int n = argc - optind;
	char **paths = argv + optind;
	if ((status = open_files(n, paths, fds, g)))
		return status;
	if (conn_open(&c, g, &err) < 0) {
		status = render_error_free(g, &err);
		goto out_fds;
	}
	if (!a.detach) {
		/* Subscribed before the job exists: no event can be missed. */
		json_t *sub = wire_request_new(WIRE_REQ_SUBSCRIBE, 0);
		json_object_set_new(sub, "jobs", json_true());
		json_t *r = conn_call(&c, sub, NULL, 0, NULL, NULL, &err);
		json_decref(sub);
		if (!r) {
			status = render_error_free(g, &err);
			goto out;
		}
		json_decref(r);
	}
	json_t *req = build_request(&a, n, paths);
	json_t *reply = conn_call(&c, req, fds, (unsigned)n, NULL, NULL, &err);
	if (!reply && err.code == ERR_AMBIGUOUS_TARGET) {
		const char *key = pick(g, json_object_get(err.detail, "candidates"));
		if (key) {
			json_t *target = json_pack("{s:s}", "device", key);
			json_object_set_new(req, "target", target);
			error_clear(&err);
			reply = conn_call(&c, req, fds, (unsigned)n, NULL, NULL, &err);
		}
	}
	json_decref(req);
	if (!reply) {
		status = render_error_free(g, &err);
		goto out;
	}
	if (g->json)
		render_json_line(reply);
	else {
		json_t *job;
		size_t i;
		json_array_foreach(json_object_get(reply, "jobs"), i, job)
		    printf("job %s queued for %s\n", json_string_value(json_object_get(job, "id")),
			   json_is_string(json_object_get(job, "device"))
			       ? json_string_value(json_object_get(job, "device"))
			       : "the first matching device");
		fflush(stdout);
	}
	status = a.detach ? 0 : follow_jobs(&c, g, reply);
	json_decref(reply);
out:
	conn_close(&c);
out_fds:
	for (int i = 0; i < n; i++)
		close(fds[i]);
	json_decref(a.wait);
	error_clear(&err);
	return status;
}
