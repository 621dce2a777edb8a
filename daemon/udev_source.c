#include "udev_source.h"

#include "log.h"

#include <event2/event.h>
#include <libudev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct udev_source {
	struct udev *udev;
	struct udev_monitor *monitor;
	struct event *ev;
	struct registry *reg;
};

static unsigned hex16(const char *s)
{
	return s ? (unsigned)strtoul(s, NULL, 16) & 0xffff : 0;
}

static const char *prop_or_attr(struct udev_device *d, const char *prop, const char *attr)
{
	const char *v = udev_device_get_property_value(d, prop);
	if (!v || !*v)
		v = udev_device_get_sysattr_value(d, attr);
	return v;
}

/* Fills a node from a usb_device; false when it is not a Particle device. */
static bool fill_usb(struct udev_device *usb, struct registry_node *n)
{
	enum platform_usb_mode mode;
	n->vid = (uint16_t)hex16(prop_or_attr(usb, "ID_VENDOR_ID", "idVendor"));
	n->pid = (uint16_t)hex16(prop_or_attr(usb, "ID_MODEL_ID", "idProduct"));
	if (!platform_by_usb(n->vid, n->pid, &mode))
		return false;
	const char *syspath = udev_device_get_syspath(usb);
	const char *sysname = udev_device_get_sysname(usb);
	const char *serial = udev_device_get_sysattr_value(usb, "serial");
	if (!serial || !*serial)
		serial = udev_device_get_property_value(usb, "ID_SERIAL_SHORT");
	const char *bus = prop_or_attr(usb, "BUSNUM", "busnum");
	const char *dev = prop_or_attr(usb, "DEVNUM", "devnum");
	snprintf(n->usb_syspath, sizeof(n->usb_syspath), "%s", syspath ? syspath : "");
	snprintf(n->port_path, sizeof(n->port_path), "%s", sysname ? sysname : "");
	snprintf(n->serial, sizeof(n->serial), "%s", serial ? serial : "");
	n->busnum = bus ? (unsigned)strtoul(bus, NULL, 10) : 0;
	n->devnum = dev ? (unsigned)strtoul(dev, NULL, 10) : 0;
	return true;
}

static bool node_from_udev(struct udev_device *d, struct registry_node *n)
{
	const char *subsystem = udev_device_get_subsystem(d);
	const char *devtype = udev_device_get_devtype(d);
	const char *devnode = udev_device_get_devnode(d);
	memset(n, 0, sizeof(*n));
	if (!subsystem)
		return false;
	snprintf(n->syspath, sizeof(n->syspath), "%s", udev_device_get_syspath(d));
	snprintf(n->devnode, sizeof(n->devnode), "%s", devnode ? devnode : "");
	if (strcmp(subsystem, "usb") == 0) {
		if (!devtype || strcmp(devtype, "usb_device") != 0)
			return false;
		return fill_usb(d, n);
	}
	if (strcmp(subsystem, "tty") != 0 || !devnode)
		return false;
	struct udev_device *usb =
	    udev_device_get_parent_with_subsystem_devtype(d, "usb", "usb_device");
	if (!usb || !fill_usb(usb, n))
		return false;
	n->is_tty = true;
	/* The tty's own properties are what a remove event still carries. */
	const char *serial = udev_device_get_property_value(d, "ID_SERIAL_SHORT");
	if (!n->serial[0] && serial)
		snprintf(n->serial, sizeof(n->serial), "%s", serial);
	return true;
}

static void handle(struct udev_source *s, struct udev_device *d, const char *action)
{
	struct registry_node n;
	if (strcmp(action, "remove") == 0) {
		/* On remove, attributes may be gone already: the syspath is enough. */
		registry_node_removed(s->reg, udev_device_get_syspath(d));
		return;
	}
	if (strcmp(action, "add") != 0 && strcmp(action, "change") != 0 &&
	    strcmp(action, "bind") != 0)
		return;
	if (node_from_udev(d, &n))
		registry_node_added(s->reg, &n);
}

static void on_monitor(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct udev_source *s = arg;
	struct udev_device *d;
	/* The monitor socket is non-blocking: drain what is there, then return. */
	for (int i = 0; i < 64 && (d = udev_monitor_receive_device(s->monitor)); i++) {
		const char *action = udev_device_get_action(d);
		if (action)
			handle(s, d, action);
		udev_device_unref(d);
	}
}

static void coldplug(struct udev_source *s, const char *subsystem)
{
	struct udev_enumerate *e = udev_enumerate_new(s->udev);
	struct udev_list_entry *entry;
	if (!e)
		return;
	udev_enumerate_add_match_subsystem(e, subsystem);
	udev_enumerate_scan_devices(e);
	udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(e))
	{
		struct udev_device *d =
		    udev_device_new_from_syspath(s->udev, udev_list_entry_get_name(entry));
		if (d) {
			handle(s, d, "add");
			udev_device_unref(d);
		}
	}
	udev_enumerate_unref(e);
}

struct udev_source *udev_source_new(struct event_base *base, struct registry *reg,
				    struct error *err)
{
	struct udev_source *s = calloc(1, sizeof(*s));
	if (!s || !(s->udev = udev_new())) {
		free(s);
		error_set(err, ERR_INTERNAL, "cannot initialise libudev");
		return NULL;
	}
	s->reg = reg;
	s->monitor = udev_monitor_new_from_netlink(s->udev, "udev");
	if (s->monitor) {
		udev_monitor_filter_add_match_subsystem_devtype(s->monitor, "usb", "usb_device");
		udev_monitor_filter_add_match_subsystem_devtype(s->monitor, "tty", NULL);
		if (udev_monitor_enable_receiving(s->monitor) < 0) {
			udev_monitor_unref(s->monitor);
			s->monitor = NULL;
		}
	}
	if (s->monitor) {
		s->ev = event_new(base, udev_monitor_get_fd(s->monitor), EV_READ | EV_PERSIST,
				  on_monitor, s);
		if (!s->ev) {
			udev_source_free(s);
			error_set(err, ERR_OUT_OF_MEMORY, NULL);
			return NULL;
		}
		event_add(s->ev, NULL);
	} else {
		log_warning("no udev monitor: devices plugged in later will not be seen");
	}
	/* usb first so that ttys find their device; a tty seen first still works. */
	coldplug(s, "usb");
	coldplug(s, "tty");
	return s;
}

void udev_source_free(struct udev_source *s)
{
	if (!s)
		return;
	if (s->ev)
		event_free(s->ev);
	if (s->monitor)
		udev_monitor_unref(s->monitor);
	udev_unref(s->udev);
	free(s);
}
