/*
 * A fake transport for the daemon's unit tests (test_jobs.c, test_autoflash.c): its
 * runs stay until the test ends their step (job_step_done()) or the job
 * (job_finish()), and what the core asked of it is counted in `fake`.  Plus the
 * udev side: a simulated device plugged into / unplugged from the registry.
 */
#pragma once

#include "jobs.h"
#include "registry.h"

#include <stdbool.h>
#include <stdint.h>

#define FAKE_RUNS_MAX 64

enum fake_cancel {
	FAKE_CANCEL_AT_ONCE, /* cancel() ends the step, cancelled */
	FAKE_CANCEL_IGNORE,  /* cancel() does nothing: the core's grace runs out */
};

struct transport_run {
	struct job *job;
	const struct transport_ops *ops;
	enum fake_cancel cancel_mode;
	int device_events[3]; /* by enum device_event */
};

struct fake_state {
	struct transport_run *runs[FAKE_RUNS_MAX]; /* the live runs, n of them */
	unsigned n;
	struct transport_run *run; /* the last started, while it lives */
	int starts, frees, cancels;
	bool start_fails;    /* start() fails (permission-denied) */
	bool serve_dfu_only; /* can_serve() only devices in DFU mode */
	enum fake_cancel cancel_mode;
	const char *last_started_by; /* the transport's name */
	enum job_step_kind last_kind;
	bool last_keep_listening;	  /* the step's keep_listening (a READ) */
	bool last_mode_only;		  /* the step's mode_only (a READ: the core's peek) */
	enum device_mode last_mode;	  /* the job's device mode when the step started */
	struct transport_keep *last_kept; /* the step's kept (what a READ kept open) */
	int keep_frees;			  /* keep_free() calls with something to free */
};

/* What a fake READ keeps open for the next step (transport.h job_step_result.keep). */
struct transport_keep {
	int id;
};

extern struct fake_state fake;

/* The same fake under three names (the order of a job's transports matters). */
extern const struct transport_ops fake_serial, fake_ctrl, fake_dfu;

/* Forgets every count (the runs themselves are the core's to free). */
void fake_reset(void);

/* A Particle device (vid 0x2b04, pid) with serial number serial at USB port port
 * ("1-1"): its usb_device node; fake_plug_tty() adds the tty cdc-acm makes for a
 * CDC device. */
void fake_plug(struct registry *reg, const char *serial, const char *port, uint16_t pid);
void fake_plug_tty(struct registry *reg, const char *serial, const char *port);
/* A CDC device (pid) whose control requests are reachable: its usb_device has a bus and
 * device number, and its tty node is tty (a path the test may open, e.g. a pty's). */
void fake_plug_cdc(struct registry *reg, const char *serial, const char *port, uint16_t pid,
		   const char *tty);
void fake_unplug(struct registry *reg, const char *port);
