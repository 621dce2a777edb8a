/*
 * Typed control requests: payloads encoded and replies decoded with the
 * nanopb code generated from Particle's .proto files (proto/particle), and
 * the firmware-update exchange (particle-usb src/device.js updateFirmware()).
 */
#include "ctrl.h"
#include "ctrl_internal.h"

#include "config.pb.h"
#include "describe.pb.h"
#include "storage.pb.h"

#include <pb_decode.h>
#include <pb_encode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ctrl_op_name(enum ctrl_op op)
{
	static const char *const names[] = {
	    [CTRL_OP_DEVICE_ID] = "device-id",
	    [CTRL_OP_SERIAL_NUMBER] = "serial-number",
	    [CTRL_OP_SYSTEM_VERSION] = "system-version",
	    [CTRL_OP_DEVICE_MODE] = "device-mode",
	    [CTRL_OP_MODULE_INFO] = "module-info",
	    [CTRL_OP_ENTER_DFU] = "enter-dfu",
	    [CTRL_OP_ENTER_SAFE_MODE] = "enter-safe-mode",
	    [CTRL_OP_START_LISTENING] = "start-listening",
	    [CTRL_OP_STOP_LISTENING] = "stop-listening",
	    [CTRL_OP_RESET] = "reset",
	    [CTRL_OP_ASSET_INFO] = "asset-info",
	};
	return op < sizeof(names) / sizeof(names[0]) ? names[op] : "unknown";
}

static unsigned op_request_type(enum ctrl_op op)
{
	switch (op) {
	case CTRL_OP_DEVICE_ID:
		return CTRL_REQ_DEVICE_ID;
	case CTRL_OP_SERIAL_NUMBER:
		return CTRL_REQ_SERIAL_NUMBER;
	case CTRL_OP_SYSTEM_VERSION:
		return CTRL_REQ_SYSTEM_VERSION;
	case CTRL_OP_DEVICE_MODE:
		return CTRL_REQ_GET_DEVICE_MODE;
	case CTRL_OP_MODULE_INFO:
		return CTRL_REQ_GET_MODULE_INFO;
	case CTRL_OP_ENTER_DFU:
		return CTRL_REQ_DFU_MODE;
	case CTRL_OP_ENTER_SAFE_MODE:
		return CTRL_REQ_SAFE_MODE;
	case CTRL_OP_START_LISTENING:
		return CTRL_REQ_START_LISTENING;
	case CTRL_OP_STOP_LISTENING:
		return CTRL_REQ_STOP_LISTENING;
	case CTRL_OP_RESET:
		return CTRL_REQ_RESET;
	case CTRL_OP_ASSET_INFO:
		return CTRL_REQ_GET_ASSET_INFO;
	}
	return 0;
}

/* ---- reply decoding ------------------------------------------------------ */

static int decode(const struct ctrl_reply *rep, const pb_msgdesc_t *fields, void *msg,
		  struct error *err)
{
	pb_istream_t in = pb_istream_from_buffer(rep->data, rep->len);
	if (!pb_decode(&in, fields, msg)) {
		error_set(err, ERR_TRANSFER_FAILED,
			  "the device's reply to control request %s (%zu bytes) could not be "
			  "decoded: %s",
			  ctrl_request_name(rep->type), rep->len, PB_GET_ERROR(&in));
		error_detail_str(err, "reason", "undecodable reply");
		error_detail_str(err, "request", ctrl_request_name(rep->type));
		return -1;
	}
	return 0;
}

/* particle.ctrl.FirmwareModuleType (the format before Device OS 5.6.0) -> module_function. */
static uint8_t deprecated_function(particle_ctrl_FirmwareModuleType t)
{
	switch (t) {
	case particle_ctrl_FirmwareModuleType_BOOTLOADER:
		return MODULE_FUNCTION_BOOTLOADER;
	case particle_ctrl_FirmwareModuleType_SYSTEM_PART:
		return MODULE_FUNCTION_SYSTEM;
	case particle_ctrl_FirmwareModuleType_USER_PART:
		return MODULE_FUNCTION_USER;
	case particle_ctrl_FirmwareModuleType_MONO_FIRMWARE:
		return MODULE_FUNCTION_MONO;
	case particle_ctrl_FirmwareModuleType_NCP_FIRMWARE:
		return MODULE_FUNCTION_NCP;
	case particle_ctrl_FirmwareModuleType_RADIO_STACK:
		return MODULE_FUNCTION_RADIO_STACK;
	default:
		return MODULE_FUNCTION_NONE;
	}
}

