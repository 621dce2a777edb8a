/*
 * libFuzzer harness for the control-request engine and its reply decoders
 * (daemon/ctrl/ctrl.c, ctrl_ops.c, ctrl_error.c): a hostile device answers
 * every transfer from the input.  Service replies (flags, status, id, size,
 * result), reply payloads (the protocol buffers of module info, device id,
 * system version, device mode, the firmware update's chunk size), legacy 'P'
 * replies and USB errors (stall, timeout, gone, a transfer that never ends)
 * are all fuzzed, through one typed operation, a firmware update or a raw
 * request, and a cancel.
 *
 * Checked beyond "no crash": at most one transfer in flight, IN data never
 * longer than asked, every operation ends with exactly one done() (never a
 * hang), a failure is a catalogue error that serialises, a result's text is
 * terminated and its module count bounded, progress never runs backwards or
 * past the total, and the port is released once, after its last transfer.
 *
 * Input: a header (operation, firmware size, when to cancel), then one
 * record per transfer: a selector byte (low 3 bits: 0 = a well-formed
 * service reply with the device's id, 1 = raw bytes, 2 stall, 3 timeout,
 * 4 gone, 5 error, 6 never answered, 7 a service reply with the status in
 * the high bits), then its bytes.  An exhausted input answers "gone".
 */
#include "bytes.h"
#include "ctrl_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER	  4
#define MAX_STEPS 100000

struct dev {
	const uint8_t *in;
	size_t len, pos;
	bool pending, hung, cancelled, released;
	struct ctrl_setup setup;
	uint8_t *buf;
	uint16_t id;
};

struct op {
	unsigned calls;
	size_t progress, total;
};

static struct dev dev;

static int next_byte(void)
{
	return dev.pos < dev.len ? dev.in[dev.pos++] : -1;
}

static unsigned next16(void)
{
	int lo = next_byte(), hi = next_byte();
	return (unsigned)(lo < 0 ? 0 : lo) | (unsigned)(hi < 0 ? 0 : hi) << 8;
}

static int fuzz_submit(void *ctx, const struct ctrl_setup *s, uint8_t *buf, unsigned timeout_ms,
		       enum ctrl_io_status *status)
{
	(void)ctx;
	(void)timeout_ms;
	if (dev.pending || dev.released)
		abort(); /* one transfer at a time, none after release */
	if (s->length && !buf)
		abort();
	/* a transfer that could not even start, now and then */
	if (dev.pos < dev.len && dev.in[dev.pos] == 0xff) {
		dev.pos++;
		*status = CTRL_IO_GONE;
		return -1;
	}
	dev.pending = true;
	dev.hung = false;
	dev.cancelled = false;
	dev.setup = *s;
	dev.buf = buf;
	return 0;
}

static void fuzz_cancel(void *ctx)
{
	(void)ctx;
	if (dev.pending)
		dev.cancelled = true;
}

static void fuzz_release(void *ctx)
{
	(void)ctx;
	if (dev.released || dev.pending)
		abort();
	dev.released = true;
}

/* Answers the transfer in flight from the input (or leaves it hanging). */
static void answer(struct ctrl *c)
{
	const struct ctrl_setup *s = &dev.setup;
	enum ctrl_io_status st = CTRL_IO_OK;
	size_t actual = 0;
	bool in = s->request_type == CTRL_BMREQ_IN;
	if (dev.cancelled) {
		dev.pending = false;
		ctrl_io_complete(c, CTRL_IO_CANCELLED, 0, "LIBUSB_ERROR_INTERRUPTED");
		return;
	}
	int sel = next_byte();
	if (sel < 0)
		sel = 4;
	switch (sel & 7) {
	case 0:
	case 7:
		if (!in) {
			actual = s->length;
		} else if (s->request == CTRL_SVC_RECV || s->request == CTRL_LEGACY_BREQUEST) {
			/* payload bytes as they come */
			while (actual < s->length && dev.pos < dev.len)
				dev.buf[actual++] = dev.in[dev.pos++];
		} else if (s->length >= 16) {
			uint16_t status = (sel & 7) == 7 ? (uint16_t)(sel >> 3) : CTRL_STATUS_OK;
			if (s->request == CTRL_SVC_INIT && status == CTRL_STATUS_OK)
				dev.id = (uint16_t)(dev.id + 1 + (sel >> 7));
			uint32_t sz = next16();
			int32_t result = (int16_t)next16();
			bytes_put_le32(dev.buf, CTRL_FIELD_STATUS | CTRL_FIELD_ID |
						    CTRL_FIELD_SIZE | CTRL_FIELD_RESULT);
			bytes_put_le16(dev.buf + 4, status);
			bytes_put_le16(dev.buf + 6, dev.id);
			bytes_put_le32(dev.buf + 8, sz);
			bytes_put_le32(dev.buf + 12, (uint32_t)result);
			actual = 16;
		}
		break;
	case 1: {
		int n = next_byte();
		actual = n < 0 ? 0 : (size_t)n;
		if (actual > s->length)
			actual = s->length;
		if (in)
			for (size_t i = 0; i < actual; i++) {
				int b = next_byte();
				dev.buf[i] = (uint8_t)(b < 0 ? 0 : b);
			}
		break;
	}
	case 2:
		st = CTRL_IO_STALL;
		break;
	case 3:
		st = CTRL_IO_TIMEOUT;
		break;
	case 4:
		st = CTRL_IO_GONE;
		break;
	case 5:
		st = CTRL_IO_ERROR;
		break;
	case 6:
		dev.hung = true; /* never answered: the engine's watchdog must cancel it */
		return;
	}
	dev.pending = false;
	ctrl_io_complete(c, st, actual, st == CTRL_IO_OK ? NULL : "LIBUSB_ERROR_X");
}

