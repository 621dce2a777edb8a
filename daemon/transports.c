/*
 * The built-in transport table.  A transport library advertises itself with
 * -DFLASHD_HAVE_SERIAL / -DFLASHD_HAVE_DFU in its meson dependency (see
 * transport.h); until then a stub of the same name stands in, so that a job
 * on such a device ends at once with not-flashable-here instead of hanging.
 */
#include "transports.h"

#include <stdio.h>
#include <string.h>

#if !defined(FLASHD_HAVE_SERIAL) || !defined(FLASHD_HAVE_DFU)
static int stub_refuse(struct job *job, const char *name, struct error *err)
{
	const struct device_snapshot *dev = job_device(job);
	error_set(err, ERR_NOT_FLASHABLE_HERE,
		  "the %s transport is not built into this flashd, so a device in %s mode cannot "
		  "be flashed",
		  name, device_mode_name(dev->mode));
	error_hint(err,
		   "build flashd with the %s transport, or put the device in a mode another "
		   "transport handles",
		   name);
	error_detail_str(err, "transport", name);
	error_detail_str(err, "reason", "transport not built in");
	if (dev->key[0])
		error_detail_str(err, "device", dev->key);
	return -1;
}
#endif

#ifndef FLASHD_HAVE_SERIAL
static bool serial_stub_can_serve(const struct device_snapshot *dev)
{
	return dev->mode != DEVICE_MODE_DFU;
}

static struct transport_run *serial_stub_start(struct job *job, struct error *err)
{
	stub_refuse(job, "serial", err);
	return NULL;
}

const struct transport_ops serial_transport = {
    .name = "serial",
    .can_serve = serial_stub_can_serve,
    .start = serial_stub_start,
};
#endif

#ifndef FLASHD_HAVE_DFU
static bool dfu_stub_can_serve(const struct device_snapshot *dev)
{
	return dev->mode == DEVICE_MODE_DFU;
}

static struct transport_run *dfu_stub_start(struct job *job, struct error *err)
{
	stub_refuse(job, "dfu", err);
	return NULL;
}

const struct transport_ops dfu_transport = {
    .name = "dfu",
    .can_serve = dfu_stub_can_serve,
    .start = dfu_stub_start,
};
#endif

const struct transport_ops *const *transports_builtin(void)
{
	/* Real transports before stubs, so that a stub never shadows a transport
	 * that can serve the device (DFU also switches CDC devices with 14400 baud). */
#if defined(FLASHD_HAVE_DFU) && !defined(FLASHD_HAVE_SERIAL)
	static const struct transport_ops *const list[] = {
#ifdef FLASHD_HAVE_CTRL
	    &ctrl_transport,
#endif
	    &dfu_transport, &serial_transport, NULL};
#else
	/* ctrl before DFU: a running device known to be on Device OS 6.x is read by
	 * control request (and handed to DFU by the plan), not switched blindly. */
	static const struct transport_ops *const list[] = {&serial_transport,
#ifdef FLASHD_HAVE_CTRL
							   &ctrl_transport,
#endif
							   &dfu_transport, NULL};
#endif
	return list;
}

const struct transport_ops *transport_find(const char *name)
{
	for (const struct transport_ops *const *t = transports_builtin(); *t; t++)
		if (strcmp((*t)->name, name) == 0)
			return *t;
	return NULL;
}

bool transport_is_stub(const struct transport_ops *t)
{
#ifndef FLASHD_HAVE_SERIAL
	if (t == &serial_transport)
		return true;
#endif
#ifndef FLASHD_HAVE_DFU
	if (t == &dfu_transport)
		return true;
#endif
	(void)t;
	return false;
}
