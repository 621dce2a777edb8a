#include "port.h"

#include "log.h"

/* termios2 / BOTHER come from the kernel headers; <termios.h> would clash. */
#include <asm/ioctls.h>
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define LOCKS_LINE_MAX 256
/* An HDB lock file is "%10d\n" (11 bytes); old binary ones are 4.  Anything
 * much larger is not a lock file. */
#define LOCK_FILE_MAX 64

static const char *port_base(const char *path)
{
	const char *b = strrchr(path, '/');
	return b ? b + 1 : path;
}

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Whether uid is one of the process's uids (real, effective, saved, fs). */
static bool process_has_uid(pid_t pid, uid_t uid)
{
	char p[64], line[LOCKS_LINE_MAX];
	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "re");
	if (!f)
		return false;
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long u[4];
		if (sscanf(line, "Uid: %lu %lu %lu %lu", &u[0], &u[1], &u[2], &u[3]) == 4) {
			for (int i = 0; i < 4; i++)
				found = found || u[i] == uid;
			break;
		}
	}
	fclose(f);
	return found;
}

/*
 * The pid in a UUCP/HDB lock file, if the file deserves belief: a regular file
 * of sane size (opened without following links and without blocking: a FIFO
 * planted in the world-writable /run/lock must not hang the daemon), naming a
 * live process, owned by root or by that process's uid (anybody can write any
 * pid into a file of their own).  0 otherwise, with why in *why.  minicom and
 * friends hold no flock, so a believable file is all there is to go on.
 */
static pid_t lock_file_pid(const char *lock_path, const char **why)
{
	char buf[LOCK_FILE_MAX + 1];
	struct stat st;
	*why = NULL;
	_cleanup_close_ int fd =
	    open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		if (errno == ELOOP)
			*why = "it is a symbolic link";
		else if (errno != ENOENT)
			*why = "it cannot be opened";
		return 0;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*why = "it is not a regular file";
		return 0;
	}
	if (st.st_size > LOCK_FILE_MAX) {
		*why = "it is too large for a lock file";
		return 0;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		*why = "it is empty";
		return 0;
	}
	buf[n] = '\0';
	char *end;
	long pid = strtol(buf, &end, 10); /* HDB: "%10d\n"; binary (4-byte) locks are obsolete */
	if (pid <= 0 || pid >= INT_MAX || end == buf) {
		*why = "it holds no process id";
		return 0;
	}
	if (!pid_alive((pid_t)pid))
		return 0; /* stale: its process is gone (not worth a warning) */
	if (st.st_uid != 0 && !process_has_uid((pid_t)pid, st.st_uid)) {
		*why = "its owner is neither root nor the process it names";
		return 0;
	}
	return (pid_t)pid;
}

/* lock_file_pid(), naming an ignored file in the log. */
static pid_t read_lock_pid(const char *lock_path)
{
	const char *why;
	pid_t pid = lock_file_pid(lock_path, &why);
	if (why)
		log_warning("ignoring the lock file %s: %s", lock_path, why);
	return pid;
}

/* /proc/locks: "1: FLOCK  ADVISORY  WRITE 1234 00:05:123 0 EOF" (maj:min:inode of st_dev). */
static pid_t locks_holder(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;
	FILE *f = fopen("/proc/locks", "re");
	if (!f)
		return 0;
	char line[LOCKS_LINE_MAX];
	pid_t found = 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char kind[16], mode[16], rw[16];
		long pid;
		unsigned maj, min;
		unsigned long ino;
		char *p = strchr(line, ':');
		if (!p)
			continue;
		p++;
		if (strstr(p, "->"))
			continue; /* a waiter */
		if (sscanf(p, "%15s %15s %15s %ld %x:%x:%lu", kind, mode, rw, &pid, &maj, &min,
			   &ino) != 7)
			continue;
		if (ino == st.st_ino && maj == major(st.st_dev) && min == minor(st.st_dev) &&
		    pid != getpid())
			found = (pid_t)pid;
	}
	fclose(f);
	return found;
}

