/*
 * The step driver (job_steps.h): READ -> PLAN -> the plan's steps -> verdict.
 *
 * One explicit phase at a time; the events are the end of a run's step
 * (job_step_done(), taken from the loop), the driver's timer (the waits'
 * timeouts), the DFU leave's completion and the device events the core
 * forwards.
 */
#include "job_steps.h"

#include "capability.h"
#include "cdc_query.h"
#include "job_plan.h"
#include "jobs.h"
#include "mode_switch.h"
#include "plan.h"
#include "port.h"
#include "preflight.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

enum phase {
	PH_IDLE,
	PH_READ,       /* a READ run */
	PH_ASK_DFU,    /* the ctrl run of an ENTER_DFU step */
	PH_ASK_LISTEN, /* the ctrl run of an ENTER_LISTENING step */
	PH_SWITCH_DFU, /* 14400 baud or the request sent: waiting for the device in DFU mode */
	PH_LEAVING,    /* mode_switch_dfu_leave() in flight */
	PH_WAIT_BACK,  /* waiting for the device to run its firmware again */
	PH_WRITE,      /* a WRITE run */
	PH_VERIFY,     /* a VERIFY run */
	PH_CHECK,      /* a CHECK run (a dry run) */
};

struct job_steps {
	struct job *job;
	struct event *timer; /* the waits' timeouts */
	struct event *cont;  /* continues after a step ended, from the loop */
	enum phase phase;
	struct job_plan *jp;
	bool planned;
	size_t next;			 /* the next plan step */
	size_t cur;			 /* the plan step of the running WRITE's first image */
	struct job_step step;		 /* the step running */
	const struct transport_ops *ops; /* its transport */
	const struct transport_ops *at;	 /* the transport the job is on (handed-to notes) */
	uint32_t no_answer;		 /* READ: transports that got no answer (bit per index) */
	bool switched_for_read;		 /* READ: the device was switched to DFU to be read */
	bool left;			 /* the last DFU write left DFU mode */
	bool saw_gone;			 /* the device left since the step began */
	bool wrote, read_back;
	bool wait_tty;	      /* PH_WAIT_BACK: the tty too */
	const char *wait_key; /* the timeout key of the wait */
	const char *end_word; /* the word when the plan's steps run out */
	struct dfu_leave *leave;
	/* a write failed and the device resets (by itself, or the core resets it): the
	 * waits end the job with this error once the device is back */
	bool resetting;
	bool leave_reset; /* ... through DFU mode (14400 baud, DFU leave) */
	struct error failed;
	/* the step that ended, taken from the loop */
	bool ended_step;
	bool have_res;
	struct job_step_result res;
	struct error err;
	/* what the READ reported, and who read it: the first WRITE (or CHECK) over the
	 * same transport with no step before it starts from it (job_step.read) */
	struct device_facts read_facts;
	const struct transport_ops *read_ops;
	/* what that READ kept open (job_step_result.keep), until the step that starts
	 * from it takes it, or anything else happens first (drop_kept()) */
	struct transport_keep *kept;
	const struct transport_ops *kept_ops;
	/* READ: every transport's reason it got no answer, in order ("serial: ...; ctrl: ...") */
	char no_answer_why[sizeof(((struct error *)0)->message)];
	/* the console's tty is held by another program (device-busy naming it): the job
	 * goes on through control requests alone, or ends with this error */
	bool tty_held;
	struct error held;
	/* the serial READ put the device in listening mode and left it there for the
	 * serial write that follows (step.keep_listening): given back (`x`) when the plan
	 * goes on otherwise; the mode it goes back to */
	bool kept_listening;
	enum device_mode kept_from;
	bool ctrl_first; /* the READ running is ctrl_first()'s */
	bool ctrl_peek;	 /* ... and only for the mode of a device not known yet */
	/* the peek failed (not silence): the console reads the device, and if it has no
	 * answer either this is the job's error, the first real cause */
	struct error peek_err;
};

static void advance(struct job_steps *s);
static void read_next(struct job_steps *s);

/* ---- small helpers ------------------------------------------------------------------ */

static struct job_steps *of(struct job *job)
{
	return *job_steps_slot(job);
}

static unsigned transport_bit(struct job *job, const struct transport_ops *ops)
{
	const struct transport_ops *const *t = job_transports(job);
	for (unsigned i = 0; t[i]; i++)
		if (t[i] == ops)
			return 1u << i;
	return 0;
}

static bool is_probe(struct job *job)
{
	return job_image_count(job) == 0 && job_options(job)->dry_run;
}

static void arm(struct job_steps *s, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(s->timer, &tv);
}

/* What the READ kept open goes back to its transport (nothing starts from it now). */
static void drop_kept(struct job_steps *s)
{
	if (s->kept && s->kept_ops && s->kept_ops->keep_free)
		s->kept_ops->keep_free(s->kept);
	s->kept = NULL;
	s->kept_ops = NULL;
}

static void stop_waits(struct job_steps *s)
{
	drop_kept(s);
	evtimer_del(s->timer);
	event_del(s->cont);
	mode_switch_dfu_leave_free(s->leave);
	s->leave = NULL;
}

static void give_back(struct job_steps *s);

static void end_job(struct job_steps *s, enum job_result result, const char *word,
		    struct error *err)
{
	give_back(s); /* nothing but the core's own `x` follows */
	stop_waits(s);
	s->phase = PH_IDLE;
	job_finish(s->job, result, word, err);
}

/* A byte read-back (--verify) proves what flash holds, not that the device accepts it and
 * boots: "verified" is the device's own verdict after the reboot, so this stays unverified. */
static void end_unverified(struct job_steps *s)
{
	if (s->read_back)
		job_note(s->job, "read-back",
			 "every byte written was read back over DFU and matched; the device's own "
			 "checks after the reboot were not read");
	end_job(s, JOB_RESULT_DONE, "written-not-verified", NULL);
}

static void fail(struct job_steps *s, struct error *err)
{
	end_job(s, err->code == ERR_CANCELLED ? JOB_RESULT_CANCELLED : JOB_RESULT_FAILED, NULL,
		err);
}

/* Ends the job with the error the step ended with. */
static void fail_with_step_error(struct job_steps *s)
{
	struct error e;
	error_init(&e);
	error_move(&e, &s->err);
	fail(s, &e);
}

/* The transport the job goes on with: a note when it changes (not for the first READ). */
static void handed_to(struct job_steps *s, const struct transport_ops *ops, const char *why)
{
	if (s->at && ops && s->at != ops) {
		char note[64];
		snprintf(note, sizeof(note), "handed-to-%s", ops->name);
		job_note(s->job, note, "%s", why);
	}
	s->at = ops;
}

/*
 * The device the READ left in listening mode goes back to its firmware: the plan
 * does not continue over the console (refused, nothing to write, a write over DFU
 * or control requests first).  Only the core knows whether a serial step follows,
 * so the READ does not send the `x` itself: an `x` followed at once by another
 * request for listening mode races it on the device, which then may take the
 * request first and leave listening mode after it (and the write's first byte goes
 * to the running application).
 */
static void give_back(struct job_steps *s)
{
	if (!s->kept_listening)
		return;
	s->kept_listening = false;
	const struct device_snapshot *dev = job_device(s->job);
	struct error err;
	error_init(&err);
	if (!dev->present)
		return; /* gone: it boots its firmware when it comes back */
	if (!dev->tty[0] || cdc_query_give_back(dev->tty, getenv("FLASHD_LOCK_DIR"), &err) < 0) {
		/* said in the job's record, not only the log: the device does not run its
		 * firmware until it is reset or sent `x` */
		job_note(s->job, "left-listening",
			 "the device stays in listening mode: sending it `x` failed (%s); reset it "
			 "or send `x` on its serial port to give it back to its firmware",
			 error_is_set(&err) ? err.message : "no serial port now");
		error_clear(&err);
		job_set_device_mode(s->job, DEVICE_MODE_LISTENING);
		return;
	}
	job_set_device_mode(s->job, s->kept_from);
}

