#include "ctrlreq.h"

#include "device.h"
#include "osver.h"

#include <endian.h>
#include <linux/usb/ch9.h>
#include <string.h>

/* particle-usb src/usb-protocol.js */
enum service { SVC_INIT = 1, SVC_CHECK = 2, SVC_SEND = 3, SVC_RECV = 4, SVC_RESET = 5 };
enum status {
	ST_OK = 0,
	ST_ERROR = 1,
	ST_PENDING = 2,
	ST_BUSY = 3,
	ST_NO_MEMORY = 4,
	ST_NOT_FOUND = 5
};
enum field { F_STATUS = 0x01, F_ID = 0x02, F_SIZE = 0x04, F_RESULT = 0x08 };
#define LEGACY_BREQUEST		   0x50 /* 'P' */
#define REQ_SYSTEM_VERSION	   30
#define REQ_RESET		   40
#define REQ_DFU_MODE		   50
#define SYSTEM_ERROR_NOT_SUPPORTED (-120)
#define SERVICE_REPLY_MAX	   16

void ctrlreq_init(struct ctrlreq *c)
{
	memset(c, 0, sizeof(*c));
	c->then = -1;
}

static struct ctrlreq_slot *find(struct ctrlreq *c, uint16_t id)
{
	for (int i = 0; id && i < CTRLREQ_MAX_ACTIVE; i++)
		if (c->slot[i].id == id)
			return &c->slot[i];
	return NULL;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

/* A service reply: flags, status, then the optional fields in flag order. */
static int reply(uint8_t *in, uint16_t wlength, unsigned flags, uint16_t status, uint16_t id,
		 uint32_t size, int32_t result)
{
	uint8_t buf[SERVICE_REPLY_MAX];
	size_t n = 0;
	put32(buf, flags | F_STATUS);
	put16(buf + 4, status);
	n = 6;
	if (flags & F_ID) {
		put16(buf + n, id);
		n += 2;
	}
	if (flags & F_SIZE) {
		put32(buf + n, size);
		n += 4;
	}
	if (flags & F_RESULT) {
		put32(buf + n, (uint32_t)result);
		n += 4;
	}
	if (wlength < n)
		return -1;
	memcpy(in, buf, n);
	return (int)n;
}

static int32_t result_of(uint16_t type)
{
	return type == REQ_RESET || type == REQ_DFU_MODE ? 0 : SYSTEM_ERROR_NOT_SUPPORTED;
}

static int reset_mode_of(uint16_t type)
{
	if (type == REQ_DFU_MODE)
		return SIM_MODE_DFU;
	if (type == REQ_RESET)
		return SIM_MODE_UNPLUGGED; /* boots what the flash holds */
	return -1;
}

static int svc_init(struct sim_device *d, uint16_t type, uint16_t size, uint16_t wlength,
		    uint8_t *in)
{
	struct ctrlreq *c = &d->ctrl;
	struct ctrlreq_slot *s = find(c, 0);
	for (int i = 0; !s && i < CTRLREQ_MAX_ACTIVE; i++)
		if (!c->slot[i].id)
			s = &c->slot[i];
	if (!s)
		return reply(in, wlength, 0, ST_BUSY, 0, 0, 0);
	if (++c->next_id == 0)
		c->next_id = 1;
	*s = (struct ctrlreq_slot){.id = c->next_id, .type = type, .size = size};
	return reply(in, wlength, F_ID, ST_OK, s->id, 0, 0);
}

static int svc_check(struct sim_device *d, uint16_t id, uint16_t wlength, uint8_t *in)
{
	struct ctrlreq_slot *s = find(&d->ctrl, id);
	if (!s)
		return reply(in, wlength, 0, ST_NOT_FOUND, 0, 0, 0);
	if (s->received < s->size)
		return reply(in, wlength, 0, ST_PENDING, 0, 0, 0);
	int32_t result = result_of(s->type);
	int n = reply(in, wlength, F_SIZE | F_RESULT, ST_OK, 0, 0, result);
	if (n > 0) {
		d->ctrl.then = result == 0 ? reset_mode_of(s->type) : -1;
		s->id = 0;
	}
	return n;
}

static int legacy(struct sim_device *d, const struct usb_ctrlrequest *setup, uint8_t *in)
{
	uint16_t index = le16toh(setup->wIndex), wlength = le16toh(setup->wLength);
	if (setup->bRequestType & USB_DIR_IN) {
		if (index != REQ_SYSTEM_VERSION || osver_compare(d->spec.os, "0.6.0") < 0)
			return -1;
		size_t n = strlen(d->spec.os) + 1;
		if (n > wlength)
			n = wlength;
		memcpy(in, d->spec.os, n);
		return (int)n;
	}
	/* particle-usb's reset({force: true}) and the old CLI's DFU switch. */
	int mode = reset_mode_of(index);
	if (mode < 0)
		return -1;
	d->ctrl.then = mode;
	return 0;
}

int ctrlreq_handle(struct sim_device *d, const struct usb_ctrlrequest *setup, const uint8_t *out,
		   uint8_t *in)
{
	(void)out;
	/* Device OS answers them since 0.8.0 (Gen 2) / 0.9.0 (Gen 3); the DFU bootloader never. */
	if (d->mode == SIM_MODE_DFU || (setup->bRequestType & USB_RECIP_MASK) != USB_RECIP_DEVICE)
		return -1;
	if (setup->bRequest == LEGACY_BREQUEST)
		return legacy(d, setup, in);
	if (osver_compare(d->spec.os, d->spec.platform->gen == 2 ? "0.8.0" : "0.9.0") < 0)
		return -1;
	uint16_t value = le16toh(setup->wValue), index = le16toh(setup->wIndex),
		 wlength = le16toh(setup->wLength);
	bool dir_in = setup->bRequestType & USB_DIR_IN;
	switch (setup->bRequest) {
	case SVC_INIT:
		return dir_in ? svc_init(d, index, value, wlength, in) : -1;
	case SVC_CHECK:
		return dir_in ? svc_check(d, index, wlength, in) : -1;
	case SVC_SEND: {
		struct ctrlreq_slot *s = find(&d->ctrl, index);
		if (dir_in || !s || wlength > s->size - s->received)
			return -1;
		s->received += wlength; /* protobuf payload: not interpreted */
		return 0;
	}
	case SVC_RESET:
		if (!dir_in)
			return -1;
		for (int i = 0; i < CTRLREQ_MAX_ACTIVE; i++)
			if (!index || d->ctrl.slot[i].id == index)
				d->ctrl.slot[i].id = 0;
		return reply(in, wlength, 0, ST_OK, 0, 0, 0);
	case SVC_RECV: /* no request here has reply data */
	default:
		return -1;
	}
}

struct pending_reset {
	struct sim_device *d;
	unsigned generation;
	int mode;
};

static void reset_cb(void *data)
{
	struct pending_reset *r = data;
	g_mutex_lock(&r->d->sim->lock);
	bool same = r->d->generation == r->generation && r->d->present;
	g_mutex_unlock(&r->d->sim->lock);
	if (same)
		device_reset(r->d, (enum sim_mode)r->mode);
	g_free(r);
}

void ctrlreq_delivered(struct sim_device *d, int then)
{
	if (then < 0)
		return;
	struct pending_reset *r = g_new0(struct pending_reset, 1);
	r->d = d;
	r->generation = d->generation;
	r->mode = then;
	sim_schedule(d->sim, 0, reset_cb, r);
}
