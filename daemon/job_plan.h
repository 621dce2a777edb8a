/*
 * The plan of one job as a transport runs it: the generic preflight
 * (preflight.h: CRC, platform, slot and size of every file), then the planner
 * (plan.h) over what the transport just read from the device, then the
 * transport's own checks on the writes the plan gives it, in the plan's order.
 * Reports the plan to the job (job_set_plan()) with notes for skipped files,
 * warnings and what --force overrode.
 */
#pragma once

#include "errors.h"
#include "plan.h"
#include "preflight.h"
#include "transport.h"

struct job_plan {
	struct plan plan;
	struct preflight_plan pre; /* this transport's writes, in plan order */
	/* The plan's first write goes over another transport: its name (the run
	 * hands the job over), else NULL. */
	const char *handoff;
	/* The plan goes on over another transport after this one's writes: its
	 * name (the run hands the job over when its writes are done and verified;
	 * the next transport plans again and skips what is installed now). */
	const char *then;
};

/*
 * transport: the running transport; rules: its preflight rules; mode: the
 * mode the device is in now; label: the device in messages.  Returns 0 (then
 * jp->handoff, or jp->pre with jp->plan.n_writes writes; none when every file
 * is installed already), or -1 with err set.
 */
WARN_UNUSED_RESULT int job_plan_make(struct job *job, enum plan_transport transport,
				     const struct device_facts *facts, enum device_mode mode,
				     const char *label, const struct preflight_rules *rules,
				     struct job_plan *jp, struct error *err);

/* Reports the plan step of the write_i-th write (0-based) to the job ("step 2 of 4: ..."). */
void job_plan_write_step(struct job *job, const struct job_plan *jp, size_t write_i);
/* Reports the plan's verify step (or the reboot after write_i). */
void job_plan_step_kind(struct job *job, const struct job_plan *jp, enum plan_step_kind kind,
			size_t write_i);

/*
 * The verdict after the last reboot (issue 11: verified means every module the
 * device reports is valid and it runs normally), from what the device reports
 * now (the console's `s`, module info by control request): 0 = verified, else
 * -1 with booted-invalid naming the failing checks (failed_checks), the invalid
 * modules (invalid_modules), the mode and the file.  safe: the device runs
 * safe mode.
 */
int job_verdict(struct job *job, const struct device_facts *now, bool safe, struct error *err);
