#include "jobs.h"

#include "history.h"
#include "job_steps.h"
#include "log.h"
#include "plan.h"
#include "platform.h"
#include "settings.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* job-progress events for bytes are sent at most this often (state changes always). */
#define JOBS_PROGRESS_INTERVAL_MS 100
/* A job whose device left mid-job resumes at most this often (a cable that
 * keeps dropping out ends the job device-gone rather than looping). */
#define JOBS_MAX_RESUMES 3
/* A transport may report the device gone before udev does (a USB error
 * first): while the registry still lists it, the job resumes only once the
 * device was seen leaving, or after this long. */
#define JOBS_REPLUG_SETTLE_S 1.0

struct job {
	struct job *next;
	struct jobs *jobs;
	char id[37];
	enum job_state state;
	enum job_result result;
	bool ended;
	char outcome[32];
	struct error error;

	enum wire_target_kind target;
	char target_value[WIRE_TARGET_MAX];
	bool all;
	struct device *device; /* bound device (kept after the end for the record) */
	char device_key[DEVICE_KEY_MAX];
	struct job_options opts;
	bool cancel_on_disconnect;
	unsigned long client_id;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	char rule[JOB_RULE_MAX];
	char label[JOB_LABEL_MAX];

	struct image_ref *images[WIRE_IMAGES_MAX];
	char names[WIRE_IMAGES_MAX][WIRE_NAME_MAX];
	char sha256[WIRE_IMAGES_MAX][65];
	size_t sizes[WIRE_IMAGES_MAX];
	unsigned n_images;
	bool images_released;

	const struct transport_ops *ops;
	struct transport_run *run;
	struct job_steps *driver; /* the step driver (job_steps.h) */
	/* the transport of the last WRITE step: the record's "transport" (else the
	 * transport of the last step) */
	const struct transport_ops *writer;
	bool in_start;
	bool step_ended_in_start; /* the run ended its step from inside start() */
	bool cancel_requested;
	uid_t cancel_by;

	struct event *wait_timer;
	struct event *cancel_timer;
	bool waiting_armed;

	json_t *plan;		       /* the plan (plan.h), once known */
	json_t *partial;	       /* where an unfinished write stopped (job_set_partial()) */
	unsigned step, steps;	       /* the plan step being run (1-based), 0 = none */
	bool written[WIRE_IMAGES_MAX]; /* files written and verified (job_mark_written()) */
	char step_text[128];

	double created, started, ended_at;
	uint64_t done, total;
	uint64_t phase_done0;
	double phase_t0, last_emit;

	/* for the history: what the job saw of its device, and what it wrote */
	struct device_facts facts_before, facts_after;
	bool have_before, have_after;
	uint64_t bytes_written, write_base, write_sum0;
	/* Bytes held back by the rate limit go out when it allows (a stalled
	 * transfer's last event must say what was acknowledged). */
	struct event *progress_timer;
	bool progress_held;

	/* The replug rule: the device left mid-job (a transport reported
	 * device-gone); the job waits for it under its identity, on any port. */
	struct event *replug_timer; /* ticks every second while waiting */
	bool replug_waiting, replug_seen_gone;
	double replug_t0;	 /* mono_s() when the wait began */
	unsigned resumes;	 /* times the job resumed after its device came back */
	struct error replug_err; /* the transport's device-gone, for the final error */
	char replug_where[192];	 /* "step 2 of 3 (writing system part 1 over DFU)" */
};

struct grave {
	struct grave *next;
	const struct transport_ops *ops;
	struct transport_run *run;
};

struct jobs {
	struct event_base *base;
	struct registry *reg;
	struct image_cache *images;
	const struct transport_ops *const *transports;
	struct job *list; /* creation order */
	unsigned max_jobs, history;
	unsigned per_uid, waiting_per_uid; /* fair share (jobs_set_uid_limits); 0 = none */
	struct event *kick;
	struct grave *graves;
	jobs_sink sink;
	void *sink_ctx;
	bool self_change; /* registry changes caused by a job's own calls */
	/* the flash history (history.h), or NULL */
	struct history *history_db;
	unsigned replug_timeout_s; /* jobs_set_replug_timeout() */
};

static const struct timeout_def jobs_timeouts[] = {
    {"job_cancel_grace_ms", 5000,
     "how long a transport may take to stop after cancel before the job is ended anyway"},
    {0},
};

/* ---- names ------------------------------------------------------------- */

const char *job_state_name(enum job_state s)
{
	static const char *const names[] = {
	    [JOB_QUEUED] = "queued",
	    [JOB_WAITING_FOR_DEVICE] = "waiting-for-device",
	    [JOB_SWITCHING_MODE] = "switching-mode",
	    [JOB_PREFLIGHT] = "preflight",
	    [JOB_ERASING] = "erasing",
	    [JOB_WRITING] = "writing",
	    [JOB_REBOOTING] = "rebooting",
	    [JOB_VERIFYING] = "verifying",
	    [JOB_DONE] = "done",
	    [JOB_FAILED] = "failed",
	    [JOB_CANCELLED] = "cancelled",
	    [JOB_INTERRUPTED] = "interrupted",
	};
	return (unsigned)s <= JOB_INTERRUPTED ? names[s] : "?";
}

