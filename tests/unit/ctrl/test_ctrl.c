/*
 * daemon/ctrl against a scripted device behind struct ctrl_io: the service
 * exchange (INIT/SEND/CHECK/RECV/RESET) answered from the loop, replies
 * encoded with the same nanopb messages a device uses, faults on demand.
 */
#include "bytes.h"
#include "ctrl.h"

#include "config.pb.h"
#include "describe.pb.h"
#include "storage.pb.h"

#include <pb_decode.h>
#include <pb_encode.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cmocka.h>

/* ---- the fake device ----------------------------------------------------- */

struct fake {
	struct event_base *base;
	struct ctrl *ctrl;
	/* the transfer in flight */
	bool pending;
	struct ctrl_setup setup;
	uint8_t *buf;
	struct event *ev;
	enum ctrl_io_status st;
	size_t actual;
	/* the request the device holds */
	uint16_t id;
	unsigned type;
	uint8_t payload[70000];
	size_t payload_len, received;
	uint8_t reply[8192];
	size_t reply_len, sent;
	int32_t result;
	bool done;
	/* script */
	unsigned busy_inits;	 /* answer BUSY to this many INITs */
	unsigned pending_checks; /* answer PENDING to this many CHECKs per request */
	unsigned checks_left;
	int32_t result_for[300]; /* by type; 0 = OK */
	unsigned unplug_at_type; /* fail every transfer once a request of this type ... */
	unsigned unplug_after_n; /* ... has been INITed this many times */
	unsigned n_of_type;
	bool gone;
	bool stall_service; /* a Device OS without control requests */
	bool silent_checks; /* CHECK answers PENDING forever */
	bool new_module_format;
	/* records */
	unsigned inits, checks, resets, cancels_fw;
	uint8_t firmware[70000];
	size_t firmware_len;
	uint32_t fw_announced;
	bool finished;
};

static size_t svc_reply(uint8_t *b, unsigned flags, uint16_t status, uint16_t id, uint32_t size,
			int32_t result)
{
	size_t n = 6;
	bytes_put_le32(b, flags | CTRL_FIELD_STATUS);
	bytes_put_le16(b + 4, status);
	if (flags & CTRL_FIELD_ID)
		bytes_put_le16(b + n, id), n += 2;
	if (flags & CTRL_FIELD_SIZE)
		bytes_put_le32(b + n, size), n += 4;
	if (flags & CTRL_FIELD_RESULT)
		bytes_put_le32(b + n, (uint32_t)result), n += 4;
	return n;
}

static size_t encode(uint8_t *out, size_t max, const pb_msgdesc_t *f, const void *msg)
{
	pb_ostream_t s = pb_ostream_from_buffer(out, max);
	assert_true(pb_encode(&s, f, msg));
	return s.bytes_written;
}

