/*
 * The contract between jobs (daemon/jobs.c) and transports (daemon/serial/,
 * daemon/dfu/, daemon/ctrl/).  A transport is a vtable; a run is one transport working on
 * one job for one device.  The core owns jobs, devices and the event loop;
 * the transport owns its run (fds, libusb handles, timers) and reports back
 * only through the job_*() calls below.  Everything is asynchronous: no call
 * here may block.
 *
 * Lifecycle of a run
 *   1. The core picks the first registered transport whose can_serve()
 *      accepts the device (registration order: serial, ctrl, dfu) and calls
 *      start().  start() returns a run, or NULL with *err filled: the job
 *      then fails with that error.
 *   2. The run moves the job through its states (job_set_state()), reports
 *      progress (job_progress()), notes (job_note()) and device facts
 *      (job_update_facts(), job_set_device_mode()).
 *      Before it ends, it reports the mode it leaves the device in whenever
 *      it knows it (e.g. `x` after a serial verify: normal, or safe if the
 *      `s` it read marks a module invalid), so that `flashctl info` need not
 *      probe again; a mode it cannot know stays as the registry has it.
 *   3. It ends with exactly one of job_finish() or job_handoff().  After that
 *      call the transport must not touch the job again and should return to
 *      the loop promptly; the core calls ops->free(run) later from a deferred
 *      callback (never from inside job_finish()), so the transport's own
 *      stack can unwind first.  free() must release every fd, timer and
 *      libusb resource of the run.
 *   4. cancel() asks the run to stop at the next safe point (YMODEM block
 *      boundary, DFU chunk boundary).  The run then calls job_finish() with
 *      JOB_RESULT_CANCELLED (or DONE/FAILED if it was already past the point
 *      of no return).  The core arms a backstop timer (timeout key
 *      "job_cancel_grace_ms"); if the run has not finished by then the core
 *      finishes the job itself as cancelled and frees the run.
 *   5. If the daemon stops, the core calls free() on every live run and ends
 *      the jobs as interrupted; the transport leaves the device as it is.
 *
 * Devices follow identity, not USB addresses: the registry maps a device that
 * re-enumerates (mode switch, DFU leave, replug into another port) to the same
 * struct device, and the core forwards DEVICE_EVENT_GONE / DEVICE_EVENT_BACK to
 * the run of the job holding that device.  A transport that resets the device
 * arms its own timer ("serial_reenumerate_ms", "dfu_reenumerate_ms") and waits
 * for DEVICE_EVENT_BACK with the new snapshot.
 *
 * Transports are step executors and know nothing of each other: no file under
 * daemon/serial/ includes a daemon/dfu/ header or the reverse (a test greps the
 * includes).  What they share is the core's: the plan (plan.h, job_plan.h:
 * which transport writes which module, in which order, checked against the
 * device's dependency rules before the first byte), the mode switches
 * (mode_switch.h: 28800/14400 baud with the port lock, DFU leave) and the
 * listening-mode query that reads the device's verdicts (cdc_query.h).
 *
 * Handing a job to another transport (the plan's first write goes over it;
 * serial on Device OS 6.x -> DFU; a plan that continues over another transport
 * after this one's writes): call job_handoff(job, name, reason).  The core frees the current run
 * (deferred), emits a job-progress event with note "handed-to-<name>" ("handed-to-dfu") and
 * the reason as its message, and starts the named transport
 * on the same job with the current device snapshot, also when the device is absent at that moment
 * (DFU then waits for it to come back).  If no transport of that name is built in, the job fails
 * with not-flashable-here naming the reason; so does a job handed over more than
 * four times (JOBS_MAX_HANDOFFS in jobs.c: a plan that sends it back and forth).
 *
 * A job with no images and options.dry_run set is a probe (device-info with
 * "probe": true): the transport reads what it can (`s`, `v`, `i`; DFU
 * descriptors and module prefixes), reports it with job_update_facts() and
 * finishes DONE with result word "probed".
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
struct transport_run; /* defined by each transport */

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
/* Images in submission order (the transport orders them by their prefixes).
 * Shared read-only between jobs by SHA-256: never modify. */
const struct image *job_image(const struct job *job, size_t i);
const char *job_image_name(const struct job *job, size_t i); /* client's basename, for messages */
/* The device as the registry knows it now. */
const struct device_snapshot *job_device(const struct job *job);

/* The states the transport may set: SWITCHING_MODE, PREFLIGHT, ERASING,
 * WRITING, REBOOTING, VERIFYING, in the order its work takes (the next image
 * goes back to WRITING; PREFLIGHT -> SWITCHING_MODE is allowed); others are
 * ignored with a warning.  Terminal states come only from job_finish(). */
