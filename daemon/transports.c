/*
 * The built-in transport table.  Every transport is always built: the core's
 * mode switches leave DFU mode with the DFU library (mode_switch.c), so no
 * build has the serial transport without it.  The core asks them in this order.
 */
#include "transports.h"

#include <stdio.h>
#include <string.h>

const struct transport_ops *const *transports_builtin(void)
{
	/* The order the core asks them to READ a device (job_steps.c): serial first
	 * (the console of Device OS <= 5.x); ctrl next (a running device on 6.x, or one
	 * whose console was silent, is read by control request, not switched blindly);
	 * DFU reads devices in DFU mode.  A flash job whose device answers none is
	 * switched to DFU mode by the core and read there. */
	static const struct transport_ops *const list[] = {&serial_transport, &ctrl_transport,
							   &dfu_transport, NULL};
	return list;
}

const struct transport_ops *transport_find(const char *name)
{
	for (const struct transport_ops *const *t = transports_builtin(); *t; t++)
		if (strcmp((*t)->name, name) == 0)
			return *t;
	return NULL;
}
