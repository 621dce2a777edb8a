/* The service exchange of one control request as a state machine (ctrl.h). */
#include "bytes.h"
#include "ctrl.h"
#include "ctrl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct timeout_def ctrl_timeouts[] = {
    {"ctrl_request_ms", CTRL_REQUEST_MS_DEFAULT,
     "bound one USB control request from INIT to its reply (CHECK polled every 5-50 ms)"},
    {NULL, 0, NULL},
};

const char *ctrl_request_name(unsigned type)
{
	switch (type) {
	case CTRL_REQ_DEVICE_ID:
		return "get-device-id";
	case CTRL_REQ_SERIAL_NUMBER:
		return "get-serial-number";
	case CTRL_REQ_SYSTEM_VERSION:
		return "get-system-version";
	case CTRL_REQ_RESET:
		return "reset";
	case CTRL_REQ_DFU_MODE:
		return "enter-dfu-mode";
	case CTRL_REQ_SAFE_MODE:
		return "enter-safe-mode";
	case CTRL_REQ_START_LISTENING:
		return "start-listening";
	case CTRL_REQ_STOP_LISTENING:
		return "stop-listening";
	case CTRL_REQ_GET_DEVICE_MODE:
		return "get-device-mode";
	case CTRL_REQ_GET_MODULE_INFO:
		return "get-module-info";
	case CTRL_REQ_GET_ASSET_INFO:
		return "get-asset-info";
	case CTRL_REQ_START_FIRMWARE_UPDATE:
		return "start-firmware-update";
	case CTRL_REQ_FINISH_FIRMWARE_UPDATE:
		return "finish-firmware-update";
	case CTRL_REQ_CANCEL_FIRMWARE_UPDATE:
		return "cancel-firmware-update";
	case CTRL_REQ_FIRMWARE_UPDATE_DATA:
		return "firmware-update-data";
	default:
		return "other";
	}
}

const char *ctrl_status_name(unsigned status)
{
	static const char *const names[] = {"ok",   "error",	 "pending",
					    "busy", "no-memory", "not-found"};
	return status < sizeof(names) / sizeof(names[0]) ? names[status] : "unknown";
}

const char *ctrl_state_name(enum ctrl_state s)
{
	static const char *const names[] = {
	    [CTRL_IDLE] = "idle", [CTRL_INIT] = "init",	  [CTRL_INIT_WAIT] = "init-wait",
	    [CTRL_SEND] = "send", [CTRL_CHECK] = "check", [CTRL_CHECK_WAIT] = "check-wait",
	    [CTRL_RECV] = "recv", [CTRL_RESET] = "reset", [CTRL_LEGACY] = "legacy",
	};
	return names[s];
}

