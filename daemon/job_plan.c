#include "job_plan.h"

#include "jobs.h"
#include "preflight.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void report(struct job *job, const struct job_plan *jp, const struct preflight_input *in)
{
	const struct plan *p = &jp->plan;
	char summary[320];
	plan_summary(p, summary, sizeof(summary));
	job_set_plan(job, plan_to_json(p), summary);
	for (size_t i = 0; i < p->n_skipped; i++)
		job_note(job, "skipped", "%s: %s", in[p->skipped[i]].name, p->skip_reason[i]);
	for (size_t i = 0; i < p->n_warnings; i++)
		job_note(job, "plan-warning", "%s", p->warnings[i]);
	for (size_t i = 0; i < p->n_unverified; i++)
		job_note(job, "not-skipped", "%s", p->unverified[i]);
	for (size_t i = 0; i < p->n_overrides; i++)
		job_note(job, "forced", "--force overrode: %s", p->overrides[i]);
}

int job_plan_make(struct job *job, const struct device_facts *facts, enum device_mode mode,
		  const char *label, struct job_plan *jp, struct error *err)
{
	memset(jp, 0, sizeof(*jp));
	size_t all = job_image_count(job);
	if (all > PREFLIGHT_MAX_IMAGES)
		return preflight_files_check(NULL, all, err);
	/* files written earlier in this job (before the device left and came back) are
	 * installed now: the plan is made over the rest (idx maps back to the job's files) */
	struct preflight_input in[PREFLIGHT_MAX_IMAGES];
	size_t n = 0;
	for (size_t i = 0; i < all; i++) {
		if (job_image_written(job, i))
			continue;
		in[n].img = job_image(job, i);
		in[n].name = job_image_name(job, i);
		jp->idx[n++] = i;
	}
	const struct job_options *o = job_options(job);
	struct preflight_plan *pre = malloc(sizeof(*pre));
	if (!pre)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	/* 1. every file on its own: CRC, platform, slot, size (any transport) */
	struct preflight_rules any;
	preflight_rules_serial(facts, &any);
	any.functions = ~0u;
	any.compressed = any.combined = true;
	any.max_file_size = 0;
	any.planned = true;
	int rc = preflight_check(facts, label, in, n, &any, o->force, pre, err);
	/* 2. the plan */
	struct plan_options po = {.force = o->force, .rewrite = o->rewrite, .mode = mode};
	for (int t = 0; t < PLAN_TRANSPORT_COUNT; t++)
		if (job_transport(job, plan_transport_name((enum plan_transport)t)))
			po.transports |= 1u << t;
	/* no tty (the registry keeps it across DFU mode, whose read-back does not know
	 * it): neither the console nor the magic bauds reach the running device */
	if (facts->no_tty || job_device(job)->facts.no_tty)
		po.transports &= ~(1u << PLAN_TRANSPORT_SERIAL);
	if (rc == 0)
		rc = plan_build(facts, in, n, &po, &jp->plan, err);
	if (rc == 0)
		report(job, jp, in);
	/* 3. each transport's rules over its writes, in the plan's order */
	for (const struct transport_ops *const *t = job_transports(job); rc == 0 && *t; t++) {
		if (!(*t)->rules)
			continue;
		struct preflight_input w[PREFLIGHT_MAX_IMAGES];
		size_t nw = 0;
		for (size_t i = 0; i < jp->plan.n_steps; i++) {
			const struct plan_step *s = &jp->plan.steps[i];
			if (s->kind == PLAN_STEP_WRITE &&
			    strcmp(plan_transport_name(s->transport), (*t)->name) == 0)
				w[nw++] = in[s->file];
		}
		if (nw == 0)
			continue;
		struct preflight_rules mine;
		(*t)->rules(facts, &mine);
		mine.planned = true;
		rc = preflight_check(facts, label, w, nw, &mine, o->force, pre, err);
	}
	free(pre);
	return rc;
}

