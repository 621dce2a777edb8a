/*
 * The DFU transport (issue 7): a step executor (transport.h) for a device in
 * DFU mode.  Every run opens the device and reads what is in flash (UPLOAD of
 * the module prefixes), then, by its step:
 *  - READ: reports those facts (a probe as much as a flash job), the device
 *    stays in DFU mode;
 *  - WRITE: runs the DFU checks on the step's images (memory map, slots,
 *    protection), erases exactly, writes, optionally reads back, and leaves DFU
 *    mode when the step says so (the plan's reboot, which the core waits for).
 * Switching a device into DFU mode, waiting for it to come back and verifying
 * it after the leave are the core's (job_steps.h).
 *
 * One explicit state per phase; the events are dfuse completions, the run's
 * timer and device events from the registry.
 */
#include "dfu_diff.h"
#include "dfu_preflight.h"
#include "dfuse.h"
#include "usb.h"

#include "platform.h"

#include "preflight.h"
#include "transport.h"

#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define DFU_OPEN_RETRY_MS 100
#define DFU_OPEN_RETRIES  50   /* udev can announce the node before libusb lists it */
#define DFU_GONE_GRACE_MS 1000 /* after udev says the device is gone, before failing the run */

static const struct timeout_def dfu_timeouts[] = {
    {"dfu_reenumerate_ms", 15000, "wait for a device to re-enumerate after a mode switch or leave"},
    {NULL, 0, NULL},
};

enum run_state {
	RUN_OPENING,  /* waiting for libusb to list the device */
	RUN_DFU_OPEN, /* dfuse_open */
	RUN_READBACK, /* UPLOAD of one module prefix */
	RUN_READ_END, /* dfuse_idle: the last read left open is closed */
	RUN_ERASE,    /* dfuse_erase of writes[i] */
	RUN_WRITE,    /* dfuse_download of writes[i] */
	RUN_VERIFY,   /* dfuse_upload of writes[i] */
	RUN_LEAVE,    /* dfuse_leave */
	RUN_FINISHED,
};

struct transport_run {
	struct job *job;
	enum run_state state;
	struct event *timer;
	struct job_step step; /* the step this run executes */
	struct usb_dfu_dev *usb;
	struct dfuse *dfuse;
	struct dfu_readback rb;
	unsigned probe_i;
	bool layout_known;
	bool reused; /* the facts are the READ's (step.have_read), not read again */
	struct device_facts facts;
	struct dfu_plan plan;
	unsigned write_i;
	struct dfu_diff *diff; /* writes[write_i] read back first, only what differs written */
	uint8_t *verify_buf;
	bool verified;
	bool cancel_requested;
	bool gone; /* udev reported the device gone during a USB operation */
	unsigned open_retries;
	struct device_snapshot dev;
	struct transport_keep *kept; /* the READ's open device (step.kept), until adopted */
};

/*
 * What a READ keeps open for the WRITE or CHECK that starts from it (transport.h
 * job_step_result.keep): the device opened with its DFU interface claimed, and the
 * dfuse that read it, in dfuIDLE with the memory map, the strings and the state it
 * learnt.  The WRITE goes on from there instead of opening the device again and
 * sending the open's string descriptors, SET_INTERFACE and GETSTATUS once more:
 * nothing can have reached the device in between, as the interface stayed claimed.
 */
struct transport_keep {
	struct usb_dfu_dev *usb;
	struct dfuse *dfuse;
	unsigned busnum, devnum;
};

static void dfu_keep_free(struct transport_keep *k)
{
	if (!k)
		return;
	usb_dfu_close(k->usb); /* detaches the dfuse first */
	dfuse_free(k->dfuse);
	free(k);
}

static void step(struct transport_run *r);

/* The module a write of the plan puts down, for job_set_partial() (no position yet). */
static struct job_partial partial_of(const struct dfu_write *w)
{
	return (struct job_partial){
	    .image = w->job_index,
	    .function = w->function,
	    .index = w->index,
	    .start = w->address,
	    .end = (uint32_t)(w->address + w->len),
	    .size = w->len,
	    .chunk = -1,
	};
}

/* The same for a write that runs as a diff: only its differing units were touched. */
static void report_diff_partial(struct transport_run *r, const struct dfu_write *w)
{
	struct dfu_diff_position pos;
	dfu_diff_position(r->diff, &pos);
	if (!pos.touched)
		return; /* still reading: the module is as it was */
	struct job_partial p = partial_of(w);
	p.erasing = pos.phase == DFU_DIFF_ERASING;
	p.address = pos.address;
	p.bytes_written = pos.bytes_written;
	p.chunk = pos.chunk;
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
	struct job_partial p = partial_of(w);
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
	usb_dfu_close(r->usb);
	r->usb = NULL;
	job_step_done(r->job, NULL, err);
}