const char *job_result_name(enum job_result r)
{
	switch (r) {
	case JOB_RESULT_DONE:
		return "done";
	case JOB_RESULT_FAILED:
		return "failed";
	case JOB_RESULT_CANCELLED:
		return "cancelled";
	case JOB_RESULT_INTERRUPTED:
		return "interrupted";
	}
	return "?";
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void make_uuid(char out[37])
{
	uint8_t b[16];
	/* getrandom never blocks once the pool is initialised (always, after boot);
	 * the fallback keeps ids unique within a process at least. */
	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		static uint64_t counter;
		uint64_t t = (uint64_t)(now_s() * 1e6) ^ (uint64_t)getpid() << 40;
		counter++;
		memcpy(b, &t, 8);
		memcpy(b + 8, &counter, 8);
	}
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

/* ---- events ------------------------------------------------------------ */

static void emit(struct job *job, json_t *event)
{
	json_object_set_new(event, "job", json_string(job->id));
	if (job->jobs->sink)
		job->jobs->sink(job->jobs->sink_ctx, job, event);
	json_decref(event);
}

static void emit_record(struct job *job, const char *name)
{
	json_t *ev = wire_event_new(name);
	json_object_set_new(ev, "record", job_to_json(job));
	emit(job, ev);
}

/* How long the job waits in this state before it fails, in seconds (0 = no
 * limit or not a waiting state): the wait option, or the transport's
 * *_reenumerate_ms timeout while rebooting. */
static double wait_limit_s(const struct job *job)
{
	if (job->state == JOB_WAITING_FOR_DEVICE && job->replug_waiting)
		return job->jobs->replug_timeout_s;
	if (job->state == JOB_WAITING_FOR_DEVICE)
		return job->opts.wait_ms > 0 ? job->opts.wait_ms / 1000.0 : 0;
	if (job->state != JOB_REBOOTING || !job->ops || !job->ops->timeouts)
		return 0;
	for (const struct timeout_def *t = job->ops->timeouts; t->key; t++) {
		size_t n = strlen(t->key);
		if (n > 15 && strcmp(t->key + n - 15, "_reenumerate_ms") == 0)
			return timeout_ms(t->key) / 1000.0;
	}
	return 0;
}

static void progress_held_cb(evutil_socket_t fd, short what, void *arg);

static void emit_progress(struct job *job, const char *note, const char *message)
{
	job->progress_held = false;
	evtimer_del(job->progress_timer);
	json_t *ev = wire_event_new("job-progress");
	json_object_set_new(ev, "state", json_string(job_state_name(job->state)));
	json_object_set_new(ev, "phase", json_string(job_state_name(job->state)));
	json_object_set_new(ev, "done", json_integer((json_int_t)job->done));
	json_object_set_new(ev, "total", json_integer((json_int_t)job->total));
	if (job->total) {
		double elapsed = mono_s() - job->phase_t0;
		double rate = elapsed > 0 ? (double)(job->done - job->phase_done0) / elapsed : 0;
		json_object_set_new(ev, "percent",
				    json_integer((json_int_t)(job->done * 100 / job->total)));
		json_object_set_new(ev, "rate", json_integer((json_int_t)rate));
		json_object_set_new(ev, "eta_s",
				    rate > 0 ? json_real((double)(job->total - job->done) / rate)
					     : json_null());
	}
	if (note)
		json_object_set_new(ev, "note", json_string(note));
	if (message)
		json_object_set_new(ev, "message", json_string(message));
	if (job->step) {
		json_object_set_new(ev, "step", json_integer(job->step));
		json_object_set_new(ev, "steps", json_integer(job->steps));
		json_object_set_new(ev, "step_description", json_string(job->step_text));
	}
	/* Clients show "waiting for the device to come back (12/45 s)". */
	double limit_s = wait_limit_s(job);
	if (limit_s > 0)
		json_object_set_new(ev, "timeout_s", json_real(limit_s));
	emit(job, ev);
}

/* ---- scheduling -------------------------------------------------------- */

static void kick(struct jobs *jobs)
{
	event_active(jobs->kick, 0, 0);
}

static void bury(struct jobs *jobs, const struct transport_ops *ops, struct transport_run *run)
{
	if (!run)
		return;
	struct grave *g = calloc(1, sizeof(*g));
	if (!g) {
		/* Freeing now is worse than leaking under OOM only if the transport is
		 * still on the stack; prefer correctness of the stack. */
		log_error("out of memory: leaking a transport run");
		return;
	}
	g->ops = ops;
	g->run = run;
	g->next = jobs->graves;
	jobs->graves = g;
	kick(jobs);
}

static void set_device_job(struct jobs *jobs, struct device *dev, struct job *job)
{
	jobs->self_change = true;
	registry_set_job(jobs->reg, dev, job);
	jobs->self_change = false;
}

static void enter_state(struct job *job, enum job_state s)
{
	if (job->state == s)
		return;
	job->state = s;
	job->done = job->total = job->phase_done0 = 0;
	job->phase_t0 = mono_s();
	emit_progress(job, NULL, NULL);
}

static void finish(struct job *job, enum job_result result, const char *word, struct error *err)
{
	struct jobs *jobs = job->jobs;
	if (job->ended) {
		log_warning("job %s: ended twice (ignored)", job->id);
		error_clear(err);
		return;
	}
	if (job->progress_held)
		emit_progress(job, NULL, NULL); /* before job-ended: what was acknowledged */
	job->ended = true;
	job->result = result;
	job->ended_at = now_s();
	switch (result) {
	case JOB_RESULT_DONE:
		job->state = JOB_DONE;
		break;
	case JOB_RESULT_FAILED:
		job->state = JOB_FAILED;
		break;
	case JOB_RESULT_CANCELLED:
		job->state = JOB_CANCELLED;
		break;
	case JOB_RESULT_INTERRUPTED:
		job->state = JOB_INTERRUPTED;
		break;
	}
	snprintf(job->outcome, sizeof(job->outcome), "%s", word ? word : "");
	if (err && error_is_set(err))
		error_move(&job->error, err);
	else if (result != JOB_RESULT_DONE)
		error_set(&job->error, ERR_INTERNAL, "job ended as %s without a reason",
			  job_result_name(result));
	error_clear(err);
	evtimer_del(job->wait_timer);
	evtimer_del(job->cancel_timer);
	evtimer_del(job->replug_timer);
	job->replug_waiting = false;
	bury(jobs, job->ops, job->run);
	job->run = NULL;
	job_steps_stop(job);
	if (job->device && job->device->job == job)
		set_device_job(jobs, job->device, NULL);
	log_info("job %s: %s%s%s%s", job->id, job_result_name(result), job->outcome[0] ? " (" : "",
		 job->outcome, job->outcome[0] ? ")" : "");
	history_job_ended(jobs->history_db, job);
	json_t *ev = wire_event_new("job-ended");
	json_object_set_new(ev, "result", json_string(job_result_name(result)));
	json_object_set_new(ev, "outcome",
			    job->outcome[0] ? json_string(job->outcome) : json_null());
	if (result != JOB_RESULT_DONE)
		json_object_set_new(ev, "error", error_to_json(&job->error));
	json_object_set_new(ev, "record", job_to_json(job));
	emit(job, ev);
	kick(jobs);
}

static void fail(struct job *job, enum job_result result, struct error *err)
{
	finish(job, result, NULL, err);
}

bool job_start_step(struct job *job, const struct transport_ops *ops, const struct job_step *step,
		    struct error *err)
{
	job->ops = ops;
	if (step->kind == JOB_STEP_WRITE)
		job->writer = ops;
	job->in_start = true;
	job->step_ended_in_start = false;
	struct transport_run *run = ops->start(job, step, err);
	job->in_start = false;
	if (job->ended) {
		/* The transport ended the job from inside start() (benches' instant fakes). */
		bury(job->jobs, ops, run);
		error_clear(err);
		return true;
	}
	if (!run) {
		if (!error_is_set(err))
			error_set(err, ERR_INTERNAL, "the %s transport did not start", ops->name);
		return false;
	}
	if (job->step_ended_in_start) {
		/* The transport ended its step from inside start(). */
		log_warning("job %s: the %s transport ended its step inside start()", job->id,
			    ops->name);
		bury(job->jobs, ops, run);
		return true;
	}
	job->run = run;
	if (job->cancel_requested && ops->cancel)
		ops->cancel(run);
	return true;
}

static const struct transport_ops *pick_transport(struct jobs *jobs, const struct device *dev)
{
	for (size_t i = 0; jobs->transports[i]; i++)
		if (jobs->transports[i]->can_serve && jobs->transports[i]->can_serve(&dev->s))
			return jobs->transports[i];
	return NULL;
}

/*
 * The plan as far as the registry's facts tell (plan.h), for the job-started
 * record: the transport reads the device before the first byte and sets the
 * plan it runs (job_set_plan()), refusing there if it must.
 */
static void preliminary_plan(struct job *job, const struct device *dev)
{
	if (job->n_images == 0 || job->images_released || job->n_images > PREFLIGHT_MAX_IMAGES)
		return;
	struct plan *p = malloc(sizeof(*p));
	if (!p)
		return;
	struct preflight_input in[PREFLIGHT_MAX_IMAGES];
	for (unsigned i = 0; i < job->n_images; i++) {
		in[i].img = job->images[i]->img;
		in[i].name = job->names[i];
	}
	struct plan_options o = {
	    .force = job->opts.force, .rewrite = job->opts.rewrite, .mode = dev->s.mode};
	for (size_t i = 0; job->jobs->transports[i]; i++)
		for (int t = 0; t < PLAN_TRANSPORT_COUNT; t++)
			if (strcmp(job->jobs->transports[i]->name,
				   plan_transport_name((enum plan_transport)t)) == 0)
				o.transports |= 1u << t;
	struct error err;
	error_init(&err);
	if (plan_build(&dev->s.facts, in, job->n_images, &o, p, &err) == 0) {
		json_decref(job->plan);
		job->plan = plan_to_json(p);
		json_object_set_new(job->plan, "preliminary", json_true());
	}
	error_clear(&err);
	free(p);
}

static void run_on_device(struct job *job)
{
	struct jobs *jobs = job->jobs;
	struct device *dev = job->device;
	evtimer_del(job->wait_timer);
	set_device_job(jobs, dev, job);
	job->started = now_s();
	const struct transport_ops *ops = pick_transport(jobs, dev);
	if (!ops) {
		struct error err;
		error_init(&err);
		error_set(&err, ERR_NOT_FLASHABLE_HERE,
			  "no transport can work on a device in %s mode",
			  device_mode_name(dev->s.mode));
		error_detail_str(&err, "reason", "no transport for this mode");
		error_detail_str(&err, "device", dev->s.key);
		fail(job, JOB_RESULT_FAILED, &err);
		return;
	}
	job->ops = ops; /* the job-started record names the transport that took it */
	job->facts_before = dev->s.facts;
	job->have_before = true;
	preliminary_plan(job, dev);
	emit_record(job, "job-started");
	history_job_started(jobs->history_db, job);
	job_steps_run(job);
}

bool jobs_target_matches(enum wire_target_kind kind, const char *value, const struct device *dev)
{
	switch (kind) {
	case WIRE_TARGET_ANY:
		return true;
	case WIRE_TARGET_DEVICE:
		return strcmp(dev->s.key, value) == 0 ||
		       strcasecmp(dev->s.facts.device_id, value) == 0;
	case WIRE_TARGET_PORT:
		return dev->s.tty[0] && strcmp(dev->s.tty, value) == 0;
	case WIRE_TARGET_USB:
		return strcmp(dev->s.port_path, value) == 0;
	case WIRE_TARGET_PLATFORM: {
		const struct platform *p = platform_by_name(value);
		return p && dev->s.facts.platform == p;
	}
	}
	return false;
}

/* A device for a job that has none yet: the first attached, matching device
 * that no other waiting job has claimed. */
static struct device *find_device_for(struct jobs *jobs, struct job *job)
{
	for (struct device *d = registry_first(jobs->reg); d; d = d->next) {
		if (!registry_device_ready(d) ||
		    !jobs_target_matches(job->target, job->target_value, d))
			continue;
		bool claimed = false;
		for (struct job *o = jobs->list; o && !claimed; o = o->next)
			claimed = o != job && !o->ended && o->device == d;
		if (!claimed)
			return d;
	}
	return NULL;
}

static void wait_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *job = arg;
	struct error err;
	if (job->ended || job->run)
		return;
	error_init(&err);
	double waited = (double)job->opts.wait_ms / 1000.0;
	char target[WIRE_TARGET_MAX + 32];
	if (job->target == WIRE_TARGET_ANY)
		snprintf(target, sizeof(target), "any device");
	else
		snprintf(target, sizeof(target), "%s %s", wire_target_kind_name(job->target),
			 job->target_value);
	const struct device *no_tty = NULL;
	for (const struct device *d = registry_first(job->jobs->reg); d && !no_tty; d = d->next)
		if (d->s.present && !registry_device_ready(d) &&
		    jobs_target_matches(job->target, job->target_value, d))
			no_tty = d;
	if (no_tty) {
		error_set(&err, ERR_TIMED_OUT,
			  "%s is attached, but its serial port did not appear within %.1f s, so "
			  "no transport could take it",
			  no_tty->s.key, waited);
		error_hint(&err, "check that the cdc_acm kernel module is loaded and that no "
				 "udev rule hides the port, or put the device in DFU mode");
	} else {
		error_set(&err, ERR_TIMED_OUT, "no device matching %s appeared within %.1f s",
			  target, waited);
		error_hint(&err,
			   "connect the device (listening or DFU mode) or wait longer (--wait=S)");
	}
	error_detail_str(&err, "phase", "waiting-for-device");
	error_detail_str(&err, "target", target);
	error_detail_int(&err, "waited_s", (long long)(waited + 0.5));
	error_detail_int(&err, "timeout_ms", job->opts.wait_ms);
	fail(job, JOB_RESULT_FAILED, &err);
}

