/*
 * A running application ("normal" mode): there is no console
 * (docs/device/console.md#entering-and-leaving), the
 * application reads whatever the host writes and throws it away.  The
 * `stray` fault gives it a voice: a line of its own output that lands
 * on the port just before the console's next answer (a threaded
 * application printing while the device is in listening mode), or in
 * normal mode when the host writes to it.
 */
#include "listening_internal.h"

#include <string.h>

#define APP_STRAY_DEFAULT "[app] sensor=42 uptime=17s\r\n"

void app_stray_output(struct listening *l)
{
	struct fault_slot *fs = listening_fault_pending(l, LISTENING_FAULT_STRAY_OUTPUT);
	if (!fs)
		return;
	fs->fired = true;
	char buf[LISTENING_FAULT_ARG_MAX + 1];
	listening_print(l, listening_fault_text(fs, APP_STRAY_DEFAULT, buf, sizeof(buf)));
}

void app_input(struct listening *l, const uint8_t *buf, size_t len)
{
	(void)buf;
	l->app_discarded += len;
	if (len)
		app_stray_output(l);
}
