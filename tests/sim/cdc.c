/*
 * The CDC side of a simulated device: the pty behind /dev/ttyACMn, the
 * termios ioctl workaround (docs/testing/umockdev.md#serial-ports) that records the line-coding
 * speed for the magic bauds (docs/device/console.md#magic-baud-rates), and the glue to the
 * listening-mode
 * engine of tests/sim/cdc (listening.h) or to a peer=COMMAND over pipes.
 */
#include "device.h"

#include "cdc/listening_internal.h" /* engine_load_faults() */
#include "control.h"
#include "osver.h"
#include "spec.h"
#include "timing.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define CDC_READ_MAX	  4096
#define CDC_OUTQ_MAX	  (1u << 20) /* device output the host has not read: drop beyond */
#define PTY_RETRY_MS	  20
#define MAGIC_BAUD_DFU	  14400
#define MAGIC_BAUD_LISTEN 28800
/* A YMODEM block on the wire: mark, sequence, complement, data, CRC-16. */
#define YMODEM_BLOCK_WIRE(len) ((len) + 5u)

/* Kernel termios ioctls (asm-generic/ioctls.h); the structs are the kernel's, not glibc's. */
#define K_TCGETS2  0x802c542au
#define K_TCSETS   0x5402u
#define K_TCSETSW  0x5403u
#define K_TCSETSF  0x5404u
#define K_TCSETS2  0x402c542bu
#define K_TCSETSW2 0x402c542cu
#define K_TCSETSF2 0x402c542du
#define K_CBAUD	   0x100fu
#define K_BOTHER   0x1000u
struct k_termios2 {
	uint32_t c_iflag, c_oflag, c_cflag, c_lflag;
	uint8_t c_line;
	uint8_t c_cc[19];
	uint32_t c_ispeed, c_ospeed;
};

static unsigned cbaud_speed(uint32_t cflag)
{
	static const unsigned low[16] = {0,   50,   75,	  110,	134,  150,  200,   300,
					 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400};
	static const unsigned high[16] = {0,	   57600,   115200,  230400,  460800,  500000,
					  576000,  921600,  1000000, 1152000, 1500000, 2000000,
					  2500000, 3000000, 3500000, 4000000};
	uint32_t b = cflag & K_CBAUD;
	return b & 0x1000u ? high[b & 0xf] : low[b & 0xf];
}

/* ---- OTA region (docs/device/ymodem.md, docs/device/memory-maps.md)
 * --------------------------------------------------- */

struct ota_region {
	int alt;
	uint32_t base;
	uint32_t size;
};

static struct ota_region ota_region(struct sim_device *d)
{
	const struct platform *p = d->spec.platform;
	struct ota_region r = {0, 0x080c0000, 0x40000};
	switch (p->mcu) {
	case MCU_STM32F205:
		if (p->id == 10)
			r.size = 0x20000;
		break;
	case MCU_NRF52840: {
		uint32_t off = p->ext_flash_size > (4u << 20) ? 0x689000 : 0x289000;
		if (p->ext_flash_size <= (4u << 20) && d->spec.system_version >= 5000)
			off = 0x24c000;
		r = (struct ota_region){2, 0x80000000u + off, 1500u * 1024};
		break;
	}
	case MCU_RTL8721D:
		r = (struct ota_region){0, 0x08260000, 0x180000};
		break;
	case MCU_STM32F103:
		break;
	}
	return r;
}

static bool era3(struct sim_device *d)
{
	return osver_compare(d->spec.os, "3.0.0") >= 0 && osver_compare(d->spec.os, "6.0.0") < 0;
}

/* Device work at real-device speed, charged to the next block reply. */
static void ota_charge(struct sim_device *d, double us)
{
	d->cdc_work_us += us * d->sim->time_scale;
}

static uint64_t op_ota_work_ms(void *ctx)
{
	struct sim_device *d = ctx;
	/* Whole milliseconds now, the rest with the next block, so that a
	 * transfer's total is right to 1 ms whatever the block count. */
	uint64_t ms = (uint64_t)(d->cdc_work_us / 1000.0);
	d->cdc_work_us -= (double)ms * 1000.0;
	return ms;
}

