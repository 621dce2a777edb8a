/*
 * The serial transport (transport.h): a job on a CDC device running Device OS
 * <= 5.x.  Puts the device into listening mode (28800 baud,
 * docs/device/console.md#magic-baud-rates), reads `i`,
 * `v`, `s`, runs preflight, sends each image over YMODEM, waits for the
 * device to reset and come back, and verifies with `s` (then `x`).
 *
 *   OPEN -> PROBE -> PREFLIGHT -> SEND -> REBOOT -> VERIFY -> (next image: SEND)
 *
 * Sub-machines (console, ymodem) report through callbacks; the run moves on
 * from a deferred "kick" event so that they are never freed from inside
 * their own callbacks.
 */
#include "cdc_query.h"
#include "console.h"
#include "job_plan.h"
#include "mode_switch.h"
#include "port.h"
#include "preflight.h"
#include "transport.h"
#include "ymodem.h"

#include "capability.h"
#include "cleanup.h"
#include "platform.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static const struct timeout_def serial_timeouts[] = {
    CDC_QUERY_TIMEOUT_DEFS,
    {"serial_prompt_ms", 10000, "YMODEM: 'f' -> prompt"},
    {"serial_header_ms", 10000, "YMODEM: header -> ACK 'C'"},
    {"serial_block_ms", 10000, "YMODEM: data block -> ACK"},
    {"serial_final_ms", 70000, "YMODEM: empty header -> verdict (bootloader/NCP apply)"},
    {"serial_reenumerate_ms", 45000, "reset after a transfer -> device back on USB"},
    {NULL, 0, NULL},
};

enum run_state {
	RUN_PROBE,
	RUN_LISTEN_WAIT, /* 28800 set, waiting before probing again */
	RUN_SEND,
	RUN_REBOOT,
	RUN_REOPEN, /* back on USB, its tty node not openable yet */
	RUN_VERIFY,
	RUN_VERIFY_WAIT, /* 28800 asked again, waiting before the second probe */
	/* the device refused the module and resets (docs/device/ymodem.md#end-of-transfer): wait
	 * for it */
	RUN_REJECT_RESET,
	RUN_QUERY, /* a probe job (no images, dry run): cdc_query reads `v` `i` `s` */
	/* reset after a failed transfer on Gen 3 / P2 3.0-5.x (docs/device/ymodem.md#cancellation):
	 * 14400 -> DFU -> leave */
	RUN_RESET_DFU,	 /* 14400 set: waiting for the device in DFU mode */
	RUN_RESET_LEAVE, /* mode_switch_dfu_leave() */
	RUN_RESET_BACK,	 /* left: waiting for the device to run its firmware again */
	RUN_ENDED,
};

struct transport_run {
	struct job *job;
	struct event_base *base;
	enum run_state state;
	struct serial_port *port;
	struct console *console;
	struct ymodem *ymodem;
	struct cdc_query *query;
	struct dfu_leave *dfu_leave;
	struct event *kick, *timer;
	struct device_facts facts;
	struct job_plan *jp; /* the job's plan as this run executes it */
	struct preflight_plan plan;
	size_t step;
	uint64_t done_bytes, total_bytes;
	bool tried_listen;
	bool verify_relisten; /* the verify probe asked for listening mode twice */
	bool saw_gone;	      /* the device left USB since the transfer ended */
	unsigned reopen_attempts;
	bool cancel;
	struct error pending; /* result of the last sub-machine */
	struct error verdict; /* device-rejected, reported once the device is back */
	bool sub_done;
	bool validation_failed; /* the last transfer ended in the device's validation verdict */
	uint64_t sent_bytes;	/* of the last transfer, acknowledged by the device */
	char tty[DEVICE_PATH_MAX];
};

static void run_kick(struct transport_run *r)
{
	event_active(r->kick, 0, 0);
}

static void release_port(struct transport_run *r)
{
	cdc_query_free(r->query);
	r->query = NULL;
	mode_switch_dfu_leave_free(r->dfu_leave);
	r->dfu_leave = NULL;
	console_free(r->console);
	r->console = NULL;
	ymodem_free(r->ymodem);
	r->ymodem = NULL;
	serial_port_close(r->port);
	r->port = NULL;
}

static void end_run(struct transport_run *r, enum job_result result, const char *word,
		    struct error *err)
{
	if (r->state == RUN_ENDED)
		return;
	r->state = RUN_ENDED;
	evtimer_del(r->timer);
	release_port(r);
	job_finish(r->job, result, word, err);
}

static void fail(struct transport_run *r, struct error *err)
{
	enum job_result res = err->code == ERR_CANCELLED ? JOB_RESULT_CANCELLED : JOB_RESULT_FAILED;
	end_run(r, res, NULL, err);
}

