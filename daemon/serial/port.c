#include "port.h"

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

static const char *port_base(const char *path)
{
	const char *b = strrchr(path, '/');
	return b ? b + 1 : path;
}

static pid_t read_lock_pid(const char *lock_path)
{
	char buf[32];
	int fd = open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	long pid = strtol(buf, NULL, 10); /* HDB: "%10d\n"; binary (4-byte) locks are obsolete */
	return pid > 0 && pid < INT_MAX ? (pid_t)pid : 0;
}

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
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
	if (!pid_alive(pid) || pid == getpid())
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

/* HDB lock file: create exclusively, replace a stale one (dead pid). */
static int take_lock_file(struct serial_port *p, const char *lock_dir, struct error *err)
{
	struct stat st;
	if (stat(lock_dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return 0; /* no lock directory: flock alone */
	snprintf(p->lock_path, sizeof(p->lock_path), "%s/LCK..%s", lock_dir, port_base(p->path));
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = open(p->lock_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0) {
			char buf[16];
			int n = snprintf(buf, sizeof(buf), "%10d\n", (int)getpid());
			if (write(fd, buf, (size_t)n) != n) {
				close(fd);
				unlink(p->lock_path);
				p->lock_path[0] = '\0';
				return 0;
			}
			close(fd);
			return 0;
		}
		if (errno != EEXIST) {
			p->lock_path[0] = '\0'; /* read-only /run/lock: flock alone */
			return 0;
		}
		pid_t pid = read_lock_pid(p->lock_path);
		if (pid_alive(pid) && pid != getpid()) {
			p->lock_path[0] = '\0';
			return fail_busy(p->path, lock_dir, pid, err);
		}
		unlink(p->lock_path); /* stale */
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
	struct serial_port *p = calloc(1, sizeof(*p));
	if (!p)
		return error_set(err, ERR_INTERNAL, "out of memory");
	snprintf(p->path, sizeof(p->path), "%s", path);
	p->fd = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (p->fd < 0) {
		int e = errno;
		free(p);
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
		close(p->fd);
		free(p);
		if (e == EWOULDBLOCK)
			return fail_busy(path, lock_dir, 0, err);
		return error_set(err, ERR_INTERNAL, "flock %s: %s", path, strerror(e));
	}
	if (take_lock_file(p, lock_dir, err) < 0) {
		close(p->fd);
		free(p);
		return -1;
	}
	/* ENOTTY on pipes and on umockdev ttys without an ioctl handler
	 * (docs/testing/umockdev.md#serial-ports): raw mode is then moot. */
	(void)set_raw(p->fd);
	*ret = p;
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
	if (p->lock_path[0] && read_lock_pid(p->lock_path) == getpid())
		unlink(p->lock_path);
	if (p->fd >= 0) {
		flock(p->fd, LOCK_UN);
		close(p->fd);
	}
	free(p);
}
