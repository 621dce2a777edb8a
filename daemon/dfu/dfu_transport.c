/*
 * The DFU transport (issue 7): one run per job.  Switches a CDC device into
 * DFU with the 14400-baud line coding (docs/device/console.md#magic-baud-rates) and follows it
 * across the
 * re-enumeration, opens it, reads what is in flash (UPLOAD of module
 * prefixes), runs the generic and DFU preflight, erases exactly, writes,
 * optionally reads back, leaves, and waits for the device to come back.  A
 * device that comes back on Device OS <= 5.x is verified over its
 * listening-mode console (cdc_query.h: 28800 -> `s` -> `x`).
 *
 * A probe job (no images, dry run) reads the module prefixes of a device in
 * DFU mode and leaves it there; it never switches a CDC device into DFU.
 *
 * One explicit state per phase; the events are dfuse completions, the run's
 * timer and device events from the registry.
 */
#include "cdc_query.h"
#include "dfu_preflight.h"
#include "dfuse.h"
#include "usb.h"

#include "transport.h"

#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <syslog.h>
#include <unistd.h>

/* START_DFU_FLASHER_SERIAL_SPEED (docs/device/console.md#magic-baud-rates) */
#define DFU_SWITCH_BAUD	  14400
#define DFU_OPEN_RETRY_MS 100
#define DFU_OPEN_RETRIES  50   /* udev can announce the node before libusb lists it */
#define DFU_GONE_GRACE_MS 1000 /* after udev says the device is gone, before failing the run */

static const struct timeout_def dfu_timeouts[] = {
    {"dfu_reenumerate_ms", 15000, "wait for a device to re-enumerate after a mode switch or leave"},
    CDC_QUERY_TIMEOUT_DEFS, /* verify over serial after leave (shared with the serial transport) */
    {NULL, 0, NULL},
};

enum run_state {
	RUN_SWITCHING,	   /* 14400 baud sent; waiting for the device to come back in DFU */
	RUN_OPENING,	   /* waiting for libusb to list the device */
	RUN_DFU_OPEN,	   /* dfuse_open */
	RUN_READBACK,	   /* UPLOAD of one module prefix */
	RUN_ERASE,	   /* dfuse_erase of writes[i] */
	RUN_WRITE,	   /* dfuse_download of writes[i] */
	RUN_VERIFY,	   /* dfuse_upload of writes[i] */
	RUN_LEAVE,	   /* dfuse_leave */
	RUN_WAIT_BACK,	   /* device re-enumerating into its firmware */
	RUN_VERIFY_SERIAL, /* back as CDC on <= 5.x: cdc_query reads `s` */
	RUN_FINISHED,
};

struct transport_run {
	struct job *job;
	enum run_state state;
	struct event *timer;
	struct usb_dfu_dev *usb;
	struct dfuse *dfuse;
	struct cdc_query *query;
	struct dfu_readback rb;
	unsigned probe_i;
	bool layout_known;
	struct device_facts facts;
	struct dfu_plan plan;
	unsigned write_i;
	uint8_t *verify_buf;
	bool verified;
	bool cancel_requested;
	bool gone; /* udev reported the device gone during a USB operation */
	unsigned open_retries;
	struct device_snapshot dev;
};

static void step(struct transport_run *r);

static void run_fail(struct transport_run *r, struct error *err)
{
	if (r->state == RUN_FINISHED)
		return;
	if (r->dfuse)
		dfuse_attach_trace(r->dfuse, err);
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	cdc_query_free(r->query);
	r->query = NULL;
	usb_dfu_close(r->usb);
	r->usb = NULL;
	job_finish(r->job,
		   r->cancel_requested && err->code == ERR_CANCELLED ? JOB_RESULT_CANCELLED
								     : JOB_RESULT_FAILED,
		   NULL, err);
}

static void run_done(struct transport_run *r, const char *word)
{
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	cdc_query_free(r->query);
	r->query = NULL;
	usb_dfu_close(r->usb);
	r->usb = NULL;
	job_finish(r->job, JOB_RESULT_DONE, word, NULL);
}

