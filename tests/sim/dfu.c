/*
 * The DfuSe bootloader of a simulated device (docs/device/dfuse.md,
 * docs/device/README.md#simulator-checklist):
 * DNBUSY/MANIFEST sequencing, DfuSe commands, Gen 2 sector vs Gen 3/P2 page
 * erase, NOR writes that do not erase, UPLOAD, leave -> reset, Device
 * Protection.  Called with sim->lock held.
 */
#include "device.h"

#include "osver.h"
#include "timing.h"

#include <string.h>

enum { DFU_DETACH, DFU_DNLOAD, DFU_UPLOAD, DFU_GETSTATUS, DFU_CLRSTATUS, DFU_GETSTATE, DFU_ABORT };

#define GEN2_PROTECTED_END 0x08020000u /* DFU_MAL_IS_PROTECTED_AREA: bootloader + DCT sectors */
#define GEN3_USER_256K	   0xb4000u
#define GEN3_USER_128K	   0xd4000u

static bool gen2(struct sim_device *d)
{
	return d->spec.platform->mcu == MCU_STM32F205;
}

static bool bootloader_at_least(struct sim_device *d, const char *release)
{
	return osver_compare(d->spec.os, release) >= 0;
}

char *dfu_string(struct sim_device *d, uint8_t index)
{
	const struct platform *p = d->spec.platform;
	if (index == 4)
		return g_strdup(gen2(d) ? "DFU" : p->dfu_product);
	if (index == 0xfa && bootloader_at_least(d, "6.2.0"))
		return g_strdup(d->spec.protected_ ? "sm=p" : "sm=o");
	if (index == 0xee && bootloader_at_least(d, "6.2.0"))
		return g_strdup("MSFT100\xee");
	int first = p->mcu == MCU_RTL8721D ? 5 : 6;
	if (index == 5 && first == 6)
		return g_strdup(gen2(d) ? "DFU" : p->dfu_product);
	int alt = index - first;
	struct flash_region *r = flash_region(d->flash, alt);
	if (!r)
		return NULL;
	return g_strdup(d->spec.protected_ ? r->map_prot : r->map);
}

void dfu_enumerated(struct sim_device *d)
{
	struct dfu *u = &d->dfu;
	memset(u, 0, sizeof(*u));
	u->state = DFU_IDLE;
	u->status = DFU_OK;
	u->boot_override = SIM_MODE_UNPLUGGED;
}

int dfu_set_alt(struct sim_device *d, int alt)
{
	if (!flash_region(d->flash, alt))
		return -1;
	d->dfu.alt = alt;
	return 0;
}

static struct sim_fault *fault_at_chunk(struct sim_device *d, const char *kind, unsigned chunk)
{
	for (unsigned i = 0; i < d->spec.n_faults; i++) {
		struct sim_fault *f = &d->spec.faults[i];
		if (!f->fired && strcmp(f->kind, kind) == 0 && f->unit == SIM_AT_CHUNK &&
		    f->at == chunk)
			return f;
	}
	return NULL;
}

static double slow_erase_factor(struct sim_device *d)
{
	for (unsigned i = 0; i < d->spec.n_faults; i++)
		if (strcmp(d->spec.faults[i].kind, "slow-erase") == 0)
			return d->spec.faults[i].arg[0]
				   ? g_ascii_strtod(d->spec.faults[i].arg, NULL)
				   : 4.0;
	return 0;
}

static void busy_for(struct sim_device *d, unsigned us, double extra_factor)
{
	double scale = d->sim->time_scale;
	if (extra_factor > 0) /* slow-erase is observable even at --time-scale 0 */
		scale = (scale > 0 ? scale : 1.0) * extra_factor;
	unsigned ms = timing_scale_ms(scale, us);
	if (ms)
		d->dfu.busy_until_ms = sim_now_ms() + ms;
}