static void read_comm(pid_t pid, char *comm, size_t size)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/comm", (int)pid);
	comm[0] = '\0';
	FILE *f = fopen(p, "re");
	if (!f)
		return;
	if (fgets(comm, (int)size, f))
		comm[strcspn(comm, "\n")] = '\0';
	fclose(f);
}

pid_t serial_port_holder(const char *path, const char *lock_dir, char *comm, size_t comm_size)
{
	char lock_path[SERIAL_PATH_MAX + 32];
	snprintf(lock_path, sizeof(lock_path), "%s/LCK..%s", lock_dir ? lock_dir : SERIAL_LOCK_DIR,
		 port_base(path));
	pid_t pid = read_lock_pid(lock_path);
	if (!pid || pid == getpid())
		pid = locks_holder(path);
	if (comm && comm_size) {
		comm[0] = '\0';
		if (pid)
			read_comm(pid, comm, comm_size);
	}
	return pid;
}

const char *serial_port_holder_hint(const char *comm)
{
	static const char *const monitors[] = {
	    "minicom", "screen",  "picocom",  "miniterm", "miniterm.py", "cu",	 "tio", "putty",
	    "gtkterm", "cutecom", "moserial", "particle", "node",	 "tail", "cat", "socat"};
	if (comm && strcmp(comm, "ModemManager") == 0)
		return "ModemManager is probing the port as a modem: install flashd's udev rules "
		       "(systemd/70-flashd.rules sets ID_MM_DEVICE_IGNORE=1 on Particle ports) and "
		       "re-plug the device, or stop ModemManager";
	for (size_t i = 0; comm && i < sizeof(monitors) / sizeof(monitors[0]); i++)
		if (strcmp(comm, monitors[i]) == 0)
			return "close your serial monitor, then try again";
	return "close the program that holds the port, then try again";
}

static int fail_busy(const char *path, const char *lock_dir, pid_t pid, struct error *err)
{
	char comm[64] = "";
	if (!pid)
		pid = serial_port_holder(path, lock_dir, comm, sizeof(comm));
	else
		read_comm(pid, comm, sizeof(comm));
	if (pid)
		error_set(err, ERR_DEVICE_BUSY, "%s is held by %s (pid %d)", path,
			  comm[0] ? comm : "another program", (int)pid);
	else
		error_set(err, ERR_DEVICE_BUSY, "%s is held by another program", path);
	error_hint(err, "%s", serial_port_holder_hint(comm));
	if (comm[0])
		error_detail_str(err, "holder", comm);
	if (pid)
		error_detail_int(err, "holder_pid", pid);
	error_detail_str(err, "port", path);
	return -1;
}

int serial_port_check_free(const char *path, const char *lock_dir, struct error *err)
{
	pid_t pid = serial_port_holder(path, lock_dir, NULL, 0);
	return !pid || pid == getpid() ? 0 : fail_busy(path, lock_dir, pid, err);
}

/*
 * HDB lock file: create exclusively; a file that is there and not believable
 * (stale pid, not a regular file, foreign owner: lock_file_pid) is replaced, or
 * if it cannot be removed (someone else's file in the sticky /run/lock) the
 * port is used under flock alone.  Never a hang, never a permanent busy.
 */
