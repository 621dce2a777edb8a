/*
 * A scripted DfuSe device behind struct dfu_io (docs/device/dfuse.md#requests-and-states):
 * answers control transfers from the loop (never synchronously), keeps a
 * flash image with NOR semantics (writes AND into erased bytes), logs every
 * request, and injects faults at a chosen data chunk.
 */
#pragma once

#include "dfuse.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#define FAKE_MAX_LOG 8192

enum fake_fault {
	FAKE_FAULT_NONE,
	FAKE_FAULT_STALL,  /* the Nth data DNLOAD stalls; GETSTATUS then says dfuERROR/errSTALLEDPKT
			    */
	FAKE_FAULT_STATUS, /* the Nth data DNLOAD executes with fault_status → dfuERROR */
	FAKE_FAULT_UNPLUG, /* from the Nth data DNLOAD on every request fails with NO_DEVICE */
	FAKE_FAULT_SILENT, /* the Nth data DNLOAD never completes (the io times out) */
	FAKE_FAULT_ERASE_STATUS, /* every ERASE fails with fault_status */
};

struct fake_req {
	uint8_t type, req;
	uint16_t value, length;
	uint8_t cmd; /* DfuSe command byte for wValue 0 DNLOADs */
	uint32_t cmd_address;
};

struct fake_dfu {
	struct event_base *base;
	struct dfuse *dfuse; /* where completions go */
	int gen;	     /* 2: leave reports dfuDNLOAD-IDLE; 3: dfuMANIFEST */
	uint32_t flash_base;
	uint32_t flash_size;
	uint8_t *flash;
	uint32_t erase_size; /* Gen 3 4 KiB page; Gen 2 uses sector sizes from map */
	const char *strings[256];
	uint8_t state, status;
	uint32_t poll_ms; /* bwPollTimeout reported with DNBUSY */
	/* still busy with a dead host's command, or with the DNLOAD sent: this many
	 * GETSTATUS say dfuDNBUSY, then it is done (dfuDNLOAD-IDLE, or what the DNLOAD
	 * leads to) */
	unsigned busy_polls;
	uint32_t pointer;
	uint8_t alt;
	/* pending DNLOAD */
	bool pending;
	uint16_t pend_value;
	uint8_t pend_data[4096];
	uint16_t pend_len;
	bool left; /* leave request seen */
	bool gone; /* unplugged */
	unsigned data_chunks;
	enum fake_fault fault;
	unsigned fault_chunk;
	uint8_t fault_status;
	unsigned timeout_divisor; /* the silent fault waits timeout_ms / divisor */
	struct fake_req log[FAKE_MAX_LOG];
	unsigned n_log;
	unsigned after_leave_status; /* requests after the leave's GETSTATUS */
	bool leave_status_seen;
};

/* Photon-like (Gen 2) or Argon-like (Gen 3) device; flash erased (0xFF). */
struct fake_dfu *fake_dfu_new(struct event_base *base, int gen);
void fake_dfu_free(struct fake_dfu *f);
void fake_dfu_descriptors(const struct fake_dfu *f, struct dfu_descriptors *d);
struct dfu_io fake_dfu_io(struct fake_dfu *f);
uint8_t *fake_dfu_at(struct fake_dfu *f, uint32_t address);
unsigned fake_dfu_count(const struct fake_dfu *f, uint8_t req, int cmd);
