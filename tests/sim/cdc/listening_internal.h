/*
 * Private state of the listening-mode engine, shared by its parts:
 * listening.c (dispatch, timers, faults), console.c (command keys and line
 * input), ymodem_rx.c (the device's YMODEM receiver and the update wrapper
 * around it), app.c (a running application, "normal" mode).
 *
 * Source references are to docs/device and to the Device OS
 * functions the behaviour was read from.
 */
#pragma once

#include "listening.h"

#include <stdarg.h>

/* docs/device/ymodem.md#constants: block overhead, block sizes, name/size field limits. */
#define YM_SOH		    0x01
#define YM_STX		    0x02
#define YM_EOT		    0x04
#define YM_ACK		    0x06
#define YM_NAK		    0x15
#define YM_CA		    0x18
#define YM_CRC16	    0x43
#define YM_PACKET_HEADER    3
#define YM_PACKET_OVERHEAD  5
#define YM_PACKET_SIZE	    128
#define YM_PACKET_1K_SIZE   1024
#define YM_FILE_NAME_LENGTH 256
#define YM_FILE_SIZE_LENGTH 16
#define YM_MAX_ERRORS	    5
#define YM_NAK_TIMEOUT_MS   5000

/* Host bytes held while the device is busy (a delay inside a command); the
 * real CDC endpoint would push back on the host, we can only hold or drop. */
#define LISTENING_RX_HOLD_MAX 65536
/* Longest console line (the Wi-Fi password: 64, claim code: 63). */
#define LISTENING_LINE_MAX 64
/* Longest multi-line input (a PEM certificate: CERTIFICATE_SIZE - 1). */
#define LISTENING_MULTILINE_MAX 4095
/* Faults one device may carry at a time. */
#define LISTENING_FAULTS_MAX 16
/* Longest fault argument kept (stray text, AT probe text). */
#define LISTENING_FAULT_ARG_MAX 1024

/* Device-side delays (not protocol timeouts, so not scaled by timeout_scale). */
#define LISTENING_F6_DELAY_MS 100 /* 6.x `f`: HAL_Delay_Milliseconds(100) */
/* docs/device/ymodem.md#end-of-transfer: flush, 1 s, restart line */
#define LISTENING_SUCCESS_DELAY_MS 1000
#define LISTENING_RESET_DELAY_MS   100 /* system_fileTransfer: 100 ms before reset */
/* docs/device/ymodem.md#cancellation, docs/device/particle-cli.md#host-time-outs: Gen 2 on 3.x
 * resets after 300 s of update inactivity. */
#define LISTENING_GEN2_UPDATE_TIMEOUT_MS 300000

/* What the console is doing inside listening mode. */
enum console_sub {
	CONSOLE_IDLE,	/* waiting for a command key */
	CONSOLE_LINE,	/* serialReadLine() for a `C` / `w` prompt */
	CONSOLE_YMODEM, /* receive_file() */
	CONSOLE_BUSY,	/* inside a delay; host bytes are held */
	CONSOLE_HUNG,	/* fault `silent`: nothing answers any more */
};

/* What happens when a CONSOLE_BUSY delay ends. */
enum busy_then {
	BUSY_F6_CANCEL,	      /* 6.x `f`: four CAN + "no longer supported" */
	BUSY_SUCCESS_RESTART, /* print the restart line, then reset */
	BUSY_RESET,	      /* reset into the firmware */
	BUSY_YMODEM_REPLY,    /* flash work of a block done: send its reply, receive on */
};

/* Line-input steps (who asked for the line). */
enum line_step {
	STEP_CLAIM,
	STEP_SSID,
	STEP_SECURITY,
	STEP_CIPHER,
	STEP_PASSWORD,
	STEP_EAP_TYPE,
	STEP_EAP_CLIENT_CERT,
	STEP_EAP_PRIVATE_KEY,
	STEP_EAP_USERNAME,
	STEP_EAP_PASSWORD,
	STEP_EAP_OUTER,
	STEP_EAP_ROOT_CA,
};

