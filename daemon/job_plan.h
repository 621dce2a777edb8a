/*
 * The plan of one job, made by the core once it has read the device and before
 * the first byte (job_steps.c): the generic preflight (preflight.h: CRC,
 * platform, slot and size of every file), the planner (plan.h) over what was
 * read, then each transport's own rules (transport_ops.rules) over the writes
 * the plan gives it, in the plan's order.  Reports the plan to the job
 * (job_set_plan()) with notes for skipped files, warnings and what --force
 * overrode.  No transport calls any of this.
 */
#pragma once

#include "errors.h"
#include "plan.h"
#include "preflight.h"
#include "transport.h"

struct job_plan {
	struct plan plan;
	/* plan input -> job_image() index (files written earlier in the job, before a
	 * replug, are planned without) */
	size_t idx[PREFLIGHT_MAX_IMAGES];
};

/*
 * facts, mode: the device as the READ step found it; label: the device in
 * messages.  Returns 0 (jp->plan with jp->plan.n_writes writes; none when every
 * file is installed already), or -1 with err set: the job is refused before the
 * first byte.
 */
WARN_UNUSED_RESULT int job_plan_make(struct job *job, const struct device_facts *facts,
				     enum device_mode mode, const char *label, struct job_plan *jp,
				     struct error *err);

/* The job_image() index of a write step's file. */
size_t job_plan_file(const struct job_plan *jp, const struct plan_step *s);
/* Reports plan step i (0-based) as the one running ("step 2 of 4: ..."). */
void job_plan_report_step(struct job *job, const struct job_plan *jp, size_t i);

/*
 * The verdict after the last reboot (issue 11: verified means every module the
 * device reports is valid and it runs normally), from what the device reports
 * now (the console's `s`, module info by control request): 0 = verified, else
 * -1 with booted-invalid naming the failing checks (failed_checks), the invalid
 * modules (invalid_modules), the mode and the file.  safe: the device runs
 * safe mode.
 */
int job_verdict(struct job *job, const struct device_facts *now, bool safe, struct error *err);
