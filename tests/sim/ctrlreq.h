/*
 * Particle vendor control requests of a device running Device OS (docs/device/control-requests.md,
 * particle-usb src/usb-protocol.js): the service protocol (INIT, CHECK,
 * SEND, RECV, RESET with bmRequestType 0xC0/0x40) and the legacy 'P'
 * (0x50) requests.  Payloads are protocol buffers (proto/particle, nanopb).
 *
 * Answered (Device OS system/src/system_control_internal.cpp, gates from
 * particle-usb src/device.js): DEVICE_ID 20, SERIAL_NUMBER 21 and
 * SYSTEM_VERSION 30 (Gen 2 from 1.5.0), RESET 40, DFU_MODE 50, SAFE_MODE 60,
 * START/STOP_LISTENING 70/71, GET_DEVICE_MODE 72 (Gen 2 from 1.1.0),
 * GET_MODULE_INFO 90 (the modules_deprecated format before 5.6.0, the
 * particle.cloud.FirmwareModule format since), and the firmware-update
 * exchange 250-253 into the OTA region the YMODEM receiver uses, validated at
 * FINISH and applied by the reset that follows.  Every other type, and a
 * gated one on an older version, completes with SYSTEM_ERROR_NOT_SUPPORTED
 * (-120).  The device resets when the host has the reply of the completed
 * request (Device OS runs the reset in the request's completion handler).
 *
 * Faults: ctrl-busy[@N] answers BUSY to the first N INITs (default 2);
 * ctrl-unplug@chunkN unplugs the device at the Nth FIRMWARE_UPDATE_DATA.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define CTRLREQ_MAX_ACTIVE  4	  /* requests a device keeps at a time (then BUSY) */
#define CTRLREQ_PAYLOAD_MAX 65535 /* wValue of INIT is 16 bits */

struct ctrlreq_slot {
	uint16_t id; /* 0: free */
	uint16_t type;
	uint32_t size, received;
	uint8_t *payload; /* size bytes (g_malloc), NULL when size is 0 */
	bool done;	  /* processed: result and reply are set */
	int32_t result;
	uint8_t *reply; /* g_malloc */
	uint32_t reply_len, reply_sent;
	int then; /* mode to reset into once the result is delivered, or -1 */
};

struct ctrlreq {
	struct ctrlreq_slot slot[CTRLREQ_MAX_ACTIVE];
	uint16_t next_id;
	int then; /* after the reply in flight reaches the host: a mode to reset into, or -1 */
	unsigned busy_given; /* ctrl-busy fault: INITs answered BUSY so far */
	unsigned fw_chunks;  /* FIRMWARE_UPDATE_DATA requests of this update */
	uint32_t fw_offset;  /* bytes written into the OTA region */
	bool fw_active;
	uint64_t busy_until_ms; /* sim_now_ms() until which CHECK answers PENDING (flash write) */
	bool silent; /* ctrl-silent fault: no transfer is answered until re-enumeration */
};

struct sim_device;
struct usb_ctrlrequest;

/* At every enumeration (lock held): frees what the previous one held. */
void ctrlreq_init(struct ctrlreq *c);
/* A vendor request (lock held): reply length, or -1 to stall. */
int ctrlreq_handle(struct sim_device *d, const struct usb_ctrlrequest *setup, const uint8_t *out,
		   uint8_t *in);
/* The reply of a request that asked for a reset reached the host (lock held). */
void ctrlreq_delivered(struct sim_device *d, int then);