static void resume_after_replug(struct job *job);

static void schedule_one(struct jobs *jobs, struct job *job)
{
	if (job->replug_waiting) {
		struct device *d = job->device;
		if (d && d->s.present && registry_device_ready(d) && pick_transport(jobs, d) &&
		    (job->replug_seen_gone || mono_s() - job->replug_t0 >= JOBS_REPLUG_SETTLE_S))
			resume_after_replug(job);
		return;
	}
	if (job->run || job->ops ||
	    (job->state != JOB_QUEUED && job->state != JOB_WAITING_FOR_DEVICE))
		return;
	if (!job->device)
		job->device = find_device_for(jobs, job);
	if (job->device) {
		snprintf(job->device_key, sizeof(job->device_key), "%s", job->device->s.key);
		if (job->device->s.present && !job->device->job) {
			/* A job that waits also waits for the tty of a CDC device. */
			if (registry_device_ready(job->device) || job->opts.wait_ms == 0) {
				run_on_device(job);
				return;
			}
		} else if (job->device->s.present) {
			/* Another job holds the device: it has appeared, so the wait is over. */
			evtimer_del(job->wait_timer);
			enter_state(job, JOB_QUEUED);
			return;
		}
	}
	if (job->opts.wait_ms == 0) {
		struct error err;
		error_init(&err);
		error_set(&err, ERR_DEVICE_NOT_FOUND, "the device %s is not attached",
			  job->device_key[0] ? job->device_key : job->target_value);
		error_detail_str(&err, "target",
				 job->device_key[0] ? job->device_key : job->target_value);
		fail(job, JOB_RESULT_FAILED, &err);
		return;
	}
	enter_state(job, JOB_WAITING_FOR_DEVICE);
	if (!job->waiting_armed && job->opts.wait_ms > 0) {
		struct timeval tv = {job->opts.wait_ms / 1000, (job->opts.wait_ms % 1000) * 1000};
		evtimer_add(job->wait_timer, &tv);
		job->waiting_armed = true;
	}
}

