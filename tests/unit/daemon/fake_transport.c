/* The daemon unit tests' fake transport and devices (fake_transport.h). */
#include "fake_transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake_state fake;

void fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
}

static bool fake_can_serve(const struct device_snapshot *dev)
{
	return !fake.serve_dfu_only || dev->mode == DEVICE_MODE_DFU;
}

static struct transport_run *start_as(const struct transport_ops *ops, struct job *job,
				      const struct job_step *step, struct error *err)
{
	fake.starts++;
	fake.last_started_by = ops->name;
	fake.last_kind = step->kind;
	fake.last_keep_listening = step->keep_listening;
	fake.last_mode_only = step->mode_only;
	fake.last_mode = job_device(job)->mode;
	fake.last_kept = step->kept; /* the fake's runs own nothing: the test checks it */
	if (fake.start_fails) {
		error_set(err, ERR_PERMISSION_DENIED, "fake: cannot open");
		return NULL;
	}
	struct transport_run *r = calloc(1, sizeof(*r));
	if (!r || fake.n >= FAKE_RUNS_MAX) {
		free(r);
		error_set(err, ERR_OUT_OF_MEMORY, "fake: too many runs");
		return NULL;
	}
	r->job = job;
	r->ops = ops;
	r->cancel_mode = fake.cancel_mode;
	fake.runs[fake.n++] = r;
	fake.run = r;
	return r;
}

static struct transport_run *serial_start(struct job *job, const struct job_step *step,
					  struct error *err)
{
	return start_as(&fake_serial, job, step, err);
}

static struct transport_run *ctrl_start(struct job *job, const struct job_step *step,
					struct error *err)
{
	return start_as(&fake_ctrl, job, step, err);
}

static struct transport_run *dfu_start(struct job *job, const struct job_step *step,
				       struct error *err)
{
	return start_as(&fake_dfu, job, step, err);
}

static void fake_cancel(struct transport_run *r)
{
	fake.cancels++;
	if (r->cancel_mode == FAKE_CANCEL_AT_ONCE) {
		struct error e;
		error_init(&e);
		error_set(&e, ERR_CANCELLED, "fake stopped at a block boundary");
		error_detail_str(&e, "device_state", "partly written");
		job_step_done(r->job, NULL, &e);
	}
}

static void fake_device_event(struct transport_run *r, enum device_event ev,
			      const struct device_snapshot *dev)
{
	(void)dev;
	r->device_events[ev]++;
}

static void fake_free(struct transport_run *r)
{
	if (!r)
		return;
	fake.frees++;
	for (unsigned i = 0; i < fake.n; i++)
		if (fake.runs[i] == r) {
			fake.runs[i] = fake.runs[--fake.n];
			break;
		}
	if (fake.run == r)
		fake.run = NULL;
	free(r);
}

static void fake_keep_free(struct transport_keep *k)
{
	if (k)
		fake.keep_frees++;
}

static const struct timeout_def fake_timeouts[] = {
    {"fake_step_ms", 1000, "a fake step"},
    {"serial_reenumerate_ms", 1000, "the core's wait for a reboot after a serial write"},
    {0},
};

const struct transport_ops fake_serial = {
    .name = "serial",
    .can_serve = fake_can_serve,
    .start = serial_start,
    .cancel = fake_cancel,
    .device_event = fake_device_event,
    .free = fake_free,
    .keep_free = fake_keep_free,
    .timeouts = fake_timeouts,
};

const struct transport_ops fake_ctrl = {
    .name = "ctrl",
    .can_serve = fake_can_serve,
    .start = ctrl_start,
    .cancel = fake_cancel,
    .device_event = fake_device_event,
    .free = fake_free,
};

const struct transport_ops fake_dfu = {
    .name = "dfu",
    .can_serve = fake_can_serve,
    .start = dfu_start,
    .cancel = fake_cancel,
    .device_event = fake_device_event,
    .free = fake_free,
};

static void plug_usb(struct registry *reg, const char *serial, const char *port, uint16_t pid,
		     unsigned busnum)
{
	struct registry_node n;
	memset(&n, 0, sizeof(n));
	snprintf(n.syspath, sizeof(n.syspath), "/sys/devices/usb1/%s", port);
	snprintf(n.usb_syspath, sizeof(n.usb_syspath), "%s", n.syspath);
	snprintf(n.port_path, sizeof(n.port_path), "%s", port);
	snprintf(n.devnode, sizeof(n.devnode), "/dev/bus/usb/001/0%.8s", port + 2);
	snprintf(n.serial, sizeof(n.serial), "%s", serial);
	n.vid = 0x2b04;
	n.pid = pid;
	n.busnum = busnum;
	n.devnum = busnum ? (unsigned)atoi(port + 2) + 1 : 0;
	registry_node_added(reg, &n);
}

static void plug_tty(struct registry *reg, const char *serial, const char *port, uint16_t pid,
		     const char *tty)
{
	struct registry_node n;
	memset(&n, 0, sizeof(n));
	n.is_tty = true;
	snprintf(n.usb_syspath, sizeof(n.usb_syspath), "/sys/devices/usb1/%s", port);
	snprintf(n.syspath, sizeof(n.syspath), "/sys/devices/usb1/%.32s/tty/ttyACM0", port);
	snprintf(n.port_path, sizeof(n.port_path), "%s", port);
	snprintf(n.devnode, sizeof(n.devnode), "%s", tty);
	snprintf(n.serial, sizeof(n.serial), "%s", serial);
	n.vid = 0x2b04;
	n.pid = pid;
	registry_node_added(reg, &n);
}

void fake_plug(struct registry *reg, const char *serial, const char *port, uint16_t pid)
{
	plug_usb(reg, serial, port, pid, 0);
}

void fake_plug_tty(struct registry *reg, const char *serial, const char *port)
{
	plug_tty(reg, serial, port, 0xc006, "/dev/ttyACM0");
}

void fake_plug_cdc(struct registry *reg, const char *serial, const char *port, uint16_t pid,
		   const char *tty)
{
	plug_usb(reg, serial, port, pid, 1);
	plug_tty(reg, serial, port, pid, tty);
}

void fake_unplug(struct registry *reg, const char *port)
{
	char syspath[DEVICE_PATH_MAX];
	snprintf(syspath, sizeof(syspath), "/sys/devices/usb1/%s", port);
	registry_node_removed(reg, syspath);
}
