/*
 * The serial transport (transport.h): a step executor for a CDC device running
 * Device OS <= 5.x, over its listening-mode console and its YMODEM receiver.
 *
 *   READ    cdc_query: `v`, `i`, `s` (28800 baud first if the device was not
 *           listening; the device is given back as it was found, or kept
 *           listening with step->keep_listening); a device that stays silent has
 *           no console now (no_answer)
 *   WRITE   one image: 28800 baud (mode_switch.h) unless the device listens
 *           already, `v` to see it does, then YMODEM; the step ends when the
 *           device took the file (it resets to apply it: the core waits)
 *   VERIFY  cdc_query after the reboot: the modules and their verdicts
 *
 * Sub-machines (console, ymodem, cdc_query) report through callbacks; the run
 * moves on from a deferred "kick" event so that they are never freed from
 * inside their own callbacks.
 */
#include "cdc_query.h"
#include "console.h"
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
	RUN_PROBE,	 /* WRITE: `v` before the transfer */
	RUN_LISTEN_WAIT, /* 28800 set, waiting before probing again */
	RUN_SEND,
	RUN_QUERY, /* READ, VERIFY: cdc_query reads `v` `i` `s` */
	RUN_ENDED,
};

struct transport_run {
	struct job *job;
	struct job_step step; /* the step this run executes */
	struct event_base *base;
	enum run_state state;
	struct serial_port *port;
	struct console *console;
	struct ymodem *ymodem;
	struct cdc_query *query;
	struct event *kick, *timer;
	struct device_facts facts;
	struct preflight_step cur; /* WRITE: the image */
	unsigned listen_asks;	   /* 28800 sent by this run (at most twice) */
	bool cancel;
	struct error pending; /* result of the last sub-machine */
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
	console_free(r->console);
	r->console = NULL;
	ymodem_free(r->ymodem);
	r->ymodem = NULL;
	serial_port_close(r->port);
	r->port = NULL;
}

/* Ends the step: res NULL and err set = failed. */
static void end_run(struct transport_run *r, const struct job_step_result *res, struct error *err)
{
	if (r->state == RUN_ENDED)
		return;
	r->state = RUN_ENDED;
	evtimer_del(r->timer);
	release_port(r);
	job_step_done(r->job, res, err);
}

static void fail(struct transport_run *r, struct error *err)
{
	end_run(r, NULL, err);
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

/* 28800 asks for listening mode (docs/device/console.md#magic-baud-rates), but the kernel's
 * cdc-acm sends SET_LINE_CODING only when the line coding changes: a port left at 28800
 * (an earlier job's verify, another program) would never reach the device.  Go through
 * 9600 first (mode_switch.h). */
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

/* ---- sending ---------------------------------------------------------------------------- */

static void on_ymodem_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct transport_run *r = ctx;
	job_progress(r->job, done, total);
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
	const struct preflight_step *s = &r->cur;
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
	job_set_state(r->job, JOB_WRITING);
	job_progress(r->job, 0, s->img->len); /* 0 % before the first block */
	return ymodem_start(r->ymodem, err);
}

/* ---- after a transfer --------------------------------------------------------------- */

/* docs/device/ymodem.md#cancellation INFERRED: on Gen 3 / P2 with 3.0-5.x a failed or cancelled
 * transfer leaves the update "running" and the next `f` is refused until reset
 * (capability.c's table; an unknown platform or version is not reset). */
static bool device_resettable_after_failure(const struct device_facts *f)
{
	return capability_has(CAPABILITY_RESET_AFTER_FAILED_TRANSFER, f->platform, facts_version(f),
			      false);
}

