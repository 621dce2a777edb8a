#include "fake_dfu.h"

#include <libusb.h>
#include <stdlib.h>
#include <string.h>

struct completion {
	struct fake_dfu *f;
	int status;
	uint8_t data[4096];
	size_t len;
};

static void deliver(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct completion *c = arg;
	dfuse_transfer_done(c->f->dfuse, c->status, c->data, c->len);
	free(c);
}

static void complete(struct fake_dfu *f, int status, const uint8_t *data, size_t len,
		     unsigned delay_ms)
{
	struct completion *c = calloc(1, sizeof(*c));
	c->f = f;
	c->status = status;
	if (data && len)
		memcpy(c->data, data, len);
	c->len = len;
	struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
	event_base_once(f->base, -1, EV_TIMEOUT, deliver, c, &tv);
}

static bool in_flash(struct fake_dfu *f, uint32_t a, size_t len)
{
	return a >= f->flash_base && (uint64_t)a + len <= (uint64_t)f->flash_base + f->flash_size;
}

uint8_t *fake_dfu_at(struct fake_dfu *f, uint32_t address)
{
	return f->flash + (address - f->flash_base);
}

static uint32_t erase_unit(struct fake_dfu *f, uint32_t a, uint32_t *size)
{
	if (f->gen == 2) {
		/* STM32F205 sectors: 4 x 16 KiB, 64 KiB, 7 x 128 KiB
		 * (docs/device/memory-maps.md#gen-2). */
		uint32_t off = a - 0x08000000;
		if (off < 0x10000) {
			*size = 0x4000;
			return a & ~0x3fffu;
		}
		if (off < 0x20000) {
			*size = 0x10000;
			return 0x08010000;
		}
		*size = 0x20000;
		return a & ~0x1ffffu;
	}
	*size = 0x1000;
	return a & ~0xfffu;
}

/* Executes the pending DNLOAD "after the GETSTATUS reply"
 * (docs/device/dfuse.md#requests-and-states). */
static void execute(struct fake_dfu *f)
{
	f->pending = false;
	f->state = DFU_STATE_DNLOAD_IDLE;
	if (f->pend_value == 0) {
		uint8_t cmd = f->pend_data[0];
		uint32_t a = f->pend_data[1] | f->pend_data[2] << 8 | f->pend_data[3] << 16 |
			     (uint32_t)f->pend_data[4] << 24;
		if (cmd == DFUSE_CMD_SET_ADDRESS && f->pend_len == 5) {
			f->pointer = a;
		} else if (cmd == DFUSE_CMD_ERASE && f->pend_len == 5) {
			if (f->fault == FAKE_FAULT_ERASE_STATUS) {
				f->state = DFU_STATE_ERROR;
				f->status = f->fault_status;
				return;
			}
			uint32_t size, start = erase_unit(f, a, &size);
			if (!in_flash(f, start, size) || (f->gen == 2 && a < 0x08020000)) {
				f->state = DFU_STATE_ERROR;
				f->status = DFU_STATUS_ERR_UNKNOWN;
				return;
			}
			memset(fake_dfu_at(f, start), 0xff, size);
		} else {
			f->state = DFU_STATE_ERROR;
			f->status = DFU_STATUS_ERR_STALLEDPKT;
		}
		return;
	}
	uint32_t a = (uint32_t)(f->pend_value - 2) * 4096 + f->pointer;
	if (f->fault == FAKE_FAULT_STATUS && f->data_chunks == f->fault_chunk + 1) {
		f->state = DFU_STATE_ERROR;
		f->status = f->fault_status;
		return;
	}
	if (!in_flash(f, a, f->pend_len)) {
		f->state = DFU_STATE_ERROR;
		f->status = DFU_STATUS_ERR_ADDRESS;
		return;
	}
	uint8_t *p = fake_dfu_at(f, a);
	for (unsigned i = 0; i < f->pend_len; i++)
		p[i] &= f->pend_data[i]; /* NOR flash: writing does not erase */
}

static void log_req(struct fake_dfu *f, const struct dfu_setup *s, const uint8_t *out)
{
	if (f->n_log >= FAKE_MAX_LOG)
		return;
	struct fake_req *r = &f->log[f->n_log++];
	r->type = s->request_type;
	r->req = s->request;
	r->value = s->value;
	r->length = s->length;
	if (s->request_type == 0x21 && s->request == DFU_DNLOAD && s->value == 0 && out &&
	    s->length >= 1) {
		r->cmd = out[0];
		if (s->length >= 5)
			r->cmd_address =
			    out[1] | out[2] << 8 | out[3] << 16 | (uint32_t)out[4] << 24;
	}
}

