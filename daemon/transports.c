/*
 * The built-in transport table.  Every transport is always built: the serial
 * transport resets devices through the core's mode switches, which leave DFU
 * mode with the DFU library (mode_switch.c), so no build has one without the
 * other.  The core asks them in this order.
 */
#include "transports.h"

#include <stdio.h>
#include <string.h>

const struct transport_ops *const *transports_builtin(void)
{
	/* serial first: it serves CDC devices on Device OS <= 5.x; ctrl before DFU: a
	 * running device known to be on Device OS 6.x is read by control request (and
	 * handed to DFU by the plan), not switched blindly; DFU serves DFU-mode devices
	 * and the CDC devices the others decline (it switches them with 14400 baud). */
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
