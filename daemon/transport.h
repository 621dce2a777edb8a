/*
 * The contract between the core (daemon/jobs.c, daemon/job_steps.c) and the
 * transports (daemon/serial/, daemon/dfu/, daemon/ctrl/).  The core owns jobs,
 * devices, the event loop and the order of every job: before the first byte it
 * reads the device, turns (files, device, installed modules) into the plan
 * (plan.h, job_plan.h), refuses there if it must, and then runs the plan step
 * by step (job_steps.h): mode switches (mode_switch.h), writes, the waits for
 * the device to come back, the verify and the verdict.  A transport is a step
 * executor: a vtable whose run executes one step of one job on one device and
 * knows nothing of the plan, of the other steps or of the other transports.
 *
 * The steps a transport is given (struct job_step):
 *   READ       read the device in the mode it is in now (the listening-mode
 *              console, control requests, DFU read-back) and report the facts and
 *              the mode; a run that finds the device does not speak its protocol
 *              now (no console, no control requests) says so (no_answer) and the
 *              core asks another.  A READ never switches the device's mode for
 *              good: it gives the device back as it found it, except DFU mode,
 *              which it never leaves, and a READ with step->keep_listening: a
 *              device it put in listening mode to read it stays there (result
 *              kept_listening) and the core gives it back (cdc_query.h
 *              cdc_query_give_back()) unless a serial step follows.
 *   WRITE      write exactly the step's images, in the step's order, with the
 *              transport's own checks first (e.g. the DFU memory map); report
 *              progress, notes and where a write stopped (job_set_partial()).  The
 *              write ends when the device has all the bytes: the reset that applies
 *              them (YMODEM, the firmware-update request, DFU leave when
 *              step->leave) is the device's, the wait for it the core's.
 *   VERIFY     read the device's verdicts after the last reboot (module info and
 *              validity, the mode it runs in) and report them as facts; the core
 *              gives the verdict (job_verdict()).
 *   ENTER_DFU  ask a running device to enter DFU mode over the transport's
 *              protocol (the control request); the core waits for it.
 *   ENTER_LISTENING  ask a running device to enter listening mode (the
 *              start-listening control request); the serial write that follows
 *              finds the console there.
 *   CHECK      a dry run: what a WRITE of the step's images checks on the device
 *              before its first byte (the DFU memory map, slots, protection),
 *              and nothing else; only for a transport with checks_on_device, and
 *              only when the device is in its mode already (a dry run switches
 *              no mode; on a device in another mode the core calls the
 *              transport's check_static() instead, see below).
 *
 * Lifecycle of a run
 *   1. The core calls start(job, step).  start() returns a run, or NULL with
 *      *err filled: the step then failed with that error.
 *   2. The run sets the job's states (job_set_state()), progress
 *      (job_progress()), notes (job_note()), the plan file it is writing
 *      (job_step_image()), where a write stopped (job_set_partial()); it reads
 *      job_device(), job_image(), job_options().
 *   3. It ends with exactly one job_step_done(job, result, err): err NULL (or
 *      not set) = the step is done, result carrying what it read; err set = the
 *      step failed (device-gone starts the replug rule, cancelled ends the job
 *      cancelled).  After that call the run must not touch the job again and
 *      should return to the loop promptly; the core continues from the loop and
 *      calls ops->free(run) later from a deferred callback, so the transport's own
 *      stack can unwind first.  free() must release every fd, timer and libusb
 *      resource of the run.
 *   4. cancel() asks the run to stop at the next safe point (YMODEM block
 *      boundary, DFU chunk boundary); the run then ends its step with
 *      job_step_done() and a cancelled error (or done, if it was past the point of
 *      no return).  The core arms a backstop timer (timeout key
 *      "job_cancel_grace_ms"); if the run has not ended by then the core ends
 *      the job itself as cancelled and frees the run.  Between runs (a mode
 *      switch, the wait for a reboot) cancel is the core's.
 *   5. If the daemon stops, the core calls free() on every live run and ends
 *      the jobs as interrupted; the transport leaves the device as it is.
 *
 * What a run may not do: block; call job_finish() (jobs.h: the core's alone) or
 * end the step from inside start() (the run does not exist for the core yet);
 * switch the device into another transport's mode (the core's mode switches do);
 * include another transport's headers (a test greps the includes of
 * daemon/serial/, daemon/dfu/ and daemon/ctrl/); touch another job's device.
 * What it may use of the core: mode_switch.h for the switch into its own
 * protocol's mode only (28800 baud before YMODEM; a test greps that no transport
 * calls the DFU switches), cdc_query.h, preflight.h.  A write that fails and
 * leaves the device needing a reset says so in its result (resets,
 * needs_reset): the core resets it.
 *
 * Devices follow identity, not USB addresses: the registry maps a device that
 * re-enumerates (mode switch, DFU leave, replug into another port) to the same
 * struct device, and the core forwards DEVICE_EVENT_GONE / DEVICE_EVENT_BACK to
 * the run of the job holding that device (the core waits for reboots itself,
 * under the "*_reenumerate_ms" timeout of the transport that wrote).
 *
 * A job with no images and options.dry_run set is a probe (device-info with
 * "probe": true): a READ step only (`s`, `v`, `i` on the console; module info
 * by control request; DFU descriptors and module prefixes), and the core ends
 * it DONE with result word "probed".  A dry run with images is READ + plan.
 */
