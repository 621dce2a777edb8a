/* flashd-sim --device SPEC parsing (issue 3 "Command line"). */
#pragma once

#include "sim.h"

#include <stdio.h>

#define SIM_SPEC_ERROR_MAX 256

/*
 * Parses "key=value,..." into *spec.  index is the device's position (for
 * the default name d1, d2, ... and port 1-1, 1-2, ...).  Impossible
 * platform/os pairs are refused.  Returns 0, or -1 with a message in err.
 */
int spec_parse(const char *text, unsigned index, struct sim_spec *spec, char *err, size_t err_size);
void spec_clear(struct sim_spec *spec);
/* Faults "kind@where[:arg]+..." (also used by the control socket's `fault`). */
int spec_parse_faults(const char *text, struct sim_spec *spec, char *err, size_t err_size);
/* Device ID derived from the name with the platform's real prefix
 * (docs/device/platforms.md#usb-strings-and-device-ids). */
void spec_default_id(const struct platform *p, const char *name, char id[25]);
/* USB bus number of a port path "1-1.2" (1). */
unsigned spec_port_bus(const char *port);
/* Prints flashd's release table as flashd-sim's os= understands it. */
void spec_list_releases(FILE *out);
