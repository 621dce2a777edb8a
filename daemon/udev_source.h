/* Feeds the registry from udev: a monitor for "usb" and "tty" events, and an
 * enumeration at start (coldplug).  Only Particle USB ids are kept. */
#pragma once

#include "errors.h"
#include "registry.h"

struct event_base;
struct udev_source;

/* Starts monitoring, then enumerates what is attached already.  Without a
 * udev monitor (no netlink) coldplug still works and hot-plug is logged as
 * unavailable. */
struct udev_source *udev_source_new(struct event_base *base, struct registry *reg,
				    struct error *err);
void udev_source_free(struct udev_source *s);