/* Whether plan step i continues over the console the READ left listening. */
static bool serial_step_at(const struct job_steps *s, size_t i)
{
	if (!s->jp || i >= s->jp->plan.n_steps)
		return false;
	const struct plan_step *ps = &s->jp->plan.steps[i];
	return (ps->kind == PLAN_STEP_WRITE && ps->transport == PLAN_TRANSPORT_SERIAL) ||
	       (ps->kind == PLAN_STEP_SWITCH && ps->to == DEVICE_MODE_LISTENING);
}

static void step_why(struct job_steps *s, size_t i, char *buf, size_t size)
{
	plan_step_describe(&s->jp->plan.steps[i], buf, size);
}

static bool start_step(struct job_steps *s, const struct transport_ops *ops, enum phase phase,
		       struct error *err)
{
	drop_kept(s); /* reuse_read() took it, or no step starts from it */
	s->ops = ops;
	s->phase = phase;
	s->ended_step = false;
	return job_start_step(s->job, ops, &s->step, err);
}

/* ---- the waits ---------------------------------------------------------------------- */

static unsigned reenumerate_ms(const char *transport)
{
	char key[48];
	snprintf(key, sizeof(key), "%s_reenumerate_ms", transport);
	return timeout_ms(key);
}

/* transport: whose request or baud rate switched it ("dfu" for 14400 baud, "ctrl" for
 * the enter-DFU request): its *_reenumerate_ms bounds the wait. */
static void wait_dfu(struct job_steps *s, const char *transport)
{
	s->phase = PH_SWITCH_DFU;
	s->wait_key = transport;
	job_set_state(s->job, JOB_SWITCHING_MODE);
	arm(s, reenumerate_ms(transport));
	job_steps_device_event(s->job, DEVICE_EVENT_CHANGED, job_device(s->job));
}

static void wait_back(struct job_steps *s, const char *transport, bool tty)
{
	s->phase = PH_WAIT_BACK;
	s->wait_tty = tty;
	s->wait_key = transport;
	s->saw_gone |= !job_device(s->job)->present;
	arm(s, reenumerate_ms(transport));
	job_steps_device_event(s->job, DEVICE_EVENT_CHANGED, job_device(s->job));
}

/* Does the job itself bring (function, index) in at least this version? */
static bool job_provides(struct job *job, uint8_t function, uint8_t index, uint16_t version)
{
	for (size_t i = 0; i < job_image_count(job); i++) {
		const struct image *img = job_image(job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++)
			if (img->modules[k].function == function &&
			    img->modules[k].index == index && img->modules[k].version >= version)
				return true;
	}
	return false;
}

/*
 * A device that stays in DFU after the leave does not say which check failed
 * (the bootloader has no console).  What the host can tell from the files and
 * the facts read before: the platform and the dependencies against what is
 * installed plus the job.  Empty when none of them fails.
 */
static json_t *known_failed_checks(struct job_steps *s, const char **function, bool *unchecked)
{
	const struct device_facts *f = job_facts_before(s->job);
	bool platform = false, deps = false;
	*unchecked = !f;
	*function = NULL;
	for (size_t i = 0; f && i < job_image_count(s->job); i++) {
		const struct image *img = job_image(s->job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++) {
			const struct image_module *m = &img->modules[k];
			if (!*function)
				*function = module_function_name(m->function);
			if (f->platform && image_module_has_platform(m) &&
			    m->platform_id != f->platform->id)
				platform = true;
			for (int d = 0; d < 2; d++) {
				const struct image_dependency *dep = &m->deps[d];
				if (dep->function == MODULE_FUNCTION_NONE ||
				    (dep->function == m->function && dep->index == m->index))
					continue;
				const struct installed_module *im =
				    preflight_installed(f, dep->function, dep->index);
				if ((im && im->version >= dep->version) ||
				    job_provides(s->job, dep->function, dep->index, dep->version))
					continue;
				if (!im && (!f->modules_known ||
					    (f->unknown_functions & (1u << dep->function)) ||
					    dep->function == MODULE_FUNCTION_NCP)) {
					/* not read (a SoftDevice over DFU, NCP firmware, a
					 * partial list): unknown, not unmet */
					*unchecked = true;
					continue;
				}
				deps = true;
			}
		}
	}
	json_t *a = json_array();
	if (platform)
		json_array_append_new(a, json_string("platform"));
	if (deps)
		json_array_append_new(a, json_string("dependencies"));
	return a;
}

static void booted_invalid_in(struct job_steps *s, enum device_mode mode)
{
	struct error err;
	error_init(&err);
	const char *function;
	bool unchecked;
	json_t *checks = known_failed_checks(s, &function, &unchecked);
	if (json_array_size(checks) > 0)
		error_set(&err, ERR_BOOTED_INVALID,
			  "the firmware was written but the device came back in %s mode; it does "
			  "not say why in that mode, but the files fail these checks against the "
			  "device: see failed_checks",
			  device_mode_name(mode));
	else
		error_set(&err, ERR_BOOTED_INVALID,
			  "the firmware was written but the device came back in %s mode; it does "
			  "not say which check failed in that mode and the files pass the checks "
			  "flashd can make%s",
			  device_mode_name(mode),
			  unchecked ? " (not their dependencies on modules flashd could not read "
				      "on this device)"
				    : "");
	error_detail_str(&err, "mode", device_mode_name(mode));
	error_detail_json(&err, "failed_checks", checks);
	if (function)
		error_detail_str(&err, "module_function", function);
	end_job(s, JOB_RESULT_FAILED, "booted-invalid", &err);
}

/* Whether a write is still to come after plan step i. */
static bool writes_after(const struct job_steps *s, size_t i)
{
	for (size_t k = i; s->jp && k < s->jp->plan.n_steps; k++)
		if (s->jp->plan.steps[k].kind == PLAN_STEP_WRITE)
			return true;
	return false;
}

static void continue_at(struct job_steps *s, size_t next)
{
	s->next = next;
	s->phase = PH_IDLE;
	event_active(s->cont, 0, 0);
}

/* The device is back (or not) after the reset that followed a failed write: the
 * write's error stands. */