/* What the device computes when a request's payload is complete. */
static void process(struct fake *f)
{
	f->done = true;
	f->reply_len = 0;
	f->result = f->type < 300 ? f->result_for[f->type] : -120;
	if (f->result)
		return;
	switch (f->type) {
	case CTRL_REQ_DEVICE_ID: {
		particle_ctrl_GetDeviceIdReply r = {"E00FCE68FFFFFFFFFFFF0001"};
		f->reply_len =
		    encode(f->reply, sizeof(f->reply), particle_ctrl_GetDeviceIdReply_fields, &r);
		break;
	}
	case CTRL_REQ_SYSTEM_VERSION: {
		particle_ctrl_GetSystemVersionReply r = {"6.2.0"};
		f->reply_len = encode(f->reply, sizeof(f->reply),
				      particle_ctrl_GetSystemVersionReply_fields, &r);
		break;
	}
	case CTRL_REQ_GET_DEVICE_MODE: {
		particle_ctrl_GetDeviceModeReply r = {particle_ctrl_DeviceMode_LISTENING_MODE};
		f->reply_len =
		    encode(f->reply, sizeof(f->reply), particle_ctrl_GetDeviceModeReply_fields, &r);
		break;
	}
	case CTRL_REQ_GET_MODULE_INFO: {
		particle_ctrl_GetModuleInfoReply *r = calloc(1, sizeof(*r));
		if (f->new_module_format) {
			r->modules_count = 2;
			r->modules[0].type = particle_cloud_FirmwareModuleType_SYSTEM_PART_MODULE;
			r->modules[0].index = 1;
			r->modules[0].version = 6200;
			r->modules[0].max_size = 0xf0000;
			r->modules[0].checked_flags = 0x1e;
			r->modules[0].passed_flags = 0x1e;
			r->modules[1].type = particle_cloud_FirmwareModuleType_USER_PART_MODULE;
			r->modules[1].index = 1;
			r->modules[1].version = 6;
			r->modules[1].checked_flags = 0x16;
			r->modules[1].passed_flags = 0x12; /* dependencies failed */
			r->modules[1].has_hash = true;
			r->modules[1].hash.size = 32;
			memset(r->modules[1].hash.bytes, 0xab, 32);
			r->modules[1].dependencies_count = 1;
			r->modules[1].dependencies[0].type =
			    particle_cloud_FirmwareModuleType_SYSTEM_PART_MODULE;
			r->modules[1].dependencies[0].index = 1;
			r->modules[1].dependencies[0].version = 6300;
		} else {
			r->modules_deprecated_count = 1;
			r->modules_deprecated[0].type = particle_ctrl_FirmwareModuleType_BOOTLOADER;
			r->modules_deprecated[0].index = 0;
			r->modules_deprecated[0].version = 1101;
			r->modules_deprecated[0].size = 0xc000;
			r->modules_deprecated[0].validity =
			    particle_ctrl_FirmwareModuleValidityFlag_INTEGRITY_CHECK_FAILED;
		}
		f->reply_len =
		    encode(f->reply, sizeof(f->reply), particle_ctrl_GetModuleInfoReply_fields, r);
		free(r);
		break;
	}
	case CTRL_REQ_START_FIRMWARE_UPDATE: {
		particle_ctrl_StartFirmwareUpdateRequest q =
		    particle_ctrl_StartFirmwareUpdateRequest_init_zero;
		pb_istream_t in = pb_istream_from_buffer(f->payload, f->payload_len);
		assert_true(pb_decode(&in, particle_ctrl_StartFirmwareUpdateRequest_fields, &q));
		f->fw_announced = q.size;
		f->firmware_len = 0;
		particle_ctrl_StartFirmwareUpdateReply r = {1000};
		f->reply_len = encode(f->reply, sizeof(f->reply),
				      particle_ctrl_StartFirmwareUpdateReply_fields, &r);
		break;
	}
	case CTRL_REQ_FIRMWARE_UPDATE_DATA: {
		particle_ctrl_FirmwareUpdateDataRequest *q = calloc(1, sizeof(*q));
		pb_istream_t in = pb_istream_from_buffer(f->payload, f->payload_len);
		assert_true(pb_decode(&in, particle_ctrl_FirmwareUpdateDataRequest_fields, q));
		assert_true(q->data.size <= 1000);
		memcpy(f->firmware + f->firmware_len, q->data.bytes, q->data.size);
		f->firmware_len += q->data.size;
		free(q);
		break;
	}
	case CTRL_REQ_FINISH_FIRMWARE_UPDATE:
		f->finished = true;
		break;
	case CTRL_REQ_CANCEL_FIRMWARE_UPDATE:
		f->cancels_fw++;
		break;
	default:
		break;
	}
}