int dfu_status_from_name(const char *s)
{
	static const struct {
		const char *name;
		enum dfu_status st;
	} names[] = {{"errTARGET", DFU_ERR_TARGET},   {"errFILE", DFU_ERR_FILE},
		     {"errWRITE", DFU_ERR_WRITE},     {"errERASE", DFU_ERR_ERASE},
		     {"errPROG", DFU_ERR_PROG},	      {"errVERIFY", DFU_ERR_VERIFY},
		     {"errADDRESS", DFU_ERR_ADDRESS}, {"errVENDOR", DFU_ERR_VENDOR},
		     {"errUNKNOWN", DFU_ERR_UNKNOWN}, {"errSTALLEDPKT", DFU_ERR_STALLEDPKT}};
	for (unsigned i = 0; i < G_N_ELEMENTS(names); i++)
		if (strcmp(s, names[i].name) == 0)
			return names[i].st;
	return -1;
}

/* A stall or error fault's status: its ARG (checked when the SPEC was parsed), else dflt. */
static enum dfu_status fault_status(const struct sim_fault *f, enum dfu_status dflt)
{
	int st = f->arg[0] ? dfu_status_from_name(f->arg) : -1;
	return st > 0 ? (enum dfu_status)st : dflt;
}

/* Gen 2 stalls EP0 where Gen 3/P2 report an error status
 * (docs/device/dfuse.md#requests-and-states). */
static int fail(struct sim_device *d, enum dfu_status st)
{
	d->dfu.state = DFU_ERROR;
	d->dfu.status = st;
	return -1;
}

static int erase(struct sim_device *d, uint32_t addr)
{
	struct flash_region *r = flash_region(d->flash, d->dfu.alt);
	uint32_t start, size;
	char attr;
	if (!r || flash_sector(r, addr, &start, &size, &attr) < 0)
		return fail(d, DFU_ERR_UNKNOWN);
	if (gen2(d) && d->dfu.alt == 0 && addr < GEN2_PROTECTED_END)
		/* host view UNVERIFIED (docs/device/dfuse.md#memory-map-strings): stall +
		 * errTARGET */
		return fail(d, DFU_ERR_TARGET);
	if (d->spec.protected_ && !flash_attr_erasable(attr))
		return fail(d, DFU_ERR_VENDOR);
	if (!flash_attr_erasable(attr) && !gen2(d) && attr == 'e')
		return 0; /* Gen 3/P2 DCT: erase is a no-op */
	flash_erase_sector(d->flash, d->dfu.alt, addr);
	d->dfu.session_erased += size;
	d->dfu_erased_bytes += size;
	busy_for(d, timing_erase_us(d->spec.platform, r->external, size), slow_erase_factor(d));
	return 0;
}

static bool valid_user_prefix_at_256k(struct sim_device *d, uint32_t addr, const uint8_t *data,
				      size_t len)
{
	if (d->spec.platform->mcu != MCU_NRF52840 || d->dfu.alt != 0 || addr != GEN3_USER_256K ||
	    len < 24)
		return false;
	uint32_t start = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
			 (uint32_t)data[3] << 24;
	return start == GEN3_USER_256K && data[14] == MODULE_FUNCTION_USER;
}

static int write_block(struct sim_device *d, uint32_t addr, const uint8_t *data, size_t len)
{
	struct flash_region *r = flash_region_at(d->flash, d->dfu.alt, addr, len);
	if (!r)
		return fail(d, DFU_ERR_ADDRESS);
	if (gen2(d) && d->dfu.alt == 0 && addr < GEN2_PROTECTED_END)
		return fail(d, DFU_ERR_TARGET);
	uint32_t start, size;
	char attr;
	flash_sector(r, addr, &start, &size, &attr);
	if (attr == 'e') /* emulated DCT: stores the bytes as given */
		memcpy(r->mem + (addr - r->base), data, len);
	else
		flash_program(d->flash, d->dfu.alt, addr, data, len); /* NOR: no implicit erase */
	d->dfu_bytes += len;
	d->dfu.session_written += len;
	busy_for(d, timing_program_us(d->spec.platform, r->external, len), 0);
	d->last_write_ms =
	    d->dfu.busy_until_ms > sim_now_ms() ? d->dfu.busy_until_ms : sim_now_ms();
	/* Gen 3 bootloader: a new 256 KiB app invalidates the old 128 KiB slot
	 * (docs/device/dfuse.md#requests-and-states). */
	if (valid_user_prefix_at_256k(d, addr, data, len))
		flash_erase_sector(d->flash, 0, GEN3_USER_128K);
	return 0;
}

