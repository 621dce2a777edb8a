/*
 * USB descriptors of a simulated device in its current mode (facts §1.2,
 * §1.3, §5.2): the bytes of sysfs `descriptors` and the answers to
 * GET_DESCRIPTOR.
 */
#pragma once

#include "device.h"

/* Device + configuration descriptors as sysfs `descriptors` holds them. */
GByteArray *usbdesc_sysfs(struct sim_device *d);
/* GET_DESCRIPTOR(type, index); NULL = stall. */
GByteArray *usbdesc_get(struct sim_device *d, uint8_t type, uint8_t index);
/* USB product string of the current mode. */
const char *usbdesc_product(struct sim_device *d);
/* Interface number of the CDC comm interface (§1.3). */
int usbdesc_cdc_interface(struct sim_device *d);
uint16_t usbdesc_bcd_device(struct sim_device *d);