static void arm(struct transport_run *r, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

/* ---- console --------------------------------------------------------------------- */

static void on_console_done(void *ctx, struct error *err)
{
	struct transport_run *r = ctx;
	r->sub_done = true;
	error_clear(&r->pending);
	if (err)
		error_move(&r->pending, err);
	run_kick(r);
}

static int open_port(struct transport_run *r, struct error *err)
{
	if (r->port)
		return 0;
	const struct device_snapshot *dev = job_device(r->job);
	if (!dev->tty[0])
		return error_set(err, ERR_DEVICE_NOT_FOUND, "the device has no serial port now");
	snprintf(r->tty, sizeof(r->tty), "%s", dev->tty);
	const char *lock_dir = getenv("FLASHD_LOCK_DIR");
	if (serial_port_open(r->tty, lock_dir, &r->port, err) < 0) {
		error_detail_str(err, "device", dev->key);
		return -1;
	}
	return 0;
}

static int start_console(struct transport_run *r, unsigned steps, struct error *err)
{
	struct console_config cfg;
	console_config_default(&cfg);
	cfg.probe_ms = timeout_ms("serial_probe_ms");
	cfg.reply_ms = timeout_ms("serial_reply_ms");
	cfg.slow_reply_ms = timeout_ms("serial_slow_reply_ms");
	console_free(r->console);
	struct console_ops ops = {r, on_console_done};
	r->console = console_new(r->base, r->port->fd, &cfg, &ops);
	if (!r->console)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	r->sub_done = false;
	/* keep what the registry knew (platform from USB ids) under the console's facts */
	return console_run(r->console, steps, &r->facts, err);
}

/* 28800 asks for listening mode (docs/device/console.md#magic-baud-rates), but the kernel's cdc-acm
 * sends
 * SET_LINE_CODING only when the line coding changes: a port left at 28800
 * (an earlier job's verify, another program) would never reach the device.
 * Go through 9600 first. */
static int ask_listening(struct transport_run *r, struct error *err)
{
	return mode_switch_listening(r->port, err);
}

/* The system module version the capability table asks with (capability.h). */
static uint16_t facts_version(const struct device_facts *f)
{
	return capability_version(f->os_version, f->system_version);
}

/* Whether the device has the listening-mode console this transport works
 * through (Device OS 6.0.0 removed it); an unknown version is tried. */
static bool has_console(const struct device_facts *f)
{
	return capability_has(CAPABILITY_LISTENING_CONSOLE, f->platform, facts_version(f), true);
}

/* ---- preflight and sending --------------------------------------------------------- */

static void on_ymodem_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct transport_run *r = ctx;
	(void)total;
	job_progress(r->job, r->done_bytes + done, r->total_bytes);
}

static void on_ymodem_done(void *ctx, const struct ymodem_result *res, struct error *err)
{
	struct transport_run *r = ctx;
	r->validation_failed = res->validation_failed;
	r->sent_bytes = res->bytes_sent;
	r->sub_done = true;
	error_clear(&r->pending);
	if (err)
		error_move(&r->pending, err);
	run_kick(r);
}

static int start_send(struct transport_run *r, struct error *err)
{
	const struct preflight_step *s = &r->plan.steps[r->step];
	struct ymodem_config cfg;
	ymodem_config_default(&cfg);
	cfg.prompt_ms = timeout_ms("serial_prompt_ms");
	cfg.header_ms = timeout_ms("serial_header_ms");
	cfg.block_ms = timeout_ms("serial_block_ms");
	cfg.final_ms = timeout_ms("serial_final_ms");
	ymodem_free(r->ymodem);
	struct ymodem_ops ops = {r, on_ymodem_progress, on_ymodem_done};
	r->ymodem = ymodem_new(r->base, r->port->fd, r->port->fd, s->img->data, s->img->len,
			       s->name, &cfg, &ops);
	if (!r->ymodem)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	r->sub_done = false;
	r->state = RUN_SEND;
	if (r->jp)
		job_plan_write_step(r->job, r->jp, r->step);
	job_set_state(r->job, JOB_WRITING);
	job_progress(r->job, r->done_bytes, r->total_bytes); /* 0 % before the first block */
	return ymodem_start(r->ymodem, err);
}