int ctrl_parse_service_reply(const uint8_t *buf, size_t len, struct ctrl_service_reply *r)
{
	memset(r, 0, sizeof(*r));
	if (len < 6)
		return -1;
	r->flags = bytes_le32(buf);
	if (!(r->flags & CTRL_FIELD_STATUS))
		return -1;
	r->status = bytes_le16(buf + 4);
	size_t n = 6;
	if (r->flags & CTRL_FIELD_ID) {
		if (len < n + 2)
			return -1;
		r->id = bytes_le16(buf + n);
		n += 2;
	}
	if (r->flags & CTRL_FIELD_SIZE) {
		if (len < n + 4)
			return -1;
		r->size = bytes_le32(buf + n);
		n += 4;
	}
	if (r->flags & CTRL_FIELD_RESULT) {
		if (len < n + 4)
			return -1;
		r->result = (int32_t)bytes_le32(buf + n);
	}
	return 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

struct ctrl *ctrl_new(struct event_base *base, struct ctrl_io io, const struct ctrl_options *opt)
{
	struct ctrl *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->base = base;
	c->io = io;
	c->request_ms = opt && opt->request_ms ? opt->request_ms : CTRL_REQUEST_MS_DEFAULT;
	if (opt && opt->device_os)
		snprintf(c->device_os, sizeof(c->device_os), "%s", opt->device_os);
	c->timer = evtimer_new(base, on_timer, c);
	error_init(&c->err);
	if (!c->timer) {
		free(c);
		return NULL;
	}
	return c;
}

static void destroy(struct ctrl *c)
{
	if (c->io.release)
		c->io.release(c->io.ctx);
	event_free(c->timer);
	error_clear(&c->err);
	free(c->payload);
	free(c->reply);
	ctrl_ops_clear(c);
	free(c);
}

void ctrl_free(struct ctrl *c)
{
	if (!c)
		return;
	c->done = NULL;
	c->op_done = NULL;
	evtimer_del(c->timer);
	if (c->in_flight) {
		c->closing = true;
		if (c->io.cancel)
			c->io.cancel(c->io.ctx);
		return;
	}
	destroy(c);
}

bool ctrl_busy(const struct ctrl *c)
{
	return c->state != CTRL_IDLE || c->op_running;
}

static long ms_left(struct ctrl *c)
{
	struct timeval now;
	event_base_gettimeofday_cached(c->base, &now);
	long ms =
	    (c->deadline.tv_sec - now.tv_sec) * 1000 + (c->deadline.tv_usec - now.tv_usec) / 1000;
	return ms;
}

static void arm(struct ctrl *c, unsigned ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static void submit(struct ctrl *c, enum ctrl_state st, uint8_t bmreq, uint8_t breq, uint16_t value,
		   uint16_t index, uint16_t length, uint8_t *buf, unsigned timeout_ms)
{
	struct ctrl_setup s = {bmreq, breq, value, index, length};
	enum ctrl_io_status status = CTRL_IO_ERROR;
	c->state = st;
	c->xfer_buf = buf;
	c->in_flight = true;
	if (st != CTRL_RESET)
		arm(c,
		    timeout_ms + CTRL_WATCHDOG_SLACK_MS); /* the transfer's own timeout is first */
	if (c->io.submit(c->io.ctx, &s, buf, timeout_ms, &status) < 0) {
		c->in_flight = false;
		/* Report it from the loop like any completion (never re-enter the caller). */
		c->deferred_status = status;
		c->deferred = true;
		arm(c, 0);
	}
}

/* Ends the request: the callback sees err when it is set. */
static void finish(struct ctrl *c, bool failed)
{
	evtimer_del(c->timer);
	c->state = CTRL_IDLE;
	struct ctrl_reply rep = {c->type, c->result, c->reply, c->reply_len};
	ctrl_request_done_fn done = c->done;
	void *ud = c->userdata;
	c->done = NULL;
	struct error err;
	error_init(&err);
	if (failed)
		error_move(&err, &c->err);
	if (done)
		done(c, &rep, failed ? &err : NULL, ud);
	error_clear(&err);
}

/* Fails the request; a request the device knows is RESET first (bounded), then reported. */
static void fail(struct ctrl *c)
{
	if (!error_is_set(&c->err))
		error_set(&c->err, ERR_INTERNAL, "control request failed without a cause");
	if (error_detail_type(c->err.code, "request") && !json_object_get(c->err.detail, "request"))
		error_detail_str(&c->err, "request", ctrl_request_name(c->type));
	if (c->id && !c->gone) {
		uint16_t id = c->id;
		c->id = 0;
		submit(c, CTRL_RESET, CTRL_BMREQ_IN, CTRL_SVC_RESET, 0, id, CTRL_SERVICE_WLENGTH,
		       c->svc, CTRL_RESET_TIMEOUT_MS);
		arm(c, CTRL_RESET_TIMEOUT_MS + 100);
		return;
	}
	finish(c, true);
}

/* The request's deadline passed while the device kept answering INIT with
 * BUSY (its table of active requests is full, with another program's: Device
 * OS system/src/usb_control_request_channel.cpp, processInitRequest()): it
 * answered, so say that it is busy, not that it is silent. */
static void fail_busy(struct ctrl *c)
{
	error_set(&c->err, ERR_DEVICE_BUSY,
		  "control request %s (%u): the device answered BUSY %u time(s) and stayed busy "
		  "for %u ms (too many requests open on it)",
		  ctrl_request_name(c->type), c->type, c->busy_seen, c->request_ms);
	error_detail_str(&c->err, "service_status", "busy");
	error_detail_int(&c->err, "waited_ms", c->request_ms);
	error_detail_int(&c->err, "busy_replies", c->busy_seen);
	error_hint(&c->err, "close other programs talking to the device (particle-cli, "
			    "a browser's WebUSB) or reset it, and try again");
	fail(c);
}

static void fail_timeout(struct ctrl *c)
{
	if (c->busy_seen && !c->id) { /* never past INIT: it was busy all along */
		fail_busy(c);
		return;
	}
	error_set(&c->err, ERR_TIMED_OUT,
		  "the device did not complete control request %s (%u) within %u ms (state %s)",
		  ctrl_request_name(c->type), c->type, c->request_ms, ctrl_state_name(c->state));
	error_detail_int(&c->err, "timeout_ms", c->request_ms);
	error_detail_str(&c->err, "phase", ctrl_state_name(c->state));
	fail(c);
}

static unsigned next_poll(struct ctrl *c)
{
	unsigned ms = c->poll_ms ? c->poll_ms * 2 : CTRL_POLL_FIRST_MS;
	if (ms > CTRL_POLL_MAX_MS)
		ms = CTRL_POLL_MAX_MS;
	c->poll_ms = ms;
	return ms;
}

/* Waits in INIT_WAIT / CHECK_WAIT for the next poll, never past the deadline. */
static void wait_poll(struct ctrl *c, enum ctrl_state st)
{
	long left = ms_left(c);
	if (left <= 0) {
		fail_timeout(c);
		return;
	}
	unsigned ms = next_poll(c);
	if ((long)ms > left)
		ms = (unsigned)left;
	c->state = st;
	arm(c, ms);
}

static unsigned xfer_timeout(struct ctrl *c)
{
	long left = ms_left(c);
	return left < 1 ? 1 : (unsigned)left;
}

static void send_init(struct ctrl *c)
{
	submit(c, CTRL_INIT, CTRL_BMREQ_IN, CTRL_SVC_INIT, (uint16_t)c->payload_len,
	       (uint16_t)c->type, CTRL_SERVICE_WLENGTH, c->svc, xfer_timeout(c));
}

static void send_check(struct ctrl *c)
{
	submit(c, CTRL_CHECK, CTRL_BMREQ_IN, CTRL_SVC_CHECK, 0, c->id, CTRL_SERVICE_WLENGTH, c->svc,
	       xfer_timeout(c));
}

static void send_next_chunk(struct ctrl *c)
{
	size_t n = c->payload_len - c->sent;
	if (n > CTRL_TRANSFER_MAX)
		n = CTRL_TRANSFER_MAX;
	c->chunk = n;
	submit(c, CTRL_SEND, CTRL_BMREQ_OUT, CTRL_SVC_SEND, 0, c->id, (uint16_t)n,
	       c->payload + c->sent, xfer_timeout(c));
}

static void recv_next_chunk(struct ctrl *c)
{
	size_t n = c->reply_len - c->received;
	if (n > CTRL_TRANSFER_MAX)
		n = CTRL_TRANSFER_MAX;
	c->chunk = n;
	submit(c, CTRL_RECV, CTRL_BMREQ_IN, CTRL_SVC_RECV, 0, c->id, (uint16_t)n,
	       c->reply + c->received, xfer_timeout(c));
}

/* The payload is on the device (or there is none): poll for the result. */
static void payload_sent(struct ctrl *c)
{
	c->data_sent = true;
	c->poll_ms = 0;
	wait_poll(c, CTRL_CHECK_WAIT);
}

static int service_error(struct ctrl *c, const struct ctrl_service_reply *r)
{
	enum error_code code = ERR_TRANSFER_FAILED;
	const char *what;
	switch (r->status) {
	case CTRL_STATUS_NO_MEMORY:
		what = "has no memory for it";
		code = ERR_DEVICE_BUSY;
		break;
	case CTRL_STATUS_NOT_FOUND:
		what =
		    "no longer knows it (it was reset by another program, or the device restarted)";
		break;
	case CTRL_STATUS_ERROR:
		what = "answered ERROR";
		break;
	default:
		what = "answered an unexpected service status";
		break;
	}
	error_set(&c->err, code, "control request %s (%u): the device %s (%s in state %s)",
		  ctrl_request_name(c->type), c->type, what, ctrl_status_name(r->status),
		  ctrl_state_name(c->state));
	error_detail_str(&c->err, "service_status", ctrl_status_name(r->status));
	if (code == ERR_DEVICE_BUSY)
		error_hint(&c->err, "close other programs talking to the device (particle-cli, "
				    "a browser's WebUSB) or reset it, and try again");
	fail(c);
	return -1;
}

static void on_init_reply(struct ctrl *c, const struct ctrl_service_reply *r)
{
	switch (r->status) {
	case CTRL_STATUS_OK:
	case CTRL_STATUS_PENDING:
		if (!(r->flags & CTRL_FIELD_ID) || !r->id) {
			error_set(&c->err, ERR_TRANSFER_FAILED,
				  "control request %s: the device's INIT reply carries no id",
				  ctrl_request_name(c->type));
			error_detail_str(&c->err, "reason", "INIT reply without id");
			fail(c);
			return;
		}
		c->id = r->id;
		c->poll_ms = 0;
		if (r->status == CTRL_STATUS_PENDING) {
			if (!c->payload_len) {
				error_set(&c->err, ERR_TRANSFER_FAILED,
					  "control request %s: the device answered PENDING to an "
					  "INIT without payload",
					  ctrl_request_name(c->type));
				error_detail_str(&c->err, "service_status", "pending");
				fail(c);
				return;
			}
			wait_poll(c, CTRL_CHECK_WAIT); /* buffer allocation pending */
		} else if (c->payload_len) {
			send_next_chunk(c);
		} else {
			payload_sent(c);
		}
		return;
	case CTRL_STATUS_BUSY:
		/* Too many requests open on the device (another program's): INIT again. */
		c->busy_seen++;
		wait_poll(c, CTRL_INIT_WAIT);
		return;
	default:
		service_error(c, r);
		return;
	}
}

static void on_check_reply(struct ctrl *c, const struct ctrl_service_reply *r)
{
	switch (r->status) {
	case CTRL_STATUS_OK:
		if (!c->data_sent) { /* buffer allocated: send the payload */
			send_next_chunk(c);
			return;
		}
		c->result = r->flags & CTRL_FIELD_RESULT ? r->result : 0;
		c->reply_len = r->flags & CTRL_FIELD_SIZE ? r->size : 0;
		if (c->reply_len > CTRL_REPLY_MAX) {
			error_set(&c->err, ERR_TRANSFER_FAILED,
				  "control request %s: the device's reply (%zu bytes) exceeds "
				  "flashd's limit of %d bytes",
				  ctrl_request_name(c->type), c->reply_len, CTRL_REPLY_MAX);
			error_detail_str(&c->err, "reason", "reply too large");
			fail(c);
			return;
		}
		if (c->reply_len) {
			free(c->reply);
			c->reply = malloc(c->reply_len);
			if (!c->reply) {
				error_set(&c->err, ERR_OUT_OF_MEMORY, NULL);
				fail(c);
				return;
			}
			c->received = 0;
			recv_next_chunk(c);
			return;
		}
		c->id = 0; /* completed: the device forgot it */
		if (c->result < 0) {
			ctrl_error_from_result(&c->err, c->result, c->type, c->device_os);
			finish(c, true);
			return;
		}
		finish(c, false);
		return;
	case CTRL_STATUS_PENDING:
		wait_poll(c, CTRL_CHECK_WAIT);
		return;
	default:
		service_error(c, r);
		return;
	}
}

static void transfer_failed(struct ctrl *c, enum ctrl_io_status st, const char *usb_error)
{
	const char *name = ctrl_request_name(c->type);
	switch (st) {
	case CTRL_IO_GONE:
		c->gone = true;
		error_set(&c->err, ERR_DEVICE_GONE,
			  "the device disappeared during control request %s (%s)", name,
			  ctrl_state_name(c->state));
		error_detail_str(&c->err, "phase", ctrl_state_name(c->state));
		break;
	case CTRL_IO_STALL:
		if (c->state == CTRL_INIT || c->state == CTRL_LEGACY) {
			/* Device OS before 0.8.0 (Gen 2) / 0.9.0 (Gen 3) knows no service
			 * requests and stalls them. */
			error_set(&c->err, ERR_REQUEST_UNSUPPORTED,
				  "the device refused control request %s (%u): its Device OS%s%s "
				  "has no USB control requests",
				  name, c->type, c->device_os[0] ? " " : "", c->device_os);
			error_detail_str(&c->err, "reason", "stalled");
			error_detail_int(&c->err, "request_type", c->type);
			if (c->device_os[0])
				error_detail_str(&c->err, "device_os", c->device_os);
			break;
		}
		__attribute__((fallthrough));
	default:
		if (st == CTRL_IO_TIMEOUT && c->state == CTRL_INIT && c->busy_seen && !c->id &&
		    ms_left(c) < CTRL_POLL_FIRST_MS) {
			/* an INIT squeezed into the last milliseconds of the deadline */
			fail_busy(c);
			return;
		}
		error_set(&c->err, st == CTRL_IO_TIMEOUT ? ERR_TIMED_OUT : ERR_TRANSFER_FAILED,
			  "control request %s: the %s transfer failed (%s)", name,
			  ctrl_state_name(c->state), usb_error ? usb_error : "USB error");
		error_detail_str(&c->err, "phase", ctrl_state_name(c->state));
		if (st == CTRL_IO_TIMEOUT)
			error_detail_int(&c->err, "timeout_ms", c->request_ms);
		break;
	}
	if (usb_error && error_detail_type(c->err.code, "usb_error"))
		error_detail_str(&c->err, "usb_error", usb_error);
	fail(c);
}

void ctrl_io_complete(struct ctrl *c, enum ctrl_io_status st, size_t actual, const char *usb_error)
{
	c->in_flight = false;
	if (c->closing) {
		destroy(c);
		return;
	}
	enum ctrl_state state = c->state;
	if (state == CTRL_RESET) { /* best effort: the original cause is what counts */
		finish(c, true);
		return;
	}
	if (st == CTRL_IO_CANCELLED) {
		if (c->cancel_reason == CTRL_CANCEL_TIMEOUT) {
			fail_timeout(c);
		} else {
			error_set(&c->err, ERR_CANCELLED, "control request %s was cancelled",
				  ctrl_request_name(c->type));
			error_detail_str(&c->err, "phase", ctrl_state_name(state));
			fail(c);
		}
		return;
	}
	if (st != CTRL_IO_OK) {
		transfer_failed(c, st, usb_error);
		return;
	}
	struct ctrl_service_reply r;
	switch (state) {
	case CTRL_INIT:
	case CTRL_CHECK:
		if (ctrl_parse_service_reply(c->svc, actual, &r) < 0) {
			error_set(
			    &c->err, ERR_TRANSFER_FAILED,
			    "control request %s: the device's %s reply (%zu bytes) is malformed",
			    ctrl_request_name(c->type), ctrl_state_name(state), actual);
			error_detail_str(&c->err, "reason", "malformed service reply");
			fail(c);
			return;
		}
		if (state == CTRL_INIT)
			on_init_reply(c, &r);
		else
			on_check_reply(c, &r);
		return;
	case CTRL_SEND:
		c->sent += c->chunk;
		if (c->sent < c->payload_len)
			send_next_chunk(c);
		else
			payload_sent(c);
		return;
	case CTRL_RECV:
		if (actual != c->chunk) {
			error_set(&c->err, ERR_TRANSFER_FAILED,
				  "control request %s: RECV returned %zu of %zu bytes",
				  ctrl_request_name(c->type), actual, c->chunk);
			error_detail_str(&c->err, "reason", "short RECV");
			fail(c);
			return;
		}
		c->received += actual;
		if (c->received < c->reply_len) {
			recv_next_chunk(c);
			return;
		}
		c->id = 0;
		if (c->result < 0) {
			ctrl_error_from_result(&c->err, c->result, c->type, c->device_os);
			finish(c, true);
			return;
		}
		finish(c, false);
		return;
	case CTRL_LEGACY:
		c->reply_len = actual;
		c->result = 0;
		finish(c, false);
		return;
	default:
		return;
	}
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct ctrl *c = arg;
	if (c->deferred) { /* a submit that failed at once */
		c->deferred = false;
		ctrl_io_complete(c, c->deferred_status, 0, "submit failed");
		return;
	}
	switch (c->state) {
	case CTRL_INIT_WAIT:
	case CTRL_CHECK_WAIT:
		/* no transfer that could not complete before the deadline */
		if (ms_left(c) < CTRL_POLL_FIRST_MS)
			fail_timeout(c);
		else if (c->state == CTRL_INIT_WAIT)
			send_init(c);
		else
			send_check(c);
		return;
	case CTRL_RESET:
		/* the RESET itself hangs: give up on it */
		if (c->in_flight && c->io.cancel)
			c->io.cancel(c->io.ctx); /* its completion finishes */
		else
			finish(c, true);
		return;
	case CTRL_INIT:
	case CTRL_SEND:
	case CTRL_CHECK:
	case CTRL_RECV:
	case CTRL_LEGACY:
		/* the request's deadline with a transfer in flight */
		if (c->in_flight && c->io.cancel) {
			c->cancel_reason = CTRL_CANCEL_TIMEOUT;
			c->io.cancel(c->io.ctx);
		}
		return;
	case CTRL_IDLE:
		return;
	}
}

/* Arms the request's deadline for a state with a transfer in flight. */
static void start_common(struct ctrl *c, unsigned type, ctrl_request_done_fn done, void *ud)
{
	c->type = type;
	c->done = done;
	c->userdata = ud;
	c->id = 0;
	c->sent = c->received = 0;
	c->reply_len = 0;
	c->result = 0;
	c->data_sent = false;
	c->gone = false;
	c->busy_seen = 0;
	c->poll_ms = 0;
	c->cancel_reason = CTRL_CANCEL_USER;
	error_clear(&c->err);
	struct timeval now, span = {c->request_ms / 1000, (c->request_ms % 1000) * 1000};
	event_base_gettimeofday_cached(c->base, &now);
	evutil_timeradd(&now, &span, &c->deadline);
}

int ctrl_request(struct ctrl *c, unsigned type, const uint8_t *payload, size_t len,
		 ctrl_request_done_fn done, void *ud, struct error *err)
{
	if (c->state != CTRL_IDLE || c->in_flight)
		return error_set(err, ERR_INTERNAL, "a control request is already running");
	if (len > CTRL_PAYLOAD_MAX || type > 0xffff)
		return error_set(err, ERR_INTERNAL,
				 "control request payload of %zu bytes too large", len);
	free(c->payload);
	c->payload = NULL;
	c->payload_len = len;
	if (len) {
		c->payload = malloc(len);
		if (!c->payload)
			return error_set(err, ERR_OUT_OF_MEMORY, NULL);
		memcpy(c->payload, payload, len);
	}
	start_common(c, type, done, ud);
	send_init(c);
	return 0;
}

int ctrl_legacy_request(struct ctrl *c, unsigned type, ctrl_request_done_fn done, void *ud,
			struct error *err)
{
	if (c->state != CTRL_IDLE || c->in_flight)
		return error_set(err, ERR_INTERNAL, "a control request is already running");
	start_common(c, type, done, ud);
	free(c->reply);
	c->reply = malloc(CTRL_SERVICE_WLENGTH);
	if (!c->reply)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	memset(c->reply, 0, CTRL_SERVICE_WLENGTH);
	submit(c, CTRL_LEGACY, CTRL_BMREQ_IN, CTRL_LEGACY_BREQUEST, 0, (uint16_t)type,
	       CTRL_SERVICE_WLENGTH, c->reply, xfer_timeout(c));
	return 0;
}

void ctrl_cancel(struct ctrl *c)
{
	c->op_cancelled = true;
	switch (c->state) {
	case CTRL_IDLE:
	case CTRL_RESET:
		return;
	case CTRL_INIT_WAIT:
	case CTRL_CHECK_WAIT:
		evtimer_del(c->timer);
		error_set(&c->err, ERR_CANCELLED, "control request %s was cancelled",
			  ctrl_request_name(c->type));
		error_detail_str(&c->err, "phase", ctrl_state_name(c->state));
		fail(c);
		return;
	default:
		if (c->in_flight && c->io.cancel) {
			c->cancel_reason = CTRL_CANCEL_USER;
			c->io.cancel(c->io.ctx);
		}
		return;
	}
}