/* Erase of the sectors covering len bytes from the region's start (FLASH_Begin). */
static double ota_erase_us(struct sim_device *d, const struct ota_region *r, uint32_t len)
{
	const struct flash_region *fr = flash_region_at(d->flash, r->alt, r->base, r->size);
	if (!fr)
		return 0;
	double us = 0;
	uint32_t at = r->base;
	while (at < r->base + len) {
		uint32_t start, size;
		char attr;
		if (flash_sector(fr, at, &start, &size, &attr) < 0 || !size)
			break;
		us += timing_erase_us(d->spec.platform, fr->external, size);
		at = start + size;
	}
	return us;
}

/* Engine ops run with sim->lock held (the engine is only driven under it). */
static int op_ota_begin(void *ctx, uint32_t declared_size)
{
	struct sim_device *d = ctx;
	struct ota_region r = ota_region(d);
	/* The header block crossed the bus; then the region is erased over the
	 * declared size (0: the whole region, as 3.x-5.x substitutes its maximum). */
	d->cdc_work_us = 0;
	ota_charge(d, timing_usb_bulk_us(YMODEM_BLOCK_WIRE(128)));
	/* 3.0-5.x: size pre-check and INVALID_STATE while an update is running
	 * (docs/device/ymodem.md#what-is-checked-when, docs/device/ymodem.md#cancellation). */
	if (era3(d) &&
	    (declared_size > r.size || (d->ota_active && d->spec.platform->mcu != MCU_STM32F205)))
		return -1;
	flash_erase_range(d->flash, r.alt, r.base, r.size);
	uint32_t erase_len = declared_size && declared_size < r.size ? declared_size : r.size;
	ota_charge(d, ota_erase_us(d, &r, erase_len));
	d->ota_active = true;
	d->ota_pending = false;
	d->ota_size = declared_size;
	return 0;
}

static int op_ota_write(void *ctx, uint32_t offset, const uint8_t *data, size_t len)
{
	struct sim_device *d = ctx;
	struct ota_region r = ota_region(d);
	/* The block crossed the bus, then it is programmed (FLASH_Update). */
	ota_charge(d, timing_usb_bulk_us(YMODEM_BLOCK_WIRE(len)));
	if (offset > r.size || len > r.size - offset)
		return -1; /* past the OTA region: "Failed to save chunk!" */
	const struct flash_region *fr = flash_region_at(d->flash, r.alt, r.base, r.size);
	ota_charge(d, timing_program_us(d->spec.platform, fr && fr->external, len));
	d->last_write_ms = sim_now_ms() + (uint64_t)(d->cdc_work_us / 1000.0); /* its ACK */
	return flash_program(d->flash, r.alt, r.base + offset, data, len);
}

static int op_ota_finish(void *ctx, unsigned *ret_mask)
{
	struct sim_device *d = ctx;
	struct ota_region r = ota_region(d);
	const uint8_t *img = flash_peek(d->flash, r.alt, r.base, r.size);
	struct vscan installed;
	device_scan(d, &installed);
	int code = validate_ota(&installed, d->spec.platform, d->layout_version, img, r.size,
				ret_mask, NULL);
	d->ota_active = false;
	d->ota_pending = code == 0;
	return code;
}

int cdc_ota_begin(struct sim_device *d, uint32_t size)
{
	return op_ota_begin(d, size);
}

int cdc_ota_write(struct sim_device *d, uint32_t offset, const uint8_t *data, size_t len)
{
	return op_ota_write(d, offset, data, len);
}

const uint8_t *cdc_ota_peek(struct sim_device *d, uint32_t *size)
{
	struct ota_region r = ota_region(d);
	*size = r.size;
	return flash_peek(d->flash, r.alt, r.base, r.size);
}

int cdc_ota_finish(struct sim_device *d, unsigned *ret_mask)
{
	return op_ota_finish(d, ret_mask);
}

void cdc_enter_listening(struct sim_device *d)
{
	d->mode = SIM_MODE_LISTENING;
	if (d->cdc)
		listening_enter_by_request(d->cdc, sim_now_ms());
}