static int command(struct sim_device *d, const uint8_t *b, size_t len)
{
	uint32_t addr = len >= 5 ? (uint32_t)b[1] | (uint32_t)b[2] << 8 | (uint32_t)b[3] << 16 |
				       (uint32_t)b[4] << 24
				 : 0;
	switch (b[0]) {
	case 0x00:
		return 0;
	case 0x21:
		if (len != 5)
			return fail(d, DFU_ERR_STALLEDPKT);
		d->dfu.pointer = addr;
		return 0;
	case 0x41:
		if (len == 5)
			return erase(d, addr);
		return fail(d, DFU_ERR_TARGET); /* mass erase: unsupported */
	case 0x92:
		return fail(d, DFU_ERR_UNKNOWN);
	case 0xfa:
		if (gen2(d) || !bootloader_at_least(d, "6.1.1"))
			return fail(d, DFU_ERR_STALLEDPKT);
		d->dfu.boot_override = SIM_MODE_SAFE;
		d->dfu.state = DFU_MANIFEST_SYNC;
		return 1;
	case 0xfb:
		if (gen2(d) || !bootloader_at_least(d, "6.2.0"))
			return fail(d, DFU_ERR_STALLEDPKT);
		return 0;
	default:
		return fail(d, DFU_ERR_STALLEDPKT);
	}
}

static void check_unplug_fault(struct sim_device *d)
{
	for (unsigned i = 0; i < d->spec.n_faults; i++) {
		struct sim_fault *f = &d->spec.faults[i];
		if (f->fired || (strcmp(f->kind, "unplug") && strcmp(f->kind, "reset")))
			continue;
		bool hit = false;
		if (f->unit == SIM_AT_PERCENT && d->dfu.session_erased)
			hit =
			    d->dfu.session_written * 100 >= (uint64_t)f->at * d->dfu.session_erased;
		else if (f->unit == SIM_AT_BYTE)
			hit = d->dfu.session_written >= f->at;
		else if (f->unit == SIM_AT_CHUNK)
			hit = d->dfu.chunks >= f->at;
		if (!hit)
			continue;
		f->fired = true;
		usbdev_node_disconnect(d->usb); /* every further ioctl: ENODEV */
		enum sim_mode next =
		    strcmp(f->kind, "reset") == 0 ? SIM_MODE_DFU : SIM_MODE_UNPLUGGED;
		d->next_mode = next;
		sim_schedule(d->sim, 0,
			     next == SIM_MODE_DFU ? (void (*)(void *))device_reset_boot
						  : (void (*)(void *))device_unplug_async,
			     d);
		return;
	}
}

/* The pending DNLOAD runs right after the DNBUSY status reply
 * (docs/device/dfuse.md#requests-and-states). */
static void execute(struct sim_device *d)
{
	struct dfu *u = &d->dfu;
	u->have_pending = false;
	int rc;
	if (u->pending_block >= 2 && u->write_error) {
		/* fault error@chunkN: the flash write fails after DNBUSY was answered; the
		 * next GETSTATUS reports dfuERROR with the status
		 * (docs/device/dfuse.md#requests-and-states), nothing is written. */
		rc = fail(d, u->write_error);
		u->write_error = DFU_OK;
	} else if (u->pending_block == 0)
		rc = command(d, u->pending, u->pending_len);
	else if (u->pending_block == 1)
		rc = fail(d, DFU_ERR_TARGET);
	else
		rc = write_block(d, (uint32_t)(u->pending_block - 2) * DFU_XFER_SIZE + u->pointer,
				 u->pending, u->pending_len);
	if (rc == 0) {
		u->state = DFU_DNLOAD_IDLE;
		u->status = DFU_OK;
	}
	if (u->pending_block >= 2)
		check_unplug_fault(d);
}

