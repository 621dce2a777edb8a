/*
 * udev-watch: prints the udev events of USB devices and ttys as a libudev
 * monitor in a program under test sees them (the hot-plug proof of
 * flashd-sim).  One line per event:
 *   ACTION SUBSYSTEM DEVTYPE|- ID_SERIAL_SHORT|- ID_MODEL_ID|- DEVNAME|-
 * Prints "ready" once the monitor listens; exits after --count events or on EOF of stdin.
 */
#include <libudev.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *or_dash(const char *s)
{
	return s && *s ? s : "-";
}

int main(int argc, char **argv)
{
	long count = argc > 2 && strcmp(argv[1], "--count") == 0 ? strtol(argv[2], NULL, 10) : -1;
	struct udev *u = udev_new();
	struct udev_monitor *mon = u ? udev_monitor_new_from_netlink(u, "udev") : NULL;
	if (!mon || udev_monitor_filter_add_match_subsystem_devtype(mon, "usb", "usb_device") < 0 ||
	    udev_monitor_filter_add_match_subsystem_devtype(mon, "tty", NULL) < 0 ||
	    udev_monitor_enable_receiving(mon) < 0) {
		fprintf(stderr, "udev-watch: cannot create a udev monitor\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	struct pollfd p[2] = {{udev_monitor_get_fd(mon), POLLIN, 0}, {0, POLLIN, 0}};
	while (count != 0) {
		if (poll(p, 2, -1) < 0)
			break;
		if (p[1].revents & (POLLIN | POLLHUP)) {
			char buf[64];
			if (read(0, buf, sizeof(buf)) <= 0)
				break;
		}
		if (!(p[0].revents & POLLIN))
			continue;
		struct udev_device *d = udev_monitor_receive_device(mon);
		if (!d)
			continue;
		printf("%s %s %s %s %s %s\n", or_dash(udev_device_get_action(d)),
		       or_dash(udev_device_get_subsystem(d)), or_dash(udev_device_get_devtype(d)),
		       or_dash(udev_device_get_property_value(d, "ID_SERIAL_SHORT")),
		       or_dash(udev_device_get_property_value(d, "ID_MODEL_ID")),
		       or_dash(udev_device_get_devnode(d)));
		fflush(stdout);
		udev_device_unref(d);
		if (count > 0)
			count--;
	}
	udev_monitor_unref(mon);
	udev_unref(u);
	return 0;
}