static void job_free(struct job *job)
{
	if (!job)
		return;
	if (!job->images_released)
		for (unsigned i = 0; i < job->n_images; i++)
			image_cache_put(job->jobs->images, job->images[i]);
	if (job->wait_timer)
		event_free(job->wait_timer);
	if (job->cancel_timer)
		event_free(job->cancel_timer);
	if (job->progress_timer)
		event_free(job->progress_timer);
	if (job->replug_timer)
		event_free(job->replug_timer);
	error_clear(&job->replug_err);
	error_clear(&job->error);
	json_decref(job->plan);
	json_decref(job->partial);
	job_steps_free(job->driver);
	free(job);
}

/* Ended jobs beyond the history limit are dropped, oldest first. */
static void trim_history(struct jobs *jobs)
{
	unsigned ended = 0;
	for (struct job *j = jobs->list; j; j = j->next)
		ended += j->ended;
	for (struct job **pp = &jobs->list; *pp && ended > jobs->history;) {
		struct job *j = *pp;
		if (j->ended && j->images_released) {
			*pp = j->next;
			job_free(j);
			ended--;
		} else {
			pp = &j->next;
		}
	}
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct jobs *jobs = arg;
	/* Runs first: a finished run may still use its job's images. */
	while (jobs->graves) {
		struct grave *g = jobs->graves;
		jobs->graves = g->next;
		if (g->ops && g->ops->free)
			g->ops->free(g->run);
		free(g);
	}
	for (struct job *j = jobs->list; j; j = j->next) {
		if (j->ended && !j->images_released) {
			for (unsigned i = 0; i < j->n_images; i++)
				image_cache_put(jobs->images, j->images[i]);
			j->images_released = true;
		}
	}
	for (struct job *j = jobs->list; j; j = j->next)
		if (!j->ended)
			schedule_one(jobs, j);
	trim_history(jobs);
}

/* ---- public: lifecycle ------------------------------------------------- */

void jobs_register_timeouts(const struct transport_ops *const *transports)
{
	timeouts_register(jobs_timeouts);
	for (size_t i = 0; transports[i]; i++)
		timeouts_register(transports[i]->timeouts);
}

struct jobs *jobs_new(struct event_base *base, struct registry *reg, struct image_cache *images,
		      const struct transport_ops *const *transports, unsigned max_jobs,
		      unsigned history)
{
	struct jobs *jobs = calloc(1, sizeof(*jobs));
	if (!jobs)
		return NULL;
	jobs->base = base;
	jobs->reg = reg;
	jobs->images = images;
	jobs->transports = transports;
	jobs->max_jobs = max_jobs;
	jobs->history = history;
	jobs->replug_timeout_s = 30;
	jobs->kick = event_new(base, -1, 0, kick_cb, jobs);
	if (!jobs->kick) {
		log_error("out of memory making the job queue");
		free(jobs);
		return NULL;
	}
	jobs_register_timeouts(transports);
	/* Each transport's shared state (transport.h init()), made once, here. */
	for (size_t i = 0; transports && transports[i]; i++) {
		if (!transports[i]->init)
			continue;
		struct error err;
		error_init(&err);
		if (transports[i]->init(base, &err) < 0)
			log_error("the %s transport could not start: %s", transports[i]->name,
				  err.message);
		error_clear(&err);
	}
	return jobs;
}

void jobs_free(struct jobs *jobs)
{
	if (!jobs)
		return;
	for (struct job *j = jobs->list; j; j = j->next) {
		if (j->ended)
			continue;
		struct error err;
		error_init(&err);
		error_set(&err, ERR_INTERRUPTED, "the daemon stopped while the job was %s",
			  job_state_name(j->state));
		error_detail_str(&err, "phase", job_state_name(j->state));
		error_detail_str(&err, "reason", "daemon stopped");
		fail(j, JOB_RESULT_INTERRUPTED, &err);
	}
	while (jobs->graves) {
		struct grave *g = jobs->graves;
		jobs->graves = g->next;
		if (g->ops && g->ops->free)
			g->ops->free(g->run);
		free(g);
	}
	while (jobs->list) {
		struct job *j = jobs->list;
		jobs->list = j->next;
		job_free(j);
	}
	for (size_t i = 0; jobs->transports && jobs->transports[i]; i++)
		if (jobs->transports[i]->exit)
			jobs->transports[i]->exit();
	event_free(jobs->kick);
	free(jobs);
}

void jobs_set_sink(struct jobs *jobs, jobs_sink fn, void *ctx)
{
	jobs->sink = fn;
	jobs->sink_ctx = ctx;
}

size_t jobs_active_count(const struct jobs *jobs)
{
	size_t n = 0;
	for (const struct job *j = jobs->list; j; j = j->next)
		n += !j->ended;
	return n;
}

static void cancel_grace_cb(evutil_socket_t fd, short what, void *arg);
static void replug_tick_cb(evutil_socket_t fd, short what, void *arg);

/* ---- fair share: one uid's jobs ---------------------------------------- */

void jobs_set_uid_limits(struct jobs *jobs, unsigned per_uid, unsigned waiting_per_uid)
{
	jobs->per_uid = per_uid;
	jobs->waiting_per_uid = waiting_per_uid;
}

bool jobs_client_has_jobs(const struct jobs *jobs, unsigned long client_id)
{
	for (const struct job *j = jobs->list; j; j = j->next)
		if (!j->ended && j->client_id == client_id)
			return true;
	return false;
}

