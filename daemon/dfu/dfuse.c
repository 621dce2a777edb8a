#include "dfuse.h"

#include <libusb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DFUSE_RECOVERY_MAX    4 /* CLRSTATUS/ABORT rounds before giving up on an unknown state */
#define TRACE_LINES	      (DFU_TRACE_MAX / DFU_TRACE_LINE_MAX)
#define DFUSE_MAX_ERASE_UNITS 4096 /* 16 MiB of 4 KiB pages */
/* A continued read may start this far before its address, in the block that holds it:
 * 2 KiB at full speed (~2 ms on the bus) against the SET_ADDRESS, its two GETSTATUS and
 * the two ABORTs a new read costs (five control transfers, a millisecond or more each). */
#define DFUSE_SKIP_MAX 2048u

enum dfuse_op { OP_NONE, OP_OPEN, OP_UPLOAD, OP_ERASE, OP_DOWNLOAD, OP_LEAVE, OP_IDLE };

/* One explicit state per request in flight (or timer armed). */
enum dfuse_step {
	STEP_IDLE,
	STEP_SET_ALT,	     /* standard SET_INTERFACE sent */
	STEP_RECOVER_STATUS, /* GETSTATUS to learn where the device stands */
	STEP_RECOVER_WAIT,   /* it is busy with an earlier host's command: bwPollTimeout */
	STEP_RECOVER_CLEAR,  /* CLRSTATUS (device was in dfuERROR) */
	STEP_RECOVER_ABORT,  /* ABORT (device was in a *-IDLE / *-SYNC state) */
	STEP_READ_STRING,    /* GET_DESCRIPTOR(string) */
	STEP_COMMAND,	     /* DfuSe command (SET_ADDRESS / ERASE) DNLOAD sent */
	STEP_DATA,	     /* data DNLOAD sent */
	STEP_POLL,	     /* GETSTATUS after a DNLOAD */
	STEP_POLL_WAIT,	     /* waiting bwPollTimeout before the next GETSTATUS */
	STEP_UPLOAD_ABORT,   /* ABORT around an UPLOAD run */
	STEP_SESSION_ABORT,  /* ABORT that ends a read left open (dfuse_set_keep_upload()) */
	STEP_UPLOAD,	     /* UPLOAD sent */
	STEP_LEAVE_DNLOAD,   /* zero-length DNLOAD */
	STEP_LEAVE_STATUS,   /* the one GETSTATUS after it */
	STEP_STALL_STATUS,   /* GETSTATUS to learn why a request stalled */
	STEP_DONE,	     /* completion scheduled */
};

/* The strings read by open, in order. */
enum string_kind { STR_SERIAL, STR_MAP, STR_PROTECTION };

struct string_req {
	enum string_kind kind;
	uint8_t index;
	uint8_t alt;
};

struct dfuse {
	struct event_base *base;
	struct dfu_io io;
	struct dfu_descriptors desc;
	struct dfuse_info info;
	struct dfuse_stats stats;
	bool address_per_chunk;
	dfuse_progress_fn progress;
	void *progress_userdata;
	dfuse_notice_fn notice;
	void *notice_userdata;
	bool cancel; /* stop the current op at its next request boundary */
	char known_serial[DFUSE_STRING_MAX + 1]; /* dfuse_set_serial(), "" = read it */

	/* Current operation. */
	enum dfuse_op op;
	enum dfuse_step step;
	dfuse_done_fn done;
	void *userdata;
	uint8_t alt;	/* the op's alt setting */
	int cur_alt;	/* alt selected on the device, -1 = unknown */
	bool recovered; /* GETSTATUS said dfuIDLE since the last SET_INTERFACE */
	int recovery_rounds;
	uint32_t address; /* op start address */
	size_t len;
	size_t offset;			/* bytes done */
	unsigned chunk;			/* data chunk index in this op */
	uint32_t cmd_address;		/* address of the command in flight */
	uint8_t cmd;			/* DfuSe command in flight */
	uint16_t data_wvalue;		/* wValue of the last data DNLOAD */
	size_t erase_done, erase_total; /* bytes of erase units */
	struct dfuse_position last;	/* where the last erase or download ended */
	bool address_set;		/* the pointer points at address + offset */
	bool upload_opened, upload_closed, short_read;
	dfuse_upload_more_fn upload_more; /* dfuse_upload_until(): go on after a block? */
	/* An upload left in dfuUPLOAD-IDLE (keep_upload): the next upload of the same alt at
	 * session_ptr + k * DFUSE_BLOCK goes on with block number k + 2, without SET_ADDRESS
	 * and the two ABORTs around it; anything else ends it with one ABORT first. */
	bool keep_upload, session, continuing;
	size_t skip; /* bytes of the first block before address (a continued read) */
	uint8_t session_alt;
	uint32_t session_ptr;
	size_t upload_len; /* bytes the last upload read */
	const uint8_t *wdata;
	uint8_t *rdata;
	struct dfuse_erase_unit *units;
	int n_units, unit_i;
	struct string_req strings[DFUSE_MAX_ALTS + 2];
	int n_strings, string_i;
	unsigned polls;		/* busy replies in the current busy wait */
	bool busy_late;		/* its deadline passed: the next busy reply fails the operation */
	enum dfuse_step polled; /* STEP_COMMAND or STEP_DATA: what STEP_POLL is about */
	enum dfuse_step stalled_step; /* which request stalled (STEP_STALL_STATUS) */
	int stall_usb_status;
	uint8_t last_state, last_status;
	bool have_status;

	/* Result delivery is always deferred to the loop. */
	struct event *timer;	  /* bwPollTimeout */
	struct event *busy_timer; /* the busy wait's deadline (DFUSE_BUSY_MAX_MS) */
	struct event *defer;
	int result;
	struct error err;

	/* Flight recorder. */
	char trace[TRACE_LINES][DFU_TRACE_LINE_MAX];
	unsigned trace_next, trace_count;
	struct timespec t0;
};

static const char *const state_names[] = {
    "appIDLE",	      "appDETACH",	  "dfuIDLE",	 "dfuDNLOAD-SYNC",	   "dfuDNBUSY",
    "dfuDNLOAD-IDLE", "dfuMANIFEST-SYNC", "dfuMANIFEST", "dfuMANIFEST-WAIT-RESET", "dfuUPLOAD-IDLE",
    "dfuERROR",
};

static const char *const status_names[] = {
    "OK",      "errTARGET", "errFILE",	  "errWRITE",	   "errERASE",	  "errCHECK_ERASED",
    "errPROG", "errVERIFY", "errADDRESS", "errNOTDONE",	   "errFIRMWARE", "errVENDOR",
    "errUSBR", "errPOR",    "errUNKNOWN", "errSTALLEDPKT",
};

const char *dfu_state_name(int state)
{
	if (state < 0 || (size_t)state >= sizeof(state_names) / sizeof(state_names[0]))
		return "unknown-state";
	return state_names[state];
}

const char *dfu_status_name(int status)
{
	if (status < 0 || (size_t)status >= sizeof(status_names) / sizeof(status_names[0]))
		return "unknown-status";
	return status_names[status];
}

