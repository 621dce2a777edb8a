/*
 * The job state machine (daemon/jobs.c) and the step driver (job_steps.c)
 * against a fake transport: every transition, cancel in each state, a READ
 * passed on to the next transport, the control-request peek at a CDC device
 * not known yet, the hand-back of a console the READ left listening (a pty
 * stands for the tty), a device that never appears, and the
 * exactly-one-job-ended rule.
 */
#include "asset_module.h"
#include "fake_transport.h"
#include "jobs.h"
#include "platform.h"
#include "registry.h"
#include "settings.h"

#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

/* ---- the fake transport (fake_transport.c) ------------------------------ */

static const struct transport_ops *const only_serial[] = {&fake_serial, NULL};
static const struct transport_ops *const serial_ctrl_dfu[] = {&fake_serial, &fake_ctrl, &fake_dfu,
							      NULL};
static const struct transport_ops *const serial_and_dfu[] = {&fake_serial, &fake_dfu, NULL};
/* in the order of transports_builtin() (daemon/transports.c) */
static const struct transport_ops *const serial_and_ctrl[] = {&fake_serial, &fake_ctrl, NULL};

/* ---- fixture ----------------------------------------------------------- */

#define MAX_EVENTS 256

struct fx {
	struct event_base *base;
	struct registry *reg;
	struct image_cache *images;
	struct jobs *jobs;
	json_t *events; /* every job event, in order */
};

static void sink(void *ctx, struct job *job, json_t *event)
{
	(void)job;
	struct fx *fx = ctx;
	json_array_append(fx->events, event);
}

static void on_device(void *ctx, struct device *dev, enum registry_change c)
{
	struct fx *fx = ctx;
	if (fx->jobs)
		jobs_on_device(fx->jobs, dev, c);
}

static struct fx *fx_new(const struct transport_ops *const *transports)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	fake_reset();
	timeouts_reset();
	fx->base = event_base_new();
	fx->reg = registry_new(fx->base);
	fx->images = image_cache_new(1 << 20);
	fx->jobs = jobs_new(fx->base, fx->reg, fx->images, transports, 8, 16);
	fx->events = json_array();
	jobs_set_sink(fx->jobs, sink, fx);
	registry_set_listener(fx->reg, on_device, fx);
	timeouts_set("job_cancel_grace_ms", 20);
	return fx;
}

static void fx_free(struct fx *fx)
{
	jobs_free(fx->jobs);
	fx->jobs = NULL;
	registry_free(fx->reg);
	image_cache_free(fx->images);
	event_base_free(fx->base);
	json_decref(fx->events);
	free(fx);
}

/* Runs deferred work and due timers (never blocks). */
static void spin(struct fx *fx)
{
	for (int i = 0; i < 8; i++)
		event_base_loop(fx->base, EVLOOP_NONBLOCK);
}

/* Runs the loop until a timer of at most ms has fired. */
static void spin_for(struct fx *fx, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
	spin(fx);
}

#define PHOTON_ID  "3c0021000d47353033323637"
#define ARGON_ID   "e00fce68aaaaaaaaaaaaaaaa"
#define PHOTON_DFU 0xd006
#define PHOTON_CDC 0xc006

static struct job *submit(struct fx *fx, const char *key, int wait_ms)
{
	struct job_request jr;
	struct error err;
	memset(&jr, 0, sizeof(jr));
	error_init(&err);
	jr.target = key ? WIRE_TARGET_DEVICE : WIRE_TARGET_ANY;
	if (key)
		snprintf(jr.target_value, sizeof(jr.target_value), "%s", key);
	jr.device = key ? registry_find_key(fx->reg, key) : NULL;
	jr.opts.wait_ms = wait_ms;
	jr.uid = 1000;
	struct job *job = jobs_create(fx->jobs, &jr, &err);
	assert_non_null(job);
	jobs_submit(fx->jobs, job);
	spin(fx);
	return job;
}

/* A Photon user part of len bytes (prefix at 0x080A0000, 40-byte suffix, CRC-32):
 * enough for the image cache to take it. */
static struct image_ref *photon_app(struct fx *fx, size_t len)
{
	uint8_t *b = calloc(1, len);
	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(i * 13 + 7);
	const uint32_t start = 0x080A0000, end = start + (uint32_t)len - 4;
	memset(b, 0, 24);
	for (int i = 0; i < 4; i++) {
		b[i] = (uint8_t)(start >> (8 * i));
		b[4 + i] = (uint8_t)(end >> (8 * i));
	}
	b[10] = 6;		     /* module version */
	b[12] = 6;		     /* platform id: Photon */
	b[14] = 5;		     /* MODULE_FUNCTION_USER */
	b[15] = 1;		     /* index */
	memset(b + len - 44, 0, 40); /* suffix */
	b[len - 6] = 40;	     /* suffix size */
	uint32_t crc = (uint32_t)crc32(0L, b, (uInt)(len - 4));
	for (int i = 0; i < 4; i++)
		b[len - 1 - i] = (uint8_t)(crc >> (8 * i)); /* big-endian */
	struct image_ref *ref = NULL;
	struct error err;
	error_init(&err);
	assert_int_equal(image_cache_load_buffer(fx->images, b, len, "app.bin", &ref, &err), 0);
	return ref;
}

/* Events of one job with the given name. */
static size_t count_events(struct fx *fx, struct job *job, const char *name)
{
	size_t n = 0, i;
	json_t *ev;
	json_array_foreach(fx->events, i, ev)
	{
		if (strcmp(json_string_value(json_object_get(ev, "job")), job_id(job)) == 0 &&
		    strcmp(json_string_value(json_object_get(ev, "event")), name) == 0)
			n++;
	}
	return n;
}

static json_t *last_ended(struct fx *fx, struct job *job)
{
	json_t *ev, *found = NULL;
	size_t i;
	json_array_foreach(fx->events, i, ev)
	{
		if (strcmp(json_string_value(json_object_get(ev, "job")), job_id(job)) == 0 &&
		    strcmp(json_string_value(json_object_get(ev, "event")), "job-ended") == 0)
			found = ev;
	}
	return found;
}

static const char *ended_result(struct fx *fx, struct job *job)
{
	json_t *ev = last_ended(fx, job);
	return ev ? json_string_value(json_object_get(ev, "result")) : "(not ended)";
}

static const char *ended_outcome(struct fx *fx, struct job *job)
{
	json_t *ev = last_ended(fx, job);
	const char *o = ev ? json_string_value(json_object_get(ev, "outcome")) : NULL;
	return o ? o : "(none)";
}

static const char *ended_code(struct fx *fx, struct job *job)
{
	json_t *ev = last_ended(fx, job);
	json_t *err = ev ? json_object_get(ev, "error") : NULL;
	return err ? json_string_value(json_object_get(err, "code")) : "(none)";
}

/* The job's last step is a READ, the starts-th step started, by the transport named by. */
static void assert_read_started(unsigned starts, const char *by)
{
	assert_int_equal(fake.starts, starts);
	assert_string_equal(fake.last_started_by, by);
	assert_int_equal(fake.last_kind, JOB_STEP_READ);
}