static void do_preflight(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	job_set_state(r->job, JOB_PREFLIGHT);
	size_t n = job_image_count(r->job);
	if (n == 0) {
		end_run(r, JOB_RESULT_DONE, "probed", NULL);
		return;
	}
	struct preflight_rules rules;
	preflight_rules_serial(&r->facts, &rules);
	if (!r->jp)
		r->jp = malloc(sizeof(*r->jp));
	if (!r->jp) {
		error_set(&e, ERR_OUT_OF_MEMORY, NULL);
		fail(r, &e);
		return;
	}
	if (job_plan_make(r->job, PLAN_TRANSPORT_SERIAL, &r->facts, DEVICE_MODE_LISTENING, r->tty,
			  &rules, r->jp, &e) < 0) {
		fail(r, &e);
		return;
	}
	r->plan = r->jp->pre;
	if (r->jp->handoff) {
		/* the plan writes first over another transport (plan.c's table), which
		 * makes its own checks, also for a dry run */
		char why[200];
		if (!has_console(&r->facts))
			snprintf(why, sizeof(why),
				 "Device OS %s has no YMODEM flashing (removed in 6.0.0)",
				 r->facts.os_version[0] ? r->facts.os_version : "6.x");
		else
			plan_step_describe(&r->jp->plan.steps[0], why, sizeof(why));
		release_port(r);
		r->state = RUN_ENDED;
		evtimer_del(r->timer);
		/* Device OS 6.x enters DFU mode by control request: the control-request
		 * transport asks for it (and falls back to DFU's 14400 baud) */
		const char *to = r->jp->handoff;
		if (strcmp(to, "dfu") == 0 &&
		    capability_has(CAPABILITY_CONTROL_REQUESTS, r->facts.platform,
				   facts_version(&r->facts), false) &&
		    transport_find("ctrl") && job_device(r->job)->busnum)
			to = "ctrl";
		job_handoff(r->job, to, why);
		return;
	}
	if (job_options(r->job)->dry_run) {
		end_run(r, JOB_RESULT_DONE, "preflight-ok", NULL);
		return;
	}
	if (r->jp->plan.n_writes == 0) {
		/* every file is installed already: give the device back running */
		/* ignored: a device that left listening mode by itself needs no `x` */
		if (r->port)
			(void)!write(r->port->fd, "x", 1);
		job_set_device_mode(r->job, cdc_query_facts_safe_mode(&r->facts)
						? DEVICE_MODE_SAFE
						: DEVICE_MODE_NORMAL);
		end_run(r, JOB_RESULT_DONE, "already-installed", NULL);
		return;
	}
	r->total_bytes = 0;
	for (size_t i = 0; i < r->plan.n_steps; i++)
		r->total_bytes += r->plan.steps[i].img->len;
	r->step = 0;
	r->done_bytes = 0;
	if (start_send(r, &e) < 0)
		fail(r, &e);
}

/* ---- after a transfer --------------------------------------------------------------- */

/* docs/device/ymodem.md#cancellation INFERRED: on Gen 3 / P2 with 3.0-5.x a failed or cancelled
 * transfer
 * leaves the update "running" and the next `f` is refused until reset
 * (capability.c's table; an unknown platform or version is not reset). */
static bool device_resettable_after_failure(const struct device_facts *f)
{
	return capability_has(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, f->platform, facts_version(f),
			      false);
}

static void after_send_failure(struct transport_run *r)
{
	struct error *e = &r->pending;
	const struct preflight_step *s = &r->plan.steps[r->step];
	if (e->code == ERR_DEVICE_REJECTED) {
		char diag[256];
		if (preflight_diagnose(&r->facts, s->img, diag, sizeof(diag), NULL))
			error_detail_str(e, "diagnosis", diag);
	}
	error_detail_str(e, "file", s->name ? s->name : "");
	if (r->step > 0 && error_detail_type(e->code, "phase"))
		error_prefix(e, "image %zu of %zu (%s): ", r->step + 1, r->plan.n_steps, s->name);
	if (e->code == ERR_DEVICE_REJECTED && r->port && r->validation_failed) {
		/* docs/device/ymodem.md#end-of-transfer step 4: a reset follows a validation
		 * failure too.  Report
		 * once the device is back, so that the next job finds it ready. */
		error_move(&r->verdict, e);
		release_port(r);
		r->state = RUN_REJECT_RESET;
		job_set_state(r->job, JOB_REBOOTING);
		arm(r, timeout_ms("serial_reenumerate_ms"));
		return;
	}
	bool broke =
	    e->code == ERR_TRANSFER_FAILED || e->code == ERR_CANCELLED || e->code == ERR_TIMED_OUT;
	if ((broke || e->code == ERR_DEVICE_GONE) && r->sent_bytes > 0 &&
	    r->sent_bytes < s->img->len) {
		/* the blocks went into the OTA region, not over the module */
		struct job_partial p = {.image = s->job_index,
					.function = s->module->function,
					.index = s->module->index,
					.staged = true,
					.bytes_written = r->sent_bytes,
					.size = s->img->len,
					.chunk = -1};
		job_set_partial(r->job, &p);
	}
	if (broke && r->port && device_resettable_after_failure(&r->facts)) {
		struct error be;
		error_init(&be);
		if (mode_switch_dfu_on_port(r->port, &be) == 0) {
			/* docs/device/ymodem.md#cancellation: reset it (14400 -> DFU -> leave)
			 * before the error is
			 * reported, so that a retry finds it ready. */
			error_move(&r->verdict, e);
			release_port(r);
			r->state = RUN_RESET_DFU;
			job_set_state(r->job, JOB_SWITCHING_MODE);
			job_note(r->job, "resetting-device",
				 "the device refuses a second transfer until it resets (Gen 3/P2 "
				 "with Device OS 3.0-5.x): resetting it through DFU mode (14400 "
				 "baud, then DFU leave)");
			arm(r, timeout_ms("serial_reenumerate_ms"));
			return;
		}
		error_clear(&be);
	}
	fail(r, e);
}