static const char *op_name(enum dfuse_op op)
{
	switch (op) {
	case OP_NONE:
		return "idle";
	case OP_OPEN:
		return "open";
	case OP_UPLOAD:
		return "upload";
	case OP_ERASE:
		return "erase";
	case OP_DOWNLOAD:
		return "download";
	case OP_LEAVE:
		return "leave";
	case OP_IDLE:
		return "end of a read";
	}
	return "?";
}

bool dfu_descriptors_parse_functional(struct dfu_descriptors *d, const uint8_t *extra, size_t len)
{
	size_t i = 0;
	while (i + 2 <= len) {
		uint8_t blen = extra[i], type = extra[i + 1];
		if (blen < 2 || i + blen > len)
			return false;
		if (type == 0x21 && blen >= 7) {
			d->has_functional = true;
			d->attributes = extra[i + 2];
			d->detach_timeout = (uint16_t)(extra[i + 3] | extra[i + 4] << 8);
			d->transfer_size = (uint16_t)(extra[i + 5] | extra[i + 6] << 8);
			d->dfu_version =
			    blen >= 9 ? (uint16_t)(extra[i + 7] | extra[i + 8] << 8) : 0x0100;
			return true;
		}
		i += blen;
	}
	return false;
}

/* ---- flight recorder ---------------------------------------------------------------- */

static void trace(struct dfuse *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(struct dfuse *s, const char *fmt, ...)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long ms = (now.tv_sec - s->t0.tv_sec) * 1000 + (now.tv_nsec - s->t0.tv_nsec) / 1000000;
	char *line = s->trace[s->trace_next];
	int n = snprintf(line, DFU_TRACE_LINE_MAX, "+%ldms ", ms);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && n < DFU_TRACE_LINE_MAX)
		vsnprintf(line + n, DFU_TRACE_LINE_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	s->trace_next = (s->trace_next + 1) % TRACE_LINES;
	if (s->trace_count < TRACE_LINES)
		s->trace_count++;
}

json_t *dfuse_trace_json(const struct dfuse *s)
{
	json_t *a = json_array();
	unsigned first = (s->trace_next + TRACE_LINES - s->trace_count) % TRACE_LINES;
	for (unsigned i = 0; i < s->trace_count; i++)
		json_array_append_new(a, json_string(s->trace[(first + i) % TRACE_LINES]));
	return a;
}

void dfuse_attach_trace(const struct dfuse *s, struct error *err)
{
	if (s && err && error_detail_type(err->code, "usb_trace") == 'a')
		error_detail_json(err, "usb_trace", dfuse_trace_json(s));
}

/* ---- error mapping ------------------------------------------------------------------ */

int dfu_usb_error_set(struct error *err, int usb_status, const char *phase)
{
	switch (usb_status) {
	case LIBUSB_ERROR_ACCESS:
		error_set(err, ERR_PERMISSION_DENIED, "the daemon may not open the USB device (%s)",
			  phase);
		error_detail_str(err, "operation", phase);
		error_hint(err,
			   "install flashd's udev rules (systemd/70-flashd.rules, they grant the "
			   "flashd group access to 2b04:d0xx) and re-plug the device, or run the "
			   "daemon as root");
		break;
	case LIBUSB_ERROR_NO_DEVICE:
		error_set(err, ERR_DEVICE_GONE, "the device disappeared during %s", phase);
		error_detail_str(err, "phase", phase);
		error_detail_str(err, "usb_error", libusb_error_name(usb_status));
		break;
	case LIBUSB_ERROR_TIMEOUT:
		error_set(err, ERR_TIMED_OUT, "the device did not answer a USB request during %s",
			  phase);
		error_detail_str(err, "phase", phase);
		error_detail_int(err, "timeout_ms", DFUSE_CONTROL_TIMEOUT_MS);
		break;
	case LIBUSB_ERROR_BUSY:
		error_set(err, ERR_DEVICE_BUSY, "another program holds the device's DFU interface");
		break;
	default:
		error_set(err, ERR_TRANSFER_FAILED, "a USB request failed during %s: %s", phase,
			  libusb_error_name(usb_status));
		error_detail_str(err, "phase", phase);
		error_detail_str(err, "usb_error", libusb_error_name(usb_status));
		break;
	}
	return -1;
}

static void detail_int_if(struct error *err, const char *key, long long v)
{
	if (error_detail_type(err->code, key) == 'i')
		error_detail_int(err, key, v);
}

static void detail_str_if(struct error *err, const char *key, const char *v)
{
	if (error_detail_type(err->code, key) == 's')
		error_detail_str(err, key, v);
}

/* The facts every DFU failure carries (issue 7: dfu_state, dfu_status, alt, address, chunk). */
static void add_context(struct dfuse *s, struct error *err)
{
	detail_str_if(err, "phase", op_name(s->op));
	detail_int_if(err, "alt", s->alt);
	detail_int_if(err, "address",
		      s->op == OP_DOWNLOAD || s->op == OP_UPLOAD
			  ? (long long)(s->address + s->offset)
			  : (long long)s->cmd_address);
	if (s->op == OP_DOWNLOAD || s->op == OP_UPLOAD)
		detail_int_if(err, "chunk", s->chunk);
	if (s->have_status) {
		detail_int_if(err, "dfu_state", s->last_state);
		detail_int_if(err, "dfu_status", s->last_status);
		detail_str_if(err, "dfu_state_name", dfu_state_name(s->last_state));
		detail_str_if(err, "dfu_status_name", dfu_status_name(s->last_status));
	}
	dfuse_attach_trace(s, err);
}

/* A sentence a person understands for each DFU status (docs/device/dfuse.md#requests-and-states and
 * the DFU 1.1 spec). */
static const char *status_sentence(int status)
{
	switch (status) {
	case DFU_STATUS_ERR_TARGET:
		return "the device does not accept this address or command (errTARGET)";
	case DFU_STATUS_ERR_FILE:
		return "the device found the data unusable for this memory (errFILE)";
	case DFU_STATUS_ERR_WRITE:
		return "the device could not write its flash (errWRITE)";
	case DFU_STATUS_ERR_ERASE:
		return "the device could not erase its flash (errERASE)";
	case DFU_STATUS_ERR_CHECK_ERASED:
		return "the device found flash that should have been erased but was not "
		       "(errCHECK_ERASED)";
	case DFU_STATUS_ERR_PROG:
		return "programming the device's flash failed (errPROG)";
	case DFU_STATUS_ERR_VERIFY:
		return "the device read back different bytes than were written (errVERIFY)";
	case DFU_STATUS_ERR_ADDRESS:
		return "the address is outside the device's memory (errADDRESS)";
	case DFU_STATUS_ERR_NOTDONE:
		return "the device expected more data before finishing (errNOTDONE)";
	case DFU_STATUS_ERR_FIRMWARE:
		return "the device considers the written firmware corrupt (errFIRMWARE)";
	case DFU_STATUS_ERR_VENDOR:
		return "the device refused the request: Device Protection is on (errVENDOR)";
	case DFU_STATUS_ERR_USBR:
		return "the device saw an unexpected USB reset (errUSBR)";
	case DFU_STATUS_ERR_POR:
		return "the device saw an unexpected power-on reset (errPOR)";
	case DFU_STATUS_ERR_UNKNOWN:
		return "the device refused the request in its current state (errUNKNOWN)";
	case DFU_STATUS_ERR_STALLEDPKT:
		return "the device did not understand the request (errSTALLEDPKT)";
	default:
		return "the device reported an error";
	}
}