/* The progress states a job went through, as "a,b,c". */
static void state_trail(struct fx *fx, struct job *job, char *buf, size_t size)
{
	json_t *ev;
	size_t i;
	buf[0] = '\0';
	json_array_foreach(fx->events, i, ev)
	{
		if (strcmp(json_string_value(json_object_get(ev, "job")), job_id(job)) != 0 ||
		    strcmp(json_string_value(json_object_get(ev, "event")), "job-progress") != 0 ||
		    json_object_get(ev, "note") || json_integer_value(json_object_get(ev, "total")))
			continue;
		size_t len = strlen(buf);
		snprintf(buf + len, size - len, "%s%s", len ? "," : "",
			 json_string_value(json_object_get(ev, "state")));
	}
}

/* ---- tests ------------------------------------------------------------- */

static void test_job_runs_through_every_transport_state_to_done(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	char trail[512];
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_int_equal(fake.starts, 1);
	assert_non_null(fake.run);
	assert_true(registry_find_key(fx->reg, PHOTON_ID)->job == job);
	static const enum job_state states[] = {
	    JOB_SWITCHING_MODE, JOB_PREFLIGHT, JOB_SWITCHING_MODE, JOB_PREFLIGHT,
	    JOB_ERASING,	JOB_WRITING,   JOB_REBOOTING,	   JOB_VERIFYING};
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		job_set_state(job, states[i]);
		assert_int_equal(job_state(job), states[i]);
		if (states[i] == JOB_WRITING) {
			job_progress(job, 0, 4096);
			job_progress(job, 4096, 4096);
		}
	}
	job_set_state(job, JOB_DONE); /* terminal states only through job_finish */
	assert_int_equal(job_state(job), JOB_VERIFYING);
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	state_trail(fx, job, trail, sizeof(trail));
	assert_string_equal(trail, "switching-mode,preflight,switching-mode,preflight,erasing,"
				   "writing,rebooting,verifying");
	assert_int_equal(count_events(fx, job, "job-queued"), 1);
	assert_int_equal(count_events(fx, job, "job-started"), 1);
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "verified");
	assert_null(json_object_get(last_ended(fx, job), "error"));
	assert_int_equal(fake.frees, 1);
	assert_null(registry_find_key(fx->reg, PHOTON_ID)->job);
	fx_free(fx);
}

static void test_progress_reports_bytes_percent_and_rate(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_WRITING);
	job_progress(job, 1024, 2048);
	job_progress(job, 2048, 2048);
	json_t *last = json_array_get(fx->events, json_array_size(fx->events) - 1);
	assert_string_equal(json_string_value(json_object_get(last, "event")), "job-progress");
	assert_int_equal(json_integer_value(json_object_get(last, "done")), 2048);
	assert_int_equal(json_integer_value(json_object_get(last, "total")), 2048);
	assert_int_equal(json_integer_value(json_object_get(last, "percent")), 100);
	assert_non_null(json_object_get(last, "rate"));
	assert_non_null(json_object_get(last, "eta_s"));
	job_finish(job, JOB_RESULT_DONE, "written-not-verified", NULL);
	spin(fx);
	fx_free(fx);
}

static void test_failed_job_carries_the_transport_error(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_PREFLIGHT);
	struct error e;
	error_init(&e);
	error_set(&e, ERR_WRONG_PLATFORM, "built for Electron");
	job_finish(job, JOB_RESULT_FAILED, NULL, &e);
	assert_false(error_is_set(&e)); /* moved from */
	spin(fx);
	assert_string_equal(ended_result(fx, job), "failed");
	assert_string_equal(ended_code(fx, job), "wrong-platform");
	/* A second end is ignored: exactly one job-ended per job. */
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	fx_free(fx);
}

/* The transport says where an unfinished write stopped; the job record of job-ended
 * carries it with what the device does at its next boot (flashctl renders it). */
static void test_partial_write_is_described_in_the_job_record(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job_request jr;
	struct error err;
	memset(&jr, 0, sizeof(jr));
	error_init(&err);
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", PHOTON_ID);
	jr.device = registry_find_key(fx->reg, PHOTON_ID);
	jr.images[0] = photon_app(fx, 8192);
	snprintf(jr.names[0], sizeof(jr.names[0]), "app.bin");
	jr.n_images = 1;
	jr.uid = 1000;
	struct job *job = jobs_create(fx->jobs, &jr, &err);
	assert_non_null(job);
	jobs_submit(fx->jobs, job);
	spin(fx);
	job_set_state(job, JOB_WRITING);
	struct job_partial p = {.image = 0,
				.function = MODULE_FUNCTION_USER,
				.index = 1,
				.start = 0x080A0000,
				.end = 0x080A2000,
				.address = 0x080A1000,
				.bytes_written = 4096,
				.size = 8192,
				.chunk = 2};
	job_set_partial(job, &p);
	error_set(&err, ERR_CANCELLED, "cancelled during download");
	job_finish(job, JOB_RESULT_CANCELLED, NULL, &err);
	spin(fx);
	json_t *partial =
	    json_object_get(json_object_get(last_ended(fx, job), "record"), "partial");
	assert_non_null(partial);
	assert_string_equal(json_string_value(json_object_get(partial, "file")), "app.bin");
	assert_string_equal(json_string_value(json_object_get(partial, "module")), "application 1");
	assert_string_equal(json_string_value(json_object_get(partial, "state")), "partly-written");
	assert_int_equal(json_integer_value(json_object_get(partial, "address")), 0x080A1000);
	assert_int_equal(json_integer_value(json_object_get(partial, "bytes_written")), 4096);
	assert_int_equal(json_integer_value(json_object_get(partial, "chunk")), 2);
	assert_non_null(
	    strstr(json_string_value(json_object_get(partial, "next_boot")), "safe mode"));
	fx_free(fx);
}

static void test_transport_that_cannot_start_fails_the_job(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	fake.start_fails = true;
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_string_equal(ended_result(fx, job), "failed");
	assert_string_equal(ended_code(fx, job), "permission-denied");
	assert_null(registry_find_key(fx->reg, PHOTON_ID)->job);
	fx_free(fx);
}

static void test_device_no_transport_serves_is_not_flashable_here(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake.serve_dfu_only = true;
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_int_equal(fake.starts, 0);
	assert_string_equal(ended_code(fx, job), "not-flashable-here");
	fx_free(fx);
}

static void test_job_whose_device_never_appears_times_out(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *job = submit(fx, ARGON_ID, 50);
	assert_int_equal(job_state(job), JOB_WAITING_FOR_DEVICE);
	assert_int_equal(count_events(fx, job, "job-ended"), 0);
	spin_for(fx, 200);
	assert_string_equal(ended_result(fx, job), "failed");
	assert_string_equal(ended_code(fx, job), "timed-out");
	json_t *detail = json_object_get(json_object_get(last_ended(fx, job), "error"), "detail");
	assert_string_equal(json_string_value(json_object_get(detail, "phase")),
			    "waiting-for-device");
	assert_int_equal(fake.starts, 0);
	fx_free(fx);
}

static void test_without_wait_a_missing_device_fails_at_once(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *job = submit(fx, ARGON_ID, 0);
	assert_string_equal(ended_code(fx, job), "device-not-found");
	fx_free(fx);
}

static void test_waiting_job_starts_when_its_device_appears(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *job = submit(fx, NULL, -1);
	assert_int_equal(job_state(job), JOB_WAITING_FOR_DEVICE);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.starts, 1);
	assert_string_equal(job_device(job)->key, PHOTON_ID);
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	fx_free(fx);
}