static void reset_over(struct job_steps *s, bool back)
{
	if (s->leave_reset) {
		if (back)
			job_note(
			    s->job, "device-reset",
			    "the device refuses a second transfer until it resets (Gen 3/P2 with "
			    "Device OS 3.0-5.x): flashd reset it (14400 baud, DFU leave) and it "
			    "runs its firmware again, ready for a retry");
		else
			job_note(
			    s->job, "device-reset",
			    "the reset did not complete; the device may still be in DFU mode: "
			    "flashing again goes over DFU, whose leave resets it (or reset the "
			    "device to run its firmware)");
	} else if (back) {
		job_note(s->job, "device-reset",
			 "the device reset after refusing the module and is back");
	}
	struct error e;
	error_init(&e);
	error_move(&e, &s->failed);
	s->resetting = false;
	fail(s, &e);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job_steps *s = arg;
	struct error err;
	error_init(&err);
	const struct device_snapshot *dev = job_device(s->job);
	if (s->resetting) {
		reset_over(s, false);
		return;
	}
	switch (s->phase) {
	case PH_SWITCH_DFU:
		error_set(&err, ERR_TIMED_OUT,
			  "the device did not come back in DFU mode after the "
			  "mode switch");
		error_detail_str(&err, "phase", "switching-mode");
		error_detail_int(&err, "timeout_ms", reenumerate_ms(s->wait_key));
		fail(s, &err);
		return;
	case PH_LEAVING:
		error_set(&err, ERR_TIMED_OUT, "leaving DFU mode did not complete");
		error_detail_str(&err, "phase", "switching-mode");
		error_detail_int(&err, "timeout_ms", timeout_ms("dfu_reenumerate_ms"));
		fail(s, &err);
		return;
	case PH_WAIT_BACK:
		if (!s->wrote) {
			/* nothing written: the device left DFU mode as the job found it */
			end_job(s, JOB_RESULT_DONE, s->end_word, NULL);
			return;
		}
		if (!writes_after(s, s->next)) {
			/* written; the device cannot be asked now */
			if (dev->present && dev->mode != DEVICE_MODE_DFU)
				job_note(
				    s->job, "not-verified",
				    "the device is back but has no serial port to verify over");
			else
				job_note(s->job, "not-verified",
					 "the device did not come back within %u s after the write",
					 reenumerate_ms(s->wait_key) / 1000);
			end_unverified(s);
			return;
		}
		error_set(&err, ERR_TIMED_OUT,
			  "the device did not come back after the write, so the rest of the plan "
			  "could not run");
		error_detail_str(&err, "phase", "rebooting");
		error_detail_int(&err, "timeout_ms", reenumerate_ms(s->wait_key));
		error_hint(&err, "the firmware written so far is on the device; reset it and "
				 "flash again: what is installed is skipped");
		fail(s, &err);
		return;
	default:
		return;
	}
}

/* DFU mode left: the wait for the device says so (a reset after a failed write
 * says it once the device is back). */
static void left_note(struct job_steps *s)
{
	if (s->resetting)
		job_set_state(s->job, JOB_REBOOTING);
	else
		job_note(s->job, "device-reset",
			 "left DFU mode; waiting for the device to come back");
}

static void on_left(void *ctx, struct error *err)
{
	struct job_steps *s = ctx;
	if (s->phase != PH_LEAVING)
		return;
	mode_switch_dfu_leave_free(s->leave);
	s->leave = NULL;
	evtimer_del(s->timer);
	if (err && err->code != ERR_DEVICE_GONE) {
		if (s->resetting) {
			reset_over(s, false);
			return;
		}
		struct error e;
		error_init(&e);
		error_move(&e, err);
		error_prefix(&e, "leaving DFU mode: ");
		fail(s, &e);
		return;
	}
	/* left (or the reset overtook the leave's GETSTATUS) */
	s->saw_gone = true;
	left_note(s);
	wait_back(s, "dfu", s->wait_tty);
}

/* Leaves DFU mode (the plan's switch or reboot with no DFU write before it). */
static void leave_dfu(struct job_steps *s, bool tty)
{
	struct error err;
	error_init(&err);
	const struct device_snapshot *dev = job_device(s->job);
	drop_kept(s); /* the leave opens and claims the device itself */
	s->wait_tty = tty;
	s->phase = PH_LEAVING;
	s->leave = mode_switch_dfu_leave(job_event_base(s->job), dev->busnum, dev->devnum,
					 dev->usb_devnode, on_left, s, &err);
	if (!s->leave) {
		if (s->resetting) {
			error_clear(&err);
			reset_over(s, false);
			return;
		}
		fail(s, &err);
		return;
	}
	arm(s, timeout_ms("dfu_reenumerate_ms"));
}

void job_steps_device_event(struct job *job, enum device_event ev,
			    const struct device_snapshot *dev)
{
	struct job_steps *s = of(job);
	if (!s)
		return;
	if (ev == DEVICE_EVENT_GONE)
		s->saw_gone = true;
	switch (s->phase) {
	case PH_SWITCH_DFU:
		if (dev->present && dev->mode == DEVICE_MODE_DFU && dev->usb_devnode[0]) {
			evtimer_del(s->timer);
			if (s->resetting) {
				leave_dfu(s, true);
				return;
			}
			if (!s->planned) {
				/* switched to be read: READ over DFU now */
				s->phase = PH_IDLE;
				s->switched_for_read = true;
				event_active(s->cont, 0, 0);
				return;
			}
			continue_at(s, s->next + 1);
		}
		return;
	case PH_LEAVING:
		if (ev == DEVICE_EVENT_GONE) {
			/* the device reset: the leave is done whatever its GETSTATUS says */
			mode_switch_dfu_leave_free(s->leave);
			s->leave = NULL;
			evtimer_del(s->timer);
			left_note(s);
			wait_back(s, "dfu", s->wait_tty);
		}
		return;
	case PH_WAIT_BACK:
		if (!s->saw_gone || !dev->present)
			return;
		if (s->resetting) {
			if (dev->mode == DEVICE_MODE_DFU || !dev->tty[0])
				return;
			evtimer_del(s->timer);
			reset_over(s, true);
			return;
		}
		if (s->wrote && !writes_after(s, s->next + 1) &&
		    (dev->mode == DEVICE_MODE_DFU || dev->mode == DEVICE_MODE_SAFE)) {
			evtimer_del(s->timer);
			booted_invalid_in(s, dev->mode);
			return;
		}
		if (dev->mode == DEVICE_MODE_DFU || (s->wait_tty && !dev->tty[0]))
			return; /* the tty node follows the usb_device */
		evtimer_del(s->timer);
		job_set_device_mode(job, dev->mode);
		continue_at(s, s->next + 1);
		return;
	default:
		return;
	}
}

/* ---- READ ----------------------------------------------------------------------------- */

/*
 * A flash job on a device known to run its firmware (mode normal, from an earlier
 * read or verify) on a Device OS that takes control requests is read by them
 * first, in the mode it is in: the plan (and a refusal) comes before any mode
 * switch, and the plan's switch to listening mode, if it writes over serial, is
 * the start-listening request, once.
 *
 * A CDC device whose mode is not known yet (just plugged in: listening and running
 * look the same on USB) is asked by control requests first too, when its Device OS
 * may take them, but only for its mode (ctrl_peek): they answer in either mode at
 * once (GetDeviceMode), where the console tells a running device only by its
 * silence to `v` (serial_probe_ms, 2 s).  The console then reads it if it has one
 * (its `s` carries the module hashes that the requests do not), starting at 28800
 * baud when it runs.  A probe reads what it always read.
 */
static const struct transport_ops *ctrl_first(struct job_steps *s,
					      const struct device_snapshot *dev)
{
	const struct transport_ops *ctrl = job_transport(s->job, "ctrl");
	s->ctrl_peek = false;
	if (!ctrl || is_probe(s->job) || (s->no_answer & transport_bit(s->job, ctrl)) ||
	    !dev->busnum || !dev->devnum)
		return NULL;
	uint16_t v = capability_version(dev->facts.os_version, dev->facts.system_version);
	if (dev->mode == DEVICE_MODE_UNKNOWN && dev->tty[0] &&
	    capability_has(CAPABILITY_CONTROL_REQUESTS, dev->facts.platform, v, true)) {
		s->ctrl_peek = true;
		return ctrl;
	}
	if (dev->mode != DEVICE_MODE_NORMAL || !v ||
	    !capability_has(CAPABILITY_CONTROL_REQUESTS, dev->facts.platform, v, false))
		return NULL;
	return ctrl;
}