#pragma once

#include "device_facts.h"
#include "errors.h"
#include "image.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct job;
struct transport_run;  /* defined by each transport */
struct transport_keep; /* defined by each transport: what a READ keeps open for the next step */
struct preflight_rules;

/* ---- devices as transports see them ------------------------------------ */

/* What the device is doing (issue 5).  A CDC port stays UNKNOWN until a job
 * or an explicit probe needs it: the daemon never writes to a port of a
 * running application on its own. */
enum device_mode {
	DEVICE_MODE_UNKNOWN = 0, /* CDC port, not probed */
	DEVICE_MODE_NORMAL,	 /* application running (CDC) */
	DEVICE_MODE_LISTENING,	 /* listening-mode console (CDC) */
	DEVICE_MODE_DFU,	 /* DFU bootloader (2b04:d0xx, 1d50:607f) */
	DEVICE_MODE_SAFE,	 /* safe mode (reported by the device) */
};
const char *device_mode_name(enum device_mode mode); /* "unknown", "listening", ... */

#define DEVICE_PATH_MAX	     256
#define DEVICE_PORT_PATH_MAX 64
#define DEVICE_KEY_MAX	     96

/* A copy of what the registry knows about a device at one moment.  Plain data:
 * transports may keep it. */
struct device_snapshot {
	char key[DEVICE_KEY_MAX]; /* registry identity, stable across re-enumeration */
	bool present;		  /* false while the device is gone */
	enum device_mode mode;
	char tty[DEVICE_PATH_MAX];	      /* "/dev/ttyACM0", "" when not a CDC device */
	char usb_devnode[DEVICE_PATH_MAX];    /* "/dev/bus/usb/001/002", "" if unknown */
	char syspath[DEVICE_PATH_MAX];	      /* sysfs path of the usb_device */
	char port_path[DEVICE_PORT_PATH_MAX]; /* USB port path "1-1.2" */
	unsigned busnum, devnum;
	uint16_t vid, pid;
	char usb_serial[DEVICE_ID_LEN + 8]; /* iSerial as udev reports it ("" if none) */
	struct device_facts facts;	    /* platform from USB ids, rest when learnt */
};

enum device_event {
	DEVICE_EVENT_GONE,    /* every node of the device was removed (unplug, reset) */
	DEVICE_EVENT_BACK,    /* it re-appeared (same identity), maybe in another mode/port */
	DEVICE_EVENT_CHANGED, /* same nodes, new facts or mode (e.g. tty added to a usb_device) */
};

/* ---- jobs as transports see them --------------------------------------- */

enum job_state {
	JOB_QUEUED,
	JOB_WAITING_FOR_DEVICE,
	JOB_SWITCHING_MODE,
	JOB_PREFLIGHT,
	JOB_ERASING,
	JOB_WRITING,
	JOB_REBOOTING,
	JOB_VERIFYING,
	JOB_DONE,
	JOB_FAILED,
	JOB_CANCELLED,
	JOB_INTERRUPTED,
};
const char *job_state_name(enum job_state s); /* "waiting-for-device", ... */

enum job_result {
	JOB_RESULT_DONE,
	JOB_RESULT_FAILED,
	JOB_RESULT_CANCELLED,
	JOB_RESULT_INTERRUPTED, /* core only */
};
const char *job_result_name(enum job_result r);