/* Whether the uid may have one more job (waiting: one that waits for a device). */
static bool uid_share_left(const struct jobs *jobs, uid_t uid, bool waiting, struct error *err)
{
	unsigned all = 0, waits = 0;
	for (const struct job *j = jobs->list; j; j = j->next) {
		if (j->ended || j->uid != uid)
			continue;
		all++;
		waits += j->opts.wait_ms != 0;
	}
	if (jobs->per_uid && all >= jobs->per_uid) {
		error_set(err, ERR_TOO_MANY_JOBS, "uid %u already has %u jobs", (unsigned)uid, all);
		error_detail_int(err, "limit", jobs->per_uid);
		error_detail_int(err, "uid", uid);
		return false;
	}
	if (waiting && jobs->waiting_per_uid && waits >= jobs->waiting_per_uid) {
		error_set(err, ERR_TOO_MANY_JOBS, "uid %u already has %u jobs waiting for a device",
			  (unsigned)uid, waits);
		error_detail_int(err, "limit", jobs->waiting_per_uid);
		error_detail_int(err, "uid", uid);
		error_detail_str(err, "kind", "waiting");
		return false;
	}
	return true;
}

struct job *jobs_create(struct jobs *jobs, struct job_request *req, struct error *err)
{
	struct job *job = NULL;
	if (jobs_active_count(jobs) >= jobs->max_jobs) {
		error_set(err, ERR_TOO_MANY_JOBS, "the daemon already has %u jobs", jobs->max_jobs);
		error_detail_int(err, "limit", jobs->max_jobs);
	} else if (!uid_share_left(jobs, req->uid, req->opts.wait_ms != 0, err)) {
		/* err is set: one uid may not fill the table for everyone */
	} else if (!(job = calloc(1, sizeof(*job)))) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
	}
	if (!job) {
		for (unsigned i = 0; i < req->n_images; i++)
			image_cache_put(jobs->images, req->images[i]);
		req->n_images = 0;
		return NULL;
	}
	job->jobs = jobs;
	make_uuid(job->id);
	job->state = JOB_QUEUED;
	job->target = req->target;
	snprintf(job->target_value, sizeof(job->target_value), "%s", req->target_value);
	job->all = req->all;
	job->device = req->device;
	if (job->device)
		snprintf(job->device_key, sizeof(job->device_key), "%s", job->device->s.key);
	job->opts = req->opts;
	job->cancel_on_disconnect = req->cancel_on_disconnect;
	job->client_id = req->client_id;
	job->uid = req->uid;
	job->gid = req->gid;
	job->pid = req->pid;
	snprintf(job->rule, sizeof(job->rule), "%s", req->rule);
	snprintf(job->label, sizeof(job->label), "%s", req->label);
	job->n_images = req->n_images;
	for (unsigned i = 0; i < req->n_images; i++) {
		job->images[i] = req->images[i];
		memcpy(job->names[i], req->names[i], sizeof(job->names[i]));
		memcpy(job->sha256[i], req->images[i]->sha256_hex, sizeof(job->sha256[i]));
		job->sizes[i] = req->images[i]->bytes;
	}
	req->n_images = 0;
	job->created = now_s();
	job->phase_t0 = mono_s();
	job->wait_timer = evtimer_new(jobs->base, wait_cb, job);
	job->cancel_timer = evtimer_new(jobs->base, cancel_grace_cb, job);
	job->progress_timer = evtimer_new(jobs->base, progress_held_cb, job);
	job->replug_timer = evtimer_new(jobs->base, replug_tick_cb, job);
	error_init(&job->replug_err);
	if (!job->wait_timer || !job->cancel_timer || !job->progress_timer || !job->replug_timer) {
		job_free(job); /* gives the images back */
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	struct job **pp = &jobs->list;
	while (*pp)
		pp = &(*pp)->next;
	*pp = job;
	return job;
}

void jobs_submit(struct jobs *jobs, struct job *job)
{
	log_info("job %s: queued by uid %u (%u image%s)", job->id, (unsigned)job->uid,
		 job->n_images, job->n_images == 1 ? "" : "s");
	emit_record(job, "job-queued");
	kick(jobs);
}

struct job *jobs_find(struct jobs *jobs, const char *id)
{
	for (struct job *j = jobs->list; j; j = j->next)
		if (strcasecmp(j->id, id) == 0)
			return j;
	return NULL;
}

struct job *jobs_holding_device(struct jobs *jobs, const struct device *dev)
{
	if (dev->job)
		return dev->job;
	for (struct job *j = jobs->list; j; j = j->next)
		if (!j->ended && j->device == dev)
			return j;
	return NULL;
}

static void cancelled_error(struct job *job, struct error *err, const char *device_state)
{
	error_set(err, ERR_CANCELLED, "the job was cancelled while %s", job_state_name(job->state));
	error_detail_str(err, "phase", job_state_name(job->state));
	error_detail_int(err, "by_uid", job->cancel_by);
	if (device_state)
		error_detail_str(err, "device_state", device_state);
}

static void cancel_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *job = arg;
	struct error err;
	if (job->ended)
		return;
	error_init(&err);
	log_warning("job %s: the %s transport did not stop within %u ms; ending the job", job->id,
		    job->ops ? job->ops->name : "?", timeout_ms("job_cancel_grace_ms"));
	cancelled_error(job, &err, "unknown");
	fail(job, JOB_RESULT_CANCELLED, &err);
}

void jobs_cancel(struct jobs *jobs, struct job *job, uid_t by_uid)
{
	(void)jobs;
	if (job->ended || job->cancel_requested)
		return;
	job->cancel_requested = true;
	job->cancel_by = by_uid;
	log_info("job %s: cancel requested by uid %u in state %s", job->id, (unsigned)by_uid,
		 job_state_name(job->state));
	if (!job->run && job_steps_cancel(job))
		return; /* the core's wait past the point of no return ended the job */
	if (!job->run) {
		/* Between the steps: nothing is in flight. */
		struct error err;
		error_init(&err);
		cancelled_error(job, &err, job->ops ? "unknown" : "untouched");
		fail(job, JOB_RESULT_CANCELLED, &err);
		return;
	}
	unsigned ms = timeout_ms("job_cancel_grace_ms");
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(job->cancel_timer, &tv);
	if (job->ops->cancel)
		job->ops->cancel(job->run);
}

void jobs_on_device(struct jobs *jobs, struct device *dev, enum registry_change change)
{
	if (jobs->self_change)
		return;
	struct job *job = dev->job;
	if (job && job->replug_waiting && job->device == dev) {
		if (change == REGISTRY_REMOVED)
			job->replug_seen_gone = true;
		else
			kick(jobs);
		return;
	}
	if (job && !job->ended && job->device == dev) {
		enum device_event ev = change == REGISTRY_ADDED	    ? DEVICE_EVENT_BACK
				       : change == REGISTRY_REMOVED ? DEVICE_EVENT_GONE
								    : DEVICE_EVENT_CHANGED;
		if (job->run && job->ops->device_event)
			job->ops->device_event(job->run, ev, &dev->s);
		if (!job->ended)
			job_steps_device_event(job, ev, &dev->s);
	}
	if (change != REGISTRY_REMOVED)
		kick(jobs);
}

