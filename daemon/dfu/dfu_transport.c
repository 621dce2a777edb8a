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
#include "dfu_diff.h"
#include "dfu_preflight.h"
#include "dfuse.h"
#include "usb.h"

#include "cdc_query.h"
#include "job_plan.h"
#include "mode_switch.h"
#include "transport.h"

#include "capability.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

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
	RUN_PROBE_SKIPPED, /* a probe of a device not in DFU mode: ends from the timer */
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
	struct job_plan *jp;	 /* the job's plan as this run executes it */
	const char *after_leave; /* hand the job to this transport once the device is back */
	bool nothing_written;	 /* every file was installed already */
	unsigned write_i;
	struct dfu_diff *diff; /* writes[write_i] read back first, only what differs written */
	uint8_t *verify_buf;
	bool verified;
	bool cancel_requested;
	bool gone; /* udev reported the device gone during a USB operation */
	unsigned open_retries;
	struct device_snapshot dev;
};

static void step(struct transport_run *r);

/* The same for a write that runs as a diff: only its differing units were touched. */
static void report_diff_partial(struct transport_run *r, const struct dfu_write *w)
{
	struct dfu_diff_position pos;
	dfu_diff_position(r->diff, &pos);
	if (!pos.touched)
		return; /* still reading: the module is as it was */
	struct job_partial p = {
	    .image = w->job_index,
	    .function = w->function,
	    .index = w->index,
	    .start = w->address,
	    .end = (uint32_t)(w->address + w->len),
	    .size = w->len,
	    .erasing = pos.phase == DFU_DIFF_ERASING,
	    .address = pos.address,
	    .bytes_written = pos.bytes_written,
	    .chunk = pos.chunk,
	};
	job_set_partial(r->job, &p);
}

/* A run that stops while erasing or writing a file's module leaves it partly
 * erased or written: say where (job_set_partial()) from the dfuse's position. */
static void report_partial(struct transport_run *r)
{
	if ((r->state != RUN_ERASE && r->state != RUN_WRITE) || !r->dfuse ||
	    r->write_i >= r->plan.n_writes)
		return;
	const struct dfu_write *w = &r->plan.writes[r->write_i];
	if (w->erase_only) /* the old slot's invalidation page: no file of the job */
		return;
	if (r->diff) {
		report_diff_partial(r, w);
		return;
	}
	struct dfuse_position pos;
	dfuse_position(r->dfuse, &pos);
	/* the position is this write's if it started at its address */
	bool mine = pos.valid && (pos.erasing ? pos.start <= w->address : pos.start == w->address);
	struct job_partial p = {
	    .image = w->job_index,
	    .function = w->function,
	    .index = w->index,
	    .start = w->address,
	    .end = (uint32_t)(w->address + w->len),
	    .size = w->len,
	    .chunk = -1,
	};
	if (!mine || pos.erasing) {
		/* erasing (or erased, the download not started): nothing written yet */
		if (!mine && r->state == RUN_ERASE)
			return; /* the erase had not begun */
		p.erasing = true;
		p.address = mine ? pos.address : p.end;
		if (p.address > p.end)
			p.address = p.end;
	} else {
		if (pos.done >= w->len)
			return; /* the module is whole */
		p.address = pos.address;
		p.bytes_written = pos.done;
		p.chunk = (int)pos.chunk;
	}
	job_set_partial(r->job, &p);
}

