#include "render.h"

#include "facts.h"

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

int render_error(const struct cli_global *g, const struct error *e)
{
	if (g->json) {
		json_t *obj = error_to_json(e);
		json_object_set_new(obj, "type", json_string("error"));
		render_json_line(obj);
		json_decref(obj);
	} else {
		/* What failed, why (the facts), what to do (the hint). */
		fflush(stdout);
		fprintf(stderr, "%serror%s [%s]: %s\n", color(g, "\033[1;31m"), color(g, "\033[0m"),
			error_id(e->code), e->message);
		facts_print(stderr, e->detail, 2);
		if (e->hint[0])
			fprintf(stderr, "  %shint%s: %s\n", color(g, "\033[1;33m"),
				color(g, "\033[0m"), e->hint);
		fflush(stderr);
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

static const char *str_or(const json_t *obj, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : def;
}

void render_device_line(const struct cli_global *g, const json_t *dev)
{
	const json_t *usb = json_object_get(dev, "usb");
	if (g->json) {
		render_json_line((json_t *)dev);
		return;
	}
	printf("%-30s %-10s %-9s %-14s usb %-8s%s%s%s\n", str_or(dev, "key", "?"),
	       str_or(dev, "platform", "?"), str_or(dev, "mode", "?"), str_or(dev, "tty", "-"),
	       str_or(usb, "port", "?"),
	       json_is_true(json_object_get(dev, "present")) ? "" : " gone",
	       json_is_true(json_object_get(dev, "busy")) ? " busy " : "",
	       json_is_true(json_object_get(dev, "busy")) ? str_or(dev, "job", "") : "");
	fflush(stdout);
}

void render_job_line(const struct cli_global *g, const json_t *job)
{
	if (g->json) {
		render_json_line((json_t *)job);
		return;
	}
	const json_t *images = json_object_get(job, "images");
	const json_t *err = json_object_get(job, "error");
	printf("%s %-18s %-8s device %-26s %zu image%s%s%s\n", str_or(job, "id", "?"),
	       str_or(job, "state", "?"), str_or(job, "outcome", ""), str_or(job, "device", "-"),
	       json_array_size(images), json_array_size(images) == 1 ? "" : "s",
	       json_is_object(err) ? " error " : "",
	       json_is_object(err) ? str_or(err, "code", "") : "");
	fflush(stdout);
}

void render_event(const struct cli_global *g, const json_t *ev)
{
	const char *name = str_or(ev, "event", "?");
	if (g->json) {
		render_json_line((json_t *)ev);
		return;
	}
	if (strncmp(name, "device-", 7) == 0) {
		printf("%-15s ", name);
		render_device_line(g, json_object_get(ev, "device"));
		return;
	}
	const char *job = str_or(ev, "job", "?");
	if (strcmp(name, "job-progress") == 0) {
		const json_t *total = json_object_get(ev, "total");
		printf("%-15s %s %-18s", name, job, str_or(ev, "state", "?"));
		if (json_integer_value(total) > 0)
			printf(" %lld/%lld bytes (%lld%%)",
			       (long long)json_integer_value(json_object_get(ev, "done")),
			       (long long)json_integer_value(total),
			       (long long)json_integer_value(json_object_get(ev, "percent")));
		if (json_object_get(ev, "note"))
			printf(" %s: %s", str_or(ev, "note", ""), str_or(ev, "message", ""));
		printf("\n");
	} else if (strcmp(name, "job-plan") == 0) {
		printf("%-15s %s %s\n", name, job, str_or(ev, "message", ""));
	} else if (strcmp(name, "job-ended") == 0) {
		const json_t *err = json_object_get(ev, "error");
		printf("%-15s %s %s%s%s%s%s\n", name, job, str_or(ev, "result", "?"),
		       json_is_string(json_object_get(ev, "outcome")) ? " " : "",
		       str_or(ev, "outcome", ""), err ? " " : "",
		       err ? str_or(err, "code", "") : "");
		if (json_is_object(err)) {
			struct error e;
			error_init(&e);
			if (error_from_json(&e, err) == 0)
				render_error(g, &e);
			error_clear(&e);
		}
	} else {
		const json_t *rec = json_object_get(ev, "record");
		printf("%-15s %s device %s\n", name, job, str_or(rec, "device", "(waiting)"));
	}
	fflush(stdout);
}

int render_error_free(const struct cli_global *g, struct error *e)
{
	int status = render_error(g, e);
	error_clear(e);
	return status;
}

void render_list(const struct cli_global *g, const json_t *reply, const char *key,
		 const char *none_text, void (*line)(const struct cli_global *, const json_t *))
{
	if (g->json) {
		render_json_line((json_t *)reply);
		return;
	}
	const json_t *items = json_object_get(reply, key);
	if (json_array_size(items) == 0)
		printf("%s\n", none_text);
	for (size_t i = 0; i < json_array_size(items); i++)
		line(g, json_array_get(items, i));
}

void render_plan(FILE *out, const json_t *plan, const char *indent)
{
	if (!json_is_object(plan))
		return;
	const json_t *steps = json_object_get(plan, "steps");
	long long bytes = json_integer_value(json_object_get(plan, "bytes"));
	fprintf(out, "%splan: %zu step%s, %lld write%s (%lld KiB), about %.0f s%s\n", indent,
		json_array_size(steps), json_array_size(steps) == 1 ? "" : "s",
		json_integer_value(json_object_get(plan, "writes")),
		json_integer_value(json_object_get(plan, "writes")) == 1 ? "" : "s",
		(bytes + 1023) / 1024, json_number_value(json_object_get(plan, "estimate_s")),
		json_is_true(json_object_get(plan, "preliminary"))
		    ? " (preliminary: the device is read before the first byte)"
		    : "");
	size_t i;
	const json_t *s;
	json_array_foreach(steps, i, s)
	{
		const char *kind = json_string_value(json_object_get(s, "kind"));
		char extra[96] = "";
		if (kind && strcmp(kind, "write") == 0)
			snprintf(extra, sizeof(extra), ", %s, %lld bytes",
				 json_string_value(json_object_get(s, "file")),
				 json_integer_value(json_object_get(s, "bytes")));
		fprintf(out, "%s  %zu. %s%s (~%.0f s)\n", indent, i + 1,
			json_string_value(json_object_get(s, "description")), extra,
			json_number_value(json_object_get(s, "estimate_s")));
	}
	json_array_foreach(json_object_get(plan, "skipped"), i, s)
	    fprintf(out, "%s  skipped file %lld: %s\n", indent,
		    json_integer_value(json_object_get(s, "file_index")) + 1,
		    json_string_value(json_object_get(s, "reason")));
	json_array_foreach(json_object_get(plan, "warnings"), i, s)
	    fprintf(out, "%s  warning: %s\n", indent, json_string_value(s));
	json_array_foreach(json_object_get(plan, "overrides"), i, s)
	    fprintf(out, "%s  --force overrides: %s\n", indent, json_string_value(s));
	/* a dry run: which of a transport's own checks ran against the device, which
	 * against what is known of its platform */
	json_array_foreach(json_object_get(plan, "checks"), i, s)
	{
		const char *against = json_string_value(json_object_get(s, "against"));
		const char *tr = json_string_value(json_object_get(s, "transport"));
		const char *checked = json_string_value(json_object_get(s, "checked"));
		const char *unchecked = json_string_value(json_object_get(s, "unchecked"));
		if (against && strcmp(against, "device") == 0)
			fprintf(out, "%s  checked on the device: the %s transport's own checks\n",
				indent, tr ? tr : "?");
		else if (checked)
			fprintf(out, "%s  checked without the device (%s): %s\n", indent,
				tr ? tr : "?", checked);
		if (unchecked)
			fprintf(out, "%s  not checked (%s): %s\n", indent, tr ? tr : "?",
				unchecked);
	}
}