size_t job_plan_file(const struct job_plan *jp, const struct plan_step *s)
{
	return s->file < PREFLIGHT_MAX_IMAGES ? jp->idx[s->file] : 0;
}

void job_plan_report_step(struct job *job, const struct job_plan *jp, size_t i)
{
	if (i >= jp->plan.n_steps)
		return;
	char text[160];
	plan_step_describe(&jp->plan.steps[i], text, sizeof(text));
	job_set_step(job, (unsigned)i + 1, (unsigned)jp->plan.n_steps, text);
}

static void add_check(json_t *a, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) if (strcmp(json_string_value(v), name) == 0) return;
	json_array_append_new(a, json_string(name));
}

/* Whether the device lists every module the job wrote, in its version, valid (vc == vv).
 * Radio stacks are left out: the console's `s` makes up their entry. */
static bool modules_as_written(struct job *job, const struct device_facts *now, json_t *failed,
			       const char **function, const char **file)
{
	for (size_t i = 0; i < job_image_count(job); i++) {
		const struct image *img = job_image(job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++) {
			const struct image_module *m = &img->modules[k];
			if (m->function != MODULE_FUNCTION_SYSTEM &&
			    m->function != MODULE_FUNCTION_USER &&
			    m->function != MODULE_FUNCTION_BOOTLOADER &&
			    m->function != MODULE_FUNCTION_MONO)
				continue;
			const struct installed_module *im =
			    preflight_installed(now, m->function, m->index);
			bool bad = false;
			if (!im || im->version != m->version) {
				add_check(failed, "missing");
				bad = true;
			} else {
				const char *names[MODULE_CHECKS_MAX];
				unsigned n = module_checks_failed(im->checked, im->passed, names);
				for (unsigned c = 0; c < n; c++)
					add_check(failed, names[c]);
				bad = n > 0;
			}
			if (bad && !*function) {
				*function = module_function_name(m->function);
				*file = job_image_name(job, i);
			}
		}
	}
	return json_array_size(failed) == 0;
}

int job_verdict(struct job *job, const struct device_facts *now, bool safe, struct error *err)
{
	json_t *failed = json_array();
	const char *function = NULL, *file = NULL;
	json_t *invalid = json_array();
	bool written_ok = modules_as_written(job, now, failed, &function, &file);
	/* verified means the whole device: every module it reports valid (issue 11) */
	size_t n_invalid = plan_invalid_modules(now, invalid);
	if (written_ok && n_invalid == 0 && !safe) {
		json_decref(failed);
		json_decref(invalid);
		return 0;
	}
	char names[256] = "";
	size_t i;
	json_t *m;
	json_array_foreach(invalid, i, m)
	{
		size_t k, len = strlen(names);
		json_t *c;
		snprintf(names + len, sizeof(names) - len, "%s%s (version %d)", i ? ", " : "",
			 json_string_value(json_object_get(m, "module")),
			 (int)json_integer_value(json_object_get(m, "version")));
		json_array_foreach(json_object_get(m, "failed_checks"), k, c)
		    add_check(failed, json_string_value(c));
		if (!function)
			function = json_string_value(json_object_get(m, "function"));
	}
	if (n_invalid > 0)
		error_set(err, ERR_BOOTED_INVALID,
			  "the firmware was written, but after the reboot the device reports %s "
			  "invalid%s: see invalid_modules",
			  names, safe ? " and runs safe mode" : "");
	else
		error_set(
		    err, ERR_BOOTED_INVALID,
		    "the firmware was written, but after the reboot the device reports %s %s: "
		    "see failed_checks",
		    file ? file : "a flashed module",
		    safe ? "invalid and runs safe mode" : "missing or invalid");
	error_detail_json(err, "failed_checks", failed);
	error_detail_json(err, "invalid_modules", invalid);
	error_detail_str(err, "mode", safe ? "safe" : "normal");
	if (function)
		error_detail_str(err, "module_function", function);
	if (file)
		error_detail_str(err, "file", file);
	return -1;
}
