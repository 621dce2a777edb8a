#include "device.h"

#include "cdc/listening.h"
#include "modules.h"
#include "spec.h"
#include "timing.h"
#include "ttynode.h"
#include "usbdesc.h"

#include <glib-unix.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sim_device *device_new(struct sim *sim, const struct sim_spec *spec)
{
	struct sim_device *d = g_new0(struct sim_device, 1);
	d->sim = sim;
	d->spec = *spec;
	d->spec.peer = g_strdup(spec->peer);
	d->flash = flash_new(spec->platform, spec->os);
	modules_install(d->flash, spec);
	d->layout_version = spec->system_version;
	d->mode = SIM_MODE_UNPLUGGED;
	d->next_mode = spec->mode;
	d->pty_fd = -1;
	d->peer_in = d->peer_out = -1;
	d->tty_index = -1;
	return d;
}

void device_free(struct sim_device *d)
{
	if (!d)
		return;
	usbdev_node_free(d->usb);
	for (unsigned i = 0; i < d->n_assets; i++)
		g_free(d->assets[i].data);
	flash_free(d->flash);
	spec_clear(&d->spec);
	g_free(d);
}

void device_scan(struct sim_device *d, struct vscan *out)
{
	validate_scan(d->flash, d->spec.platform, d->layout_version, d->spec.radio_version, out);
	uint16_t sys = validate_system_version(out);
	if (sys && sys != d->layout_version) {
		/* A new system part brings its own slot layout
		 * (docs/device/memory-maps.md#gen-3). */
		d->layout_version = sys;
		validate_scan(d->flash, d->spec.platform, d->layout_version, d->spec.radio_version,
			      out);
	}
}

enum sim_mode device_boot_mode(struct sim_device *d)
{
	struct vscan s;
	device_scan(d, &s);
	return validate_boot_mode(&s, d->spec.platform);
}

const char *device_mode_name(struct sim_device *d)
{
	if (d->mode == SIM_MODE_UNPLUGGED || !d->present)
		return "unplugged";
	if ((d->mode == SIM_MODE_NORMAL || d->mode == SIM_MODE_LISTENING ||
	     d->mode == SIM_MODE_SAFE) &&
	    d->cdc)
		return listening_state(d->cdc) == LISTENING_CONSOLE ? "listening"
		       : d->mode == SIM_MODE_SAFE		    ? "safe"
								    : "normal";
	return sim_mode_name(d->mode == SIM_MODE_LISTENING ? SIM_MODE_NORMAL : d->mode);
}

uint64_t device_ymodem_bytes(struct sim_device *d)
{
	return d->ymodem_bytes + (d->cdc ? listening_ymodem_bytes(d->cdc) : 0);
}

uint64_t device_app_discarded(struct sim_device *d)
{
	return d->app_discarded + (d->cdc ? listening_app_discarded(d->cdc) : 0);
}

/* sysfs path of a port "1-1.2": .../usb1/1-1/1-1.2 (hubs nest). */
static void build_syspath(struct sim_device *d)
{
	unsigned bus = spec_port_bus(d->spec.port);
	GString *s = g_string_new(NULL);
	g_string_printf(s, "/devices/pci0000:00/0000:00:14.0/usb%u", bus);
	const char *port = d->spec.port;
	const char *dot = strchr(port, '.');
	while (dot) {
		g_string_append_printf(s, "/%.*s", (int)(dot - port), port);
		dot = strchr(dot + 1, '.');
	}
	g_string_append_printf(s, "/%s", port);
	g_strlcpy(d->usb_syspath, s->str, sizeof(d->usb_syspath));
	g_string_free(s, TRUE);
}

static void append_hex(GString *s, GByteArray *a)
{
	for (guint i = 0; i < a->len; i++)
		g_string_append_printf(s, "%02x", a->data[i]);
}

static char *model_property(const char *product)
{
	char *m = g_strdup(product);
	for (char *c = m; *c; c++)
		if (*c == ' ')
			*c = '_';
	return m;
}