/* The step is done: release the device (the core may leave DFU mode or wait for
 * the device next) and report. */
static void run_done(struct transport_run *r)
{
	r->state = RUN_FINISHED;
	evtimer_del(r->timer);
	struct transport_keep *keep = NULL;
	if (r->step.kind == JOB_STEP_READ && !r->step.probe && r->usb && r->dfuse && !r->gone &&
	    !dfuse_upload_open(r->dfuse))
		keep = malloc(sizeof(*keep));
	if (keep) {
		/* a plan follows: the WRITE (or CHECK) may go on from here */
		dfuse_set_progress(r->dfuse, NULL, NULL);
		dfuse_set_notice(r->dfuse, NULL, NULL);
		*keep = (struct transport_keep){r->usb, r->dfuse, r->dev.busnum, r->dev.devnum};
	} else {
		usb_dfu_close(r->usb); /* detaches the dfuse first */
		dfuse_free(r->dfuse);
	}
	r->usb = NULL;
	r->dfuse = NULL;
	struct job_step_result res = {.facts = r->facts, .mode = DEVICE_MODE_DFU, .keep = keep};
	if (r->step.kind == JOB_STEP_WRITE) {
		res.mode = r->step.leave ? DEVICE_MODE_UNKNOWN : DEVICE_MODE_DFU;
		res.read_back = r->verified;
	}
	job_step_done(r->job, &res, NULL);
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
	case RUN_READ_END:
		return dfuse_idle(r->dfuse, on_dfuse_done, r, err);
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

/* The DFU checks over the step's images, in the step's order (the core planned
 * them and checked them against this transport's rules already). */
static int preflight(struct transport_run *r, struct error *err)
{
	struct preflight_plan *pp = calloc(1, sizeof(*pp));
	if (!pp)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	for (size_t i = 0; i < r->step.n_images && i < PREFLIGHT_MAX_IMAGES; i++) {
		const struct image *img = job_image(r->job, r->step.images[i]);
		if (!img || img->n_modules == 0) {
			free(pp);
			return error_set(err, ERR_INTERNAL, "the step names no image");
		}
		pp->steps[pp->n_steps++] = (struct preflight_step){
		    .img = img,
		    .job_index = r->step.images[i],
		    .name = job_image_name(r->job, r->step.images[i]),
		    .module = &img->modules[0],
		};
	}
	int rc = dfu_preflight_plan(&r->facts, r->layout_known, dfuse_get_info(r->dfuse), pp,
				    job_options(r->job)->force, &r->plan, err);
	free(pp);
	return rc;
}

/* The step's file of the write in progress: files count, not DFU writes (a file may
 * need two, and the 0xD4000 invalidation page is an erase of its own). */
static void report_write_step(struct transport_run *r)
{
	if (r->write_i >= r->plan.n_writes)
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
	job_step_image(r->job, n ? n - 1 : 0);
}

/* Write done_i is complete (and read back with --verify): when it was its file's
 * last, the file is whole on the device (job_step_image_written()), so that a job
 * resumed after the device left plans without it. */
static void file_written(struct transport_run *r, unsigned done_i)
{
	size_t file = r->plan.writes[done_i].job_index;
	for (unsigned k = done_i + 1; k < r->plan.n_writes; k++)
		if (!r->plan.writes[k].erase_only && r->plan.writes[k].job_index == file)
			return;
	for (size_t k = 0; k < r->step.n_images; k++)
		if (r->step.images[k] == file)
			job_step_image_written(r->job, k);
}

/* The leave request is done, or the device reset before its GETSTATUS came back (a
 * vanished device means success, docs/device/dfuse.md#requests-and-states): release it and wait for
 * it to come back. */
static void left_dfu(struct transport_run *r)
{
	/* Released right away; nothing more is sent (docs/device/dfuse.md#requests-and-states). */
	run_done(r);
}

/* Decides and starts what comes after the phase that just ended. */
static void step(struct transport_run *r)
{
	struct error err;
	error_init(&err);
	const struct job_options *o = job_options(r->job);
	if (r->cancel_requested && r->state != RUN_LEAVE) {
		error_set(&err, ERR_CANCELLED, "the job was cancelled");
		error_detail_str(&err, "phase", "dfu");
		run_fail(r, &err);
		return;
	}
	switch (r->state) {
	case RUN_DFU_OPEN:
		job_set_state(r->job, JOB_PREFLIGHT);
		if (r->step.kind != JOB_STEP_READ && r->step.have_read) {
			/* this transport's READ read it just before: start from that (the
			 * layout is known when a Gen 3 system part was found, as
			 * dfu_readback_facts() says) */
			r->facts = r->step.read;
			r->layout_known =
			    r->facts.platform &&
			    (r->facts.platform->mcu != MCU_NRF52840 ||
			     preflight_installed(&r->facts, MODULE_FUNCTION_SYSTEM, 1));
			r->probe_i = r->rb.n_probes = 0;
			r->state = RUN_READBACK;
			r->reused = true;
			step(r);
			return;
		}
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
		/* the reads follow one another: one SET_ADDRESS for those whole blocks apart */
		dfuse_set_keep_upload(r->dfuse, true);
		break;
	case RUN_READBACK:
		if (r->probe_i < r->rb.n_probes)
			break;
		/* What the reads found may call for more (the P2 user part's prefix). */
		if (dfu_readback_follow(&r->rb))
			break;
		dfuse_set_keep_upload(r->dfuse, false);
		if (dfuse_upload_open(r->dfuse)) {
			r->state = RUN_READ_END;
			break;
		}
		__attribute__((fallthrough)); /* no read left open: the read-back is done */
	case RUN_READ_END:
		if (!r->reused) {
			struct device_facts f;
			r->layout_known = dfu_readback_facts(&r->rb, dfuse_get_info(r->dfuse), &f);
			if (!f.platform)
				f.platform = r->facts.platform;
			r->facts = f;
		}
		if (r->step.kind == JOB_STEP_READ) {
			/* READ: what is in flash is known now; the device stays in DFU. */
			run_done(r);
			return;
		}
		if (preflight(r, &err) < 0) {
			/* Refused before the first erase: leave the device as it is, in DFU. */
			run_fail(r, &err);
			return;
		}
		if (r->plan.n_writes == 0 || r->step.kind == JOB_STEP_CHECK) {
			run_done(r);
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
				if (!r->step.leave) {
					run_done(r);
					return;
				}
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
		if (!r->plan.writes[r->write_i].erase_only)
			file_written(r, r->write_i);
		r->write_i++;
		if (r->write_i < r->plan.n_writes) {
			r->state = RUN_ERASE;
			job_set_state(r->job, JOB_ERASING);
		} else if (!r->step.leave) {
			run_done(r);
			return;
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

/* Goes on with the device the READ kept open (step.kept) when it is this device still;
 * false (and the keep released) when it is not. */
static bool adopt_kept(struct transport_run *r)
{
	struct transport_keep *k = r->kept;
	r->kept = NULL;
	if (!k || !r->dev.present || k->busnum != r->dev.busnum || k->devnum != r->dev.devnum) {
		dfu_keep_free(k);
		return false;
	}
	r->usb = k->usb;
	r->dfuse = k->dfuse;
	free(k);
	dfuse_set_progress(r->dfuse, on_progress, r);
	dfuse_set_notice(r->dfuse, on_notice, r);
	r->facts = r->dev.facts;
	r->state = RUN_DFU_OPEN;
	step(r); /* from the loop (the run's timer), as a dfuse_open() completion would */
	return true;
}

static void open_device(struct transport_run *r)
{
	struct error err;
	error_init(&err);
	struct dfu_descriptors desc;
	if (r->kept && adopt_kept(r))
		return;
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
	/* udev's copy of the serial string the kernel read at enumeration: no request */
	dfuse_set_serial(r->dfuse, r->dev.usb_serial);
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
	if (r->state == RUN_OPENING)
		open_device(r);
}

static bool dfu_can_serve(const struct device_snapshot *dev)
{
	/* Devices in DFU mode only: switching a device into DFU mode is the core's. */
	return dev->mode == DEVICE_MODE_DFU;
}

static void dfu_free(struct transport_run *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct transport_run *, dfu_free)

static struct transport_run *dfu_start(struct job *job, const struct job_step *step,
				       struct error *err)
{
	struct transport_keep *kept = step->kept; /* ours from here on (transport.h) */
	if (!step->have_read || step->kind == JOB_STEP_READ) {
		dfu_keep_free(kept);
		kept = NULL;
	}
	if (step->kind != JOB_STEP_READ && step->kind != JOB_STEP_WRITE &&
	    step->kind != JOB_STEP_CHECK) {
		error_set(err, ERR_INTERNAL, "the DFU transport has no %s step",
			  job_step_kind_name(step->kind));
		dfu_keep_free(kept);
		return NULL;
	}
	if (job_device(job)->mode != DEVICE_MODE_DFU) {
		error_set(err, ERR_NOT_FLASHABLE_HERE, "the device is not in DFU mode");
		error_detail_str(err, "transport", "dfu");
		dfu_keep_free(kept);
		return NULL;
	}
	_cleanup_(dfu_freep) struct transport_run *r = calloc(1, sizeof(*r));
	if (!r) {
		dfu_keep_free(kept);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	r->job = job;
	r->step = *step;
	r->step.kept = NULL;
	r->kept = kept;
	r->dev = *job_device(job);
	r->timer = evtimer_new(job_event_base(job), on_timer, r);
	if (!r->timer) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	job_set_state(job, JOB_PREFLIGHT);
	r->state = RUN_OPENING;
	arm(r, 0);
	return TAKE_PTR(r);
}

static void dfu_cancel(struct transport_run *r)
{
	r->cancel_requested = true;
	if (r->state == RUN_OPENING) {
		struct error err;
		error_init(&err);
		error_set(&err, ERR_CANCELLED, "the job was cancelled");
		error_detail_str(&err, "phase", "open");
		run_fail(r, &err);
		return;
	}
	/* Erase, write and read-back stop at the next chunk or erase-unit boundary; the leave
	 * is past the point of no return. */
	if (r->dfuse && r->state != RUN_LEAVE)
		dfuse_cancel(r->dfuse);
}

static void dfu_device_event(struct transport_run *r, enum device_event ev,
			     const struct device_snapshot *dev)
{
	struct error err;
	error_init(&err);
	r->dev = *dev;
	if (r->state == RUN_LEAVE && (ev == DEVICE_EVENT_GONE || ev == DEVICE_EVENT_BACK)) {
		left_dfu(r); /* the reset overtook the leave's GETSTATUS */
	} else if (ev == DEVICE_EVENT_GONE && r->state >= RUN_DFU_OPEN && r->state <= RUN_VERIFY) {
		/* Under some backends a transfer in flight never completes once the device is
		 * gone (no POLLERR): give libusb a moment to report it, then report it here. */
		r->gone = true;
		arm(r, DFU_GONE_GRACE_MS);
	} else if (ev == DEVICE_EVENT_GONE && r->state == RUN_OPENING) {
		error_set(&err, ERR_DEVICE_GONE, "the device disappeared");
		error_detail_str(&err, "phase", "open");
		run_fail(r, &err);
	}
	error_clear(&err);
}

static void dfu_free(struct transport_run *r)
{
	if (!r)
		return;
	if (r->timer)
		event_free(r->timer);
	usb_dfu_close(r->usb); /* detaches the dfuse first: no completion reaches it */
	dfuse_free(r->dfuse);
	dfu_readback_clear(&r->rb);
	dfu_diff_free(r->diff);
	free(r->verify_buf);
	dfu_keep_free(r->kept);
	free(r);
}

/* A dry run on a device not in DFU mode: the step's write ranges against the memory map
 * the platform's bootloader describes (transport.h check_static). */
static int dfu_check_static(struct job *job, const struct job_step *step,
			    const struct device_facts *facts, struct transport_static_check *out,
			    struct error *err)
{
	const struct platform *p = facts->platform;
	struct preflight_plan *pp = calloc(1, sizeof(*pp));
	if (!pp)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	for (size_t i = 0; i < step->n_images && i < PREFLIGHT_MAX_IMAGES; i++) {
		const struct image *img = job_image(job, step->images[i]);
		if (!img || img->n_modules == 0)
			continue;
		pp->steps[pp->n_steps++] = (struct preflight_step){
		    .img = img,
		    .job_index = step->images[i],
		    .name = job_image_name(job, step->images[i]),
		    .module = &img->modules[0],
		};
	}
	int rc = dfu_preflight_static_map(p, pp, err);
	free(pp);
	if (rc != 1) {
		snprintf(out->checked, sizeof(out->checked),
			 "the DFU memory map, against the map a%s %s's bootloader describes "
			 "(the platform's, not read from the device)",
			 strchr("AEIOU", p->display[0]) ? "n" : "", p->display);
		snprintf(out->unchecked, sizeof(out->unchecked),
			 "Device Protection%s and the overlap with installed modules as DFU "
			 "reads them: only the device in DFU mode tells",
			 p->mcu == MCU_NRF52840 ? ", the flash layout" : "");
	}
	return rc;
}

/* The transport holds the daemon's libusb context from init() to exit() (transport.h). */
static int dfu_init(struct event_base *base, struct error *err)
{
	return usb_loop_acquire(base, err) ? 0 : -1;
}

static void dfu_exit(void)
{
	usb_loop_release();
}

const struct transport_ops dfu_transport = {
    .name = "dfu",
    .init = dfu_init,
    .exit = dfu_exit,
    .can_serve = dfu_can_serve,
    .rules = dfu_preflight_rules,
    .checks_on_device = true,
    .check_static = dfu_check_static,
    .start = dfu_start,
    .cancel = dfu_cancel,
    .device_event = dfu_device_event,
    .free = dfu_free,
    .keep_free = dfu_keep_free,
    .timeouts = dfu_timeouts,
};