static void hex(char *out, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
}

static int decode_modules(const struct ctrl_reply *rep, struct ctrl_result *res, struct error *err)
{
	particle_ctrl_GetModuleInfoReply *m = calloc(1, sizeof(*m));
	if (!m)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	if (decode(rep, particle_ctrl_GetModuleInfoReply_fields, m, err) < 0) {
		free(m);
		return -1;
	}
	res->n_modules = 0;
	if (m->modules_deprecated_count) {
		/* Before 5.6.0: validity holds the failed checks (INTEGRITY 1, DEPENDENCY 2). */
		res->modules_deprecated_format = true;
		for (pb_size_t i = 0; i < m->modules_deprecated_count; i++) {
			const particle_ctrl_GetModuleInfoReply_Module *d =
			    &m->modules_deprecated[i];
			struct installed_module *im = &res->modules[res->n_modules++];
			memset(im, 0, sizeof(*im));
			im->function = deprecated_function(d->type);
			im->index = (uint8_t)d->index;
			im->version = (uint16_t)d->version;
			im->slot_size = d->size;
			im->store = MODULE_STORE_MAIN;
			im->checked = MODULE_CHECK_INTEGRITY | MODULE_CHECK_DEPENDENCIES;
			im->passed = im->checked;
			if (d->validity &
			    particle_ctrl_FirmwareModuleValidityFlag_INTEGRITY_CHECK_FAILED)
				im->passed &= (uint16_t)~MODULE_CHECK_INTEGRITY;
			if (d->validity &
			    particle_ctrl_FirmwareModuleValidityFlag_DEPENDENCY_CHECK_FAILED)
				im->passed &= (uint16_t)~MODULE_CHECK_DEPENDENCIES;
			for (pb_size_t k = 0; k < d->dependencies_count && k < 2; k++) {
				im->deps[k].function = deprecated_function(d->dependencies[k].type);
				im->deps[k].index = (uint8_t)d->dependencies[k].index;
				im->deps[k].version = (uint16_t)d->dependencies[k].version;
			}
		}
	} else {
		/* 5.6.0 on: particle.cloud.FirmwareModule, types are module_function values. */
		for (pb_size_t i = 0; i < m->modules_count; i++) {
			const particle_cloud_FirmwareModule *f = &m->modules[i];
			struct installed_module *im = &res->modules[res->n_modules++];
			memset(im, 0, sizeof(*im));
			im->function = (uint8_t)f->type;
			im->index = (uint8_t)f->index;
			im->version = (uint16_t)f->version;
			im->store = (uint8_t)f->store;
			im->slot_size = f->max_size;
			im->checked = (uint16_t)f->checked_flags;
			im->passed = (uint16_t)f->passed_flags;
			if (f->has_hash && f->hash.size == 32)
				hex(im->sha256, f->hash.bytes, 32);
			for (pb_size_t k = 0; k < f->dependencies_count && k < 2; k++) {
				im->deps[k].function = (uint8_t)f->dependencies[k].type;
				im->deps[k].index = (uint8_t)f->dependencies[k].index;
				im->deps[k].version = (uint16_t)f->dependencies[k].version;
			}
		}
	}
	free(m);
	return 0;
}

/* GetAssetInfoReply: the available assets (required ones are the application's
 * dependencies, which flashd reads from the file it flashes). */
static int decode_assets(const struct ctrl_reply *rep, struct ctrl_result *res, struct error *err)
{
	particle_ctrl_GetAssetInfoReply *m = calloc(1, sizeof(*m));
	if (!m)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	if (decode(rep, particle_ctrl_GetAssetInfoReply_fields, m, err) < 0) {
		free(m);
		return -1;
	}
	res->n_assets = 0;
	for (pb_size_t i = 0; i < m->available_count && i < DEVICE_FACTS_MAX_ASSETS; i++) {
		const particle_cloud_FirmwareModuleAsset *a = &m->available[i];
		struct installed_asset *ia = &res->assets[res->n_assets++];
		memset(ia, 0, sizeof(*ia));
		snprintf(ia->name, sizeof(ia->name), "%s", a->name);
		for (char *c = ia->name; *c; c++) /* the device's text, shown to people */
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		if (a->hash.size == 32)
			memcpy(ia->sha256, a->hash.bytes, 32);
		ia->size = a->size;
	}
	free(m);
	return 0;
}