static void reply_string(struct fake_dfu *f, uint8_t index, uint16_t maxlen)
{
	const char *str = f->strings[index];
	if (!str) {
		complete(f, LIBUSB_ERROR_PIPE, NULL, 0, 0);
		return;
	}
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
	size_t len = b[0] < maxlen ? b[0] : maxlen;
	complete(f, 0, b, len, 0);
}

static void stall(struct fake_dfu *f)
{
	f->state = DFU_STATE_ERROR;
	f->status = DFU_STATUS_ERR_UNKNOWN;
	complete(f, LIBUSB_ERROR_PIPE, NULL, 0, 0);
}

static void on_getstatus(struct fake_dfu *f)
{
	uint8_t b[6] = {f->status, 0, 0, 0, f->state, 0};
	if (f->left) {
		f->leave_status_seen = true;
		b[4] = f->gen == 2 ? DFU_STATE_DNLOAD_IDLE : DFU_STATE_MANIFEST;
		complete(f, 0, b, 6, 0);
		f->state = DFU_STATE_MANIFEST_WAIT_RESET;
		return;
	}
	if (f->busy_polls) {
		b[1] = f->poll_ms & 0xff;
		b[2] = (f->poll_ms >> 8) & 0xff;
		b[4] = DFU_STATE_DNBUSY;
		complete(f, 0, b, 6, 0);
		if (--f->busy_polls == 0) {
			if (f->pending)
				execute(f); /* a DNLOAD of ours: it runs now */
			else
				f->state = DFU_STATE_DNLOAD_IDLE;
		}
		return;
	}
	if (f->state == DFU_STATE_DNLOAD_SYNC && f->pending) {
		b[1] = f->poll_ms & 0xff;
		b[2] = (f->poll_ms >> 8) & 0xff;
		b[3] = (f->poll_ms >> 16) & 0xff;
		b[4] = DFU_STATE_DNBUSY;
		complete(f, 0, b, 6, 0);
		execute(f);
		return;
	}
	complete(f, 0, b, 6, 0);
}

static int fake_control(void *ctx, const struct dfu_setup *s, const uint8_t *out,
			unsigned timeout_ms)
{
	struct fake_dfu *f = ctx;
	log_req(f, s, out);
	if (f->leave_status_seen)
		f->after_leave_status++;
	if (f->gone) {
		complete(f, LIBUSB_ERROR_NO_DEVICE, NULL, 0, 0);
		return 0;
	}
	if (s->request_type == 0x80 && s->request == 6 && (s->value >> 8) == 3) {
		reply_string(f, s->value & 0xff, s->length);
		return 0;
	}
	if (s->request_type == 0x01 && s->request == 0x0b) {
		f->alt = (uint8_t)s->value;
		complete(f, 0, NULL, 0, 0);
		return 0;
	}
	if (s->request_type == 0xa1 && s->request == DFU_GETSTATUS) {
		on_getstatus(f);
		return 0;
	}
	if (s->request_type == 0x21 && s->request == DFU_CLRSTATUS) {
		if (f->state != DFU_STATE_ERROR) {
			stall(f);
			return 0;
		}
		f->state = DFU_STATE_IDLE;
		f->status = DFU_STATUS_OK;
		complete(f, 0, NULL, 0, 0);
		return 0;
	}
	if (s->request_type == 0x21 && s->request == DFU_ABORT) {
		f->state = DFU_STATE_IDLE;
		f->status = DFU_STATUS_OK;
		f->pending = false;
		complete(f, 0, NULL, 0, 0);
		return 0;
	}
	if (s->request_type == 0x21 && s->request == DFU_DNLOAD) {
		if (f->state != DFU_STATE_IDLE && f->state != DFU_STATE_DNLOAD_IDLE) {
			stall(f);
			return 0;
		}
		if (s->length == 0) {
			f->left = true;
			f->state = DFU_STATE_MANIFEST_SYNC;
			complete(f, 0, NULL, 0, 0);
			return 0;
		}
		if (s->value >= 2) {
			unsigned n = f->data_chunks++;
			if (f->fault_chunk == n && f->fault == FAKE_FAULT_STALL) {
				f->state = DFU_STATE_ERROR;
				f->status = DFU_STATUS_ERR_STALLEDPKT;
				complete(f, LIBUSB_ERROR_PIPE, NULL, 0, 0);
				return 0;
			}
			if (f->fault_chunk == n && f->fault == FAKE_FAULT_UNPLUG) {
				f->gone = true;
				complete(f, LIBUSB_ERROR_NO_DEVICE, NULL, 0, 0);
				return 0;
			}
			if (f->fault_chunk == n && f->fault == FAKE_FAULT_SILENT) {
				complete(f, LIBUSB_ERROR_TIMEOUT, NULL, 0,
					 timeout_ms /
					     (f->timeout_divisor ? f->timeout_divisor : 1));
				return 0;
			}
		}
		f->pending = true;
		f->pend_value = s->value;
		f->pend_len = s->length;
		memcpy(f->pend_data, out, s->length);
		f->state = DFU_STATE_DNLOAD_SYNC;
		complete(f, 0, NULL, 0, 0);
		return 0;
	}
	if (s->request_type == 0xa1 && s->request == DFU_UPLOAD) {
		if (f->state != DFU_STATE_IDLE && f->state != DFU_STATE_UPLOAD_IDLE) {
			stall(f);
			return 0;
		}
		if (s->value < 2) {
			stall(f);
			return 0;
		}
		uint32_t a = (uint32_t)(s->value - 2) * 4096 + f->pointer;
		size_t n = s->length;
		if (!in_flash(f, a, 0)) {
			stall(f);
			return 0;
		}
		if ((uint64_t)a + n > (uint64_t)f->flash_base + f->flash_size)
			n = f->flash_base + f->flash_size - a;
		f->state = DFU_STATE_UPLOAD_IDLE;
		complete(f, 0, fake_dfu_at(f, a), n, 0);
		return 0;
	}
	stall(f);
	return 0;
}