struct job_options {
	bool force;   /* skip host-side compatibility checks (never memory-map/slot overlap) */
	bool verify;  /* read back after writing where the transport can */
	bool dry_run; /* preflight only: nothing is written */
	bool detach;  /* job outlives its client (the default); false = cancel on disconnect */
	int wait_ms;  /* how long to wait for the device to appear; 0 = no wait, -1 = forever */
	bool rewrite; /* write modules installed identically again (every check still made);
			 auto-flash sets it for a rule with skip_installed = no */
};

struct event_base *job_event_base(const struct job *job);
const char *job_id(const struct job *job); /* UUID */
const struct job_options *job_options(const struct job *job);
size_t job_image_count(const struct job *job);
/* Images in submission order (a WRITE step names the ones to write, in the
 * plan's order).  Shared read-only between jobs by SHA-256: never modify. */
const struct image *job_image(const struct job *job, size_t i);
const char *job_image_name(const struct job *job, size_t i); /* client's basename, for messages */
/* The device as the registry knows it now. */
const struct device_snapshot *job_device(const struct job *job);

/* The states the transport may set: SWITCHING_MODE, PREFLIGHT, ERASING,
 * WRITING, REBOOTING, VERIFYING, in the order its work takes (the next image
 * goes back to WRITING; PREFLIGHT -> SWITCHING_MODE is allowed); others are
 * ignored with a warning.  Terminal states are the core's (jobs.h job_finish()). */
void job_set_state(struct job *job, enum job_state state);
/* Bytes done/total of the current phase; the core computes rate and ETA and
 * rate-limits the job-progress events. */
void job_progress(struct job *job, uint64_t done, uint64_t total);
/* Informational event ("retrying-set-address", "resetting-device"; the core's
 * own: "handed-to-dfu", "device-reset", "not-verified"):
 * a job-progress event carrying {"note": note, "message": message}. */
