/*
 * Client of the listening-mode console (docs/device/console.md): single
 * key commands, no echo, no banner.  A non-blocking state machine on the
 * port's fd that runs a list of steps and fills struct device_facts.
 * Application output mixed into the replies is skipped; the claim-code
 * prompt that a stray 'C' opens (docs/device/console.md#modemmanager) is closed and the step
 * retried.
 */
#pragma once

#include "device_facts.h"
#include "errors.h"

#include <stdbool.h>

struct event_base;

#define CONSOLE_REPLY_MAX 16384 /* one command's reply (the `s` JSON is ~1 KB) */

enum console_step {
	CONSOLE_PROBE = 1 << 0,	   /* `v`: is this listening mode?  also the OS version */
	CONSOLE_IDENTIFY = 1 << 1, /* `i`, ended by `v` */
	CONSOLE_INFO = 1 << 2,	   /* `s`: platform and modules */
	CONSOLE_EXIT = 1 << 3,	   /* `x`: leave listening mode */
};

/* Where a run failed: a typed fact for decisions (the error's detail "phase"
 * says the same to people). */
enum console_phase {
	CONSOLE_PHASE_NONE = 0,	    /* the run has not failed */
	CONSOLE_PHASE_PROBE,	    /* no answer to `v`: silence = not in listening mode */
	CONSOLE_PHASE_IDENTIFY,	    /* `i` */
	CONSOLE_PHASE_INFO,	    /* `s`: no answer or no module list */
	CONSOLE_PHASE_CLAIM_PROMPT, /* the claim-code prompt did not end */
	CONSOLE_PHASE_IO,	    /* the port failed (the device went away) */
};
/* "probe", "identify", "info", "claim-prompt", "console"; NULL for NONE. */
const char *console_phase_name(enum console_phase p);

struct console_config {
	unsigned probe_ms; /* `v` when probing (silence = not listening) */
	unsigned reply_ms; /* `v` */
	/* `i` and `s`: an LTE modem may need ~18 s (docs/device/console.md#device-id-reply) */
	unsigned slow_reply_ms;
	unsigned max_claim_recoveries;
};
void console_config_default(struct console_config *cfg);

struct console_ops {
	void *ctx;
	/* Once; err NULL on success.  Must not free the console (defer it). */
	void (*done)(void *ctx, struct error *err);
};

struct console;

struct console *console_new(struct event_base *base, int fd, const struct console_config *cfg,
			    const struct console_ops *ops);
/* Runs the steps (a mask, in PROBE, IDENTIFY, INFO, EXIT order) and writes what
 * it learns into *facts (kept by the caller until done). */
WARN_UNUSED_RESULT int console_run(struct console *c, unsigned steps, struct device_facts *facts,
				   struct error *err);
/* Where the last run failed: CONSOLE_PHASE_NONE while it runs or after success.
 * Valid in the done callback and until the next console_run(). */
enum console_phase console_failed_phase(const struct console *c);
void console_free(struct console *c);

/*
 * Why a device whose console stayed silent to `v`, also after 28800 baud asked
 * for listening mode, has no console now (the core reads it another way): a
 * sentence built only from what
 * flashd knows of it (facts from an earlier job or the USB ids).  Device OS
 * 6.0.0 dropped listening mode and YMODEM; a device known to run an older
 * release, or a platform no 6.x release exists for, was silent for another
 * reason (busy after an interrupted transfer, an application on the console).
 */
void console_silence_reason(const struct device_facts *facts, char *out, size_t size);

/* Parsers, exposed for tests. */
bool console_parse_version(const char *text, char *out, size_t size);
bool console_parse_device_id(const char *text, char *out, size_t size);
/* The `s` reply (with stray text around it) into facts; -1 with err if no JSON. */
WARN_UNUSED_RESULT int console_parse_info(const char *text, struct device_facts *facts,
					  struct error *err);