/* This transport's writes are done: the plan goes on over another transport, which
 * plans again without the files written here. */
static void continue_plan(struct transport_run *r)
{
	char why[160];
	snprintf(why, sizeof(why), "the plan goes on over %s",
		 strcmp(r->jp->then, "dfu") == 0 ? "DFU" : r->jp->then);
	release_port(r);
	r->state = RUN_ENDED;
	evtimer_del(r->timer);
	job_handoff(r->job, r->jp->then, why);
}

/* booted-invalid naming every invalid module the device reports and its failing checks. */
static void booted_invalid_device(struct transport_run *r, json_t *invalid, struct error *e)
{
	json_t *checks = json_array();
	char names[256] = "";
	size_t i;
	json_t *m;
	json_array_foreach(invalid, i, m)
	{
		size_t k;
		json_t *c;
		json_array_foreach(json_object_get(m, "failed_checks"), k, c)
		{
			bool have = false;
			size_t j;
			json_t *x;
			json_array_foreach(checks, j, x) have |= json_equal(x, c);
			if (!have)
				json_array_append(checks, c);
		}
		size_t len = strlen(names);
		snprintf(names + len, sizeof(names) - len, "%s%s (version %d)", i ? ", " : "",
			 json_string_value(json_object_get(m, "module")),
			 (int)json_integer_value(json_object_get(m, "version")));
	}
	error_set(e, ERR_BOOTED_INVALID,
		  "the firmware was written, but after the reboot the device reports %s invalid "
		  "(see invalid_modules): it would run safe mode",
		  names);
	error_detail_json(e, "failed_checks", checks);
	error_detail_json(e, "invalid_modules", invalid);
	error_detail_str(e, "mode", "listening");
	json_t *first = json_array_get(invalid, 0);
	error_detail_str(e, "module_function",
			 json_string_value(json_object_get(first, "function")));
	job_set_device_mode(r->job, DEVICE_MODE_LISTENING); /* no `x`: left to the user */
}

/* The flashed module as the device reports it after its reboot. */
static void verify_step(struct transport_run *r)
{
	const struct preflight_step *s = &r->plan.steps[r->step];
	const struct image_module *m = s->module;
	const struct installed_module *im = preflight_installed(&r->facts, m->function, m->index);
	struct error e;
	error_init(&e);
	if (!im || im->version != m->version || !installed_module_valid(im)) {
		json_t *checks = json_array();
		if (!im || im->version != m->version)
			json_array_append_new(checks, json_string("missing"));
		else {
			const char *names[MODULE_CHECKS_MAX];
			unsigned n = module_checks_failed(im->checked, im->passed, names);
			for (unsigned c = 0; c < n; c++)
				json_array_append_new(checks, json_string(names[c]));
		}
		char desc[128];
		image_module_describe(m, desc, sizeof(desc));
		error_set(&e, ERR_BOOTED_INVALID,
			  "%s was written, but after the reboot the device %s", desc,
			  !im			      ? "does not list it"
			  : im->version != m->version ? "still reports another version"
						      : "marks it invalid");
		error_detail_json(&e, "failed_checks", checks);
		error_detail_str(&e, "mode", "listening");
		job_set_device_mode(r->job, DEVICE_MODE_LISTENING); /* no `x`: left to the user */
		error_detail_str(&e, "module_function", module_function_name(m->function));
		error_detail_str(&e, "file", s->name ? s->name : "");
		end_run(r, JOB_RESULT_FAILED, "booted-invalid", &e);
		return;
	}
	r->done_bytes += s->img->len;
	job_mark_written(r->job, s->job_index);
	if (++r->step < r->plan.n_steps) {
		if (start_send(r, &e) < 0)
			fail(r, &e);
		return;
	}
	/* verified means the whole device: every module it reports valid (issue 11) */
	json_t *invalid = json_array();
	if (plan_invalid_modules(&r->facts, invalid) > 0) {
		booted_invalid_device(r, invalid, &e);
		end_run(r, JOB_RESULT_FAILED, "booted-invalid", &e);
		return;
	}
	json_decref(invalid);
	if (r->jp && r->jp->then) {
		continue_plan(r);
		return;
	}
	/* leave listening mode: the new firmware runs (docs/device/console.md#commands `x`), in
	 * safe mode if a
	 * module it did not flash is invalid */
	/* ignored: the verdict stands even if the device left listening mode already */
	if (r->port)
		(void)!write(r->port->fd, "x", 1);
	job_set_device_mode(r->job, cdc_query_facts_safe_mode(&r->facts) ? DEVICE_MODE_SAFE
									 : DEVICE_MODE_NORMAL);
	end_run(r, JOB_RESULT_DONE, "verified", NULL);
}