static void after_send_failure(struct transport_run *r)
{
	struct error *e = &r->pending;
	const struct preflight_step *s = &r->cur;
	if (e->code == ERR_DEVICE_REJECTED) {
		char diag[256];
		if (preflight_diagnose(&r->facts, s->img, diag, sizeof(diag), NULL))
			error_detail_str(e, "diagnosis", diag);
	}
	error_detail_str(e, "file", s->name ? s->name : "");
	struct job_step_result res = {.facts = r->facts};
	if (e->code == ERR_DEVICE_REJECTED && r->port && r->validation_failed) {
		/* docs/device/ymodem.md#end-of-transfer step 4: a reset follows a validation
		 * failure too: the core reports it once the device is back, so that the next
		 * job finds it ready */
		res.resets = true;
		end_run(r, &res, e);
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
	/* docs/device/ymodem.md#cancellation: the device refuses a second transfer until
	 * it resets: the core resets it (14400 -> DFU -> leave) before it reports the error */
	res.needs_reset = broke && r->port && device_resettable_after_failure(&r->facts);
	end_run(r, &res, e);
}

/* ---- the run's event loop side ------------------------------------------------------- */

/* Silence to `v` is what "not in listening mode" looks like
 * (docs/device/console.md#magic-baud-rates: entering prints nothing; 6.x has no console).
 * A timeout in a later phase is not.  Asked with r->pending a timed-out error of the
 * console's last run. */
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
		if (r->pending.code == ERR_TIMED_OUT && probe_silence(r) && r->listen_asks < 2) {
			/* not in listening mode: 28800 baud asks for it
			 * (docs/device/console.md#magic-baud-rates, <= 5.9.x); asked already,
			 * once more: the device may have been busy (leaving listening mode
			 * after the read's `x`, booting) when the line coding came */
			r->listen_asks++;
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
			if (r->pending.code == ERR_TIMED_OUT && probe_silence(r)) {
				char why[256];
				console_silence_reason(&r->facts, why, sizeof(why));
				error_prefix(&r->pending, "%s: ", why);
			}
			fail(r, &r->pending);
			return;
		}
		job_set_device_mode(r->job, DEVICE_MODE_LISTENING);
		if (start_send(r, &e) < 0)
			fail(r, &e);
		return;
	case RUN_SEND: {
		if (error_is_set(&r->pending)) {
			after_send_failure(r);
			return;
		}
		/* success: the device resets to apply the update
		 * (docs/device/ymodem.md#end-of-transfer); the core waits for it */
		job_progress(r->job, r->cur.img->len, r->cur.img->len);
		struct job_step_result res = {.facts = r->facts, .mode = DEVICE_MODE_UNKNOWN};
		end_run(r, &res, NULL);
		return;
	}
	default:
		return;
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct transport_run *r = arg;
	(void)fd;
	(void)what;
	if (r->state == RUN_LISTEN_WAIT) {
		r->state = RUN_PROBE;
		if (start_console(r, CONSOLE_PROBE, &r->pending) < 0)
			fail(r, &r->pending);
		return;
	}
}

/* ---- READ and VERIFY: the listening-mode console --------------------------------------- */