/* Maps a DFU status to a catalogue id: refusals, protection, or a broken transfer. */
static void dfu_status_error(struct dfuse *s, struct error *err, const char *what)
{
	int st = s->last_status;
	const char *sentence = status_sentence(st);
	switch (st) {
	case DFU_STATUS_ERR_VENDOR:
		error_set(err, ERR_DEVICE_PROTECTED, "%s at 0x%08x: %s", what, s->cmd_address,
			  sentence);
		error_detail_str(err, "protection",
				 s->info.protection[0] ? s->info.protection : "p");
		error_detail_str(err, "reason", sentence);
		break;
	case DFU_STATUS_ERR_TARGET:
	case DFU_STATUS_ERR_FILE:
	case DFU_STATUS_ERR_ADDRESS:
	case DFU_STATUS_ERR_NOTDONE:
	case DFU_STATUS_ERR_FIRMWARE:
		error_set(err, ERR_DEVICE_REJECTED, "%s: %s", what, sentence);
		error_detail_str(err, "cause", dfu_status_name(st));
		error_detail_str(err, "diagnosis", sentence);
		break;
	default:
		error_set(err, ERR_TRANSFER_FAILED, "%s: %s", what, sentence);
		error_detail_str(err, "reason", sentence);
		break;
	}
	add_context(s, err);
}

/* ---- plumbing ----------------------------------------------------------------------- */

/* The device answered something other than busy, or the operation ends: no busy wait. */
static void busy_end(struct dfuse *s)
{
	evtimer_del(s->busy_timer);
	s->busy_late = false;
	s->polls = 0;
}

static void finish(struct dfuse *s, int result)
{
	busy_end(s);
	/* After a failure the device may sit in dfuERROR: recover before the next request. */
	if (result < 0) {
		s->recovered = false;
		s->session = false;
	}
	s->result = result;
	s->step = STEP_DONE;
	event_active(s->defer, EV_TIMEOUT, 0);
}

static void fail_usb(struct dfuse *s, int usb_status, const char *what)
{
	dfu_usb_error_set(&s->err, usb_status, op_name(s->op));
	error_prefix(&s->err, "%s: ", what);
	add_context(s, &s->err);
	finish(s, -1);
}

static void fail_msg(struct dfuse *s, enum error_code code, const char *reason, const char *fmt,
		     ...) __attribute__((format(printf, 4, 5)));
static void fail_msg(struct dfuse *s, enum error_code code, const char *reason, const char *fmt,
		     ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(&s->err, code, fmt, ap);
	va_end(ap);
	detail_str_if(&s->err, "reason", reason);
	add_context(s, &s->err);
	finish(s, -1);
}

static void position_now(const struct dfuse *s, struct dfuse_position *p)
{
	memset(p, 0, sizeof(*p));
	if (s->op == OP_DOWNLOAD) {
		p->valid = true;
		p->start = s->address;
		p->address = (uint32_t)(s->address + s->offset);
		p->done = s->offset;
		p->chunk = s->chunk;
	} else if (s->op == OP_ERASE) {
		p->valid = p->erasing = true;
		p->start = s->cmd_address;
		if (s->units && s->n_units > 0)
			p->start = s->units[0].address;
		p->address = s->cmd_address;
		if (s->units && s->unit_i < s->n_units)
			p->address = s->units[s->unit_i].address;
		else if (s->units && s->n_units > 0) /* every unit erased */
			p->address = s->units[s->n_units - 1].address +
				     (uint32_t)s->units[s->n_units - 1].size;
		p->done = s->erase_done;
	}
}

void dfuse_position(const struct dfuse *s, struct dfuse_position *ret)
{
	if (s->op == OP_DOWNLOAD || s->op == OP_ERASE)
		position_now(s, ret);
	else
		*ret = s->last;
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfuse *s = arg;
	dfuse_done_fn done = s->done;
	void *userdata = s->userdata;
	int result = s->result;
	struct error err;
	error_init(&err);
	error_move(&err, &s->err);
	if (s->op == OP_DOWNLOAD || s->op == OP_ERASE)
		position_now(s, &s->last);
	s->op = OP_NONE;
	s->step = STEP_IDLE;
	s->done = NULL;
	free(s->units);
	s->units = NULL;
	if (done)
		done(s, result, result < 0 ? &err : NULL, userdata);
	error_clear(&err);
}

static void send_req(struct dfuse *s, enum dfuse_step step, uint8_t type, uint8_t req,
		     uint16_t value, uint16_t index, const uint8_t *out, uint16_t length)
{
	struct dfu_setup setup = {type, req, value, index, length};
	s->step = step;
	s->stats.requests++;
	if (type == 0x21 && length > 0 && out)
		trace(s, "OUT req=%u wValue=%u len=%u data=%02x%02x%02x%02x%02x", req, value,
		      length, out[0], length > 1 ? out[1] : 0, length > 2 ? out[2] : 0,
		      length > 3 ? out[3] : 0, length > 4 ? out[4] : 0);
	else
		trace(s, "%s type=%02x req=%u wValue=0x%04x wIndex=%u len=%u",
		      type & 0x80 ? "IN " : "OUT", type, req, value, index, length);
	int r = s->io.control(s->io.ctx, &setup, out, DFUSE_CONTROL_TIMEOUT_MS);
	if (r < 0) {
		trace(s, "submit failed: %s", libusb_error_name(r));
		fail_usb(s, r, "submitting a USB request");
	}
}

static void send_getstatus(struct dfuse *s, enum dfuse_step step)
{
	s->stats.getstatus++;
	send_req(s, step, 0xa1, DFU_GETSTATUS, 0, s->desc.interface, NULL, 6);
}

static void send_command(struct dfuse *s, uint8_t cmd, uint32_t address)
{
	uint8_t b[5] = {cmd, address & 0xff, (address >> 8) & 0xff, (address >> 16) & 0xff,
			(address >> 24) & 0xff};
	s->cmd = cmd;
	s->cmd_address = address;
	if (cmd == DFUSE_CMD_SET_ADDRESS)
		s->stats.set_address++;
	else if (cmd == DFUSE_CMD_ERASE)
		s->stats.erases++;
	send_req(s, STEP_COMMAND, 0x21, DFU_DNLOAD, 0, s->desc.interface, b, 5);
}

static bool parse_status(struct dfuse *s, const uint8_t *in, size_t actual, unsigned *poll_ms)
{
	if (actual < 6) {
		trace(s, "GETSTATUS short reply (%zu bytes)", actual);
		return false;
	}
	s->last_status = in[0];
	s->last_state = in[4];
	s->have_status = true;
	*poll_ms = (unsigned)(in[1] | in[2] << 8 | in[3] << 16);
	trace(s, "GETSTATUS -> %s %s poll=%ums", dfu_status_name(in[0]), dfu_state_name(in[4]),
	      *poll_ms);
	return true;
}

/* ---- the plan: what each operation sends next ---------------------------------------- */

static void next(struct dfuse *s);

static void finish_ok(struct dfuse *s)
{
	finish(s, 0);
}