/* After ctrl_peek's READ (its mode and Device OS): the console reads the device when
 * it has one and its tty is there, without probing a running device first; a Device OS
 * without one (6.x) is read by control requests in full (ctrl_first() finds it running
 * now).  Returns true when that READ goes on. */
static bool read_after_peek(struct job_steps *s, const struct job_step_result *res)
{
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	const struct transport_ops *serial = job_transport(job, "serial");
	if (!s->ctrl_peek)
		return false;
	uint16_t v = capability_version(res->facts.os_version, res->facts.system_version);
	bool console = serial && dev->tty[0] &&
		       capability_has(CAPABILITY_LISTENING_CONSOLE, res->facts.platform, v, true);
	job_log(job, LOG_DEBUG, "control requests say %s mode, Device OS %s: %s",
		device_mode_name(res->mode), res->facts.os_version[0] ? res->facts.os_version : "?",
		console ? "the console reads it" : "read by control requests");
	job_update_facts(job, &res->facts);
	job_set_device_mode(job, res->mode);
	if (console)
		s->no_answer |= transport_bit(job, s->ops);
	read_next(s);
	return true;
}

static const struct transport_ops *reader(struct job_steps *s)
{
	const struct device_snapshot *dev = job_device(s->job);
	const struct transport_ops *first = ctrl_first(s, dev);
	s->ctrl_first = first != NULL;
	if (first)
		return first;
	const struct transport_ops *const *t = job_transports(s->job);
	for (unsigned i = 0; t[i]; i++)
		if (!(s->no_answer & (1u << i)) && t[i]->can_serve && t[i]->can_serve(dev))
			return t[i];
	return NULL;
}

static void switch_14400(struct job_steps *s);
static void fail_held(struct job_steps *s, const char *why);

/* The step at plan step i over ops starts from the READ's facts when the READ was
 * ops's and nothing ran since (i == 0: no mode switch, no write before it). */
static void reuse_read(struct job_steps *s, const struct transport_ops *ops, size_t i)
{
	if (i == 0 && s->read_ops == ops) {
		s->step.have_read = true;
		s->step.read = s->read_facts;
		if (s->kept_ops == ops) {
			s->step.kept = s->kept; /* the run owns it now */
			s->kept = NULL;
			s->kept_ops = NULL;
		}
	}
	s->read_ops = NULL; /* once: the device changes from here on */
	drop_kept(s);
}

/* Adds a transport's reason it got no answer to the READ's list: every cause is kept,
 * not only the last one. */
static void add_no_answer(struct job_steps *s, const struct transport_ops *ops, const char *why)
{
	/* a list longer than the buffer is cut: what fits is said */
	char *out = s->no_answer_why;
	size_t size = sizeof(s->no_answer_why), len = strlen(out);
	const char *parts[] = {len ? "; " : "", ops->name, ": ", why};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		size_t n = strlen(parts[i]);
		if (n > size - 1 - len)
			n = size - 1 - len;
		memcpy(out + len, parts[i], n);
		len += n;
	}
	out[len] = '\0';
}

/* The transports that were not asked: named too, so the error says what each did. */
static void add_not_asked(struct job_steps *s, const struct device_snapshot *dev)
{
	const struct transport_ops *const *t = job_transports(s->job);
	for (unsigned i = 0; t[i]; i++) {
		if (s->no_answer & (1u << i))
			continue;
		char why[64];
		snprintf(why, sizeof(why), "not asked: cannot serve this device (%s mode)",
			 device_mode_name(dev->mode));
		add_no_answer(s, t[i], why);
	}
}

static void read_next(struct job_steps *s)
{
	struct error err;
	error_init(&err);
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	const struct transport_ops *ops = reader(s);
	if (ops) {
		if (s->no_answer_why[0])
			handed_to(s, ops, s->no_answer_why);
		else
			s->at = ops;
		memset(&s->step, 0, sizeof(s->step));
		s->step.kind = JOB_STEP_READ;
		s->step.probe = is_probe(job);
		s->step.mode_only = s->ctrl_peek;
		s->step.keep_listening = !job_options(job)->dry_run;
		if (!start_step(s, ops, PH_READ, &err))
			fail(s, &err);
		return;
	}
	if (error_is_set(&s->peek_err)) {
		error_move(&err, &s->peek_err);
		fail(s, &err);
		return;
	}
	if (is_probe(job) && s->no_answer) {
		/* not an error for a probe: the device has nothing to answer with now */
		job_note(
		    job, "no-console",
		    "%s; flashd does not switch a device to DFU mode for a probe, so only what "
		    "USB says is known",
		    s->no_answer_why);
		end_job(s, JOB_RESULT_DONE, "probed", NULL);
		return;
	}
	if (!is_probe(job) && dev->mode != DEVICE_MODE_DFU && dev->tty[0] &&
	    job_transport(job, "dfu") && !s->switched_for_read) {
		/* no console, no control requests: DFU switches it with 14400 baud */
		handed_to(s, job_transport(job, "dfu"),
			  s->no_answer_why[0] ? s->no_answer_why
					      : "reading the device in DFU mode");
		switch_14400(s);
		return;
	}
	add_not_asked(s, dev);
	error_set(&err, ERR_NOT_FLASHABLE_HERE, "no transport can work on a device in %s mode%s%s",
		  device_mode_name(dev->mode), s->no_answer_why[0] ? ": " : "", s->no_answer_why);
	error_detail_str(&err, "reason", "no transport for this mode");
	error_detail_str(&err, "device", dev->key);
	fail(s, &err);
}

/* One entry of the dry run's plan "checks": which files a transport's own checks
 * covered, and against what ("device": the device in the transport's mode; "platform":
 * what is known of its platform; "none": neither). */
static void add_check_entry(json_t *checks, const char *transport, const char *against,
			    const char *checked, const char *unchecked, json_t *files)
{
	json_t *o = json_pack("{s:s, s:s, s:o}", "transport", transport, "against", against,
			      "files", files);
	if (!o)
		return;
	json_object_set_new(o, "checked", checked ? json_string(checked) : json_null());
	json_object_set_new(o, "unchecked", unchecked ? json_string(unchecked) : json_null());
	json_array_append_new(checks, o);
}

/*
 * The checks a transport makes on the device before its first byte (the DFU memory
 * map, slots, Device Protection) in a dry run, which switches no mode: the writes of
 * the plan's first step's transport, when the device is in its mode already, as a
 * CHECK step against the device; every other write over a transport with such checks
 * against what is known of the platform (check_static(): the DFU memory map the
 * platform's bootloader describes).  The plan says which ran against what ("checks").
 */