/* Answers the transfer in flight (from the loop, as a device would). */
static void answer(struct fake *f)
{
	const struct ctrl_setup *s = &f->setup;
	uint8_t *b = f->buf;
	f->st = CTRL_IO_OK;
	f->actual = 0;
	if (f->gone) {
		f->st = CTRL_IO_GONE;
		return;
	}
	if (s->request == CTRL_LEGACY_BREQUEST) {
		if (s->index == CTRL_REQ_SYSTEM_VERSION) {
			memcpy(b, "5.9.0", 6);
			f->actual = 6;
		} else {
			f->st = CTRL_IO_STALL;
		}
		return;
	}
	if (f->stall_service) {
		f->st = CTRL_IO_STALL;
		return;
	}
	switch (s->request) {
	case CTRL_SVC_INIT:
		f->inits++;
		if (f->unplug_at_type == s->index && ++f->n_of_type >= f->unplug_after_n) {
			f->gone = true;
			f->st = CTRL_IO_GONE;
			return;
		}
		if (f->busy_inits) {
			f->busy_inits--;
			f->actual = svc_reply(b, 0, CTRL_STATUS_BUSY, 0, 0, 0);
			return;
		}
		f->id++;
		f->type = s->index;
		f->payload_len = s->value;
		f->received = 0;
		f->done = false;
		f->checks_left = f->pending_checks;
		if (!f->payload_len)
			process(f);
		f->actual = svc_reply(b, CTRL_FIELD_ID, CTRL_STATUS_OK, f->id, 0, 0);
		return;
	case CTRL_SVC_SEND:
		assert_int_equal(s->index, f->id);
		assert_true(f->received + s->length <= f->payload_len);
		memcpy(f->payload + f->received, b, s->length);
		f->received += s->length;
		if (f->received == f->payload_len)
			process(f);
		f->actual = s->length;
		return;
	case CTRL_SVC_CHECK:
		f->checks++;
		if (s->index != f->id) {
			f->actual = svc_reply(b, 0, CTRL_STATUS_NOT_FOUND, 0, 0, 0);
			return;
		}
		if (f->silent_checks || f->checks_left) {
			if (f->checks_left)
				f->checks_left--;
			f->actual = svc_reply(b, 0, CTRL_STATUS_PENDING, 0, 0, 0);
			return;
		}
		f->sent = 0;
		f->actual = svc_reply(b, CTRL_FIELD_SIZE | CTRL_FIELD_RESULT, CTRL_STATUS_OK, 0,
				      (uint32_t)f->reply_len, f->result);
		return;
	case CTRL_SVC_RECV:
		assert_true(f->sent + s->length <= f->reply_len);
		memcpy(b, f->reply + f->sent, s->length);
		f->sent += s->length;
		f->actual = s->length;
		return;
	case CTRL_SVC_RESET:
		f->resets++;
		f->actual = svc_reply(b, 0, CTRL_STATUS_OK, 0, 0, 0);
		return;
	default:
		f->st = CTRL_IO_STALL;
	}
}

static void on_answer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct fake *f = arg;
	if (!f->pending)
		return;
	f->pending = false;
	ctrl_io_complete(f->ctrl, f->st, f->actual, f->st == CTRL_IO_OK ? NULL : "LIBUSB_ERROR_X");
}

static int fake_submit(void *ctx, const struct ctrl_setup *s, uint8_t *buf, unsigned timeout_ms,
		       enum ctrl_io_status *status)
{
	(void)status;
	struct fake *f = ctx;
	assert_false(f->pending);
	f->pending = true;
	f->setup = *s;
	f->buf = buf;
	answer(f);
	(void)timeout_ms;
	struct timeval tv = {0, 100};
	event_add(f->ev, &tv);
	return 0;
}

static void fake_cancel(void *ctx)
{
	struct fake *f = ctx;
	if (!f->pending)
		return;
	f->st = CTRL_IO_CANCELLED;
	struct timeval tv = {0, 0};
	event_add(f->ev, &tv);
}

static struct fake *fake_new(unsigned request_ms)
{
	struct fake *f = calloc(1, sizeof(*f));
	f->base = event_base_new();
	f->ev = evtimer_new(f->base, on_answer, f);
	struct ctrl_io io = {fake_submit, fake_cancel, NULL, f};
	struct ctrl_options opt = {request_ms, "6.2.0"};
	f->ctrl = ctrl_new(f->base, io, &opt);
	return f;
}

static void fake_free(struct fake *f)
{
	ctrl_free(f->ctrl);
	event_free(f->ev);
	event_base_free(f->base);
	free(f);
}

/* ---- running an operation to its end ------------------------------------- */

struct outcome {
	bool called;
	struct ctrl_result res;
	struct error err;
	size_t progress;
};

static void on_done(struct ctrl *c, const struct ctrl_result *res, struct error *err, void *ud)
{
	(void)c;
	struct outcome *o = ud;
	o->called = true;
	if (res)
		o->res = *res;
	if (err)
		error_move(&o->err, err);
}

static void on_progress(struct ctrl *c, size_t done, size_t total, void *ud)
{
	(void)c;
	(void)total;
	((struct outcome *)ud)->progress = done;
}

