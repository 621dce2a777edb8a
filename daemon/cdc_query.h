/*
 * Asks a CDC device what it runs, through its listening-mode console
 * (docs/device/console.md, docs/device/console.md#magic-baud-rates), and leaves it as it was found:
 *
 *   OPEN -> PROBE (`v`: listening already?) -> LISTEN (9600 then 28800) and at
 *   once QUERY (`v`, `i`, `s`) [-> LISTEN again once, if silent] -> EXIT (`x`) -> DONE
 *
 * keep_listening leaves out the EXIT of a query that succeeded: the caller (a flash
 * job whose serial write follows) keeps the device in listening mode and gives it
 * back itself with cdc_query_give_back() when no serial step follows.  An `x`
 * followed by a new request for listening mode (28800, the start-listening control
 * request) races: the device may take the request first and the `x` after it, and
 * then the write's `v` goes to the running application.
 *
 * No fixed waits: after 28800 the `v` is written at once and answered as soon
 * as the console runs (the device keeps what arrives before in its CDC
 * buffer); serial_listen_ms + serial_probe_ms only bound that answer.  A
 * device that has just booted its firmware (relisten: a verify after
 * flashing) cannot be listening, so it gets no PROBE first: its verify costs
 * the device's own time to answer, not a probe timeout.
 *
 * Used for explicit probes (device-info "probe") and by the DFU transport to
 * verify a device that came back on Device OS <= 5.x after leaving DFU.  The
 * daemon never starts one on its own: it writes to the port.
 *
 * 28800 is toggled through 9600 because the kernel's cdc-acm sends
 * SET_LINE_CODING only when the line coding changes (docs/device/console.md#magic-baud-rates): a
 * port left at
 * 28800 by an earlier run would otherwise never reach the device again.
 */
#pragma once

#include "device_facts.h"
#include "errors.h"

#include <stdbool.h>

struct event_base;
struct cdc_query;

/* The console timeouts, shared by every user of the console (config keys
 * registered by the serial transport and, for its verify, the DFU one). */
#define CDC_QUERY_TIMEOUT_DEFS                                                                     \
	{"serial_probe_ms", 2000, "listening-mode console: answer to `v`"},                        \
	    {"serial_listen_ms", 1500, "after 28800 baud: time to enter listening mode"},          \
	    {"serial_reply_ms", 5000, "listening-mode console: short replies"},                    \
	{                                                                                          \
		"serial_slow_reply_ms", 20000,                                                     \
		    "listening-mode console: `i` and `s` (LTE modem start)"                        \
	}

/* The tty node can lag the USB device's udev event after a re-enumeration:
 * look again every 20 ms (an open() that fails costs nothing; a long period is
 * time the verify waits for nothing), for 10 s in all. */
#define CDC_QUERY_OPEN_RETRIES	500
#define CDC_QUERY_OPEN_RETRY_MS 20

struct cdc_query_config {
	unsigned probe_ms, listen_ms, reply_ms, slow_reply_ms; /* 0 = the configured keys */
	bool identify;					       /* also `i` (device id) */
	bool relisten;	       /* the device has just booted its firmware (a verify after
				* flashing): no probe first, 28800 at once; silent after it:
				* toggle once more (the device may have been booting when the
				* first SET_LINE_CODING came) */
	bool skip_first_probe; /* the caller knows the device is not listening */
	bool keep_listening;   /* no `x` after a query that succeeded (see above) */
	/* Optional: called (with the done callback's ctx) just before flashd asks for
	 * listening mode (28800 baud), so the caller can say it switches modes now. */
	void (*asking)(void *ctx);
	const char *lock_dir; /* NULL = $FLASHD_LOCK_DIR or the default */
};

struct cdc_query_result {
	struct device_facts facts; /* what the device said, over what the caller knew */
	bool was_listening;	   /* it answered before flashd asked for listening mode */
	bool left_listening;	   /* flashd sent `x` to give the device back to its firmware */
	bool kept_listening;	   /* keep_listening: flashd put the device in listening mode and
				      left it there (no `x`): the caller gives it back */
	/* The query failed because the device stayed silent to `v` (the error is
	 * timed-out, detail.phase "probe"): it has no listening mode now (Device OS
	 * 6.x, or listening disabled).  Decide on this, not on the detail string. */
	bool no_listening_mode;
};

/* Called once, from the loop (never from inside cdc_query_start()); the query
 * may be freed from here.  err is NULL on success; see res->no_listening_mode. */
typedef void (*cdc_query_done_fn)(void *ctx, const struct cdc_query_result *res, struct error *err);

/* Starts on tty.  known: facts to start from (platform from the USB ids), may be NULL. */
struct cdc_query *cdc_query_start(struct event_base *base, const char *tty,
				  const struct device_facts *known,
				  const struct cdc_query_config *cfg, cdc_query_done_fn done,
				  void *ctx, struct error *err);
/* Stops at once (the port is released; a device already in listening mode stays there). */
void cdc_query_free(struct cdc_query *q);

/* Gives a device that a keep_listening query left in listening mode back to its
 * firmware: `x` on its console (docs/device/console.md#commands).  Opens the port,
 * writes the byte and closes it; nothing waits for the device.  0, or -1 with err. */
int cdc_query_give_back(const char *tty, const char *lock_dir, struct error *err);

/* Whether the device reports any module of its main store invalid: it then runs
 * safe mode (docs/device/validation.md) once it leaves listening mode. */
bool cdc_query_facts_safe_mode(const struct device_facts *f);
