/*
 * One simulated device: identity, mode, flash, and its USB presence in the
 * umockdev testbed (DFU: one usb_device; CDC: usb_device -> usb_interface ->
 * tty/ttyACMn, docs/device/platforms.md#usb-strings-and-device-ids,
 * docs/device/platforms.md#runtime-interface-layout).  Mode changes re-enumerate like the real
 * device: remove uevents first, then the new device after the boot delay.
 */
#pragma once

#include "ctrlreq.h"
#include "flash.h"
#include "sim.h"
#include "validate.h"

#include <stdbool.h>
#include <stdint.h>

#define DEVICE_PATH_MAX 256
#define DFU_XFER_SIZE	4096

enum dfu_state {
	DFU_APP_IDLE = 0,
	DFU_APP_DETACH = 1,
	DFU_IDLE = 2,
	DFU_DNLOAD_SYNC = 3,
	DFU_DNBUSY = 4,
	DFU_DNLOAD_IDLE = 5,
	DFU_MANIFEST_SYNC = 6,
	DFU_MANIFEST = 7,
	DFU_MANIFEST_WAIT_RESET = 8,
	DFU_UPLOAD_IDLE = 9,
	DFU_ERROR = 10,
};

enum dfu_status {
	DFU_OK = 0x00,
	DFU_ERR_TARGET = 0x01,
	DFU_ERR_FILE = 0x02,
	DFU_ERR_WRITE = 0x03,
	DFU_ERR_ERASE = 0x04,
	DFU_ERR_CHECK_ERASED = 0x05,
	DFU_ERR_PROG = 0x06,
	DFU_ERR_VERIFY = 0x07,
	DFU_ERR_ADDRESS = 0x08,
	DFU_ERR_NOTDONE = 0x09,
	DFU_ERR_FIRMWARE = 0x0a,
	DFU_ERR_VENDOR = 0x0b,
	DFU_ERR_USBR = 0x0c,
	DFU_ERR_POR = 0x0d,
	DFU_ERR_UNKNOWN = 0x0e,
	DFU_ERR_STALLEDPKT = 0x0f,
};

struct dfu {
	enum dfu_state state;
	enum dfu_status status;
	int alt;
	uint32_t pointer;
	uint8_t pending[DFU_XFER_SIZE];
	size_t pending_len;
	uint16_t pending_block;
	bool have_pending;
	uint64_t busy_until_ms;	 /* EP0 NAKs (URBs stay unreaped) until then */
	unsigned chunks;	 /* data DNLOADs since enumeration (faults) */
	uint64_t session_erased; /* bytes erased since enumeration (unplug@N%) */
	uint64_t session_written;
	bool silent;		     /* fault: stop answering */
	enum dfu_status write_error; /* fault error@chunkN: the pending chunk's write fails */
	enum sim_mode boot_override; /* 0xFA: safe mode after leave; else SIM_MODE_UNPLUGGED */
	unsigned upload_carry_us;    /* UPLOAD bus time not charged yet (under a millisecond) */
};

struct listening;

/* One asset in the device's asset store (Device OS 5.5.0+ AssetManager: a file
 * per asset in its own file system, kept across resets and updates). */
#define SIM_MAX_ASSETS 16
struct sim_asset {
	char name[65];
	uint8_t sha256[32]; /* the HASH its module declared */
	uint8_t *data;	    /* the raw bytes */
	size_t size;
};

struct sim_device {
	struct sim *sim;
	struct sim_spec spec;
	enum sim_mode mode;	 /* what the device is running now */
	enum sim_mode next_mode; /* after the pending re-enumeration */
	uint16_t layout_version; /* installed system version: picks the slot layout */
	struct flash *flash;
	struct dfu dfu;
	/* USB presence */
	bool present;
	unsigned busnum, devnum;
	char usb_syspath[DEVICE_PATH_MAX];
	char usb_devnode[64];
	char tty_syspath[DEVICE_PATH_MAX];
	char tty_devnode[32];
	int tty_index;
	struct usbdev_node *usb; /* this enumeration's /dev/bus/usb node */
	struct ctrlreq ctrl;	 /* Particle vendor requests (normal/listening mode) */
	/* CDC side */
	struct listening *cdc;
	unsigned cdc_fault_src[SIM_MAX_FAULTS]; /* engine fault slot -> spec.faults index */
	unsigned n_cdc_faults;
	int pty_fd;
	guint pty_watch;
	guint pty_retry;
	guint cdc_timer;
	unsigned last_baud;
	bool listen_on_boot; /* 'L': safe mode, then listening mode */
	GByteArray *outq;    /* device -> host bytes the pty did not take yet */
	guint out_watch;
	GPid peer_pid;
	int peer_in, peer_out; /* pipes to the peer=COMMAND */
	guint peer_watch;
	/* OTA (YMODEM) */
	bool ota_active;
	bool ota_pending; /* validated, applied at the next reset */
	uint32_t ota_size;
	double cdc_work_us; /* YMODEM receiver work not charged yet (time-scaled) */
	struct sim_asset assets[SIM_MAX_ASSETS];
	unsigned n_assets;
	/* The ESP32 NCP firmware last written by firmware-update request (Argon):
	 * its module version (0: never written, not reported) and the SHA-256 of
	 * the bytes handed to the coprocessor (prefix to suffix end). */
	uint16_t ncp_version;
	uint8_t ncp_sha256[32];
	uint32_t ncp_size;
	/* counters for state.json */
	uint64_t ymodem_bytes;
	uint64_t app_discarded; /* of closed CDC sessions: bytes the application threw away */
	uint64_t dfu_bytes;
	uint64_t dfu_requests;
	uint64_t dfu_requests_to_write; /* dfu_requests at the first ERASE or data DNLOAD */
	uint64_t ctrl_update_bytes;	/* FIRMWARE_UPDATE_DATA bytes accepted */
	uint64_t dfu_erased_bytes;	/* bytes of the sectors/pages DfuSe ERASE commands erased */
	uint64_t dfu_upload_bytes;	/* bytes read by UPLOAD (wValue >= 2) */
	uint64_t last_write_ms;		/* sim_now_ms() when the latest flash write was done */
	unsigned generation; /* bumps on every enumeration: stale timers ignore themselves */
};