static void dry_run_checks(struct job_steps *s, const struct device_facts *facts)
{
	struct error err;
	error_init(&err);
	const struct plan *p = &s->jp->plan;
	json_t *checks = json_array();
	const struct transport_ops *live = NULL;
	size_t n_live = 0;
	if (p->n_steps > 0 && p->steps[0].kind == PLAN_STEP_WRITE) {
		live = job_transport(s->job, plan_transport_name(p->steps[0].transport));
		if (live && !live->checks_on_device)
			live = NULL;
	}
	if (live) {
		json_t *files = json_array();
		while (n_live < p->n_steps && p->steps[n_live].kind == PLAN_STEP_WRITE &&
		       p->steps[n_live].transport == p->steps[0].transport &&
		       n_live < JOB_STEP_MAX_IMAGES) {
			json_array_append_new(files, json_string(p->steps[n_live].name));
			n_live++;
		}
		add_check_entry(checks, live->name, "device", NULL, NULL, files);
	}
	/* the other writes, per transport, against the platform */
	int rc = 0;
	char summary[640];
	plan_summary(p, summary, sizeof(summary));
	for (int t = 0; rc >= 0 && t < PLAN_TRANSPORT_COUNT; t++) {
		const struct transport_ops *ops = job_transport(s->job, plan_transport_name(t));
		if (!ops || !ops->checks_on_device)
			continue;
		struct job_step st;
		memset(&st, 0, sizeof(st));
		st.kind = JOB_STEP_CHECK;
		json_t *files = json_array();
		for (size_t i = n_live; i < p->n_steps && st.n_images < JOB_STEP_MAX_IMAGES; i++)
			if (p->steps[i].kind == PLAN_STEP_WRITE &&
			    p->steps[i].transport == (enum plan_transport)t) {
				st.images[st.n_images++] = job_plan_file(s->jp, &p->steps[i]);
				json_array_append_new(files, json_string(p->steps[i].name));
			}
		if (st.n_images == 0) {
			json_decref(files);
			continue;
		}
		struct transport_static_check out = {{0}, {0}};
		rc = ops->check_static ? ops->check_static(s->job, &st, facts, &out, &err) : 1;
		if (rc == 1)
			add_check_entry(checks, ops->name, "none", NULL,
					"the device is not in the mode these writes need, and "
					"flashd knows nothing of them for its platform",
					files);
		else
			add_check_entry(checks, ops->name, "platform", out.checked, out.unchecked,
					files);
		if (rc == 0) {
			size_t len = strlen(summary);
			snprintf(summary + len, sizeof(summary) - len, "; dry run: %s checked %s",
				 ops->name, out.checked);
		}
	}
	json_t *pj = plan_to_json(p);
	if (pj && json_array_size(checks) > 0) {
		json_object_set_new(pj, "checks", checks);
		job_set_plan(s->job, pj, summary);
	} else {
		json_decref(checks);
		json_decref(pj);
	}
	if (rc < 0) {
		fail(s, &err);
		return;
	}
	if (!live) {
		end_job(s, JOB_RESULT_DONE, "preflight-ok", NULL);
		return;
	}
	memset(&s->step, 0, sizeof(s->step));
	s->step.kind = JOB_STEP_CHECK;
	reuse_read(s, live, 0);
	for (size_t i = 0; i < n_live && s->step.n_images < JOB_STEP_MAX_IMAGES; i++)
		s->step.images[s->step.n_images++] = job_plan_file(s->jp, &p->steps[i]);
	if (!start_step(s, live, PH_CHECK, &err))
		fail(s, &err);
}

/* The console's tty is held by another program (err: the device-busy error naming it):
 * the job goes on without serial, whose transport it is, and says so; the error is kept
 * for where nothing else can do the work (fail_held()). */
static void held_tty(struct job_steps *s, const struct transport_ops *serial, struct error *err)
{
	s->tty_held = true;
	error_move(&s->held, err);
	s->no_answer |= transport_bit(s->job, serial);
	job_note(s->job, "tty-held", "%s: using USB control requests", s->held.message);
}

/*
 * A device read by control requests first (it runs) whose console's tty another
 * program holds: the plan is made without the console, as when the serial READ found
 * it held (read_around_held_tty()), instead of a serial write that would end
 * device-busy.
 */
static void check_tty_held(struct job_steps *s, const struct device_facts *f)
{
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	const struct transport_ops *serial = job_transport(job, "serial");
	uint16_t v = capability_version(f->os_version, f->system_version);
	struct error e;
	error_init(&e);
	if (s->tty_held || !s->ctrl_first || !serial || !dev->tty[0] ||
	    !capability_has(CAPABILITY_LISTENING_CONSOLE, f->platform, v, true) ||
	    serial_port_check_free(dev->tty, getenv("FLASHD_LOCK_DIR"), &e) == 0)
		return;
	held_tty(s, serial, &e);
}

static void make_plan(struct job_steps *s, const struct job_step_result *res)
{
	struct error err;
	error_init(&err);
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	enum device_mode mode = res->mode != DEVICE_MODE_UNKNOWN ? res->mode : dev->mode;
	if (!s->jp)
		s->jp = malloc(sizeof(*s->jp));
	if (!s->jp) {
		error_set(&err, ERR_OUT_OF_MEMORY, NULL);
		fail(s, &err);
		return;
	}
	job_set_state(job, JOB_PREFLIGHT);
	const char *label = dev->tty[0] ? dev->tty : dev->usb_devnode;
	int rc;
	check_tty_held(s, &res->facts);
	if (s->tty_held) {
		/* a plan without the console: neither YMODEM nor the magic bauds */
		struct device_facts *f = malloc(sizeof(*f));
		if (!f) {
			error_set(&err, ERR_OUT_OF_MEMORY, NULL);
			fail(s, &err);
			return;
		}
		*f = res->facts;
		f->no_tty = true;
		rc = job_plan_make(job, f, mode, label, s->jp, &err);
		free(f);
		struct error full;
		error_init(&full);
		if (rc < 0 && job_plan_make(job, &res->facts, mode, label, s->jp, &full) == 0) {
			/* it needs the console: the holder is the cause */
			char why[sizeof(err.message)];
			snprintf(why, sizeof(why), "%s", err.message);
			error_clear(&err);
			fail_held(s, why);
			return;
		}
		error_clear(&full);
	} else {
		rc = job_plan_make(job, &res->facts, mode, label, s->jp, &err);
	}
	if (rc < 0) {
		/* refused before any mode switch and any byte */
		fail(s, &err);
		return;
	}
	s->planned = true;
	if (job_options(job)->dry_run) {
		dry_run_checks(s, &res->facts);
		return;
	}
	s->end_word = "already-installed";
	if (s->jp->plan.n_writes == 0) {
		s->next = s->jp->plan.n_steps;
		if (dev->mode == DEVICE_MODE_DFU && dev->present) {
			/* every file is installed already: give the device back running */
			job_set_state(job, JOB_SWITCHING_MODE);
			leave_dfu(s, false);
			return;
		}
		end_job(s, JOB_RESULT_DONE, s->end_word, NULL);
		return;
	}
	s->end_word = "written-not-verified";
	s->next = 0;
	if (!serial_step_at(s, 0))
		give_back(s);
	advance(s);
}

/*
 * The serial READ found the console's tty held by another program (a serial
 * monitor, ModemManager).  A running device that takes control requests is read,
 * planned and flashed through them alone (particle-usb talks to it the same way,
 * src/device.js, while a monitor keeps the tty); the busy error naming the holder
 * stands where nothing else can work.  Returns true when the ctrl READ started.
 */
static bool read_around_held_tty(struct job_steps *s)
{
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	const struct transport_ops *ctrl = job_transport(job, "ctrl");
	if (s->tty_held || s->err.code != ERR_DEVICE_BUSY || !s->err.detail ||
	    !json_object_get(s->err.detail, "port") || !ctrl || s->ops == ctrl ||
	    dev->mode == DEVICE_MODE_DFU || !dev->busnum || !dev->devnum)
		return false;
	uint16_t v = capability_version(dev->facts.os_version, dev->facts.system_version);
	if (!capability_has(CAPABILITY_CONTROL_REQUESTS, dev->facts.platform, v, true))
		return false;
	struct error err;
	error_init(&err);
	held_tty(s, s->ops, &s->err);
	s->at = ctrl;
	memset(&s->step, 0, sizeof(s->step));
	s->step.kind = JOB_STEP_READ;
	s->step.probe = is_probe(job);
	if (!start_step(s, ctrl, PH_READ, &err)) {
		error_clear(&err);
		s->tty_held = false; /* the busy error stands */
		error_move(&s->err, &s->held);
		return false;
	}
	return true;
}