static void describe_usb_device(struct sim_device *d, GString *s)
{
	const struct platform *p = d->spec.platform;
	uint16_t pid = d->mode == SIM_MODE_DFU ? p->dfu_pid : p->cdc_pid;
	const char *serial = d->spec.serial[0] ? d->spec.serial : d->spec.id;
	char *model = model_property(usbdesc_product(d));
	/* No N: line: the node is the FIFO usbdev_node_make_fifo() makes. */
	g_string_append_printf(s, "P: %s\n", d->usb_syspath);
	g_string_append_printf(s,
			       "E: SUBSYSTEM=usb\nE: DEVTYPE=usb_device\nE: DRIVER=usb\n"
			       "E: DEVNAME=/dev/bus/usb/%03u/%03u\nE: BUSNUM=%03u\nE: DEVNUM=%03u\n"
			       "E: PRODUCT=%x/%x/%x\nE: TYPE=%d/%d/%d\n",
			       d->busnum, d->devnum, d->busnum, d->devnum, p->vid, pid,
			       usbdesc_bcd_device(d), d->mode == SIM_MODE_DFU ? 0 : 239,
			       d->mode == SIM_MODE_DFU ? 0 : 2, d->mode == SIM_MODE_DFU ? 0 : 1);
	g_string_append_printf(
	    s,
	    "E: ID_VENDOR=Particle\nE: ID_VENDOR_ID=%04x\nE: ID_MODEL=%s\n"
	    "E: ID_MODEL_ID=%04x\nE: ID_SERIAL=Particle_%s_%s\nE: ID_SERIAL_SHORT=%s\n"
	    "E: ID_BUS=usb\nE: ID_REVISION=%04x\n",
	    p->vid, model, pid, model, serial, serial, usbdesc_bcd_device(d));
	/* Particle's udev rule (docs/device/platforms.md#udev-rules,
	 * docs/device/console.md#modemmanager). */
	g_string_append(s, "E: ID_MM_DEVICE_IGNORE=1\n");
	g_string_append_printf(
	    s,
	    "A: idVendor=%04x\\n\nA: idProduct=%04x\\n\nA: bcdDevice=%04x\\n\n"
	    "A: busnum=%u\\n\nA: devnum=%u\\n\nA: speed=12\\n\n"
	    "A: bConfigurationValue=1\\n\nA: bNumConfigurations=1\\n\n"
	    "A: bNumInterfaces=%2u\\n\nA: manufacturer=Particle\\n\nA: product=%s\\n\n"
	    "A: serial=%s\\n\nA: devpath=%s\\n\n",
	    p->vid, pid, usbdesc_bcd_device(d), d->busnum, d->devnum,
	    d->mode == SIM_MODE_DFU ? 1 : 3, usbdesc_product(d), serial,
	    strchr(d->spec.port, '-') + 1);
	GByteArray *desc = usbdesc_sysfs(d);
	g_string_append(s, "H: descriptors=");
	append_hex(s, desc);
	g_string_append(s, "\n\n");
	g_byte_array_unref(desc);
	g_free(model);
}

static void describe_interface(struct sim_device *d, GString *s, int number, const char *cls)
{
	g_string_append_printf(s,
			       "P: %s/%s:1.%d\nE: SUBSYSTEM=usb\nE: DEVTYPE=usb_interface\n"
			       "E: INTERFACE=%s\nE: DRIVER=%s\nA: bInterfaceNumber=%02x\\n\n"
			       "A: bInterfaceClass=%.2s\\n\nA: bAlternateSetting= 0\\n\n\n",
			       d->usb_syspath, d->spec.port, number, cls,
			       strncmp(cls, "255", 3) == 0 ? "" : "cdc_acm", number,
			       strncmp(cls, "2/", 2) == 0   ? "02"
			       : strncmp(cls, "10", 2) == 0 ? "0a"
							    : "ff");
}

