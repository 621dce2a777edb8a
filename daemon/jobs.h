/*
 * Jobs: the queue, one job per device at a time, and the state machine of
 * issue 5:
 *
 *   queued -> waiting-for-device -> switching-mode <-> preflight -> erasing
 *          -> writing -> rebooting -> verifying -> done | failed | cancelled
 *                                                    | interrupted
 *
 * The core moves a job through queued / waiting-for-device and into a
 * transport (transport.h); the transport moves it through the middle states
 * and ends it.  Cancel works in every state; a waiting job whose device never
 * appears ends as failed / timed-out when its wait runs out.  Every job ends
 * with exactly one job-ended event.
 */
#pragma once

#include "errors.h"
#include "image_cache.h"
#include "registry.h"
#include "transport.h"
#include "wire.h"

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

struct event_base;
struct history;
struct jobs;

#define JOB_RULE_MAX  64
#define JOB_LABEL_MAX 128

struct job_request {
	enum wire_target_kind target; /* PORT is resolved to USB/DEVICE before here */
	char target_value[WIRE_TARGET_MAX];
	bool all;
	struct device *device; /* resolved at submit time, or NULL: wait for one */
	struct job_options opts;
	bool cancel_on_disconnect;
	struct image_ref *images[WIRE_IMAGES_MAX]; /* references are taken over */
	char names[WIRE_IMAGES_MAX][WIRE_NAME_MAX];
	unsigned n_images;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	unsigned long client_id;
	/* An auto-flash job (daemon/autoflash.c): its rule's id and its port's
	 * label ("" = none); carried in job_to_json() and the history. */
	char rule[JOB_RULE_MAX];
	char label[JOB_LABEL_MAX];
};

/* Job events go to one sink (the server), which fans them out. */
typedef void (*jobs_sink)(void *ctx, struct job *job, json_t *event);

/* transports: NULL-terminated list in order of preference. */
struct jobs *jobs_new(struct event_base *base, struct registry *reg, struct image_cache *images,
		      const struct transport_ops *const *transports, unsigned max_jobs,
		      unsigned history);
/* Fair share: at most per_uid unended jobs of one uid, waiting_per_uid of them
 * waiting for a device (0 = no limit); jobs_create fails with too-many-jobs. */
void jobs_set_uid_limits(struct jobs *jobs, unsigned per_uid, unsigned waiting_per_uid);
/* Whether a connection has a job that has not ended (it is not idle). */
bool jobs_client_has_jobs(const struct jobs *jobs, unsigned long client_id);
/* Registers the core's and the transports' timeout keys (idempotent). */
void jobs_register_timeouts(const struct transport_ops *const *transports);
/* Interrupts every job that has not ended (job-ended "interrupted"), then frees. */
void jobs_free(struct jobs *jobs);
void jobs_set_sink(struct jobs *jobs, jobs_sink fn, void *ctx);
/* The replug rule (jobs.c): a job whose device left mid-job waits this long for
 * it to come back, then resumes; 0 = it ends device-gone at once. */
void jobs_set_replug_timeout(struct jobs *jobs, unsigned seconds);

/* Creates a job (state queued, no event yet); fails with too-many-jobs (or
 * out-of-memory).  On failure the image references are released. */
WARN_UNUSED_RESULT struct job *jobs_create(struct jobs *jobs, struct job_request *req,
					   struct error *err);
/* Emits job-queued and lets the scheduler run it (deferred: never re-enters the caller). */
void jobs_submit(struct jobs *jobs, struct job *job);