static void next_open(struct dfuse *s)
{
	if (s->string_i < s->n_strings) {
		const struct string_req *r = &s->strings[s->string_i];
		send_req(s, STEP_READ_STRING, 0x80, 0x06 /* GET_DESCRIPTOR */,
			 (uint16_t)(0x0300 | r->index), 0x0409, NULL, DFUSE_STRING_MAX);
		return;
	}
	/* Bootloaders before 6.1.2 have no 0xFA string: an all-'b' map means protected
	 * (docs/device/dfuse.md#particle-usb-sequence). */
	if (!s->info.protection[0]) {
		bool all_b = s->desc.n_alts > 0;
		for (unsigned a = 0; a < s->desc.n_alts && a < DFUSE_MAX_ALTS; a++) {
			if (!s->info.map_valid[a])
				continue;
			for (unsigned i = 0; i < s->info.maps[a].n_segments; i++)
				if (s->info.maps[a].segments[i].attrs != DFUSE_MEM_ERASABLE)
					all_b = false;
		}
		s->info.protected_device = all_b;
	}
	finish_ok(s);
}

/* The length of the next UPLOAD: a block, the rest, or the first block of a continued
 * read from its start (skip bytes before address). */
static size_t upload_want(const struct dfuse *s)
{
	size_t n = s->skip + s->len - s->offset;
	return n > DFUSE_BLOCK ? DFUSE_BLOCK : n;
}

static void next_upload(struct dfuse *s)
{
	if (!s->address_set) {
		s->session_ptr = s->address;
		send_command(s, DFUSE_CMD_SET_ADDRESS, s->address);
		return;
	}
	/* docs/device/dfuse.md#particle-usb-sequence: SET_ADDRESS, ABORT to dfuIDLE, then UPLOAD
	 * wValue 2, 3, ... */
	if (!s->upload_opened) {
		send_req(s, STEP_UPLOAD_ABORT, 0x21, DFU_ABORT, 0, s->desc.interface, NULL, 0);
		return;
	}
	if (s->offset < s->len && !s->short_read) {
		size_t n = upload_want(s);
		s->stats.uploads++;
		send_req(s, STEP_UPLOAD, 0xa1, DFU_UPLOAD, (uint16_t)(2 + s->chunk),
			 s->desc.interface, NULL, (uint16_t)n);
		return;
	}
	if (s->keep_upload && !s->short_read) {
		/* left in dfuUPLOAD-IDLE for the next read; the next other request closes it */
		s->session = true;
		s->session_alt = s->alt;
		finish_ok(s);
		return;
	}
	/* Back to dfuIDLE: a DNLOAD in dfuUPLOAD-IDLE is an error
	 * (docs/device/dfuse.md#requests-and-states). */
	if (!s->upload_closed) {
		send_req(s, STEP_UPLOAD_ABORT, 0x21, DFU_ABORT, 0, s->desc.interface, NULL, 0);
		return;
	}
	if (s->short_read) {
		fail_msg(s, ERR_TRANSFER_FAILED, "short upload",
			 "the device returned only %zu of %zu bytes reading 0x%08x", s->offset,
			 s->len, s->address);
		return;
	}
	finish_ok(s);
}

static void next_erase(struct dfuse *s)
{
	if (s->unit_i < s->n_units) {
		send_command(s, DFUSE_CMD_ERASE, s->units[s->unit_i].address);
		return;
	}
	finish_ok(s);
}

static bool block_addressing(const struct dfuse *s)
{
	/* docs/device/dfuse.md#requests-and-states: address = (wValue - 2) * 4096 + pointer, so
	 * block numbers only advance with
	 * exactly 4096-byte chunks; otherwise (or as a per-device fallback) set the pointer
	 * before every chunk like dfu-util and particle-usb do. */
	return !s->address_per_chunk && dfuse_transfer_size(s) == DFUSE_BLOCK &&
	       s->chunk + 2 <= 0xffff;
}

static void next_download(struct dfuse *s)
{
	if (s->offset >= s->len) {
		finish_ok(s);
		return;
	}
	if (!s->address_set) {
		send_command(s, DFUSE_CMD_SET_ADDRESS, (uint32_t)(s->address + s->offset));
		return;
	}
	size_t n = s->len - s->offset;
	if (n > dfuse_transfer_size(s))
		n = dfuse_transfer_size(s);
	uint16_t wvalue = block_addressing(s) ? (uint16_t)(2 + s->chunk) : 2;
	s->cmd_address = (uint32_t)(s->address + s->offset);
	s->data_wvalue = wvalue;
	s->stats.dnload_chunks++;
	send_req(s, STEP_DATA, 0x21, DFU_DNLOAD, wvalue, s->desc.interface, s->wdata + s->offset,
		 (uint16_t)n);
}

static void next(struct dfuse *s)
{
	if (s->session && !s->continuing) {
		/* an open read ends before any other request: ABORT, back to dfuIDLE (DFU 1.1
		 * state diagram: ABORT in dfuUPLOAD-IDLE; dfu-util's abort-to-idle) */
		send_req(s, STEP_SESSION_ABORT, 0x21, DFU_ABORT, 0, s->desc.interface, NULL, 0);
		return;
	}
	if (s->op == OP_IDLE) {
		finish_ok(s);
		return;
	}
	if (s->op != OP_LEAVE && s->cur_alt != s->alt) {
		/* Standard SET_INTERFACE as an async control transfer: libusb's
		 * libusb_set_interface_alt_setting() is synchronous (house rule: never block). */
		send_req(s, STEP_SET_ALT, 0x01, 0x0b, s->alt, s->desc.interface, NULL, 0);
		return;
	}
	if (s->cancel && (s->op == OP_ERASE || s->op == OP_DOWNLOAD || s->op == OP_UPLOAD)) {
		if (s->op == OP_ERASE)
			error_set(
			    &s->err, ERR_CANCELLED,
			    "cancelled while erasing, before the erase unit at 0x%08x (alt %u)",
			    s->unit_i < s->n_units ? s->units[s->unit_i].address : s->cmd_address,
			    s->alt);
		else
			error_set(&s->err, ERR_CANCELLED,
				  "cancelled during %s at 0x%08x (alt %u, chunk %u)",
				  op_name(s->op), (uint32_t)(s->address + s->offset), s->alt,
				  s->chunk);
		detail_int_if(&s->err, "bytes_sent", (long long)s->offset);
		add_context(s, &s->err);
		finish(s, -1);
		return;
	}
	if (!s->recovered) {
		send_getstatus(s, STEP_RECOVER_STATUS);
		return;
	}
	switch (s->op) {
	case OP_OPEN:
		next_open(s);
		break;
	case OP_UPLOAD:
		next_upload(s);
		break;
	case OP_ERASE:
		next_erase(s);
		break;
	case OP_DOWNLOAD:
		next_download(s);
		break;
	case OP_LEAVE:
		send_req(s, STEP_LEAVE_DNLOAD, 0x21, DFU_DNLOAD, 2, s->desc.interface, NULL, 0);
		break;
	case OP_IDLE: /* handled above */
	case OP_NONE:
		break;
	}
}

/* ---- events -------------------------------------------------------------------------- */

/*
 * docs/device/dfuse.md#requests-and-states: a device that does not advance its pointer with the
 * block number refuses a
 * block-numbered chunk with errADDRESS or errTARGET.  Switch to SET_ADDRESS before every
 * chunk (what dfu-util and particle-usb always do), recover from dfuERROR and send the
 * chunk again.  Once per operation: a second refusal is a real error.
 */
