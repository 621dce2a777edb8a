#include "render.h"

#include <string.h>

static const char *color(const struct cli_global *g, const char *code)
{
	return g->no_color ? "" : code;
}

void render_json_line(json_t *value)
{
	char *s = json_dumps(value, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	fflush(stdout);
}

static void render_detail_human(const struct error *e)
{
	const char *key;
	json_t *value;
	if (!e->detail || json_object_size(e->detail) == 0)
		return;
	fputs("  facts:", stderr);
	json_object_foreach(e->detail, key, value) {
		char *v = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
		fprintf(stderr, " %s=%s", key, v ? v : "?");
		free(v);
	}
	fputc('\n', stderr);
}

int render_error(const struct cli_global *g, const struct error *e)
{
	if (g->json) {
		json_t *obj = error_to_json(e);
		json_object_set_new(obj, "type", json_string("error"));
		render_json_line(obj);
		json_decref(obj);
	} else {
		fprintf(stderr, "%serror%s [%s]: %s\n", color(g, "\033[1;31m"), color(g, "\033[0m"),
			error_id(e->code), e->message);
		render_detail_human(e);
		if (e->hint[0])
			fprintf(stderr, "  %shint%s: %s\n", color(g, "\033[1m"), color(g, "\033[0m"),
				e->hint);
	}
	return error_exit_status(e->code);
}

int render_usage_error(const struct cli_global *g, const char *message)
{
	struct error e;
	error_init(&e);
	error_set(&e, ERR_USAGE, "%s", message);
	int status = render_error(g, &e);
	error_clear(&e);
	return status;
}
