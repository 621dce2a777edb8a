#include "ctrlreq.h"

#include "bytes.h"
#include "device.h"
#include "osver.h"
#include "timing.h"
#include "validate.h"

#include "asset_module.h"
#include "bundle.h"
#include "image.h"
#include "config.pb.h"
#include "describe.pb.h"
#include "storage.pb.h"

#include <pb_decode.h>
#include <pb_encode.h>

#include <endian.h>
#include <linux/usb/ch9.h>
#include <string.h>
#include <zlib.h>

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
#define LEGACY_BREQUEST 0x50 /* 'P' */
/* Device OS system/inc/system_control.h ctrl_request_type */
enum {
	REQ_DEVICE_ID = 20,
	REQ_SERIAL_NUMBER = 21,
	REQ_SYSTEM_VERSION = 30,
	REQ_RESET = 40,
	REQ_DFU_MODE = 50,
	REQ_SAFE_MODE = 60,
	REQ_START_LISTENING = 70,
	REQ_STOP_LISTENING = 71,
	REQ_GET_DEVICE_MODE = 72,
	REQ_GET_MODULE_INFO = 90,
	REQ_GET_ASSET_INFO = 91,
	REQ_START_FIRMWARE_UPDATE = 250,
	REQ_FINISH_FIRMWARE_UPDATE = 251,
	REQ_CANCEL_FIRMWARE_UPDATE = 252,
	REQ_FIRMWARE_UPDATE_DATA = 253,
};
/* Device OS services/inc/system_error.h */
#define SYSTEM_ERROR_NOT_SUPPORTED		(-120)
#define SYSTEM_ERROR_TOO_LARGE			(-190)
#define SYSTEM_ERROR_FLASH_IO			(-219)
#define SYSTEM_ERROR_INVALID_STATE		(-210)
#define SYSTEM_ERROR_INTERNAL			(-250)
#define SYSTEM_ERROR_INVALID_ARGUMENT		(-270)
#define SYSTEM_ERROR_BAD_DATA			(-280)
#define SYSTEM_ERROR_OTA_UNSUPPORTED_MODULE	(-1310)
#define SYSTEM_ERROR_OTA_INTEGRITY_CHECK_FAILED (-1330)
#define SYSTEM_ERROR_OTA_INVALID_PLATFORM	(-1360)
#define NCP_MCU_ESP32				0x21 /* module_info_t.reserved of ESP32 NCP modules (mcu target) */
#define SERVICE_REPLY_MAX			16
#define FW_CHUNK_SIZE				4096 /* what the device announces at START */
/* Time the simulated device spends writing one chunk into its OTA region (an
 * assumed figure, not a measurement), under --time-scale: CHECK answers PENDING
 * meanwhile, so a job at a non-zero time scale can be interrupted mid-update. */
#define FW_CHUNK_WRITE_US 100000

static void slot_clear(struct ctrlreq_slot *s)
{
	g_free(s->payload);
	g_free(s->reply);
	memset(s, 0, sizeof(*s));
	s->then = -1;
}