static void describe_tty(struct sim_device *d, GString *s, bool new_node)
{
	const struct platform *p = d->spec.platform;
	int comm = usbdesc_cdc_interface(d);
	const char *serial = d->spec.serial[0] ? d->spec.serial : d->spec.id;
	char *model = model_property(p->cdc_product);
	g_string_append_printf(s, "P: %s/%s:1.%d/tty/ttyACM%d\n", d->usb_syspath, d->spec.port,
			       comm, d->tty_index);
	if (new_node)
		g_string_append_printf(s, "N: ttyACM%d\n", d->tty_index);
	g_string_append_printf(
	    s, "E: SUBSYSTEM=tty\nE: DEVNAME=/dev/ttyACM%d\nE: MAJOR=166\nE: MINOR=%d\n",
	    d->tty_index, d->tty_index);
	/* docs/device/platforms.md#runtime-interface-layout: udev usb_id properties of the
	 * ttyACM. */
	g_string_append_printf(
	    s,
	    "E: ID_BUS=usb\nE: ID_VENDOR=Particle\nE: ID_VENDOR_ENC=Particle\n"
	    "E: ID_VENDOR_ID=%04x\nE: ID_MODEL=%s\nE: ID_MODEL_ID=%04x\n"
	    "E: ID_SERIAL=Particle_%s_%s\nE: ID_SERIAL_SHORT=%s\n"
	    "E: ID_USB_INTERFACE_NUM=%02d\nE: ID_USB_DRIVER=cdc_acm\n"
	    "E: ID_USB_INTERFACES=:020201:0a0000:ffffff:\nE: ID_MM_DEVICE_IGNORE=1\n"
	    "E: ID_PATH=pci-0000:00:14.0-usb-0:%s:1.%d\nA: dev=166:%d\\n\n\n",
	    p->vid, model, p->cdc_pid, model, serial, serial, comm, strchr(d->spec.port, '-') + 1,
	    comm, d->tty_index);
	g_free(model);
}

/*
 * The next free device number on the bus, cyclically from 1 to 127 as the
 * kernel gives them (usbfs addresses are 7 bits; libusb reports a uint8_t, so a
 * number above 255 would never match what a host asks for).  A number comes back
 * only after 126 other enumerations: a host has long let go of its old node.
 */
static unsigned pick_devnum(struct sim *sim, unsigned busnum)
{
	for (unsigned tries = 0; tries < 127; tries++) {
		sim->next_devnum = sim->next_devnum % 127 + 1;
		bool used = false;
		for (unsigned i = 0; i < sim->n_devices && !used; i++) {
			const struct sim_device *o = sim->devices[i];
			used =
			    o && o->present && o->busnum == busnum && o->devnum == sim->next_devnum;
		}
		if (!used)
			break;
	}
	return sim->next_devnum;
}

