/*
 * flashctl station [--once] [--follow] [--json]: the production-station view
 * (the `station` request): one row per port or device with its label, state,
 * progress and last result, and the counters (flashed / failed / skipped) with
 * the rate per hour.
 *
 * On a terminal the table is redrawn live (colours, progress bars) until
 * interrupted; off a terminal (or with --once) it is printed once as plain
 * lines.  --json prints the station object (one line; with --follow one line
 * per refresh) for dashboards.
 */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define STATION_USAGE	   "usage: flashctl station [--once] [--follow] [--json]"
#define STATION_REFRESH_MS 500
#define STATION_BAR_WIDTH  20

static const char *str_or(const json_t *o, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : def;
}

static const char *state_color(const json_t *p)
{
	const char *state = str_or(p, "state", "");
	const char *result = str_or(json_object_get(p, "last"), "result", "");
	if (strcmp(state, "flashing") == 0 || strcmp(state, "probing") == 0 ||
	    strcmp(state, "busy") == 0)
		return "\033[33m";
	if (strcmp(state, "conflict") == 0 || strcmp(state, "error") == 0 ||
	    (strcmp(state, "finished") == 0 && strcmp(result, "done") != 0))
		return "\033[31m";
	if (strcmp(state, "finished") == 0)
		return "\033[32m";
	if (strcmp(state, "skipped") == 0)
		return "\033[36m";
	return "\033[2m";
}

static void print_row(const json_t *p, bool tty)
{
	char progress[64] = "-", last[96] = "-";
	const json_t *prog = json_object_get(p, "progress");
	const json_t *pct = json_object_get(prog, "percent");
	if (json_is_integer(pct)) {
		long long n = json_integer_value(pct);
		if (tty) {
			int fill = (int)(n * STATION_BAR_WIDTH / 100);
			char bar[STATION_BAR_WIDTH + 1];
			for (int i = 0; i < STATION_BAR_WIDTH; i++)
				bar[i] = i < fill ? '#' : '.';
			bar[STATION_BAR_WIDTH] = '\0';
			snprintf(progress, sizeof(progress), "[%s] %3lld%%", bar, n);
		} else {
			snprintf(progress, sizeof(progress), "%lld%%", n);
		}
	} else if (json_is_object(prog)) {
		snprintf(progress, sizeof(progress), "%s", str_or(p, "job_state", "-"));
	}
	const json_t *l = json_object_get(p, "last");
	if (json_is_object(l))
		snprintf(last, sizeof(last), "%s%s%s", str_or(l, "result", "?"),
			 json_is_string(json_object_get(l, "outcome")) ||
				 json_is_string(json_object_get(l, "error"))
			     ? " "
			     : "",
			 str_or(l, "error", str_or(l, "outcome", "")));
	else if (json_is_string(json_object_get(p, "message")))
		snprintf(last, sizeof(last), "%s", str_or(p, "message", ""));
	printf("%-16.16s %-9.9s %-26.26s %-9.9s %s%-9s%s %-*s %s\n", str_or(p, "label", "-"),
	       str_or(p, "port", "-"), str_or(p, "device", "-"), str_or(p, "platform", "-"),
	       tty ? state_color(p) : "", str_or(p, "state", "?"), tty ? "\033[0m" : "",
	       tty ? STATION_BAR_WIDTH + 7 : 9, progress, last);
}

static void print_station(const json_t *st, bool tty)
{
	const json_t *c = json_object_get(st, "counters");
	const json_t *r = json_object_get(st, "rules");
	if (tty)
		printf("\033[H\033[2J\033[1m");
	printf("flashed %lld  failed %lld  skipped %lld  rate %.1f/h  rules %lld/%lld active\n",
	       (long long)json_integer_value(json_object_get(c, "flashed")),
	       (long long)json_integer_value(json_object_get(c, "failed")),
	       (long long)json_integer_value(json_object_get(c, "skipped")),
	       json_number_value(json_object_get(st, "rate_per_hour")),
	       (long long)json_integer_value(json_object_get(r, "active")),
	       (long long)json_integer_value(json_object_get(r, "total")));
	if (tty)
		printf("\033[0m");
	printf("%-16s %-9s %-26s %-9s %-9s %-*s %s\n", "LABEL", "PORT", "DEVICE", "PLATFORM",
	       "STATE", tty ? STATION_BAR_WIDTH + 7 : 9, "PROGRESS", "LAST");
	const json_t *p;
	size_t i;
	json_array_foreach(json_object_get(st, "ports"), i, p) print_row(p, tty);
	fflush(stdout);
}

static void ignore_event(void *ctx, json_t *event)
{
	(void)ctx;
	(void)event;
}

static int cmd_station_exec(int argc, char **argv, const struct cli_global *g)
{
	struct cli_global gg = *g;
	bool once = !g->is_tty, follow = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--once") == 0)
			once = true;
		else if (strcmp(argv[i], "--follow") == 0)
			follow = true;
		else if (strcmp(argv[i], "--json") == 0)
			gg.json = true;
		else
			return render_usage_error(g, STATION_USAGE);
	}
	if (gg.json)
		once = !follow;
	else if (follow)
		once = false;
	struct conn c;
	struct error err;
	error_init(&err);
	if (conn_open(&c, &gg, &err) < 0)
		return render_error_free(&gg, &err);
	if (!once) {
		/* Events wake the refresh; the table itself comes from `station`. */
		json_t *sub = wire_request_new(WIRE_REQ_SUBSCRIBE, 0);
		json_object_set_new(sub, "devices", json_true());
		json_object_set_new(sub, "jobs", json_true());
		json_t *r = conn_call(&c, sub, NULL, 0, NULL, NULL, &err);
		json_decref(sub);
		if (!r) {
			conn_close(&c);
			return render_error_free(&gg, &err);
		}
		json_decref(r);
	}
	int status = 0;
	for (;;) {
		json_t *req = wire_request_new(WIRE_REQ_STATION, 0);
		json_t *reply = conn_call(&c, req, NULL, 0, ignore_event, NULL, &err);
		json_decref(req);
		if (!reply) {
			status = render_error_free(&gg, &err);
			break;
		}
		if (gg.json)
			render_json_line(reply);
		else
			print_station(json_object_get(reply, "station"), g->is_tty && !once);
		json_decref(reply);
		if (once)
			break;
		/* Refresh at the next event, at most every STATION_REFRESH_MS, at least every
		 * second. */
		struct timespec t0, t;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		json_t *ev = conn_read(&c, 1000, &err);
		if (!ev && error_is_set(&err)) {
			status = render_error_free(&gg, &err);
			break;
		}
		json_decref(ev);
		do {
			clock_gettime(CLOCK_MONOTONIC, &t);
			long ms =
			    (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
			if (ms >= STATION_REFRESH_MS)
				break;
			json_decref(ev = conn_read(&c, (int)(STATION_REFRESH_MS - ms), &err));
		} while (ev);
		if (error_is_set(&err)) {
			status = render_error_free(&gg, &err);
			break;
		}
	}
	conn_close(&c);
	return status;
}

const struct cmd_entry cmd_station_entry = {
    .name = "station",
    .options = NULL, /* parsed by hand: --once, --follow, --json */
    .usage = "[--once] [--follow] [--json]",
    .summary = "live view of the ports, jobs and counters",
    .exec = cmd_station_exec,
};
