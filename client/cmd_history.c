/*
 * flashctl history: the daemon's record of past jobs (the `history` request),
 * as a table, one JSON object per job (--json, newest last), or statistics per
 * platform (--stats).
 */
#include "cleanup.h"
#include "conn.h"
#include "render.h"
#include "rfc3339.h"
#include "verbs.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *str_or(const json_t *obj, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : def;
}

static const char *color(const struct cli_global *g, const char *code)
{
	return g->no_color ? "" : code;
}

/*
 * TIME: an RFC 3339 time or date ("2026-12-01", "2026-12-01T10:00:00Z"), or
 * an age ("90s", "30m", "12h", "7d").  Writes the RFC 3339 UTC form.
 */
static int parse_since(const char *s, char out[RFC3339_MAX])
{
	double t;
	char *end;
	if (rfc3339_parse(s, &t) == 0) {
		rfc3339_format(t, out);
		return 0;
	}
	if (!isdigit((unsigned char)*s))
		return -1;
	double n = strtod(s, &end);
	double unit = strcmp(end, "s") == 0   ? 1
		      : strcmp(end, "m") == 0 ? 60
		      : strcmp(end, "h") == 0 ? 3600
		      : strcmp(end, "d") == 0 ? 86400
					      : 0;
	if (unit == 0)
		return -1;
	rfc3339_format((double)time(NULL) - n * unit, out);
	return 0;
}

/* "2026-12-01T21:30:02.123Z" -> "2026-12-01 21:30:02" */
static void short_time(const char *t, char *out, size_t size)
{
	if (!t || strlen(t) < 19) {
		snprintf(out, size, "%s", t ? t : "-");
		return;
	}
	snprintf(out, size, "%.10s %.8s", t, t + 11);
}

static void print_job(const struct cli_global *g, const json_t *job)
{
	char when[32], dur[24], what[96];
	const char *result = str_or(job, "result", "running");
	const json_t *d = json_object_get(job, "duration_s");
	const char *c = strcmp(result, "done") == 0	 ? "\033[32m"
			: strcmp(result, "running") == 0 ? ""
							 : "\033[31m";
	short_time(str_or(job, "started", str_or(job, "created", NULL)), when, sizeof(when));
	if (json_is_number(d))
		snprintf(dur, sizeof(dur), "%.1fs", json_number_value(d));
	else
		snprintf(dur, sizeof(dur), "-");
	snprintf(what, sizeof(what), "%s", str_or(job, "error", str_or(job, "outcome", "-")));
	printf("%-19s  %-26s %-9s %-8s %s%-11s%s %-22s %8s %9lld ", when,
	       str_or(job, "device", "-"), str_or(job, "platform", "-"), str_or(job, "port", "-"),
	       color(g, c), result, color(g, "\033[0m"), what, dur,
	       (long long)json_integer_value(json_object_get(job, "bytes_written")));
	const json_t *img;
	size_t i;
	json_array_foreach(json_object_get(job, "images"), i, img)
	    printf("%s%s", i ? "," : "", str_or(img, "file", "?"));
	printf("\n");
}

/* One table of stats groups (key: "platform" or "rule"). */
static void print_groups(const json_t *groups, const char *key, const char *title)
{
	const json_t *p;
	size_t i;
	printf("%-10s %6s %6s %6s %9s %11s %8s %8s\n", title, "JOBS", "DONE", "FAILED", "CANCELLED",
	       "INTERRUPTED", "FAILURE", "MEDIAN");
	json_array_foreach(groups, i, p)
	{
		char rate[16] = "-", med[16] = "-";
		const json_t *r = json_object_get(p, "failure_rate");
		const json_t *m = json_object_get(p, "median_duration_s");
		if (json_is_number(r))
			snprintf(rate, sizeof(rate), "%.1f%%", 100 * json_number_value(r));
		if (json_is_number(m))
			snprintf(med, sizeof(med), "%.1fs", json_number_value(m));
		printf("%-10s %6lld %6lld %6lld %9lld %11lld %8s %8s\n", str_or(p, key, "?"),
		       (long long)json_integer_value(json_object_get(p, "jobs")),
		       (long long)json_integer_value(json_object_get(p, "done")),
		       (long long)json_integer_value(json_object_get(p, "failed")),
		       (long long)json_integer_value(json_object_get(p, "cancelled")),
		       (long long)json_integer_value(json_object_get(p, "interrupted")), rate, med);
		const json_t *e;
		size_t k;
		json_array_foreach(json_object_get(p, "errors"), k, e)
		    printf("  %-30s %6lld  %5.1f%% of ended jobs\n", str_or(e, "error", "?"),
			   (long long)json_integer_value(json_object_get(e, "count")),
			   100 * json_number_value(json_object_get(e, "rate")));
	}
}

