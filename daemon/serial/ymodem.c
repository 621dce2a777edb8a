#include "ymodem.h"

#include "platform.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SOH	    0x01
#define STX	    0x02
#define EOT	    0x04
#define ACK	    0x06
#define NAK	    0x15
#define CA	    0x18
#define CRC_REQUEST 'C'

#define SMALL_BLOCK 128
#define PACKET_MAX  (3 + YMODEM_BLOCK + 2)
#define READ_CHUNK  512

/* Texts the device prints (docs/device/console.md#commands, docs/device/ymodem.md#end-of-transfer,
 * docs/device/ymodem.md#cancellation). */
#define TEXT_PROMPT	    "Waiting for the binary file to be sent"
#define TEXT_CLAIM_PROMPT   "Enter 63-digit claim code"
#define TEXT_CLAIM_ANSWER   "laim code" /* "Sorry, claim code ..." / "Claim code set to" */
#define TEXT_SUCCESS	    "Downloaded file successfully!"
#define TEXT_RESTARTING	    "Restarting system"
#define TEXT_VALIDATION	    "Validation failed:"
#define TEXT_HEADER_REFUSED "The file size is higher than the allowed space memory!"
#define TEXT_SAVE_FAILED    "Failed to save chunk!"
#define TEXT_VERIFY_FAILED  "Verification failed!" /* 0.4.x-0.6.0 wording of the above */
#define TEXT_USER_ABORT	    "Aborted by user."
#define TEXT_RECEIVE_FAILED "Failed to receive the file!"
#define TEXT_NO_YMODEM	    "no longer supported"

struct ymodem {
	struct event_base *base;
	int rfd, wfd;
	const uint8_t *data;
	size_t len;
	char name[YMODEM_NAME_MAX];
	struct ymodem_config cfg;
	struct ymodem_ops ops;

	enum ymodem_state state;
	struct event *rev, *wev, *timer, *quiet;

	uint8_t out[PACKET_MAX];
	size_t out_len, out_off;

	uint32_t block;	  /* data block being sent (1-based) */
	size_t block_off; /* file offset of that block */
	size_t block_len; /* file bytes in it */
	unsigned retries; /* re-sends after silence of the current packet */
	unsigned naks;	  /* consecutive NAKs */
	bool resent_after_silence;
	unsigned claim_recoveries;
	bool claim_pending;
	bool cancel_requested;
	bool c_pending; /* a 'C' at a line start while waiting for the prompt */
	const char *cancel_phase;

	char line[YMODEM_LINE_MAX];
	size_t line_len;

	struct ymodem_result res;
	size_t text_len;
};

static const char *const state_names[] = {
    [YMODEM_IDLE] = "idle",	     [YMODEM_PROMPT] = "prompt",
    [YMODEM_HEADER] = "header",	     [YMODEM_HEADER_C] = "header",
    [YMODEM_DATA] = "data",	     [YMODEM_EOT] = "eot",
    [YMODEM_FINAL] = "validation",   [YMODEM_SUCCESS_TEXT] = "validation",
    [YMODEM_CANCEL_TEXT] = "cancel", [YMODEM_ABORTING] = "abort",
    [YMODEM_DONE] = "done",
};

const char *ymodem_state_name(enum ymodem_state s)
{
	return s <= YMODEM_DONE ? state_names[s] : "unknown";
}

void ymodem_config_default(struct ymodem_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->prompt_ms = 10000;
	cfg->header_ms = 10000;
	/* The device waits 5 s per byte and then sends 'C' (docs/device/ymodem.md#block-reception):
	 * 10 s of
	 * silence after a block means it is gone or wedged. */
	cfg->block_ms = 10000;
	/* particle-cli waits 70 s for the final reply: bootloaders and NCP
	 * firmware are applied before the device answers
	 * (docs/device/ymodem.md#end-of-transfer). */
	cfg->final_ms = 70000;
	cfg->text_ms = 1500;
	cfg->max_retries = 2;
	cfg->max_naks = 5;
	cfg->max_claim_recoveries = 3;
	cfg->start = YMODEM_START_COMMAND;
	cfg->device_nak_semantics = true;
}