void jobs_client_gone(struct jobs *jobs, unsigned long client_id)
{
	for (struct job *j = jobs->list; j; j = j->next)
		if (!j->ended && j->cancel_on_disconnect && j->client_id == client_id)
			jobs_cancel(jobs, j, j->uid);
}

/* ---- the replug rule ---------------------------------------------------- */

/*
 * A device that leaves mid-job (unplugged, reset) is waited for under its
 * identity, on any port, for replug_timeout_s.  The transport reports the
 * leave as device-gone; every point a transport can report it from is a safe
 * point to restart from, because a restarted transport plans again against
 * what the device holds: files it marked written (job_mark_written()) and
 * modules the device already has intact are not written again, and the
 * module that was being written is erased and written from its start (DFU),
 * or sent again from the YMODEM header (serial).  The job keeps its id and
 * its one history record: it is resumed, never duplicated.
 */

void jobs_set_replug_timeout(struct jobs *jobs, unsigned seconds)
{
	jobs->replug_timeout_s = seconds;
}

/* What was and was not written, in the error's message and details. */
static void device_gone_facts(struct job *job, struct error *err, unsigned waited_s)
{
	char done[512] = "", todo[512] = "";
	json_t *written = json_array(), *not_written = json_array();
	for (unsigned i = 0; i < job->n_images; i++) {
		bool w = job->written[i];
		char *list = w ? done : todo;
		size_t n = strlen(list);
		snprintf(list + n, 512 - n, "%s%s", n ? ", " : "", job->names[i]);
		json_array_append_new(w ? written : not_written, json_string(job->names[i]));
	}
	char where[sizeof(job->replug_where)];
	if (job->replug_where[0])
		snprintf(where, sizeof(where), "%s", job->replug_where);
	else if (job->step)
		snprintf(where, sizeof(where), "step %u of %u (%s)", job->step, job->steps,
			 job->step_text);
	else
		snprintf(where, sizeof(where), "%s", job_state_name(job->state));
	char msg[sizeof(err->message) + 1024 + 384];
	if (waited_s)
		snprintf(msg, sizeof(msg),
			 "the device left during %s and did not come back within %u s; written: "
			 "%s; not written or incomplete: %s (%llu bytes sent in all). %s",
			 where, waited_s, done[0] ? done : "nothing", todo[0] ? todo : "nothing",
			 (unsigned long long)job->bytes_written, err->message);
	else
		snprintf(msg, sizeof(msg),
			 "the device left during %s; written: %s; not written or incomplete: %s "
			 "(%llu bytes sent in all). %s",
			 where, done[0] ? done : "nothing", todo[0] ? todo : "nothing",
			 (unsigned long long)job->bytes_written, err->message);
	size_t len = strnlen(msg, sizeof(err->message) - 1); /* the facts first, then the cause */
	memcpy(err->message, msg, len);
	err->message[len] = '\0';
	error_detail_json(err, "written", written);
	error_detail_json(err, "not_written", not_written);
	error_detail_str(err, "step", where);
	if (waited_s)
		error_detail_int(err, "waited_s", waited_s);
}

static void replug_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *job = arg;
	if (job->ended || !job->replug_waiting)
		return;
	unsigned limit = job->jobs->replug_timeout_s;
	if (mono_s() - job->replug_t0 >= limit) {
		struct error err;
		error_init(&err);
		error_move(&err, &job->replug_err);
		device_gone_facts(job, &err, limit);
		job->replug_waiting = false;
		fail(job, JOB_RESULT_FAILED, &err);
		return;
	}
	struct timeval tv = {1, 0};
	evtimer_add(job->replug_timer, &tv);
	kick(job->jobs);
}

/* The transport reported the device gone: wait for it instead of failing, if
 * the rule applies.  Takes err over when it returns true. */
static bool wait_for_replug(struct job *job, struct error *err)
{
	struct jobs *jobs = job->jobs;
	if (job->cancel_requested || !job->device || !jobs->replug_timeout_s ||
	    (job->n_images == 0 && job->opts.dry_run) /* a probe */ || job->images_released ||
	    job->resumes >= JOBS_MAX_RESUMES)
		return false;
	if (job->step)
		snprintf(job->replug_where, sizeof(job->replug_where), "step %u of %u (%s)",
			 job->step, job->steps, job->step_text);
	else
		snprintf(job->replug_where, sizeof(job->replug_where), "%s",
			 job_state_name(job->state));
	error_clear(&job->replug_err);
	error_move(&job->replug_err, err);
	error_clear(err);
	job_log(job, LOG_WARNING, "the device left during %s (%s); waiting up to %u s for it",
		job->replug_where, job->replug_err.message, jobs->replug_timeout_s);
	bury(jobs, job->ops, job->run);
	job->run = NULL;
	job_steps_stop(job);
	job->replug_waiting = true;
	job->replug_seen_gone = !job->device->s.present;
	job->replug_t0 = mono_s();
	enter_state(job, JOB_WAITING_FOR_DEVICE);
	job_note(job, "device-left",
		 "the device left during %s; waiting up to %u s for it to come back (on any "
		 "port)",
		 job->replug_where, jobs->replug_timeout_s);
	struct timeval tv = {1, 0};
	evtimer_add(job->replug_timer, &tv);
	return true;
}

static void resume_after_replug(struct job *job)
{
	struct device *d = job->device;
	job->replug_waiting = false;
	evtimer_del(job->replug_timer);
	error_clear(&job->replug_err);
	job->resumes++;
	job_note(job, "device-back",
		 "the device is back (%s%s%s); resuming from %s: what is written and intact is "
		 "not written again",
		 d->s.port_path[0] ? "port " : "", d->s.port_path, d->s.tty[0] ? ", tty" : "",
		 job->replug_where);
	job->replug_where[0] = '\0';
	job_steps_run(job);
}

/* ---- public: records --------------------------------------------------- */