enum ymodem_rx_state {
	YR_WAIT_FIRST, /* waiting for the first byte of a packet */
	YR_IN_PACKET,  /* collecting a SOH/STX block */
	YR_WAIT_CA2,   /* got one CA, waiting for the second */
};

struct ymodem_rx {
	enum ymodem_rx_state st;
	uint8_t pkt[YM_PACKET_1K_SIZE + YM_PACKET_OVERHEAD];
	size_t have, need;
	uint32_t packets_received;
	int errors;
	bool session_done;
	/* startUpdate() ran: failures after this leave state
	 * (docs/device/ymodem.md#cancellation) */
	bool header_accepted;
	char file_name[YM_FILE_NAME_LENGTH + 1];
	uint32_t file_length;
	uint32_t chunk_offset;
	uint64_t deadline; /* per-byte timeout */
};

struct fault_slot {
	struct listening_fault f;
	char arg[LISTENING_FAULT_ARG_MAX + 1];
	bool has_arg;
	bool fired;
};

struct listening {
	struct listening_config cfg;
	struct listening_ops ops;
	char *os_version, *device_id, *mac;

	enum listening_state_kind kind;
	enum console_sub sub;
	uint64_t now_ms; /* time of the latest call from the core */

	/* CONSOLE_BUSY */
	enum busy_then busy_then;
	uint64_t busy_until;
	uint8_t *hold;
	size_t hold_len;
	uint8_t busy_reply[2]; /* BUSY_YMODEM_REPLY: the block's answer (ACK, or ACK 'C') */
	size_t busy_reply_len;

	/* CONSOLE_LINE */
	enum line_step step;
	char line[LISTENING_LINE_MAX + 1];
	size_t line_len, line_max;
	bool multiline;
	size_t multi_left; /* bytes still allowed in a multi-line input */
	bool discard_rest; /* read_line(): flush what is still buffered */
	int wifi_security;
	bool wifi_enterprise_tls;

	/* CONSOLE_YMODEM */
	struct ymodem_rx ym;
	/* docs/device/ymodem.md#cancellation INFERRED 3.0-5.x state after a post-header failure */
	bool update_stuck;
	uint64_t stuck_deadline; /* Gen 2 on 3.x: reset after 300 s */

	/* faults */
	struct fault_slot faults[LISTENING_FAULTS_MAX];
	size_t n_faults;

	uint64_t ymodem_bytes;
	uint64_t app_discarded; /* bytes the running application read and threw away */
	bool gone; /* set just before ops->reset: the caller must stop touching the device */
};

/* listening.c */
void listening_send(struct listening *l, const void *buf, size_t len);
void listening_print(struct listening *l, const char *s);
void listening_printf(struct listening *l, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void listening_do_reset(struct listening *l, enum listening_reset how);
void listening_start_busy(struct listening *l, enum busy_then then, uint64_t now_ms,
			  uint64_t delay_ms);
uint64_t listening_scaled(const struct listening *l, uint64_t ms);
struct fault_slot *listening_fault_pending(struct listening *l, enum listening_fault_kind kind);
const char *listening_fault_text(const struct fault_slot *fs, const char *dflt, char *buf,
				 size_t size);

/* console.c: one host byte in CONSOLE_IDLE or CONSOLE_LINE. */
void console_byte(struct listening *l, uint8_t c, uint64_t now_ms);
void console_start_line(struct listening *l, enum line_step step, size_t max_len);

/* ymodem_rx.c */
void ymodem_rx_start(struct listening *l, uint64_t now_ms);
void ymodem_rx_byte(struct listening *l, uint8_t c, uint64_t now_ms);
void ymodem_rx_timeout(struct listening *l, uint64_t now_ms);
void ymodem_rx_resume(struct listening *l, uint64_t now_ms);

/* app.c */
void app_input(struct listening *l, const uint8_t *buf, size_t len);
void app_stray_output(struct listening *l);
