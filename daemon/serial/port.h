/*
 * Opening a device's serial port exclusively (docs/device/console.md#modemmanager):
 * TIOCEXCL does nothing for root and nothing under umockdev, so the port is
 * taken with a non-blocking flock() plus the HDB lock file
 * /run/lock/LCK..ttyACMn that minicom, screen's helpers and ModemManager-aware
 * tools honour.  When the port is held the error names the holder.
 */
#pragma once

#include "cleanup.h"
#include "errors.h"

#include <stdbool.h>
#include <sys/types.h>

#define SERIAL_LOCK_DIR "/run/lock"
#define SERIAL_PATH_MAX 256

struct serial_port {
	int fd;
	char path[SERIAL_PATH_MAX];
	char lock_path[SERIAL_PATH_MAX + 32]; /* "" when no lock file was made */
};

/*
 * Opens path O_RDWR|O_NONBLOCK|O_NOCTTY, locks it, sets raw mode.  lock_dir
 * NULL = SERIAL_LOCK_DIR (a missing directory is skipped: flock still
 * applies).  Fails with device-busy (holder, holder_pid, port), permission-
 * denied, device-not-found.
 */
WARN_UNUSED_RESULT int serial_port_open(const char *path, const char *lock_dir,
					struct serial_port **ret, struct error *err);
/* Any speed, including the magic 14400 / 28800 (docs/device/console.md#magic-baud-rates), via
 * TCSETS2/BOTHER. */
WARN_UNUSED_RESULT int serial_port_set_baud(struct serial_port *p, unsigned baud,
					    struct error *err);
/* Unlocks, removes the lock file, closes.  Accepts NULL. */
void serial_port_close(struct serial_port *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct serial_port *, serial_port_close)

/* Who holds a port: pid from the lock file or /proc/locks, 0 if unknown.
 * comm gets /proc/PID/comm. */
pid_t serial_port_holder(const char *path, const char *lock_dir, char *comm, size_t comm_size);
/* Without opening the port (which raises DTR on the device): 0 when no other
 * process holds it by lock file or flock, else -1 with the device-busy error
 * serial_port_open() would give (holder, holder_pid, port). */
WARN_UNUSED_RESULT int serial_port_check_free(const char *path, const char *lock_dir,
					      struct error *err);
/* The hint for a holder: ModemManager, a serial monitor, or generic. */
const char *serial_port_holder_hint(const char *comm);
