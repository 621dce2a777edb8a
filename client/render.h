/* How flashctl shows errors and results: the only place that prints them. */
#pragma once

#include "errors.h"
#include "verbs.h"

#include <jansson.h>
#include <stdio.h>

/* Prints an error (human: what failed, why, what to do; --json: one
 * {"type":"error",...} object on stdout) and returns its exit status. */
int render_error(const struct cli_global *g, const struct error *e);
/* A usage error with a message; returns the usage exit status. */
int render_usage_error(const struct cli_global *g, const char *message);
/* Prints one JSON value compactly on a line of stdout. */
void render_json_line(json_t *value);

/* One line per object (minimal rendering; the polished UI is a later issue). */
void render_device_line(const struct cli_global *g, const json_t *dev);
void render_job_line(const struct cli_global *g, const json_t *job);
/* A list reply: itself with --json, else one line() per element of reply[key],
 * or none_text when it is empty. */
void render_list(const struct cli_global *g, const json_t *reply, const char *key,
		 const char *none_text, void (*line)(const struct cli_global *, const json_t *));
/* An event as one line: device-*, job-* (human), or the object itself (--json). */
void render_event(const struct cli_global *g, const json_t *event);
/* render_error(), then error_clear(): for verbs that end with the error. */
int render_error_free(const struct cli_global *g, struct error *e);
/* A job's plan (proto/PROTOCOL.md "plan"): its summary, one line per step (transport,
 * mode switch, bytes, estimate), then skipped files, warnings and --force overrides. */
void render_plan(FILE *out, const json_t *plan, const char *indent);
