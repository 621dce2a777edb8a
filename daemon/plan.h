/*
 * The job plan (issue 11): before the first byte, the core turns the job's
 * files and what it knows of the device into an ordered list of steps (mode
 * switches, writes, reboots, the verify), and checks the device state after
 * every step against the rules the device applies: each module as it is
 * written (update time) and every module at the next boot (end state).
 *
 * Pure functions over parsed images and device facts: no I/O, no event loop.
 * The transports execute the writes; which transport may write which module
 * function on which platform and Device OS range is the table in plan.c
 * (plan_capability), one row per transport and chip family.
 *
 * Installed modules are known, absent or unknown (enum plan_presence): what
 * flashd could not read (a SoftDevice over DFU when the system part that names
 * it is gone, NCP firmware, anything when the module list is incomplete) is
 * unknown, and a plan that depends on an unknown module says so in a warning
 * instead of refusing as if it were missing.
 */
#pragma once

#include "device_facts.h"
#include "errors.h"
#include "image.h"
#include "preflight.h" /* struct preflight_input, PREFLIGHT_MAX_IMAGES: the job's files */
#include "transport.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLAN_MAX_STEPS	 (PREFLIGHT_MAX_IMAGES * 4 + 4)
#define PLAN_MAX_NOTES	 12
#define PLAN_NOTE_LEN	 320
#define PLAN_MAX_MODULES (DEVICE_FACTS_MAX_MODULES + PREFLIGHT_MAX_IMAGES * IMAGE_MAX_MODULES)

/* The transports the planner knows (columns of the capability table).  A
 * new transport (USB control requests, issue 14) is one more value and one
 * more set of table rows. */
enum plan_transport {
	PLAN_TRANSPORT_SERIAL, /* YMODEM in listening mode */
	PLAN_TRANSPORT_DFU,    /* DfuSe in the DFU bootloader */
	PLAN_TRANSPORT_CTRL,   /* USB control requests to the running device (issue 14) */
	PLAN_TRANSPORT_COUNT,
};
const char *plan_transport_name(enum plan_transport t); /* "serial", "dfu", "ctrl" */
/* The device mode a transport works in (listening, dfu, normal). */
enum device_mode plan_transport_mode(enum plan_transport t);

enum plan_step_kind {
	PLAN_STEP_SWITCH, /* mode switch: 14400 baud -> DFU, 28800 baud -> listening, DFU leave */
	PLAN_STEP_WRITE,  /* one file (its modules) over one transport */
	PLAN_STEP_REBOOT, /* the device resets to apply what was written; wait for it */
	PLAN_STEP_VERIFY, /* read every module's verdict and the mode it runs in */
};
const char *plan_step_kind_name(enum plan_step_kind k); /* "switch-mode", "write", ... */

struct plan_step {
	enum plan_step_kind kind;
	enum plan_transport transport; /* WRITE: the transport; SWITCH: the one it leads to;
					  VERIFY: the one that reads the verdict */
	enum device_mode from, to;     /* SWITCH */
	const char *how;	       /* SWITCH: "14400 baud", "28800 baud", "DFU leave" */
	/* WRITE */
	size_t file;		 /* index into the job's files (submission order) */
	const char *name;	 /* file name (not owned) */
	const struct image *img; /* not owned */
	uint64_t bytes;
	unsigned estimate_ms; /* rough time of the step */
};

/* What is installed (or will be) in one slot, as the planner models it. */
enum plan_presence {
	PLAN_ABSENT,
	PLAN_KNOWN,
	PLAN_UNKNOWN,
};

struct plan_module {
	uint8_t function, index;
	uint16_t version;
	struct image_dependency deps[2];
	bool valid;	  /* the device did not report a failed check (installed ones) */
	uint16_t failed;  /* failed checks the device reported (checked & ~passed) */
	const char *file; /* written by the job: its file name; NULL = installed */
	uint16_t platform_id;
	/* Its bytes (issue 11): PLAN_KNOWN with the suffix's SHA-256 (and, when read over
	 * DFU, the stored CRC-32), PLAN_UNKNOWN when flashd could not read them (bytes_why
	 * says why).  Identical = same function, index, version and these. */
	enum plan_presence bytes;
	char sha256[65]; /* hex, lowercase */
	bool has_crc;
	uint32_t crc;
	const char *bytes_why; /* PLAN_UNKNOWN: "reading its suffix over DFU failed" */
};