static void leave(struct sim_device *d)
{
	d->dfu.state = DFU_MANIFEST_WAIT_RESET;
	d->next_mode = d->dfu.boot_override;
	unsigned ms =
	    timing_scale_ms(d->sim->time_scale, timing_dfu_leave_reset_us(d->spec.platform));
	sim_schedule(d->sim, ms, (void (*)(void *))device_reset_boot, d);
}

static int get_status(struct sim_device *d, uint8_t *in, uint16_t length)
{
	struct dfu *u = &d->dfu;
	uint8_t reply_state = (uint8_t)u->state;
	uint32_t poll = 0;
	bool run = false, manifest = false;
	switch (u->state) {
	case DFU_DNLOAD_SYNC:
		if (u->have_pending) {
			reply_state = DFU_DNBUSY;
			run = true;
			/* Gen 2 DCT alt: 500 ms after an erase, 1 ms after a write
			 * (docs/device/dfuse.md#requests-and-states). */
			if (gen2(d) && u->alt == 1)
				poll = u->pending_block == 0 && u->pending[0] == 0x41 ? 500 : 1;
		} else {
			reply_state = DFU_DNLOAD_IDLE;
			u->state = DFU_DNLOAD_IDLE;
		}
		break;
	case DFU_MANIFEST_SYNC:
		/* Gen 2 answers dfuDNLOAD-IDLE on purpose; Gen 3/P2 dfuMANIFEST. */
		reply_state = gen2(d) ? DFU_DNLOAD_IDLE : DFU_MANIFEST;
		manifest = true;
		break;
	case DFU_DNBUSY:
	case DFU_MANIFEST_WAIT_RESET:
		if (!gen2(d))
			return fail(d, DFU_ERR_UNKNOWN);
		break;
	default:
		break;
	}
	uint8_t r[6] = {(uint8_t)u->status,    (uint8_t)poll, (uint8_t)(poll >> 8),
			(uint8_t)(poll >> 16), reply_state,   0};
	size_t n = MIN(length, 6);
	memcpy(in, r, n);
	if (run)
		execute(d);
	if (manifest)
		leave(d);
	return (int)n;
}

/* The bus time of an UPLOAD (timing.c): the endpoint answers the next request after it.
 * Sub-millisecond remainders are carried over, so that a run of 4 KiB reads costs what
 * the bus takes, not a millisecond rounded up per read. */
static void upload_time(struct sim_device *d, size_t n)
{
	double scale = d->sim->time_scale;
	if (scale <= 0)
		return;
	uint64_t us =
	    (uint64_t)(scale * timing_dfu_upload_us(d->spec.platform, n)) + d->dfu.upload_carry_us;
	d->dfu.upload_carry_us = (unsigned)(us % 1000);
	if (us >= 1000)
		d->dfu.busy_until_ms = sim_now_ms() + us / 1000;
}