void cdc_apply_ota(struct sim_device *d)
{
	struct ota_region r = ota_region(d);
	const uint8_t *img = flash_peek(d->flash, r.alt, r.base, r.size);
	size_t off = validate_prefix_offset(d->spec.platform, img, r.size);
	const uint8_t *pre = img + off;
	uint32_t start = (uint32_t)pre[0] | (uint32_t)pre[1] << 8 | (uint32_t)pre[2] << 16 |
			 (uint32_t)pre[3] << 24;
	uint32_t end = (uint32_t)pre[4] | (uint32_t)pre[5] << 8 | (uint32_t)pre[6] << 16 |
		       (uint32_t)pre[7] << 24;
	size_t len = (size_t)(end - start) + 4;
	if (end <= start || len > r.size || !flash_region_at(d->flash, 0, start, len))
		return;
	/* The bootloader copies the module into its slot at boot
	 * (docs/device/console.md#other-observations). */
	flash_erase_range(d->flash, 0, start, len);
	flash_program(d->flash, 0, start, img, len);
}

/* ---- `s` (docs/device/console.md#module-info-reply)
 * ------------------------------------------------------------------ */

static char *op_system_info(void *ctx)
{
	struct sim_device *d = ctx;
	struct vscan s;
	device_scan(d, &s);
	GString *j = g_string_new(NULL);
	g_string_append_printf(j, "{\"p\":%u", d->spec.platform->id);
	if (d->spec.platform->cellular)
		g_string_append(j,
				",\"imei\":\"352753090000000\",\"iccid\":\"89014100000000000000\","
				"\"cellfw\":\"L0.0.00.00.05.06\"");
	g_string_append(j, ",\"m\":[");
	bool first = true;
	static const char stores[] = {'m', 'f', 'b', 't'};
	for (unsigned i = 0; i < s.n; i++) {
		const struct vmodule *m = &s.m[i];
		if (!m->reported)
			continue;
		g_string_append_printf(j, "%s{\"s\":%u,\"l\":\"%c\",\"vc\":%u,\"vv\":%u",
				       first ? "" : ",", m->slot_size, stores[m->store & 3],
				       m->checked, m->passed);
		if (m->function == MODULE_FUNCTION_USER) {
			g_string_append(j, ",\"u\":\"");
			for (int k = 0; k < 32; k++)
				g_string_append_printf(j, "%02X", m->sha256[k]);
			g_string_append(j, "\"");
		}
		g_string_append_printf(j, ",\"f\":\"%c\",\"n\":\"%u\",\"v\":%u,\"d\":[",
				       module_function_letter(m->function), m->index, m->version);
		bool dfirst = true;
		for (int k = 0; k < 2; k++) {
			if (!m->dep_function[k] || m->dep_function[k] > MODULE_FUNCTION_RADIO_STACK)
				continue;
			g_string_append_printf(j, "%s{\"f\":\"%c\",\"n\":\"%u\",\"v\":%u}",
					       dfirst ? "" : ",",
					       module_function_letter(m->dep_function[k]),
					       m->dep_index[k], m->dep_version[k]);
			dfirst = false;
		}
		g_string_append(j, "]}");
		first = false;
	}
	g_string_append(j, "]}");
	char *r = strdup(j->str); /* the engine free()s it */
	g_string_free(j, TRUE);
	return r;
}

/* ---- device -> host bytes --------------------------------------------------------- */

static gboolean on_pty_writable(gint fd, GIOCondition cond, gpointer data);

