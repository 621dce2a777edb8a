/*
 * Particle's USB control requests to a device running Device OS (normal,
 * listening or safe mode): the third transport's engine.
 *
 * Wire format (particle-usb src/usb-protocol.js and src/device-base.js;
 * Device OS hal/src/.../usb control-request handling and
 * system/src/control/): vendor requests to the device recipient.  A request
 * is a service exchange
 *
 *   INIT  (IN,  bRequest 1, wIndex type, wValue payload size) -> status, id
 *   SEND  (OUT, bRequest 3, wIndex id) payload, in chunks of 4096 bytes
 *   CHECK (IN,  bRequest 2, wIndex id) -> status, reply size, result
 *   RECV  (IN,  bRequest 4, wIndex id) reply payload, in chunks of 4096 bytes
 *   RESET (IN,  bRequest 5, wIndex id or 0) forgets a request
 *
 * whose replies are "field flags (u32le), status (u16le), then id (u16),
 * size (u32), result (i32) when flagged".  Statuses: OK, ERROR, PENDING
 * (buffer allocation or processing not done: CHECK again), BUSY (too many
 * requests open: INIT again later), NO_MEMORY, NOT_FOUND.  The result is a
 * Device OS system_error_t (0 or negative); payloads are protocol buffers
 * (proto/particle, nanopb).
 *
 * One request at a time per struct ctrl; each is an explicit state machine
 * (enum ctrl_state) driven by transfer completions and one libevent timer.
 * CHECK is polled every 5 ms doubling to 50 ms; every request is bounded by
 * request_ms (config key ctrl_request_ms, default 10 s) from INIT to its
 * reply; a request that fails or times out is RESET on the device (itself
 * bounded).  Nothing here blocks.
 *
 * The transfers go through struct ctrl_io: ctrl_usb.c implements it over a
 * libusb_device_handle with libusb's asynchronous API; unit tests plug a
 * scripted device in.
 */
#pragma once

#include "device_facts.h"
#include "errors.h"
#include "transport.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request types (Device OS system/inc/system_control.h ctrl_request_type). */
enum ctrl_request_type {
	CTRL_REQ_DEVICE_ID = 20,
	CTRL_REQ_SERIAL_NUMBER = 21,
	CTRL_REQ_SYSTEM_VERSION = 30,
	CTRL_REQ_RESET = 40,
	CTRL_REQ_DFU_MODE = 50,
	CTRL_REQ_SAFE_MODE = 60,
	CTRL_REQ_START_LISTENING = 70,
	CTRL_REQ_STOP_LISTENING = 71,
	CTRL_REQ_GET_DEVICE_MODE = 72,
	CTRL_REQ_GET_MODULE_INFO = 90,
	CTRL_REQ_GET_ASSET_INFO = 91, /* Device OS 5.6.0+ on platforms with assets */
	CTRL_REQ_START_FIRMWARE_UPDATE = 250,
	CTRL_REQ_FINISH_FIRMWARE_UPDATE = 251,
	CTRL_REQ_CANCEL_FIRMWARE_UPDATE = 252,
	CTRL_REQ_FIRMWARE_UPDATE_DATA = 253,
};
const char *ctrl_request_name(unsigned type); /* "get-module-info", "request-123" */

/* Service protocol (particle-usb src/usb-protocol.js). */
enum ctrl_service {
	CTRL_SVC_INIT = 1,
	CTRL_SVC_CHECK,
	CTRL_SVC_SEND,
	CTRL_SVC_RECV,
	CTRL_SVC_RESET
};
enum ctrl_status {
	CTRL_STATUS_OK = 0,
	CTRL_STATUS_ERROR = 1,
	CTRL_STATUS_PENDING = 2,
	CTRL_STATUS_BUSY = 3,
	CTRL_STATUS_NO_MEMORY = 4,
	CTRL_STATUS_NOT_FOUND = 5,
};
const char *ctrl_status_name(unsigned status); /* "busy", "status-9" */
#define CTRL_FIELD_STATUS	0x01
#define CTRL_FIELD_ID		0x02
#define CTRL_FIELD_SIZE		0x04
#define CTRL_FIELD_RESULT	0x08
#define CTRL_BMREQ_OUT		0x40 /* vendor, device, host to device */
#define CTRL_BMREQ_IN		0xc0 /* vendor, device, device to host */
#define CTRL_LEGACY_BREQUEST	0x50 /* 'P': legacy requests (wIndex = type) */
#define CTRL_SERVICE_WLENGTH	64   /* service replies: the minimum data stage */
#define CTRL_TRANSFER_MAX	4096 /* SEND/RECV chunk (particle-usb MAX_CONTROL_TRANSFER_DATA_SIZE) */
#define CTRL_PAYLOAD_MAX	65535 /* INIT's wValue */
#define CTRL_REPLY_MAX		16384 /* a reply larger than this is refused (module info ~2 KiB) */
#define CTRL_POLL_FIRST_MS	5
#define CTRL_POLL_MAX_MS	50
#define CTRL_RESET_TIMEOUT_MS	500 /* the RESET after a failed request */
#define CTRL_REQUEST_MS_DEFAULT 10000

/* Timeout keys (transport.h): ctrl_request_ms. */
extern const struct timeout_def ctrl_timeouts[];

/* ---- the transfer port -------------------------------------------------- */

struct ctrl_setup {
	uint8_t request_type; /* CTRL_BMREQ_IN / CTRL_BMREQ_OUT */
	uint8_t request;
	uint16_t value, index, length;
};

enum ctrl_io_status {
	CTRL_IO_OK,
	CTRL_IO_STALL,	   /* the device refused the request (unknown to this firmware) */
	CTRL_IO_TIMEOUT,   /* the transfer's own timeout */
	CTRL_IO_GONE,	   /* the device is no longer there */
	CTRL_IO_ERROR,	   /* any other transfer failure */
	CTRL_IO_CANCELLED, /* after io.cancel() */
};