static void test_one_job_per_device_second_waits_in_queue(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *a = submit(fx, PHOTON_ID, 0);
	struct job *b = submit(fx, PHOTON_ID, 0);
	assert_int_equal(fake.starts, 1);
	assert_int_equal(job_state(b), JOB_QUEUED);
	job_finish(a, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	assert_int_equal(fake.starts, 2);
	assert_true(registry_find_key(fx->reg, PHOTON_ID)->job == b);
	job_finish(b, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	fx_free(fx);
}

/* Issue 13: a --wait job took a CDC device before its tty existed and failed
 * not-flashable-here "unknown mode". */
static void test_waiting_job_waits_for_the_tty_of_a_cdc_device(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *job = submit(fx, NULL, 5000);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	spin(fx);
	assert_int_equal(fake.starts, 0);
	assert_int_equal(job_state(job), JOB_WAITING_FOR_DEVICE);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	spin(fx);
	assert_int_equal(fake.starts, 1);
	assert_string_equal(job_device(job)->tty, "/dev/ttyACM0");
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	fx_free(fx);
}

static void test_wait_runs_out_naming_a_device_whose_tty_never_came(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *job = submit(fx, NULL, 50);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	spin_for(fx, 120);
	assert_int_equal(fake.starts, 0);
	assert_string_equal(ended_code(fx, job), "timed-out");
	json_t *err = json_object_get(last_ended(fx, job), "error");
	const char *msg = json_string_value(json_object_get(err, "message"));
	assert_non_null(strstr(msg, PHOTON_ID));
	assert_non_null(strstr(msg, "serial port"));
	fx_free(fx);
}

/* Issue 13: a stalled transfer's last progress event said 0 %. */
static void test_progress_held_by_the_rate_limit_goes_out(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_WRITING);
	job_progress(job, 0, 4096);
	job_progress(job, 1024, 4096); /* within the rate limit: held */
	json_t *last = json_array_get(fx->events, json_array_size(fx->events) - 1);
	assert_int_equal(json_integer_value(json_object_get(last, "done")), 0);
	spin_for(fx, 150); /* the transfer stalls: the held bytes go out anyway */
	last = json_array_get(fx->events, json_array_size(fx->events) - 1);
	assert_string_equal(json_string_value(json_object_get(last, "event")), "job-progress");
	assert_int_equal(json_integer_value(json_object_get(last, "done")), 1024);
	/* held again, then the job ends at once: the bytes come before job-ended */
	job_progress(job, 3072, 4096);
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT, "no answer");
	job_finish(job, JOB_RESULT_FAILED, NULL, &e);
	spin(fx);
	size_t n = json_array_size(fx->events);
	json_t *before = json_array_get(fx->events, n - 2);
	assert_string_equal(json_string_value(json_object_get(before, "event")), "job-progress");
	assert_int_equal(json_integer_value(json_object_get(before, "done")), 3072);
	assert_int_equal(json_integer_value(json_object_get(before, "percent")), 75);
	assert_string_equal(ended_code(fx, job), "timed-out");
	fx_free(fx);
}

/* What a device-info probe asks before it makes its own job (server.c: device-busy). */
static void test_device_is_held_by_a_running_or_not_yet_scheduled_job(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct device *d = registry_find_key(fx->reg, PHOTON_ID);
	assert_null(jobs_holding_device(fx->jobs, d));
	/* created and submitted, the scheduler has not run yet: already holding */
	struct job_request jr;
	struct error err;
	memset(&jr, 0, sizeof(jr));
	error_init(&err);
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", PHOTON_ID);
	jr.device = d;
	struct job *a = jobs_create(fx->jobs, &jr, &err);
	assert_non_null(a);
	jobs_submit(fx->jobs, a);
	assert_null(d->job);
	assert_true(jobs_holding_device(fx->jobs, d) == a);
	spin(fx);
	assert_true(jobs_holding_device(fx->jobs, d) == a);
	job_finish(a, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	assert_null(jobs_holding_device(fx->jobs, d));
	fx_free(fx);
}

static void test_devices_run_jobs_in_parallel(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	fake_plug(fx->reg, ARGON_ID, "1-2", 0xd00c);
	struct job *a = submit(fx, PHOTON_ID, 0);
	struct job *b = submit(fx, ARGON_ID, 0);
	assert_int_equal(fake.starts, 2);
	assert_false(job_ended(a));
	assert_false(job_ended(b));
	fx_free(fx); /* daemon stops: both interrupted */
}

/* Cancel in every state: before a transport runs (queued, waiting) the core
 * ends the job; afterwards the transport stops at its next safe point. */
static void cancel_in_state(enum job_state s)
{
	struct fx *fx = fx_new(only_serial);
	struct job *job;
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	if (s == JOB_QUEUED) {
		struct job *holder = submit(fx, PHOTON_ID, 0);
		job = submit(fx, PHOTON_ID, 0);
		assert_int_equal(job_state(job), JOB_QUEUED);
		jobs_cancel(fx->jobs, job, 1000);
		spin(fx);
		assert_false(job_ended(holder));
	} else if (s == JOB_WAITING_FOR_DEVICE) {
		job = submit(fx, ARGON_ID, -1);
		assert_int_equal(job_state(job), JOB_WAITING_FOR_DEVICE);
		jobs_cancel(fx->jobs, job, 1000);
		spin(fx);
	} else {
		job = submit(fx, PHOTON_ID, 0);
		job_set_state(job, s);
		assert_int_equal(job_state(job), s);
		jobs_cancel(fx->jobs, job, 1000);
		spin(fx);
		assert_int_equal(fake.cancels, 1);
	}
	assert_string_equal(ended_result(fx, job), "cancelled");
	assert_string_equal(ended_code(fx, job), "cancelled");
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	/* Cancelling again, or after the end, changes nothing. */
	jobs_cancel(fx->jobs, job, 1000);
	spin(fx);
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	fx_free(fx);
}

static void test_cancel_in_every_state(void **state)
{
	(void)state;
	static const enum job_state states[] = {
	    JOB_QUEUED,	 JOB_WAITING_FOR_DEVICE, JOB_SWITCHING_MODE, JOB_PREFLIGHT, JOB_ERASING,
	    JOB_WRITING, JOB_REBOOTING,		 JOB_VERIFYING};
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		print_message("# cancel in %s\n", job_state_name(states[i]));
		cancel_in_state(states[i]);
	}
}

static void test_cancel_ignored_by_transport_ends_after_grace(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	fake.cancel_mode = FAKE_CANCEL_IGNORE;
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_WRITING);
	jobs_cancel(fx->jobs, job, 0);
	spin(fx);
	assert_false(job_ended(job));
	spin_for(fx, 100);
	assert_string_equal(ended_result(fx, job), "cancelled");
	assert_int_equal(fake.frees, 1); /* the stuck run is freed, not leaked */
	fx_free(fx);
}

/* A READ that gets no answer (no console, say) goes to the next transport that can
 * read the device, with a note; what it reads is planned by the core (no files:
 * nothing to write). */
static void test_read_without_answer_goes_to_the_next_transport(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_dfu);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_string_equal(fake.last_started_by, "serial");
	assert_int_equal(fake.last_kind, JOB_STEP_READ);
	struct job_step_result res;
	memset(&res, 0, sizeof(res));
	res.no_answer = true;
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT, "the console was silent");
	job_step_done(job, &res, &e);
	spin(fx);
	assert_read_started(2, "dfu");
	assert_int_equal(fake.frees, 1); /* the serial run */
	assert_true(registry_find_key(fx->reg, PHOTON_ID)->job == job);
	json_t *ev;
	size_t i;
	bool noted = false;
	json_array_foreach(fx->events, i, ev) noted =
	    noted || (json_is_string(json_object_get(ev, "note")) &&
		      strcmp(json_string_value(json_object_get(ev, "note")), "handed-to-dfu") == 0);
	assert_true(noted);
	memset(&res, 0, sizeof(res));
	res.mode = DEVICE_MODE_NORMAL;
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "already-installed");
	assert_int_equal(fake.starts, 2); /* nothing to write: no other step */
	fx_free(fx);
}

