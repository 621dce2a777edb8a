/*
 * libFuzzer harness for DFU status and descriptor handling (daemon/dfu/dfuse.c):
 * the DfuSe state machine talks to a hostile device whose every answer comes
 * from the input.  The functional descriptor, the string descriptors (serial,
 * memory maps, the 0xFA protection string), GETSTATUS replies (status, state,
 * bwPollTimeout, short replies), UPLOAD data and USB errors (stall, timeout,
 * gone) are all fuzzed, through open, upload, erase, download and leave.
 *
 * Checked beyond "no crash": at most one request in flight, every operation
 * ends with exactly one done() (never a hang: something is always in flight,
 * armed or finished) and leaves no timer armed, a failure is a catalogue error
 * that serialises, and no erase or write goes outside what the device's own map
 * allows.
 *
 * Time is virtual: nothing sleeps.  When nothing is in flight the armed timer
 * due first (bwPollTimeout, as the input asked for it) fires at once.  Header
 * byte 21 (bits 1-7 = k, 0 = never) says when the device has been busy too long:
 * from the k-th timer fired on, the last-due armed timer (a busy wait's deadline)
 * fires first, also while a GETSTATUS is in flight, so that a pause longer than
 * what is left of the wait, and the time-out itself, are reached.
 *
 * Input: a header (which operations, the functional descriptor, addresses and
 * lengths), then one record per request: a selector byte, 0 = answer as a
 * well-behaved Particle bootloader would, else a raw answer (USB status,
 * length, bytes) or an ASCII string sent as a string descriptor.
 */
#include "../event_timers.h"
#include "bytes.h"
#include "dfuse.h"

#include <libusb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER	  24
#define MAX_STEPS 200000

static const char *const good_strings[] = {
    [3] = "e00fce68aabbccddeeff0011",
    [4] = "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg",
    [5] = "@DCT Flash   /0x00000000/01*016Kg",
    [6] = "@Internal Flash   /0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka",
    [7] = "@External Flash   /0x80000000/1024*004Kg",
};

struct dev {
	const struct dfuse *s;
	int alt;	  /* the alt setting selected by SET_INTERFACE */
	uint32_t pointer; /* the DfuSe address pointer (SET_ADDRESS) */
	const uint8_t *in;
	size_t len, pos;
	struct dfu_setup setup;
	bool pending;
	uint8_t state; /* for well-behaved GETSTATUS answers */
	bool busy_once;
	unsigned late_after; /* header byte 21 >> 1: time runs out from this timer on */
	unsigned fired;	     /* timers fired so far */
};

struct op {
	bool done;
	int result;
	unsigned calls;
};

static struct dev dev;

static int next_byte(void)
{
	return dev.pos < dev.len ? dev.in[dev.pos++] : -1;
}

/* A DfuSe ERASE must name the start of an erasable sector of the selected
 * alt setting's map, as the device described it. */
static void check_erase(uint32_t address)
{
	const struct dfuse_info *info = dfuse_get_info(dev.s);
	if (dev.alt < 0 || dev.alt >= DFUSE_MAX_ALTS || !info->map_valid[dev.alt])
		abort();
	const struct dfuse_segment *seg = dfuse_map_find(&info->maps[dev.alt], address);
	if (!seg || !(seg->attrs & DFUSE_MEM_ERASABLE) ||
	    (address - seg->start) % seg->sector_size != 0)
		abort();
}

/* Data goes only where the selected alt setting's map says writable
 * (DfuSe: address = (wValue - 2) * wTransferSize + the address pointer). */
static void check_write(uint64_t address, uint16_t len)
{
	const struct dfuse_info *info = dfuse_get_info(dev.s);
	if (dev.alt < 0 || dev.alt >= DFUSE_MAX_ALTS || !info->map_valid[dev.alt] ||
	    address + len > (uint64_t)UINT32_MAX + 1 ||
	    !dfuse_map_range_has(&info->maps[dev.alt], (uint32_t)address, len, DFUSE_MEM_WRITABLE,
				 NULL))
		abort();
}