static void arm(struct transport_run *r, unsigned ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

/* Sets the CDC line coding to 14400 baud: the firmware resets into DFU
 * (docs/device/console.md#magic-baud-rates, docs/device/dfuse.md#entering-dfu-mode). */
static int switch_to_dfu(const char *tty, struct error *err)
{
	int fd = open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == EACCES)
			error_set(err, ERR_PERMISSION_DENIED, "cannot open %s to switch it to DFU",
				  tty);
		else
			error_set(err, ERR_DEVICE_GONE, "cannot open %s to switch it to DFU: %s",
				  tty, strerror(errno));
		if (err->code == ERR_PERMISSION_DENIED) {
			error_detail_str(err, "path", tty);
			error_detail_int(err, "errno", errno);
			error_detail_str(err, "operation", "open");
		}
		return -1;
	}
	struct termios2 tio;
	int r = ioctl(fd, TCGETS2, &tio);
	if (r == 0) {
		tio.c_cflag &= ~(tcflag_t)CBAUD;
		tio.c_cflag |= BOTHER;
		tio.c_ispeed = tio.c_ospeed = DFU_SWITCH_BAUD;
		r = ioctl(fd, TCSETS2, &tio);
	}
	int e = errno;
	close(fd);
	if (r < 0) {
		error_set(err, ERR_TRANSFER_FAILED, "setting %s to 14400 baud failed: %s", tty,
			  strerror(e));
		error_detail_str(err, "phase", "switching-mode");
		error_detail_str(err, "reason", strerror(e));
		return -1;
	}
	return 0;
}

static void on_dfuse_done(struct dfuse *s, int result, struct error *err, void *userdata);

static int start_op(struct transport_run *r, struct error *err)
{
	const struct dfu_write *w =
	    r->write_i < r->plan.n_writes ? &r->plan.writes[r->write_i] : NULL;
	switch (r->state) {
	case RUN_READBACK: {
		struct dfu_probe *p = &r->rb.probes[r->probe_i];
		p->len = dfu_probe_size(p);
		return dfuse_upload(r->dfuse, 0, p->address, dfu_probe_data(p), p->len,
				    on_dfuse_done, r, err);
	}
	case RUN_ERASE:
		return dfuse_erase(r->dfuse, w->alt, w->address, w->len, on_dfuse_done, r, err);
	case RUN_WRITE:
		return dfuse_download(r->dfuse, w->alt, w->address, w->data, w->len, on_dfuse_done,
				      r, err);
	case RUN_VERIFY:
		free(r->verify_buf);
		r->verify_buf = malloc(w->len);
		return dfuse_upload(r->dfuse, w->alt, w->address, r->verify_buf, w->len,
				    on_dfuse_done, r, err);
	case RUN_LEAVE:
		return dfuse_leave(r->dfuse, on_dfuse_done, r, err);
	default:
		return 0;
	}
}

static int preflight(struct transport_run *r, struct error *err)
{
	struct preflight_input in[PREFLIGHT_MAX_IMAGES];
	size_t n = job_image_count(r->job);
	if (n > PREFLIGHT_MAX_IMAGES)
		n = PREFLIGHT_MAX_IMAGES;
	for (size_t i = 0; i < n; i++) {
		in[i].img = job_image(r->job, i);
		in[i].name = job_image_name(r->job, i);
	}
	struct preflight_rules rules;
	struct preflight_plan pp;
	dfu_preflight_rules(&r->facts, &rules);
	const struct job_options *o = job_options(r->job);
	if (preflight_check(&r->facts, r->dev.usb_devnode, in, n, &rules, o->force, &pp, err) < 0)
		return -1;
	return dfu_preflight_plan(&r->facts, r->layout_known, dfuse_get_info(r->dfuse), &pp,
				  o->force, &r->plan, err);
}

/* The leave request is done, or the device reset before its GETSTATUS came back (a
 * vanished device means success, docs/device/dfuse.md#requests-and-states): release it and wait for
 * it to come back. */
static void left_dfu(struct transport_run *r)
{
	/* Released right away; nothing more is sent (docs/device/dfuse.md#requests-and-states). */
	usb_dfu_close(r->usb); /* detaches the dfuse first */
	r->usb = NULL;
	dfuse_free(r->dfuse);
	r->dfuse = NULL;
	r->state = RUN_WAIT_BACK;
	job_note(r->job, "device-reset", "left DFU mode; waiting for the device to come back");
	arm(r, timeout_ms("dfu_reenumerate_ms"));
}