struct sim_device *device_new(struct sim *sim, const struct sim_spec *spec);
void device_free(struct sim_device *d);

/* Main thread, lock NOT held. */
int device_plug(struct sim_device *d, GError **error);
void device_unplug(struct sim_device *d);
/* Unplug, optionally move to another port, plug again after the boot delay. */
void device_replug(struct sim_device *d, const char *port);
/* Reset into a mode (re-enumerates after the boot delay). mode UNPLUGGED = boot validation. */
void device_reset(struct sim_device *d, enum sim_mode mode);
/* Scheduled callbacks (main thread): reset into d->next_mode; unplug after a fault. */
void device_reset_boot(struct sim_device *d);
void device_unplug_async(struct sim_device *d);
/* The mode the next boot lands in (validation of the installed modules). Lock held. */
enum sim_mode device_boot_mode(struct sim_device *d);

/* Lock held. */
void device_scan(struct sim_device *d, struct vscan *out);
/* The mode name state.json reports. */
const char *device_mode_name(struct sim_device *d);
uint64_t device_ymodem_bytes(struct sim_device *d);
uint64_t device_app_discarded(struct sim_device *d);

/* usbdev.c: the usbfs ioctl emulation of one enumeration's device node. */
struct usbdev_node;
struct usbdev_node *usbdev_node_new(struct sim_device *d);
UMockdevIoctlBase *usbdev_node_handler(struct usbdev_node *n);
/* Makes the node's /dev/bus/usb file, a FIFO that polls writable while a URB can be
 * reaped (a path in the testbed's root, before the add uevent). */
int usbdev_node_make_fifo(struct usbdev_node *n, const char *path, GError **error);
/* Lock held: the device left this node; its URBs stay reapable, then ENODEV. */
void usbdev_node_disconnect(struct usbdev_node *n);
void usbdev_node_free(struct usbdev_node *n);

/* dfu.c: DfuSe class requests (lock held).  Returns reply length, or -1 to stall. */
void dfu_enumerated(struct sim_device *d);
int dfu_class_request(struct sim_device *d, uint8_t type, uint8_t request, uint16_t value,
		      uint16_t length, const uint8_t *out, uint8_t *in);
int dfu_set_alt(struct sim_device *d, int alt);
/* USB string descriptor text for DFU mode (NULL if none). */
char *dfu_string(struct sim_device *d, uint8_t index);
/* "errWRITE" -> DFU_ERR_WRITE; -1 for a name that is not a DFU error status. */
int dfu_status_from_name(const char *name);

/* cdc.c: the CDC side (tty handler, pty, engine). */
void cdc_attach(struct sim_device *d); /* after the tty node exists (main thread) */
void cdc_detach(struct sim_device *d); /* before removal (main thread) */
/* The termios handler of every ttyACM node, as umockdev's default handler (startup). */
int cdc_tty_handler_install(struct sim *sim, GError **error);
/* spec.faults changed (control `fault`): the live engine gets them now (lock held). */
void cdc_faults_changed(struct sim_device *d);
/* When the engine next acts on its own (UINT64_MAX: never; lock held). */
uint64_t cdc_next_deadline(struct sim_device *d);
/* Copies a validated YMODEM image from the OTA region into its slot (lock held). */
void cdc_apply_ota(struct sim_device *d);
/* The OTA region as USB control requests use it (START/DATA/FINISH, lock held):
 * 0 or -1; finish returns 0 or the negative system error of the verdict. */
int cdc_ota_begin(struct sim_device *d, uint32_t size);
int cdc_ota_write(struct sim_device *d, uint32_t offset, const uint8_t *data, size_t len);
int cdc_ota_finish(struct sim_device *d, unsigned *ret_mask);
/* The bytes of the OTA region (size of them, lock held). */
const uint8_t *cdc_ota_peek(struct sim_device *d, uint32_t *size);
/* Control request START_LISTENING (lock held). */
void cdc_enter_listening(struct sim_device *d);