/* The end of a job whose tty is held where control requests cannot do the work. */
static void fail_held(struct job_steps *s, const char *why)
{
	struct error e;
	error_init(&e);
	error_move(&e, &s->held);
	if (why)
		error_detail_str(&e, "reason", why);
	fail(s, &e);
}

static void read_done(struct job_steps *s)
{
	struct job *job = s->job;
	if (error_is_set(&s->err)) {
		if (read_around_held_tty(s))
			return;
		if (s->tty_held && s->err.code != ERR_CANCELLED) {
			/* the control requests did not identify it either */
			char why[sizeof(s->err.message)];
			snprintf(why, sizeof(why), "%s", s->err.message);
			error_clear(&s->err);
			fail_held(s, why);
			return;
		}
		if (s->have_res && s->res.no_answer && s->err.code != ERR_CANCELLED &&
		    s->ctrl_first) {
			/* a Device OS whose control requests do not identify it (Gen 2 before
			 * 1.5.0): the console reads it, as for a device not known yet */
			job_log(job, LOG_DEBUG, "not read by control request: %s", s->err.message);
			s->no_answer |= transport_bit(job, s->ops);
			error_clear(&s->err);
			read_next(s);
			return;
		}
		if (s->ctrl_peek && s->err.code != ERR_CANCELLED &&
		    s->err.code != ERR_DEVICE_GONE) {
			/* The peek failed (busy, a timeout: a device just plugged in may not
			 * take requests yet): the console reads it, as before there was a peek;
			 * the error stands if the console has no answer either. */
			add_no_answer(s, s->ops, s->err.message);
			s->no_answer |= transport_bit(job, s->ops);
			error_move(&s->peek_err, &s->err);
			read_next(s);
			return;
		}
		if (s->have_res && s->res.no_answer && s->err.code != ERR_CANCELLED) {
			s->no_answer |= transport_bit(job, s->ops);
			add_no_answer(s, s->ops, s->err.message);
			error_clear(&s->err);
			read_next(s);
			return;
		}
		fail_with_step_error(s);
		return;
	}
	if (!s->have_res) {
		struct error e;
		error_init(&e);
		error_set(&e, ERR_INTERNAL, "the %s transport read nothing", s->ops->name);
		fail(s, &e);
		return;
	}
	if (read_after_peek(s, &s->res))
		return;
	error_clear(&s->peek_err); /* the console answered after all */
	job_update_facts(job, &s->res.facts);
	if (s->res.mode != DEVICE_MODE_UNKNOWN)
		job_set_device_mode(job, s->res.mode);
	s->read_facts = s->res.facts;
	s->read_ops = s->ops;
	if (s->res.kept_listening) {
		s->kept_listening = true;
		s->kept_from = cdc_query_facts_safe_mode(&s->res.facts) ? DEVICE_MODE_SAFE
									: DEVICE_MODE_NORMAL;
	}
	drop_kept(s);
	s->kept = s->res.keep;
	s->kept_ops = s->res.keep ? s->ops : NULL;
	s->res.keep = NULL;
	if (is_probe(job)) {
		end_job(s, JOB_RESULT_DONE, "probed", NULL);
		return;
	}
	make_plan(s, &s->res);
}

/* ---- the plan's steps ------------------------------------------------------------------ */

static void switch_14400(struct job_steps *s)
{
	struct error err;
	error_init(&err);
	const struct device_snapshot *dev = job_device(s->job);
	job_set_state(s->job, JOB_SWITCHING_MODE);
	if (!dev->tty[0]) {
		error_set(&err, ERR_NOT_FLASHABLE_HERE,
			  "the device has no serial port to switch it to DFU mode with");
		error_detail_str(&err, "reason", "no serial port");
		fail(s, &err);
		return;
	}
	if (mode_switch_dfu(dev->tty, getenv("FLASHD_LOCK_DIR"), &err) < 0) {
		if (s->resetting) {
			error_clear(&err);
			reset_over(s, false);
			return;
		}
		fail(s, &err);
		return;
	}
	if (!s->resetting) /* the reset after a failed write said so already */
		job_note(s->job, "switching-to-dfu", "set %s to 14400 baud", dev->tty);
	wait_dfu(s, "dfu");
}

/* Whether what follows plan step i needs the serial port (a serial write or verify, a
 * switch by 14400 baud). */
static bool needs_tty_after(const struct job_steps *s, size_t i)
{
	if (i + 1 >= s->jp->plan.n_steps)
		return false;
	const struct plan_step *n = &s->jp->plan.steps[i + 1];
	bool by_baud = n->kind == PLAN_STEP_SWITCH && n->to == DEVICE_MODE_DFU &&
		       !(n->how && strstr(n->how, "request"));
	return n->transport == PLAN_TRANSPORT_SERIAL || by_baud;
}

static void do_switch(struct job_steps *s, const struct plan_step *ps)
{
	struct error err;
	error_init(&err);
	struct job *job = s->job;
	const struct device_snapshot *dev = job_device(job);
	char why[160];
	step_why(s, s->next, why, sizeof(why));
	handed_to(s, job_transport(job, plan_transport_name(ps->transport)), why);
	if (ps->to == DEVICE_MODE_DFU) {
		if (dev->present && dev->mode == DEVICE_MODE_DFU) {
			continue_at(s, s->next + 1);
			return;
		}
		const struct transport_ops *ctrl = job_transport(job, "ctrl");
		if (ps->how && strstr(ps->how, "request") && ctrl) {
			memset(&s->step, 0, sizeof(s->step));
			s->step.kind = JOB_STEP_ENTER_DFU;
			job_set_state(job, JOB_SWITCHING_MODE);
			if (start_step(s, ctrl, PH_ASK_DFU, &err))
				return;
			job_note(job, "ctrl-fallback",
				 "the enter-DFU request failed (%s); using "
				 "14400 baud",
				 err.message);
			error_clear(&err);
		}
		switch_14400(s);
		return;
	}
	if (ps->from == DEVICE_MODE_DFU) {
		job_set_state(job, JOB_SWITCHING_MODE);
		bool tty = ps->transport == PLAN_TRANSPORT_SERIAL;
		if (dev->present && dev->mode == DEVICE_MODE_DFU && !s->left) {
			leave_dfu(s, tty);
			return;
		}
		wait_back(s, "dfu", tty);
		return;
	}
	const struct transport_ops *ctrl = job_transport(job, "ctrl");
	if (ps->to == DEVICE_MODE_LISTENING && ps->how && strstr(ps->how, "request") && ctrl &&
	    dev->mode != DEVICE_MODE_LISTENING) {
		/* the start-listening request (Device OS 6.x has no 28800-baud switch) */
		memset(&s->step, 0, sizeof(s->step));
		s->step.kind = JOB_STEP_ENTER_LISTENING;
		job_set_state(job, JOB_SWITCHING_MODE);
		if (start_step(s, ctrl, PH_ASK_LISTEN, &err))
			return;
		job_note(job, "ctrl-fallback",
			 "the start-listening request failed (%s); using 28800 baud", err.message);
		error_clear(&err);
	}
	/* 28800 baud: the serial write enters listening mode itself (mode_switch.h) as
	 * the first thing it does on the port, unless the device listens already */
	continue_at(s, s->next + 1);
}