void job_set_state(struct job *job, enum job_state state);
/* Bytes done/total of the current phase; the core computes rate and ETA and
 * rate-limits the job-progress events. */
void job_progress(struct job *job, uint64_t done, uint64_t total);
/* Informational event ("handed-to-dfu", "device-reset", "retrying-set-address"):
 * a job-progress event carrying {"note": note, "message": message}. */
void job_note(struct job *job, const char *note, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The job's plan (plan.h plan_to_json(), reference taken over): kept in the job
 * record ("plan") and sent as a job-plan event with the object under "plan"
 * and summary as its message.  Set again when the plan changes (the transport
 * read the device, or took the job over). */
void job_set_plan(struct job *job, json_t *plan, const char *summary);
/* The plan step now running (1-based, of steps): every job-progress event
 * carries "step", "steps" and "step_description" ("writing system part 1 over
 * DFU") from here on; call it before the job_set_state() of the step. */
void job_set_step(struct job *job, unsigned step, unsigned steps, const char *description);
/* The file (job_image() index) is written and verified on the device: a
 * transport that takes the job over later plans without it. */
void job_mark_written(struct job *job, size_t i);
bool job_image_written(const struct job *job, size_t i);
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
/* Records where the write stopped; call before job_finish().  A later call
 * replaces it. */
void job_set_partial(struct job *job, const struct job_partial *p);
/* New facts about the job's device (platform, id, OS, modules): merged into
 * the registry, emits device-changed. */
void job_update_facts(struct job *job, const struct device_facts *facts);
void job_set_device_mode(struct job *job, enum device_mode mode);
/*
 * Ends the job.  result_word says what "done" means: "verified",
 * "written-not-verified", "preflight-ok" (dry run), "probed"; for failures a
 * word such as "booted-invalid" may be given, or NULL.  err must be set unless
 * result is DONE; it is moved from (cleared).
 */
void job_finish(struct job *job, enum job_result result, const char *result_word,
		struct error *err);
/* Passes the job to another transport (see above).  reason is shown to the user. */
void job_handoff(struct job *job, const char *transport_name, const char *reason);
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
 * name of what owns them ("serial_", "dfu_", "job_" for the core's), ending
 * in _ms; a transport may declare another's keys when it runs that protocol
 * too (the DFU transport's verify over serial: CDC_QUERY_TIMEOUT_DEFS).
 */
struct timeout_def {
	const char *key;     /* "serial_prompt_ms" */
	unsigned default_ms; /* e.g. 10000 */
	const char *what;    /* one line for the docs: "wait for the YMODEM 'C' prompt" */
};
/* The configured value of a registered key (asserts that it is registered). */
unsigned timeout_ms(const char *key);

/* ---- the vtable ------------------------------------------------------------ */

struct transport_ops {
	const char *name; /* "serial", "dfu" */
	/*
	 * Optional.  Called once by the core when the daemon starts (jobs_new()),
	 * before any start(): the transport makes what it shares between runs
	 * (the DFU transport: the daemon's libusb context inside the loop).
	 * Returns 0, or -1 with err set: the daemon logs it and the transport's
	 * runs then fail with that reason.  No device I/O here.
	 */
	int (*init)(struct event_base *base, struct error *err) WARN_UNUSED_RESULT;
	/* Optional.  Called once at shutdown (jobs_free()), after every run was
	 * freed: releases what init() made. */
	void (*exit)(void);
	/* Whether this transport can work on the device as it is now (no I/O, no
	 * side effect). */
	bool (*can_serve)(const struct device_snapshot *dev);
	/*
	 * Starts a run on job_device(job).  Returns NULL and fills err on failure.
	 * May: arm timers, open the device, start asynchronous I/O, set the job's
	 * state and notes.  May not: block, call job_finish() or job_handoff()
	 * (the run ends from the loop, after start() returned: the core is inside
	 * start() and the run does not exist for it yet), touch another
	 * transport's files or devices.
	 */
	struct transport_run *(*start)(struct job *job, struct error *err)WARN_UNUSED_RESULT;
	/* Stop at the next safe point, then job_finish(CANCELLED).  May finish the
	 * job from inside this call (the core expects it); may not block. */
	void (*cancel)(struct transport_run *run);
	/* The job's device went away, came back, or changed.  dev is the new snapshot.
	 * May finish or hand over the job; may not block. */
	void (*device_event)(struct transport_run *run, enum device_event ev,
			     const struct device_snapshot *dev);
	/* Releases everything; called by the core after job_finish()/job_handoff()
	 * or at shutdown.  Must accept NULL.  May not call any job_*() function. */
	void (*free)(struct transport_run *run);
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
