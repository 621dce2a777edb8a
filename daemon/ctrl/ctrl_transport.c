/*
 * The control-request transport (issue 14): a step executor (transport.h) for
 * a device running Device OS (normal, listening or safe mode) that answers
 * Particle's USB control requests.  It knows neither serial/ nor dfu/: it gets
 * the daemon's libusb context from the USB service (usb/usb_loop.h).
 *
 * A run opens the device by its USB address (no interface is claimed) and, by
 * its step:
 *  - READ, VERIFY: reads what identifies it (device id, Device OS, mode, module
 *    info) and reports it; a device that does not answer is no_answer for a
 *    READ (the core asks another transport); a VERIFY whose device resets again
 *    while it reads waits for it and reads again;
 *  - WRITE: sends the step's image by the firmware-update exchange; the step
 *    ends when the device took it (it resets to apply it: the core waits);
 *  - ENTER_DFU: asks the device to enter DFU mode (Device OS system/src/control:
 *    CTRL_REQUEST_DFU_MODE); the core waits for it;
 *  - ENTER_LISTENING: asks the device to enter listening mode
 *    (CTRL_REQUEST_START_LISTENING, Device OS system/inc/system_control.h; what
 *    particle-usb's enterListeningMode() sends).
 *
 * The handle is opened per run and closed when the run ends (under umockdev
 * an open usbfs node keeps the loop busy, see usb_loop.h).
 */
#include "ctrl.h"
#include "ctrl_assets.h"
#include "ctrl_usb.h"
#include "usb_loop.h"

#include "capability.h"
#include "plan.h"
#include "preflight.h"
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#define CTRL_OPEN_RETRY_MS 100 /* the device is on udev's list before libusb's */
#define CTRL_REREAD_MAX	   3   /* resets in a row while reading a device that came back */

enum run_state {
	RUN_OPENING, /* waiting for libusb to list the device, then opening it */
	RUN_READING, /* the identification requests */
	RUN_NEXT,    /* a request ended: the next step runs from the timer, outside the ctrl */
	RUN_WRITING, /* the firmware-update exchange of the step's image */
	RUN_WRITTEN, /* it ended: what follows runs from the timer */
	RUN_REBOOT,  /* VERIFY: the device reset again while read: waiting for it */
	RUN_ASK_DFU, /* the enter-DFU or start-listening request in flight */
	RUN_ASKED,   /* it ended: what follows runs from the timer */
	RUN_ENDED,
};

/* The identification, one request after another; the asset store last, optional
 * (ctrl_assets.h). */
static const enum ctrl_op read_ops[] = {
    CTRL_OP_DEVICE_ID,	 CTRL_OP_SYSTEM_VERSION, CTRL_OP_DEVICE_MODE,
    CTRL_OP_MODULE_INFO, CTRL_OP_ASSET_INFO,
};
#define N_READ_OPS (sizeof(read_ops) / sizeof(read_ops[0]))
/* A READ for the mode alone (job_step.mode_only): two requests. */
static const enum ctrl_op mode_ops[] = {CTRL_OP_SYSTEM_VERSION, CTRL_OP_DEVICE_MODE};
#define N_MODE_OPS (sizeof(mode_ops) / sizeof(mode_ops[0]))

/* The libusb handle outlives the run until the ctrl has let go of it. */
struct ctrl_handle {
	struct usb_loop *loop;
	libusb_device_handle *handle;
};

struct transport_run {
	struct job *job;
	struct job_step step; /* the step this run executes */
	struct event_base *base;
	struct event *timer;
	enum run_state state;
	struct device_snapshot dev;
	struct device_facts facts;
	enum device_mode mode;
	struct ctrl_handle *h;
	struct ctrl *ctrl;
	size_t op_i;
	unsigned open_ms;     /* spent waiting for libusb to list the device */
	struct error pending; /* the request that ended failed */
	bool seen_gone;	      /* RUN_REBOOT: the device went away (the reset happened) */
	unsigned reread;      /* identifications after a reset cut off by another reset */
};