static void on_query_done(void *ctx, const struct cdc_query_result *res, struct error *err)
{
	struct transport_run *r = ctx;
	/* res and err live in the query: end_run() frees it, after they were read */
	if (err && res->no_listening_mode && r->step.kind == JOB_STEP_READ) {
		/* No console (Device OS 6.x, or an application that turned it off): the
		 * core asks another transport (control requests, DFU). */
		struct job_step_result none = {.facts = r->facts, .no_answer = true};
		char why[256];
		console_silence_reason(&r->facts, why, sizeof(why));
		struct error e;
		error_init(&e);
		error_set(&e, ERR_TIMED_OUT, "%s", why);
		error_detail_str(&e, "phase", "probe");
		end_run(r, &none, &e);
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
	struct job_step_result out = {.facts = res->facts, .kept_listening = res->kept_listening};
	out.mode = res->was_listening || res->kept_listening ? DEVICE_MODE_LISTENING
		   : cdc_query_facts_safe_mode(&res->facts)  ? DEVICE_MODE_SAFE
							     : DEVICE_MODE_NORMAL;
	end_run(r, &out, NULL);
}

/* The query asks for listening mode now: the job says so (not before: a device
 * that listens already is not switched). */
static void on_query_asking(void *ctx)
{
	struct transport_run *r = ctx;
	if (r->step.kind == JOB_STEP_READ && !r->step.probe)
		job_set_state(r->job, JOB_SWITCHING_MODE);
}

static int start_query(struct transport_run *r, struct error *err)
{
	struct cdc_query_config cfg = {.identify = r->step.kind == JOB_STEP_READ,
				       .relisten = r->step.kind == JOB_STEP_VERIFY,
				       .keep_listening =
					   r->step.kind == JOB_STEP_READ && r->step.keep_listening,
				       .asking = on_query_asking};
	const struct device_snapshot *dev = job_device(r->job);
	if (!dev->tty[0])
		return error_set(err, ERR_DEVICE_NOT_FOUND, "the device has no serial port now");
	/* known to run its firmware (the core asked its mode by control request, or
	 * an earlier verify saw it): no `v` first, whose silence would cost
	 * serial_probe_ms; a device that listens after all answers the `v` after 28800 */
	cfg.skip_first_probe = r->step.kind == JOB_STEP_READ && dev->mode == DEVICE_MODE_NORMAL;
	r->state = RUN_QUERY;
	if (r->step.kind == JOB_STEP_VERIFY)
		job_set_state(r->job, JOB_VERIFYING);
	else if (r->step.probe)
		job_set_state(r->job, JOB_PREFLIGHT);
	if (r->step.kind == JOB_STEP_VERIFY)
		r->facts.modules_known = false;
	r->query = cdc_query_start(r->base, dev->tty, &r->facts, &cfg, on_query_done, r, err);
	return r->query ? 0 : -1;
}

/* ---- vtable ------------------------------------------------------------------------------ */

static bool serial_can_serve(const struct device_snapshot *dev)
{
	/* a device that may have a console (an unknown version is tried) */
	return dev->mode != DEVICE_MODE_DFU && dev->tty[0] && has_console(&dev->facts);
}

static void serial_free(struct transport_run *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_run *, serial_free)

static int start_write(struct transport_run *r, struct error *err)
{
	const struct image *img =
	    r->step.n_images == 1 ? job_image(r->job, r->step.images[0]) : NULL;
	if (!img || img->n_modules == 0)
		return error_set(err, ERR_INTERNAL, "a serial write takes one image");
	r->cur = (struct preflight_step){.img = img,
					 .job_index = r->step.images[0],
					 .name = job_image_name(r->job, r->step.images[0]),
					 .module = &img->modules[0]};
	if (open_port(r, err) < 0)
		return -1;
	r->state = RUN_PROBE;
	if (job_device(r->job)->mode != DEVICE_MODE_LISTENING) {
		job_set_state(r->job, JOB_SWITCHING_MODE);
		/* not known to listen: ask for it first (28800,
		 * docs/device/console.md#magic-baud-rates); the `v` that follows waits in the
		 * device's buffer (docs/device/console.md#other-observations) */
		struct error be;
		error_init(&be);
		if (ask_listening(r, &be) == 0)
			r->listen_asks++;
		error_clear(&be);
	}
	return start_console(r, CONSOLE_PROBE, err);
}

static struct transport_run *serial_start(struct job *job, const struct job_step *step,
					  struct error *err)
{
	_cleanup_(serial_freep) struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	r->job = job;
	r->step = *step;
	r->base = job_event_base(job);
	error_init(&r->pending);
	r->facts = job_device(job)->facts;
	r->kick = event_new(r->base, -1, 0, on_kick, r);
	r->timer = evtimer_new(r->base, on_timer, r);
	if (!r->kick || !r->timer) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	switch (step->kind) {
	case JOB_STEP_READ:
	case JOB_STEP_VERIFY:
		return start_query(r, err) < 0 ? NULL : TAKE_PTR(r);
	case JOB_STEP_WRITE:
		return start_write(r, err) < 0 ? NULL : TAKE_PTR(r);
	default:
		error_set(err, ERR_INTERNAL, "the serial transport has no %s step",
			  job_step_kind_name(step->kind));
		return NULL;
	}
}

static void serial_cancel(struct transport_run *r)
{
	if (!r || r->state == RUN_ENDED)
		return;
	r->cancel = true;
	if (r->state == RUN_SEND && r->ymodem) {
		ymodem_cancel(r->ymodem); /* 'a' at the next block boundary */
		return;
	}
	struct error e;
	error_init(&e);
	error_set(&e, ERR_CANCELLED, "the job was cancelled before the transfer");
	error_detail_str(&e, "phase", r->state == RUN_QUERY ? "probe" : "preflight");
	fail(r, &e); /* releases the port: a device already listening stays so */
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
	free(r);
}

const struct transport_ops serial_transport = {
    .name = "serial",
    .can_serve = serial_can_serve,
    .rules = preflight_rules_serial,
    .start = serial_start,
    .cancel = serial_cancel,
    .free = serial_free,
    .timeouts = serial_timeouts,
};