/* ---- reset after a failed transfer (docs/device/ymodem.md#cancellation)
 * ---------------------------------------------- */

/* The reset did not complete: say where the device is, then the original error. */
static void reset_incomplete(struct transport_run *r, const char *what, const char *why)
{
	job_note(r->job, "device-reset",
		 "%s%s; the device may still be in DFU mode: flashing again goes over DFU, whose "
		 "leave resets it (or reset the device to run its firmware)",
		 what, why);
	fail(r, &r->verdict);
}

static void on_dfu_leave_done(void *ctx, struct error *err)
{
	struct transport_run *r = ctx;
	if (r->state != RUN_RESET_LEAVE)
		return;
	mode_switch_dfu_leave_free(r->dfu_leave);
	r->dfu_leave = NULL;
	if (err && err->code != ERR_DEVICE_GONE) {
		reset_incomplete(r, "leaving DFU mode failed: ", err->message);
		return;
	}
	/* left (or the reset overtook the leave's GETSTATUS,
	 * docs/device/dfuse.md#requests-and-states) */
	r->state = RUN_RESET_BACK;
	job_set_state(r->job, JOB_REBOOTING);
	arm(r, timeout_ms("serial_reenumerate_ms"));
}

static void reset_device_event(struct transport_run *r, enum device_event ev,
			       const struct device_snapshot *dev)
{
	struct error e;
	error_init(&e);
	switch (r->state) {
	case RUN_RESET_DFU:
		if (!dev->present || dev->mode != DEVICE_MODE_DFU || !dev->usb_devnode[0])
			return;
		evtimer_del(r->timer);
		job_set_device_mode(r->job, DEVICE_MODE_DFU);
		r->state = RUN_RESET_LEAVE;
		r->dfu_leave = mode_switch_dfu_leave(r->base, dev->busnum, dev->devnum,
						     dev->usb_devnode, on_dfu_leave_done, r, &e);
		if (!r->dfu_leave) {
			reset_incomplete(r, "", e.message);
			error_clear(&e);
			return;
		}
		arm(r, timeout_ms("serial_reenumerate_ms"));
		return;
	case RUN_RESET_LEAVE:
		if (ev == DEVICE_EVENT_GONE) {
			/* the device reset: the leave is done whatever its GETSTATUS says */
			mode_switch_dfu_leave_free(r->dfu_leave);
			r->dfu_leave = NULL;
			r->state = RUN_RESET_BACK;
			job_set_state(r->job, JOB_REBOOTING);
			arm(r, timeout_ms("serial_reenumerate_ms"));
		}
		return;
	case RUN_RESET_BACK:
		if (!dev->present || dev->mode == DEVICE_MODE_DFU || !dev->tty[0])
			return;
		job_note(r->job, "device-reset",
			 "the device refuses a second transfer until it resets (Gen 3/P2 with "
			 "Device OS 3.0-5.x): flashd reset it (14400 baud, DFU leave) and it runs "
			 "its firmware again, ready for a retry");
		fail(r, &r->verdict);
		return;
	default:
		return;
	}
}

static void reset_timeout(struct transport_run *r)
{
	unsigned s = timeout_ms("serial_reenumerate_ms") / 1000;
	char why[160];
	snprintf(why, sizeof(why),
		 r->state == RUN_RESET_DFU ? "the device did not come back in DFU mode within %u s"
		 : r->state == RUN_RESET_LEAVE ? "leaving DFU mode did not complete within %u s"
					       : "the device did not come back within %u s after "
						 "leaving DFU mode",
		 s);
	reset_incomplete(r, "", why);
}

/* ---- the run's event loop side ------------------------------------------------------- */

/* Silence to `v` is what "not in listening mode" looks like
 * (docs/device/console.md#magic-baud-rates: entering
 * prints nothing; 6.x has no console).  A timeout in a later phase is not.
 * Asked with r->pending a timed-out error of the console's last run. */