uint16_t ymodem_crc16(const uint8_t *buf, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)(buf[i] << 8);
		for (int b = 0; b < 8; b++)
			crc =
			    (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

/* ---- device verdicts ---------------------------------------------------------- */

enum error_code ymodem_validation_cause(long code, bool mask, const char **ret_name)
{
	const char *name = "unknown";
	enum error_code cause = ERR_DEVICE_REJECTED;
	if (mask) {
		/* 0.6.1-1.5.x print the raw mask of failed checks (checked XOR
		 * passed, docs/device/errors.md#legacy-bitmask), not a code: the 2.0+
		 * priority of validateModules() (integrity, dependencies, range,
		 * platform; docs/device/validation.md#how-the-device-validates) was
		 * never applied to it.  When PLATFORM (0x10) is among the bits the
		 * device says in so many words that the module is for another
		 * platform, and its other failures follow from that: range and
		 * dependencies are judged against this platform's slots and its
		 * installed modules (steps 2-5 there).  So a multi-bit mask with 0x10
		 * (the Electron app on a Photon 1.5.2 prints 0x18 = range + platform)
		 * is wrong-platform.  Integrity stays first: a module whose CRC fails
		 * may have a damaged prefix, and then its platform id and addresses
		 * mean nothing. */
		if (code & MODULE_CHECK_INTEGRITY)
			name = "integrity", cause = ERR_IMAGE_CORRUPT;
		else if (code & MODULE_CHECK_PLATFORM)
			name = "platform", cause = ERR_WRONG_PLATFORM;
		else if (code & (MODULE_CHECK_DEPENDENCIES | MODULE_CHECK_DEPENDENCIES_FULL))
			name = "dependencies", cause = ERR_DEPENDENCY_UNMET;
		else if (code & MODULE_CHECK_RANGE)
			name = "range", cause = ERR_WRONG_SLOT;
		else if (code & MODULE_CHECK_PRODUCT)
			name = "product";
	} else {
		switch (code) { /* docs/device/errors.md#validation-failed-codes */
		case -1300:
			name = "OTA_MODULE_NOT_FOUND", cause = ERR_WRONG_SLOT;
			break;
		case -1310:
			name = "OTA_UNSUPPORTED_MODULE", cause = ERR_NOT_FLASHABLE_HERE;
			break;
		case -1320:
			name = "OTA_VALIDATION_FAILED";
			break;
		case -1330:
			name = "OTA_INTEGRITY_CHECK_FAILED", cause = ERR_IMAGE_CORRUPT;
			break;
		case -1340:
			name = "OTA_DEPENDENCY_CHECK_FAILED", cause = ERR_DEPENDENCY_UNMET;
			break;
		case -1350:
			name = "OTA_INVALID_ADDRESS", cause = ERR_WRONG_SLOT;
			break;
		case -1351:
			name = "OTA_INVALID_SIZE", cause = ERR_IMAGE_TOO_LARGE;
			break;
		case -1360:
			name = "OTA_INVALID_PLATFORM", cause = ERR_WRONG_PLATFORM;
			break;
		case -1370:
			name = "OTA_INVALID_FORMAT", cause = ERR_IMAGE_UNSUPPORTED;
			break;
		case -260:
			name = "NO_MEMORY";
			break;
		case -100:
			name = "UNKNOWN";
			break;
		default:
			break;
		}
	}
	if (ret_name)
		*ret_name = name;
	return cause;
}

bool ymodem_parse_validation(const char *text, long *ret_code, bool *ret_mask)
{
	const char *p = strstr(text, TEXT_VALIDATION);
	if (!p)
		return false;
	p += strlen(TEXT_VALIDATION);
	while (*p == ' ')
		p++;
	char *end;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		long v = strtol(p + 2, &end, 16);
		if (end == p + 2)
			return false;
		*ret_code = v;
		*ret_mask = true;
		return true;
	}
	long v = strtol(p, &end, 10);
	if (end == p)
		return false;
	*ret_code = v;
	*ret_mask = false;
	return true;
}

/* ---- plumbing ------------------------------------------------------------------ */