static json_t *image_json(const struct job *job, unsigned i)
{
	json_t *mods = json_array();
	const struct image *img = job->images_released ? NULL : job->images[i]->img;
	for (unsigned m = 0; img && m < img->n_modules; m++) {
		const struct image_module *mod = &img->modules[m];
		/* An asset names no platform: both null, never "core" (image.h). */
		const struct platform *p = image_module_platform(mod);
		char desc[160];
		image_module_describe(mod, desc, sizeof(desc));
		json_array_append_new(
		    mods,
		    json_pack("{s:s, s:i, s:i, s:s?, s:o, s:i, s:i, s:s}", "function",
			      module_function_name(mod->function), "index", mod->index, "version",
			      mod->version, "platform", p ? p->name : NULL, "platform_id",
			      image_module_has_platform(mod) ? json_integer(mod->platform_id)
							     : json_null(),
			      "start", mod->start, "end", mod->end, "description", desc));
	}
	return json_pack("{s:s, s:s, s:I, s:o}", "name", job->names[i], "sha256", job->sha256[i],
			 "size", (json_int_t)job->sizes[i], "modules", mods);
}

json_t *job_to_json(const struct job *job)
{
	json_t *images = json_array();
	for (unsigned i = 0; i < job->n_images; i++)
		json_array_append_new(images, image_json(job, i));
	json_t *o = json_pack(
	    "{s:s, s:s, s:s?, s:s?, s:s?, s:{s:s, s:s?, s:b}, s:o, s:{s:b, s:b, s:b, s:b, s:o},"
	    " s:{s:i, s:i, s:i}, s:f, s:o, s:o, s:s?, s:{s:I, s:I}}",
	    "id", job->id, "state", job_state_name(job->state), "result",
	    job->ended ? job_result_name(job->result) : NULL, "outcome",
	    job->outcome[0] ? job->outcome : NULL, "device",
	    job->device_key[0] ? job->device_key : NULL, "target", "kind",
	    wire_target_kind_name(job->target), "value",
	    job->target_value[0] ? job->target_value : NULL, "all", job->all, "images", images,
	    "options", "force", job->opts.force, "verify", job->opts.verify, "dry-run",
	    job->opts.dry_run, "detach", job->opts.detach, "wait",
	    job->opts.wait_ms < 0 ? json_true() : json_real((double)job->opts.wait_ms / 1000.0),
	    "owner", "uid", (int)job->uid, "gid", (int)job->gid, "pid", (int)job->pid, "created",
	    job->created, "started", job->started ? json_real(job->started) : json_null(), "ended",
	    job->ended ? json_real(job->ended_at) : json_null(), "transport",
	    job->writer ? job->writer->name
	    : job->ops	? job->ops->name
			: NULL,
	    "progress", "done", (json_int_t)job->done, "total", (json_int_t)job->total);
	if (!o)
		return json_pack("{s:s}", "id", job->id);
	json_object_set_new(o, "error",
			    error_is_set(&job->error) ? error_to_json(&job->error) : json_null());
	if (job->plan)
		json_object_set(o, "plan", job->plan);
	json_object_set_new(o, "rule", job->rule[0] ? json_string(job->rule) : json_null());
	json_object_set_new(o, "label", job->label[0] ? json_string(job->label) : json_null());
	if (job->partial)
		json_object_set(o, "partial", job->partial);
	return o;
}

json_t *jobs_list_json(struct jobs *jobs)
{
	json_t *a = json_array();
	for (struct job *j = jobs->list; j; j = j->next) {
		json_t *o = job_to_json(j);
		json_object_del(o, "plan"); /* a list stays small; the job's events carry it */
		json_array_append_new(a, o);
	}
	return a;
}

enum job_state job_state(const struct job *job)
{
	return job->state;
}

bool job_ended(const struct job *job)
{
	return job->ended;
}

uid_t job_owner_uid(const struct job *job)
{
	return job->uid;
}

const struct error *job_error(const struct job *job)
{
	return &job->error;
}

const char *job_rule(const struct job *job)
{
	return job->rule;
}

const char *job_label(const struct job *job)
{
	return job->label;
}

/* ---- transport.h: what transports call --------------------------------- */

struct event_base *job_event_base(const struct job *job)
{
	return job->jobs->base;
}

const char *job_id(const struct job *job)
{
	return job->id;
}

const struct job_options *job_options(const struct job *job)
{
	return &job->opts;
}

size_t job_image_count(const struct job *job)
{
	return job->n_images;
}

const struct image *job_image(const struct job *job, size_t i)
{
	return i < job->n_images && !job->images_released ? job->images[i]->img : NULL;
}

const char *job_image_name(const struct job *job, size_t i)
{
	return i < job->n_images ? job->names[i] : "";
}

const struct device_snapshot *job_device(const struct job *job)
{
	static const struct device_snapshot none;
	return job->device ? &job->device->s : &none;
}

void job_set_state(struct job *job, enum job_state state)
{
	if (job->ended)
		return;
	/* Only the transport's own states; the terminal ones go through job_finish(). */
	if (state < JOB_SWITCHING_MODE || state > JOB_VERIFYING) {
		log_warning("job %s: transport asked for state %s (ignored)", job->id,
			    job_state_name(state));
		return;
	}
	enter_state(job, state);
}

/* Bytes written: per writing phase, from its first report (a transport may
 * count from 0 per module or cumulatively over the job) to its highest. */
static void count_written(struct job *job, uint64_t done)
{
	if (job->state != JOB_WRITING)
		return;
	if (job->total == 0) { /* first report since enter_state() */
		job->write_base = done;
		job->write_sum0 = job->bytes_written;
	}
	if (done > job->write_base && job->write_sum0 + done - job->write_base > job->bytes_written)
		job->bytes_written = job->write_sum0 + done - job->write_base;
}

static void progress_held_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job *job = arg;
	if (job->ended || !job->progress_held)
		return;
	job->last_emit = mono_s();
	emit_progress(job, NULL, NULL);
}

void job_progress(struct job *job, uint64_t done, uint64_t total)
{
	if (job->ended)
		return;
	count_written(job, done);
	job->done = done;
	job->total = total;
	double t = mono_s();
	double wait_s = job->last_emit + JOBS_PROGRESS_INTERVAL_MS / 1000.0 - t;
	if (done == total || wait_s <= 0) {
		job->last_emit = t;
		emit_progress(job, NULL, NULL);
	} else if (!job->progress_held) {
		job->progress_held = true;
		struct timeval tv = {0, (suseconds_t)(wait_s * 1e6) + 1};
		evtimer_add(job->progress_timer, &tv);
	}
}

void job_note(struct job *job, const char *note, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (job->ended)
		return;
	log_info("job %s: %s: %s", job->id, note, msg);
	emit_progress(job, note, msg);
}

void job_set_plan(struct job *job, json_t *plan, const char *summary)
{
	json_decref(job->plan);
	job->plan = plan;
	if (job->ended || !plan)
		return;
	log_info("job %s: plan: %s", job->id, summary ? summary : "");
	json_t *ev = wire_event_new("job-plan");
	json_object_set_new(ev, "state", json_string(job_state_name(job->state)));
	json_object_set_new(ev, "message", json_string(summary ? summary : ""));
	json_object_set(ev, "plan", plan);
	emit(job, ev);
}