/* Decides and starts what comes after the phase that just ended. */
static void step(struct transport_run *r)
{
	struct error err;
	error_init(&err);
	const struct job_options *o = job_options(r->job);
	if (r->cancel_requested && r->state != RUN_LEAVE && r->state != RUN_WAIT_BACK) {
		error_set(&err, ERR_CANCELLED, "the job was cancelled");
		error_detail_str(&err, "phase", "dfu");
		run_fail(r, &err);
		return;
	}
	switch (r->state) {
	case RUN_DFU_OPEN:
		job_set_state(r->job, JOB_PREFLIGHT);
		dfu_readback_clear(&r->rb);
		dfu_readback_plan(r->facts.platform, &r->rb);
		r->probe_i = 0;
		if (dfuse_get_info(r->dfuse)->protected_device || r->rb.n_probes == 0) {
			/* No UPLOAD on protected devices (docs/device/dfuse.md#memory-map-strings):
			 * preflight refuses below. */
			r->state = RUN_READBACK;
			r->probe_i = r->rb.n_probes;
			step(r);
			return;
		}
		r->state = RUN_READBACK;
		break;
	case RUN_READBACK:
		if (r->probe_i < r->rb.n_probes)
			break;
		/* What the reads found may call for more (the P2 user part's prefix). */
		if (dfu_readback_follow(&r->rb))
			break;
		{
			struct device_facts f;
			r->layout_known = dfu_readback_facts(&r->rb, dfuse_get_info(r->dfuse), &f);
			if (!f.platform)
				f.platform = r->facts.platform;
			r->facts = f;
			job_update_facts(r->job, &r->facts);
		}
		if (job_image_count(r->job) == 0 && o->dry_run) {
			/* A probe: what is in flash is known now; the device stays in DFU. */
			run_done(r, "probed");
			return;
		}
		if (job_image_count(r->job) == 0) {
			r->state = RUN_LEAVE;
			job_set_state(r->job, JOB_REBOOTING);
			break;
		}
		if (preflight(r, &err) < 0) {
			/* Refused before the first erase: leave the device as it is, in DFU. */
			run_fail(r, &err);
			return;
		}
		if (o->dry_run) {
			run_done(r, "preflight-ok");
			return;
		}
		r->write_i = 0;
		r->state = RUN_ERASE;
		job_set_state(r->job, JOB_ERASING);
		break;
	case RUN_ERASE:
		r->state = r->plan.writes[r->write_i].erase_only ? RUN_ERASE : RUN_WRITE;
		if (r->state == RUN_ERASE) {
			r->write_i++;
			if (r->write_i >= r->plan.n_writes) {
				r->state = RUN_LEAVE;
				job_set_state(r->job, JOB_REBOOTING);
			}
		} else {
			job_set_state(r->job, JOB_WRITING);
		}
		break;
	case RUN_WRITE:
		if (o->verify) {
			r->state = RUN_VERIFY;
			job_set_state(r->job, JOB_VERIFYING);
			break;
		}
		/* fallthrough */
	case RUN_VERIFY:
		if (r->state == RUN_VERIFY) {
			const struct dfu_write *w = &r->plan.writes[r->write_i];
			if (memcmp(r->verify_buf, w->data, w->len) != 0) {
				error_set(&err, ERR_TRANSFER_FAILED,
					  "read-back of %s at 0x%08x differs from the file",
					  w->name, w->address);
				error_detail_str(&err, "phase", "verify");
				error_detail_int(&err, "address", w->address);
				error_detail_str(&err, "reason", "read-back mismatch");
				run_fail(r, &err);
				return;
			}
			r->verified = true;
		}
		r->write_i++;
		if (r->write_i < r->plan.n_writes) {
			r->state = RUN_ERASE;
			job_set_state(r->job, JOB_ERASING);
		} else {
			r->state = RUN_LEAVE;
			job_set_state(r->job, JOB_REBOOTING);
		}
		break;
	case RUN_LEAVE:
		left_dfu(r);
		return;
	default:
		return;
	}
	if (start_op(r, &err) < 0)
		run_fail(r, &err);
}

