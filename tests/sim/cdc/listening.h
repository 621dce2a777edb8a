/*
 * The USB CDC side of one simulated device (docs/device/console.md, docs/device/ymodem.md):
 * the listening-mode console, the device's YMODEM receiver, and a running
 * application ("normal" mode).  A pure state machine: bytes and time in,
 * bytes and actions out, so it can be unit-tested byte for byte without a
 * tty.  The simulator core (flashd-sim) owns the pty, the USB enumeration,
 * the magic bauds (ioctl handler), the flash model and validation, and drives
 * this engine through the calls below.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Device OS eras whose console / YMODEM behaviour differs (docs/device/ymodem.md). */
enum listening_era {
	LISTENING_ERA_0_4, /* 0.4.x - 0.6.0: no validation reply path */
	LISTENING_ERA_0_6, /* 0.6.1 - 1.5.x: "Validation failed: 0x<mask>" */
	LISTENING_ERA_2,   /* 2.0 - 2.x: negative codes */
	LISTENING_ERA_3,   /* 3.0 - 5.9.x: header size pre-check, stuck state after failures */
	LISTENING_ERA_6,   /* 6.x: no YMODEM, no 28800 */
};

enum listening_state_kind {
	LISTENING_APP,	   /* application running: no console ("normal" mode) */
	LISTENING_CONSOLE, /* listening mode, waiting for command keys */
};

/* How the device goes away after a command or a transfer. */
enum listening_reset {
	LISTENING_RESET_FIRMWARE,	/* reset, boot the firmware (comes back in normal mode) */
	LISTENING_RESET_SAFE_LISTENING, /* 'L': safe mode, then listening mode */
	LISTENING_RESET_UNPLUG,		/* fault: USB cable pulled (comes back only by control) */
};

struct listening_ops {
	void *ctx;
	/* Bytes from the device to the host (the pty master). */
	void (*send)(void *ctx, const uint8_t *buf, size_t len);
	/* The device resets or disappears; the core re-enumerates it. */
	void (*reset)(void *ctx, enum listening_reset how);
	/* 'x': listening mode ends and the application runs again. */
	void (*exit_listening)(void *ctx);
	/*
	 * Firmware update through the OTA region (docs/device/ymodem.md#what-is-checked-when,
	 * docs/device/ymodem.md#end-of-transfer):
	 * ota_begin: header accepted? 0, or -1 to refuse (size > OTA length on 3.0-5.x,
	 *   updates disabled); ota_write: store a block at an offset, 0 or -1 (write failure);
	 * ota_finish: validate what was received (docs/device/validation.md).  Returns 0 on
	 * success, else
	 *   the era's code: negative system error (>= 2.0), and fills *ret_mask with the
	 *   failed-check bit mask (0.6.1-1.5.x prints it).  On success the module is
	 *   queued and applied at the next reset.
	 */
	int (*ota_begin)(void *ctx, uint32_t declared_size);
	int (*ota_write)(void *ctx, uint32_t offset, const uint8_t *data, size_t len);
	int (*ota_finish)(void *ctx, unsigned *ret_mask);
	/*
	 * How long the device was busy with the ota_begin / ota_write it was just
	 * given (erase at the header, programming and the block's USB transfer per
	 * data block), in milliseconds of the simulation's clock.  The receiver
	 * answers that block only when the work is done, as receive_file() does
	 * (it calls the flash code between reading a block and sending its ACK).
	 * NULL or 0: instant.
	 */
	uint64_t (*ota_work_ms)(void *ctx);
	/* The `s` reply body as the device would print it (malloc'd, without "\r\n"). */
	char *(*system_info)(void *ctx);
};

struct listening_config {
	enum listening_era era;
	const char *os_version; /* "1.5.2" for `v` */
	const char *device_id;	/* 24 lowercase hex */
	int platform_id;
	bool wifi;	      /* WiFiSetupConsole: adds `w` */
	bool cellular;	      /* `i` multi-line form with IMEI/ICCID/Cell Radio Version */
	const char *mac;      /* "a4:cf:12:34:56:78" */
	double timeout_scale; /* scales the 5 s YMODEM byte timeout (>0) */
};

struct listening;

struct listening *listening_new(const struct listening_config *cfg, const struct listening_ops *ops,
				enum listening_state_kind initial);
void listening_free(struct listening *l);

/* Host bytes arrived at time now_ms (monotonic milliseconds). */
void listening_input(struct listening *l, const uint8_t *buf, size_t len, uint64_t now_ms);
/* Time passed: fire any timeout due at now_ms. */
void listening_tick(struct listening *l, uint64_t now_ms);
/* When listening_tick must next be called (UINT64_MAX: nothing pending). */
uint64_t listening_next_deadline(const struct listening *l);

/* 28800 baud (docs/device/console.md#magic-baud-rates): enter listening mode (ignored on 6.x and
 * when already listening). */
void listening_enter(struct listening *l, uint64_t now_ms);
/* USB control request 70 (START_LISTENING): enters on every era, 6.x included. */
void listening_enter_by_request(struct listening *l, uint64_t now_ms);
enum listening_state_kind listening_state(const struct listening *l);

/*
 * Faults (SPEC `faults`, issue 4): parsed by the core from "kind@where[:arg]"
 * and handed over.  where: block number, byte offset or percent of the
 * declared size.
 */
enum listening_fault_kind {
	LISTENING_FAULT_UNPLUG,	      /* unplug@50% / unplug@block12 / unplug@byte4096 */
	LISTENING_FAULT_CANCEL,	      /* cancel@block5: device sends CA CA mid-transfer */
	LISTENING_FAULT_NAK_STORM,    /* nak@block3: NAK every block from there on */
	LISTENING_FAULT_SILENT,	      /* silent@block10: stops answering */
	LISTENING_FAULT_RESET,	      /* reset@30%: device resets mid-transfer */
	LISTENING_FAULT_STRAY_OUTPUT, /* stray@: application output before the prompt */
	LISTENING_FAULT_AT_PROBE,     /* atprobe@: ModemManager-style AT lines arrive */
};
enum listening_fault_unit { LISTENING_AT_BLOCK, LISTENING_AT_BYTE, LISTENING_AT_PERCENT };
struct listening_fault {
	enum listening_fault_kind kind;
	enum listening_fault_unit unit;
	uint32_t at;
	const char *arg; /* optional */
};
void listening_add_fault(struct listening *l, const struct listening_fault *f);

/* Counters for state.json: data bytes accepted (padding included). */
uint64_t listening_ymodem_bytes(const struct listening *l);
/* Bytes the host wrote while the application ran (no console): read and thrown away. */
uint64_t listening_app_discarded(const struct listening *l);
