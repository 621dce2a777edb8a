/*
 * USB descriptors of a simulated device in its current mode
 * (docs/device/platforms.md#usb-strings-and-device-ids,
 * docs/device/platforms.md#runtime-interface-layout, docs/device/dfuse.md#descriptors): the bytes
 * of sysfs `descriptors` and the answers to
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
/* Interface number of the CDC comm interface
 * (docs/device/platforms.md#runtime-interface-layout). */
int usbdesc_cdc_interface(struct sim_device *d);
uint16_t usbdesc_bcd_device(struct sim_device *d);
