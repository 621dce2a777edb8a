/*
 * The DfuSe state machine (docs/device/dfuse.md#requests-and-states, host sequences
 * docs/device/dfuse.md#host-sequences):
 * open (SET_INTERFACE, GETSTATUS recovery, strings), UPLOAD reads, page/sector
 * erase, download and leave, each one operation at a time with a completion
 * callback.  It speaks through a one-function control-transfer interface
 * (struct dfu_io) so that the real libusb path (usb.c) and the scripted fake
 * device of the unit tests drive the same code.  Timers (bwPollTimeout and the
 * deadline of a busy wait, DFUSE_BUSY_MAX_MS) are libevent timers owned here.
 */
#pragma once

#include "errors.h"
#include "memmap.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* DFU 1.1 class requests. */
enum dfu_request {
	DFU_DETACH = 0,
	DFU_DNLOAD = 1,
	DFU_UPLOAD = 2,
	DFU_GETSTATUS = 3,
	DFU_CLRSTATUS = 4,
	DFU_GETSTATE = 5,
	DFU_ABORT = 6,
};

/* bState (docs/device/dfuse.md#requests-and-states). */
enum dfu_state {
	DFU_STATE_APP_IDLE = 0,
	DFU_STATE_APP_DETACH = 1,
	DFU_STATE_IDLE = 2,
	DFU_STATE_DNLOAD_SYNC = 3,
	DFU_STATE_DNBUSY = 4,
	DFU_STATE_DNLOAD_IDLE = 5,
	DFU_STATE_MANIFEST_SYNC = 6,
	DFU_STATE_MANIFEST = 7,
	DFU_STATE_MANIFEST_WAIT_RESET = 8,
	DFU_STATE_UPLOAD_IDLE = 9,
	DFU_STATE_ERROR = 10,
};

/* bStatus. */
enum dfu_status {
	DFU_STATUS_OK = 0,
	DFU_STATUS_ERR_TARGET = 1,
	DFU_STATUS_ERR_FILE = 2,
	DFU_STATUS_ERR_WRITE = 3,
	DFU_STATUS_ERR_ERASE = 4,
	DFU_STATUS_ERR_CHECK_ERASED = 5,
	DFU_STATUS_ERR_PROG = 6,
	DFU_STATUS_ERR_VERIFY = 7,
	DFU_STATUS_ERR_ADDRESS = 8,
	DFU_STATUS_ERR_NOTDONE = 9,
	DFU_STATUS_ERR_FIRMWARE = 10,
	DFU_STATUS_ERR_VENDOR = 11,
	DFU_STATUS_ERR_USBR = 12,
	DFU_STATUS_ERR_POR = 13,
	DFU_STATUS_ERR_UNKNOWN = 14,
	DFU_STATUS_ERR_STALLEDPKT = 15,
};

const char *dfu_state_name(int state);	 /* "dfuDNLOAD-IDLE" */
const char *dfu_status_name(int status); /* "errTARGET" */

/* DfuSe commands (DNLOAD wValue 0). */
#define DFUSE_CMD_SET_ADDRESS 0x21
#define DFUSE_CMD_ERASE	      0x41

/* docs/device/dfuse.md#requests-and-states: address = (wValue - 2) * 4096 + pointer */
#define DFUSE_BLOCK	       4096u
#define DFUSE_MAX_ALTS	       8
#define DFUSE_MAX_TRANSFER     4096u /* largest wTransferSize accepted */
#define DFUSE_DEFAULT_TRANSFER 1024u /* particle-usb's default when no functional descriptor */
/* dfu-util DFU_TIMEOUT (docs/device/dfuse.md#dfu-util-sequence,
 * docs/device/particle-cli.md#host-time-outs) */
#define DFUSE_CONTROL_TIMEOUT_MS 5000
#define DFUSE_POLL_MAX_MS	 10000 /* cap on a device-requested bwPollTimeout */
/* How long one busy wait may last: a command (or, on open, a dead host's command) may keep
 * the device in dfuDNBUSY for one whole bwPollTimeout at its cap and the GETSTATUS after it
 * at its own time-out.  A busy reply that comes later fails the wait (timed-out). */
#define DFUSE_BUSY_MAX_MS (DFUSE_POLL_MAX_MS + DFUSE_CONTROL_TIMEOUT_MS)
#define DFUSE_STRING_MAX  255

/* What the daemon reads from the (kernel-cached) descriptors before opening. */
struct dfu_descriptors {
	uint16_t vid, pid, bcd_device;
	uint8_t interface;
	uint8_t i_serial;
	uint8_t n_alts;
	uint8_t alt_string[DFUSE_MAX_ALTS]; /* iInterface per alt */
	bool has_functional;
	uint8_t attributes; /* bmAttributes */
	uint16_t detach_timeout;
	uint16_t transfer_size;
	uint16_t dfu_version;
};

