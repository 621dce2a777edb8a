/*
 * YMODEM sender for the listening-mode receiver of Device OS 0.4-5.9
 * (docs/device/ymodem.md) that also satisfies spec-strict receivers
 * (lrzsz rb).  A non-blocking state machine driven by libevent: it owns read
 * and write events on the fds it is given and one phase timer, and reports
 * once through ops->done.  It never closes the fds.
 */
#pragma once

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

#define YMODEM_BLOCK	1024 /* STX data blocks (docs/device/ymodem.md#constants) */
#define YMODEM_TEXT_MAX 512  /* device text kept after a cancel or success */
#define YMODEM_LINE_MAX 256  /* one console line while waiting for the prompt */
#define YMODEM_NAME_MAX 64   /* file name sent in the header */

enum ymodem_start {
	/* Send 'f' and wait for the prompt line (docs/device/console.md#commands), or a receiver's
	 * 'C'. */
	YMODEM_START_COMMAND,
	/* Wait for the receiver's 'C' (spec receivers such as rb). */
	YMODEM_START_WAIT_C,
};

struct ymodem_config {
	unsigned prompt_ms; /* 'f' -> prompt line */
	unsigned header_ms; /* header -> ACK 'C' */
	unsigned block_ms;  /* data block -> ACK */
	/* empty header -> verdict: validation and bootloader/NCP apply
	 * (docs/device/ymodem.md#end-of-transfer) */
	unsigned final_ms;
	unsigned text_ms;     /* quiet time that ends the device's text after a verdict */
	unsigned max_retries; /* re-sends of a block that got no answer */
	unsigned max_naks;    /* consecutive NAKs that make a NAK storm */
	/* claim-code prompts swallowed and recovered (docs/device/console.md#modemmanager) */
	unsigned max_claim_recoveries;
	enum ymodem_start start;
	/* Device flavour (docs/device/ymodem.md#block-reception): a NAK to a block re-sent after
	 * silence means the
	 * device already stored it (its ACK was lost); spec receivers NAK on CRC. */
	bool device_nak_semantics;
};

/* Defaults from docs/device/particle-cli.md#host-time-outs: prompt 10 s, block 10 s, final 70 s. */
void ymodem_config_default(struct ymodem_config *cfg);

enum ymodem_state {
	YMODEM_IDLE,
	YMODEM_PROMPT,	     /* 'f' sent, waiting for the prompt line */
	YMODEM_HEADER,	     /* header sent, waiting for ACK */
	YMODEM_HEADER_C,     /* header ACKed, waiting for the 'C' after it */
	YMODEM_DATA,	     /* data block sent, waiting for ACK */
	YMODEM_EOT,	     /* EOT sent */
	YMODEM_FINAL,	     /* empty header sent: the device validates */
	YMODEM_SUCCESS_TEXT, /* ACKed: reading "Downloaded file successfully!" */
	YMODEM_CANCEL_TEXT,  /* CA CA received: reading the reason */
	YMODEM_ABORTING,     /* 'a' sent on request, waiting for "Aborted by user." */
	YMODEM_DONE,
};
const char *ymodem_state_name(enum ymodem_state s);

struct ymodem_result {
	bool ok;
	uint64_t bytes_sent;		   /* file bytes in blocks the receiver acknowledged */
	unsigned block;			   /* last block number sent (1-based data blocks) */
	char device_text[YMODEM_TEXT_MAX]; /* the device's words after the transfer */
	/* The device received the whole file and refused it with "Validation
	 * failed: <n>" (device-rejected): Device OS schedules a reset after that
	 * verdict too (system/src/system_update.cpp, system_pending_shutdown()
	 * after the transfer ends), so the caller waits for the device. */
	bool validation_failed;
};

struct ymodem_ops {
	void *ctx;
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	/* Exactly once.  err is NULL on success; otherwise a catalogue error
	 * (device-rejected with device_code/cause/device_text, timed-out,
	 * device-gone, transfer-failed, cancelled, not-flashable-here) the
	 * callee may move from.  done() must not free the sender (defer it). */
	void (*done)(void *ctx, const struct ymodem_result *res, struct error *err);
};

struct ymodem;

/* data is not copied: it must outlive the sender.  rfd and wfd may be equal. */
struct ymodem *ymodem_new(struct event_base *base, int rfd, int wfd, const uint8_t *data,
			  size_t len, const char *name, const struct ymodem_config *cfg,
			  const struct ymodem_ops *ops);
WARN_UNUSED_RESULT int ymodem_start(struct ymodem *y, struct error *err);
/* Stops at the next block boundary ('a', docs/device/ymodem.md#constants); done() reports
 * cancelled. */
void ymodem_cancel(struct ymodem *y);
enum ymodem_state ymodem_state(const struct ymodem *y);
void ymodem_free(struct ymodem *y);

/* CRC-16/XMODEM (poly 0x1021, init 0). */
uint16_t ymodem_crc16(const uint8_t *buf, size_t len);

/*
 * Decodes "Validation failed: <n>" (docs/device/ymodem.md#end-of-transfer): 0.6.1-1.5.x print a hex
 * mask of
 * failed checks, 2.0+ a negative system error.  Returns the catalogue cause
 * (ERR_WRONG_PLATFORM for -1360 or any mask with 0x10, ...), ERR_DEVICE_REJECTED when
 * the code names no single cause.  *ret_name gets the device's own name.
 */
enum error_code ymodem_validation_cause(long code, bool mask, const char **ret_name);
/* Parses the number after "Validation failed: "; false if absent. */
bool ymodem_parse_validation(const char *text, long *ret_code, bool *ret_mask);