static int fuzz_control(void *ctx, const struct dfu_setup *setup, const uint8_t *out,
			unsigned timeout_ms)
{
	(void)ctx;
	(void)timeout_ms;
	if (dev.pending)
		abort(); /* one request at a time */
	dev.setup = *setup;
	dev.pending = true;
	if (setup->request_type == 0x01 && setup->request == 0x0b)
		dev.alt = setup->value;
	if (setup->request_type == 0x21 && setup->request == DFU_DNLOAD) {
		if (setup->length && !out)
			abort();
		if (setup->length > DFUSE_MAX_TRANSFER)
			abort();
		uint32_t a = setup->length == 5
				 ? (out[1] | out[2] << 8 | out[3] << 16 | (uint32_t)out[4] << 24)
				 : 0;
		if (setup->value == 0 && setup->length == 5 && out[0] == DFUSE_CMD_ERASE)
			check_erase(a);
		if (setup->value == 0 && setup->length == 5 && out[0] == DFUSE_CMD_SET_ADDRESS)
			dev.pointer = a;
		if (setup->value >= 2 && setup->length > 0)
			check_write(dev.pointer +
					(uint64_t)(setup->value - 2) * dfuse_transfer_size(dev.s),
				    setup->length);
		dev.state = DFU_STATE_DNLOAD_SYNC;
	}
	return 0;
}

static void answer_string(struct dfuse *s, const char *str, uint16_t maxlen)
{
	uint8_t b[256];
	size_t n = strlen(str);
	if (n > 126)
		n = 126;
	b[0] = (uint8_t)(2 + 2 * n);
	b[1] = 3;
	for (size_t i = 0; i < n; i++) {
		b[2 + 2 * i] = (uint8_t)str[i];
		b[3 + 2 * i] = 0;
	}
	dfuse_transfer_done(s, 0, b, b[0] < maxlen ? b[0] : maxlen);
}

/* A well-behaved answer (the Particle bootloader as the unit tests' fake). */
static void answer_good(struct dfuse *s)
{
	const struct dfu_setup *q = &dev.setup;
	uint8_t b[DFUSE_MAX_TRANSFER];
	if (q->request_type == 0x80 && q->request == 6) {
		unsigned i = q->value & 0xff;
		if (i < sizeof(good_strings) / sizeof(good_strings[0]) && good_strings[i])
			answer_string(s, good_strings[i], q->length);
		else
			dfuse_transfer_done(s, LIBUSB_ERROR_PIPE, NULL, 0);
		return;
	}
	if (q->request_type == 0xa1 && q->request == DFU_GETSTATUS) {
		uint8_t st[6] = {0, 0, 0, 0, DFU_STATE_IDLE, 0};
		if (dev.state == DFU_STATE_DNLOAD_SYNC) {
			st[4] = dev.busy_once ? DFU_STATE_DNLOAD_IDLE : DFU_STATE_DNBUSY;
			dev.busy_once = !dev.busy_once;
			if (!dev.busy_once)
				dev.state = DFU_STATE_DNLOAD_IDLE;
		} else {
			st[4] = dev.state ? dev.state : DFU_STATE_IDLE;
		}
		dfuse_transfer_done(s, 0, st, q->length < 6 ? q->length : 6);
		return;
	}
	if (q->request_type == 0xa1 && q->request == DFU_UPLOAD) {
		size_t n = q->length < sizeof(b) ? q->length : sizeof(b);
		memset(b, 0xff, n);
		dfuse_transfer_done(s, 0, b, n);
		return;
	}
	if (q->request == DFU_ABORT || q->request == DFU_CLRSTATUS)
		dev.state = DFU_STATE_IDLE;
	dfuse_transfer_done(s, 0, NULL, 0);
}