/* Parses the DFU functional descriptor (type 0x21, 9 bytes) found in `extra`. */
bool dfu_descriptors_parse_functional(struct dfu_descriptors *d, const uint8_t *extra, size_t len);

struct dfu_setup {
	uint8_t request_type;
	uint8_t request;
	uint16_t value;
	uint16_t index;
	uint16_t length;
};

/*
 * The control-transfer port.  control() submits one transfer and returns 0,
 * or a negative libusb error when it could not be submitted; the result
 * arrives later (never from inside control()) through dfuse_transfer_done().
 * For OUT transfers `out` holds setup->length bytes (copied).
 */
struct dfu_io {
	int (*control)(void *ctx, const struct dfu_setup *setup, const uint8_t *out,
		       unsigned timeout_ms);
	void *ctx;
};

/* The flight recorder: the last DFU_TRACE_MAX bytes of USB traffic, as text lines. */
#define DFU_TRACE_MAX	   4096
#define DFU_TRACE_LINE_MAX 96

struct dfuse;
typedef void (*dfuse_done_fn)(struct dfuse *s, int result, struct error *err, void *userdata);
/* Bytes done/total of the current erase (erase units covered) or download/upload. */
typedef void (*dfuse_progress_fn)(struct dfuse *s, uint32_t address, size_t done, size_t total,
				  void *userdata);
/* Something worth telling the user that is not a failure ("retrying-set-address"). */
typedef void (*dfuse_notice_fn)(struct dfuse *s, const char *note, const char *message,
				void *userdata);

/* What dfuse_open() learned. */
struct dfuse_info {
	char serial[DFUSE_STRING_MAX + 1]; /* device id, lowercase as the device sends it */
	char map_string[DFUSE_MAX_ALTS][DFUSE_STRING_MAX + 1];
	struct dfuse_map maps[DFUSE_MAX_ALTS];
	bool map_valid[DFUSE_MAX_ALTS];
	char protection[DFUSE_STRING_MAX + 1]; /* 0xFA string ("sm=o"), "" if absent */
	/* sm=p, or (no 0xFA) every segment erasable-only
	 * (docs/device/dfuse.md#particle-usb-sequence) */
	bool protected_device;
	bool service_mode; /* sm=s */
};

struct dfuse_stats {
	unsigned requests;	/* every control request sent */
	unsigned set_address;	/* SET_ADDRESS commands */
	unsigned erases;	/* ERASE commands */
	unsigned dnload_chunks; /* data DNLOADs */
	unsigned uploads;	/* UPLOAD requests */
	unsigned getstatus;
	unsigned address_fallbacks; /* block-numbered chunks refused, retried with SET_ADDRESS */
	size_t bytes_written, bytes_read;
};

struct dfuse *dfuse_new(struct event_base *base, const struct dfu_io *io,
			const struct dfu_descriptors *desc);
void dfuse_free(struct dfuse *s);

/*
 * Per-device fallback of docs/device/dfuse.md#requests-and-states: send SET_ADDRESS before every
 * chunk (wValue 2).  Switched
 * on by itself (with a "retrying-set-address" notice) when the device answers a
 * block-numbered DNLOAD with errADDRESS or errTARGET; the chunk is then sent again.
 */
void dfuse_set_address_per_chunk(struct dfuse *s, bool on);
bool dfuse_address_per_chunk(const struct dfuse *s);
void dfuse_set_progress(struct dfuse *s, dfuse_progress_fn fn, void *userdata);
/*
 * The device's serial number string as the host read it when the device enumerated
 * (the kernel reads iSerialNumber then and keeps it: sysfs "serial"): dfuse_open()
 * takes it as info.serial instead of asking the device again.  NULL or "" = ask.
 */
void dfuse_set_serial(struct dfuse *s, const char *serial);
void dfuse_set_notice(struct dfuse *s, dfuse_notice_fn fn, void *userdata);
/*
 * Stops the running erase, download or upload before its next request (a chunk
 * or erase-unit boundary): done() then reports cancelled with phase, alt,
 * address and chunk.  The request in flight completes first; nothing else is
 * stopped.
 */
void dfuse_cancel(struct dfuse *s);
/* Fills err with device-gone and the running operation's context (phase, alt, address,
 * chunk, last DFU state/status, flight recorder), for a device that vanished while a
 * request was in flight that the USB layer never completed.  No completion follows. */