static void flush_out(struct sim_device *d)
{
	while (d->outq && d->outq->len && d->pty_fd >= 0) {
		ssize_t n = write(d->pty_fd, d->outq->data, d->outq->len);
		if (n > 0) {
			g_byte_array_remove_range(d->outq, 0, (guint)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (!d->out_watch)
			d->out_watch = g_unix_fd_add(d->pty_fd, G_IO_OUT, on_pty_writable, d);
		return;
	}
}

static gboolean on_pty_writable(gint fd, GIOCondition cond, gpointer data)
{
	(void)fd;
	(void)cond;
	struct sim_device *d = data;
	g_mutex_lock(&d->sim->lock);
	d->out_watch = 0;
	flush_out(d);
	g_mutex_unlock(&d->sim->lock);
	return G_SOURCE_REMOVE;
}

static void op_send(void *ctx, const uint8_t *buf, size_t len)
{
	struct sim_device *d = ctx;
	if (!d->outq)
		d->outq = g_byte_array_new();
	if (d->outq->len + len > CDC_OUTQ_MAX)
		return;
	g_byte_array_append(d->outq, buf, (guint)len);
	if (!d->out_watch)
		flush_out(d);
}

/* ---- resets requested by the engine: deferred to the main loop, lock released ---- */

static void reset_firmware_cb(void *data)
{
	device_reset(data, SIM_MODE_UNPLUGGED);
}

static void reset_safe_listening_cb(void *data)
{
	struct sim_device *d = data;
	g_mutex_lock(&d->sim->lock);
	d->listen_on_boot = true;
	g_mutex_unlock(&d->sim->lock);
	device_reset(d, SIM_MODE_SAFE);
}

static void reset_dfu_cb(void *data)
{
	device_reset(data, SIM_MODE_DFU);
}

static void unplug_cb(void *data)
{
	device_unplug_async(data);
}

static void op_reset(void *ctx, enum listening_reset how)
{
	struct sim_device *d = ctx;
	switch (how) {
	case LISTENING_RESET_FIRMWARE:
		sim_schedule(d->sim, 0, reset_firmware_cb, d);
		break;
	case LISTENING_RESET_SAFE_LISTENING:
		sim_schedule(d->sim, 0, reset_safe_listening_cb, d);
		break;
	case LISTENING_RESET_UNPLUG:
		sim_schedule(d->sim, 0, unplug_cb, d);
		break;
	}
}

static void op_exit_listening(void *ctx)
{
	struct sim_device *d = ctx;
	d->listen_on_boot = false;
	if (d->mode == SIM_MODE_LISTENING)
		d->mode = SIM_MODE_NORMAL;
}

/* ---- engine timers -------------------------------------------------------------- */

static gboolean on_cdc_timer(gpointer data);

static void arm_timer(struct sim_device *d)
{
	if (d->cdc_timer) {
		g_source_remove(d->cdc_timer);
		d->cdc_timer = 0;
	}
	if (!d->cdc)
		return;
	uint64_t due = listening_next_deadline(d->cdc);
	if (due == UINT64_MAX)
		return;
	uint64_t now = sim_now_ms();
	d->cdc_timer = g_timeout_add((guint)(due > now ? due - now : 0), on_cdc_timer, d);
}

static gboolean on_cdc_timer(gpointer data)
{
	struct sim_device *d = data;
	g_mutex_lock(&d->sim->lock);
	d->cdc_timer = 0;
	if (d->cdc)
		listening_tick(d->cdc, sim_now_ms());
	arm_timer(d);
	g_mutex_unlock(&d->sim->lock);
	control_poke(d->sim); /* wait-idle */
	return G_SOURCE_REMOVE;
}

/* ---- host -> device bytes ------------------------------------------------------- */

static void watch_pty(struct sim_device *d);

static gboolean retry_pty(gpointer data)
{
	struct sim_device *d = data;
	g_mutex_lock(&d->sim->lock);
	d->pty_retry = 0;
	watch_pty(d);
	g_mutex_unlock(&d->sim->lock);
	return G_SOURCE_REMOVE;
}

static void deliver(struct sim_device *d, const uint8_t *buf, size_t n)
{
	if (d->peer_in >= 0) {
		/* peer=COMMAND: the relay is the device (lrzsz needs pipes,
		 * docs/testing/umockdev.md#lrzsz). */
		size_t done = 0;
		while (done < n) {
			ssize_t w = write(d->peer_in, buf + done, n - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			done += (size_t)w;
		}
		return;
	}
	if (d->cdc) {
		listening_input(d->cdc, buf, n, sim_now_ms());
		arm_timer(d);
	}
}

static gboolean on_pty_readable(gint fd, GIOCondition cond, gpointer data)
{
	struct sim_device *d = data;
	uint8_t buf[CDC_READ_MAX];
	g_mutex_lock(&d->sim->lock);
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n > 0) {
		deliver(d, buf, (size_t)n);
		g_mutex_unlock(&d->sim->lock);
		return G_SOURCE_CONTINUE;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !(cond & (G_IO_HUP | G_IO_ERR))) {
		g_mutex_unlock(&d->sim->lock);
		return G_SOURCE_CONTINUE;
	}
	/* EIO/HUP: nobody has the tty open; poll again shortly
	 * (docs/testing/umockdev.md#serial-ports). */
	d->pty_watch = 0;
	if (!d->pty_retry && d->pty_fd >= 0)
		d->pty_retry = g_timeout_add(PTY_RETRY_MS, retry_pty, d);
	g_mutex_unlock(&d->sim->lock);
	return G_SOURCE_REMOVE;
}

static void watch_pty(struct sim_device *d)
{
	if (d->pty_fd >= 0 && !d->pty_watch)
		d->pty_watch =
		    g_unix_fd_add(d->pty_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_pty_readable, d);
}

static gboolean on_peer_output(gint fd, GIOCondition cond, gpointer data)
{
	struct sim_device *d = data;
	uint8_t buf[CDC_READ_MAX];
	ssize_t n = read(fd, buf, sizeof(buf));
	g_mutex_lock(&d->sim->lock);
	if (n > 0) {
		op_send(d, buf, (size_t)n);
		g_mutex_unlock(&d->sim->lock);
		return G_SOURCE_CONTINUE;
	}
	if (n < 0 && errno == EAGAIN && !(cond & G_IO_HUP)) {
		g_mutex_unlock(&d->sim->lock);
		return G_SOURCE_CONTINUE;
	}
	d->peer_watch = 0;
	g_mutex_unlock(&d->sim->lock);
	return G_SOURCE_REMOVE;
}

static void start_peer(struct sim_device *d)
{
	gchar *argv[] = {"/bin/sh", "-c", d->spec.peer, NULL};
	g_autoptr(GError) err = NULL;
	int in = -1, out = -1;
	if (!g_spawn_async_with_pipes(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &d->peer_pid,
				      &in, &out, NULL, &err)) {
		g_printerr("flashd-sim: %s: peer=%s: %s\n", d->spec.name, d->spec.peer,
			   err->message);
		return;
	}
	g_unix_set_fd_nonblocking(out, TRUE, NULL);
	d->peer_in = in;
	d->peer_out = out;
	d->peer_watch = g_unix_fd_add(out, G_IO_IN | G_IO_HUP, on_peer_output, d);
}

/* ---- faults ----------------------------------------------------------------------- */

static const struct {
	const char *kind;
	enum listening_fault_kind k;
} engine_fault_kinds[] = {
    {"unplug", LISTENING_FAULT_UNPLUG},	  {"cancel", LISTENING_FAULT_CANCEL},
    {"nak", LISTENING_FAULT_NAK_STORM},	  {"silent", LISTENING_FAULT_SILENT},
    {"reset", LISTENING_FAULT_RESET},	  {"stray", LISTENING_FAULT_STRAY_OUTPUT},
    {"atprobe", LISTENING_FAULT_AT_PROBE}};

/* The engine's fault for a SPEC fault; false for DFU-only ones (chunkN, stall, slow-erase). */
static bool engine_fault_of(const struct sim_fault *f, struct listening_fault *out)
{
	if (f->unit == SIM_AT_CHUNK)
		return false;
	for (unsigned k = 0; k < G_N_ELEMENTS(engine_fault_kinds); k++) {
		if (strcmp(engine_fault_kinds[k].kind, f->kind))
			continue;
		*out = (struct listening_fault){
		    .kind = engine_fault_kinds[k].k,
		    .unit = f->unit == SIM_AT_PERCENT ? LISTENING_AT_PERCENT
			    : f->unit == SIM_AT_BLOCK ? LISTENING_AT_BLOCK
						      : LISTENING_AT_BYTE,
		    .at = f->at,
		    .arg = f->arg[0] ? f->arg : NULL,
		};
		return true;
	}
	return false;
}

/*
 * Hands the device's serial faults that have not fired yet to the engine,
 * replacing the ones it had (lock held).  A fault fires once per setting, on
 * the DFU side and the serial side alike: a retry after `unplug@50%` goes
 * through.  The engine has no public call to drop its faults or to say which
 * fired, so its private header is used for those two (listening_internal.h).
 */
static void engine_load_faults(struct sim_device *d)
{
	d->cdc->n_faults = 0;
	d->n_cdc_faults = 0;
	for (unsigned i = 0; i < d->spec.n_faults; i++) {
		struct listening_fault lf;
		if (d->spec.faults[i].fired || !engine_fault_of(&d->spec.faults[i], &lf))
			continue;
		size_t before = d->cdc->n_faults;
		listening_add_fault(d->cdc, &lf);
		if (d->cdc->n_faults > before)
			d->cdc_fault_src[d->n_cdc_faults++] = i;
	}
}

static void engine_sync_fired(struct sim_device *d)
{
	for (unsigned j = 0; j < d->n_cdc_faults && j < d->cdc->n_faults; j++)
		if (d->cdc->faults[j].fired)
			d->spec.faults[d->cdc_fault_src[j]].fired = true;
}

void cdc_faults_changed(struct sim_device *d)
{
	if (!d->cdc)
		return;
	engine_load_faults(d);
	arm_timer(d);
}

uint64_t cdc_next_deadline(struct sim_device *d)
{
	return d->cdc ? listening_next_deadline(d->cdc) : UINT64_MAX;
}

static enum listening_era era_of(const char *os)
{
	if (osver_compare(os, "0.6.1") < 0)
		return LISTENING_ERA_0_4;
	if (osver_compare(os, "2.0.0") < 0)
		return LISTENING_ERA_0_6;
	if (osver_compare(os, "3.0.0") < 0)
		return LISTENING_ERA_2;
	if (osver_compare(os, "6.0.0") < 0)
		return LISTENING_ERA_3;
	return LISTENING_ERA_6;
}

static void line_coding(struct sim_device *d, unsigned baud);
static unsigned slave_speed(int master);

void cdc_attach(struct sim_device *d)
{
	int fd = umockdev_testbed_get_dev_fd(d->sim->tb, d->tty_devnode);
	g_mutex_lock(&d->sim->lock);
	d->pty_fd = fd;
	d->last_baud = 9600; /* cdc-acm's initial line coding */
	if (fd >= 0)
		g_unix_set_fd_nonblocking(fd, TRUE, NULL);
	if (d->spec.peer) {
		if (d->peer_in < 0)
			start_peer(d);
	} else {
		static char mac[18];
		const char *id = d->spec.id;
		snprintf(mac, sizeof(mac), "a4:cf:12:%.2s:%.2s:%.2s", id + 18, id + 20, id + 22);
		struct listening_config cfg = {
		    .era = era_of(d->spec.os),
		    .os_version = d->spec.os,
		    .device_id = d->spec.id,
		    .platform_id = d->spec.platform->id,
		    .wifi = d->spec.platform->wifi,
		    .cellular = d->spec.platform->cellular,
		    .mac = mac,
		    .timeout_scale = d->sim->timeout_scale > 0 ? d->sim->timeout_scale : 1,
		};
		struct listening_ops ops = {
		    .ctx = d,
		    .send = op_send,
		    .reset = op_reset,
		    .exit_listening = op_exit_listening,
		    .ota_begin = op_ota_begin,
		    .ota_write = op_ota_write,
		    .ota_finish = op_ota_finish,
		    .ota_work_ms = op_ota_work_ms,
		    .system_info = op_system_info,
		};
		bool listen = d->mode == SIM_MODE_LISTENING || d->listen_on_boot;
		d->cdc = listening_new(&cfg, &ops, listen ? LISTENING_CONSOLE : LISTENING_APP);
		engine_load_faults(d);
		arm_timer(d);
	}
	/* A host that opens the new tty as soon as it appears may set its speed
	 * before the engine is attached here; on a real device that
	 * SET_LINE_CODING is handled (the handler exists before enumeration). */
	line_coding(d, slave_speed(fd));
	watch_pty(d);
	g_mutex_unlock(&d->sim->lock);
}

void cdc_detach(struct sim_device *d)
{
	g_mutex_lock(&d->sim->lock);
	if (d->pty_watch)
		g_source_remove(d->pty_watch);
	if (d->pty_retry)
		g_source_remove(d->pty_retry);
	if (d->out_watch)
		g_source_remove(d->out_watch);
	if (d->cdc_timer)
		g_source_remove(d->cdc_timer);
	d->pty_watch = d->pty_retry = d->out_watch = d->cdc_timer = 0;
	if (d->cdc) {
		engine_sync_fired(d);
		d->ymodem_bytes += listening_ymodem_bytes(d->cdc);
		d->app_discarded += listening_app_discarded(d->cdc);
		listening_free(d->cdc);
		d->cdc = NULL;
	}
	if (d->outq)
		g_byte_array_set_size(d->outq, 0);
	d->pty_fd = -1; /* owned by the testbed */
	g_mutex_unlock(&d->sim->lock);
}

/* ---- termios ioctl handler ------------------------------------------------------- */

static void baud_dfu_cb(void *data)
{
	reset_dfu_cb(data);
}

/* SET_LINE_CODING reaches the device only when the speed changes (cdc-acm). */
static void line_coding(struct sim_device *d, unsigned baud)
{
	if (baud == d->last_baud || baud == 0)
		return;
	d->last_baud = baud;
	if (d->mode == SIM_MODE_DFU || !d->present)
		return;
	if (baud == MAGIC_BAUD_DFU)
		sim_schedule(d->sim, 0, baud_dfu_cb, d);
	else if (baud == MAGIC_BAUD_LISTEN && osver_compare(d->spec.os, "6.0.0") < 0 && d->cdc) {
		/* At once, before the host's TCSETS returns: cdc-acm's SET_LINE_CODING
		 * completes before the ioctl does, and what the host writes next is
		 * read by the console (Device OS reads its CDC buffer with peek() once
		 * listening mode runs, system_setup.cpp).  Deferring this to the main
		 * loop let a `v` written right after 28800 reach the application
		 * instead, which drops it - for all but one of several devices
		 * switched at once. */
		listening_enter(d->cdc, sim_now_ms());
		arm_timer(d);
	}
}

/* The slave's termios, read through the master (a pty master's termios ioctls act on its slave). */
static unsigned slave_speed(int master)
{
	struct k_termios2 k = {0};
	if (master < 0 || ioctl(master, K_TCGETS2, &k) < 0)
		return 0;
	return (k.c_cflag & K_CBAUD) == K_BOTHER ? k.c_ospeed : cbaud_speed(k.c_cflag);
}

static bool is_set_termios(gulong request)
{
	return request == K_TCSETS2 || request == K_TCSETSW2 || request == K_TCSETSF2 ||
	       request == K_TCSETS || request == K_TCSETSW || request == K_TCSETSF;
}

/*
 * umockdev's default handler (worker thread): runs every ioctl for real on the
 * client's pty, so termios works (umockdev 0.17.16 says ENOTTY), then lets
 * each CDC device see its new line coding.  The default handler only gets
 * ioctls, never read/write (docs/testing/umockdev.md#particle-cli: a per-node handler sends them
 * over a socket that close() on another thread tears down, which aborts
 * node-serialport now and then).  It is not told which node the client
 * opened, so after a TCSETS* every device compares its slave's speed with
 * the last one it saw: only the device whose speed changed reacts, as only
 * that one gets SET_LINE_CODING from cdc-acm.
 */
static gboolean on_tty_ioctl(UMockdevIoctlBase *handler, UMockdevIoctlClient *client, gpointer data)
{
	(void)handler;
	struct sim *sim = data;
	gulong request = umockdev_ioctl_client_get_request(client);
	g_autoptr(GError) err = NULL;
	int my_errno = 0;
	int rc = umockdev_ioctl_client_execute(client, &my_errno, &err);
	if (rc == 0 && is_set_termios(request)) {
		g_mutex_lock(&sim->lock);
		for (unsigned i = 0; i < sim->n_devices; i++) {
			struct sim_device *d = sim->devices[i];
			if (d->present && d->pty_fd >= 0)
				line_coding(d, slave_speed(d->pty_fd));
		}
		g_mutex_unlock(&sim->lock);
	}
	umockdev_ioctl_client_complete(client, rc, my_errno);
	return TRUE;
}

int cdc_tty_handler_install(struct sim *sim, GError **error)
{
	/* Take over the fallback socket of the testbed (umockdev keeps listening
	 * on the unlinked one, which nobody can reach any more). */
	gchar *root = umockdev_testbed_get_root_dir(sim->tb);
	gchar *sock = g_build_filename(root, "ioctl", "_default", NULL);
	unlink(sock);
	g_free(sock);
	g_free(root);
	sim->tty_handler = umockdev_ioctl_base_new();
	g_signal_connect(sim->tty_handler, "handle-ioctl", G_CALLBACK(on_tty_ioctl), sim);
	return umockdev_testbed_attach_ioctl(sim->tb, "_default", sim->tty_handler, error) ? 0 : -1;
}