static void on_dfuse_done(struct dfuse *s, int result, struct error *err, void *userdata)
{
	(void)s;
	struct transport_run *r = userdata;
	if (result < 0) {
		if (r->state == RUN_READBACK && err->code != ERR_DEVICE_GONE) {
			/* An unreadable slot is a fact, not a failure: the layout check decides. */
			r->rb.probes[r->probe_i].read = false;
			r->probe_i++;
			step(r);
			return;
		}
		error_prefix(err, "%s: ",
			     r->state == RUN_WRITE || r->state == RUN_ERASE
				 ? (r->plan.writes[r->write_i].name
					? r->plan.writes[r->write_i].name
					: "image")
				 : "DFU");
		run_fail(r, err);
		return;
	}
	if (r->state == RUN_READBACK) {
		r->rb.probes[r->probe_i].read = true;
		r->probe_i++;
	}
	step(r);
}

static void on_progress(struct dfuse *s, uint32_t address, size_t done, size_t total,
			void *userdata)
{
	(void)s;
	(void)address;
	struct transport_run *r = userdata;
	if (r->state == RUN_WRITE || r->state == RUN_ERASE || r->state == RUN_VERIFY)
		job_progress(r->job, done, total);
}

static void on_notice(struct dfuse *s, const char *note, const char *message, void *userdata)
{
	(void)s;
	struct transport_run *r = userdata;
	job_note(r->job, note, "%s", message);
}

static void open_device(struct transport_run *r)
{
	struct error err;
	error_init(&err);
	struct dfu_descriptors desc;
	struct usb_loop *loop = usb_loop_shared(job_event_base(r->job), &err);
	if (!loop) {
		run_fail(r, &err);
		return;
	}
	if (usb_dfu_open(loop, r->dev.busnum, r->dev.devnum, r->dev.usb_devnode, &r->usb, &desc,
			 &err) < 0) {
		if (err.code == ERR_DEVICE_GONE && ++r->open_retries < DFU_OPEN_RETRIES) {
			error_clear(&err);
			r->state = RUN_OPENING;
			arm(r, DFU_OPEN_RETRY_MS);
			return;
		}
		run_fail(r, &err);
		return;
	}
	struct dfu_io io = usb_dfu_io(r->usb);
	r->dfuse = dfuse_new(job_event_base(r->job), &io, &desc);
	usb_dfu_attach(r->usb, r->dfuse);
	dfuse_set_progress(r->dfuse, on_progress, r);
	dfuse_set_notice(r->dfuse, on_notice, r);
	r->facts = r->dev.facts;
	if (!r->facts.platform)
		r->facts.platform = platform_by_usb(desc.vid, desc.pid, NULL);
	r->state = RUN_DFU_OPEN;
	if (dfuse_open(r->dfuse, on_dfuse_done, r, &err) < 0)
		run_fail(r, &err);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct transport_run *r = arg;
	struct error err;
	error_init(&err);
	if (r->gone && r->state >= RUN_DFU_OPEN && r->state <= RUN_VERIFY) {
		dfuse_device_gone(r->dfuse, &err);
		error_prefix(&err, "%s: ",
			     (r->state == RUN_WRITE || r->state == RUN_ERASE) &&
				     r->plan.writes[r->write_i].name
				 ? r->plan.writes[r->write_i].name
				 : "DFU");
		run_fail(r, &err);
		return;
	}
	switch (r->state) {
	case RUN_OPENING:
		open_device(r);
		break;
	case RUN_SWITCHING:
		error_set(&err, ERR_TIMED_OUT,
			  "the device did not come back in DFU mode after the "
			  "14400-baud switch");
		error_detail_str(&err, "phase", "switching-mode");
		error_detail_int(&err, "timeout_ms", timeout_ms("dfu_reenumerate_ms"));
		run_fail(r, &err);
		break;
	case RUN_WAIT_BACK:
		if (r->dev.present && r->dev.mode != DEVICE_MODE_DFU) {
			/* Back in its firmware, but its serial port never appeared. */
			job_note(r->job, "not-verified",
				 "the device is back but has no serial port to verify over");
			run_done(r, r->verified ? "verified" : "written-not-verified");
			break;
		}
		error_set(&err, ERR_TIMED_OUT,
			  "the device did not come back after leaving DFU mode");
		error_detail_str(&err, "phase", "rebooting");
		error_detail_int(&err, "timeout_ms", timeout_ms("dfu_reenumerate_ms"));
		error_hint(&err,
			   "the firmware was written; reset the device and check that it runs");
		run_fail(r, &err);
		break;
	default:
		break;
	}
}