static void arm(struct event *ev, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

static void finish(struct ymodem *y, struct error *err)
{
	if (y->state == YMODEM_DONE)
		return;
	y->state = YMODEM_DONE;
	event_del(y->rev);
	event_del(y->wev);
	evtimer_del(y->timer);
	evtimer_del(y->quiet);
	y->res.ok = !err || !error_is_set(err);
	y->ops.done(y->ops.ctx, &y->res, y->res.ok ? NULL : err);
}

static void fail_transfer(struct ymodem *y, enum error_code code, const char *phase,
			  const char *fmt_reason)
{
	struct error e;
	error_init(&e);
	error_set(&e, code, NULL);
	if (code == ERR_TRANSFER_FAILED) {
		error_set(&e, code,
			  "the transfer broke off at block %u (%llu bytes acknowledged): %s",
			  y->block, (unsigned long long)y->res.bytes_sent, fmt_reason);
		error_detail_str(&e, "reason", fmt_reason);
	} else if (code == ERR_DEVICE_GONE) {
		error_set(&e, code,
			  "the device disappeared during the %s phase, at block %u (%llu bytes "
			  "acknowledged)",
			  phase, y->block, (unsigned long long)y->res.bytes_sent);
	}
	error_detail_str(&e, "phase", phase);
	error_detail_int(&e, "block", y->block);
	error_detail_int(&e, "bytes_sent", (long long)y->res.bytes_sent);
	finish(y, &e);
	error_clear(&e);
}

static void fail_timeout(struct ymodem *y, const char *phase, unsigned ms)
{
	struct error e;
	error_init(&e);
	error_set(&e, ERR_TIMED_OUT,
		  "the device did not answer within %u ms in the %s phase (block %u, %llu bytes "
		  "acknowledged)",
		  ms, phase, y->block, (unsigned long long)y->res.bytes_sent);
	if (strcmp(phase, "prompt") == 0)
		error_hint(&e, "the device did not show the YMODEM prompt: is it in listening mode "
			       "(blinking blue)?");
	error_detail_str(&e, "phase", phase);
	error_detail_int(&e, "timeout_ms", ms);
	error_detail_int(&e, "block", y->block);
	error_detail_int(&e, "bytes_sent", (long long)y->res.bytes_sent);
	finish(y, &e);
	error_clear(&e);
}

static void try_write(struct ymodem *y)
{
	while (y->out_off < y->out_len) {
		ssize_t n = write(y->wfd, y->out + y->out_off, y->out_len - y->out_off);
		if (n > 0) {
			y->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(y->wev, NULL);
			return;
		}
		fail_transfer(y, ERR_DEVICE_GONE, ymodem_state_name(y->state), NULL);
		return;
	}
	y->out_len = y->out_off = 0;
}

static void send_bytes(struct ymodem *y, const uint8_t *buf, size_t len)
{
	/* Only one packet is ever outstanding: the protocol is stop-and-wait. */
	if (y->out_len + len > sizeof(y->out))
		y->out_len = y->out_off = 0;
	memcpy(y->out + y->out_len, buf, len);
	y->out_len += len;
	try_write(y);
}

static void send_packet(struct ymodem *y, uint8_t seq, const uint8_t *payload, size_t n,
			size_t block_size)
{
	uint8_t pkt[PACKET_MAX];
	pkt[0] = block_size == YMODEM_BLOCK ? STX : SOH;
	pkt[1] = seq;
	pkt[2] = (uint8_t)~seq;
	/* zero padding, as particle-cli (docs/device/ymodem.md#happy-path) */
	memset(pkt + 3, 0, block_size);
	if (n)
		memcpy(pkt + 3, payload, n);
	uint16_t crc = ymodem_crc16(pkt + 3, block_size);
	pkt[3 + block_size] = (uint8_t)(crc >> 8);
	pkt[4 + block_size] = (uint8_t)crc;
	send_bytes(y, pkt, block_size + 5);
}

static void send_header(struct ymodem *y)
{
	uint8_t hdr[SMALL_BLOCK];
	memset(hdr, 0, sizeof(hdr));
	size_t nl = strlen(y->name);
	memcpy(hdr, y->name, nl);
	/* "name\0size " (docs/device/ymodem.md#happy-path); the device reads the size up to the
	 * space */
	snprintf((char *)hdr + nl + 1, sizeof(hdr) - nl - 1, "%zu ", y->len);
	send_packet(y, 0, hdr, sizeof(hdr), SMALL_BLOCK);
	y->state = YMODEM_HEADER;
	arm(y->timer, y->cfg.header_ms);
}

static void send_block(struct ymodem *y)
{
	size_t left = y->len - y->block_off;
	y->block_len = left < YMODEM_BLOCK ? left : YMODEM_BLOCK;
	/* the tail goes in a 128-byte block when it fits: less padding */
	size_t size = y->block_len <= SMALL_BLOCK ? SMALL_BLOCK : YMODEM_BLOCK;
	send_packet(y, (uint8_t)(y->block & 0xff), y->data + y->block_off, y->block_len, size);
	y->state = YMODEM_DATA;
	arm(y->timer, y->cfg.block_ms);
}

static void send_eot(struct ymodem *y)
{
	uint8_t b = EOT;
	send_bytes(y, &b, 1);
	y->state = YMODEM_EOT;
	arm(y->timer, y->cfg.block_ms);
}

static void send_final(struct ymodem *y)
{
	send_packet(y, 0, NULL, 0, SMALL_BLOCK);
	y->state = YMODEM_FINAL;
	y->text_len = 0;
	y->res.device_text[0] = '\0';
	arm(y->timer, y->cfg.final_ms);
}

static void send_command(struct ymodem *y, char c)
{
	uint8_t b = (uint8_t)c;
	send_bytes(y, &b, 1);
}

static void next_after_ack(struct ymodem *y)
{
	y->retries = 0;
	y->naks = 0;
	y->resent_after_silence = false;
	if (y->state == YMODEM_DATA) {
		y->res.bytes_sent += y->block_len;
		y->block_off += y->block_len;
		if (y->ops.progress)
			y->ops.progress(y->ops.ctx, y->res.bytes_sent, y->len);
	}
	if (y->state == YMODEM_EOT) {
		/* docs/device/ymodem.md#block-reception: the device ACKs EOT at once and then waits
		 * for the next
		 * header without sending 'C': send the empty header now.  Spec
		 * receivers ask with 'C' (and drop what came before it). */
		if (y->cfg.start == YMODEM_START_WAIT_C) {
			y->state = YMODEM_FINAL;
			arm(y->timer, y->cfg.header_ms);
		} else {
			send_final(y);
		}
		return;
	}
	if (y->cancel_requested) {
		/* docs/device/ymodem.md#constants: 'a' at a block boundary aborts the device's
		 * receiver */
		y->cancel_phase = ymodem_state_name(y->state);
		send_command(y, 'a');
		y->state = YMODEM_ABORTING;
		y->text_len = 0;
		arm(y->timer, y->cfg.header_ms);
		return;
	}
	if (y->block_off < y->len) {
		y->block++;
		send_block(y);
	} else {
		send_eot(y);
	}
}

/* ---- text after a verdict ------------------------------------------------------ */

static void text_add(struct ymodem *y, uint8_t c)
{
	if (c == CA || c == '\0')
		return;
	/* The device's words are ASCII; anything else (line noise, a terminal
	 * escape) is shown as '?' in messages, logs and JSON. */
	if ((c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c >= 0x7f)
		c = '?';
	if (y->text_len + 1 < sizeof(y->res.device_text)) {
		y->res.device_text[y->text_len++] = (char)c;
		y->res.device_text[y->text_len] = '\0';
	}
}

static void trim_text(struct ymodem *y)
{
	char *t = y->res.device_text;
	size_t n = strlen(t);
	while (n && (t[n - 1] == '\r' || t[n - 1] == '\n' || t[n - 1] == ' '))
		t[--n] = '\0';
	size_t s = 0;
	while (t[s] == '\r' || t[s] == '\n' || t[s] == ' ')
		s++;
	memmove(t, t + s, n - s + 1);
}

static bool text_complete(const struct ymodem *y)
{
	const char *t = y->res.device_text;
	const char *known[] = {TEXT_HEADER_REFUSED, TEXT_SAVE_FAILED,	 TEXT_VERIFY_FAILED,
			       TEXT_USER_ABORT,	    TEXT_RECEIVE_FAILED, TEXT_NO_YMODEM};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strstr(t, known[i]))
			return strchr(strstr(t, known[i]), '\n') != NULL;
	const char *v = strstr(t, TEXT_VALIDATION);
	return v && strchr(v, '\n');
}

static void verdict_from_text(struct ymodem *y, bool gone)
{
	struct error e;
	error_init(&e);
	trim_text(y);
	const char *t = y->res.device_text;
	long code;
	bool mask;
	if (ymodem_parse_validation(t, &code, &mask)) {
		const char *cname;
		enum error_code cause = ymodem_validation_cause(code, mask, &cname);
		if (mask) {
			char names[96];
			module_checks_text((unsigned)code, names, sizeof(names));
			error_set(&e, ERR_DEVICE_REJECTED,
				  "the device refused the firmware: \"%s\" (failed checks: %s)", t,
				  names);
		} else
			error_set(&e, ERR_DEVICE_REJECTED,
				  "the device refused the firmware: \"%s\" (%s)", t, cname);
		if (cause != ERR_DEVICE_REJECTED)
			error_hint(&e, "%s", error_info(cause)->hint);
		error_detail_int(&e, "device_code", code);
		error_detail_str(&e, "cause", error_id(cause));
		error_detail_str(&e, "phase", "validation");
		y->res.validation_failed = true;
	} else if (strstr(t, TEXT_NO_YMODEM)) {
		error_set(&e, ERR_NOT_FLASHABLE_HERE,
			  "the device runs Device OS 6 or later, which has no YMODEM: \"%s\"", t);
		error_hint(&e, "flash it in DFU mode");
		error_detail_str(&e, "transport", "serial");
		error_detail_str(&e, "reason", "Device OS 6.0.0 removed YMODEM flashing");
	} else if (strstr(t, TEXT_HEADER_REFUSED)) {
		/* docs/device/ymodem.md#what-is-checked-when: one text for four causes; never claim
		 * it is the size alone */
		error_set(&e, ERR_DEVICE_REJECTED,
			  "the device refused the transfer at the header (\"%s\"); on Device OS "
			  "3.0-5.x this text covers: the file (%zu bytes) is larger than its OTA "
			  "region, the application disabled updates, an earlier transfer left an "
			  "update in progress, or erasing the OTA region failed",
			  TEXT_HEADER_REFUSED, y->len);
		error_hint(&e, "reset the device (an unfinished earlier transfer blocks new ones) "
			       "and make sure the application allows updates; check the file size");
		error_detail_str(&e, "phase", "header");
	} else if (strstr(t, TEXT_SAVE_FAILED) || strstr(t, TEXT_VERIFY_FAILED)) {
		error_set(&e, ERR_DEVICE_REJECTED,
			  "the device could not store block %u (\"%s\"): the module runs past its "
			  "OTA region (Device OS before 3.0 checks the size only here) or the "
			  "flash write failed",
			  y->block, t);
		error_detail_str(&e, "phase", "data");
	} else if (strstr(t, TEXT_USER_ABORT) && y->state == YMODEM_ABORTING) {
		error_set(&e, ERR_CANCELLED, "the transfer was cancelled at block %u", y->block);
		error_detail_str(&e, "phase", y->cancel_phase ? y->cancel_phase : "data");
		error_detail_str(&e, "device_state", "listening");
	} else if (strstr(t, TEXT_RECEIVE_FAILED)) {
		error_set(&e, ERR_TRANSFER_FAILED,
			  "the device gave up receiving at block %u (\"%s\"): it saw 6 bad or "
			  "missing packets in a row",
			  y->block, t);
		error_detail_str(&e, "reason", "device gave up receiving");
		error_detail_str(&e, "phase", "data");
	} else if (y->state == YMODEM_ABORTING) {
		error_set(&e, ERR_CANCELLED, "the transfer was cancelled at block %u", y->block);
		error_detail_str(&e, "phase", y->cancel_phase ? y->cancel_phase : "data");
	} else {
		error_set(&e, ERR_TRANSFER_FAILED,
			  "the device cancelled the transfer at block %u%s%s%s", y->block,
			  t[0] ? " (\"" : "", t, t[0] ? "\")" : "");
		error_detail_str(&e, "reason",
				 gone ? "device cancelled and disappeared" : "device cancelled");
		error_detail_str(&e, "phase", y->cancel_phase ? y->cancel_phase : "data");
	}
	if (t[0] && error_detail_type(e.code, "device_text"))
		error_detail_str(&e, "device_text", t);
	if (error_detail_type(e.code, "block")) {
		error_detail_int(&e, "block", y->block);
		error_detail_int(&e, "bytes_sent", (long long)y->res.bytes_sent);
	}
	finish(y, &e);
	error_clear(&e);
}

static void enter_cancel_text(struct ymodem *y)
{
	y->cancel_phase = ymodem_state_name(y->state);
	y->state = YMODEM_CANCEL_TEXT;
	y->text_len = 0;
	y->res.device_text[0] = '\0';
	arm(y->timer, y->cfg.text_ms);
	arm(y->quiet, y->cfg.text_ms);
}

/* ---- per-state input ------------------------------------------------------------- */

static void prompt_line_done(struct ymodem *y)
{
	y->line[y->line_len] = '\0';
	if (strstr(y->line, TEXT_PROMPT)) {
		evtimer_del(y->quiet);
		y->c_pending = false;
		send_header(y);
	} else if (y->claim_pending && strstr(y->line, TEXT_CLAIM_ANSWER)) {
		/* the console discarded its input after the claim line: ask again */
		y->claim_pending = false;
		send_command(y, 'f');
	}
	y->line_len = 0;
}

static void on_prompt_byte(struct ymodem *y, uint8_t c)
{
	if (c == CRC_REQUEST && y->cfg.start == YMODEM_START_WAIT_C) {
		send_header(y);
		return;
	}
	if (c == CRC_REQUEST && strspn(y->line, "C") == y->line_len) {
		/* A receiver asking for CRC blocks (also the device after 5 s of
		 * silence); confirmed when no text follows it ("Connecting..."). */
		y->c_pending = true;
		arm(y->quiet, 200);
	} else if (y->c_pending) {
		y->c_pending = false;
		evtimer_del(y->quiet);
	}
	if (c == '\n') {
		prompt_line_done(y);
		return;
	}
	if (c == '\r')
		return;
	if (y->line_len + 1 < sizeof(y->line))
		y->line[y->line_len++] = (char)c;
	y->line[y->line_len] = '\0';
	/* docs/device/console.md#modemmanager: a ModemManager probe's 'C' opened the claim-code
	 * prompt, which
	 * swallows input until CR/LF: end it, then ask for 'f' again. */
	if (strstr(y->line, TEXT_CLAIM_PROMPT) && !y->claim_pending) {
		if (y->claim_recoveries++ >= y->cfg.max_claim_recoveries) {
			fail_transfer(y, ERR_TRANSFER_FAILED, "prompt",
				      "the console kept opening the claim-code prompt (another "
				      "program, e.g. ModemManager, writes to the port)");
			return;
		}
		y->claim_pending = true;
		y->line_len = 0;
		send_command(y, '\r');
	}
}

static void on_reply(struct ymodem *y, uint8_t c)
{
	switch (c) {
	case ACK:
		if (y->state == YMODEM_HEADER) {
			y->state = YMODEM_HEADER_C;
			arm(y->timer, y->cfg.header_ms);
		} else {
			next_after_ack(y);
		}
		return;
	case NAK:
		y->naks++;
		if (y->state == YMODEM_DATA && y->cfg.device_nak_semantics &&
		    y->resent_after_silence) {
			/* docs/device/ymodem.md#block-reception: the device NAKs a duplicate of the
			 * block it stored;
			 * only its ACK was lost. */
			next_after_ack(y);
			return;
		}
		if (y->naks >= y->cfg.max_naks) {
			fail_transfer(y, ERR_TRANSFER_FAILED, ymodem_state_name(y->state),
				      "NAK storm: the receiver refused the same packet repeatedly");
			return;
		}
		break; /* re-send */
	case CA:
		enter_cancel_text(y);
		return;
	case CRC_REQUEST:
		/* spec receivers send 'C' before the header and to ask for the
		 * next header; the device sends it on a garbled or missing packet
		 * (docs/device/ymodem.md#block-reception) */
		if (y->state != YMODEM_DATA && y->state != YMODEM_FINAL)
			return;
		if (++y->naks >= y->cfg.max_naks * 2) {
			fail_transfer(y, ERR_TRANSFER_FAILED, ymodem_state_name(y->state),
				      "the receiver keeps asking for the packet again");
			return;
		}
		break;
	default:
		return; /* stray output between packets is ignored */
	}
	/* re-send the current packet */
	if (y->state == YMODEM_HEADER)
		send_header(y);
	else if (y->state == YMODEM_DATA)
		send_block(y);
	else if (y->state == YMODEM_EOT)
		send_eot(y);
	else if (y->state == YMODEM_FINAL)
		send_final(y);
}

static void on_byte(struct ymodem *y, uint8_t c)
{
	switch (y->state) {
	case YMODEM_PROMPT:
		on_prompt_byte(y, c);
		break;
	case YMODEM_HEADER:
	case YMODEM_DATA:
	case YMODEM_EOT:
	case YMODEM_FINAL:
		on_reply(y, c);
		break;
	case YMODEM_HEADER_C:
		if (c == CRC_REQUEST) {
			y->block = 1;
			y->block_off = 0;
			y->retries = y->naks = 0;
			if (y->cancel_requested)
				next_after_ack(y);
			else if (y->len)
				send_block(y);
			else
				send_eot(y);
		} else if (c == CA) {
			enter_cancel_text(y);
		}
		break;
	case YMODEM_SUCCESS_TEXT:
		text_add(y, c);
		arm(y->quiet, y->cfg.text_ms);
		if (strstr(y->res.device_text, TEXT_RESTARTING) &&
		    strchr(strstr(y->res.device_text, TEXT_RESTARTING), '\n')) {
			trim_text(y);
			finish(y, NULL);
		}
		break;
	case YMODEM_CANCEL_TEXT:
	case YMODEM_ABORTING:
		text_add(y, c);
		arm(y->quiet, y->cfg.text_ms);
		if (text_complete(y))
			verdict_from_text(y, false);
		break;
	case YMODEM_IDLE:
	case YMODEM_DONE:
		break;
	}
}

static void on_final_ack(struct ymodem *y)
{
	y->state = YMODEM_SUCCESS_TEXT;
	y->text_len = 0;
	y->res.device_text[0] = '\0';
	arm(y->timer, y->cfg.text_ms * 4);
	arm(y->quiet, y->cfg.text_ms);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct ymodem *y = arg;
	(void)what;
	uint8_t buf[READ_CHUNK];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		/* EOF or EIO: the port is gone (unplug, or the device reset) */
		if (y->state == YMODEM_SUCCESS_TEXT) {
			trim_text(y);
			finish(y, NULL);
		} else if (y->state == YMODEM_CANCEL_TEXT || y->state == YMODEM_ABORTING) {
			verdict_from_text(y, true);
		} else {
			fail_transfer(y, ERR_DEVICE_GONE, ymodem_state_name(y->state), NULL);
		}
		return;
	}
	for (ssize_t i = 0; i < n && y->state != YMODEM_DONE; i++) {
		if (y->state == YMODEM_FINAL && buf[i] == ACK) {
			on_final_ack(y);
			continue;
		}
		on_byte(y, buf[i]);
	}
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	try_write(arg);
}