static void print_stats(const json_t *stats)
{
	const json_t *platforms = json_object_get(stats, "platforms");
	const json_t *rules = json_object_get(stats, "rules");
	if (json_array_size(platforms) == 0) {
		printf("no jobs\n");
		return;
	}
	print_groups(platforms, "platform", "PLATFORM");
	if (json_array_size(rules)) {
		printf("\n");
		print_groups(rules, "rule", "RULE");
	}
}

static const struct option history_options[] = {
    {"device", required_argument, NULL, 'd'},
    {"since", required_argument, NULL, 's'},
    {"result", required_argument, NULL, 'r'},
    {"limit", required_argument, NULL, 'n'},
    {"json", no_argument, NULL, 'j'},
    {"stats", no_argument, NULL, 'S'},
    {0},
};

static int cmd_history_exec(int argc, char **argv, const struct cli_global *g)
{
	struct cli_global local = *g;
	struct error err;
	json_auto_t *req = wire_request_new(WIRE_REQ_HISTORY, 0);
	char since[RFC3339_MAX], *end;
	int o;
	error_init(&err);
	while ((o = getopt_long(argc, argv, "", history_options, NULL)) != -1) {
		switch (o) {
		case 'd':
			json_object_set_new(req, "device", json_string(optarg));
			break;
		case 's':
			if (parse_since(optarg, since) < 0)
				return render_usage_error(
				    g,
				    "--since wants an RFC 3339 time or date (2026-12-01T10:00:00Z) "
				    "or an age (30m, 12h, 7d)");
			json_object_set_new(req, "since", json_string(since));
			break;
		case 'r':
			json_object_set_new(req, "result", json_string(optarg));
			break;
		case 'n': {
			long n = strtol(optarg, &end, 10);
			if (*end || n < 1 || n > 10000)
				return render_usage_error(g,
							  "--limit wants a number from 1 to 10000");
			json_object_set_new(req, "limit", json_integer(n));
			break;
		}
		case 'j':
			local.json = true;
			break;
		case 'S':
			json_object_set_new(req, "stats", json_true());
			break;
		default:
			return cmd_usage_error(g, &cmd_history_entry);
		}
	}
	if (optind < argc)
		return cmd_usage_error(g, &cmd_history_entry);
	bool stats = json_is_true(json_object_get(req, "stats"));
	json_auto_t *reply = conn_request(&local, TAKE_PTR(req), &err);
	if (!reply)
		return render_error_free(&local, &err);
	const json_t *item;
	size_t i;
	if (stats) {
		/* --json: one object per platform (then per rule) and line. */
		if (local.json) {
			const json_t *st = json_object_get(reply, "stats");
			json_array_foreach(json_object_get(st, "platforms"), i, item)
			    render_json_line((json_t *)item);
			json_array_foreach(json_object_get(st, "rules"), i, item)
			    render_json_line((json_t *)item);
		} else
			print_stats(json_object_get(reply, "stats"));
	} else if (local.json) {
		/* One object per job and line, newest last (the reply's order). */
		json_array_foreach(json_object_get(reply, "jobs"), i, item)
		    render_json_line((json_t *)item);
	} else if (json_array_size(json_object_get(reply, "jobs")) == 0) {
		printf("no jobs\n");
	} else {
		printf("%-19s  %-26s %-9s %-8s %-11s %-22s %8s %9s %s\n", "STARTED (UTC)", "DEVICE",
		       "PLATFORM", "PORT", "RESULT", "OUTCOME/ERROR", "TIME", "BYTES", "IMAGES");
		json_array_foreach(json_object_get(reply, "jobs"), i, item) print_job(&local, item);
	}
	if (json_is_true(json_object_get(reply, "truncated")))
		fprintf(
		    stderr,
		    "warning: only the newest %zu jobs fit in one reply; narrow it with --since, "
		    "--device, --result or --limit\n",
		    json_array_size(json_object_get(reply, "jobs")));
	const json_t *db = json_object_get(reply, "database");
	json_int_t errors = json_integer_value(json_object_get(db, "write_errors")) +
			    json_integer_value(json_object_get(db, "dropped"));
	if (errors && !local.json)
		fprintf(stderr, "warning: the history missed %lld write(s): %s\n",
			(long long)errors, str_or(db, "last_error", "see the daemon log"));
	fflush(stdout);
	return 0;
}

const struct cmd_entry cmd_history_entry = {
    .name = "history",
    .options = history_options,
    .usage = "[--device ID] [--since TIME] [--result R] [--limit N] [--json]\n[--stats]",
    .summary = "past jobs (the daemon's flash history)",
    .exec = cmd_history_exec,
};