struct job *jobs_find(struct jobs *jobs, const char *id);
/* A job that has not ended and is bound to dev (running or queued behind another), or NULL. */
struct job *jobs_holding_device(struct jobs *jobs, const struct device *dev);
/* Asks the job to stop (see transport.h for running jobs).  by_uid is recorded. */
void jobs_cancel(struct jobs *jobs, struct job *job, uid_t by_uid);
/* The registry saw a change: bind waiting jobs, forward to running ones. */
void jobs_on_device(struct jobs *jobs, struct device *dev, enum registry_change change);
/* A client went away: cancel its jobs that asked for that. */
void jobs_client_gone(struct jobs *jobs, unsigned long client_id);
/* Whether the target matches the device (used at submit and while waiting). */
bool jobs_target_matches(enum wire_target_kind kind, const char *value, const struct device *dev);

json_t *job_to_json(const struct job *job);
json_t *jobs_list_json(struct jobs *jobs);
size_t jobs_active_count(const struct jobs *jobs);

enum job_state job_state(const struct job *job);
bool job_ended(const struct job *job);
uid_t job_owner_uid(const struct job *job);
const struct error *job_error(const struct job *job);
/* The auto-flash rule that made the job, and its port's label ("" = none). */
const char *job_rule(const struct job *job);
const char *job_label(const struct job *job);
/* ---- the core's side of a job (job_steps.c; never a transport's) ----------- */

/*
 * Ends the job.  result_word says what "done" means: "verified",
 * "written-not-verified", "already-installed", "preflight-ok" (dry run),
 * "probed"; for failures a word such as "booted-invalid" may be given, or NULL.
 * err must be set unless result is DONE; it is moved from (cleared).  A
 * device-gone failure starts the replug rule instead while it applies.
 */
void job_finish(struct job *job, enum job_result result, const char *result_word,
		struct error *err);
/* The job's plan (plan.h plan_to_json(), reference taken over): kept in the job
 * record ("plan") and sent as a job-plan event with the object under "plan"
 * and summary as its message. */
void job_set_plan(struct job *job, json_t *plan, const char *summary);
/* The plan step now running (1-based, of steps): every job-progress event
 * carries "step", "steps" and "step_description" ("writing system part 1 over
 * DFU") from here on. */
void job_set_step(struct job *job, unsigned step, unsigned steps, const char *description);
/* The file (job_image() index) is written on the device: a plan made again
 * (the job resumed after a replug) is made without it. */
void job_mark_written(struct job *job, size_t i);
bool job_image_written(const struct job *job, size_t i);
/* New facts about the job's device (platform, id, OS, modules): merged into
 * the registry, emits device-changed. */
void job_update_facts(struct job *job, const struct device_facts *facts);
/* The transports the daemon runs (jobs_new()), NULL-terminated. */
const struct transport_ops *const *job_transports(const struct job *job);
/* The transport of that name among them, or NULL. */
const struct transport_ops *job_transport(const struct job *job, const char *name);
/*
 * Starts a run of ops on the job for one step (transport.h start()).  Returns
 * false with err set when the transport could not start (the job goes on as
 * the caller decides).
 */
bool job_start_step(struct job *job, const struct transport_ops *ops, const struct job_step *step,
		    struct error *err);
/* The transport of the last step started (the job record's "transport"). */
const struct transport_ops *job_ops(const struct job *job);
/* Whether cancel was asked for. */
bool job_cancel_requested(const struct job *job);
/* The step driver's state (job_steps.c), owned by the job. */
struct job_steps **job_steps_slot(struct job *job);

/* ---- the flash history (daemon/history.c) -------------------------------- */

/* Jobs record their start and end in h (NULL: no history). */
void jobs_set_history(struct jobs *jobs, struct history *h);
/* The device facts as they were before the first byte was written: at the
 * start, refreshed by what the transport learnt before writing.  NULL before
 * the job has a device. */
const struct device_facts *job_facts_before(const struct job *job);
/* The facts read after the last write; the current ones when nothing was
 * written; NULL when written but not read back since. */
const struct device_facts *job_facts_after(const struct job *job);
/* Bytes the transport reported written (sum over the writing phases). */
uint64_t job_bytes_written(const struct job *job);
/* Times the job resumed after its device left and came back (the replug rule). */
unsigned job_resumes(const struct job *job);
