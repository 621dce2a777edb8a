/*
 * A device as clients see it (list-devices, device-info, device events):
 * the registry's snapshot plus the id of the job holding it.  Kept out of
 * registry.c so that the registry does not depend on the job core (jobs.h
 * includes registry.h).
 */
#pragma once

#include "registry.h"

#include <jansson.h>
#include <stdbool.h>

/* {"key","id","platform","platform_id","mode","present","busy","job","tty","usb":{...},
 *  "os","modules"} */
json_t *device_to_json(const struct device *dev, bool with_modules);