static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
	struct ymodem *y = arg;
	(void)fd;
	(void)what;
	if (y->state == YMODEM_PROMPT && y->c_pending) {
		y->c_pending = false;
		send_header(y);
	} else if (y->state == YMODEM_SUCCESS_TEXT) {
		trim_text(y);
		finish(y, NULL);
	} else if (y->state == YMODEM_CANCEL_TEXT || y->state == YMODEM_ABORTING) {
		verdict_from_text(y, false);
	}
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct ymodem *y = arg;
	(void)fd;
	(void)what;
	switch (y->state) {
	case YMODEM_PROMPT:
		fail_timeout(y, "prompt", y->cfg.prompt_ms);
		return;
	case YMODEM_HEADER:
	case YMODEM_DATA:
	case YMODEM_EOT:
		if (y->retries++ < y->cfg.max_retries) {
			y->resent_after_silence = true;
			if (y->state == YMODEM_HEADER)
				send_header(y);
			else if (y->state == YMODEM_DATA)
				send_block(y);
			else
				send_eot(y);
			return;
		}
		fail_timeout(y, ymodem_state_name(y->state),
			     y->state == YMODEM_HEADER ? y->cfg.header_ms : y->cfg.block_ms);
		return;
	case YMODEM_HEADER_C:
		fail_timeout(y, "header", y->cfg.header_ms);
		return;
	case YMODEM_FINAL:
		fail_timeout(y, "validation", y->cfg.final_ms);
		return;
	case YMODEM_SUCCESS_TEXT:
		trim_text(y);
		finish(y, NULL);
		return;
	case YMODEM_CANCEL_TEXT:
	case YMODEM_ABORTING:
		verdict_from_text(y, false);
		return;
	case YMODEM_IDLE:
	case YMODEM_DONE:
		return;
	}
}