void ctrlreq_init(struct ctrlreq *c)
{
	for (int i = 0; i < CTRLREQ_MAX_ACTIVE; i++)
		slot_clear(&c->slot[i]);
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

/* A service reply: flags, status, then the optional fields in flag order. */
static int reply(uint8_t *in, uint16_t wlength, unsigned flags, uint16_t status, uint16_t id,
		 uint32_t size, int32_t result)
{
	uint8_t buf[SERVICE_REPLY_MAX];
	size_t n = 0;
	bytes_put_le32(buf, flags | F_STATUS);
	bytes_put_le16(buf + 4, status);
	n = 6;
	if (flags & F_ID) {
		bytes_put_le16(buf + n, id);
		n += 2;
	}
	if (flags & F_SIZE) {
		bytes_put_le32(buf + n, size);
		n += 4;
	}
	if (flags & F_RESULT) {
		bytes_put_le32(buf + n, (uint32_t)result);
		n += 4;
	}
	if (wlength < n)
		return -1;
	memcpy(in, buf, n);
	return (int)n;
}

/* ---- what each request does ------------------------------------------------ */

static bool gen2(const struct sim_device *d)
{
	return d->spec.platform->gen == 2;
}

/* HAL_PLATFORM_ASSETS: Gen 3 and the P2 family, from Device OS 5.5.0. */
static bool has_assets(const struct sim_device *d)
{
	unsigned mcu = d->spec.platform->mcu;
	return (mcu == MCU_NRF52840 || mcu == MCU_RTL8721D) &&
	       osver_compare(d->spec.os, "5.5.0") >= 0;
}

/* Whether the device's Device OS knows the request type (else -120). */
static bool supported(const struct sim_device *d, uint16_t type)
{
	switch (type) {
	case REQ_DEVICE_ID:
	case REQ_SERIAL_NUMBER:
	case REQ_SYSTEM_VERSION:
		return !gen2(d) || osver_compare(d->spec.os, "1.5.0") >= 0;
	case REQ_GET_DEVICE_MODE:
		return !gen2(d) || osver_compare(d->spec.os, "1.1.0") >= 0;
	case REQ_GET_ASSET_INFO: /* system/inc/system_control.h: since 5.6.0 */
		return has_assets(d) && osver_compare(d->spec.os, "5.6.0") >= 0;
	case REQ_RESET:
	case REQ_DFU_MODE:
	case REQ_SAFE_MODE:
	case REQ_START_LISTENING:
	case REQ_STOP_LISTENING:
	case REQ_GET_MODULE_INFO:
	case REQ_START_FIRMWARE_UPDATE:
	case REQ_FINISH_FIRMWARE_UPDATE:
	case REQ_CANCEL_FIRMWARE_UPDATE:
	case REQ_FIRMWARE_UPDATE_DATA:
		return true;
	default:
		return false;
	}
}

static bool set_reply(struct ctrlreq_slot *s, const pb_msgdesc_t *fields, const void *msg)
{
	size_t n = 0;
	if (!pb_get_encoded_size(&n, fields, msg))
		return false;
	s->reply = g_malloc(n ? n : 1);
	pb_ostream_t out = pb_ostream_from_buffer(s->reply, n);
	if (!pb_encode(&out, fields, msg))
		return false;
	s->reply_len = (uint32_t)out.bytes_written;
	return true;
}

static bool decode(const struct ctrlreq_slot *s, const pb_msgdesc_t *fields, void *msg)
{
	pb_istream_t in = pb_istream_from_buffer(s->payload, s->size);
	return pb_decode(&in, fields, msg);
}

/* particle.ctrl.FirmwareModuleType of the format before 5.6.0. */
static particle_ctrl_FirmwareModuleType deprecated_type(uint8_t function)
{
	switch (function) {
	case MODULE_FUNCTION_BOOTLOADER:
		return particle_ctrl_FirmwareModuleType_BOOTLOADER;
	case MODULE_FUNCTION_SYSTEM:
		return particle_ctrl_FirmwareModuleType_SYSTEM_PART;
	case MODULE_FUNCTION_USER:
		return particle_ctrl_FirmwareModuleType_USER_PART;
	case MODULE_FUNCTION_MONO:
		return particle_ctrl_FirmwareModuleType_MONO_FIRMWARE;
	case MODULE_FUNCTION_NCP:
		return particle_ctrl_FirmwareModuleType_NCP_FIRMWARE;
	case MODULE_FUNCTION_RADIO_STACK:
		return particle_ctrl_FirmwareModuleType_RADIO_STACK;
	default:
		return particle_ctrl_FirmwareModuleType_INVALID_FIRMWARE_MODULE;
	}
}

static int32_t module_info(struct sim_device *d, struct ctrlreq_slot *s)
{
	struct vscan scan;
	device_scan(d, &scan);
	particle_ctrl_GetModuleInfoReply *r = g_new0(particle_ctrl_GetModuleInfoReply, 1);
	bool old = osver_compare(d->spec.os, "5.6.0") < 0;
	for (unsigned i = 0; i < scan.n; i++) {
		const struct vmodule *m = &scan.m[i];
		if (!m->reported)
			continue;
		if (old && r->modules_deprecated_count < G_N_ELEMENTS(r->modules_deprecated)) {
			particle_ctrl_GetModuleInfoReply_Module *o =
			    &r->modules_deprecated[r->modules_deprecated_count++];
			o->type = deprecated_type(m->function);
			o->index = m->index;
			o->version = m->version;
			o->size = m->slot_size;
			unsigned failed = m->checked & ~m->passed;
			if (failed & VALID_INTEGRITY)
				o->validity |=
				    particle_ctrl_FirmwareModuleValidityFlag_INTEGRITY_CHECK_FAILED;
			if (failed & ~VALID_INTEGRITY)
				o->validity |=
				    particle_ctrl_FirmwareModuleValidityFlag_DEPENDENCY_CHECK_FAILED;
			for (int k = 0; k < 2; k++)
				if (m->dep_function[k]) {
					particle_ctrl_GetModuleInfoReply_Dependency *dep =
					    &o->dependencies[o->dependencies_count++];
					dep->type = deprecated_type(m->dep_function[k]);
					dep->index = m->dep_index[k];
					dep->version = m->dep_version[k];
				}
		} else if (!old && r->modules_count < G_N_ELEMENTS(r->modules)) {
			particle_cloud_FirmwareModule *o = &r->modules[r->modules_count++];
			o->type = (particle_cloud_FirmwareModuleType)m->function;
			o->index = m->index;
			o->version = m->version;
			o->store = (particle_cloud_FirmwareModuleStore)m->store;
			o->max_size = m->slot_size;
			o->size = m->end > m->start ? m->end - m->start + 4 : 0;
			o->checked_flags = m->checked;
			o->passed_flags = m->passed;
			o->has_hash = true;
			o->hash.size = 32;
			memcpy(o->hash.bytes, m->sha256, 32);
			for (int k = 0; k < 2; k++)
				if (m->dep_function[k]) {
					particle_cloud_FirmwareModuleDependency *dep =
					    &o->dependencies[o->dependencies_count++];
					dep->type =
					    (particle_cloud_FirmwareModuleType)m->dep_function[k];
					dep->index = m->dep_index[k];
					dep->version = m->dep_version[k];
				}
		}
	}
	/* platform_ncp_fetch_module_info(): the ESP32's version, every check passed */
	if (d->ncp_version && old &&
	    r->modules_deprecated_count < G_N_ELEMENTS(r->modules_deprecated)) {
		particle_ctrl_GetModuleInfoReply_Module *o =
		    &r->modules_deprecated[r->modules_deprecated_count++];
		o->type = particle_ctrl_FirmwareModuleType_NCP_FIRMWARE;
		o->version = d->ncp_version;
	} else if (d->ncp_version && !old && r->modules_count < G_N_ELEMENTS(r->modules)) {
		particle_cloud_FirmwareModule *o = &r->modules[r->modules_count++];
		o->type = particle_cloud_FirmwareModuleType_NCP_FIRMWARE_MODULE;
		o->version = d->ncp_version;
		o->store = particle_cloud_FirmwareModuleStore_MAIN_MODULE_STORE;
		o->checked_flags = o->passed_flags = VALID_CHECKED;
	}
	bool ok = set_reply(s, particle_ctrl_GetModuleInfoReply_fields, r);
	g_free(r);
	return ok ? 0 : SYSTEM_ERROR_INTERNAL;
}

#define SIM_MAX_REQUIRED 16

/*
 * The assets the installed application depends on (its ASSET_DEPENDENCY
 * extensions), as AssetManager::parseRequiredAssets() reads them at boot;
 * entries with another hash type are left out, as Device OS does.
 */
static unsigned required_assets(struct sim_device *d, struct bundle_asset_dep *out)
{
	struct vscan scan;
	device_scan(d, &scan);
	for (unsigned i = 0; i < scan.n; i++) {
		const struct vmodule *m = &scan.m[i];
		if (m->function != MODULE_FUNCTION_USER || m->store != MODULE_STORE_MAIN ||
		    !m->reported || !(m->passed & VALID_INTEGRITY) || m->end <= m->start)
			continue;
		size_t len = (size_t)(m->end - m->start) + 4;
		const uint8_t *bytes = flash_peek(d->flash, 0, m->address, len);
		struct image *img = NULL;
		struct error e;
		error_init(&e);
		if (!bytes || image_parse(bytes, len, &img, &e) < 0) {
			error_clear(&e);
			image_free(img);
			continue;
		}
		struct bundle_asset_dep all[SIM_MAX_REQUIRED];
		unsigned n = bundle_app_asset_deps(img, all, SIM_MAX_REQUIRED), k = 0;
		image_free(img);
		for (unsigned j = 0; j < n && j < SIM_MAX_REQUIRED; j++)
			if (all[j].hash_type == 0)
				out[k++] = all[j];
		return k;
	}
	return 0;
}

/* GetAssetInfoReply: the store's assets and the application's. */
static int32_t asset_info(struct sim_device *d, struct ctrlreq_slot *s)
{
	particle_ctrl_GetAssetInfoReply *r = g_new0(particle_ctrl_GetAssetInfoReply, 1);
	struct bundle_asset_dep req[SIM_MAX_REQUIRED];
	unsigned n_req = required_assets(d, req);
	for (unsigned i = 0; i < n_req && i < G_N_ELEMENTS(r->required); i++) {
		particle_cloud_FirmwareModuleAsset *a = &r->required[r->required_count++];
		a->hash.size = 32;
		memcpy(a->hash.bytes, req[i].sha256, 32);
		g_strlcpy(a->name, req[i].name, sizeof(a->name));
	}
	for (unsigned i = 0; i < d->n_assets && i < G_N_ELEMENTS(r->available); i++) {
		particle_cloud_FirmwareModuleAsset *a = &r->available[r->available_count++];
		a->hash.size = 32;
		memcpy(a->hash.bytes, d->assets[i].sha256, 32);
		g_strlcpy(a->name, d->assets[i].name, sizeof(a->name));
		a->size = (uint32_t)d->assets[i].size;
		a->storage_size = (uint32_t)d->assets[i].size;
	}
	bool ok = set_reply(s, particle_ctrl_GetAssetInfoReply_fields, r);
	g_free(r);
	return ok ? 0 : SYSTEM_ERROR_INTERNAL;
}

/*
 * An asset module in the OTA region (FINISH): Device OS's HAL_FLASH_End()
 * hands it to AssetManager::storeAsset(), which checks it (AssetReader::
 * validate(): function, flags, size, CRC, NAME and HASH) and keeps it under
 * its name, replacing one of the same name.  1 if it was not an asset module.
 */
/*
 * The raw bytes of an asset module: after the prefix, or, for a compressed
 * one (flag 0x02, what particle-cli sends: binary-version-reader's
 * compressModule()), inflated from the raw-deflate data behind the 8-byte
 * header (u16 header size, u8 method 0, u8 window bits, u32 original size), as
 * Device OS's AssetReader reads it.  NULL if it does not inflate to that size.
 */
#define SIM_ASSET_MAX (8u * 1024 * 1024)
static uint8_t *asset_bytes(const uint8_t *img, const struct asset_module_info *info, size_t *len)
{
	if (!(img[9] & 0x02)) {
		*len = info->data_size;
		return g_memdup2(img + info->data_offset, info->data_size);
	}
	if (info->data_size < 8)
		return NULL;
	const uint8_t *h = img + info->data_offset;
	unsigned hsize = h[0] | h[1] << 8, bits = h[3] ? h[3] : 15;
	uint32_t orig =
	    (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
	if (h[2] != 0 || hsize < 8 || hsize > info->data_size || orig > SIM_ASSET_MAX || bits < 8 ||
	    bits > 15)
		return NULL;
	uint8_t *out = g_malloc(orig ? orig : 1);
	z_stream z = {0};
	if (inflateInit2(&z, -(int)bits) != Z_OK) {
		g_free(out);
		return NULL;
	}
	z.next_in = (Bytef *)(h + hsize);
	z.avail_in = (uInt)(info->data_size - hsize);
	z.next_out = out;
	z.avail_out = orig;
	int rc = inflate(&z, Z_FINISH);
	size_t got = z.total_out;
	inflateEnd(&z);
	if (rc != Z_STREAM_END || got != orig) {
		g_free(out);
		return NULL;
	}
	*len = orig;
	return out;
}

static int32_t store_asset(struct sim_device *d, uint32_t size)
{
	uint32_t region;
	const uint8_t *img = cdc_ota_peek(d, &region);
	if (!img || size > region || size < 24 || img[14] != MODULE_FUNCTION_ASSET)
		return 1;
	if (!has_assets(d))
		return SYSTEM_ERROR_OTA_UNSUPPORTED_MODULE;
	struct asset_module_info info;
	if (asset_module_read(img, size, &info) < 0)
		return SYSTEM_ERROR_BAD_DATA;
	size_t raw_len = 0;
	uint8_t *raw = asset_bytes(img, &info, &raw_len);
	if (!raw)
		return SYSTEM_ERROR_BAD_DATA;
	/* clearUnusedAssets(): what the running application does not list goes first
	 * (so assets are written after the application that needs them) */
	struct bundle_asset_dep req[SIM_MAX_REQUIRED];
	unsigned n_req = required_assets(d, req);
	for (unsigned i = 0; i < d->n_assets;) {
		bool used = false;
		for (unsigned k = 0; k < n_req && !used; k++)
			used = strcmp(req[k].name, d->assets[i].name) == 0 &&
			       memcmp(req[k].sha256, d->assets[i].sha256, 32) == 0;
		if (used) {
			i++;
			continue;
		}
		g_free(d->assets[i].data);
		d->assets[i] = d->assets[--d->n_assets];
		memset(&d->assets[d->n_assets], 0, sizeof(d->assets[0]));
	}
	struct sim_asset *a = NULL;
	for (unsigned i = 0; i < d->n_assets && !a; i++)
		if (strcmp(d->assets[i].name, info.name) == 0)
			a = &d->assets[i];
	if (!a) {
		if (d->n_assets >= SIM_MAX_ASSETS) {
			g_free(raw);
			return SYSTEM_ERROR_TOO_LARGE;
		}
		a = &d->assets[d->n_assets++];
	}
	g_free(a->data);
	g_strlcpy(a->name, info.name, sizeof(a->name));
	memcpy(a->sha256, info.sha256, 32);
	a->data = raw;
	a->size = raw_len;
	return 0;
}

/*
 * NCP firmware in the OTA region (FINISH): Device OS's validateModules()
 * (hal/src/nRF52840/ota_flash_hal.cpp) refuses it where
 * HAL_PLATFORM_NCP_UPDATABLE is unset (-1310) and one for another coprocessor
 * (-1360); HAL_FLASH_End() then hands it to platform_ncp_update_module(),
 * which answers NOT_SUPPORTED on the Tracker from 5.6.0
 * (HAL_PLATFORM_NCP_UPDATES_DISABLED).  The ESP32 gets the bytes between the
 * prefix and the module end; module info reports its version afterwards.
 * 1 if it was not NCP firmware.
 */
static int32_t update_ncp(struct sim_device *d, uint32_t size)
{
	uint32_t region;
	const uint8_t *img = cdc_ota_peek(d, &region);
	if (!img || size > region || size < 24 || img[14] != MODULE_FUNCTION_NCP)
		return 1;
	unsigned id = d->spec.platform->id;
	if (id != 12 && id != 26)
		return SYSTEM_ERROR_OTA_UNSUPPORTED_MODULE;
	if (img[8] != NCP_MCU_ESP32)
		return SYSTEM_ERROR_OTA_INVALID_PLATFORM;
	uint32_t start = (uint32_t)img[0] | (uint32_t)img[1] << 8 | (uint32_t)img[2] << 16 |
			 (uint32_t)img[3] << 24;
	uint32_t end = (uint32_t)img[4] | (uint32_t)img[5] << 8 | (uint32_t)img[6] << 16 |
		       (uint32_t)img[7] << 24;
	if (end < start || end - start + 4 > size)
		return SYSTEM_ERROR_OTA_INTEGRITY_CHECK_FAILED;
	uint32_t body = end - start;
	uint32_t crc = (uint32_t)img[body] << 24 | (uint32_t)img[body + 1] << 16 |
		       (uint32_t)img[body + 2] << 8 | img[body + 3];
	if ((uint32_t)crc32(0L, img, body) != crc)
		return SYSTEM_ERROR_OTA_INTEGRITY_CHECK_FAILED;
	if (id == 26 && osver_compare(d->spec.os, "5.6.0") >= 0)
		return SYSTEM_ERROR_NOT_SUPPORTED;
	d->ncp_version = (uint16_t)(img[10] | img[11] << 8);
	GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
	g_checksum_update(sum, img + 24, body - 24);
	gsize n = 32;
	g_checksum_get_digest(sum, d->ncp_sha256, &n);
	g_checksum_free(sum);
	d->ncp_size = body - 24;
	return 0;
}

static struct sim_fault *fault(struct sim_device *d, const char *kind)
{
	for (unsigned i = 0; i < d->spec.n_faults; i++)
		if (!d->spec.faults[i].fired && strcmp(d->spec.faults[i].kind, kind) == 0)
			return &d->spec.faults[i];
	return NULL;
}

static void unplug_cb(void *data)
{
	device_unplug_async(data);
}

static int32_t firmware_update(struct sim_device *d, struct ctrlreq_slot *s)
{
	struct ctrlreq *c = &d->ctrl;
	switch (s->type) {
	case REQ_START_FIRMWARE_UPDATE: {
		particle_ctrl_StartFirmwareUpdateRequest q =
		    particle_ctrl_StartFirmwareUpdateRequest_init_zero;
		if (!decode(s, particle_ctrl_StartFirmwareUpdateRequest_fields, &q))
			return SYSTEM_ERROR_BAD_DATA;
		if (!q.size)
			return SYSTEM_ERROR_INVALID_ARGUMENT;
		if (cdc_ota_begin(d, q.size) < 0)
			return SYSTEM_ERROR_TOO_LARGE;
		c->fw_active = true;
		c->fw_offset = 0;
		c->fw_chunks = 0;
		particle_ctrl_StartFirmwareUpdateReply r = {FW_CHUNK_SIZE};
		return set_reply(s, particle_ctrl_StartFirmwareUpdateReply_fields, &r)
			   ? 0
			   : SYSTEM_ERROR_INTERNAL;
	}
	case REQ_FIRMWARE_UPDATE_DATA: {
		if (!c->fw_active)
			return SYSTEM_ERROR_INVALID_STATE;
		particle_ctrl_FirmwareUpdateDataRequest *q =
		    g_new0(particle_ctrl_FirmwareUpdateDataRequest, 1);
		int32_t rc = 0;
		if (!decode(s, particle_ctrl_FirmwareUpdateDataRequest_fields, q))
			rc = SYSTEM_ERROR_BAD_DATA; /* also: a chunk larger than FW_CHUNK_SIZE */
		else if (cdc_ota_write(d, c->fw_offset, q->data.bytes, q->data.size) < 0)
			rc = SYSTEM_ERROR_TOO_LARGE;
		else {
			c->fw_offset += q->data.size;
			d->ctrl_update_bytes += q->data.size;
		}
		unsigned ms = timing_scale_ms(d->sim->time_scale, FW_CHUNK_WRITE_US);
		if (ms)
			c->busy_until_ms = sim_now_ms() + ms;
		g_free(q);
		c->fw_chunks++;
		/* ctrl-result@chunkN:CODE: this chunk's request ends with a system_error_t
		 * result (e.g. -219, FLASH_IO) */
		struct sim_fault *f = fault(d, "ctrl-result");
		if (f && f->unit != SIM_AT_REQ && c->fw_chunks >= f->at) {
			f->fired = true;
			rc = f->arg[0] ? (int32_t)strtol(f->arg, NULL, 10) : SYSTEM_ERROR_FLASH_IO;
			c->fw_active = false;
		}
		/* ctrl-silent@chunkN: the device stops answering (the chunk's CHECK never
		 * completes), until it is reset by hand */
		f = fault(d, "ctrl-silent");
		if (f && c->fw_chunks >= f->at) {
			f->fired = true;
			c->silent = true;
		}
		f = fault(d, "ctrl-unplug");
		if (f && c->fw_chunks >= f->at) {
			f->fired = true;
			usbdev_node_disconnect(d->usb); /* every further ioctl: ENODEV */
			d->next_mode = SIM_MODE_UNPLUGGED;
			sim_schedule(d->sim, 0, unplug_cb, d);
		}
		return rc;
	}
	case REQ_FINISH_FIRMWARE_UPDATE: {
		particle_ctrl_FinishFirmwareUpdateRequest q =
		    particle_ctrl_FinishFirmwareUpdateRequest_init_zero;
		if (!c->fw_active)
			return SYSTEM_ERROR_INVALID_STATE;
		if (!decode(s, particle_ctrl_FinishFirmwareUpdateRequest_fields, &q))
			return SYSTEM_ERROR_BAD_DATA;
		c->fw_active = false;
		if (!q.validate_only) {
			int32_t stored = store_asset(d, c->fw_offset);
			if (stored > 0)
				stored = update_ncp(d, c->fw_offset);
			if (stored <= 0) {
				d->ota_active = false;
				d->ota_pending = false;
				if (stored == 0) /* "Always restart for now"
						    (system/src/firmware_update.cpp) */
					s->then = SIM_MODE_UNPLUGGED;
				return stored;
			}
		}
		unsigned mask = 0;
		int code = cdc_ota_finish(d, &mask);
		if (code < 0)
			return code;
		if (q.validate_only) {
			d->ota_pending = false;
			return 0;
		}
		s->then = SIM_MODE_UNPLUGGED; /* Device OS resets to apply the update */
		return 0;
	}
	case REQ_CANCEL_FIRMWARE_UPDATE:
		c->fw_active = false;
		d->ota_active = false;
		d->ota_pending = false;
		return 0;
	}
	return SYSTEM_ERROR_NOT_SUPPORTED;
}

/* Runs a request whose payload is complete: sets result, reply and what follows. */
static void process(struct sim_device *d, struct ctrlreq_slot *s)
{
	s->done = true;
	s->then = -1;
	/* ctrl-result@reqTYPE:CODE: every request of that type ends with that
	 * system_error_t result (default -120, not supported) */
	for (unsigned i = 0; i < d->spec.n_faults; i++) {
		struct sim_fault *f = &d->spec.faults[i];
		if (strcmp(f->kind, "ctrl-result") == 0 && f->unit == SIM_AT_REQ &&
		    f->at == s->type) {
			f->fired = true;
			s->result = f->arg[0] ? (int32_t)strtol(f->arg, NULL, 10)
					      : SYSTEM_ERROR_NOT_SUPPORTED;
			return;
		}
	}
	if (!supported(d, s->type)) {
		s->result = SYSTEM_ERROR_NOT_SUPPORTED;
		return;
	}
	bool ok = true;
	switch (s->type) {
	case REQ_DEVICE_ID: {
		particle_ctrl_GetDeviceIdReply r = particle_ctrl_GetDeviceIdReply_init_zero;
		g_strlcpy(r.id, d->spec.id, sizeof(r.id));
		ok = set_reply(s, particle_ctrl_GetDeviceIdReply_fields, &r);
		break;
	}
	case REQ_SERIAL_NUMBER: {
		particle_ctrl_GetSerialNumberReply r = particle_ctrl_GetSerialNumberReply_init_zero;
		g_strlcpy(r.serial, d->spec.serial[0] ? d->spec.serial : d->spec.id,
			  sizeof(r.serial));
		ok = set_reply(s, particle_ctrl_GetSerialNumberReply_fields, &r);
		break;
	}
	case REQ_SYSTEM_VERSION: {
		particle_ctrl_GetSystemVersionReply r =
		    particle_ctrl_GetSystemVersionReply_init_zero;
		g_strlcpy(r.version, d->spec.os, sizeof(r.version));
		ok = set_reply(s, particle_ctrl_GetSystemVersionReply_fields, &r);
		break;
	}
	case REQ_GET_DEVICE_MODE: {
		particle_ctrl_GetDeviceModeReply r = {d->mode == SIM_MODE_LISTENING
							  ? particle_ctrl_DeviceMode_LISTENING_MODE
							  : particle_ctrl_DeviceMode_NORMAL_MODE};
		ok = set_reply(s, particle_ctrl_GetDeviceModeReply_fields, &r);
		break;
	}
	case REQ_GET_MODULE_INFO:
		s->result = module_info(d, s);
		return;
	case REQ_GET_ASSET_INFO:
		s->result = asset_info(d, s);
		return;
	case REQ_RESET:
		s->then = SIM_MODE_UNPLUGGED; /* boots what the flash holds */
		break;
	case REQ_DFU_MODE:
		s->then = SIM_MODE_DFU;
		break;
	case REQ_SAFE_MODE:
		s->then = SIM_MODE_SAFE;
		break;
	case REQ_START_LISTENING:
		cdc_enter_listening(d);
		break;
	case REQ_STOP_LISTENING:
		if (d->mode == SIM_MODE_LISTENING)
			d->mode = SIM_MODE_NORMAL;
		d->listen_on_boot = false;
		break;
	default:
		s->result = firmware_update(d, s);
		return;
	}
	s->result = ok ? 0 : SYSTEM_ERROR_INTERNAL;
}

/* ---- the service protocol -------------------------------------------------- */

static int svc_init(struct sim_device *d, uint16_t type, uint16_t size, uint16_t wlength,
		    uint8_t *in)
{
	struct ctrlreq *c = &d->ctrl;
	struct sim_fault *f = fault(d, "ctrl-busy");
	if (f) {
		unsigned n = f->unit == SIM_AT_NONE ? 2 : f->at;
		if (c->busy_given < n) {
			c->busy_given++;
			return reply(in, wlength, 0, ST_BUSY, 0, 0, 0);
		}
		f->fired = true;
	}
	struct ctrlreq_slot *s = NULL;
	for (int i = 0; !s && i < CTRLREQ_MAX_ACTIVE; i++)
		if (!c->slot[i].id)
			s = &c->slot[i];
	if (!s)
		return reply(in, wlength, 0, ST_BUSY, 0, 0, 0);
	if (++c->next_id == 0)
		c->next_id = 1;
	slot_clear(s);
	s->id = c->next_id;
	s->type = type;
	s->size = size;
	if (size)
		s->payload = g_malloc(size);
	else
		process(d, s);
	return reply(in, wlength, F_ID, ST_OK, s->id, 0, 0);
}

static int svc_check(struct sim_device *d, uint16_t id, uint16_t wlength, uint8_t *in)
{
	struct ctrlreq_slot *s = find(&d->ctrl, id);
	if (!s)
		return reply(in, wlength, 0, ST_NOT_FOUND, 0, 0, 0);
	if (!s->done || sim_now_ms() < d->ctrl.busy_until_ms)
		return reply(in, wlength, 0, ST_PENDING, 0, 0, 0);
	int n = reply(in, wlength, F_SIZE | F_RESULT, ST_OK, 0, s->reply_len, s->result);
	if (n > 0 && !s->reply_len) {
		d->ctrl.then = s->result == 0 ? s->then : -1;
		slot_clear(s); /* completed */
	}
	return n;
}

static int svc_recv(struct sim_device *d, uint16_t id, uint16_t wlength, uint8_t *in)
{
	struct ctrlreq_slot *s = find(&d->ctrl, id);
	if (!s || !s->done || wlength > s->reply_len - s->reply_sent)
		return -1;
	memcpy(in, s->reply + s->reply_sent, wlength);
	s->reply_sent += wlength;
	if (s->reply_sent == s->reply_len) {
		d->ctrl.then = s->result == 0 ? s->then : -1;
		slot_clear(s);
	}
	return wlength;
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
	int mode = index == REQ_DFU_MODE ? SIM_MODE_DFU
		   : index == REQ_RESET	 ? SIM_MODE_UNPLUGGED
					 : -1;
	if (mode < 0)
		return -1;
	d->ctrl.then = mode;
	return 0;
}

int ctrlreq_handle(struct sim_device *d, const struct usb_ctrlrequest *setup, const uint8_t *out,
		   uint8_t *in)
{
	/* Device OS answers them since 0.8.0 (Gen 2) / 0.9.0 (Gen 3); the DFU bootloader never. */
	if (d->mode == SIM_MODE_DFU || (setup->bRequestType & USB_RECIP_MASK) != USB_RECIP_DEVICE)
		return -1;
	if (setup->bRequest == LEGACY_BREQUEST)
		return legacy(d, setup, in);
	if (osver_compare(d->spec.os, gen2(d) ? "0.8.0" : "0.9.0") < 0)
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
		if (dir_in || !s || s->done || wlength > s->size - s->received)
			return -1;
		memcpy(s->payload + s->received, out, wlength);
		s->received += wlength;
		if (s->received == s->size)
			process(d, s);
		return 0;
	}
	case SVC_RECV:
		return dir_in ? svc_recv(d, index, wlength, in) : -1;
	case SVC_RESET:
		if (!dir_in)
			return -1;
		for (int i = 0; i < CTRLREQ_MAX_ACTIVE; i++)
			if (!index || d->ctrl.slot[i].id == index)
				slot_clear(&d->ctrl.slot[i]);
		return reply(in, wlength, 0, ST_OK, 0, 0, 0);
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