const struct timeout_def ctrl_transport_timeouts[] = {
    {"ctrl_request_ms", CTRL_REQUEST_MS_DEFAULT,
     "bound one USB control request from INIT to its reply (CHECK polled every 5-50 ms)"},
    {"ctrl_reenumerate_ms", 15000,
     "a device that is to answer control requests -> listed by libusb and opened"},
    {NULL, 0, NULL},
};

static void arm(struct transport_run *r, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

static void on_in_flight(void *userdata, int delta)
{
	struct ctrl_handle *h = userdata;
	usb_loop_in_flight(h->loop, delta);
}

static void on_released(void *userdata)
{
	struct ctrl_handle *h = userdata;
	if (h->handle)
		libusb_close(h->handle);
	free(h);
}

/* Drops the device: the ctrl first (it closes the handle once nothing is in flight). */
static void close_device(struct transport_run *r)
{
	if (r->ctrl) {
		ctrl_free(r->ctrl);
		r->ctrl = NULL;
		r->h = NULL; /* freed by on_released */
	} else if (r->h) {
		on_released(r->h);
		r->h = NULL;
	}
}

/* Ends the step: res NULL and err set = failed. */
static void end_run(struct transport_run *r, const struct job_step_result *res, struct error *err)
{
	r->state = RUN_ENDED;
	evtimer_del(r->timer);
	close_device(r);
	job_step_done(r->job, res, err);
}

static void fail(struct transport_run *r, struct error *err)
{
	if (r->dev.key[0])
		error_detail_str(err, "device", r->dev.key);
	end_run(r, NULL, err);
}

static enum device_mode mode_from_facts(const struct transport_run *r)
{
	if (r->mode == DEVICE_MODE_LISTENING)
		return DEVICE_MODE_LISTENING;
	json_t *invalid = json_array();
	size_t n = plan_invalid_modules(&r->facts, invalid);
	json_decref(invalid);
	/* Device OS runs safe mode when a module fails its checks; GET_DEVICE_MODE
	 * knows only normal and listening. */
	return n > 0 ? DEVICE_MODE_SAFE : DEVICE_MODE_NORMAL;
}

/*
 * Module info before Device OS 5.6.0 carries no hashes and only two of the
 * checks (integrity, dependencies); the console's `s` has the hash and all four.
 * Where the registry holds the module list of this very boot (modules_known is
 * cleared when the device leaves), a module of the same function, index and
 * version keeps the hash and the verdicts of the checks read there, so that the
 * plan judges "installed identically" as it did over the console and
 * `flashctl info` shows what the device said then.
 */
static void keep_known_hashes(struct transport_run *r)
{
	const struct device_facts *known = &job_device(r->job)->facts;
	if (!known->modules_known)
		return;
	for (unsigned i = 0; i < r->facts.n_modules; i++) {
		struct installed_module *m = &r->facts.modules[i];
		for (unsigned k = 0; k < known->n_modules; k++) {
			const struct installed_module *o = &known->modules[k];
			if (o->function != m->function || o->index != m->index ||
			    o->store != m->store || o->version != m->version)
				continue;
			if (!m->sha256[0] && o->sha256[0])
				memcpy(m->sha256, o->sha256, sizeof(m->sha256));
			uint16_t more = o->checked & (uint16_t)~m->checked;
			m->checked |= more;
			m->passed |= o->passed & more;
			break;
		}
	}
}

/* The READ's requests: all of them, or those of a READ for the mode alone. */
static size_t read_n(const struct transport_run *r)
{
	return r->step.mode_only ? N_MODE_OPS : N_READ_OPS;
}

/* The READ's request at op_i (< read_n()). */
static enum ctrl_op read_op(const struct transport_run *r)
{
	return r->step.mode_only ? mode_ops[r->op_i] : read_ops[r->op_i];
}

static void identified(struct transport_run *r)
{
	keep_known_hashes(r);
	if (!r->dev.tty[0])
		r->facts.no_tty = true; /* control requests alone reach it (plan.c) */
	r->mode = mode_from_facts(r);
	struct job_step_result res = {.facts = r->facts, .mode = r->mode};
	end_run(r, &res, NULL);
}

/* ---- mode switch by request ------------------------------------------------------ */

static void on_asked(struct ctrl *c, const struct ctrl_result *res, struct error *err,
		     void *userdata)
{
	(void)c;
	(void)res;
	struct transport_run *r = userdata;
	if (r->state != RUN_ASK_DFU)
		return;
	if (err)
		error_move(&r->pending, err);
	r->state = RUN_ASKED;
	arm(r, 0);
}

static void ask_mode(struct transport_run *r, enum ctrl_op op)
{
	struct error e;
	error_init(&e);
	job_set_state(r->job, JOB_SWITCHING_MODE);
	r->state = RUN_ASK_DFU;
	if (ctrl_op_start(r->ctrl, op, on_asked, r, &e) < 0)
		fail(r, &e);
}

static void after_ask(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	error_move(&e, &r->pending);
	/* done when e is not set: the device resets into DFU mode, or listens */
	end_run(r, NULL, &e);
}

/* ---- writes by the firmware-update exchange ----------------------------------------- */

static void on_fw_progress(struct ctrl *c, size_t done, size_t total, void *userdata)
{
	(void)c;
	struct transport_run *r = userdata;
	job_progress(r->job, done, total);
}

static void on_fw_done(struct ctrl *c, const struct ctrl_result *res, struct error *err,
		       void *userdata)
{
	(void)c;
	(void)res;
	struct transport_run *r = userdata;
	if (r->state != RUN_WRITING)
		return;
	if (err)
		error_move(&r->pending, err);
	r->state = RUN_WRITTEN;
	arm(r, 0);
}

static const char *step_file(const struct transport_run *r)
{
	return r->step.n_images ? job_image_name(r->job, r->step.images[0]) : "";
}

static void start_write(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	const struct image *img =
	    r->step.n_images == 1 ? job_image(r->job, r->step.images[0]) : NULL;
	if (!img) {
		error_set(&e, ERR_INTERNAL, "a firmware update takes one image");
		fail(r, &e);
		return;
	}
	job_set_state(r->job, JOB_WRITING);
	r->state = RUN_WRITING;
	if (ctrl_firmware_update(r->ctrl, img->data, img->len, on_fw_progress, on_fw_done, r, &e) <
	    0) {
		error_detail_str(&e, "file", step_file(r));
		fail(r, &e);
	}
}

static void after_write(struct transport_run *r)
{
	if (error_is_set(&r->pending)) {
		struct error e;
		error_init(&e);
		error_move(&e, &r->pending);
		error_detail_str(&e, "file", step_file(r));
		fail(r, &e);
		return;
	}
	/* Device OS applies the module at the reset that follows FINISH: the core waits. */
	struct job_step_result res = {.facts = r->facts, .mode = DEVICE_MODE_UNKNOWN};
	end_run(r, &res, NULL);
}

/* ---- the requests --------------------------------------------------------------- */

static void next_op(struct transport_run *r);

static void take_result(struct transport_run *r, const struct ctrl_result *res)
{
	switch (res->op) {
	case CTRL_OP_DEVICE_ID:
		snprintf(r->facts.device_id, sizeof(r->facts.device_id), "%.*s", DEVICE_ID_LEN,
			 res->text);
		break;
	case CTRL_OP_SYSTEM_VERSION:
		snprintf(r->facts.os_version, sizeof(r->facts.os_version), "%.*s",
			 (int)sizeof(r->facts.os_version) - 1, res->text);
		break;
	case CTRL_OP_DEVICE_MODE:
		r->mode =
		    res->mode == CTRL_MODE_LISTENING ? DEVICE_MODE_LISTENING : DEVICE_MODE_NORMAL;
		break;
	case CTRL_OP_MODULE_INFO:
		r->facts.n_modules = 0;
		for (unsigned i = 0; i < res->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
			const struct installed_module *m = &res->modules[i];
			r->facts.modules[r->facts.n_modules++] = *m;
			if (m->function == MODULE_FUNCTION_SYSTEM && m->index == 1 &&
			    m->store == MODULE_STORE_MAIN)
				r->facts.system_version = m->version;
		}
		r->facts.modules_known = true;
		r->facts.unknown_functions = 0;
		break;
	case CTRL_OP_ASSET_INFO:
		ctrl_assets_take(&r->facts, res);
		break;
	default:
		break;
	}
}

static void on_op_done(struct ctrl *c, const struct ctrl_result *res, struct error *err,
		       void *userdata)
{
	(void)c;
	struct transport_run *r = userdata;
	if (r->state != RUN_READING)
		return;
	if (err)
		error_move(&r->pending, err);
	else
		take_result(r, res);
	/* continue from the loop: the ctrl may be freed by what follows */
	r->state = RUN_NEXT;
	arm(r, 0);
}

static void after_op(struct transport_run *r)
{
	if (error_is_set(&r->pending)) {
		struct error e;
		error_init(&e);
		error_move(&e, &r->pending);
		if (ctrl_assets_optional(read_op(r), &e)) {
			/* no asset store to read on this Device OS: the assets stay unknown */
			r->facts.assets_known = false;
			r->op_i++;
			r->state = RUN_READING;
			next_op(r);
			return;
		}
		if (e.code == ERR_DEVICE_GONE && r->step.kind == JOB_STEP_VERIFY &&
		    r->reread++ < CTRL_REREAD_MAX) {
			/* still resetting after the update or the DFU leave: wait for it again */
			error_clear(&e);
			close_device(r);
			r->state = RUN_REBOOT;
			r->seen_gone = !r->dev.present;
			arm(r, timeout_ms("ctrl_reenumerate_ms"));
			return;
		}
		if (error_detail_type(e.code, "request") == 's' &&
		    !(e.detail && json_object_get(e.detail, "request")))
			error_detail_str(&e, "request", ctrl_op_name(read_op(r)));
		if (r->step.kind == JOB_STEP_READ && e.code != ERR_CANCELLED &&
		    e.code != ERR_DEVICE_BUSY && e.code != ERR_DEVICE_GONE) {
			/* a device that does not answer control requests: the core asks another
			 * transport (or, for a probe, says what USB says); one that answers BUSY
			 * does answer: that is its cause, not silence; one that went away
			 * (unplugged, re-enumerating) is waited for by the core's replug rule,
			 * which another transport would not be */
			struct job_step_result none = {.facts = r->facts, .no_answer = true};
			char msg[sizeof(e.message)];
			snprintf(msg, sizeof(msg), "%s", e.message);
			error_set(&e, e.code,
				  "the device did not answer the control request either (%s)", msg);
			close_device(r);
			end_run(r, &none, &e);
			return;
		}
		fail(r, &e);
		return;
	}
	r->op_i++;
	r->state = RUN_READING;
	next_op(r);
}

static void next_op(struct transport_run *r)
{
	if (r->op_i >= read_n(r)) {
		identified(r);
		return;
	}
	struct error e;
	error_init(&e);
	if (ctrl_op_start(r->ctrl, read_op(r), on_op_done, r, &e) < 0)
		fail(r, &e);
}

/* ---- opening ---------------------------------------------------------------------- */

static int open_device(struct transport_run *r, struct error *err)
{
	struct usb_loop *loop = usb_loop_daemon();
	if (!loop)
		return error_set(err, ERR_INTERNAL,
				 "flashd has no USB context (the DFU transport owns it and did "
				 "not start), so control requests cannot be sent");
	libusb_device *dev = usb_loop_find(loop, r->dev.busnum, r->dev.devnum);
	if (!dev)
		return 1; /* not listed yet: retried */
	struct ctrl_handle *h = calloc(1, sizeof(*h));
	if (!h) {
		libusb_unref_device(dev);
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	}
	h->loop = loop;
	int rc = libusb_open(dev, &h->handle);
	libusb_unref_device(dev);
	if (rc < 0) {
		free(h);
		if (rc == LIBUSB_ERROR_ACCESS) {
			error_set(err, ERR_PERMISSION_DENIED,
				  "flashd may not open %s to send control requests",
				  r->dev.usb_devnode);
			error_detail_str(err, "path", r->dev.usb_devnode);
			error_detail_int(err, "errno", EACCES);
			return -1;
		}
		if (rc == LIBUSB_ERROR_NO_DEVICE)
			return 1;
		error_set(err, ERR_TRANSFER_FAILED, "opening %s for control requests failed: %s",
			  r->dev.usb_devnode, libusb_error_name(rc));
		error_detail_str(err, "reason", libusb_error_name(rc));
		return -1;
	}
	r->h = h;
	struct ctrl_usb_hooks hooks = {
	    .in_flight = on_in_flight, .released = on_released, .userdata = h};
	struct ctrl_options opt = {.request_ms = timeout_ms("ctrl_request_ms"),
				   .device_os =
				       r->facts.os_version[0] ? r->facts.os_version : NULL};
	r->ctrl = ctrl_open_usb(r->base, h->handle, &hooks, &opt, err);
	if (!r->ctrl)
		return -1;
	return 0;
}

static void try_open(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	int rc = r->dev.present ? open_device(r, &e) : 1;
	if (rc < 0) {
		fail(r, &e);
		return;
	}
	if (rc > 0) {
		if (r->open_ms >= timeout_ms("ctrl_reenumerate_ms")) {
			error_set(&e, ERR_DEVICE_GONE,
				  "the device %s is not (or no longer) on the bus to answer "
				  "control requests",
				  r->dev.usb_devnode);
			error_detail_str(&e, "phase", "open");
			fail(r, &e);
			return;
		}
		r->open_ms += CTRL_OPEN_RETRY_MS;
		arm(r, CTRL_OPEN_RETRY_MS);
		return;
	}
	switch (r->step.kind) {
	case JOB_STEP_WRITE:
		start_write(r);
		return;
	case JOB_STEP_ENTER_DFU:
		ask_mode(r, CTRL_OP_ENTER_DFU);
		return;
	case JOB_STEP_ENTER_LISTENING:
		ask_mode(r, CTRL_OP_START_LISTENING);
		return;
	default:
		r->state = RUN_READING;
		r->op_i = 0;
		next_op(r);
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct transport_run *r = arg;
	if (r->state == RUN_OPENING)
		try_open(r);
	else if (r->state == RUN_NEXT)
		after_op(r);
	else if (r->state == RUN_WRITTEN)
		after_write(r);
	else if (r->state == RUN_ASKED)
		after_ask(r);
	else if (r->state == RUN_REBOOT) {
		struct error e;
		error_init(&e);
		error_set(&e, ERR_TIMED_OUT, "the device did not come back after its reset");
		error_detail_str(&e, "phase", "rebooting");
		error_detail_int(&e, "timeout_ms", timeout_ms("ctrl_reenumerate_ms"));
		fail(r, &e);
	}
}

/* ---- the vtable ------------------------------------------------------------------- */

static int facts_major(const struct device_facts *f)
{
	uint16_t v = capability_version(f->os_version, f->system_version);
	return v ? v / 1000 : -1;
}

static bool ctrl_can_serve(const struct device_snapshot *dev)
{
	/* A running device that may answer control requests: Device OS 6.x, or a
	 * version not known yet (the serial transport asks first on <= 5.x).  A running
	 * device without a tty (no cdc_acm binding: the registry says so once its tty did
	 * not come), whatever its Device OS: nothing but control requests reaches it. */
	if (dev->mode == DEVICE_MODE_DFU || !dev->busnum || !dev->devnum)
		return false;
	uint16_t v = capability_version(dev->facts.os_version, dev->facts.system_version);
	if (!dev->tty[0] && dev->facts.no_tty) /* registry_tty_settle_ms after it appeared */
		return capability_has(CAPABILITY_CONTROL_REQUESTS, dev->facts.platform, v, true);
	return v == 0 ||
	       (facts_major(&dev->facts) >= 6 &&
		capability_has(CAPABILITY_CONTROL_REQUESTS, dev->facts.platform, v, false));
}

static struct transport_run *ctrl_start(struct job *job, const struct job_step *step,
					struct error *err)
{
	if (job_device(job)->mode == DEVICE_MODE_DFU) {
		error_set(err, ERR_NOT_FLASHABLE_HERE,
			  "the device is in DFU mode, where it answers no control requests");
		error_detail_str(err, "transport", "ctrl");
		return NULL;
	}
	struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	r->job = job;
	r->step = *step;
	r->base = job_event_base(job);
	r->dev = *job_device(job);
	r->facts = r->dev.facts;
	r->mode = r->dev.mode;
	error_init(&r->pending);
	r->timer = evtimer_new(r->base, on_timer, r);
	if (!r->timer) {
		free(r);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	job_set_state(job,
		      step->kind == JOB_STEP_VERIFY  ? JOB_VERIFYING
		      : step->kind == JOB_STEP_WRITE ? JOB_WRITING
		      : step->kind == JOB_STEP_ENTER_DFU || step->kind == JOB_STEP_ENTER_LISTENING
			  ? JOB_SWITCHING_MODE
			  : JOB_PREFLIGHT);
	r->state = RUN_OPENING;
	arm(r, 0);
	return r;
}

static void ctrl_cancel_run(struct transport_run *r)
{
	struct error e;
	error_init(&e);
	if (r->state == RUN_WRITING && r->ctrl) {
		/* the exchange stops at the next chunk and cancels the update on the device;
		 * its callback ends the step */
		ctrl_cancel(r->ctrl);
		return;
	}
	if (r->state == RUN_WRITTEN || r->state == RUN_ASK_DFU || r->state == RUN_ASKED)
		return; /* past the point of no return: it ends by itself */
	error_set(&e, ERR_CANCELLED, "the job was cancelled");
	error_detail_str(&e, "phase", job_step_kind_name(r->step.kind));
	end_run(r, NULL, &e);
}

static void ctrl_device_event(struct transport_run *r, enum device_event ev,
			      const struct device_snapshot *dev)
{
	r->dev = *dev;
	if (r->state == RUN_ENDED)
		return;
	if (ev == DEVICE_EVENT_GONE && (r->state == RUN_READING || r->state == RUN_NEXT)) {
		/* the request in flight ends with device-gone (transfer NO_DEVICE) */
		return;
	}
	if (ev == DEVICE_EVENT_BACK && r->state == RUN_OPENING)
		arm(r, 0);
	if (ev == DEVICE_EVENT_GONE && r->state == RUN_REBOOT)
		r->seen_gone = true;
	if ((ev == DEVICE_EVENT_BACK || ev == DEVICE_EVENT_CHANGED) && dev->present &&
	    r->state == RUN_REBOOT && r->seen_gone && dev->mode != DEVICE_MODE_DFU) {
		/* back running: read it again */
		r->state = RUN_OPENING;
		r->open_ms = 0;
		r->op_i = 0;
		arm(r, 0);
	}
}

static void ctrl_free_run(struct transport_run *r)
{
	if (!r)
		return;
	if (r->timer)
		event_free(r->timer);
	close_device(r);
	error_clear(&r->pending);
	free(r);
}

/* The transport holds the daemon's libusb context from init() to exit() (transport.h). */
static int ctrl_init(struct event_base *base, struct error *err)
{
	return usb_loop_acquire(base, err) ? 0 : -1;
}

static void ctrl_exit(void)
{
	usb_loop_release();
}

const struct transport_ops ctrl_transport = {
    .name = "ctrl",
    .init = ctrl_init,
    .exit = ctrl_exit,
    .can_serve = ctrl_can_serve,
    .rules = preflight_rules_ctrl,
    .verdict = ctrl_assets_verdict,
    .start = ctrl_start,
    .cancel = ctrl_cancel_run,
    .device_event = ctrl_device_event,
    .free = ctrl_free_run,
    .timeouts = ctrl_transport_timeouts,
};