static int upload(struct sim_device *d, uint16_t block, uint16_t length, uint8_t *in)
{
	struct dfu *u = &d->dfu;
	if (u->state != DFU_IDLE && u->state != DFU_UPLOAD_IDLE)
		return fail(d, DFU_ERR_UNKNOWN);
	if (block == 0) {
		static const uint8_t cmds[5] = {0x00, 0x21, 0x41, 0xfa, 0xfb};
		size_t n = bootloader_at_least(d, "6.2.0") && !gen2(d) ? 5 : 3;
		n = MIN(n, length);
		memcpy(in, cmds, n);
		u->state = DFU_UPLOAD_IDLE;
		return (int)n;
	}
	if (block == 1)
		return fail(d, DFU_ERR_UNKNOWN);
	if (d->spec.protected_)
		return fail(d, DFU_ERR_VENDOR);
	uint32_t addr = (uint32_t)(block - 2) * DFU_XFER_SIZE + u->pointer;
	struct flash_region *r = flash_region(d->flash, u->alt);
	if (!r || addr < r->base || addr - r->base >= r->size)
		return fail(d, DFU_ERR_ADDRESS);
	size_t n = MIN((size_t)length, r->size - (addr - r->base));
	memcpy(in, r->mem + (addr - r->base), n);
	u->state = n < length ? DFU_IDLE : DFU_UPLOAD_IDLE;
	d->dfu_upload_bytes += n;
	upload_time(d, n);
	return (int)n;
}

static int dnload(struct sim_device *d, uint16_t block, uint16_t length, const uint8_t *out)
{
	struct dfu *u = &d->dfu;
	if (u->state != DFU_IDLE && u->state != DFU_DNLOAD_IDLE)
		return fail(d, DFU_ERR_UNKNOWN);
	if (length > DFU_XFER_SIZE)
		return fail(d, DFU_ERR_UNKNOWN);
	if (length == 0) {
		u->state = DFU_MANIFEST_SYNC; /* leave request */
		return 0;
	}
	if (block >= 2) {
		u->chunks++;
		struct sim_fault *f = fault_at_chunk(d, "stall", u->chunks);
		if (f) {
			f->fired = true;
			return fail(d, fault_status(f, DFU_ERR_TARGET));
		}
		f = fault_at_chunk(d, "error", u->chunks);
		if (f) {
			f->fired = true;
			u->write_error = fault_status(f, DFU_ERR_WRITE);
		}
		f = fault_at_chunk(d, "silent", u->chunks);
		if (f) {
			f->fired = true;
			u->silent = true;
		}
	}
	/* the requests it took the host to get here from plugging in (the bench) */
	if (!d->dfu_requests_to_write && (block >= 2 || (length == 5 && out[0] == 0x41)))
		d->dfu_requests_to_write = d->dfu_requests;
	memcpy(u->pending, out, length);
	u->pending_len = length;
	u->pending_block = block;
	u->have_pending = true;
	u->state = DFU_DNLOAD_SYNC;
	return 0;
}

int dfu_class_request(struct sim_device *d, uint8_t type, uint8_t request, uint16_t value,
		      uint16_t length, const uint8_t *out, uint8_t *in)
{
	struct dfu *u = &d->dfu;
	(void)type;
	switch (request) {
	case DFU_DETACH:
		u->state = DFU_IDLE;
		return 0;
	case DFU_DNLOAD:
		return dnload(d, value, length, out);
	case DFU_UPLOAD:
		return upload(d, value, length, in);
	case DFU_GETSTATUS:
		return get_status(d, in, length);
	case DFU_CLRSTATUS:
		if (u->state == DFU_ERROR) {
			u->state = DFU_IDLE;
			u->status = DFU_OK;
			return 0;
		}
		fail(d, DFU_ERR_UNKNOWN);
		return gen2(d) ? 0 : -1;
	case DFU_GETSTATE:
		if (!gen2(d) && (u->state == DFU_DNBUSY || u->state == DFU_MANIFEST ||
				 u->state == DFU_MANIFEST_WAIT_RESET))
			return fail(d, DFU_ERR_UNKNOWN);
		if (length)
			in[0] = (uint8_t)u->state;
		return MIN(length, 1);
	case DFU_ABORT:
		switch (u->state) {
		case DFU_IDLE:
		case DFU_DNLOAD_SYNC:
		case DFU_DNLOAD_IDLE:
		case DFU_MANIFEST_SYNC:
		case DFU_UPLOAD_IDLE:
			u->state = DFU_IDLE;
			u->status = DFU_OK;
			u->have_pending = false;
			return 0;
		default:
			return -1;
		}
	default:
		return -1;
	}
}