/* No transport answers and none can switch the device: not-flashable-here. */
static void test_read_nobody_answers_is_not_flashable_here(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	struct job *job = submit(fx, PHOTON_ID, 0);
	struct job_step_result res;
	memset(&res, 0, sizeof(res));
	res.no_answer = true;
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT, "the console was silent");
	job_step_done(job, &res, &e);
	spin(fx);
	assert_string_equal(ended_code(fx, job), "not-flashable-here");
	fx_free(fx);
}

/* The running READ gets no answer, for why. */
static void no_answer(struct fx *fx, struct job *job, const char *why)
{
	struct job_step_result res;
	memset(&res, 0, sizeof(res));
	res.no_answer = true;
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT, "%s", why);
	job_step_done(job, &res, &e);
	spin(fx);
}

static const char *note_message(struct fx *fx, const char *note);

/* Nobody answers: the error names every transport's reason, not only the last one's
 * (and the hand-over says why the first gave up). */
static void test_read_nobody_answers_names_every_reason(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_ctrl_dfu);
	fake.serve_dfu_only = false;
	fake_plug(fx->reg, PHOTON_ID, "1-1",
		  PHOTON_CDC); /* no tty: DFU cannot switch it with 14400 baud */
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_string_equal(fake.last_started_by, "serial");
	no_answer(fx, job, "no answer to s in 2 s");
	assert_string_equal(fake.last_started_by, "ctrl");
	assert_non_null(
	    strstr(note_message(fx, "handed-to-ctrl"), "serial: no answer to s in 2 s"));
	no_answer(fx, job, "the device has no control interface");
	assert_string_equal(fake.last_started_by, "dfu");
	const char *why = note_message(fx, "handed-to-dfu");
	assert_non_null(strstr(why, "serial: no answer to s in 2 s"));
	assert_non_null(strstr(why, "ctrl: the device has no control interface"));
	no_answer(fx, job, "not in DFU mode");
	assert_string_equal(ended_code(fx, job), "not-flashable-here");
	json_t *err = json_object_get(last_ended(fx, job), "error");
	const char *msg = json_string_value(json_object_get(err, "message"));
	assert_non_null(strstr(msg, "serial: no answer to s in 2 s; ctrl: the device has no "
				    "control interface; dfu: not in DFU mode"));
	fx_free(fx);
}

/* The facts a READ or VERIFY of the fake reports: a Photon on 1.5.2 in listening mode,
 * with application 1 in version app_version (0 = none). */
static struct job_step_result photon_facts(uint16_t app_version)
{
	struct job_step_result res;
	memset(&res, 0, sizeof(res));
	res.mode = DEVICE_MODE_LISTENING;
	res.facts.platform = platform_by_id(6);
	snprintf(res.facts.os_version, sizeof(res.facts.os_version), "1.5.2");
	res.facts.system_version = 1512;
	res.facts.modules_known = true;
	struct installed_module sys = {.function = MODULE_FUNCTION_SYSTEM,
				       .index = 1,
				       .version = 1512,
				       .checked = 0x0f,
				       .passed = 0x0f};
	res.facts.modules[res.facts.n_modules++] = sys;
	sys.index = 2;
	res.facts.modules[res.facts.n_modules++] = sys;
	if (app_version) {
		struct installed_module app = {.function = MODULE_FUNCTION_USER,
					       .index = 1,
					       .version = app_version,
					       .checked = 0x0f,
					       .passed = 0x0f};
		res.facts.modules[res.facts.n_modules++] = app;
	}
	return res;
}

static bool has_note(struct fx *fx, const char *note)
{
	json_t *ev;
	size_t i;
	json_array_foreach(fx->events, i, ev)
	{
		json_t *n = json_object_get(ev, "note");
		if (json_is_string(n) && strcmp(json_string_value(n), note) == 0)
			return true;
	}
	return false;
}

/* The message of the first note named note ("" when there is none). */
static const char *note_message(struct fx *fx, const char *note)
{
	json_t *ev;
	size_t i;
	json_array_foreach(fx->events, i, ev)
	{
		json_t *n = json_object_get(ev, "note");
		if (json_is_string(n) && strcmp(json_string_value(n), note) == 0)
			return json_string_value(json_object_get(ev, "message"));
	}
	return "";
}

/* A job for the Photon PHOTON_ID with one 8 KiB application, "app.bin", submitted. */
static struct job *submit_photon_app(struct fx *fx)
{
	struct job_request jr;
	struct error err;
	memset(&jr, 0, sizeof(jr));
	error_init(&err);
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", PHOTON_ID);
	jr.device = registry_find_key(fx->reg, PHOTON_ID);
	jr.images[0] = photon_app(fx, 8192);
	snprintf(jr.names[0], sizeof(jr.names[0]), "app.bin");
	jr.n_images = 1;
	jr.uid = 1000;
	struct job *job = jobs_create(fx->jobs, &jr, &err);
	assert_non_null(job);
	jobs_submit(fx->jobs, job);
	return job;
}

/* The core runs the whole plan: READ, the plan, WRITE with exactly the job's file, the
 * wait for the reboot (the device leaves and comes back), VERIFY, the verdict.  The
 * transport only executes the steps it is given. */
static void test_core_runs_read_plan_write_reboot_verify(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	struct job *job = submit_photon_app(fx);
	spin(fx);
	/* READ */
	assert_int_equal(fake.starts, 1);
	assert_int_equal(fake.last_kind, JOB_STEP_READ);
	struct job_step_result res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	/* the plan, then WRITE of the one file */
	assert_int_equal(count_events(fx, job, "job-plan"), 1);
	assert_int_equal(fake.starts, 2);
	assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
	job_set_state(job, JOB_WRITING);
	job_progress(job, 8192, 8192);
	memset(&res, 0, sizeof(res));
	job_step_done(job, &res, NULL);
	spin(fx);
	/* the core waits for the reboot: no step runs until the device left and came back */
	assert_int_equal(job_state(job), JOB_REBOOTING);
	assert_int_equal(fake.starts, 2);
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	fake_plug(fx->reg, PHOTON_ID, "1-2", PHOTON_CDC);
	spin(fx);
	assert_int_equal(fake.starts, 2); /* the tty is not there yet: the verify needs it */
	fake_plug_tty(fx->reg, PHOTON_ID, "1-2");
	spin(fx);
	/* VERIFY: the device reports the application, valid */
	assert_int_equal(fake.starts, 3);
	assert_int_equal(fake.last_kind, JOB_STEP_VERIFY);
	res = photon_facts(6);
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "verified");
	assert_false(has_note(fx, "handed-to-serial")); /* one transport all along */
	assert_int_equal(fake.frees, 3);
	fx_free(fx);
}

/* A VERIFY whose module list is incomplete (modules_known false: `s` cut short, more
 * modules than flashd keeps) says nothing of the written module: the job is
 * written-not-verified, never booted-invalid with the module "missing". */