/* The device's main-store modules, and whether a missing one is absent or unknown. */
struct plan_model {
	struct plan_module m[PLAN_MAX_MODULES];
	size_t n;
	bool complete;		    /* the module list was read in full */
	uint32_t unknown_functions; /* bit per function flashd cannot read on this device */
	uint16_t platform_id;	    /* 0 = unknown */
};

struct plan {
	struct plan_step steps[PLAN_MAX_STEPS];
	size_t n_steps;
	size_t n_writes;
	/* the files to write, in order (indexes into the inputs) */
	size_t order[PREFLIGHT_MAX_IMAGES];
	size_t n_order;
	/* files skipped as already installed: index and why */
	size_t skipped[PREFLIGHT_MAX_IMAGES];
	char skip_reason[PREFLIGHT_MAX_IMAGES][200];
	size_t n_skipped;
	/* warnings (unknown modules, modules already invalid) and what --force overrode */
	char warnings[PLAN_MAX_NOTES][PLAN_NOTE_LEN];
	size_t n_warnings;
	char overrides[PLAN_MAX_NOTES][PLAN_NOTE_LEN];
	size_t n_overrides;
	/* files written although the device holds the same version, because flashd
	 * could not read the installed bytes to compare (issue 11): why */
	char unverified[PLAN_MAX_NOTES][PLAN_NOTE_LEN];
	size_t n_unverified;
	uint64_t bytes;
	unsigned estimate_ms;
	enum plan_transport first_transport; /* transport of the first write */
	bool mixed_transports;		     /* writes go over more than one transport */
};

struct plan_options {
	bool force;   /* override dependency refusals (said in overrides) and rewrite identical
			 modules */
	bool rewrite; /* rewrite identical modules only (no refusal overridden) */
	enum device_mode mode; /* the device's mode now */
	/* transports built in (bit per enum plan_transport); 0 = all */
	uint32_t transports;
};

/* The model of what facts says is installed. */
void plan_model_from_facts(const struct device_facts *facts, struct plan_model *model);
/* What the model holds in (function, index): PLAN_KNOWN with *ret, or absent/unknown. */
enum plan_presence plan_model_lookup(const struct plan_model *model, uint8_t function,
				     uint8_t index, const struct plan_module **ret);

/*
 * Which transports can write this module on this device (bit per enum
 * plan_transport), by the capability table.  system_version is the Device OS
 * the device runs when the module is written (0 = unknown).
 */
uint32_t plan_writers(const struct image_module *m, const struct platform *p,
		      uint16_t system_version);

/*
 * Builds the plan: skips files already installed identically (unless
 * force), orders the rest so that every module passes the device's
 * update-time checks when it is written, checks the end state (every
 * module's dependencies at boot, the Electron bootloader rule), picks the
 * transports with the fewest mode switches and lays out the steps.
 * Returns 0, or -1 with err set (dependency-unmet naming the file, the
 * module and version it needs, the release that brings it and what the
 * device has; or the untouched module the job would break; not-flashable-here
 * when no transport can write a file).  With force, dependency refusals become
 * overrides.
 */
WARN_UNUSED_RESULT int plan_build(const struct device_facts *facts,
				  const struct preflight_input *files, size_t n_files,
				  const struct plan_options *opts, struct plan *plan,
				  struct error *err);

/* The plan for people and clients: {"steps":[...],"skipped":[...],"warnings":[...],
 * "overrides":[...],"unverified":[...],"bytes":N,"estimate_s":S,"writes":N}. */
json_t *plan_to_json(const struct plan *plan);
/* One line: "2 writes over serial (bootloader, system part 1), 512 KiB, about 40 s; 1 file
 * installed already". */
void plan_summary(const struct plan *plan, char *buf, size_t size);
/* "writing system part 1 over DFU", "switching to DFU mode (14400 baud)". */
void plan_step_describe(const struct plan_step *s, char *buf, size_t size);

/*
 * The whole device after the reboot (issue 11: verified means every module the
 * device reports is valid and it runs normally): fills invalid with
 * [{"function","index","version","failed_checks":[...]}] for every invalid
 * main-store module and returns how many.
 */
size_t plan_invalid_modules(const struct device_facts *now, json_t *invalid);