static bool address_fallback(struct dfuse *s)
{
	if (s->op != OP_DOWNLOAD || s->address_per_chunk || s->data_wvalue <= 2 ||
	    (s->last_status != DFU_STATUS_ERR_ADDRESS && s->last_status != DFU_STATUS_ERR_TARGET))
		return false;
	s->address_per_chunk = true;
	s->address_set = false;
	s->recovered = false;
	s->recovery_rounds = 0;
	s->stats.address_fallbacks++;
	trace(s, "block-numbered chunk refused (%s): SET_ADDRESS before every chunk from now on",
	      dfu_status_name(s->last_status));
	if (s->notice) {
		char msg[192];
		snprintf(msg, sizeof(msg),
			 "the device refused block-numbered chunk %u at 0x%08x with %s; sending "
			 "SET_ADDRESS before every chunk from now on",
			 s->chunk, s->cmd_address, dfu_status_name(s->last_status));
		s->notice(s, "retrying-set-address", msg, s->notice_userdata);
	}
	next(s);
	return true;
}

/* The GETSTATUS that ends a bwPollTimeout wait (STEP_POLL_WAIT, STEP_RECOVER_WAIT). */
static void poll_again(struct dfuse *s)
{
	switch (s->step) {
	case STEP_POLL_WAIT:
		send_getstatus(s, STEP_POLL);
		break;
	case STEP_RECOVER_WAIT:
		send_getstatus(s, STEP_RECOVER_STATUS);
		break;
	default:
		break;
	}
}

/*
 * The one busy wait of both paths: the device said it is busy (dfuDNBUSY; after a DNLOAD
 * also dfuDNLOAD-SYNC), so wait its bwPollTimeout (capped) in wait_step and ask again.
 * A wait is bounded by time, not by a number of polls: a device may answer "busy, ask again
 * in 0 ms" as fast as the bus allows for as long as its flash takes, and one that asks for
 * long pauses must not hold the job for polls x pauses.  The first busy reply arms the
 * deadline (busy_timer, DFUSE_BUSY_MAX_MS); when it passes, a pause is cut short and the
 * device asked once more (on_busy_deadline()); a busy reply after it fails the operation.
 * busy_end() (any other reply, or the end of the operation) disarms it.
 */
static void busy_wait(struct dfuse *s, unsigned poll_ms, enum dfuse_step wait_step)
{
	s->polls++;
	if (s->busy_late) {
		if (wait_step == STEP_RECOVER_WAIT)
			error_set(&s->err, ERR_TIMED_OUT,
				  "the device stayed busy (dfuDNBUSY) for more than %u ms (%u "
				  "status polls) on open",
				  DFUSE_BUSY_MAX_MS, s->polls);
		else
			error_set(&s->err, ERR_TIMED_OUT,
				  "the device stayed busy for more than %u ms (%u status polls)",
				  DFUSE_BUSY_MAX_MS, s->polls);
		detail_int_if(&s->err, "timeout_ms", DFUSE_BUSY_MAX_MS);
		add_context(s, &s->err);
		finish(s, -1);
		return;
	}
	if (!evtimer_pending(s->busy_timer, NULL)) {
		struct timeval deadline = {DFUSE_BUSY_MAX_MS / 1000,
					   (DFUSE_BUSY_MAX_MS % 1000) * 1000};
		evtimer_add(s->busy_timer, &deadline);
	}
	if (poll_ms > DFUSE_POLL_MAX_MS)
		poll_ms = DFUSE_POLL_MAX_MS;
	struct timeval tv = {poll_ms / 1000, (poll_ms % 1000) * 1000};
	s->step = wait_step;
	evtimer_add(s->timer, &tv);
}

static void on_busy_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfuse *s = arg;
	s->busy_late = true;
	trace(s, "busy for %u ms (%u polls): last GETSTATUS", DFUSE_BUSY_MAX_MS, s->polls);
	if (s->step == STEP_POLL_WAIT || s->step == STEP_RECOVER_WAIT) {
		evtimer_del(s->timer);
		poll_again(s);
	}
	/* else a GETSTATUS is in flight: its answer decides */
}

/* GETSTATUS after SET_INTERFACE: dfu-util's open sequence
 * (docs/device/dfuse.md#dfu-util-sequence). */
static void on_recover_status(struct dfuse *s, unsigned poll_ms)
{
	if (s->last_state == DFU_STATE_DNBUSY) {
		/* Still finishing a command of a host that went away (a flash killed during
		 * an erase): not a state to clear, wait bwPollTimeout and ask again. */
		busy_wait(s, poll_ms, STEP_RECOVER_WAIT);
		return;
	}
	busy_end(s);
	if (++s->recovery_rounds > DFUSE_RECOVERY_MAX) {
		fail_msg(s, ERR_TRANSFER_FAILED, "device does not return to dfuIDLE",
			 "the device stays in %s after %d recovery attempts",
			 dfu_state_name(s->last_state), DFUSE_RECOVERY_MAX);
		return;
	}
	switch (s->last_state) {
	case DFU_STATE_IDLE:
		if (s->last_status == DFU_STATUS_OK) {
			s->recovered = true;
			next(s);
		} else {
			send_req(s, STEP_RECOVER_CLEAR, 0x21, DFU_CLRSTATUS, 0, s->desc.interface,
				 NULL, 0);
		}
		break;
	case DFU_STATE_ERROR:
		send_req(s, STEP_RECOVER_CLEAR, 0x21, DFU_CLRSTATUS, 0, s->desc.interface, NULL, 0);
		break;
	case DFU_STATE_DNLOAD_IDLE:
	case DFU_STATE_UPLOAD_IDLE:
	case DFU_STATE_DNLOAD_SYNC:
	case DFU_STATE_MANIFEST_SYNC:
		send_req(s, STEP_RECOVER_ABORT, 0x21, DFU_ABORT, 0, s->desc.interface, NULL, 0);
		break;
	case DFU_STATE_APP_IDLE:
	case DFU_STATE_APP_DETACH:
		fail_msg(s, ERR_TRANSFER_FAILED, "device in runtime mode",
			 "the device is still running its firmware (%s), not the DFU bootloader",
			 dfu_state_name(s->last_state));
		break;
	default:
		fail_msg(s, ERR_TRANSFER_FAILED, "unexpected state",
			 "the device is in %s and cannot take requests",
			 dfu_state_name(s->last_state));
		break;
	}
}