static void answer(struct dfuse *s)
{
	dev.pending = false;
	int sel = next_byte();
	if (sel < 0) {
		dfuse_transfer_done(s, LIBUSB_ERROR_NO_DEVICE, NULL,
				    0); /* input spent: unplugged */
		return;
	}
	if (sel == 0 || sel >= 0xc0) {
		answer_good(s);
		return;
	}
	if (sel >= 0x80) {
		/* An ASCII string as a string descriptor (memory maps, serial, 0xFA). */
		char str[128];
		int n = next_byte();
		size_t k = 0;
		for (int i = 0; i < (n < 0 ? 0 : n % 127); i++) {
			int c = next_byte();
			if (c < 0)
				break;
			str[k++] = (char)c;
		}
		str[k] = '\0';
		answer_string(s, str, dev.setup.length);
		return;
	}
	static const int status[] = {0,
				     LIBUSB_ERROR_PIPE,
				     LIBUSB_ERROR_TIMEOUT,
				     LIBUSB_ERROR_NO_DEVICE,
				     LIBUSB_ERROR_IO,
				     LIBUSB_ERROR_OVERFLOW,
				     LIBUSB_ERROR_ACCESS,
				     0};
	int usb_status = status[sel & 7];
	uint8_t b[DFUSE_MAX_TRANSFER];
	int n = next_byte();
	size_t len = n < 0 ? 0 : (size_t)n;
	if (sel & 0x40)
		len = len * 16 + 6; /* long upload answers */
	if (len > dev.setup.length)
		len = dev.setup.length; /* a device cannot send more than wLength */
	if (len > sizeof(b))
		len = sizeof(b);
	for (size_t i = 0; i < len; i++) {
		int c = next_byte();
		b[i] = c < 0 ? 0 : (uint8_t)c;
	}
	dfuse_transfer_done(s, usb_status, (dev.setup.request_type & 0x80) ? b : NULL,
			    (dev.setup.request_type & 0x80) ? len : 0);
}

static void on_done(struct dfuse *s, int result, struct error *err, void *userdata)
{
	(void)s;
	struct op *op = userdata;
	op->calls++;
	op->done = true;
	op->result = result;
	if (result < 0) {
		if (!err || !error_is_set(err) || !err->message[0])
			abort();
		json_t *j = error_to_json(err);
		if (!j)
			abort();
		json_decref(j);
	} else if (err && error_is_set(err)) {
		abort();
	}
}

static bool time_ran_out(void)
{
	return dev.late_after && dev.fired + 1 >= dev.late_after;
}

/* Time passes: an armed timer comes due now (no sleep).  The one due first, or once
 * time ran out the one due last.  False when none is armed. */
static bool fire_timer(struct event_base *base, bool last)
{
	struct armed_timers t;
	if (!armed_timers(base, &t))
		return false;
	event_active(last ? t.last : t.first, EV_TIMEOUT, 1);
	dev.fired++;
	event_base_loop(base, EVLOOP_NONBLOCK);
	return true;
}

static int run(struct event_base *base, struct dfuse *s, struct op *op)
{
	struct armed_timers t;
	for (unsigned i = 0; i < MAX_STEPS; i++) {
		if (op->done) {
			/* done() comes once; let the loop settle and check it stays once and
			 * leaves nothing armed (a busy wait's deadline ends with the wait). */
			event_base_loop(base, EVLOOP_NONBLOCK);
			if (op->calls != 1 || dev.pending || armed_timers(base, &t))
				abort();
			return op->result;
		}
		if (dev.pending) {
			/* the device takes long to answer: a deadline may pass meanwhile */
			if (time_ran_out() && fire_timer(base, true))
				continue;
			answer(s);
			continue;
		}
		/* the deferred done(), a 0 ms bwPollTimeout */
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (op->done || dev.pending)
			continue;
		/* Nothing in flight, nothing to run: a timer must be armed, or the
		 * operation hangs. */
		if (!fire_timer(base, time_ran_out()))
			abort();
	}
	abort(); /* an operation that never ends */
}

