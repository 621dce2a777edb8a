/*
 * flashctl auto: the daemon's auto-flash rules (issue 15).
 *
 *   flashctl auto add [--platform NAME] [--port PATH] [--label TEXT] [--id GLOB]
 *                     [--mode MODE] [--os-older-than VERSION] [--once] [--priority N]
 *                     [--max-jobs N] [--no-skip] FILE...
 *   flashctl auto list | remove ID | pause ID | resume ID | reload
 *
 * add sends the files as descriptors (the daemon stores copies) and prints the
 * new rule's id; with --json the reply object.
 */
#include "conn.h"
#include "render.h"
#include "verbs.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AUTO_USAGE                                                                                 \
	"usage: flashctl auto add [--platform NAME] [--port PATH] [--label TEXT] [--id GLOB] "     \
	"[--mode MODE] [--os-older-than VERSION] [--once] [--priority N] [--max-jobs N] "          \
	"[--no-skip] FILE...\n"                                                                    \
	"       flashctl auto list | remove ID | pause ID | resume ID | reload"

static const char *str_or(const json_t *o, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : def;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int auto_add(int argc, char **argv, const struct cli_global *g)
{
	static const struct option opts[] = {
	    {"platform", required_argument, NULL, 'P'},
	    {"port", required_argument, NULL, 'p'},
	    {"label", required_argument, NULL, 'l'},
	    {"id", required_argument, NULL, 'i'},
	    {"mode", required_argument, NULL, 'm'},
	    {"os-older-than", required_argument, NULL, 'o'},
	    {"once", no_argument, NULL, '1'},
	    {"priority", required_argument, NULL, 'r'},
	    {"max-jobs", required_argument, NULL, 'j'},
	    {"no-skip", no_argument, NULL, 'n'},
	    {"json", no_argument, NULL, 'J'},
	    {0},
	};
	struct cli_global gg = *g;
	json_t *req = wire_request_new(WIRE_REQ_AUTO_ADD, 0);
	int c;
	long v;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'P':
			json_object_set_new(req, "platform", json_string(optarg));
			break;
		case 'p':
			json_object_set_new(req, "port", json_string(optarg));
			break;
		case 'l':
			json_object_set_new(req, "label", json_string(optarg));
			break;
		case 'i':
			json_object_set_new(req, "device", json_string(optarg));
			break;
		case 'm':
			json_object_set_new(req, "mode", json_string(optarg));
			break;
		case 'o':
			json_object_set_new(req, "os_older_than", json_string(optarg));
			break;
		case '1':
			json_object_set_new(req, "once", json_true());
			break;
		case 'r':
			if (parse_int(optarg, -1000000, 1000000, &v) < 0) {
				json_decref(req);
				return render_usage_error(g, "--priority takes an integer");
			}
			json_object_set_new(req, "priority", json_integer(v));
			break;
		case 'j':
			if (parse_int(optarg, 0, 65536, &v) < 0) {
				json_decref(req);
				return render_usage_error(g, "--max-jobs takes a number");
			}
			json_object_set_new(req, "max_jobs", json_integer(v));
			break;
		case 'n':
			json_object_set_new(req, "skip_installed", json_false());
			break;
		case 'J':
			gg.json = true;
			break;
		default:
			json_decref(req);
			return render_usage_error(g, AUTO_USAGE);
		}
	}
	int n = argc - optind;
	if (n < 1 || n > WIRE_IMAGES_MAX) {
		json_decref(req);
		return render_usage_error(&gg, n < 1 ? "auto add needs at least one FILE"
						     : "too many files for one rule");
	}
	int fds[WIRE_IMAGES_MAX];
	json_t *images = json_array();
	for (int i = 0; i < n; i++) {
		fds[i] = open(argv[optind + i], O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			struct error err;
			error_init(&err);
			error_set(&err, ERR_FILE_UNREADABLE, "cannot open %s", argv[optind + i]);
			error_detail_str(&err, "file", argv[optind + i]);
			while (i-- > 0)
				close(fds[i]);
			json_decref(images);
			json_decref(req);
			return render_error_free(&gg, &err);
		}
		json_array_append_new(images,
				      json_pack("{s:s, s:i}", "name", argv[optind + i], "fd", i));
	}
	json_object_set_new(req, "images", images);
	struct conn conn;
	struct error err;
	error_init(&err);
	int status = 0;
	if (conn_open(&conn, &gg, &err) < 0) {
		status = render_error_free(&gg, &err);
	} else {
		json_t *reply = conn_call(&conn, req, fds, (unsigned)n, NULL, NULL, &err);
		if (!reply) {
			status = render_error_free(&gg, &err);
		} else if (gg.json) {
			render_json_line(reply);
		} else {
			printf("%s\n", str_or(json_object_get(reply, "rule"), "id", "?"));
		}
		json_decref(reply);
		conn_close(&conn);
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	json_decref(req);
	return status;
}