static void do_write(struct job_steps *s, const struct plan_step *ps)
{
	struct error err;
	error_init(&err);
	struct job *job = s->job;
	const struct transport_ops *ops = job_transport(job, plan_transport_name(ps->transport));
	char why[160];
	step_why(s, s->next, why, sizeof(why));
	if (!ops) {
		error_set(&err, ERR_NOT_FLASHABLE_HERE, "%s; the %s transport is not built in", why,
			  plan_transport_name(ps->transport));
		error_detail_str(&err, "transport", plan_transport_name(ps->transport));
		fail(s, &err);
		return;
	}
	handed_to(s, ops, why);
	if (ps->transport != PLAN_TRANSPORT_SERIAL)
		give_back(s);
	s->kept_listening = false; /* the serial write has it now */
	memset(&s->step, 0, sizeof(s->step));
	s->step.kind = JOB_STEP_WRITE;
	size_t j = s->next;
	const struct plan *p = &s->jp->plan;
	/* one write per step, except DFU, which writes its run of files in one go */
	while (j < p->n_steps && p->steps[j].kind == PLAN_STEP_WRITE &&
	       p->steps[j].transport == ps->transport && s->step.n_images < JOB_STEP_MAX_IMAGES &&
	       (j == s->next || ps->transport == PLAN_TRANSPORT_DFU))
		s->step.images[s->step.n_images++] = job_plan_file(s->jp, &p->steps[j++]);
	s->step.leave =
	    ps->transport == PLAN_TRANSPORT_DFU && j < p->n_steps &&
	    (p->steps[j].kind == PLAN_STEP_REBOOT ||
	     (p->steps[j].kind == PLAN_STEP_SWITCH && p->steps[j].from == DEVICE_MODE_DFU));
	reuse_read(s, ops, s->next);
	s->cur = s->next;
	s->saw_gone = false;
	s->left = false;
	if (!start_step(s, ops, PH_WRITE, &err))
		fail(s, &err);
}

static void write_done(struct job_steps *s)
{
	if (error_is_set(&s->err) && s->have_res && (s->res.resets || s->res.needs_reset) &&
	    !job_cancel_requested(s->job)) {
		/* the error is reported once the device is back from its reset */
		error_clear(&s->failed);
		error_move(&s->failed, &s->err);
		s->resetting = true;
		s->leave_reset = s->res.needs_reset;
		if (s->res.needs_reset) {
			job_note(s->job, "resetting-device",
				 "the device refuses a second transfer until it resets (Gen 3/P2 "
				 "with Device OS 3.0-5.x): resetting it through DFU mode (14400 "
				 "baud, then DFU leave)");
			switch_14400(s);
			return;
		}
		job_set_state(s->job, JOB_REBOOTING);
		wait_back(s, s->ops->name, true);
		return;
	}
	if (error_is_set(&s->err)) {
		fail_with_step_error(s);
		return;
	}
	for (size_t i = 0; i < s->step.n_images; i++)
		job_mark_written(s->job, s->step.images[i]);
	s->wrote = true;
	s->read_back = s->have_res && s->res.read_back;
	s->left = s->step.leave;
	continue_at(s, s->cur + s->step.n_images);
}

static void do_reboot(struct job_steps *s, const struct plan_step *ps)
{
	const char *t = plan_transport_name(ps->transport);
	bool tty = needs_tty_after(s, s->next);
	job_set_state(s->job, JOB_REBOOTING);
	if (ps->transport == PLAN_TRANSPORT_DFU) {
		const struct device_snapshot *dev = job_device(s->job);
		if (!s->left && dev->present && dev->mode == DEVICE_MODE_DFU) {
			leave_dfu(s, tty);
			return;
		}
		job_note(s->job, "device-reset",
			 "left DFU mode; waiting for the device to come back");
	}
	wait_back(s, t, tty);
}

/* The Device OS the device runs after the job: its system part, or the one the job wrote. */
static uint16_t system_version_after(struct job_steps *s)
{
	const struct device_facts *f = job_facts_before(s->job);
	uint16_t v = f ? capability_version(f->os_version, f->system_version) : 0;
	for (size_t i = 0; i < job_image_count(s->job); i++) {
		const struct image *img = job_image(s->job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++)
			if (img->modules[k].function == MODULE_FUNCTION_SYSTEM &&
			    img->modules[k].version > v)
				v = img->modules[k].version;
	}
	return v;
}

static void not_verified(struct job_steps *s, const char *why)
{
	job_note(s->job, "not-verified", "%s", why);
	end_unverified(s);
}

static void do_verify(struct job_steps *s, const struct plan_step *ps)
{
	struct error err;
	error_init(&err);
	struct job *job = s->job;
	const struct transport_ops *ops = job_transport(job, plan_transport_name(ps->transport));
	const struct device_facts *f = &job_device(job)->facts;
	if (!ops || (ps->transport == PLAN_TRANSPORT_SERIAL &&
		     !capability_has(CAPABILITY_LISTENING_CONSOLE, f->platform,
				     system_version_after(s), true))) {
		/* Only Device OS <= 5.x has a listening-mode console (28800 removed in
		 * 6.0.0, capability.c's table); an unknown version is tried */
		not_verified(s, "the device has no way to report its modules after the write");
		return;
	}
	char why[160];
	step_why(s, s->next, why, sizeof(why));
	handed_to(s, ops, why);
	memset(&s->step, 0, sizeof(s->step));
	s->step.kind = JOB_STEP_VERIFY;
	job_set_state(job, JOB_VERIFYING);
	if (!start_step(s, ops, PH_VERIFY, &err)) {
		not_verified(s, err.message);
		error_clear(&err);
	}
}

static void verify_done(struct job_steps *s)
{
	struct job *job = s->job;
	if (error_is_set(&s->err) || !s->have_res) {
		/* written; the device cannot be asked now (no console, port held, cancelled) */
		char why[sizeof(s->err.message) + 64];
		snprintf(why, sizeof(why), "%s",
			 s->err.code == ERR_CANCELLED ? "the job was cancelled while verifying"
			 : error_is_set(&s->err)      ? s->err.message
						      : "the device reported nothing");
		error_clear(&s->err);
		not_verified(s, why);
		return;
	}
	struct device_facts now = s->res.facts;
	bool safe = s->res.mode == DEVICE_MODE_SAFE || cdc_query_facts_safe_mode(&now);
	job_update_facts(job, &now);
	if (s->res.mode != DEVICE_MODE_UNKNOWN)
		job_set_device_mode(job, s->res.mode);
	json_t *invalid = json_array();
	bool none_invalid = plan_invalid_modules(&now, invalid) == 0;
	json_decref(invalid);
	if (!now.modules_known && !safe && none_invalid) {
		/* a module the list does not show is unknown, not missing (a device in safe
		 * mode or one that reports a module invalid gets the verdict) */
		not_verified(s, "the device's module list after the write could not be read in "
				"full");
		return;
	}
	struct error e;
	error_init(&e);
	/* verified means the whole device: every module it reports valid (issue 11) */
	if (job_verdict(job, &now, safe, &e) == 0 &&
	    (!s->ops->verdict || s->ops->verdict(job, &now, &e) == 0)) {
		end_job(s, JOB_RESULT_DONE, "verified", NULL);
		return;
	}
	end_job(s, JOB_RESULT_FAILED, "booted-invalid", &e);
}

/* The control request of an ENTER_DFU or ENTER_LISTENING step failed: a cancel ends
 * the job; anything else (not supported here) falls back to the baud rate, noted.
 * False when the job ended. */
static bool ctrl_fallback(struct job_steps *s, const char *request, unsigned baud)
{
	if (s->err.code == ERR_CANCELLED) {
		fail_with_step_error(s);
		return false;
	}
	job_note(s->job, "ctrl-fallback", "the %s request failed (%s); using %u baud", request,
		 s->err.message, baud);
	error_clear(&s->err);
	return true;
}