int device_plug(struct sim_device *d, GError **error)
{
	struct sim *sim = d->sim;
	g_mutex_lock(&sim->lock);
	if (d->present) {
		g_mutex_unlock(&sim->lock);
		return 0;
	}
	enum sim_mode mode = d->next_mode;
	if (mode == SIM_MODE_UNPLUGGED)
		mode = device_boot_mode(d);
	d->mode = mode;
	d->busnum = spec_port_bus(d->spec.port);
	d->devnum = pick_devnum(sim, d->busnum);
	build_syspath(d);
	snprintf(d->usb_devnode, sizeof(d->usb_devnode), "/dev/bus/usb/%03u/%03u", d->busnum,
		 d->devnum);
	dfu_enumerated(d);
	ctrlreq_init(&d->ctrl);
	d->generation++;
	bool cdc = mode != SIM_MODE_DFU, reuse_pty = false;
	/* tty=0: the CDC interfaces without their ttyACM node (no cdc_acm binding) */
	bool tty = cdc && !d->spec.no_tty;
	d->tty_index = tty ? ttynode_pick(sim, d) : -1;
	if (tty)
		snprintf(d->tty_devnode, sizeof(d->tty_devnode), "/dev/ttyACM%d", d->tty_index);
	GString *s = g_string_new(NULL);
	describe_usb_device(d, s);
	if (cdc) {
		int comm = usbdesc_cdc_interface(d);
		if (comm == 1)
			describe_interface(d, s, 0, "255/255/255");
		describe_interface(d, s, comm, "2/2/1");
		describe_interface(d, s, comm + 1, "10/0/0");
		if (comm == 0)
			describe_interface(d, s, 2, "255/255/255");
		if (tty) {
			reuse_pty = ttynode_has_pty(sim, d->tty_index);
			describe_tty(d, s, !reuse_pty);
		}
	}
	/* A new node per enumeration: hosts may still reap URBs on the old one. */
	struct usbdev_node *old = d->usb;
	usbdev_node_disconnect(old);
	d->usb = usbdev_node_new(d);
	g_mutex_unlock(&sim->lock);
	if (old)
		g_ptr_array_add(sim->retired, old); /* clients may still hold the old node */

	/* ttyACM nodes have no handler of their own: cdc_tty_handler_install().  A
	 * reused device number: the node's handler of 127 enumerations ago goes. */
	umockdev_testbed_detach_ioctl(sim->tb, d->usb_devnode, NULL);
	bool ok = umockdev_testbed_attach_ioctl(sim->tb, d->usb_devnode,
						usbdev_node_handler(d->usb), error);
	if (ok) {
		gchar *root = umockdev_testbed_get_root_dir(sim->tb);
		gchar *node = g_build_filename(root, d->usb_devnode, NULL);
		g_mutex_lock(&sim->lock);
		ok = usbdev_node_make_fifo(d->usb, node, error) == 0;
		g_mutex_unlock(&sim->lock);
		g_free(node);
		g_free(root);
	}
	/* The node before the add uevent: a host opens it as soon as it hears of it. */
	if (ok && reuse_pty)
		ttynode_link(sim, d->tty_index);
	if (ok)
		ok = umockdev_testbed_add_from_string(sim->tb, s->str, error);
	g_string_free(s, TRUE);
	if (!ok)
		return -1;
	g_mutex_lock(&sim->lock);
	d->present = true;
	if (tty) {
		gchar *tty_path =
		    g_strdup_printf("%s/%s:1.%d/tty/ttyACM%d", d->usb_syspath, d->spec.port,
				    usbdesc_cdc_interface(d), d->tty_index);
		g_strlcpy(d->tty_syspath, tty_path, sizeof(d->tty_syspath));
		g_free(tty_path);
	}
	g_mutex_unlock(&sim->lock);
	if (tty)
		cdc_attach(d);
	sim_apply_owner(sim);
	return 0;
}

void device_unplug(struct sim_device *d)
{
	struct sim *sim = d->sim;
	g_mutex_lock(&sim->lock);
	bool was = d->present;
	usbdev_node_disconnect(d->usb); /* open handles: answered URBs, then ENODEV */
	d->present = false;
	bool cdc = d->tty_index >= 0;
	/* tty=0: the CDC interfaces were there without their tty */
	bool intfs =
	    cdc || (d->spec.no_tty && d->mode != SIM_MODE_DFU && d->mode != SIM_MODE_UNPLUGGED);
	int tty_index = d->tty_index;
	/* The testbed names devices by their full path under /sys. */
	char usb[DEVICE_PATH_MAX + 8], tty[DEVICE_PATH_MAX + 8], port[SIM_PORT_MAX];
	g_strlcpy(port, d->spec.port, sizeof(port));
	snprintf(usb, sizeof(usb), "/sys%s", d->usb_syspath);
	snprintf(tty, sizeof(tty), "/sys%s", d->tty_syspath);
	d->mode = SIM_MODE_UNPLUGGED;
	g_mutex_unlock(&sim->lock);
	if (!was)
		return;
	if (cdc)
		cdc_detach(d);
	/* remove_device() sends nothing: the remove uevents go first, children first
	 * (docs/device/console.md). */
	/* Children are removed one by one: their /sys/bus and /sys/class links must go too. */
	if (cdc) {
		umockdev_testbed_uevent(sim->tb, tty, "remove");
		umockdev_testbed_remove_device(sim->tb, tty);
	}
	if (intfs) {
		for (int i = 2; i >= 0; i--) {
			gchar *intf = g_strdup_printf("%s/%s:1.%d", usb, port, i);
			umockdev_testbed_uevent(sim->tb, intf, "remove");
			umockdev_testbed_remove_device(sim->tb, intf);
			g_free(intf);
		}
	}
	umockdev_testbed_uevent(sim->tb, usb, "remove");
	umockdev_testbed_remove_device(sim->tb, usb);
	if (cdc) {
		ttynode_release(sim, tty_index);
		g_mutex_lock(&sim->lock);
		d->tty_index = -1;
		g_mutex_unlock(&sim->lock);
	}
}

