/*
 * flashd-sim: shared types of the simulated-device testbed (issues 3 and 4).
 *
 * Threading: umockdev answers ioctls of the programs under test on its own
 * worker thread; everything else (control socket, timers, re-enumeration)
 * runs on the main GLib loop.  All device state is guarded by sim->lock.
 * Testbed calls (add/remove/uevent/attach) are made on the main thread only
 * and never while holding the lock (attach_ioctl talks to the worker).
 */
#pragma once

#include "platform.h"

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <umockdev.h>

#define SIM_EXIT_OWN_FAILURE 125
#define SIM_MAX_DEVICES	     32
#define SIM_MAX_FAULTS	     8
#define SIM_NAME_MAX	     32
#define SIM_PORT_MAX	     32

enum sim_mode {
	SIM_MODE_LISTENING,
	SIM_MODE_DFU,
	SIM_MODE_NORMAL,
	SIM_MODE_SAFE,
	SIM_MODE_UNPLUGGED,
};
const char *sim_mode_name(enum sim_mode m);
int sim_mode_from_name(const char *s); /* -1 if unknown */

/* A fault from SPEC `faults`: kind@where[:arg]. */
/* SIM_AT_REQ: a control request type (ctrl-result@req70:-120: the start-listening
 * request ends with that result) */
enum sim_fault_unit {
	SIM_AT_NONE,
	SIM_AT_BLOCK,
	SIM_AT_BYTE,
	SIM_AT_PERCENT,
	SIM_AT_CHUNK,
	SIM_AT_REQ
};
struct sim_fault {
	char kind[16]; /* stall, silent, unplug, slow-erase, reset, cancel, nak, stray, atprobe */
	enum sim_fault_unit unit;
	uint32_t at;
	char arg[32];
	bool fired;
};

/* A parsed --device SPEC (spec.c). */
struct sim_spec {
	const struct platform *platform;
	char os[24];
	/* Module versions the spec's Device OS ships on its platform (proto/osver). */
	uint16_t system_version;
	uint16_t bootloader_version;
	uint16_t bootloader_dep;	/* what its system part needs (0: no dependency) */
	uint16_t radio_version;		/* SoftDevice (nRF52840; 0: not known) */
	uint16_t radio_dep;		/* what its system part needs (0: no dependency) */
	uint16_t prebootloader_version; /* RTL872x prebootloader part 1 */
	enum sim_mode mode;
	char name[SIM_NAME_MAX];
	char id[25];
	char serial[64]; /* empty: the device id */
	char port[SIM_PORT_MAX];
	bool protected_;
	bool no_tty; /* tty=0: CDC mode without its ttyACM node (no cdc_acm binding) */
	struct sim_fault faults[SIM_MAX_FAULTS];
	unsigned n_faults;
	char *peer; /* peer=COMMAND, owned */
};

struct sim;
struct sim_device;
struct flash;
struct dfu;

struct sim {
	UMockdevTestbed *tb;
	GMainLoop *loop;
	GMutex lock;
	double time_scale;
	double timeout_scale;
	char *state_dir;
	struct sim_device *devices[SIM_MAX_DEVICES];
	unsigned n_devices;
	unsigned next_devnum;
	UMockdevIoctlBase *tty_handler; /* umockdev's default handler: termios of every ttyACM */
	gint pending_work;		/* scheduled resets/re-enumerations (wait-idle); atomic */
	GPtrArray *retired;		/* usbdev nodes of past enumerations, kept until exit */
	GPtrArray *idle_waiters;	/* control clients waiting for wait-idle */
	GPid child;
	int child_status;
	bool child_exited;
	/* --owner UID:GID: the testbed and its device nodes belong to them (as
	 * flashd's udev rule gives the nodes to the flashd group), so that an
	 * unprivileged daemon can be tested. */
	bool has_owner;
	uid_t owner_uid;
	gid_t owner_gid;
};

/* main.c */
uint64_t sim_now_ms(void);
/* Runs fn(data) on the main loop after delay_ms (scaled already); counts as pending work. */
void sim_schedule(struct sim *sim, unsigned delay_ms, void (*fn)(void *), void *data);
void sim_work_done(struct sim *sim);
/* Hands the testbed (sysfs, device nodes, ptys, ioctl sockets) to --owner; no-op without. */
void sim_apply_owner(struct sim *sim);