static void ask_dfu_done(struct job_steps *s)
{
	if (error_is_set(&s->err)) {
		if (ctrl_fallback(s, "enter-DFU", 14400))
			switch_14400(s);
		return;
	}
	job_note(s->job, "switching-to-dfu", "asked the device by USB control request");
	wait_dfu(s, "ctrl");
}

static void ask_listen_done(struct job_steps *s)
{
	if (error_is_set(&s->err)) {
		/* the serial write sets 28800 baud itself */
		if (!ctrl_fallback(s, "start-listening", 28800))
			return;
	} else {
		job_note(s->job, "switching-to-listening",
			 "asked the device by USB control request (start listening)");
		job_set_device_mode(s->job, DEVICE_MODE_LISTENING);
	}
	continue_at(s, s->next + 1);
}

static void advance(struct job_steps *s)
{
	struct job *job = s->job;
	if (job_cancel_requested(job)) {
		if (s->wrote && !writes_after(s, s->next)) {
			not_verified(s, "the job was cancelled after the last write: the device "
					"applies what it got");
			return;
		}
		struct error e;
		error_init(&e);
		error_set(&e, ERR_CANCELLED, "the job was cancelled while %s",
			  job_state_name(job_state(job)));
		error_detail_str(&e, "phase", job_state_name(job_state(job)));
		error_detail_str(&e, "device_state", s->wrote ? "partly flashed" : "untouched");
		fail(s, &e);
		return;
	}
	if (s->next >= s->jp->plan.n_steps) {
		end_job(s, JOB_RESULT_DONE, s->end_word, NULL);
		return;
	}
	const struct plan_step *ps = &s->jp->plan.steps[s->next];
	if (s->next != 0 || ps->kind != PLAN_STEP_WRITE)
		drop_kept(s); /* only a first write starts from the READ */
	job_plan_report_step(job, s->jp, s->next);
	switch (ps->kind) {
	case PLAN_STEP_SWITCH:
		do_switch(s, ps);
		return;
	case PLAN_STEP_WRITE:
		do_write(s, ps);
		return;
	case PLAN_STEP_REBOOT:
		do_reboot(s, ps);
		return;
	case PLAN_STEP_VERIFY:
		do_verify(s, ps);
		return;
	}
}

/* A step ended, or a wait is over: what follows, from the loop. */
static void on_continue(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct job_steps *s = arg;
	if (job_ended(s->job))
		return;
	if (!s->ended_step) {
		if (s->phase != PH_IDLE)
			return;
		if (!s->planned) { /* switched to DFU to be read */
			read_next(s);
			return;
		}
		advance(s);
		return;
	}
	s->ended_step = false;
	enum phase ph = s->phase;
	s->phase = PH_IDLE;
	switch (ph) {
	case PH_READ:
		read_done(s);
		break;
	case PH_WRITE:
		write_done(s);
		break;
	case PH_VERIFY:
		verify_done(s);
		break;
	case PH_ASK_DFU:
		ask_dfu_done(s);
		break;
	case PH_ASK_LISTEN:
		ask_listen_done(s);
		break;
	case PH_CHECK:
		if (error_is_set(&s->err))
			fail_with_step_error(s);
		else
			end_job(s, JOB_RESULT_DONE, "preflight-ok", NULL);
		break;
	default:
		break;
	}
	error_clear(&s->err);
}

/* ---- jobs.c's side -------------------------------------------------------------------- */

void job_steps_run(struct job *job)
{
	struct job_steps *s = of(job);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (s) {
			s->timer = evtimer_new(job_event_base(job), on_timer, s);
			s->cont = event_new(job_event_base(job), -1, 0, on_continue, s);
		}
		if (!s || !s->timer || !s->cont) {
			job_steps_free(s);
			struct error err;
			error_init(&err);
			error_set(&err, ERR_OUT_OF_MEMORY, NULL);
			job_finish(job, JOB_RESULT_FAILED, NULL, &err);
			return;
		}
		s->job = job;
		error_init(&s->err);
		error_init(&s->failed);
		error_init(&s->held);
		error_init(&s->peek_err);
		*job_steps_slot(job) = s;
	}
	stop_waits(s);
	/* a fresh start: READ again, plan again (without the files written before) */
	s->phase = PH_IDLE;
	s->planned = false;
	s->no_answer = 0;
	s->no_answer_why[0] = '\0';
	s->switched_for_read = false;
	s->read_ops = NULL;
	s->ended_step = false;
	s->left = false;
	s->at = NULL;
	s->resetting = false;
	s->tty_held = false;
	s->kept_listening = false;
	error_clear(&s->err);
	error_clear(&s->failed);
	error_clear(&s->held);
	error_clear(&s->peek_err);
	read_next(s);
}

void job_steps_done(struct job *job, const struct job_step_result *res, struct error *err)
{
	struct job_steps *s = of(job);
	if (!s) {
		error_clear(err);
		return;
	}
	error_clear(&s->err);
	if (err && error_is_set(err))
		error_move(&s->err, err);
	error_clear(err);
	if (s->res.keep && s->ops && s->ops->keep_free)
		s->ops->keep_free(s->res.keep); /* a READ's end the loop never took */
	s->res.keep = NULL;
	s->have_res = res != NULL;
	if (res)
		s->res = *res;
	if (s->res.keep && (s->phase != PH_READ || error_is_set(&s->err))) {
		/* only a READ that is done keeps anything for the next step */
		if (s->ops && s->ops->keep_free)
			s->ops->keep_free(s->res.keep);
		s->res.keep = NULL;
	}
	s->ended_step = true;
	event_active(s->cont, 0, 0);
}

void job_steps_image(struct job *job, size_t k)
{
	struct job_steps *s = of(job);
	if (s && s->phase == PH_WRITE && s->jp && k < s->step.n_images)
		job_plan_report_step(job, s->jp, s->cur + k);
}

void job_steps_image_written(struct job *job, size_t k)
{
	struct job_steps *s = of(job);
	if (s && s->phase == PH_WRITE && k < s->step.n_images)
		job_mark_written(job, s->step.images[k]);
}

bool job_steps_cancel(struct job *job)
{
	struct job_steps *s = of(job);
	if (!s)
		return false;
	if (s->resetting) {
		/* the transfer is over: its error stands */
		stop_waits(s);
		struct error e;
		error_init(&e);
		error_move(&e, &s->failed);
		s->resetting = false;
		fail(s, &e);
		return true;
	}
	if (s->wrote && !writes_after(s, s->next) &&
	    (s->phase == PH_WAIT_BACK || s->phase == PH_LEAVING)) {
		/* past the point of no return: the device applies what it got */
		not_verified(s, "the job was cancelled while the device rebooted");
		return true;
	}
	give_back(s); /* cancelled between the READ and the serial write */
	stop_waits(s);
	s->phase = PH_IDLE;
	return false;
}

void job_steps_stop(struct job *job)
{
	struct job_steps *s = of(job);
	if (!s)
		return;
	stop_waits(s);
	s->phase = PH_IDLE;
	s->ended_step = false;
}

void job_steps_free(struct job_steps *s)
{
	if (!s)
		return;
	if (s->timer)
		event_free(s->timer);
	if (s->cont)
		event_free(s->cont);
	mode_switch_dfu_leave_free(s->leave);
	drop_kept(s);
	if (s->res.keep && s->ops && s->ops->keep_free)
		s->ops->keep_free(s->res.keep); /* a READ's end the loop never took */
	error_clear(&s->err);
	error_clear(&s->failed);
	error_clear(&s->held);
	error_clear(&s->peek_err);
	free(s->jp);
	free(s);
}