void dfuse_device_gone(struct dfuse *s, struct error *err);

/* Completion from the io layer.  usb_status: 0 or a negative libusb error. */
void dfuse_transfer_done(struct dfuse *s, int usb_status, const uint8_t *in, size_t actual);

/*
 * Operations: one at a time; done() is called exactly once, never from
 * inside the call that started the operation.  Returns -1 (and fills err)
 * only when the operation cannot start (busy, bad argument).
 */
WARN_UNUSED_RESULT int dfuse_open(struct dfuse *s, dfuse_done_fn done, void *userdata,
				  struct error *err);
WARN_UNUSED_RESULT int dfuse_upload(struct dfuse *s, uint8_t alt, uint32_t address, uint8_t *buf,
				    size_t len, dfuse_done_fn done, void *userdata,
				    struct error *err);
/*
 * dfuse_upload() that asks after every UPLOAD block whether to go on: more(userdata,
 * offset, n) sees bytes [offset, offset + n) of buf as they arrive; false ends the read
 * there (the device is returned to dfuIDLE as usual) and done() reports success with
 * dfuse_upload_length() bytes read.
 */
typedef bool (*dfuse_upload_more_fn)(void *userdata, size_t offset, size_t n);
WARN_UNUSED_RESULT int dfuse_upload_until(struct dfuse *s, uint8_t alt, uint32_t address,
					  uint8_t *buf, size_t len, dfuse_upload_more_fn more,
					  dfuse_done_fn done, void *userdata, struct error *err);
/*
 * Reads that follow one another (the module prefixes and suffixes before a plan): with
 * keep on, an upload leaves the device in dfuUPLOAD-IDLE, so that the next upload of the
 * same alt a whole number of DFUSE_BLOCKs after the first one's address needs no
 * SET_ADDRESS and no ABORTs (block number = 2 + blocks ahead); any other request ends
 * the open read with one ABORT first.  dfuse_idle() ends it now (done at once when none
 * is open): a device is never left in dfuUPLOAD-IDLE.
 */
void dfuse_set_keep_upload(struct dfuse *s, bool on);
bool dfuse_upload_open(const struct dfuse *s);
WARN_UNUSED_RESULT int dfuse_idle(struct dfuse *s, dfuse_done_fn done, void *userdata,
				  struct error *err);
/* Bytes the last upload read. */
size_t dfuse_upload_length(const struct dfuse *s);
/* Erases exactly the erase units of alt's memory map that cover [address, address + len). */
WARN_UNUSED_RESULT int dfuse_erase(struct dfuse *s, uint8_t alt, uint32_t address, size_t len,
				   dfuse_done_fn done, void *userdata, struct error *err);
WARN_UNUSED_RESULT int dfuse_download(struct dfuse *s, uint8_t alt, uint32_t address,
				      const uint8_t *data, size_t len, dfuse_done_fn done,
				      void *userdata, struct error *err);
/* Zero-length DNLOAD and exactly one GETSTATUS (docs/device/dfuse.md#requests-and-states); nothing
 * is sent afterwards. */
WARN_UNUSED_RESULT int dfuse_leave(struct dfuse *s, dfuse_done_fn done, void *userdata,
				   struct error *err);

/* Where the current erase or download is, or where the last one stopped: what a
 * transport reports of a write that did not finish (transport.h job_partial). */
struct dfuse_position {
	bool valid;	  /* an erase or a download ran (or runs) */
	bool erasing;	  /* it is (was) an erase */
	uint32_t start;	  /* where the op started */
	uint32_t address; /* the next chunk or erase unit not done */
	size_t done;	  /* bytes written (download) or erased (erase units) */
	unsigned chunk;	  /* download: chunks acknowledged */
};
void dfuse_position(const struct dfuse *s, struct dfuse_position *ret);

const struct dfuse_info *dfuse_get_info(const struct dfuse *s);
const struct dfu_descriptors *dfuse_get_descriptors(const struct dfuse *s);
const struct dfuse_stats *dfuse_get_stats(const struct dfuse *s);
uint16_t dfuse_transfer_size(const struct dfuse *s);

/* The flight recorder as a JSON array of lines (oldest first); new reference. */
json_t *dfuse_trace_json(const struct dfuse *s);
/* Attaches the flight recorder to err as "usb_trace" when the code declares it. */
void dfuse_attach_trace(const struct dfuse *s, struct error *err);

/*
 * Maps a libusb error to the catalogue (issue 7): access → permission-denied,
 * no device → device-gone, timeout → timed-out, anything else transfer-failed.
 */
int dfu_usb_error_set(struct error *err, int usb_status, const char *phase);
