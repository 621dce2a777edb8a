/*
 * Particle vendor control requests of a device running Device OS (docs/device/control-requests.md,
 * particle-usb src/usb-protocol.js): the service protocol (INIT, CHECK,
 * SEND, RECV, RESET with bmRequestType 0xC0/0x40) and the legacy 'P'
 * (0x50) requests.  Implemented: SYSTEM_VERSION (30, legacy), RESET (40) and
 * DFU_MODE (50); every other request type completes with
 * SYSTEM_ERROR_NOT_SUPPORTED (-120).  Payloads (protobuf) are accepted and
 * ignored.  The device resets when the host has the reply of the completed
 * request (Device OS runs the reset in the request's completion handler).
 */
#pragma once

#include <stdint.h>

#define CTRLREQ_MAX_ACTIVE  4	  /* requests a device keeps at a time (then BUSY) */
#define CTRLREQ_PAYLOAD_MAX 65535 /* wValue of INIT is 16 bits */

struct ctrlreq_slot {
	uint16_t id; /* 0: free */
	uint16_t type;
	uint32_t size, received;
};

struct ctrlreq {
	struct ctrlreq_slot slot[CTRLREQ_MAX_ACTIVE];
	uint16_t next_id;
	int then; /* after the reply in flight reaches the host: a mode to reset into, or -1 */
};

struct sim_device;
struct usb_ctrlrequest;

/* At every enumeration (lock held). */
void ctrlreq_init(struct ctrlreq *c);
/* A vendor request (lock held): reply length, or -1 to stall. */
int ctrlreq_handle(struct sim_device *d, const struct usb_ctrlrequest *setup, const uint8_t *out,
		   uint8_t *in);
/* The reply of a request that asked for a reset reached the host (lock held). */
void ctrlreq_delivered(struct sim_device *d, int then);