static void copy_text(struct ctrl_result *res, const char *s)
{
	snprintf(res->text, sizeof(res->text), "%s", s);
}

static int decode_result(const struct ctrl_reply *rep, struct ctrl_result *res, struct error *err)
{
	switch (res->op) {
	case CTRL_OP_DEVICE_ID: {
		particle_ctrl_GetDeviceIdReply r = particle_ctrl_GetDeviceIdReply_init_zero;
		if (decode(rep, particle_ctrl_GetDeviceIdReply_fields, &r, err) < 0)
			return -1;
		copy_text(res, r.id);
		for (char *p = res->text; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		return 0;
	}
	case CTRL_OP_SERIAL_NUMBER: {
		particle_ctrl_GetSerialNumberReply r = particle_ctrl_GetSerialNumberReply_init_zero;
		if (decode(rep, particle_ctrl_GetSerialNumberReply_fields, &r, err) < 0)
			return -1;
		copy_text(res, r.serial);
		return 0;
	}
	case CTRL_OP_SYSTEM_VERSION: {
		if (rep->type != CTRL_REQ_SYSTEM_VERSION || !rep->data) /* legacy: a C string */
			return 0;
		particle_ctrl_GetSystemVersionReply r =
		    particle_ctrl_GetSystemVersionReply_init_zero;
		if (decode(rep, particle_ctrl_GetSystemVersionReply_fields, &r, err) < 0)
			return -1;
		copy_text(res, r.version);
		return 0;
	}
	case CTRL_OP_DEVICE_MODE: {
		particle_ctrl_GetDeviceModeReply r = particle_ctrl_GetDeviceModeReply_init_zero;
		if (decode(rep, particle_ctrl_GetDeviceModeReply_fields, &r, err) < 0)
			return -1;
		res->mode = r.mode == particle_ctrl_DeviceMode_LISTENING_MODE ? CTRL_MODE_LISTENING
									      : CTRL_MODE_NORMAL;
		return 0;
	}
	case CTRL_OP_MODULE_INFO:
		return decode_modules(rep, res, err);
	case CTRL_OP_ASSET_INFO:
		return decode_assets(rep, res, err);
	default:
		return 0;
	}
}

/* ---- simple operations --------------------------------------------------- */

static void op_finish(struct ctrl *c, struct error *err)
{
	ctrl_op_done_fn done = c->op_done;
	void *ud = c->op_userdata;
	struct ctrl_result *res = c->op_result;
	c->op_done = NULL;
	c->op_result = NULL;
	c->op_running = false;
	if (res)
		res->busy_retries += c->busy_seen;
	if (done)
		done(c, res, err && error_is_set(err) ? err : NULL, ud);
	free(res);
}

static void on_legacy_version(struct ctrl *c, const struct ctrl_reply *rep, struct error *err,
			      void *ud)
{
	(void)ud;
	struct error e;
	error_init(&e);
	if (!err) {
		size_t n = strnlen((const char *)rep->data, rep->len);
		if (n >= sizeof(c->op_result->text))
			n = sizeof(c->op_result->text) - 1;
		memcpy(c->op_result->text, rep->data, n);
		c->op_result->text[n] = 0;
	} else {
		error_move(&e, err);
	}
	op_finish(c, &e);
	error_clear(&e);
}

static void on_op_reply(struct ctrl *c, const struct ctrl_reply *rep, struct error *err, void *ud)
{
	(void)ud;
	struct error e;
	error_init(&e);
	if (err && c->op == CTRL_OP_SYSTEM_VERSION && err->code == ERR_REQUEST_UNSUPPORTED &&
	    !c->op_cancelled) {
		/* The service form is missing: the legacy 'P' request particle-usb uses. */
		if (ctrl_legacy_request(c, CTRL_REQ_SYSTEM_VERSION, on_legacy_version, NULL, &e) ==
		    0)
			return;
	} else if (err) {
		error_move(&e, err);
	} else {
		decode_result(rep, c->op_result, &e);
	}
	op_finish(c, &e);
	error_clear(&e);
}

static int op_begin(struct ctrl *c, enum ctrl_op op, ctrl_op_done_fn done, void *ud,
		    struct error *err)
{
	if (ctrl_busy(c))
		return error_set(err, ERR_INTERNAL, "a control request is already running");
	c->op_result = calloc(1, sizeof(*c->op_result));
	if (!c->op_result)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	c->op_result->op = op;
	c->op = op;
	c->op_done = done;
	c->op_userdata = ud;
	c->op_running = true;
	c->op_cancelled = false;
	return 0;
}

int ctrl_op_start(struct ctrl *c, enum ctrl_op op, ctrl_op_done_fn done, void *ud,
		  struct error *err)
{
	if (op_begin(c, op, done, ud, err) < 0)
		return -1;
	if (ctrl_request(c, op_request_type(op), NULL, 0, on_op_reply, NULL, err) < 0) {
		free(c->op_result);
		c->op_result = NULL;
		c->op_running = false;
		return -1;
	}
	return 0;
}

/* ---- the firmware-update exchange ---------------------------------------- */

enum fw_state { FW_START, FW_DATA, FW_FINISH, FW_CANCEL };

struct ctrl_fw_update {
	enum fw_state state;
	uint8_t *data;
	size_t size, offset, chunk_size, in_flight;
	ctrl_progress_fn progress;
	struct error cause; /* kept while CANCEL runs */
	particle_ctrl_FirmwareUpdateDataRequest req;
	uint8_t buf[particle_ctrl_FirmwareUpdateDataRequest_size];
};

void ctrl_ops_clear(struct ctrl *c)
{
	if (c->fw) {
		error_clear(&c->fw->cause);
		free(c->fw->data);
		free(c->fw);
		c->fw = NULL;
	}
	free(c->op_result);
	c->op_result = NULL;
}

static void fw_end(struct ctrl *c, struct error *err)
{
	struct ctrl_fw_update *fw = c->fw;
	c->fw = NULL;
	op_finish(c, err);
	if (fw) {
		error_clear(&fw->cause);
		free(fw->data);
		free(fw);
	}
}

static void on_fw_reply(struct ctrl *c, const struct ctrl_reply *rep, struct error *err, void *ud);

static int fw_send(struct ctrl *c, unsigned type, const pb_msgdesc_t *fields, const void *msg,
		   struct error *err)
{
	struct ctrl_fw_update *fw = c->fw;
	pb_ostream_t out = pb_ostream_from_buffer(fw->buf, sizeof(fw->buf));
	if (fields && !pb_encode(&out, fields, msg))
		return error_set(err, ERR_INTERNAL, "encoding %s: %s", ctrl_request_name(type),
				 PB_GET_ERROR(&out));
	return ctrl_request(c, type, fw->buf, fields ? out.bytes_written : 0, on_fw_reply, NULL,
			    err);
}

static int fw_send_chunk(struct ctrl *c, struct error *err)
{
	struct ctrl_fw_update *fw = c->fw;
	size_t n = fw->size - fw->offset;
	if (n > fw->chunk_size)
		n = fw->chunk_size;
	fw->req.data.size = (pb_size_t)n;
	memcpy(fw->req.data.bytes, fw->data + fw->offset, n);
	fw->in_flight = n;
	fw->state = FW_DATA;
	return fw_send(c, CTRL_REQ_FIRMWARE_UPDATE_DATA,
		       particle_ctrl_FirmwareUpdateDataRequest_fields, &fw->req, err);
}

/* A step failed after START: CANCEL on the device (bounded), then report the cause. */
static void fw_fail(struct ctrl *c, struct error *err)
{
	struct ctrl_fw_update *fw = c->fw;
	if (fw->state != FW_START && fw->state != FW_CANCEL && err->code != ERR_DEVICE_GONE) {
		error_move(&fw->cause, err);
		fw->state = FW_CANCEL;
		struct error e;
		error_init(&e);
		if (fw_send(c, CTRL_REQ_CANCEL_FIRMWARE_UPDATE, NULL, NULL, &e) == 0) {
			error_clear(&e);
			return;
		}
		error_clear(&e);
		fw_end(c, &fw->cause);
		return;
	}
	fw_end(c, err);
}

static void on_fw_reply(struct ctrl *c, const struct ctrl_reply *rep, struct error *err, void *ud)
{
	(void)ud;
	struct ctrl_fw_update *fw = c->fw;
	struct error e;
	error_init(&e);
	if (fw->state == FW_CANCEL) { /* whatever CANCEL got, the cause is what failed before */
		fw_end(c, &fw->cause);
		return;
	}
	if (err) {
		error_move(&e, err);
		if (fw->state == FW_DATA)
			error_prefix(&e, "at byte %zu of %zu: ", fw->offset, fw->size);
		fw_fail(c, &e);
		error_clear(&e);
		return;
	}
	if (c->op_cancelled) {
		error_set(&e, ERR_CANCELLED, "the firmware update was cancelled at byte %zu of %zu",
			  fw->offset, fw->size);
		fw_fail(c, &e);
		error_clear(&e);
		return;
	}
	switch (fw->state) {
	case FW_START: {
		particle_ctrl_StartFirmwareUpdateReply r =
		    particle_ctrl_StartFirmwareUpdateReply_init_zero;
		if (decode(rep, particle_ctrl_StartFirmwareUpdateReply_fields, &r, &e) < 0) {
			fw->state = FW_DATA; /* started: cancel it */
			fw_fail(c, &e);
			break;
		}
		fw->chunk_size = r.chunk_size;
		if (!fw->chunk_size || fw->chunk_size > sizeof(fw->req.data.bytes))
			fw->chunk_size = sizeof(fw->req.data.bytes);
		if (fw_send_chunk(c, &e) < 0)
			fw_fail(c, &e);
		break;
	}
	case FW_DATA:
		fw->offset += fw->in_flight;
		if (fw->progress)
			fw->progress(c, fw->offset, fw->size, c->op_userdata);
		if (c->op_cancelled) { /* ctrl_cancel() from the progress callback */
			error_set(&e, ERR_CANCELLED,
				  "the firmware update was cancelled at byte %zu of %zu",
				  fw->offset, fw->size);
			fw_fail(c, &e);
		} else if (fw->offset < fw->size) {
			if (fw_send_chunk(c, &e) < 0)
				fw_fail(c, &e);
		} else {
			particle_ctrl_FinishFirmwareUpdateRequest r =
			    particle_ctrl_FinishFirmwareUpdateRequest_init_zero;
			r.validate_only = false;
			fw->state = FW_FINISH;
			if (fw_send(c, CTRL_REQ_FINISH_FIRMWARE_UPDATE,
				    particle_ctrl_FinishFirmwareUpdateRequest_fields, &r, &e) < 0)
				fw_fail(c, &e);
		}
		break;
	case FW_FINISH:
		fw_end(c, NULL);
		break;
	case FW_CANCEL:
		break;
	}
	error_clear(&e);
}

int ctrl_firmware_update(struct ctrl *c, const uint8_t *data, size_t size,
			 ctrl_progress_fn progress, ctrl_op_done_fn done, void *ud,
			 struct error *err)
{
	if (!size || size > UINT32_MAX)
		return error_set(err, ERR_INTERNAL, "firmware update of %zu bytes", size);
	if (op_begin(c, CTRL_OP_RESET, done, ud, err) < 0)
		return -1;
	struct ctrl_fw_update *fw = calloc(1, sizeof(*fw));
	uint8_t *copy = malloc(size);
	if (!fw || !copy) {
		free(fw);
		free(copy);
		free(c->op_result);
		c->op_result = NULL;
		c->op_running = false;
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	}
	memcpy(copy, data, size);
	fw->data = copy;
	fw->size = size;
	fw->progress = progress;
	fw->state = FW_START;
	error_init(&fw->cause);
	c->fw = fw;
	particle_ctrl_StartFirmwareUpdateRequest r =
	    particle_ctrl_StartFirmwareUpdateRequest_init_zero;
	r.size = (uint32_t)size;
	r.format = particle_ctrl_FileFormat_BIN;
	if (fw_send(c, CTRL_REQ_START_FIRMWARE_UPDATE,
		    particle_ctrl_StartFirmwareUpdateRequest_fields, &r, err) < 0) {
		c->fw = NULL;
		free(fw->data);
		free(fw);
		free(c->op_result);
		c->op_result = NULL;
		c->op_running = false;
		return -1;
	}
	return 0;
}