static void test_verify_without_the_whole_module_list_is_not_verified_not_missing(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	memset(&res, 0, sizeof(res));
	job_step_done(job, &res, NULL); /* the WRITE */
	spin(fx);
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	fake_plug(fx->reg, PHOTON_ID, "1-2", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-2");
	spin(fx);
	assert_int_equal(fake.last_kind, JOB_STEP_VERIFY);
	res = photon_facts(0); /* the list stops before the application */
	res.facts.modules_known = false;
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "written-not-verified");
	assert_true(has_note(fx, "not-verified"));
	fx_free(fx);
}

/* Cancel while the core waits for the reboot after the last write: past the point of
 * no return, the device applies what it got: done, written-not-verified, no step
 * started after it. */
static void test_cancel_while_the_core_waits_for_the_reboot(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	memset(&res, 0, sizeof(res));
	job_step_done(job, &res, NULL); /* the WRITE */
	spin(fx);
	assert_int_equal(job_state(job), JOB_REBOOTING);
	jobs_cancel(fx->jobs, job, 1000);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "written-not-verified");
	assert_true(has_note(fx, "not-verified"));
	fake_unplug(fx->reg, "1-1");
	fake_plug(fx->reg, PHOTON_ID, "1-2", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-2");
	spin(fx);
	assert_int_equal(fake.starts, 2); /* no VERIFY after the end */
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	fx_free(fx);
}

/* A WRITE whose bytes were read back, then no report from the device after the reboot:
 * the read-back proves what flash holds, not the device's verdict, so not "verified". */
static void test_read_back_without_the_devices_report_is_not_verified(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	memset(&res, 0, sizeof(res));
	res.read_back = true;
	job_step_done(job, &res, NULL); /* the WRITE, every byte read back */
	spin(fx);
	assert_int_equal(job_state(job), JOB_REBOOTING);
	jobs_cancel(fx->jobs, job, 1000);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(json_string_value(json_object_get(last_ended(fx, job), "outcome")),
			    "written-not-verified");
	assert_true(has_note(fx, "read-back"));
	fx_free(fx);
}

/* A plan refused before the first byte: the job ends after the READ, no WRITE starts. */
static void test_core_refuses_before_any_write(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	res.facts.platform = platform_by_id(10); /* an Electron: the Photon app is refused */
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(ended_code(fx, job), "wrong-platform");
	assert_int_equal(fake.starts, 1); /* no WRITE */
	fx_free(fx);
}

/* What a READ keeps open (job_step_result.keep) goes to the WRITE that starts from that
 * READ (job_step.kept), and back to the transport's keep_free() when no step starts from
 * it: a refused plan, a READ that failed. */
static void test_read_keep_goes_to_the_write_or_back_to_the_transport(void **state)
{
	(void)state;
	struct transport_keep first = {1}, second = {2}, third = {3};
	for (int round = 0; round < 3; round++) {
		struct fx *fx = fx_new(only_serial);
		fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
		fake_plug_tty(fx->reg, PHOTON_ID, "1-1");
		struct job_request jr;
		struct error err;
		memset(&jr, 0, sizeof(jr));
		error_init(&err);
		jr.target = WIRE_TARGET_DEVICE;
		snprintf(jr.target_value, sizeof(jr.target_value), "%s", PHOTON_ID);
		jr.device = registry_find_key(fx->reg, PHOTON_ID);
		jr.images[0] = photon_app(fx, 8192);
		snprintf(jr.names[0], sizeof(jr.names[0]), "app.bin");
		jr.n_images = 1;
		jr.uid = 1000;
		struct job *job = jobs_create(fx->jobs, &jr, &err);
		assert_non_null(job);
		jobs_submit(fx->jobs, job);
		spin(fx);
		assert_int_equal(fake.last_kind, JOB_STEP_READ);
		assert_null(fake.last_kept);
		struct job_step_result res = photon_facts(0);
		if (round == 0) {
			res.keep = &first;
			job_step_done(job, &res, NULL);
			spin(fx);
			/* the WRITE starts from the READ: it gets what the READ kept */
			assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
			assert_ptr_equal(fake.last_kept, &first);
			assert_int_equal(fake.keep_frees, 0);
		} else if (round == 1) {
			res.keep = &second;
			res.facts.platform = platform_by_id(10); /* refused: no step follows */
			job_step_done(job, &res, NULL);
			spin(fx);
			assert_string_equal(ended_code(fx, job), "wrong-platform");
			assert_int_equal(fake.keep_frees, 1);
		} else {
			res.keep = &third;
			error_set(&err, ERR_TRANSFER_FAILED, "fake: the read failed");
			job_step_done(job, &res, &err);
			spin(fx);
			assert_string_equal(ended_code(fx, job), "transfer-failed");
			assert_int_equal(fake.keep_frees, 1);
		}
		fx_free(fx);
	}
}

/* ---- READ: control requests first on a CDC device not known yet (ctrl_peek) ------- */

/* What a READ of a running device reports: platform, Device OS os, mode normal. */
static struct job_step_result running(uint16_t platform, const char *os)
{
	struct job_step_result res;
	memset(&res, 0, sizeof(res));
	res.mode = DEVICE_MODE_NORMAL;
	res.facts.platform = platform_by_id(platform);
	snprintf(res.facts.os_version, sizeof(res.facts.os_version), "%s", os);
	return res;
}

/* A flash job on a Photon just plugged in (mode unknown, a tty, control requests
 * reachable), transports serial then ctrl: the ctrl READ runs first. */
static struct job *submit_to_unknown_photon(struct fx *fx)
{
	fake_plug_cdc(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC, "/dev/ttyACM0");
	assert_int_equal(registry_find_key(fx->reg, PHOTON_ID)->s.mode, DEVICE_MODE_UNKNOWN);
	struct job *job = submit_photon_app(fx);
	spin(fx);
	assert_read_started(1, "ctrl");
	return job;
}

/* The control requests say the device runs its firmware on Device OS <= 5.x, which has a
 * console: the console reads it next (its `s` has the module hashes), and it starts
 * knowing the mode (normal: no `v` probe first), with no hand-over note (the ctrl READ
 * only asked for the mode). */
static void test_peek_by_ctrl_then_the_console_reads_a_device_on_5x(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_ctrl);
	struct job *job = submit_to_unknown_photon(fx);
	assert_true(fake.last_mode_only);
	struct job_step_result res = running(6, "1.5.2");
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(fake.starts, 2);
	assert_string_equal(fake.last_started_by, "serial");
	assert_false(fake.last_mode_only);
	assert_int_equal(fake.last_kind, JOB_STEP_READ);
	assert_int_equal(fake.last_mode, DEVICE_MODE_NORMAL);
	assert_int_equal(job_device(job)->mode, DEVICE_MODE_NORMAL);
	assert_false(has_note(fx, "handed-to-serial"));
	assert_int_equal(count_events(fx, job, "job-plan"), 0); /* not planned from the peek */
	assert_false(job_ended(job));
	/* the console's READ is the one the plan is made from */
	res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(count_events(fx, job, "job-plan"), 1);
	assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
	assert_string_equal(fake.last_started_by, "serial");
	fx_free(fx);
}

/* Device OS 6.x has no console: the peek (its mode and Device OS) is followed by the
 * whole READ by control requests, and the plan is made from it. */