static void run_fail(struct transport_run *r, struct error *err)
{
	if (r->state == RUN_FINISHED)
		return;
	report_partial(r);
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

static void on_dfuse_done(struct dfuse *s, int result, struct error *err, void *userdata);
static int start_diff(struct transport_run *r, const struct dfu_write *w, struct error *err);

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
		/* issue 18: read back first where it pays, then erase and write what differs;
		 * --force and rewrite write everything, as they promise */
		dfu_diff_free(r->diff);
		r->diff = NULL;
		if (!job_options(r->job)->force && !job_options(r->job)->rewrite &&
		    dfu_diff_pays(r->facts.platform, dfuse_get_info(r->dfuse), &r->facts, w, NULL,
				  0))
			return start_diff(r, w, err);
		return dfuse_erase(r->dfuse, w->alt, w->address, w->len, on_dfuse_done, r, err);
	case RUN_WRITE:
		return dfuse_download(r->dfuse, w->alt, w->address, w->data, w->len, on_dfuse_done,
				      r, err);
	case RUN_VERIFY:
		free(r->verify_buf);
		r->verify_buf = malloc(w->len);
		if (!r->verify_buf) {
			error_set(err, ERR_OUT_OF_MEMORY, "out of memory for the read-back of %s",
				  w->name ? w->name : "the image");
			error_detail_int(err, "size", (long long)w->len);
			return -1;
		}
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
	struct preflight_rules rules;
	dfu_preflight_rules(&r->facts, &rules);
	const struct job_options *o = job_options(r->job);
	if (!r->jp)
		r->jp = malloc(sizeof(*r->jp));
	if (!r->jp)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	if (job_plan_make(r->job, PLAN_TRANSPORT_DFU, &r->facts, DEVICE_MODE_DFU,
			  r->dev.usb_devnode, &rules, r->jp, err) < 0)
		return -1;
	if (r->jp->handoff || r->jp->plan.n_writes == 0)
		return 0;
	return dfu_preflight_plan(&r->facts, r->layout_known, dfuse_get_info(r->dfuse), &r->jp->pre,
				  o->force, &r->plan, err);
}

/* The plan step of the write in progress: files count, not DFU writes (a file may
 * need two, and the 0xD4000 invalidation page is an erase of its own). */
static void report_write_step(struct transport_run *r)
{
	if (!r->jp || r->write_i >= r->plan.n_writes)
		return;
	size_t n = 0;
	const char *last = NULL;
	for (unsigned i = 0; i <= r->write_i; i++) {
		if (r->plan.writes[i].erase_only)
			continue;
		if (r->plan.writes[i].name != last)
			n++;
		last = r->plan.writes[i].name;
	}
	job_plan_write_step(r->job, r->jp, n ? n - 1 : 0);
}

/* Write done_i is complete (and read back with --verify): when it was its file's
 * last, the file is written (job_mark_written()), so that a job resumed after the
 * device left (jobs.c, the replug rule) plans without it, over whatever transport
 * finds the device, and never writes a finished file again. */
static void file_written(struct transport_run *r, unsigned done_i)
{
	size_t file = r->plan.writes[done_i].job_index;
	for (unsigned k = done_i + 1; k < r->plan.n_writes; k++)
		if (!r->plan.writes[k].erase_only && r->plan.writes[k].job_index == file)
			return;
	job_mark_written(r->job, file);
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
		/* the suffixes (SHA-256, CRC) of the modules the planner compares (issue 11) */
		dfu_readback_want_suffix(&r->rb, 0, 0, true);
		for (size_t i = 0; i < job_image_count(r->job); i++)
			for (unsigned k = 0; k < job_image(r->job, i)->n_modules; k++)
				dfu_readback_want_suffix(
				    &r->rb, job_image(r->job, i)->modules[k].function,
				    job_image(r->job, i)->modules[k].index, false);
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
		if (r->jp->handoff || r->jp->plan.n_writes == 0) {
			/* Nothing for DFU to write: leave DFU mode, then either finish
			 * (everything is installed) or hand the job to the transport the
			 * plan writes with once the device runs its firmware again. */
			r->after_leave = r->jp->handoff;
			r->nothing_written = !r->jp->handoff;
			r->state = RUN_LEAVE;
			job_set_state(r->job, JOB_SWITCHING_MODE);
			break;
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
			report_write_step(r);
			job_set_state(r->job, JOB_WRITING);
		}
		break;
	case RUN_WRITE:
		if (o->verify) {
			r->state = RUN_VERIFY;
			job_set_state(r->job, JOB_VERIFYING);
			break;
		}
		__attribute__((fallthrough)); /* no read-back: the write is done */
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
		file_written(r, r->write_i);
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

/* ---- a write as a diff (dfu_diff.h) ------------------------------------------------- */

static void diff_phase(void *ctx, enum dfu_diff_phase phase)
{
	struct transport_run *r = ctx;
	switch (phase) {
	case DFU_DIFF_READING:
		job_set_state(r->job, JOB_PREFLIGHT); /* reading what is there, before erasing */
		break;
	case DFU_DIFF_ERASING:
		job_set_state(r->job, JOB_ERASING);
		break;
	case DFU_DIFF_WRITING:
		report_write_step(r);
		job_set_state(r->job, JOB_WRITING);
		break;
	}
}

static void diff_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct transport_run *r = ctx;
	job_progress(r->job, done, total);
}