static bool probe_silence(const struct transport_run *r)
{
	return r->console && console_failed_phase(r->console) == CONSOLE_PHASE_PROBE;
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct transport_run *r = arg;
	(void)fd;
	(void)what;
	struct error e;
	error_init(&e);
	if (!r->sub_done || r->state == RUN_ENDED)
		return;
	r->sub_done = false;
	switch (r->state) {
	case RUN_PROBE:
		if (r->pending.code == ERR_TIMED_OUT && !probe_silence(r)) {
			/* a console answered (claim prompt, `i`, `s`) and then stalled */
			fail(r, &r->pending);
			return;
		}
		if (r->pending.code == ERR_TIMED_OUT && !r->tried_listen) {
			/* not in listening mode: 28800 baud asks for it
			 * (docs/device/console.md#magic-baud-rates, <= 5.9.x) */
			r->tried_listen = true;
			error_clear(&r->pending);
			job_set_state(r->job, JOB_SWITCHING_MODE);
			if (ask_listening(r, &e) < 0) {
				fail(r, &e);
				return;
			}
			r->state = RUN_LISTEN_WAIT;
			arm(r, timeout_ms("serial_listen_ms"));
			return;
		}
		if (error_is_set(&r->pending)) {
			if (r->pending.code == ERR_TIMED_OUT && transport_find("dfu")) {
				/* no listening mode over 28800: Device OS 6.x, or a
				 * console busy for another reason: say which.  The
				 * control-request transport reads a device of unknown or
				 * 6.x version and plans (asking for DFU by request; on
				 * <= 5.x, known here, the console should have answered and
				 * a plan there would come back here); else DFU switches
				 * with 14400 baud. */
				char why[256];
				console_silence_reason(&r->facts, why, sizeof(why));
				job_handoff(r->job,
					    transport_find("ctrl") && job_device(r->job)->busnum &&
						    (facts_version(&r->facts) == 0 ||
						     !has_console(&r->facts))
						? "ctrl"
						: "dfu",
					    why);
				r->state = RUN_ENDED;
				release_port(r);
				return;
			}
			fail(r, &r->pending);
			return;
		}
		job_set_device_mode(r->job, DEVICE_MODE_LISTENING);
		job_update_facts(r->job, &r->facts);
		/* Device OS 6.x (no YMODEM) included: the plan says which transport
		 * writes (plan.c's table), and hands the job over if it is not this one */
		do_preflight(r);
		return;
	case RUN_SEND:
		if (error_is_set(&r->pending)) {
			after_send_failure(r);
			return;
		}
		/* success: the device resets to apply the update
		 * (docs/device/ymodem.md#end-of-transfer) */
		job_progress(r->job, r->done_bytes + r->plan.steps[r->step].img->len,
			     r->total_bytes);
		release_port(r);
		r->state = RUN_REBOOT;
		if (r->jp)
			job_plan_step_kind(r->job, r->jp, PLAN_STEP_REBOOT, r->step);
		job_set_state(r->job, JOB_REBOOTING);
		arm(r, timeout_ms("serial_reenumerate_ms"));
		return;
	case RUN_VERIFY:
		if (r->pending.code == ERR_TIMED_OUT && probe_silence(r) && !r->verify_relisten &&
		    r->port) {
			/* The device may have been busy booting when the first
			 * SET_LINE_CODING came: change the line coding away and back
			 * (the device sees only changes, docs/device/console.md#magic-baud-rates)
			 * and probe once more. */
			r->verify_relisten = true;
			error_clear(&r->pending);
			if (mode_switch_listening(r->port, &e) < 0) {
				error_move(&r->pending, &e);
			} else {
				r->state = RUN_VERIFY_WAIT;
				arm(r, timeout_ms("serial_listen_ms"));
				return;
			}
		}
		if (error_is_set(&r->pending)) {
			/* written, but the device cannot be queried now */
			job_note(r->job, "not-verified", "%s", r->pending.message);
			error_clear(&r->pending);
			r->done_bytes += r->plan.steps[r->step].img->len;
			job_mark_written(r->job, r->plan.steps[r->step].job_index);
			if (r->step + 1 < r->plan.n_steps) {
				r->step++;
				if (start_send(r, &e) < 0)
					fail(r, &e);
				return;
			}
			if (r->jp && r->jp->then) {
				/* e.g. the system part just written is Device OS 6.x: no console,
				 * and the plan goes on over DFU */
				continue_plan(r);
				return;
			}
			end_run(r, JOB_RESULT_DONE, "written-not-verified", NULL);
			return;
		}
		job_update_facts(r->job, &r->facts);
		verify_step(r);
		return;
	default:
		return;
	}
}