/* ---- public ------------------------------------------------------------------------ */

struct ymodem *ymodem_new(struct event_base *base, int rfd, int wfd, const uint8_t *data,
			  size_t len, const char *name, const struct ymodem_config *cfg,
			  const struct ymodem_ops *ops)
{
	struct ymodem *y = calloc(1, sizeof(*y));
	if (!y)
		return NULL;
	y->base = base;
	y->rfd = rfd;
	y->wfd = wfd;
	y->data = data;
	y->len = len;
	/* header names must not contain NUL, space or '/' */
	size_t j = 0;
	for (const char *p = name ? name : "binary"; *p && j + 1 < sizeof(y->name); p++)
		y->name[j++] = (*p == ' ' || *p == '/') ? '_' : *p;
	if (!j)
		y->name[j++] = 'x';
	y->name[j] = '\0';
	if (cfg)
		y->cfg = *cfg;
	else
		ymodem_config_default(&y->cfg);
	y->ops = *ops;
	y->rev = event_new(base, rfd, EV_READ | EV_PERSIST, on_read, y);
	y->wev = event_new(base, wfd, EV_WRITE, on_write, y);
	y->timer = evtimer_new(base, on_timeout, y);
	y->quiet = evtimer_new(base, on_quiet, y);
	if (!y->rev || !y->wev || !y->timer || !y->quiet) {
		ymodem_free(y);
		return NULL;
	}
	return y;
}