struct fake_dfu *fake_dfu_new(struct event_base *base, int gen)
{
	struct fake_dfu *f = calloc(1, sizeof(*f));
	f->base = base;
	f->gen = gen;
	f->state = DFU_STATE_IDLE;
	f->timeout_divisor = 100;
	f->flash_size = 1024 * 1024;
	f->flash = malloc(f->flash_size);
	memset(f->flash, 0xff, f->flash_size);
	f->strings[3] = gen == 2 ? "3a0027000c47343432313031" : "e00fce68aabbccddeeff0011";
	if (gen == 2) {
		f->flash_base = 0x08000000;
		f->strings[4] = "@Internal Flash   /0x08000000/03*016Ka,01*016Kg,01*064Kg,07*128Kg";
		f->strings[5] = "@DCT Flash   /0x00000000/01*016Kg";
	} else {
		f->flash_base = 0;
		f->strings[6] = "@Internal Flash   "
				"/0x00000000/1*004Ka,47*004Kg,192*004Kg,4*004Kg,4*004Kg,8*004Ka";
		f->strings[7] = "@DCT Flash   /0x00000000/1*016Ke";
		f->strings[8] = "@External Flash   /0x80000000/1024*004Kg";
	}
	return f;
}

void fake_dfu_free(struct fake_dfu *f)
{
	if (!f)
		return;
	free(f->flash);
	free(f);
}

void fake_dfu_descriptors(const struct fake_dfu *f, struct dfu_descriptors *d)
{
	memset(d, 0, sizeof(*d));
	d->vid = 0x2b04;
	d->pid = f->gen == 2 ? 0xd006 : 0xd00c;
	d->interface = 0;
	d->i_serial = 3;
	static const uint8_t functional[9] = {9, 0x21, 0x0b, 0xff, 0x00, 0x00, 0x10, 0x1a, 0x01};
	dfu_descriptors_parse_functional(d, functional, sizeof(functional));
	if (f->gen == 2) {
		d->n_alts = 2;
		d->alt_string[0] = 4;
		d->alt_string[1] = 5;
	} else {
		d->n_alts = 3;
		d->alt_string[0] = 6;
		d->alt_string[1] = 7;
		d->alt_string[2] = 8;
	}
}

struct dfu_io fake_dfu_io(struct fake_dfu *f)
{
	return (struct dfu_io){fake_control, f};
}

unsigned fake_dfu_count(const struct fake_dfu *f, uint8_t req, int cmd)
{
	unsigned n = 0;
	for (unsigned i = 0; i < f->n_log; i++) {
		const struct fake_req *r = &f->log[i];
		if (r->req != req || (r->type & 0x60) != 0x20)
			continue;
		if (cmd >= 0 && !(r->value == 0 && r->cmd == cmd && r->length > 0))
			continue;
		n++;
	}
	return n;
}