static double now_s(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static double run(struct fake *f, struct outcome *o)
{
	double t0 = now_s();
	while (!o->called && now_s() - t0 < 30)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_true(o->called);
	return now_s() - t0;
}

static void run_op(struct fake *f, enum ctrl_op op, struct outcome *o)
{
	struct error err;
	error_init(&err);
	memset(o, 0, sizeof(*o));
	error_init(&o->err);
	assert_int_equal(ctrl_op_start(f->ctrl, op, on_done, o, &err), 0);
	run(f, o);
}

static const char *detail(const struct error *e, const char *key)
{
	return json_string_value(json_object_get(e->detail, key));
}

/* ---- tests ---------------------------------------------------------------- */

static void reads_id_version_mode(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	run_op(f, CTRL_OP_DEVICE_ID, &o);
	assert_false(error_is_set(&o.err));
	assert_string_equal(o.res.text, "e00fce68ffffffffffff0001");
	run_op(f, CTRL_OP_SYSTEM_VERSION, &o);
	assert_string_equal(o.res.text, "6.2.0");
	run_op(f, CTRL_OP_DEVICE_MODE, &o);
	assert_int_equal(o.res.mode, CTRL_MODE_LISTENING);
	run_op(f, CTRL_OP_ENTER_DFU, &o);
	assert_false(error_is_set(&o.err));
	assert_int_equal(f->resets, 0);
	fake_free(f);
}

static void module_info_both_formats(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	f->new_module_format = true;
	run_op(f, CTRL_OP_MODULE_INFO, &o);
	assert_false(error_is_set(&o.err));
	assert_int_equal(o.res.n_modules, 2);
	assert_int_equal(o.res.modules[0].function, MODULE_FUNCTION_SYSTEM);
	assert_int_equal(o.res.modules[0].version, 6200);
	assert_true(installed_module_valid(&o.res.modules[0]));
	assert_int_equal(o.res.modules[1].function, MODULE_FUNCTION_USER);
	assert_false(installed_module_valid(&o.res.modules[1]));
	assert_int_equal(o.res.modules[1].deps[0].version, 6300);
	assert_string_equal(o.res.modules[1].sha256,
			    "abababababababababababababababababababababababababababababababab");
	f->new_module_format = false;
	run_op(f, CTRL_OP_MODULE_INFO, &o);
	assert_true(o.res.modules_deprecated_format);
	assert_int_equal(o.res.n_modules, 1);
	assert_int_equal(o.res.modules[0].function, MODULE_FUNCTION_BOOTLOADER);
	assert_int_equal(o.res.modules[0].version, 1101);
	assert_false(installed_module_valid(&o.res.modules[0]));
	assert_int_equal(o.res.modules[0].checked & ~o.res.modules[0].passed,
			 MODULE_CHECK_INTEGRITY);
	fake_free(f);
}

static void busy_then_ok_and_pending_polls(void **state)
{
	(void)state;
	struct fake *f = fake_new(2000);
	struct outcome o;
	f->busy_inits = 3;
	f->pending_checks = 4;
	double t0 = now_s();
	run_op(f, CTRL_OP_DEVICE_ID, &o);
	double took = now_s() - t0;
	assert_false(error_is_set(&o.err));
	assert_int_equal(f->inits, 4);
	assert_int_equal(o.res.busy_retries, 3);
	assert_int_equal(f->checks, 5);
	/* polls 5, 10, 20 ms after BUSY; 5, 10, 20, 40 ms while PENDING: about 0.1 s.  The
	 * bound is the request's own 2 s, which an engine that waited for it instead of
	 * polling would reach; a loaded machine (ASan, valgrind) adds tenths, not seconds. */
	assert_true(took < 1.5);
	fake_free(f);
}

/* A device that answers every INIT with BUSY: device-busy within the request's
 * bound, naming the request and the wait (it was timed-out or, through the
 * transport's DFU fallback, not-flashable-here before). */
static void busy_for_ever_is_device_busy(void **state)
{
	(void)state;
	struct fake *f = fake_new(300);
	struct outcome o;
	f->busy_inits = 1000000;
	double t0 = now_s();
	run_op(f, CTRL_OP_DEVICE_ID, &o);
	double took = now_s() - t0;
	assert_int_equal(o.err.code, ERR_DEVICE_BUSY);
	assert_string_equal(detail(&o.err, "request"), "get-device-id");
	assert_string_equal(detail(&o.err, "service_status"), "busy");
	assert_int_equal(json_integer_value(json_object_get(o.err.detail, "waited_ms")), 300);
	/* INIT again 5, 10, 20, 40 ms ... after each BUSY: more than one in 300 ms however
	 * late the timers fire on a loaded machine */
	assert_true(json_integer_value(json_object_get(o.err.detail, "busy_replies")) > 1);
	assert_non_null(strstr(o.err.message, "get-device-id"));
	/* the request's 300 ms, not the 10 s default (late timers under load add tenths) */
	assert_true(took >= 0.29 && took < 5.0);
	assert_int_equal(f->resets, 0); /* no id: nothing to reset */
	error_clear(&o.err);
	fake_free(f);
}

static void not_supported_is_decoded(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	f->result_for[CTRL_REQ_START_LISTENING] = -120;
	run_op(f, CTRL_OP_START_LISTENING, &o);
	assert_int_equal(o.err.code, ERR_REQUEST_UNSUPPORTED);
	assert_string_equal(detail(&o.err, "system_error"), "NOT_SUPPORTED");
	assert_string_equal(detail(&o.err, "request"), "start-listening");
	assert_int_equal(json_integer_value(json_object_get(o.err.detail, "device_code")), -120);
	error_clear(&o.err);
	/* the system version falls back to the legacy request */
	f->result_for[CTRL_REQ_SYSTEM_VERSION] = -120;
	run_op(f, CTRL_OP_SYSTEM_VERSION, &o);
	assert_false(error_is_set(&o.err));
	assert_string_equal(o.res.text, "5.9.0");
	/* other codes: named, with a hint */
	f->result_for[CTRL_REQ_SAFE_MODE] = -130;
	run_op(f, CTRL_OP_ENTER_SAFE_MODE, &o);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_string_equal(detail(&o.err, "system_error"), "NOT_ALLOWED");
	error_clear(&o.err);
	f->result_for[CTRL_REQ_RESET] = -4242;
	run_op(f, CTRL_OP_RESET, &o);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_int_equal(json_integer_value(json_object_get(o.err.detail, "device_code")), -4242);
	error_clear(&o.err);
	fake_free(f);
}

static void stall_means_no_control_requests(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	f->stall_service = true;
	run_op(f, CTRL_OP_DEVICE_MODE, &o);
	assert_int_equal(o.err.code, ERR_REQUEST_UNSUPPORTED);
	assert_string_equal(detail(&o.err, "reason"), "stalled");
	error_clear(&o.err);
	fake_free(f);
}

static void silent_device_times_out_and_resets(void **state)
{
	(void)state;
	struct fake *f = fake_new(300);
	struct outcome o;
	f->silent_checks = true;
	double t0 = now_s();
	run_op(f, CTRL_OP_MODULE_INFO, &o);
	double took = now_s() - t0;
	assert_int_equal(o.err.code, ERR_TIMED_OUT);
	/* the request's 300 ms, not the 10 s default (late timers under load add tenths) */
	assert_true(took >= 0.29 && took < 5.0);
	assert_int_equal(f->resets, 1);
	/* 5, 10, 20, 40 then every 50 ms for 300 ms: 9 or 10 CHECKs on time.  Never more
	 * (no CHECK before its interval); fewer when the timers fire late: 6 under ASan
	 * on a loaded machine.  More than one shows the polling goes on. */
	assert_in_range(f->checks, 2, 11);
	error_clear(&o.err);
	fake_free(f);
}

static void firmware_update_sends_every_byte(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	memset(&o, 0, sizeof(o));
	error_init(&o.err);
	static uint8_t image[10001];
	for (size_t i = 0; i < sizeof(image); i++)
		image[i] = (uint8_t)(i * 7);
	struct error err;
	error_init(&err);
	assert_int_equal(
	    ctrl_firmware_update(f->ctrl, image, sizeof(image), on_progress, on_done, &o, &err), 0);
	run(f, &o);
	assert_false(error_is_set(&o.err));
	assert_int_equal(f->fw_announced, sizeof(image));
	assert_int_equal(f->firmware_len, sizeof(image));
	assert_memory_equal(f->firmware, image, sizeof(image));
	assert_true(f->finished);
	assert_int_equal(o.progress, sizeof(image));
	fake_free(f);
}

static void firmware_update_failure_cancels(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	memset(&o, 0, sizeof(o));
	error_init(&o.err);
	static uint8_t image[5000];
	f->result_for[CTRL_REQ_FINISH_FIRMWARE_UPDATE] = -1330;
	struct error err;
	error_init(&err);
	assert_int_equal(
	    ctrl_firmware_update(f->ctrl, image, sizeof(image), NULL, on_done, &o, &err), 0);
	run(f, &o);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_string_equal(detail(&o.err, "system_error"), "OTA_INTEGRITY_CHECK_FAILED");
	assert_string_equal(detail(&o.err, "request"), "finish-firmware-update");
	assert_int_equal(f->cancels_fw, 1);
	error_clear(&o.err);
	fake_free(f);
}

static void unplug_mid_update_is_device_gone(void **state)
{
	(void)state;
	struct fake *f = fake_new(10000);
	struct outcome o;
	memset(&o, 0, sizeof(o));
	error_init(&o.err);
	static uint8_t image[8000];
	f->unplug_at_type = CTRL_REQ_FIRMWARE_UPDATE_DATA;
	f->unplug_after_n = 3;
	struct error err;
	error_init(&err);
	assert_int_equal(
	    ctrl_firmware_update(f->ctrl, image, sizeof(image), NULL, on_done, &o, &err), 0);
	double took = run(f, &o);
	assert_int_equal(o.err.code, ERR_DEVICE_GONE);
	assert_string_equal(detail(&o.err, "request"), "firmware-update-data");
	assert_true(took < 5.0); /* at once, not after the request's 10 s */
	assert_int_equal(f->cancels_fw, 0);
	assert_int_equal(f->firmware_len, 2000);
	error_clear(&o.err);
	fake_free(f);
}

static void on_progress_cancel(struct ctrl *c, size_t done, size_t total, void *ud)
{
	on_progress(c, done, total, ud);
	if (done >= 2000)
		ctrl_cancel(c);
}

static void cancel_mid_update_cancels_on_the_device(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	memset(&o, 0, sizeof(o));
	error_init(&o.err);
	static uint8_t image[6000];
	struct error err;
	error_init(&err);
	assert_int_equal(ctrl_firmware_update(f->ctrl, image, sizeof(image), on_progress_cancel,
					      on_done, &o, &err),
			 0);
	run(f, &o);
	assert_int_equal(o.err.code, ERR_CANCELLED);
	assert_int_equal(f->cancels_fw, 1);
	assert_false(f->finished);
	assert_int_equal(f->firmware_len, 2000);
	error_clear(&o.err);
	fake_free(f);
}

static void free_while_in_flight_is_safe(void **state)
{
	(void)state;
	struct fake *f = fake_new(1000);
	struct outcome o;
	memset(&o, 0, sizeof(o));
	struct error err;
	error_init(&err);
	assert_int_equal(ctrl_op_start(f->ctrl, CTRL_OP_MODULE_INFO, on_done, &o, &err), 0);
	ctrl_free(f->ctrl); /* the cancellation completes from the loop */
	for (int i = 0; i < 5; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_false(o.called);
	f->ctrl = NULL;
	fake_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(reads_id_version_mode),
	    cmocka_unit_test(module_info_both_formats),
	    cmocka_unit_test(busy_then_ok_and_pending_polls),
	    cmocka_unit_test(busy_for_ever_is_device_busy),
	    cmocka_unit_test(not_supported_is_decoded),
	    cmocka_unit_test(stall_means_no_control_requests),
	    cmocka_unit_test(silent_device_times_out_and_resets),
	    cmocka_unit_test(firmware_update_sends_every_byte),
	    cmocka_unit_test(firmware_update_failure_cancels),
	    cmocka_unit_test(unplug_mid_update_is_device_gone),
	    cmocka_unit_test(cancel_mid_update_cancels_on_the_device),
	    cmocka_unit_test(free_while_in_flight_is_safe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