/* The diff of writes[write_i] ended: it was erased and written, as RUN_WRITE would have. */
static void diff_done(void *ctx, int result, struct error *err)
{
	struct transport_run *r = ctx;
	const struct dfu_write *w = &r->plan.writes[r->write_i];
	if (result < 0) {
		error_prefix(err, "%s: ", w->name ? w->name : "image");
		run_fail(r, err);
		return;
	}
	char summary[256];
	dfu_diff_summary(r->diff, summary, sizeof(summary));
	job_note(r->job, "diff", "%s: %s", w->name ? w->name : "image", summary);
	r->state = RUN_WRITE;
	step(r);
}

static int start_diff(struct transport_run *r, const struct dfu_write *w, struct error *err)
{
	static const struct dfu_diff_cb cb = {diff_phase, diff_progress, diff_done};
	r->diff = dfu_diff_new(r->dfuse, r->facts.platform, w, &cb, r, err);
	if (!r->diff)
		return -1;
	return dfu_diff_start(r->diff, err);
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
	if (r->diff && r->state == RUN_ERASE)
		dfu_diff_on_progress(r->diff, done, total);
	else if (r->state == RUN_WRITE || r->state == RUN_ERASE || r->state == RUN_VERIFY)
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
	struct usb_loop *loop = usb_loop_daemon();
	if (!loop) {
		error_set(&err, ERR_INTERNAL,
			  "the DFU transport has no libusb context (libusb could not start when "
			  "flashd started)");
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
	if (!r->dfuse) {
		error_set(&err, ERR_OUT_OF_MEMORY, NULL);
		run_fail(r, &err);
		return;
	}
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
	case RUN_PROBE_SKIPPED:
		job_note(r->job, "no-console",
			 "the device has no listening-mode console (Device OS 6.x) and flashd does "
			 "not switch a device to DFU mode for a probe; put it in DFU mode to read "
			 "its modules");
		run_done(r, "probed");
		break;
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
		if (r->nothing_written) {
			run_done(r, "already-installed");
			break;
		}
		if (r->after_leave) {
			error_set(
			    &err, ERR_TIMED_OUT,
			    "the device did not come back with a serial port after leaving DFU "
			    "mode, so the %s part of the plan could not start",
			    r->after_leave);
			error_detail_str(&err, "phase", "switching-mode");
			error_detail_int(&err, "timeout_ms", timeout_ms("dfu_reenumerate_ms"));
			run_fail(r, &err);
			break;
		}
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
 * 28800 removed in 6.0.0;
 * capability.c's table); an unknown version is tried (silence then means
 * written-not-verified). */
static bool serial_verifiable(struct transport_run *r)
{
	return capability_has(CAPABILITY_LISTENING_CONSOLE, r->facts.platform,
			      system_version_after(r), true);
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
	struct error e;
	error_init(&e);
	/* verified means the whole device: every module it reports valid (issue 11) */
	if (job_verdict(r->job, &now, safe, &e) == 0) {
		run_done(r, "verified");
		return;
	}
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	cdc_query_free(r->query);
	r->query = NULL;
	job_finish(r->job, JOB_RESULT_FAILED, "booted-invalid", &e);
}

/* The plan's verify step goes over another transport (module info by control
 * request on Device OS 6.x, plan.c's verifier()): its name, else NULL. */
static const char *verify_elsewhere(struct transport_run *r)
{
	if (!r->jp)
		return NULL;
	for (size_t i = 0; i < r->jp->plan.n_steps; i++) {
		const struct plan_step *s = &r->jp->plan.steps[i];
		if (s->kind == PLAN_STEP_VERIFY && s->transport != PLAN_TRANSPORT_DFU &&
		    s->transport != PLAN_TRANSPORT_SERIAL)
			return plan_transport_name(s->transport);
	}
	return NULL;
}

/* Written and back: the job is handed to the plan's verifier, which finds every file
 * written or installed (job_mark_written()) and gives the verdict. */
static void hand_over_verify(struct transport_run *r)
{
	const char *to = verify_elsewhere(r);
	/* written now, or installed already (the plan skipped it) */
	for (size_t i = 0; i < job_image_count(r->job); i++)
		job_mark_written(r->job, i);
	job_plan_step_kind(r->job, r->jp, PLAN_STEP_VERIFY, 0); /* the step it runs */
	evtimer_del(r->timer);
	r->state = RUN_FINISHED;
	usb_dfu_close(r->usb);
	r->usb = NULL;
	job_handoff(r->job, to, "the plan verifies by reading module info after the reboot");
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
	if (r->jp)
		job_plan_step_kind(r->job, r->jp, PLAN_STEP_VERIFY, 0);
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

static void dfu_free(struct transport_run *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_run *, dfu_free)

static struct transport_run *dfu_start(struct job *job, struct error *err)
{
	_cleanup_(dfu_freep) struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	r->job = job;
	r->dev = *job_device(job);
	r->timer = evtimer_new(job_event_base(job), on_timer, r);
	if (!r->timer) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	if (job_image_count(job) == 0 && job_options(job)->dry_run &&
	    r->dev.mode != DEVICE_MODE_DFU) {
		/* A probe never switches a running device into DFU (transport.h); the
		 * run ends from the loop, not from start(). */
		r->state = RUN_PROBE_SKIPPED;
		arm(r, 0);
		return TAKE_PTR(r);
	}
	if (r->dev.present && r->dev.mode != DEVICE_MODE_DFU && r->dev.tty[0]) {
		job_set_state(job, JOB_SWITCHING_MODE);
		if (mode_switch_dfu(r->dev.tty, getenv("FLASHD_LOCK_DIR"), err) < 0)
			return NULL;
		job_note(job, "switching-to-dfu", "set %s to 14400 baud", r->dev.tty);
		r->state = RUN_SWITCHING;
		arm(r, timeout_ms("dfu_reenumerate_ms"));
		return TAKE_PTR(r);
	}
	if (!r->dev.present) {
		/* Handed over while re-enumerating: wait for it. */
		r->state = RUN_SWITCHING;
		arm(r, timeout_ms("dfu_reenumerate_ms"));
		return TAKE_PTR(r);
	}
	r->state = RUN_OPENING;
	arm(r, 0);
	return TAKE_PTR(r);
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
		if (!r->after_leave && !r->nothing_written && r->jp && r->jp->then &&
		    dev->mode != DEVICE_MODE_DFU) {
			/* written: the plan goes on over another transport, which plans
			 * again without these files */
			for (size_t i = 0; i < r->jp->pre.n_steps; i++)
				job_mark_written(r->job, r->jp->pre.steps[i].job_index);
			r->after_leave = r->jp->then;
		}
		if ((r->after_leave || r->nothing_written) && dev->mode != DEVICE_MODE_DFU) {
			if (!dev->present || (r->after_leave && !dev->tty[0]))
				break; /* the tty node follows the usb_device */
			evtimer_del(r->timer);
			job_set_device_mode(r->job, dev->mode);
			if (r->nothing_written) {
				run_done(r, "already-installed");
				break;
			}
			r->state = RUN_FINISHED;
			usb_dfu_close(r->usb);
			r->usb = NULL;
			char why[160];
			if (r->jp->handoff)
				plan_step_describe(&r->jp->plan.steps[0], why, sizeof(why));
			else
				snprintf(why, sizeof(why), "the plan goes on over %s",
					 r->after_leave);
			job_handoff(r->job, r->after_leave, why);
			break;
		}
		if (dev->mode == DEVICE_MODE_NORMAL || dev->mode == DEVICE_MODE_LISTENING ||
		    dev->mode == DEVICE_MODE_UNKNOWN) {
			job_set_device_mode(r->job, dev->mode);
			if (verify_elsewhere(r))
				hand_over_verify(r);
			else if (!serial_verifiable(r))
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
	dfu_diff_free(r->diff);
	free(r->verify_buf);
	free(r->jp);
	free(r);
}

/* The daemon's libusb context lives from init() to exit() (transport.h). */
static struct usb_loop *dfu_loop;

static int dfu_init(struct event_base *base, struct error *err)
{
	if (dfu_loop)
		return 0;
	dfu_loop = usb_loop_new(base, err);
	if (!dfu_loop)
		return -1;
	usb_loop_set_daemon(dfu_loop);
	return 0;
}

static void dfu_exit(void)
{
	usb_loop_set_daemon(NULL);
	usb_loop_free(dfu_loop);
	dfu_loop = NULL;
}

const struct transport_ops dfu_transport = {
    .name = "dfu",
    .init = dfu_init,
    .exit = dfu_exit,
    .can_serve = dfu_can_serve,
    .start = dfu_start,
    .cancel = dfu_cancel,
    .device_event = dfu_device_event,
    .free = dfu_free,
    .timeouts = dfu_timeouts,
};