/* GETSTATUS after a DNLOAD (command or data): DNBUSY → wait bwPollTimeout, IDLE → next. */
static void on_poll(struct dfuse *s, unsigned poll_ms)
{
	const char *what = s->polled == STEP_DATA      ? "writing"
			   : s->cmd == DFUSE_CMD_ERASE ? "erasing"
						       : "setting the address";
	bool busy = s->last_state == DFU_STATE_DNBUSY || s->last_state == DFU_STATE_DNLOAD_SYNC;
	if (!busy || s->last_status != DFU_STATUS_OK)
		busy_end(s);
	if (s->last_state == DFU_STATE_ERROR || s->last_status != DFU_STATUS_OK) {
		if (s->polled == STEP_DATA && address_fallback(s))
			return;
		char buf[128];
		snprintf(buf, sizeof(buf), "%s at 0x%08x (alt %u) failed", what, s->cmd_address,
			 s->alt);
		dfu_status_error(s, &s->err, buf);
		finish(s, -1);
		return;
	}
	switch (s->last_state) {
	case DFU_STATE_DNBUSY:
	case DFU_STATE_DNLOAD_SYNC:
		busy_wait(s, poll_ms, STEP_POLL_WAIT);
		break;
	case DFU_STATE_DNLOAD_IDLE:
		/* The command or chunk is done. */
		if (s->polled == STEP_DATA) {
			size_t n = s->len - s->offset;
			if (n > dfuse_transfer_size(s))
				n = dfuse_transfer_size(s);
			s->offset += n;
			s->stats.bytes_written += n;
			s->chunk++;
			if (!block_addressing(s))
				s->address_set = false;
			if (s->progress)
				s->progress(s, s->address, s->offset, s->len, s->progress_userdata);
		} else if (s->cmd == DFUSE_CMD_SET_ADDRESS) {
			s->address_set = true;
		} else if (s->cmd == DFUSE_CMD_ERASE) {
			s->erase_done += s->units[s->unit_i].size;
			s->unit_i++;
			if (s->progress)
				s->progress(s, s->address, s->erase_done, s->erase_total,
					    s->progress_userdata);
		}
		next(s);
		break;
	default:
		fail_msg(s, ERR_TRANSFER_FAILED, "unexpected state",
			 "after %s at 0x%08x the device went to %s instead of dfuDNLOAD-IDLE", what,
			 s->cmd_address, dfu_state_name(s->last_state));
		break;
	}
}

/* The one GETSTATUS after the leave request (docs/device/dfuse.md#requests-and-states): 5, 7 or a
 * vanished device = success. */
static void on_leave_status(struct dfuse *s, int usb_status, const uint8_t *in, size_t actual)
{
	unsigned poll_ms;
	if (usb_status == LIBUSB_ERROR_NO_DEVICE || usb_status == LIBUSB_ERROR_PIPE ||
	    usb_status == LIBUSB_ERROR_IO) {
		trace(s, "leave: %s (device is resetting)", libusb_error_name(usb_status));
		finish_ok(s);
		return;
	}
	if (usb_status < 0) {
		fail_usb(s, usb_status, "leaving DFU mode");
		return;
	}
	if (!parse_status(s, in, actual, &poll_ms)) {
		fail_msg(s, ERR_TRANSFER_FAILED, "short GETSTATUS reply",
			 "the device sent a malformed status while leaving DFU mode");
		return;
	}
	if (s->last_status == DFU_STATUS_OK &&
	    (s->last_state == DFU_STATE_DNLOAD_IDLE || s->last_state == DFU_STATE_MANIFEST ||
	     s->last_state == DFU_STATE_MANIFEST_WAIT_RESET)) {
		finish_ok(s);
		return;
	}
	if (s->last_status != DFU_STATUS_OK) {
		dfu_status_error(s, &s->err, "leaving DFU mode");
		finish(s, -1);
		return;
	}
	fail_msg(s, ERR_TRANSFER_FAILED, "leave not acknowledged",
		 "the device did not start leaving DFU mode (it reports %s)",
		 dfu_state_name(s->last_state));
}

static void utf16_to_ascii(const uint8_t *in, size_t actual, char *out, size_t size)
{
	size_t n = 0;
	if (actual >= 2 && in[1] == 0x03) {
		size_t blen = in[0] < actual ? in[0] : actual;
		for (size_t i = 2; i + 1 < blen && n + 1 < size; i += 2)
			out[n++] =
			    (in[i + 1] == 0 && in[i] >= 0x20 && in[i] < 0x7f) ? (char)in[i] : '?';
	}
	out[n] = '\0';
}