void job_mark_written(struct job *job, size_t i)
{
	if (i < job->n_images && i < WIRE_IMAGES_MAX)
		job->written[i] = true;
}

bool job_image_written(const struct job *job, size_t i)
{
	return i < job->n_images && i < WIRE_IMAGES_MAX && job->written[i];
}

void job_set_step(struct job *job, unsigned step, unsigned steps, const char *description)
{
	if (job->ended)
		return;
	job->step = step;
	job->steps = steps;
	snprintf(job->step_text, sizeof(job->step_text), "%s", description ? description : "");
	if (step)
		log_info("job %s: step %u of %u: %s", job->id, step, steps, job->step_text);
}

void job_update_facts(struct job *job, const struct device_facts *facts)
{
	if (!job->device)
		return;
	job->jobs->self_change = true;
	registry_update_facts(job->jobs->reg, job->device, facts);
	job->jobs->self_change = false;
	if (!job->bytes_written) {
		job->facts_before = job->device->s.facts;
		job->have_before = true;
	} else {
		job->facts_after = job->device->s.facts;
		job->have_after = true;
	}
}

void job_set_device_mode(struct job *job, enum device_mode mode)
{
	if (!job->device)
		return;
	job->jobs->self_change = true;
	registry_set_mode(job->jobs->reg, job->device, mode);
	job->jobs->self_change = false;
}

void job_finish(struct job *job, enum job_result result, const char *result_word, struct error *err)
{
	if (result == JOB_RESULT_INTERRUPTED)
		result = JOB_RESULT_FAILED; /* only the core interrupts */
	if (result == JOB_RESULT_CANCELLED && err && !error_is_set(err))
		cancelled_error(job, err, "unknown");
	if (result == JOB_RESULT_FAILED && err && err->code == ERR_DEVICE_GONE && !job->ended) {
		if (wait_for_replug(job, err))
			return;
		device_gone_facts(job, err, 0);
	}
	finish(job, result, result_word, err);
}

/* What a device does at its next boot with a module that is not whole: without a
 * valid system part the bootloader stays in DFU mode (is_application_valid() in
 * Device OS bootloader/src/main.c); an application that fails its checks is not
 * run and the device runs safe mode.  A YMODEM transfer lands in the OTA region,
 * validated as a whole before anything is applied (fetch_module() in Device OS
 * hal/src/nRF52840/ota_module.cpp and hal/src/stm32/ota_module.cpp). */
static const char *next_boot_with(const struct job_partial *p)
{
	if (p->staged)
		return "the device keeps the firmware it runs: the transfer went into its OTA "
		       "staging area, which Device OS applies only after a complete, valid "
		       "transfer";
	switch (p->function) {
	case MODULE_FUNCTION_SYSTEM:
	case MODULE_FUNCTION_MONO:
		return "the bootloader finds no valid Device OS and stays in DFU mode (blinking "
		       "yellow)";
	case MODULE_FUNCTION_USER:
		return "Device OS finds the application invalid and runs safe mode (breathing "
		       "magenta)";
	default:
		return "the device may not start";
	}
}

void job_set_partial(struct job *job, const struct job_partial *p)
{
	if (job->ended || p->image >= job->n_images)
		return;
	char module[64];
	snprintf(module, sizeof(module), "%s %u", module_function_phrase(p->function), p->index);
	json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:s}", "file",
			      job->names[p->image], "module", module, "module_function",
			      module_function_name(p->function), "index", p->index, "state",
			      p->staged	   ? "staged"
			      : p->erasing ? "partly-erased"
					   : "partly-written",
			      "bytes_written", (json_int_t)p->bytes_written, "size",
			      (json_int_t)p->size, "next_boot", next_boot_with(p));
	if (!o)
		return; /* out of memory: the error still says what happened */
	if (!p->staged) {
		json_object_set_new(o, "start", json_integer(p->start));
		json_object_set_new(o, "end", json_integer(p->end));
		json_object_set_new(o, "address", json_integer(p->address));
	}
	if (p->chunk >= 0)
		json_object_set_new(o, "chunk", json_integer(p->chunk));
	json_decref(job->partial);
	job->partial = o;
}

void job_step_done(struct job *job, const struct job_step_result *res, struct error *err)
{
	if (job->ended) {
		if (res && res->keep && job->ops && job->ops->keep_free)
			job->ops->keep_free(res->keep); /* no step follows */
		error_clear(err);
		return;
	}
	if (job->in_start)
		job->step_ended_in_start = true;
	bury(job->jobs, job->ops, job->run);
	job->run = NULL;
	job_steps_done(job, res, err);
}

void job_step_image(struct job *job, size_t k)
{
	if (!job->ended)
		job_steps_image(job, k);
}

void job_step_image_written(struct job *job, size_t k)
{
	if (!job->ended)
		job_steps_image_written(job, k);
}

const char *job_step_kind_name(enum job_step_kind k)
{
	switch (k) {
	case JOB_STEP_READ:
		return "read";
	case JOB_STEP_WRITE:
		return "write";
	case JOB_STEP_VERIFY:
		return "verify";
	case JOB_STEP_ENTER_DFU:
		return "enter-dfu";
	case JOB_STEP_ENTER_LISTENING:
		return "enter-listening";
	case JOB_STEP_CHECK:
		return "check";
	}
	return "?";
}

const struct transport_ops *const *job_transports(const struct job *job)
{
	static const struct transport_ops *const none[] = {NULL};
	return job->jobs->transports ? job->jobs->transports : none;
}

const struct transport_ops *job_transport(const struct job *job, const char *name)
{
	for (const struct transport_ops *const *t = job_transports(job); *t; t++)
		if (strcmp((*t)->name, name) == 0)
			return *t;
	return NULL;
}

const struct transport_ops *job_ops(const struct job *job)
{
	return job->ops;
}

bool job_cancel_requested(const struct job *job)
{
	return job->cancel_requested;
}

struct job_steps **job_steps_slot(struct job *job)
{
	return &job->driver;
}

void job_log(const struct job *job, int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_msg(level, "job %s: %s", job->id, msg);
}

/* ---- jobs.h: the history ----------------------------------------------- */

void jobs_set_history(struct jobs *jobs, struct history *h)
{
	jobs->history_db = h;
}

const struct device_facts *job_facts_before(const struct job *job)
{
	return job->have_before ? &job->facts_before : NULL;
}

const struct device_facts *job_facts_after(const struct job *job)
{
	if (!job->bytes_written)
		return job->device ? &job->device->s.facts : NULL;
	return job->have_after ? &job->facts_after : NULL;
}

uint64_t job_bytes_written(const struct job *job)
{
	return job->bytes_written;
}

unsigned job_resumes(const struct job *job)
{
	return job->resumes;
}