static void check_err(const struct error *err)
{
	if (!err || !error_is_set(err))
		abort();
	if (!error_info(err->code))
		abort();
	json_t *j = error_to_json(err);
	if (!j)
		abort();
	char *s = json_dumps(j, 0);
	if (!s)
		abort();
	free(s);
	json_decref(j);
}

static void on_op(struct ctrl *c, const struct ctrl_result *res, struct error *err, void *ud)
{
	(void)c;
	struct op *op = ud;
	op->calls++;
	if (err) {
		check_err(err);
		return;
	}
	if (!res || memchr(res->text, 0, sizeof(res->text)) == NULL ||
	    res->n_modules > DEVICE_FACTS_MAX_MODULES || res->n_assets > DEVICE_FACTS_MAX_ASSETS)
		abort();
	for (unsigned i = 0; i < res->n_assets; i++)
		if (!memchr(res->assets[i].name, 0, sizeof(res->assets[i].name)))
			abort();
}

static void on_request(struct ctrl *c, const struct ctrl_reply *rep, struct error *err, void *ud)
{
	(void)c;
	struct op *op = ud;
	op->calls++;
	if (err)
		check_err(err);
	else if (!rep || rep->len > CTRL_REPLY_MAX || (rep->len && !rep->data))
		abort();
	else if (rep->len)
		(void)((volatile const uint8_t *)rep->data)[rep->len - 1];
}

static void on_progress(struct ctrl *c, size_t done, size_t total, void *ud)
{
	(void)c;
	struct op *op = ud;
	if (done < op->progress || done > total || total != op->total)
		abort();
	op->progress = done;
}

/* Drives the loop until the operation ends; a timer that is due is fired at
 * once (the poll interval and the watchdog stand for time passing). */
static void run(struct event_base *base, struct ctrl *c, struct op *op, unsigned cancel_at)
{
	for (unsigned i = 0; i < MAX_STEPS && op->calls == 0; i++) {
		if (i == cancel_at)
			ctrl_cancel(c);
		if (dev.pending && !dev.hung)
			answer(c);
		else if (dev.pending && dev.cancelled)
			answer(c);
		else if (evtimer_pending(c->timer, NULL))
			event_active(c->timer, EV_TIMEOUT, 1);
		else if (op->calls == 0 && !dev.pending)
			abort(); /* nothing in flight, nothing armed, not finished: a hang */
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (op->calls != 1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HEADER)
		return 0;
	memset(&dev, 0, sizeof(dev));
	dev.in = data + HEADER;
	dev.len = size - HEADER;

	struct event_base *base = event_base_new();
	struct ctrl_io io = {fuzz_submit, fuzz_cancel, fuzz_release, NULL};
	struct ctrl_options opt = {60000, data[3] & 0x80 ? "5.5.0" : "6.2.0"};
	struct ctrl *c = ctrl_new(base, io, &opt);
	if (!c)
		abort();

	struct error err;
	error_init(&err);
	struct op op = {0};
	unsigned which = data[0] % 13;
	unsigned cancel_at = data[3] & 0x40 ? data[3] & 0x3f : MAX_STEPS;
	size_t fw_len = ((size_t)data[1] | (size_t)data[2] << 8) % 20000;
	uint8_t *fw = malloc(fw_len ? fw_len : 1);
	memset(fw, 0xa5, fw_len ? fw_len : 1);
	op.total = fw_len;
	int started;
	if (which < 10)
		started = ctrl_op_start(c, (enum ctrl_op)which, on_op, &op, &err);
	else if (which == 12)
		started = ctrl_op_start(c, CTRL_OP_ASSET_INFO, on_op, &op, &err);
	else if (which == 10)
		started = ctrl_firmware_update(c, fw, fw_len, on_progress, on_op, &op, &err);
	else
		started = ctrl_request(c, data[1], fw, fw_len % 9000, on_request, &op, &err);
	if (started < 0) {
		check_err(&err);
		error_clear(&err);
	} else {
		run(base, c, &op, cancel_at);
		if (ctrl_busy(c))
			abort();
	}
	/* Freed with a transfer in flight or not: the port is released once, after it. */
	ctrl_free(c);
	for (unsigned i = 0; i < 16 && dev.pending; i++) {
		dev.cancelled = dev.cancelled || dev.hung;
		if (dev.cancelled) {
			dev.pending = false;
			ctrl_io_complete(c, CTRL_IO_CANCELLED, 0, "LIBUSB_ERROR_INTERRUPTED");
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (!dev.released)
		abort();
	free(fw);
	event_base_free(base);
	return 0;
}
