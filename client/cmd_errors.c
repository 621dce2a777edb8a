/* flashctl errors: the catalogue, as text, JSON or the README's Markdown table. */
#include "errors.h"
#include "render.h"
#include "verbs.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void print_markdown(void)
{
	const struct error_info *t;
	size_t n = error_catalogue(&t);
	printf("| id | exit | detail keys | message | hint |\n|---|---:|---|---|---|\n");
	for (size_t i = 0; i < n; i++)
		printf("| `%s` | %d | %s | %s | %s |\n", t[i].id, t[i].exit_status,
		       t[i].details[0] ? t[i].details : "-", t[i].message, t[i].hint);
}

static json_t *details_json(const char *details)
{
	json_t *obj = json_object();
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", details);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');
		if (!colon)
			continue;
		*colon = '\0';
		static const struct {
			char letter;
			const char *name;
		} types[] = {{'s', "string"},
			     {'i', "integer"},
			     {'b', "boolean"},
			     {'a', "array"},
			     {'o', "object"}};
		for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++)
			if (types[k].letter == colon[1])
				json_object_set_new(obj, tok, json_string(types[k].name));
	}
	return obj;
}

static const struct option errors_options[] = {
    {"json", no_argument, NULL, 'j'},
    {"markdown", no_argument, NULL, 'm'},
    {0},
};

static int cmd_errors_exec(int argc, char **argv, const struct cli_global *g)
{
	bool markdown = false, json = g->json;
	int c;
	while ((c = getopt_long(argc, argv, "jm", errors_options, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'm')
			markdown = true;
		else
			return cmd_usage_error(g, &cmd_errors_entry);
	}
	if (markdown) {
		print_markdown();
		return 0;
	}
	const struct error_info *t;
	size_t n = error_catalogue(&t);
	for (size_t i = 0; i < n; i++) {
		if (json) {
			json_t *o =
			    json_pack("{s:s, s:i, s:o, s:s, s:s}", "id", t[i].id, "exit",
				      t[i].exit_status, "detail", details_json(t[i].details),
				      "message", t[i].message, "hint", t[i].hint);
			render_json_line(o);
			json_decref(o);
		} else {
			printf("%-20s exit %-2d %s\n%22s hint: %s\n", t[i].id, t[i].exit_status,
			       t[i].message, "", t[i].hint);
		}
	}
	return 0;
}

const struct cmd_entry cmd_errors_entry = {
    .name = "errors",
    .options = errors_options,
    .usage = "[--json|--markdown]",
    .summary = "print the error catalogue",
    .exec = cmd_errors_exec,
};