/* verify: 28800 -> `s` (docs/device/console.md#magic-baud-rates,
 * docs/device/console.md#module-info-reply); the tty node may lag the USB event */
static void start_verify(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	r->state = RUN_VERIFY;
	if (r->jp && r->step + 1 == r->plan.n_steps && r->reopen_attempts == 0)
		job_plan_step_kind(r->job, r->jp, PLAN_STEP_VERIFY, 0);
	job_set_state(r->job, JOB_VERIFYING);
	if (open_port(r, &e) < 0) {
		if (e.code == ERR_DEVICE_NOT_FOUND && r->reopen_attempts++ < 40) {
			error_clear(&e);
			r->state = RUN_REOPEN;
			arm(r, 250);
			return;
		}
		error_move(&r->pending, &e);
		r->sub_done = true;
		run_kick(r);
		return;
	}
	if (ask_listening(r, &e) < 0)
		error_clear(&e);
	r->tried_listen = true;
	r->facts.modules_known = false;
	if (start_console(r, CONSOLE_PROBE | CONSOLE_INFO, &e) < 0) {
		error_move(&r->pending, &e);
		r->sub_done = true;
		run_kick(r);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct transport_run *r = arg;
	(void)fd;
	(void)what;
	if (r->state == RUN_LISTEN_WAIT) {
		r->state = RUN_PROBE;
		if (start_console(r, CONSOLE_PROBE | CONSOLE_IDENTIFY | CONSOLE_INFO, &r->pending) <
		    0)
			fail(r, &r->pending);
		return;
	}
	if (r->state == RUN_REOPEN) {
		start_verify(r);
		return;
	}
	if (r->state == RUN_VERIFY_WAIT) {
		r->state = RUN_VERIFY;
		if (start_console(r, CONSOLE_PROBE | CONSOLE_INFO, &r->pending) < 0) {
			r->sub_done = true;
			run_kick(r);
		}
		return;
	}
	if (r->state == RUN_REJECT_RESET) {
		fail(r, &r->verdict); /* the device did not come back: the verdict stands */
		return;
	}
	if (r->state == RUN_RESET_DFU || r->state == RUN_RESET_LEAVE ||
	    r->state == RUN_RESET_BACK) {
		reset_timeout(r);
		return;
	}
	if (r->state == RUN_REBOOT) {
		/* the device did not come back in time */
		end_run(r, JOB_RESULT_DONE, "written-not-verified", NULL);
	}
}

/* ---- probe jobs -------------------------------------------------------------------------- */

/* A job with no images and dry_run set (transport.h): read what the console
 * says and give the device back as it was found (cdc_query.h). */
static bool is_probe(const struct job *job)
{
	return job_image_count(job) == 0 && job_options(job)->dry_run;
}

static void on_query_done(void *ctx, const struct cdc_query_result *res, struct error *err)
{
	struct transport_run *r = ctx;
	if (err && res->no_listening_mode && transport_find("ctrl") && job_device(r->job)->busnum) {
		/* No console (Device OS 6.x, or an application that turned it off): the
		 * device may still answer USB control requests. */
		r->state = RUN_ENDED;
		evtimer_del(r->timer);
		release_port(r);
		job_handoff(r->job, "ctrl",
			    "the device did not answer on its listening-mode console; asking it by "
			    "USB control requests");
		return;
	}
	if (err && res->no_listening_mode) {
		/* Not an error for a probe: the device has no console to ask. */
		job_note(r->job, "no-console",
			 "the device did not answer on its listening-mode console (Device OS 6.x "
			 "has none; a running application may also disable it); flashd does not "
			 "switch a device to DFU mode for a probe, so only what USB says is known");
		end_run(r, JOB_RESULT_DONE, "probed", NULL);
		return;
	}
	if (err) {
		struct error e;
		error_init(&e);
		error_move(&e, err);
		error_detail_str(&e, "device", job_device(r->job)->key);
		fail(r, &e);
		return;
	}
	r->facts = res->facts;
	job_update_facts(r->job, &r->facts);
	job_set_device_mode(r->job, res->was_listening			   ? DEVICE_MODE_LISTENING
				    : cdc_query_facts_safe_mode(&r->facts) ? DEVICE_MODE_SAFE
									   : DEVICE_MODE_NORMAL);
	end_run(r, JOB_RESULT_DONE, "probed", NULL);
}

static int start_query(struct transport_run *r, struct error *err)
{
	struct cdc_query_config cfg = {.identify = true};
	const struct device_snapshot *dev = job_device(r->job);
	if (!dev->tty[0])
		return error_set(err, ERR_DEVICE_NOT_FOUND, "the device has no serial port now");
	r->state = RUN_QUERY;
	job_set_state(r->job, JOB_PREFLIGHT);
	r->query = cdc_query_start(r->base, dev->tty, &r->facts, &cfg, on_query_done, r, err);
	return r->query ? 0 : -1;
}

/* ---- vtable ------------------------------------------------------------------------------ */

static bool serial_can_serve(const struct device_snapshot *dev)
{
	if (dev->mode == DEVICE_MODE_DFU || !dev->tty[0])
		return false;
	return has_console(&dev->facts) || !transport_find("dfu");
}

static void serial_free(struct transport_run *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_run *, serial_free)

static struct transport_run *serial_start(struct job *job, struct error *err)
{
	_cleanup_(serial_freep) struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	r->job = job;
	r->base = job_event_base(job);
	error_init(&r->pending);
	error_init(&r->verdict);
	r->facts = job_device(job)->facts;
	r->kick = event_new(r->base, -1, 0, on_kick, r);
	r->timer = evtimer_new(r->base, on_timer, r);
	if (!r->kick || !r->timer) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	if (is_probe(job))
		return start_query(r, err) < 0 ? NULL : TAKE_PTR(r);
	if (open_port(r, err) < 0)
		return NULL;
	r->state = RUN_PROBE;
	job_set_state(job, JOB_SWITCHING_MODE);
	if (job_device(job)->mode != DEVICE_MODE_LISTENING) {
		/* not known to listen: ask for it first (28800,
		 * docs/device/console.md#magic-baud-rates); the bytes
		 * that follow wait in the device's buffer
		 * (docs/device/console.md#other-observations) */
		struct error be;
		error_init(&be);
		if (ask_listening(r, &be) == 0)
			r->tried_listen = true;
		error_clear(&be);
	}
	if (start_console(r, CONSOLE_PROBE | CONSOLE_IDENTIFY | CONSOLE_INFO, err) < 0)
		return NULL;
	return TAKE_PTR(r);
}

static void serial_cancel(struct transport_run *r)
{
	if (!r || r->state == RUN_ENDED)
		return;
	r->cancel = true;
	if (r->state == RUN_QUERY) {
		struct error qe;
		error_init(&qe);
		error_set(&qe, ERR_CANCELLED, "the probe was cancelled");
		error_detail_str(&qe, "phase", "probe");
		fail(r, &qe); /* releases the port: a device already listening stays so */
		return;
	}
	if (r->state == RUN_REJECT_RESET || r->state == RUN_RESET_DFU ||
	    r->state == RUN_RESET_LEAVE || r->state == RUN_RESET_BACK) {
		fail(r, &r->verdict); /* the transfer is over: its verdict stands */
		return;
	}
	if (r->state == RUN_SEND && r->ymodem) {
		ymodem_cancel(r->ymodem); /* 'a' at the next block boundary */
		return;
	}
	struct error e;
	error_init(&e);
	error_set(&e, ERR_CANCELLED, "the job was cancelled before the transfer");
	error_detail_str(&e, "phase", r->state == RUN_REBOOT ? "rebooting" : "preflight");
	fail(r, &e);
}

static void serial_device_event(struct transport_run *r, enum device_event ev,
				const struct device_snapshot *dev)
{
	if (r && (r->state == RUN_RESET_DFU || r->state == RUN_RESET_LEAVE ||
		  r->state == RUN_RESET_BACK)) {
		reset_device_event(r, ev, dev);
		return;
	}
	if (!r || (r->state != RUN_REBOOT && r->state != RUN_REJECT_RESET))
		return;
	if (ev == DEVICE_EVENT_GONE)
		r->saw_gone = true;
	if (ev == DEVICE_EVENT_BACK || (ev == DEVICE_EVENT_CHANGED && dev->present)) {
		if (!dev->tty[0] || dev->mode == DEVICE_MODE_DFU)
			return;
		if (r->state == RUN_REJECT_RESET) {
			if (ev == DEVICE_EVENT_CHANGED && !r->saw_gone)
				return; /* not reset yet */
			job_note(r->job, "device-reset",
				 "the device reset after refusing the module and is back");
			fail(r, &r->verdict);
			return;
		}
		evtimer_del(r->timer);
		r->reopen_attempts = 0;
		r->verify_relisten = false;
		start_verify(r);
	}
}

static void serial_free(struct transport_run *r)
{
	if (!r)
		return;
	release_port(r);
	if (r->kick)
		event_free(r->kick);
	if (r->timer)
		event_free(r->timer);
	error_clear(&r->pending);
	error_clear(&r->verdict);
	free(r->jp);
	free(r);
}

const struct transport_ops serial_transport = {
    .name = "serial",
    .can_serve = serial_can_serve,
    .start = serial_start,
    .cancel = serial_cancel,
    .device_event = serial_device_event,
    .free = serial_free,
    .timeouts = serial_timeouts,
};