static void on_string(struct dfuse *s, int usb_status, const uint8_t *in, size_t actual)
{
	const struct string_req *r = &s->strings[s->string_i];
	char buf[DFUSE_STRING_MAX + 1];
	if (usb_status < 0 || actual < 2 || in[1] != 0x03) {
		/* 0xFA only exists on 6.2.0+ bootloaders (docs/device/dfuse.md#descriptors): its
		 * absence is a fact, not a
		 * failure. */
		if (r->kind == STR_PROTECTION && usb_status != LIBUSB_ERROR_NO_DEVICE) {
			trace(s, "no Device Protection string (0xFA)");
			s->string_i++;
			next(s);
			return;
		}
		if (usb_status < 0) {
			fail_usb(s, usb_status, "reading the device's string descriptors");
		} else {
			error_set(&s->err, ERR_DFU_DESCRIPTOR_INVALID,
				  "string descriptor %u is not a string", r->index);
			error_detail_str(&s->err, "reason", "not a string descriptor");
			error_detail_int(&s->err, "alt", r->alt);
			finish(s, -1);
		}
		return;
	}
	utf16_to_ascii(in, actual, buf, sizeof(buf));
	trace(s, "string %u: %.60s", r->index, buf);
	switch (r->kind) {
	case STR_SERIAL:
		for (char *p = buf; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		snprintf(s->info.serial, sizeof(s->info.serial), "%s", buf);
		break;
	case STR_MAP:
		snprintf(s->info.map_string[r->alt], sizeof(s->info.map_string[r->alt]), "%s", buf);
		if (dfuse_map_parse(buf, &s->info.maps[r->alt], &s->err) < 0) {
			error_detail_int(&s->err, "alt", r->alt);
			error_prefix(&s->err, "alt setting %u: ", r->alt);
			finish(s, -1);
			return;
		}
		s->info.map_valid[r->alt] = true;
		break;
	case STR_PROTECTION:
		snprintf(s->info.protection, sizeof(s->info.protection), "%s", buf);
		s->info.protected_device = strstr(buf, "sm=p") != NULL;
		s->info.service_mode = strstr(buf, "sm=s") != NULL;
		break;
	}
	s->string_i++;
	next(s);
}

/* A request stalled: ask GETSTATUS why (issue 7) before reporting. */
static void on_stall_status(struct dfuse *s, int usb_status, const uint8_t *in, size_t actual)
{
	unsigned poll_ms;
	if (usb_status < 0 || !parse_status(s, in, actual, &poll_ms)) {
		fail_usb(s, s->stall_usb_status, "the device stalled a request");
		return;
	}
	char buf[128];
	snprintf(buf, sizeof(buf), "the device stalled %s at 0x%08x (alt %u)",
		 s->stalled_step == STEP_DATA	  ? "a data block"
		 : s->stalled_step == STEP_UPLOAD ? "an upload"
		 : s->stalled_step == STEP_COMMAND
		     ? (s->cmd == DFUSE_CMD_ERASE ? "an erase" : "SET_ADDRESS")
		     : "a request",
		 s->stalled_step == STEP_COMMAND ? s->cmd_address
						 : (uint32_t)(s->address + s->offset),
		 s->alt);
	if (s->last_status == DFU_STATUS_OK)
		s->last_status = DFU_STATUS_ERR_STALLEDPKT;
	if (s->stalled_step == STEP_DATA && address_fallback(s))
		return;
	dfu_status_error(s, &s->err, buf);
	detail_str_if(&s->err, "usb_error", libusb_error_name(LIBUSB_ERROR_PIPE));
	finish(s, -1);
}

void dfuse_transfer_done(struct dfuse *s, int usb_status, const uint8_t *in, size_t actual)
{
	unsigned poll_ms = 0;
	enum dfuse_step step = s->step;
	if (usb_status < 0)
		trace(s, "-> %s", libusb_error_name(usb_status));
	else if (step == STEP_UPLOAD)
		trace(s, "-> %zu bytes", actual);

	/* Steps that interpret failures themselves. */
	switch (step) {
	case STEP_READ_STRING:
		on_string(s, usb_status, in, actual);
		return;
	case STEP_LEAVE_STATUS:
		on_leave_status(s, usb_status, in, actual);
		return;
	case STEP_STALL_STATUS:
		on_stall_status(s, usb_status, in, actual);
		return;
	default:
		break;
	}
	if (usb_status == LIBUSB_ERROR_PIPE && step != STEP_POLL && step != STEP_RECOVER_STATUS &&
	    step != STEP_SET_ALT) {
		s->stalled_step = step;
		s->stall_usb_status = usb_status;
		send_getstatus(s, STEP_STALL_STATUS);
		return;
	}
	if (usb_status < 0) {
		fail_usb(s, usb_status,
			 step == STEP_SET_ALT ? "selecting the alt setting"
					      : "talking to the DFU bootloader");
		return;
	}

	switch (step) {
	case STEP_SET_ALT:
		s->cur_alt = s->alt;
		s->recovered = false;
		s->recovery_rounds = 0;
		next(s);
		break;
	case STEP_RECOVER_STATUS:
		if (!parse_status(s, in, actual, &poll_ms)) {
			fail_msg(s, ERR_TRANSFER_FAILED, "short GETSTATUS reply",
				 "the device sent a malformed status");
			return;
		}
		on_recover_status(s, poll_ms);
		break;
	case STEP_RECOVER_CLEAR:
	case STEP_RECOVER_ABORT:
		send_getstatus(s, STEP_RECOVER_STATUS);
		break;
	case STEP_COMMAND:
	case STEP_DATA:
		s->polled = step;
		send_getstatus(s, STEP_POLL);
		break;
	case STEP_POLL:
		if (!parse_status(s, in, actual, &poll_ms)) {
			fail_msg(s, ERR_TRANSFER_FAILED, "short GETSTATUS reply",
				 "the device sent a malformed status");
			return;
		}
		on_poll(s, poll_ms);
		break;
	case STEP_SESSION_ABORT:
		s->session = false;
		next(s);
		break;
	case STEP_UPLOAD_ABORT:
		if (!s->upload_opened)
			s->upload_opened = true;
		else
			s->upload_closed = true;
		next(s);
		break;
	case STEP_UPLOAD: {
		size_t want = upload_want(s);
		if (actual > want)
			actual = want;
		s->stats.bytes_read += actual;
		size_t got = actual > s->skip ? actual - s->skip : 0;
		memcpy(s->rdata + s->offset, in + s->skip, got);
		s->skip = 0;
		s->offset += got;
		s->upload_len = s->offset;
		s->chunk++;
		if (actual < want)
			s->short_read = true;
		else if (s->upload_more && !s->upload_more(s->userdata, s->offset - got, got))
			s->len = s->offset; /* enough: close the read as if it were done */
		next(s);
		break;
	}
	case STEP_LEAVE_DNLOAD:
		/* Exactly one GETSTATUS, then nothing more
		 * (docs/device/dfuse.md#requests-and-states). */
		send_getstatus(s, STEP_LEAVE_STATUS);
		break;
	default:
		trace(s, "unexpected completion in step %d", step);
		break;
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dfuse *s = arg;
	poll_again(s);
}

/* ---- public ------------------------------------------------------------------------- */

struct dfuse *dfuse_new(struct event_base *base, const struct dfu_io *io,
			const struct dfu_descriptors *desc)
{
	struct dfuse *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->io = *io;
	s->desc = *desc;
	if (s->desc.n_alts > DFUSE_MAX_ALTS)
		s->desc.n_alts = DFUSE_MAX_ALTS;
	s->cur_alt = -1;
	error_init(&s->err);
	s->timer = evtimer_new(base, on_timer, s);
	s->busy_timer = evtimer_new(base, on_busy_deadline, s);
	s->defer = event_new(base, -1, 0, on_defer, s);
	clock_gettime(CLOCK_MONOTONIC, &s->t0);
	if (!s->timer || !s->busy_timer || !s->defer) {
		dfuse_free(s);
		return NULL;
	}
	return s;
}

void dfuse_free(struct dfuse *s)
{
	if (!s)
		return;
	if (s->timer)
		event_free(s->timer);
	if (s->busy_timer)
		event_free(s->busy_timer);
	if (s->defer)
		event_free(s->defer);
	free(s->units);
	error_clear(&s->err);
	free(s);
}

void dfuse_set_address_per_chunk(struct dfuse *s, bool on)
{
	s->address_per_chunk = on;
}

bool dfuse_address_per_chunk(const struct dfuse *s)
{
	return s->address_per_chunk;
}

void dfuse_set_notice(struct dfuse *s, dfuse_notice_fn fn, void *userdata)
{
	s->notice = fn;
	s->notice_userdata = userdata;
}

void dfuse_cancel(struct dfuse *s)
{
	if (s && s->op != OP_NONE)
		s->cancel = true;
}

void dfuse_device_gone(struct dfuse *s, struct error *err)
{
	trace(s, "device removed with a request in flight");
	dfu_usb_error_set(err, LIBUSB_ERROR_NO_DEVICE, op_name(s->op));
	add_context(s, err);
}

void dfuse_set_serial(struct dfuse *s, const char *serial)
{
	snprintf(s->known_serial, sizeof(s->known_serial), "%s", serial ? serial : "");
}

void dfuse_set_progress(struct dfuse *s, dfuse_progress_fn fn, void *userdata)
{
	s->progress = fn;
	s->progress_userdata = userdata;
}

const struct dfuse_info *dfuse_get_info(const struct dfuse *s)
{
	return &s->info;
}

const struct dfu_descriptors *dfuse_get_descriptors(const struct dfuse *s)
{
	return &s->desc;
}

const struct dfuse_stats *dfuse_get_stats(const struct dfuse *s)
{
	return &s->stats;
}

uint16_t dfuse_transfer_size(const struct dfuse *s)
{
	uint16_t t = s->desc.has_functional ? s->desc.transfer_size : DFUSE_DEFAULT_TRANSFER;
	if (t == 0 || t > DFUSE_MAX_TRANSFER)
		t = t == 0 ? DFUSE_DEFAULT_TRANSFER : DFUSE_MAX_TRANSFER;
	return t;
}

static int start(struct dfuse *s, enum dfuse_op op, uint8_t alt, dfuse_done_fn done, void *userdata,
		 struct error *err)
{
	if (s->op != OP_NONE)
		return error_set(err, ERR_INTERNAL, "DFU operation %s while %s is running",
				 op_name(op), op_name(s->op));
	if (op != OP_OPEN && op != OP_LEAVE && op != OP_IDLE &&
	    (alt >= s->desc.n_alts || !s->info.map_valid[alt])) {
		error_set(err, ERR_INTERNAL, "alt setting %u has no memory map", alt);
		error_detail_str(err, "reason", "alt setting without memory map");
		return -1;
	}
	s->op = op;
	s->alt = alt;
	s->done = done;
	s->userdata = userdata;
	s->offset = 0;
	s->chunk = 0;
	s->address_set = false;
	s->upload_opened = s->upload_closed = s->short_read = false;
	s->upload_more = NULL;
	s->upload_len = 0;
	s->continuing = false;
	s->skip = 0;
	s->stalled_step = STEP_IDLE;
	s->polled = STEP_IDLE;
	s->have_status = false;
	s->cmd = 0;
	s->cancel = false;
	s->data_wvalue = 0;
	error_clear(&s->err);
	return 0;
}

int dfuse_open(struct dfuse *s, dfuse_done_fn done, void *userdata, struct error *err)
{
	if (start(s, OP_OPEN, 0, done, userdata, err) < 0)
		return -1;
	if (s->desc.n_alts == 0) {
		error_set(err, ERR_DFU_DESCRIPTOR_INVALID, "the device has no DFU alt settings");
		error_detail_str(err, "reason", "no alt settings");
		s->op = OP_NONE;
		return -1;
	}
	memset(&s->info, 0, sizeof(s->info));
	s->n_strings = 0;
	s->string_i = 0;
	if (s->known_serial[0])
		memcpy(s->info.serial, s->known_serial, sizeof(s->info.serial));
	else if (s->desc.i_serial)
		s->strings[s->n_strings++] = (struct string_req){STR_SERIAL, s->desc.i_serial, 0};
	for (uint8_t a = 0; a < s->desc.n_alts; a++)
		if (s->desc.alt_string[a])
			s->strings[s->n_strings++] =
			    (struct string_req){STR_MAP, s->desc.alt_string[a], a};
	s->strings[s->n_strings++] = (struct string_req){STR_PROTECTION, 0xfa, 0};
	s->cur_alt = -1;
	next(s);
	return 0;
}

int dfuse_upload(struct dfuse *s, uint8_t alt, uint32_t address, uint8_t *buf, size_t len,
		 dfuse_done_fn done, void *userdata, struct error *err)
{
	if (start(s, OP_UPLOAD, alt, done, userdata, err) < 0)
		return -1;
	if (len / DFUSE_BLOCK > 0xfffd) {
		s->op = OP_NONE;
		return error_set(err, ERR_INTERNAL, "upload of %zu bytes is too long", len);
	}
	s->address = address;
	s->cmd_address = address;
	s->len = len;
	s->rdata = buf;
	/* DfuSe reads block n at pointer + (n - 2) * wTransferSize (ST AN3156, Device OS's
	 * DFU class): an open read whose pointer lies below address goes on without a new
	 * SET_ADDRESS, from the start of the block that holds address when that costs
	 * fewer bus bytes than the requests it saves (DFUSE_SKIP_MAX) and the map lets the
	 * bytes before address be read */
	uint32_t ahead = address - s->session_ptr, skip = ahead % DFUSE_BLOCK;
	if (s->session && s->session_alt == alt && s->cur_alt == alt && s->recovered &&
	    address >= s->session_ptr && skip <= DFUSE_SKIP_MAX &&
	    (skip == 0 || dfuse_map_range_has(&s->info.maps[alt], address - skip,
					      (uint32_t)(skip + len), DFUSE_MEM_READABLE, NULL)) &&
	    ahead / DFUSE_BLOCK + (skip + len + DFUSE_BLOCK - 1) / DFUSE_BLOCK <= 0xfffd) {
		s->continuing = true;
		s->address_set = s->upload_opened = true;
		s->chunk = ahead / DFUSE_BLOCK;
		s->skip = skip;
	}
	next(s);
	return 0;
}

void dfuse_set_keep_upload(struct dfuse *s, bool on)
{
	s->keep_upload = on;
}

bool dfuse_upload_open(const struct dfuse *s)
{
	return s->session;
}

int dfuse_idle(struct dfuse *s, dfuse_done_fn done, void *userdata, struct error *err)
{
	if (start(s, OP_IDLE, s->alt, done, userdata, err) < 0)
		return -1;
	next(s);
	return 0;
}

int dfuse_upload_until(struct dfuse *s, uint8_t alt, uint32_t address, uint8_t *buf, size_t len,
		       dfuse_upload_more_fn more, dfuse_done_fn done, void *userdata,
		       struct error *err)
{
	if (dfuse_upload(s, alt, address, buf, len, done, userdata, err) < 0)
		return -1;
	s->upload_more = more;
	return 0;
}

size_t dfuse_upload_length(const struct dfuse *s)
{
	return s->upload_len;
}

int dfuse_erase(struct dfuse *s, uint8_t alt, uint32_t address, size_t len, dfuse_done_fn done,
		void *userdata, struct error *err)
{
	if (start(s, OP_ERASE, alt, done, userdata, err) < 0)
		return -1;
	s->units = calloc(DFUSE_MAX_ERASE_UNITS, sizeof(*s->units));
	if (!s->units) {
		s->op = OP_NONE;
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	}
	int n = dfuse_map_erase_units(&s->info.maps[alt], address, (uint32_t)len, s->units,
				      DFUSE_MAX_ERASE_UNITS, err);
	if (n < 0) {
		free(s->units);
		s->units = NULL;
		s->op = OP_NONE;
		if (error_detail_type(err->code, "alt") == 'i')
			error_detail_int(err, "alt", alt);
		return -1;
	}
	s->n_units = n;
	s->unit_i = 0;
	s->erase_done = s->erase_total = 0;
	for (int i = 0; i < n; i++)
		s->erase_total += s->units[i].size;
	s->address = address;
	s->cmd_address = address;
	s->len = len;
	next(s);
	return 0;
}

int dfuse_download(struct dfuse *s, uint8_t alt, uint32_t address, const uint8_t *data, size_t len,
		   dfuse_done_fn done, void *userdata, struct error *err)
{
	if (start(s, OP_DOWNLOAD, alt, done, userdata, err) < 0)
		return -1;
	/* The last line of defence (preflight checks first): data goes only where
	 * the device's own map says writable. */
	uint32_t bad = address;
	if (len > UINT32_MAX || !dfuse_map_range_has(&s->info.maps[alt], address, (uint32_t)len,
						     DFUSE_MEM_WRITABLE, &bad)) {
		s->op = OP_NONE;
		error_set(err, ERR_OUTSIDE_MEMORY_MAP,
			  "0x%08x+%zu is not writable in the DFU memory map '%s' (at 0x%08x)",
			  address, len, s->info.maps[alt].name, bad);
		error_detail_int(err, "alt", alt);
		error_detail_int(err, "address", bad);
		error_detail_int(err, "start", address);
		error_detail_int(err, "end", (long long)address + (long long)len);
		error_detail_str(err, "region", s->info.maps[alt].name);
		error_detail_str(err, "needed", "writable");
		return -1;
	}
	s->address = address;
	s->cmd_address = address;
	s->len = len;
	s->wdata = data;
	next(s);
	return 0;
}

int dfuse_leave(struct dfuse *s, dfuse_done_fn done, void *userdata, struct error *err)
{
	if (start(s, OP_LEAVE, 0, done, userdata, err) < 0)
		return -1;
	next(s);
	return 0;
}