void job_note(struct job *job, const char *note, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Where a write that did not finish stopped, in terms of the job's files: what
 * the transport wrote (or erased) of one module before a cancel or a failure.
 * The core turns it into the "partial" object of the job record (job-ended,
 * flashctl jobs), with what the device does with it at its next boot, so that
 * clients need not re-read the files to say what the device holds.
 */
struct job_partial {
	size_t image;	     /* job_image() index of the file */
	uint8_t function;    /* MODULE_FUNCTION_* of the module */
	uint8_t index;	     /* its index ("system part 1") */
	bool staged;	     /* written into the OTA staging area (YMODEM), not over the module */
	bool erasing;	     /* stopped while erasing the module's range: nothing written */
	uint32_t start, end; /* the range being written or erased (end exclusive); 0, 0 if staged */
	uint32_t address;    /* the first address not written (erased); 0 if staged */
	uint64_t bytes_written; /* of size (acknowledged by the device) */
	uint64_t size;		/* bytes the transport was to write for this file */
	int chunk;		/* DFU chunk number of address, -1 if none */
};
/* Records where the write stopped; call before job_step_done().  A later call
 * replaces it. */
void job_set_partial(struct job *job, const struct job_partial *p);
/* ---- steps ------------------------------------------------------------------ */

enum job_step_kind {
	JOB_STEP_READ,		  /* read the device in its current mode (see above) */
	JOB_STEP_WRITE,		  /* write the step's images */
	JOB_STEP_VERIFY,	  /* read the device's verdicts after the last reboot */
	JOB_STEP_ENTER_DFU,	  /* ask the running device to enter DFU mode */
	JOB_STEP_ENTER_LISTENING, /* ask the running device to enter listening mode */
	JOB_STEP_CHECK, /* a dry run: a WRITE's own checks on the device, nothing written */
};
const char *job_step_kind_name(enum job_step_kind k); /* "read", "write", ... */

#define JOB_STEP_MAX_IMAGES 16

/* One step as the core gives it to a transport (plain data, the run may keep it). */
struct job_step {
	enum job_step_kind kind;
	/* WRITE: job_image() indexes, in the order to write them */
	size_t images[JOB_STEP_MAX_IMAGES];
	size_t n_images;
	bool leave; /* WRITE over DFU: leave DFU mode once written (the plan's reboot follows) */
	bool probe; /* READ: a probe job (device-info "probe"): read only, say so in notes */
	/* READ: only the mode the device is in and its Device OS (the core's peek at a
	 * device it does not know yet, before the transport that reads it) */
	bool mode_only;
	/* READ: leave a device the run put in listening mode there (a flash job: its serial
	 * write would ask for listening mode again right after the READ's hand-back, and
	 * the two race); the core gives it back when no serial step follows */
	bool keep_listening;
	/* WRITE, CHECK: what this same transport's READ reported just before, with no
	 * other step in between (have_read): the run may start from it instead of
	 * reading the device again. */
	bool have_read;
	struct device_facts read;
	/* WRITE, CHECK with have_read: what that READ kept open (job_step_result.keep),
	 * NULL if nothing.  The run owns it from start() on, also when start() fails,
	 * and releases it with its own keep_free() when it does not use it. */
	struct transport_keep *kept;
};

/* What a step read (READ, VERIFY) or what a write could tell (WRITE). */
struct job_step_result {
	struct device_facts facts; /* READ, VERIFY: the device's facts (over what was known) */
	enum device_mode mode;	   /* the mode the run leaves the device in; UNKNOWN = not known */
	/* READ: the device does not speak this transport's protocol now (a silent console,
	 * no answer to control requests): the core asks another one.  The error (if any)
	 * says why, for the notes. */
	bool no_answer;
	bool read_back; /* WRITE: every byte written was read back and compared */
	/* READ with keep_listening: the run put the device in listening mode and left it
	 * there (mode LISTENING); the core gives it back unless a serial step follows */
	bool kept_listening;
	/* A WRITE that failed, and what the device does next: it resets by itself (a
	 * module it refused: the core reports the error once it is back, so that the next
	 * job finds it ready), or it refuses another transfer until it is reset (Gen 3 /
	 * P2 on Device OS 3.0-5.x after a broken YMODEM transfer: the core resets it,
	 * 14400 baud then DFU leave, before it reports the error). */
	bool resets, needs_reset;
	/* READ, done: what the run keeps open for the step that starts from this READ
	 * (the device opened and claimed, its state known: DFU), or NULL.  The core gives
	 * it to that step (job_step.kept) or, when none follows (a plan with another
	 * step first, a refusal, the job's end), returns it to ops->keep_free(); it is
	 * never kept across a loop pass with no step running but the core's planning. */
	struct transport_keep *keep;
};

/*
 * Ends the run's step (see the lifecycle above).  res may be NULL (nothing
 * read); err NULL or not set = done, else the step failed; err is moved from.
 * The core continues from the loop, never from inside this call.
 */
void job_step_done(struct job *job, const struct job_step_result *res, struct error *err);
/* WRITE with several images: the run starts writing the k-th of them (0-based);
 * the core reports the plan step it is ("step 2 of 4: writing ..."). */
void job_step_image(struct job *job, size_t k);
/* WRITE: the k-th image of the step is whole on the device (and read back when
 * asked), before the step ends: a job resumed after its device left (the replug
 * rule) plans without it and never writes a finished file again.  The images of
 * a step that ends done are marked so by the core. */
void job_step_image_written(struct job *job, size_t k);
/* The mode the run saw the device in (the registry keeps it, so that
 * `flashctl info` need not probe again). */
void job_set_device_mode(struct job *job, enum device_mode mode);
/* Daemon log (stderr/journal), prefixed with the job id; level as in syslog. */
void job_log(const struct job *job, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- configurable timeouts --------------------------------------------- */

/*
 * Every protocol timeout is a named key in the config file's [timeouts]
 * section, e.g.
 *     [timeouts]
 *     serial_prompt_ms = 10000
 * Transports declare theirs (with defaults) in ops.timeouts; the core
 * registers them before reading the config, rejects unknown keys with a
 * warning and non-numbers with an error.  Keys: lowercase, prefixed with the
 * name of what owns them ("serial_", "dfu_", "ctrl_", "job_" for the core's),
 * ending in _ms.  Every transport that writes declares "<name>_reenumerate_ms":
 * the core waits that long for the device to come back after its writes (and
 * "dfu_reenumerate_ms" after a switch into or out of DFU mode).
 */
struct timeout_def {
	const char *key;     /* "serial_prompt_ms" */
	unsigned default_ms; /* e.g. 10000 */
	const char *what;    /* one line for the docs: "wait for the YMODEM 'C' prompt" */
};
/* The configured value of a registered key (asserts that it is registered). */
unsigned timeout_ms(const char *key);

/* ---- the vtable ------------------------------------------------------------ */

/* What a transport's check_static() checked without the device (below). */
struct transport_static_check {
	char checked[200];
	char unchecked[200];
};

struct transport_ops {
	const char *name; /* "serial", "dfu" */
	/*
	 * Optional.  Called once by the core when the daemon starts (jobs_new()),
	 * before any start(): the transport makes what it shares between runs
	 * (the DFU and control-request transports: each holds the daemon's libusb
	 * context inside the loop, usb/usb_loop.h usb_loop_acquire()).
	 * Returns 0, or -1 with err set: the daemon logs it and the transport's
	 * runs then fail with that reason.  No device I/O here.
	 */
	int (*init)(struct event_base *base, struct error *err) WARN_UNUSED_RESULT;
	/* Optional.  Called once at shutdown (jobs_free()), after every run was
	 * freed: releases what init() made. */
	void (*exit)(void);
	/* Whether this transport can READ the device as it is now (no I/O, no side
	 * effect).  The core asks in registration order. */
	bool (*can_serve)(const struct device_snapshot *dev);
	/*
	 * Optional.  This transport's rules for what it can write on a device with
	 * these facts (preflight.h): the core checks the plan's writes over this
	 * transport against them before the first byte of the job.
	 */
	void (*rules)(const struct device_facts *facts, struct preflight_rules *rules);
	/*
	 * Starts a run of one step on job_device(job).  Returns NULL and fills err
	 * on failure (the step failed).  May: arm timers, open the device, start
	 * asynchronous I/O, set the job's state and notes.  May not: block, call
	 * job_step_done() (the run ends from the loop, after start() returned: the
	 * run does not exist for the core yet), touch another transport's files or
	 * devices.
	 */
	struct transport_run *(*start)(struct job *job, const struct job_step *step,
				       struct error *err)WARN_UNUSED_RESULT;
	/* Stop at the next safe point, then job_step_done() with a cancelled error
	 * (or done when past the point of no return).  May end the step from inside
	 * this call; may not block. */
	void (*cancel)(struct transport_run *run);
	/* The job's device went away, came back, or changed.  dev is the new snapshot.
	 * May end the step; may not block. */
	void (*device_event)(struct transport_run *run, enum device_event ev,
			     const struct device_snapshot *dev);
	/* Releases everything; called by the core after job_step_done() or at
	 * shutdown.  Must accept NULL.  May not call any job_*() function. */
	void (*free)(struct transport_run *run);
	/*
	 * Optional.  The transport's own verdict on what its VERIFY step read, after
	 * the core's (job_verdict(): every module valid): e.g. the assets a job wrote
	 * are in the device's asset store.  0, or -1 with err set: the job ends
	 * failed, outcome "booted-invalid".  May add notes.
	 */
	int (*verdict)(struct job *job, const struct device_facts *now, struct error *err);
	/* Optional (required by a transport whose READ sets job_step_result.keep):
	 * releases what a READ kept open.  May not call any job_*() function. */
	void (*keep_free)(struct transport_keep *keep);
	/* WRITE makes checks only the device can answer (read from it in its mode)
	 * before its first byte: a dry run runs them as a CHECK step. */
	bool checks_on_device;
	/*
	 * Optional, with checks_on_device.  The part of those checks the transport can
	 * make from what is known of the device's platform, without the device in its
	 * mode (the DFU transport: the write ranges against the DfuSe memory map the
	 * platform's bootloader describes).  A dry run on a device in another mode
	 * runs this instead of a CHECK step (a dry run switches no mode).  No I/O.
	 * step: the WRITE's images; facts: what the READ found.  Fills checked and
	 * unchecked with what it checked and what only the device in its mode can
	 * tell (sentences without a final stop).  Returns 0, 1 when it knows nothing
	 * for this device (nothing checked), or -1 with err set: the job is refused.
	 */
	int (*check_static)(struct job *job, const struct job_step *step,
			    const struct device_facts *facts, struct transport_static_check *out,
			    struct error *err);
	/* Timeout keys with defaults; NULL-terminated (key == NULL) or NULL. */
	const struct timeout_def *timeouts;
};

/*
 * Built-in transports, always linked into flashd and listed in one table
 * (daemon/transports.c, transports_builtin()):
 *     const struct transport_ops serial_transport;   (daemon/serial/)
 *     const struct transport_ops ctrl_transport;     (daemon/ctrl/: USB control
 *                                                     requests to a running device)
 *     const struct transport_ops dfu_transport;      (daemon/dfu/)
 */
extern const struct transport_ops serial_transport;
extern const struct transport_ops ctrl_transport;
extern const struct transport_ops dfu_transport;

/* The registered transport of that name, or NULL. */
const struct transport_ops *transport_find(const char *name);