int ymodem_start(struct ymodem *y, struct error *err)
{
	if (y->state != YMODEM_IDLE)
		return error_set(err, ERR_INTERNAL, "YMODEM sender started twice");
	if (event_add(y->rev, NULL) < 0)
		return error_set(err, ERR_INTERNAL, "cannot watch the port");
	y->state = YMODEM_PROMPT;
	y->res.validation_failed = false;
	arm(y->timer, y->cfg.prompt_ms);
	if (y->cfg.start == YMODEM_START_COMMAND)
		send_command(y, 'f');
	return 0;
}

void ymodem_cancel(struct ymodem *y)
{
	if (!y || y->state == YMODEM_DONE)
		return;
	y->cancel_requested = true;
	if (y->state == YMODEM_PROMPT || y->state == YMODEM_IDLE) {
		/* nothing sent yet; 'a' also ends a receiver that already started */
		if (y->state == YMODEM_PROMPT)
			send_command(y, 'a');
		struct error e;
		error_init(&e);
		error_set(&e, ERR_CANCELLED, "the transfer was cancelled before the first block");
		error_detail_str(&e, "phase", "prompt");
		finish(y, &e);
		error_clear(&e);
	}
	/* otherwise 'a' goes out when the current packet is answered (block boundary);
	 * once the empty header is sent the device is validating: let it finish */
}

enum ymodem_state ymodem_state(const struct ymodem *y)
{
	return y->state;
}

void ymodem_free(struct ymodem *y)
{
	if (!y)
		return;
	if (y->rev)
		event_free(y->rev);
	if (y->wev)
		event_free(y->wev);
	if (y->timer)
		event_free(y->timer);
	if (y->quiet)
		event_free(y->quiet);
	free(y);
}
