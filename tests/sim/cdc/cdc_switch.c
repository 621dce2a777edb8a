/*
 * cdc-switch: set a (magic) baud rate on a CDC tty and report the udev events
 * that follow, as a host program with a libudev monitor sees them
 * (docs/device/console.md#magic-baud-rates).  Runs inside a flashd-sim testbed.
 *
 *   cdc-switch TTY BAUD WAIT_MS [PROBE]
 *
 * Prints one line per uevent: "ACTION SUBSYSTEM DEVTYPE VID PID SERIAL"
 * ('-' for missing properties).  With PROBE, afterwards writes PROBE to the
 * tty (reopened) and prints "reply: " + what came back within 1 s, escaped.
 */
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <libudev.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *prop(struct udev_device *d, const char *key)
{
	const char *v = udev_device_get_property_value(d, key);
	return v && *v ? v : "-";
}

/* termios2 + BOTHER: the only way to ask Linux for 14400 / 28800 baud. */
static int set_baud(const char *path, unsigned baud)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "cdc-switch: %s: %s\n", path, strerror(errno));
		return -1;
	}
	struct termios2 t;
	if (ioctl(fd, TCGETS2, &t) < 0) {
		fprintf(stderr, "cdc-switch: TCGETS2: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	t.c_cflag &= ~(tcflag_t)CBAUD;
	t.c_cflag |= BOTHER;
	t.c_ispeed = t.c_ospeed = baud;
	if (ioctl(fd, TCSETS2, &t) < 0) {
		fprintf(stderr, "cdc-switch: TCSETS2: %s\n", strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static void print_escaped(const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (b[i] == '\r')
			fputs("\\r", stdout);
		else if (b[i] == '\n')
			fputs("\\n", stdout);
		else if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
			putchar(b[i]);
		else
			printf("\\x%02x", b[i]);
	}
}

static int probe(const char *path, const char *text)
{
	int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		printf("reply: <open failed: %s>\n", strerror(errno));
		return 1;
	}
	struct termios2 t;
	if (ioctl(fd, TCGETS2, &t) == 0) {
		t.c_iflag = 0;
		t.c_oflag = 0;
		t.c_lflag = 0;
		ioctl(fd, TCSETS2, &t);
	}
	if (write(fd, text, strlen(text)) < 0)
		printf("reply: <write failed: %s>\n", strerror(errno));
	unsigned char buf[4096];
	size_t n = 0;
	long long end = now_ms() + 1000;
	while (n < sizeof(buf) && now_ms() < end) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 50) <= 0)
			continue;
		ssize_t r = read(fd, buf + n, sizeof(buf) - n);
		if (r > 0)
			n += (size_t)r;
	}
	close(fd);
	fputs("reply: ", stdout);
	print_escaped(buf, n);
	putchar('\n');
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: cdc-switch TTY BAUD WAIT_MS [PROBE]\n");
		return 2;
	}
	struct udev *u = udev_new();
	struct udev_monitor *m = u ? udev_monitor_new_from_netlink(u, "udev") : NULL;
	if (!m || udev_monitor_enable_receiving(m) < 0) {
		fprintf(stderr, "cdc-switch: udev monitor unavailable\n");
		return 2;
	}
	if (set_baud(argv[1], (unsigned)strtoul(argv[2], NULL, 10)) < 0)
		return 1;
	long long end = now_ms() + atoll(argv[3]);
	int fd = udev_monitor_get_fd(m);
	for (long long left; (left = end - now_ms()) > 0;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		struct udev_device *d = udev_monitor_receive_device(m);
		if (!d)
			continue;
		printf("%s %s %s %s %s %s\n",
		       udev_device_get_action(d) ? udev_device_get_action(d) : "-",
		       udev_device_get_subsystem(d) ? udev_device_get_subsystem(d) : "-",
		       udev_device_get_devtype(d) ? udev_device_get_devtype(d) : "-",
		       prop(d, "ID_VENDOR_ID"), prop(d, "ID_MODEL_ID"), prop(d, "ID_SERIAL_SHORT"));
		fflush(stdout);
		udev_device_unref(d);
	}
	udev_monitor_unref(m);
	udev_unref(u);
	if (argc > 4)
		return probe(argv[1], argv[4]);
	return 0;
}