static void print_rule(const struct cli_global *g, const json_t *r)
{
	(void)g;
	const json_t *m = json_object_get(r, "match");
	const json_t *o = json_object_get(r, "options");
	char match[512] = "";
	static const char *const keys[] = {"platform", "port", "label",
					   "device",   "mode", "os_older_than"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = str_or(m, keys[i], NULL);
		size_t l = strlen(match);
		if (v)
			snprintf(match + l, sizeof(match) - l, "%s%s=%s", l ? " " : "", keys[i], v);
	}
	printf("%-20s %-7s %-6s prio %-4lld %s%s done %-5lld %s  [", str_or(r, "id", "?"),
	       str_or(r, "source", "?"),
	       json_is_true(json_object_get(r, "paused")) ? "paused" : "on",
	       (long long)json_integer_value(json_object_get(o, "priority")),
	       json_is_true(json_object_get(o, "once")) ? "once " : "",
	       json_is_true(json_object_get(o, "skip_installed")) ? "skip" : "",
	       (long long)json_integer_value(json_object_get(r, "done")),
	       match[0] ? match : "any device");
	const json_t *img;
	size_t i;
	json_array_foreach(json_object_get(r, "images"), i, img)
	    printf("%s%s", i ? " " : "", str_or(img, "file", "?"));
	printf("]\n");
}

static int auto_simple(const char *verb, int argc, char **argv, const struct cli_global *g)
{
	struct error err;
	error_init(&err);
	enum wire_request_type t;
	bool takes_id = true;
	if (strcmp(verb, "list") == 0) {
		t = WIRE_REQ_AUTO_LIST;
		takes_id = false;
	} else if (strcmp(verb, "reload") == 0) {
		t = WIRE_REQ_AUTO_RELOAD;
		takes_id = false;
	} else if (strcmp(verb, "remove") == 0) {
		t = WIRE_REQ_AUTO_REMOVE;
	} else if (strcmp(verb, "pause") == 0) {
		t = WIRE_REQ_AUTO_PAUSE;
	} else if (strcmp(verb, "resume") == 0) {
		t = WIRE_REQ_AUTO_RESUME;
	} else {
		return render_usage_error(g, AUTO_USAGE);
	}
	struct cli_global gg = *g;
	int n = 0;
	const char *id = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			gg.json = true;
		else if (argv[i][0] == '-')
			return render_usage_error(g, AUTO_USAGE);
		else if (n++ == 0)
			id = argv[i];
	}
	if (takes_id ? n != 1 : n != 0)
		return render_usage_error(g, AUTO_USAGE);
	json_t *req = wire_request_new(t, 0);
	if (id)
		json_object_set_new(req, "rule", json_string(id));
	json_t *reply = conn_request(&gg, req, &err);
	if (!reply)
		return render_error_free(&gg, &err);
	if (gg.json) {
		render_json_line(reply);
	} else if (t == WIRE_REQ_AUTO_LIST) {
		render_list(&gg, reply, "rules", "no rules", print_rule);
	} else if (t == WIRE_REQ_AUTO_RELOAD) {
		const json_t *r = json_object_get(reply, "reload");
		const json_t *e;
		size_t i;
		printf("%lld rule(s) from %lld file(s) in %s\n",
		       (long long)json_integer_value(json_object_get(r, "rules")),
		       (long long)json_integer_value(json_object_get(r, "files")),
		       str_or(r, "dir", "?"));
		json_array_foreach(json_object_get(r, "errors"), i, e) fprintf(
		    stderr, "flashctl: %s: %s\n", str_or(e, "code", "?"), str_or(e, "message", ""));
	} else {
		printf("rule %s %s\n", id,
		       t == WIRE_REQ_AUTO_REMOVE  ? "removed"
		       : t == WIRE_REQ_AUTO_PAUSE ? "paused"
						  : "resumed");
	}
	json_decref(reply);
	return 0;
}

static int cmd_auto_exec(int argc, char **argv, const struct cli_global *g)
{
	if (argc < 2)
		return render_usage_error(g, AUTO_USAGE);
	if (strcmp(argv[1], "add") == 0) {
		optind = 0;
		return auto_add(argc - 1, argv + 1, g);
	}
	return auto_simple(argv[1], argc - 1, argv + 1, g);
}

const struct cmd_entry cmd_auto_entry = {
    .name = "auto",
    .options = NULL, /* subcommands: `auto add` parses its own options */
    .usage = "add [--platform NAME] [--port PATH] [--label TEXT] [--id GLOB]\n"
	     "[--os-older-than VERSION] [--once] [--priority N] FILE...\n"
	     "auto list | remove ID | pause ID | resume ID | reload",
    .summary = "auto-flash rules",
    .exec = cmd_auto_exec,
};