struct ctrl;
struct ctrl_io {
	/* Starts one control transfer: OUT data is buf[0..length), IN data lands there.  It
	 * completes later, from the loop, by ctrl_io_complete().  Returns 0, or a negative
	 * value with *status (e.g. CTRL_IO_GONE) when it could not start. */
	int (*submit)(void *ctx, const struct ctrl_setup *setup, uint8_t *buf, unsigned timeout_ms,
		      enum ctrl_io_status *status);
	/* Cancels the transfer in flight (its completion follows with CTRL_IO_CANCELLED). */
	void (*cancel)(void *ctx);
	/* Called once when the ctrl is freed (no transfer in flight any more). */
	void (*release)(void *ctx);
	void *ctx;
};
/* The transfer submitted last has ended; actual = bytes moved in the data stage. */
void ctrl_io_complete(struct ctrl *c, enum ctrl_io_status status, size_t actual,
		      const char *usb_error);

/* ---- one engine per open device ----------------------------------------- */

struct ctrl_options {
	unsigned request_ms;   /* bound per request; 0 = CTRL_REQUEST_MS_DEFAULT */
	const char *device_os; /* for messages ("6.2.0"), may be NULL */
};

struct ctrl *ctrl_new(struct event_base *base, struct ctrl_io io, const struct ctrl_options *opt);
/* Cancels what runs (no callback is called any more) and frees once the transfer in
 * flight has completed.  Accepts NULL. */
void ctrl_free(struct ctrl *c);
bool ctrl_busy(const struct ctrl *c);

/* ---- raw requests ------------------------------------------------------- */

/* The device's answer to one request: result is its system_error_t (0 = OK). */
struct ctrl_reply {
	unsigned type;
	int32_t result;
	const uint8_t *data; /* reply payload, valid during the callback */
	size_t len;
};
/* err is set when the request failed: transport trouble, a timeout, or a result < 0
 * (decoded by ctrl_error_from_result). */
typedef void (*ctrl_request_done_fn)(struct ctrl *c, const struct ctrl_reply *reply,
				     struct error *err, void *userdata);
/* Starts one request (payload copied).  Fails (busy, payload too large) with err. */
WARN_UNUSED_RESULT int ctrl_request(struct ctrl *c, unsigned type, const uint8_t *payload,
				    size_t len, ctrl_request_done_fn done, void *userdata,
				    struct error *err);
/* Stops the request or operation that runs: its callback gets `cancelled`. */
void ctrl_cancel(struct ctrl *c);

/* A negative system_error_t as a catalogue error (ctrl_error.c). */
int ctrl_error_from_result(struct error *err, int32_t result, unsigned type, const char *device_os);
/* "NOT_SUPPORTED", "OTA_INTEGRITY_CHECK_FAILED"; NULL if unknown. */
const char *ctrl_system_error_name(int32_t code);

/* ---- operations: typed requests (ctrl_ops.c) ---------------------------- */

enum ctrl_op {
	CTRL_OP_DEVICE_ID,	/* text = 24 hex digits, lowercase */
	CTRL_OP_SERIAL_NUMBER,	/* text */
	CTRL_OP_SYSTEM_VERSION, /* text = "6.2.0" (service request, legacy 'P' request on -120) */
	CTRL_OP_DEVICE_MODE,	/* mode */
	CTRL_OP_MODULE_INFO,	/* modules (either reply format) */
	CTRL_OP_ENTER_DFU,	/* the device resets into DFU mode after the reply */
	CTRL_OP_ENTER_SAFE_MODE,
	CTRL_OP_START_LISTENING,
	CTRL_OP_STOP_LISTENING,
	CTRL_OP_RESET,
	CTRL_OP_ASSET_INFO, /* assets: the asset store (-120 before Device OS 5.6.0) */
};
const char *ctrl_op_name(enum ctrl_op op);

enum ctrl_device_mode {
	CTRL_MODE_NORMAL = 0,	 /* DeviceMode NORMAL_MODE */
	CTRL_MODE_LISTENING = 1, /* DeviceMode LISTENING_MODE */
};

struct ctrl_result {
	enum ctrl_op op;
	char text[40];
	enum ctrl_device_mode mode;
	struct installed_module modules[DEVICE_FACTS_MAX_MODULES];
	unsigned n_modules;
	bool modules_deprecated_format; /* the reply used modules_deprecated (< 5.6.0) */
	struct installed_asset assets[DEVICE_FACTS_MAX_ASSETS]; /* available ones */
	unsigned n_assets;
	unsigned busy_retries; /* INITs the device answered BUSY (then retried) */
};
typedef void (*ctrl_op_done_fn)(struct ctrl *c, const struct ctrl_result *res, struct error *err,
				void *userdata);
WARN_UNUSED_RESULT int ctrl_op_start(struct ctrl *c, enum ctrl_op op, ctrl_op_done_fn done,
				     void *userdata, struct error *err);

/*
 * The firmware-update exchange: START (size) -> chunk size, DATA chunks,
 * FINISH.  The device validates and applies the module at its next reset
 * (Device OS writes it at FINISH and resets itself; particle-usb then closes).
 * On a failure after START (other than device-gone) CANCEL is sent, bounded.
 * progress: bytes acknowledged so far.
 */
typedef void (*ctrl_progress_fn)(struct ctrl *c, size_t done, size_t total, void *userdata);
WARN_UNUSED_RESULT int ctrl_firmware_update(struct ctrl *c, const uint8_t *data, size_t size,
					    ctrl_progress_fn progress, ctrl_op_done_fn done,
					    void *userdata, struct error *err);