static int take_lock_file(struct serial_port *p, const char *lock_dir, struct error *err)
{
	struct stat st;
	if (stat(lock_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0; /* no lock directory: flock alone */
	snprintf(p->lock_path, sizeof(p->lock_path), "%s/LCK..%s", lock_dir, port_base(p->path));
	for (int attempt = 0; attempt < 2; attempt++) {
		_cleanup_close_ int fd =
		    open(p->lock_path,
			 O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
		if (fd >= 0) {
			char buf[16];
			int n = snprintf(buf, sizeof(buf), "%10d\n", (int)getpid());
			if (write(fd, buf, (size_t)n) != n) {
				/* A lock file without our pid would read as stale to the
				 * next one: remove it and rely on flock alone. */
				(void)unlink(p->lock_path);
				p->lock_path[0] = '\0';
			}
			return 0;
		}
		if (errno != EEXIST) {
			p->lock_path[0] = '\0'; /* read-only /run/lock: flock alone */
			return 0;
		}
		pid_t pid = read_lock_pid(p->lock_path);
		if (pid && pid != getpid()) {
			p->lock_path[0] = '\0';
			return fail_busy(p->path, lock_dir, pid, err);
		}
		if (unlink(p->lock_path) < 0 && errno != ENOENT) {
			log_warning(
			    "cannot remove the lock file %s (%s): using %s under flock alone",
			    p->lock_path, strerror(errno), p->path);
			break;
		}
	}
	p->lock_path[0] = '\0';
	return 0;
}

static int set_raw(int fd)
{
	struct termios2 t;
	if (ioctl(fd, TCGETS2, &t) < 0)
		return -1;
	/* cfmakeraw() */
	t.c_iflag &=
	    ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
	t.c_oflag &= ~(tcflag_t)OPOST;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
	t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | CRTSCTS);
	t.c_cflag |= CS8 | CLOCAL | CREAD;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	return ioctl(fd, TCSETS2, &t);
}

int serial_port_open(const char *path, const char *lock_dir, struct serial_port **ret,
		     struct error *err)
{
	*ret = NULL;
	if (!lock_dir)
		lock_dir = SERIAL_LOCK_DIR;
	_cleanup_(serial_port_closep) struct serial_port *p = calloc(1, sizeof(*p));
	if (!p)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	snprintf(p->path, sizeof(p->path), "%s", path);
	p->fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (p->fd < 0) {
		int e = errno;
		if (e == EACCES || e == EPERM) {
			error_set(err, ERR_PERMISSION_DENIED, "cannot open %s: %s", path,
				  strerror(e));
			error_detail_str(err, "path", path);
			error_detail_int(err, "errno", e);
			error_detail_str(err, "operation", "open");
			return -1;
		}
		if (e == EBUSY)
			return fail_busy(path, lock_dir, 0, err);
		error_set(err, ERR_DEVICE_NOT_FOUND, "cannot open %s: %s", path, strerror(e));
		error_detail_str(err, "target", path);
		return -1;
	}
	if (flock(p->fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		if (e == EWOULDBLOCK)
			return fail_busy(path, lock_dir, 0, err);
		return error_set(err, ERR_INTERNAL, "flock %s: %s", path, strerror(e));
	}
	if (take_lock_file(p, lock_dir, err) < 0)
		return -1;
	/* ENOTTY on pipes and on umockdev ttys without an ioctl handler
	 * (docs/testing/umockdev.md#serial-ports): raw mode is then moot. */
	(void)set_raw(p->fd);
	*ret = TAKE_PTR(p);
	return 0;
}

int serial_port_set_baud(struct serial_port *p, unsigned baud, struct error *err)
{
	struct termios2 t;
	if (ioctl(p->fd, TCGETS2, &t) < 0)
		goto fail;
	t.c_cflag &= ~(tcflag_t)CBAUD;
	t.c_cflag |= BOTHER;
	t.c_ispeed = baud;
	t.c_ospeed = baud;
	/* the line coding reaches the device as SET_LINE_CODING
	 * (docs/device/console.md#magic-baud-rates) */
	if (ioctl(p->fd, TCSETS2, &t) < 0)
		goto fail;
	return 0;
fail:
	error_set(err, ERR_TRANSFER_FAILED, "cannot set %s to %u baud: %s", p->path, baud,
		  strerror(errno));
	error_detail_str(err, "phase", "line-coding");
	error_detail_str(err, "reason", strerror(errno));
	return -1;
}

void serial_port_close(struct serial_port *p)
{
	if (!p)
		return;
	const char *why;
	if (p->lock_path[0] && lock_file_pid(p->lock_path, &why) == getpid())
		unlink(p->lock_path);
	if (p->fd >= 0) {
		flock(p->fd, LOCK_UN);
		close(p->fd);
	}
	free(p);
}