static void test_peek_by_ctrl_plans_a_device_on_6x_from_that_read(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_ctrl);
	fake_plug_cdc(fx->reg, ARGON_ID, "1-2", 0xc020, "/dev/ttyACM1"); /* a P2 */
	struct job *job = submit(fx, ARGON_ID, 0);			 /* no files */
	assert_read_started(1, "ctrl");
	assert_true(fake.last_mode_only);
	struct job_step_result res = running(32, "6.1.1");
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(fake.starts, 2); /* the whole READ, by control requests */
	assert_string_equal(fake.last_started_by, "ctrl");
	assert_false(fake.last_mode_only);
	assert_int_equal(count_events(fx, job, "job-plan"), 0);
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(fake.starts, 2); /* no serial READ */
	assert_int_equal(count_events(fx, job, "job-plan"), 1);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(ended_outcome(fx, job), "already-installed");
	assert_int_equal(job_device(job)->mode, DEVICE_MODE_NORMAL);
	assert_string_equal(job_device(job)->facts.os_version, "6.1.1");
	fx_free(fx);
}

/* Control requests that do not identify the device (no_answer): the console reads it as
 * it would have without them, in a mode it still has to find out; the ctrl READ was a
 * peek, not a transport the job was on, so there is no hand-over note. */
static void test_peek_without_answer_goes_to_the_console_quietly(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_ctrl);
	struct job *job = submit_to_unknown_photon(fx);
	no_answer(fx, job, "the device did not answer GetDeviceMode");
	assert_read_started(2, "serial");
	assert_int_equal(fake.last_mode, DEVICE_MODE_UNKNOWN);
	assert_false(has_note(fx, "handed-to-serial"));
	assert_false(job_ended(job));
	fx_free(fx);
}

/* The peek fails otherwise (code, msg): the console reads the device, as before there
 * was a peek. */
static struct job *peek_fails(struct fx *fx, enum error_code code, const char *msg)
{
	struct job *job = submit_to_unknown_photon(fx);
	struct error e;
	error_init(&e);
	error_set(&e, code, "%s", msg);
	job_step_done(job, NULL, &e);
	spin(fx);
	assert_read_started(2, "serial");
	return job;
}

/* A peek that fails busy (the interface claimed by another program), and a console with
 * no answer either: the peek's error is the job's, not not-flashable-here and not a
 * switch to DFU mode. */
static void test_peek_failing_device_busy_fails_the_job(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_ctrl);
	struct job *job = peek_fails(fx, ERR_DEVICE_BUSY, "fake: the control interface is claimed");
	struct job_step_result none = {.no_answer = true};
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT, "fake: no answer to v");
	job_step_done(job, &none, &e);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "failed");
	assert_string_equal(ended_code(fx, job), "device-busy");
	assert_int_equal(fake.starts, 2);
	fx_free(fx);
}

/* ... and when the console answers, the job goes on with it, the peek's error in the
 * hand-over note. */
static void test_peek_failing_is_read_by_the_console(void **state)
{
	(void)state;
	struct fx *fx = fx_new(serial_and_ctrl);
	struct job *job =
	    peek_fails(fx, ERR_TIMED_OUT, "fake: no answer to get-device-id in 1000 ms");
	struct job_step_result res = photon_facts(0);
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
	assert_true(strstr(note_message(fx, "handed-to-serial"), "no answer to get-device-id"));
	fx_free(fx);
}

/* ---- the console a serial READ left listening, and its hand-back (`x`) ------------- */

/* The fake device's tty is a pty: what flashd writes to it (cdc_query_give_back()) is
 * read on the master side.  The tests that use it get it as their state (set up and
 * torn down by cmocka, also when they fail). */
struct console {
	int master, slave;
	char path[64];
	char lock_dir[256];
};