struct replug {
	struct sim_device *d;
	unsigned generation;
};

static void plug_cb(void *data)
{
	struct replug *r = data;
	g_autoptr(GError) err = NULL;
	if (r->d->generation == r->generation && device_plug(r->d, &err) < 0)
		g_printerr("flashd-sim: %s: re-enumeration failed: %s\n", r->d->spec.name,
			   err ? err->message : "?");
	g_free(r);
}

static void plug_later(struct sim_device *d, unsigned ms)
{
	struct replug *r = g_new0(struct replug, 1);
	r->d = d;
	g_mutex_lock(&d->sim->lock);
	r->generation = ++d->generation;
	g_mutex_unlock(&d->sim->lock);
	sim_schedule(d->sim, ms, plug_cb, r);
}

void device_replug(struct sim_device *d, const char *port)
{
	device_unplug(d);
	g_mutex_lock(&d->sim->lock);
	if (port)
		g_strlcpy(d->spec.port, port, sizeof(d->spec.port));
	d->next_mode = d->mode == SIM_MODE_UNPLUGGED ? d->next_mode : d->mode;
	g_mutex_unlock(&d->sim->lock);
	plug_later(d, 0);
}

/* Applies a YMODEM update queued by ota_finish (the bootloader copies it at boot). */
static void apply_pending_ota(struct sim_device *d);

void device_reset(struct sim_device *d, enum sim_mode mode)
{
	g_mutex_lock(&d->sim->lock);
	enum sim_mode before = d->mode;
	g_mutex_unlock(&d->sim->lock);
	device_unplug(d);
	g_mutex_lock(&d->sim->lock);
	apply_pending_ota(d);
	d->ota_active = false;
	d->next_mode = mode;
	bool into_dfu = mode == SIM_MODE_DFU ||
			(mode == SIM_MODE_UNPLUGGED && device_boot_mode(d) == SIM_MODE_DFU);
	unsigned ms =
	    timing_scale_ms(d->sim->time_scale, timing_boot_us(d->spec.platform, into_dfu));
	g_mutex_unlock(&d->sim->lock);
	(void)before;
	plug_later(d, ms);
}

void device_reset_boot(struct sim_device *d)
{
	g_mutex_lock(&d->sim->lock);
	enum sim_mode next = d->next_mode;
	g_mutex_unlock(&d->sim->lock);
	device_reset(d, next);
}

void device_unplug_async(struct sim_device *d)
{
	device_unplug(d);
	g_mutex_lock(&d->sim->lock);
	d->next_mode = SIM_MODE_UNPLUGGED; /* a later `plug`/`replug` boots normally */
	g_mutex_unlock(&d->sim->lock);
}

static void apply_pending_ota(struct sim_device *d)
{
	if (!d->ota_pending)
		return;
	d->ota_pending = false;
	cdc_apply_ota(d);
}
