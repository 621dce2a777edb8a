/* What ctrl.c and ctrl_ops.c share: the request engine's state. */
#pragma once

#include "ctrl.h"

#include <jansson.h>
#include <sys/time.h>

enum ctrl_state {
	CTRL_IDLE,
	CTRL_INIT,	 /* INIT in flight */
	CTRL_INIT_WAIT,	 /* the device was BUSY: INIT again after the poll interval */
	CTRL_SEND,	 /* a SEND chunk in flight */
	CTRL_CHECK,	 /* CHECK in flight */
	CTRL_CHECK_WAIT, /* PENDING: CHECK again after the poll interval */
	CTRL_RECV,	 /* a RECV chunk in flight */
	CTRL_RESET,	 /* RESET of a failed request in flight (bounded, result ignored) */
	CTRL_LEGACY,	 /* a legacy 'P' request in flight */
};
const char *ctrl_state_name(enum ctrl_state s);

#define CTRL_WATCHDOG_SLACK_MS 200 /* after a transfer's own timeout: cancel it */

enum ctrl_cancel_reason { CTRL_CANCEL_USER, CTRL_CANCEL_TIMEOUT };

struct ctrl_service_reply {
	uint32_t flags;
	uint16_t status;
	uint16_t id;
	uint32_t size;
	int32_t result;
};
int ctrl_parse_service_reply(const uint8_t *buf, size_t len, struct ctrl_service_reply *r);

struct ctrl_fw_update;

struct ctrl {
	struct event_base *base;
	struct ctrl_io io;
	unsigned request_ms;
	char device_os[24];
	struct event *timer; /* poll interval, transfer watchdog, RESET bound */

	/* the request */
	enum ctrl_state state;
	unsigned type;
	uint16_t id; /* the device's id for it; 0 before INIT or after completion */
	uint8_t *payload;
	size_t payload_len, sent;
	uint8_t *reply;
	size_t reply_len, received;
	size_t chunk; /* bytes of the SEND/RECV in flight */
	int32_t result;
	bool data_sent;
	bool gone;
	unsigned busy_seen;
	unsigned poll_ms;
	struct timeval deadline;
	enum ctrl_cancel_reason cancel_reason;
	uint8_t svc[CTRL_SERVICE_WLENGTH];
	uint8_t *xfer_buf;
	bool in_flight;
	bool closing;
	bool deferred; /* a submit failed at once: report from the timer */
	enum ctrl_io_status deferred_status;
	struct error err;
	ctrl_request_done_fn done;
	void *userdata;

	/* the operation (ctrl_ops.c) */
	bool op_running;
	bool op_cancelled;
	enum ctrl_op op;
	ctrl_op_done_fn op_done;
	void *op_userdata;
	struct ctrl_result *op_result;
	struct ctrl_fw_update *fw;
};

/* A legacy 'P' IN request (wIndex = type): the reply is the data stage. */
int ctrl_legacy_request(struct ctrl *c, unsigned type, ctrl_request_done_fn done, void *ud,
			struct error *err);
void ctrl_ops_clear(struct ctrl *c);