static int console_setup(void **state)
{
	struct console *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	*state = c;
	c->slave = -1;
	c->master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (c->master < 0 || grantpt(c->master) < 0 || unlockpt(c->master) < 0)
		return -1;
	snprintf(c->path, sizeof(c->path), "%s", ptsname(c->master));
	/* the test holds the slave open too: flashd's close does not hang the pty up */
	c->slave = open(c->path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	const char *tmp = getenv("TMPDIR");
	snprintf(c->lock_dir, sizeof(c->lock_dir), "%s/test-jobs-lock.XXXXXX", tmp ? tmp : "/tmp");
	if (c->slave < 0 || !mkdtemp(c->lock_dir))
		return -1;
	setenv("FLASHD_LOCK_DIR", c->lock_dir, 1);
	return 0;
}

static int console_teardown(void **state)
{
	struct console *c = *state;
	if (!c)
		return 0;
	unsetenv("FLASHD_LOCK_DIR");
	int rc = 0;
	if (c->lock_dir[0]) {
		/* flashd removes its lock file when it closes the port */
		char lock[sizeof(c->lock_dir) + sizeof(c->path) + 8];
		const char *base = strrchr(c->path, '/');
		snprintf(lock, sizeof(lock), "%s/LCK..%s", c->lock_dir, base ? base + 1 : c->path);
		rc = unlink(lock) == 0 ? -1 : 0;
		if (rmdir(c->lock_dir) < 0)
			rc = -1;
	}
	if (c->slave >= 0)
		close(c->slave);
	if (c->master >= 0)
		close(c->master);
	free(c);
	return rc;
}

/* What flashd wrote to the console since the last call. */
static const char *console_take(struct console *c)
{
	static char buf[64];
	ssize_t n = read(c->master, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* The serial READ left the device listening for the serial write (kept_listening), but
 * none follows: a refusal, nothing to write.  The core gives it back to its firmware
 * with one `x`, once, and the device's mode is normal again. */
static void test_kept_listening_is_given_back_once_when_no_serial_step_follows(void **state)
{
	struct console *con = *state;
	for (int round = 0; round < 2; round++) {
		struct fx *fx = fx_new(only_serial);
		fake_plug_cdc(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC, con->path);
		struct job *job = submit_photon_app(fx);
		spin(fx);
		assert_string_equal(fake.last_started_by, "serial");
		assert_int_equal(fake.last_kind, JOB_STEP_READ);
		assert_true(fake.last_keep_listening); /* a flash job */
		struct job_step_result res = photon_facts(round == 0 ? 0 : 6);
		res.kept_listening = true;
		if (round == 0)
			res.facts.platform = platform_by_id(10); /* an Electron: refused */
		else /* app.bin's own hash (its suffix holds zeros): installed already */
			memset(res.facts.modules[2].sha256, '0', 64);
		job_step_done(job, &res, NULL);
		spin(fx);
		assert_string_equal(ended_code(fx, job), round == 0 ? "wrong-platform" : "(none)");
		if (round == 1)
			assert_string_equal(ended_outcome(fx, job), "already-installed");
		assert_int_equal(fake.starts, 1);
		assert_string_equal(console_take(con), "x");
		assert_int_equal(registry_find_key(fx->reg, PHOTON_ID)->s.mode, DEVICE_MODE_NORMAL);
		fx_free(fx);
		assert_string_equal(console_take(con), ""); /* not again at the daemon's stop */
	}
}

/* The hand-back fails (another program took the tty meanwhile): the job's record says
 * the device stays in listening mode (left-listening note), and flashd knows it listens. */
static void test_a_failed_hand_back_is_the_jobs_left_listening_note(void **state)
{
	struct console *con = *state;
	struct fx *fx = fx_new(only_serial);
	fake_plug_cdc(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC, con->path);
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	res.kept_listening = true;
	res.facts.platform = platform_by_id(10); /* an Electron: refused */
	int holder = open(con->path, O_RDWR | O_NOCTTY | O_CLOEXEC);
	assert_true(holder >= 0);
	assert_int_equal(flock(holder, LOCK_EX | LOCK_NB), 0);
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(ended_code(fx, job), "wrong-platform");
	assert_true(strstr(note_message(fx, "left-listening"), "stays in listening mode"));
	assert_int_equal(registry_find_key(fx->reg, PHOTON_ID)->s.mode, DEVICE_MODE_LISTENING);
	assert_string_equal(console_take(con), "");
	close(holder);
	fx_free(fx);
}

/* ... and when the serial write follows, the device stays listening for it: no `x`
 * before the write, nor after it. */
static void test_kept_listening_is_not_given_back_before_a_serial_write(void **state)
{
	struct console *con = *state;
	struct fx *fx = fx_new(only_serial);
	fake_plug_cdc(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC, con->path);
	struct job *job = submit_photon_app(fx);
	spin(fx);
	struct job_step_result res = photon_facts(0);
	res.kept_listening = true;
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
	assert_string_equal(fake.last_started_by, "serial");
	assert_string_equal(console_take(con), "");
	assert_int_equal(registry_find_key(fx->reg, PHOTON_ID)->s.mode, DEVICE_MODE_LISTENING);
	memset(&res, 0, sizeof(res));
	job_step_done(job, &res, NULL); /* written: the device reboots */
	spin(fx);
	jobs_cancel(fx->jobs, job, 1000);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_string_equal(console_take(con), "");
	fx_free(fx);
}

/* The whole READ of a P2 on Device OS 5.9.0 just plugged in, for a job with one asset
 * (written by the firmware-update request, in normal mode): the ctrl peek, the console's
 * READ from 28800 (it leaves the device listening), then the plan, whose first write is
 * over ctrl: the device goes back to its firmware once, before that write. */
static void test_kept_listening_is_given_back_once_before_a_ctrl_write(void **state)
{
	struct console *con = *state;
	struct fx *fx = fx_new(serial_and_ctrl);
	fake_plug_cdc(fx->reg, ARGON_ID, "1-2", 0xc020, con->path);
	uint8_t *m;
	size_t len;
	struct error err;
	error_init(&err);
	assert_int_equal(
	    asset_module_build("logo.png", (const uint8_t *)"a logo", 6, &m, &len, &err), 0);
	struct job_request jr;
	memset(&jr, 0, sizeof(jr));
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", ARGON_ID);
	jr.device = registry_find_key(fx->reg, ARGON_ID);
	assert_int_equal(
	    image_cache_load_buffer(fx->images, m, len, "logo.png", &jr.images[0], &err), 0);
	snprintf(jr.names[0], sizeof(jr.names[0]), "logo.png");
	jr.n_images = 1;
	jr.uid = 1000;
	struct job *job = jobs_create(fx->jobs, &jr, &err);
	assert_non_null(job);
	jobs_submit(fx->jobs, job);
	spin(fx);
	assert_string_equal(fake.last_started_by, "ctrl"); /* the peek */
	struct job_step_result res = running(32, "5.9.0");
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_string_equal(fake.last_started_by, "serial");
	assert_int_equal(fake.last_kind, JOB_STEP_READ);
	assert_int_equal(fake.last_mode, DEVICE_MODE_NORMAL);
	assert_true(fake.last_keep_listening);
	res = running(32, "5.9.0");
	res.mode = DEVICE_MODE_LISTENING;
	res.kept_listening = true;
	res.facts.system_version = 5900;
	res.facts.modules_known = true;
	struct installed_module sys = {.function = MODULE_FUNCTION_SYSTEM,
				       .index = 1,
				       .version = 5900,
				       .checked = 0x0f,
				       .passed = 0x0f};
	res.facts.modules[res.facts.n_modules++] = sys;
	job_step_done(job, &res, NULL);
	spin(fx);
	assert_int_equal(count_events(fx, job, "job-plan"), 1);
	assert_string_equal(fake.last_started_by, "ctrl");
	assert_int_equal(fake.last_kind, JOB_STEP_WRITE);
	assert_string_equal(console_take(con), "x");
	assert_int_equal(registry_find_key(fx->reg, ARGON_ID)->s.mode, DEVICE_MODE_NORMAL);
	fx_free(fx); /* the daemon stops during the write: the device is left as it is */
	assert_string_equal(console_take(con), "");
}

static void test_run_follows_its_device_across_reenumeration(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_CDC);
	struct job *job = submit(fx, PHOTON_ID, 0);
	struct transport_run *run = fake.run;
	job_set_state(job, JOB_REBOOTING);
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	assert_int_equal(run->device_events[DEVICE_EVENT_GONE], 1);
	assert_false(job_device(job)->present);
	fake_plug(fx->reg, PHOTON_ID, "1-3", PHOTON_DFU); /* back in DFU on another port */
	spin(fx);
	assert_int_equal(run->device_events[DEVICE_EVENT_BACK], 1);
	assert_true(job_device(job)->present);
	assert_string_equal(job_device(job)->key, PHOTON_ID);
	assert_string_equal(job_device(job)->port_path, "1-3");
	assert_int_equal(job_device(job)->mode, DEVICE_MODE_DFU);
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	fx_free(fx);
}

/* The replug rule: a device that leaves mid-job is waited for; when it comes
 * back (another port), the job starts its transport again: one job, one end. */
static void test_device_gone_mid_job_waits_and_resumes_when_it_is_back(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	jobs_set_replug_timeout(fx->jobs, 5);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	assert_int_equal(fake.starts, 1);
	job_set_state(job, JOB_WRITING);
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	struct error e;
	error_init(&e);
	error_set(&e, ERR_DEVICE_GONE, "fake: the device disappeared during download");
	job_finish(job, JOB_RESULT_FAILED, NULL, &e);
	spin(fx);
	assert_false(job_ended(job));
	assert_int_equal(job_state(job), JOB_WAITING_FOR_DEVICE);
	assert_int_equal(count_events(fx, job, "job-ended"), 0);
	fake_plug(fx->reg, PHOTON_ID, "1-3", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.starts, 2);
	assert_string_equal(job_device(job)->port_path, "1-3");
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	spin(fx);
	assert_string_equal(ended_result(fx, job), "done");
	assert_int_equal(count_events(fx, job, "job-ended"), 1);
	fx_free(fx);
}

/* ... and when it does not come back in replug_timeout_s, device-gone says
 * what was and was not written. */
static void test_device_gone_for_good_names_what_was_not_written(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	jobs_set_replug_timeout(fx->jobs, 1);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_WRITING);
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	struct error e;
	error_init(&e);
	error_set(&e, ERR_DEVICE_GONE, "fake: gone");
	job_finish(job, JOB_RESULT_FAILED, NULL, &e);
	spin(fx);
	assert_false(job_ended(job));
	spin_for(fx, 2100);
	assert_true(job_ended(job));
	assert_string_equal(ended_code(fx, job), "device-gone");
	const struct error *je = job_error(job);
	assert_non_null(strstr(je->message, "did not come back within 1 s"));
	assert_non_null(json_object_get(je->detail, "not_written"));
	assert_int_equal(json_integer_value(json_object_get(je->detail, "waited_s")), 1);
	assert_int_equal(fake.starts, 1);
	fx_free(fx);
}

/* replug_timeout_s = 0: device-gone at once. */
static void test_device_gone_without_replug_wait_ends_at_once(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	jobs_set_replug_timeout(fx->jobs, 0);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	struct error e;
	error_init(&e);
	error_set(&e, ERR_DEVICE_GONE, "fake: gone");
	job_finish(job, JOB_RESULT_FAILED, NULL, &e);
	spin(fx);
	assert_true(job_ended(job));
	assert_string_equal(ended_code(fx, job), "device-gone");
	fx_free(fx);
}

static void test_daemon_stop_interrupts_running_jobs(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	fake_plug(fx->reg, PHOTON_ID, "1-1", PHOTON_DFU);
	struct job *job = submit(fx, PHOTON_ID, 0);
	job_set_state(job, JOB_WRITING);
	json_t *events = json_incref(fx->events);
	char id[64];
	snprintf(id, sizeof(id), "%s", job_id(job));
	fx_free(fx);
	json_t *last = json_array_get(events, json_array_size(events) - 1);
	assert_string_equal(json_string_value(json_object_get(last, "event")), "job-ended");
	assert_string_equal(json_string_value(json_object_get(last, "job")), id);
	assert_string_equal(json_string_value(json_object_get(last, "result")), "interrupted");
	assert_int_equal(fake.frees, 1);
	json_decref(events);
}

static void test_job_ids_are_uuids(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct job *a = submit(fx, ARGON_ID, -1);
	struct job *b = submit(fx, ARGON_ID, -1);
	assert_int_equal(strlen(job_id(a)), 36);
	assert_int_equal(job_id(a)[14], '4');
	assert_string_not_equal(job_id(a), job_id(b));
	assert_true(jobs_find(fx->jobs, job_id(b)) == b);
	fx_free(fx);
}

static void test_job_limit_is_too_many_jobs(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	for (int i = 0; i < 8; i++)
		submit(fx, ARGON_ID, -1);
	struct job_request jr;
	struct error err;
	memset(&jr, 0, sizeof(jr));
	error_init(&err);
	jr.opts.wait_ms = -1;
	assert_null(jobs_create(fx->jobs, &jr, &err));
	assert_int_equal(err.code, ERR_TOO_MANY_JOBS);
	error_clear(&err);
	fx_free(fx);
}

/* Fair share (issue 16): one uid's jobs, and its jobs waiting for a device, are limited;
 * another uid is not held back by them. */
static struct job *create_as(struct fx *fx, uid_t uid, int wait_ms, struct error *err)
{
	struct job_request jr;
	memset(&jr, 0, sizeof(jr));
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", ARGON_ID);
	jr.opts.wait_ms = wait_ms;
	jr.uid = uid;
	return jobs_create(fx->jobs, &jr, err);
}

static void test_per_uid_limits_are_too_many_jobs(void **state)
{
	(void)state;
	struct fx *fx = fx_new(only_serial);
	struct error err;
	error_init(&err);
	jobs_set_uid_limits(fx->jobs, 3, 2);
	assert_non_null(create_as(fx, 1000, -1, &err));
	assert_non_null(create_as(fx, 1000, 5000, &err));
	assert_null(create_as(fx, 1000, -1, &err)); /* a third waiting one */
	assert_int_equal(err.code, ERR_TOO_MANY_JOBS);
	assert_non_null(strstr(err.message, "waiting"));
	error_clear(&err);
	assert_non_null(create_as(fx, 1000, 0, &err)); /* not waiting: the third job */
	assert_null(create_as(fx, 1000, 0, &err));     /* a fourth */
	assert_int_equal(err.code, ERR_TOO_MANY_JOBS);
	error_clear(&err);
	assert_non_null(create_as(fx, 1001, -1, &err)); /* another uid */
	fx_free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_job_runs_through_every_transport_state_to_done),
	    cmocka_unit_test(test_progress_reports_bytes_percent_and_rate),
	    cmocka_unit_test(test_failed_job_carries_the_transport_error),
	    cmocka_unit_test(test_partial_write_is_described_in_the_job_record),
	    cmocka_unit_test(test_transport_that_cannot_start_fails_the_job),
	    cmocka_unit_test(test_device_no_transport_serves_is_not_flashable_here),
	    cmocka_unit_test(test_job_whose_device_never_appears_times_out),
	    cmocka_unit_test(test_without_wait_a_missing_device_fails_at_once),
	    cmocka_unit_test(test_waiting_job_starts_when_its_device_appears),
	    cmocka_unit_test(test_one_job_per_device_second_waits_in_queue),
	    cmocka_unit_test(test_devices_run_jobs_in_parallel),
	    cmocka_unit_test(test_cancel_in_every_state),
	    cmocka_unit_test(test_cancel_ignored_by_transport_ends_after_grace),
	    cmocka_unit_test(test_read_without_answer_goes_to_the_next_transport),
	    cmocka_unit_test(test_read_nobody_answers_is_not_flashable_here),
	    cmocka_unit_test(test_read_nobody_answers_names_every_reason),
	    cmocka_unit_test(test_core_runs_read_plan_write_reboot_verify),
	    cmocka_unit_test(test_verify_without_the_whole_module_list_is_not_verified_not_missing),
	    cmocka_unit_test(test_core_refuses_before_any_write),
	    cmocka_unit_test(test_read_keep_goes_to_the_write_or_back_to_the_transport),
	    cmocka_unit_test(test_peek_by_ctrl_then_the_console_reads_a_device_on_5x),
	    cmocka_unit_test(test_peek_by_ctrl_plans_a_device_on_6x_from_that_read),
	    cmocka_unit_test(test_peek_without_answer_goes_to_the_console_quietly),
	    cmocka_unit_test(test_peek_failing_device_busy_fails_the_job),
	    cmocka_unit_test(test_peek_failing_is_read_by_the_console),
	    cmocka_unit_test_setup_teardown(
		test_kept_listening_is_given_back_once_when_no_serial_step_follows, console_setup,
		console_teardown),
	    cmocka_unit_test_setup_teardown(test_a_failed_hand_back_is_the_jobs_left_listening_note,
					    console_setup, console_teardown),
	    cmocka_unit_test_setup_teardown(
		test_kept_listening_is_not_given_back_before_a_serial_write, console_setup,
		console_teardown),
	    cmocka_unit_test_setup_teardown(
		test_kept_listening_is_given_back_once_before_a_ctrl_write, console_setup,
		console_teardown),
	    cmocka_unit_test(test_cancel_while_the_core_waits_for_the_reboot),
	    cmocka_unit_test(test_run_follows_its_device_across_reenumeration),
	    cmocka_unit_test(test_device_gone_mid_job_waits_and_resumes_when_it_is_back),
	    cmocka_unit_test(test_device_gone_for_good_names_what_was_not_written),
	    cmocka_unit_test(test_device_gone_without_replug_wait_ends_at_once),
	    cmocka_unit_test(test_daemon_stop_interrupts_running_jobs),
	    cmocka_unit_test(test_job_ids_are_uuids),
	    cmocka_unit_test(test_job_limit_is_too_many_jobs),
	    cmocka_unit_test(test_per_uid_limits_are_too_many_jobs),
	    cmocka_unit_test(test_device_is_held_by_a_running_or_not_yet_scheduled_job),
	    cmocka_unit_test(test_waiting_job_waits_for_the_tty_of_a_cdc_device),
	    cmocka_unit_test(test_wait_runs_out_naming_a_device_whose_tty_never_came),
	    cmocka_unit_test(test_progress_held_by_the_rate_limit_goes_out),
	    cmocka_unit_test(test_read_back_without_the_devices_report_is_not_verified),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