/* What open() learned stays inside its buffers and the address space. */
static void check_info(const struct dfuse *s)
{
	const struct dfuse_info *info = dfuse_get_info(s);
	if (!memchr(info->serial, '\0', sizeof(info->serial)) ||
	    !memchr(info->protection, '\0', sizeof(info->protection)))
		abort();
	for (unsigned a = 0; a < DFUSE_MAX_ALTS; a++) {
		if (!info->map_valid[a])
			continue;
		const struct dfuse_map *m = &info->maps[a];
		if (m->n_segments == 0 || m->n_segments > DFUSE_MAP_MAX_SEGMENTS)
			abort();
		for (unsigned i = 0; i < m->n_segments; i++)
			if (dfuse_segment_end(&m->segments[i]) > (uint64_t)UINT32_MAX + 1)
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < HEADER)
		return 0;
	const uint8_t *h = data;
	memset(&dev, 0, sizeof(dev));
	dev.in = data + HEADER;
	dev.len = size - HEADER;

	struct dfu_descriptors desc;
	memset(&desc, 0, sizeof(desc));
	desc.vid = 0x2b04;
	desc.pid = 0xd00c;
	desc.i_serial = h[1] & 1 ? 3 : 0;
	desc.n_alts = (uint8_t)(h[1] >> 1) % (DFUSE_MAX_ALTS + 2); /* > DFUSE_MAX_ALTS is clamped */
	for (unsigned a = 0; a < DFUSE_MAX_ALTS; a++)
		desc.alt_string[a] = (uint8_t)(4 + (a + (h[2] & 3)) % 4);
	/* The functional descriptor as it comes in the interface's extra bytes. */
	dfu_descriptors_parse_functional(&desc, h + 3, h[0] % 10);

	struct event_base *base = event_base_new();
	struct dfuse *s = dfuse_new(base, &(struct dfu_io){fuzz_control, NULL}, &desc);
	if (!s)
		abort();
	dev.s = s;
	dev.alt = -1;
	dev.late_after = h[21] >> 1;
	if (h[2] & 0x80)
		dfuse_set_address_per_chunk(s, true);
	uint16_t ts = dfuse_transfer_size(s);
	if (ts == 0 || ts > DFUSE_MAX_TRANSFER)
		abort();

	struct error err;
	error_init(&err);
	struct op op = {0};
	int r = -1;
	if (dfuse_open(s, on_done, &op, &err) == 0)
		r = run(base, s, &op);
	else if (!error_is_set(&err))
		abort();
	error_clear(&err);
	check_info(s);

	uint32_t addr = bytes_le32(h + 12), len = bytes_le32(h + 16) & 0x3ffff;
	uint8_t alt = h[20] % DFUSE_MAX_ALTS;
	const struct dfuse_info *info = dfuse_get_info(s);
	if (r == 0 && info->map_valid[alt] && (h[21] & 1)) {
		/* aim at the map: the first segment's start plus an offset */
		addr = info->maps[alt].segments[0].start + (addr & 0xffff);
	}
	uint8_t *buf = malloc(len ? len : 1);
	memset(buf, 0x5a, len ? len : 1);
	for (unsigned k = 0; r == 0 && k < 3; k++) {
		if (!(h[22] & (1u << k)))
			continue;
		op = (struct op){0};
		int started = k == 0   ? dfuse_upload(s, alt, addr, buf, len, on_done, &op, &err)
			      : k == 1 ? dfuse_erase(s, alt, addr, len, on_done, &op, &err)
				       : dfuse_download(s, alt, addr, buf, len, on_done, &op, &err);
		if (started < 0) {
			if (!error_is_set(&err))
				abort();
			error_clear(&err);
			continue;
		}
		if (h[23] & (1u << k))
			dfuse_cancel(s);
		r = run(base, s, &op);
	}
	if (h[22] & 0x80) {
		op = (struct op){0};
		if (dfuse_leave(s, on_done, &op, &err) == 0)
			run(base, s, &op);
		error_clear(&err);
	}
	json_decref(dfuse_trace_json(s));
	free(buf);
	dfuse_free(s);
	event_base_free(base);
	return 0;
}