/* Does the job itself bring (function, index) in at least this version? */
static bool job_provides(struct job *job, uint8_t function, uint8_t index, uint16_t version)
{
	for (size_t i = 0; i < job_image_count(job); i++) {
		const struct image *img = job_image(job, i);
		for (unsigned k = 0; k < img->n_modules; k++)
			if (img->modules[k].function == function &&
			    img->modules[k].index == index && img->modules[k].version >= version)
				return true;
	}
	return false;
}

/*
 * A device that stays in DFU after leave does not say which check failed (the
 * bootloader has no console, docs/device/validation.md).  What the host can tell from the files and
 * the read-back: the platform and the dependencies against what is installed
 * plus the job (both skipped by --force).  Empty when none of them fails.
 */
static json_t *known_failed_checks(struct transport_run *r, const char **function)
{
	bool platform = false, deps = false;
	*function = NULL;
	for (size_t i = 0; i < job_image_count(r->job); i++) {
		const struct image *img = job_image(r->job, i);
		for (unsigned k = 0; k < img->n_modules; k++) {
			const struct image_module *m = &img->modules[k];
			if (!*function)
				*function = module_function_name(m->function);
			if (r->facts.platform && m->platform_id != r->facts.platform->id)
				platform = true;
			for (int d = 0; d < 2; d++) {
				const struct image_dependency *dep = &m->deps[d];
				if (dep->function == MODULE_FUNCTION_NONE ||
				    (dep->function == m->function && dep->index == m->index))
					continue;
				const struct installed_module *im =
				    preflight_installed(&r->facts, dep->function, dep->index);
				if (!(im && im->version >= dep->version) &&
				    !job_provides(r->job, dep->function, dep->index, dep->version))
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

static void booted_invalid(struct transport_run *r, enum device_mode mode)
{
	struct error err;
	error_init(&err);
	const char *function;
	json_t *checks = known_failed_checks(r, &function);
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
			  "flashd can make",
			  device_mode_name(mode));
	error_detail_str(&err, "mode", device_mode_name(mode));
	error_detail_json(&err, "failed_checks", checks);
	if (function)
		error_detail_str(&err, "module_function", function);
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	job_finish(r->job, JOB_RESULT_FAILED, "booted-invalid", &err);
}

/* ---- verify over serial after leave (Device OS <= 5.x) ------------------------------ */

/* The Device OS the device runs after the job: its system part, or the one the job wrote. */
static uint16_t system_version_after(struct transport_run *r)
{
	uint16_t v = r->facts.system_version;
	for (size_t i = 0; i < job_image_count(r->job); i++) {
		const struct image *img = job_image(r->job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++)
			if (img->modules[k].function == MODULE_FUNCTION_SYSTEM &&
			    img->modules[k].version > v)
				v = img->modules[k].version;
	}
	return v;
}

/* Only Device OS <= 5.x has a listening-mode console (docs/device/console.md#magic-baud-rates:
 * 28800 removed in 6.0.0);
 * an unknown version is tried (silence then means written-not-verified). */
static bool serial_verifiable(struct transport_run *r)
{
	uint16_t v = system_version_after(r);
	return v == 0 || v < 6000;
}

static void add_check(json_t *a, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) if (strcmp(json_string_value(v), name) == 0) return;
	json_array_append_new(a, json_string(name));
}

/* Whether the device lists every module the job wrote, in its version, valid (vc == vv).
 * Radio stacks are left out: `s` synthesises their entry
 * (docs/device/console.md#module-info-reply). */
static bool modules_as_written(struct transport_run *r, const struct device_facts *now,
			       json_t *failed, const char **function, const char **file)
{
	for (size_t i = 0; i < job_image_count(r->job); i++) {
		const struct image *img = job_image(r->job, i);
		for (unsigned k = 0; img && k < img->n_modules; k++) {
			const struct image_module *m = &img->modules[k];
			if (m->function != MODULE_FUNCTION_SYSTEM &&
			    m->function != MODULE_FUNCTION_USER &&
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
				*file = job_image_name(r->job, i);
			}
		}
	}
	return json_array_size(failed) == 0;
}

static void on_serial_verified(void *ctx, const struct cdc_query_result *res, struct error *err)
{
	struct transport_run *r = ctx;
	if (err) {
		/* Written; the device cannot be asked now (no console, port held). */
		job_note(r->job, "not-verified", "%s", err->message);
		run_done(r, r->verified ? "verified" : "written-not-verified");
		return;
	}
	struct device_facts now = res->facts;
	bool safe = cdc_query_facts_safe_mode(&now);
	job_update_facts(r->job, &now);
	job_set_device_mode(r->job, res->was_listening ? DEVICE_MODE_LISTENING
				    : safe	       ? DEVICE_MODE_SAFE
						       : DEVICE_MODE_NORMAL);
	json_t *failed = json_array();
	const char *function = NULL, *file = NULL;
	if (modules_as_written(r, &now, failed, &function, &file)) {
		json_decref(failed);
		run_done(r, "verified");
		return;
	}
	struct error e;
	error_init(&e);
	error_set(&e, ERR_BOOTED_INVALID,
		  "the firmware was written, but after the reboot the device reports %s %s: "
		  "see failed_checks",
		  file ? file : "a flashed module",
		  safe ? "invalid and runs safe mode" : "missing or invalid");
	error_detail_json(&e, "failed_checks", failed);
	error_detail_str(&e, "mode", safe ? "safe" : "normal");
	if (function)
		error_detail_str(&e, "module_function", function);
	if (file)
		error_detail_str(&e, "file", file);
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	cdc_query_free(r->query);
	r->query = NULL;
	job_finish(r->job, JOB_RESULT_FAILED, "booted-invalid", &e);
}

/* 28800 -> `s` -> `x` on the device that came back (docs/device/console.md#magic-baud-rates,
 * docs/device/console.md#module-info-reply). */
static void start_serial_verify(struct transport_run *r, const char *tty)
{
	struct error err;
	error_init(&err);
	struct cdc_query_config cfg = {.relisten = true};
	evtimer_del(r->timer);
	r->state = RUN_VERIFY_SERIAL;
	job_set_state(r->job, JOB_VERIFYING);
	r->query = cdc_query_start(job_event_base(r->job), tty, &r->dev.facts, &cfg,
				   on_serial_verified, r, &err);
	if (!r->query) {
		job_note(r->job, "not-verified", "%s", err.message);
		error_clear(&err);
		run_done(r, r->verified ? "verified" : "written-not-verified");
	}
}

static bool dfu_can_serve(const struct device_snapshot *dev)
{
	/* DFU-mode devices, and CDC devices it can switch with 14400 baud. */
	return dev->mode == DEVICE_MODE_DFU || dev->tty[0];
}

static struct transport_run *dfu_start(struct job *job, struct error *err)
{
	struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		error_set(err, ERR_INTERNAL, "out of memory");
		return NULL;
	}
	r->job = job;
	r->dev = *job_device(job);
	if (job_image_count(job) == 0 && job_options(job)->dry_run &&
	    r->dev.mode != DEVICE_MODE_DFU) {
		/* A probe never switches a running device into DFU (transport.h). */
		job_note(job, "no-console",
			 "the device has no listening-mode console (Device OS 6.x) and flashd does "
			 "not switch a device to DFU mode for a probe; put it in DFU mode to read "
			 "its modules");
		job_finish(job, JOB_RESULT_DONE, "probed", NULL);
		free(r);
		return NULL;
	}
	r->timer = evtimer_new(job_event_base(job), on_timer, r);
	if (r->dev.present && r->dev.mode != DEVICE_MODE_DFU && r->dev.tty[0]) {
		job_set_state(job, JOB_SWITCHING_MODE);
		if (switch_to_dfu(r->dev.tty, err) < 0) {
			evtimer_del(r->timer);
			event_free(r->timer);
			free(r);
			return NULL;
		}
		job_note(job, "switching-to-dfu", "set %s to 14400 baud", r->dev.tty);
		r->state = RUN_SWITCHING;
		arm(r, timeout_ms("dfu_reenumerate_ms"));
		return r;
	}
	if (!r->dev.present) {
		/* Handed over while re-enumerating: wait for it. */
		r->state = RUN_SWITCHING;
		arm(r, timeout_ms("dfu_reenumerate_ms"));
		return r;
	}
	r->state = RUN_OPENING;
	arm(r, 0);
	return r;
}

static void dfu_cancel(struct transport_run *r)
{
	r->cancel_requested = true;
	if (r->state == RUN_VERIFY_SERIAL) {
		/* Written and left: past the point of no return; only the check is skipped. */
		job_note(r->job, "not-verified", "the job was cancelled while verifying");
		run_done(r, r->verified ? "verified" : "written-not-verified");
		return;
	}
	if (r->state == RUN_SWITCHING || r->state == RUN_OPENING) {
		struct error err;
		error_init(&err);
		error_set(&err, ERR_CANCELLED, "the job was cancelled");
		error_detail_str(&err, "phase", "switching-mode");
		run_fail(r, &err);
		return;
	}
	/* Erase, write and read-back stop at the next chunk or erase-unit boundary; leave and
	 * the wait for the device are past the point of no return. */
	if (r->dfuse && r->state != RUN_LEAVE && r->state != RUN_WAIT_BACK)
		dfuse_cancel(r->dfuse);
}

static void dfu_device_event(struct transport_run *r, enum device_event ev,
			     const struct device_snapshot *dev)
{
	struct error err;
	error_init(&err);
	r->dev = *dev;
	if (r->state == RUN_LEAVE && (ev == DEVICE_EVENT_GONE || ev == DEVICE_EVENT_BACK))
		left_dfu(r); /* the reset overtook the leave's GETSTATUS */
	else if (ev == DEVICE_EVENT_GONE && r->state >= RUN_DFU_OPEN && r->state <= RUN_VERIFY) {
		/* Under some backends a transfer in flight never completes once the device is
		 * gone (no POLLERR): give libusb a moment to report it, then report it here. */
		r->gone = true;
		arm(r, DFU_GONE_GRACE_MS);
	}
	switch (r->state) {
	case RUN_SWITCHING:
		if (ev == DEVICE_EVENT_BACK && dev->mode == DEVICE_MODE_DFU) {
			evtimer_del(r->timer);
			job_set_device_mode(r->job, DEVICE_MODE_DFU);
			r->open_retries = 0;
			open_device(r);
		}
		break;
	case RUN_WAIT_BACK:
		if (ev != DEVICE_EVENT_BACK && ev != DEVICE_EVENT_CHANGED)
			break;
		if (dev->mode == DEVICE_MODE_NORMAL || dev->mode == DEVICE_MODE_LISTENING ||
		    dev->mode == DEVICE_MODE_UNKNOWN) {
			job_set_device_mode(r->job, dev->mode);
			if (!serial_verifiable(r))
				run_done(r, r->verified ? "verified" : "written-not-verified");
			else if (dev->tty[0])
				start_serial_verify(r, dev->tty);
			/* else: the tty node follows the usb_device (device-changed) */
		} else if (dev->mode == DEVICE_MODE_SAFE || dev->mode == DEVICE_MODE_DFU) {
			booted_invalid(r, dev->mode);
		}
		break;
	default:
		if (ev == DEVICE_EVENT_GONE && r->state != RUN_FINISHED && r->state != RUN_LEAVE) {
			/* The transfer in flight reports device-gone with its context; if none is
			 * in flight, report it here. */
			if (r->state == RUN_OPENING) {
				error_set(&err, ERR_DEVICE_GONE, "the device disappeared");
				error_detail_str(&err, "phase", "open");
				run_fail(r, &err);
			}
		}
		break;
	}
	error_clear(&err);
}

static void dfu_free(struct transport_run *r)
{
	if (!r)
		return;
	if (r->timer)
		event_free(r->timer);
	cdc_query_free(r->query);
	usb_dfu_close(r->usb); /* detaches the dfuse first: no completion reaches it */
	dfuse_free(r->dfuse);
	dfu_readback_clear(&r->rb);
	free(r->verify_buf);
	free(r);
}

const struct transport_ops dfu_transport = {
    .name = "dfu",
    .can_serve = dfu_can_serve,
    .start = dfu_start,
    .cancel = dfu_cancel,
    .device_event = dfu_device_event,
    .free = dfu_free,
    .timeouts = dfu_timeouts,
};
