#include "usbdesc.h"

#include "osver.h"

#include <string.h>

/* String indices (docs/device/dfuse.md#descriptors): 1 manufacturer, 2 product, 3 serial, 4
 * configuration, 5 interface. */
enum { STR_MANUFACTURER = 1, STR_PRODUCT, STR_SERIAL, STR_CONFIG, STR_INTERFACE };
enum { STR_CDC_SERIAL = 4, STR_CDC_CONTROL = 5 };

static void add(GByteArray *a, const uint8_t *b, size_t n)
{
	g_byte_array_append(a, b, (guint)n);
}

uint16_t usbdesc_bcd_device(struct sim_device *d)
{
	switch (d->spec.platform->mcu) {
	case MCU_STM32F205:
		return 0x0250;
	default:
		/* Gen 3 (docs/device/dfuse.md#descriptors); P2 not read, assumed the same */
		return 0x0251;
	}
}

const char *usbdesc_product(struct sim_device *d)
{
	return d->mode == SIM_MODE_DFU ? d->spec.platform->dfu_product
				       : d->spec.platform->cdc_product;
}

int usbdesc_cdc_interface(struct sim_device *d)
{
	return d->spec.platform->mcu == MCU_RTL8721D ? 1 : 0;
}

/* iInterface of DFU alt n: Gen 2/Gen 3 5 + alt + 1, P2 family 5 + alt
 * (docs/device/dfuse.md#descriptors). */
static uint8_t alt_string_index(struct sim_device *d, int alt)
{
	return (uint8_t)(d->spec.platform->mcu == MCU_RTL8721D ? 5 + alt : 6 + alt);
}

static void device_descriptor(struct sim_device *d, GByteArray *a)
{
	const struct platform *p = d->spec.platform;
	uint16_t pid = d->mode == SIM_MODE_DFU ? p->dfu_pid : p->cdc_pid;
	uint16_t bcd = d->mode == SIM_MODE_DFU ? usbdesc_bcd_device(d) : 0x0200;
	/* DFU: class 0 (docs/device/dfuse.md#descriptors); runtime: composite with IAD (EF/02/01,
	 * docs/device/platforms.md#runtime-interface-layout). */
	uint8_t cls = d->mode == SIM_MODE_DFU ? 0 : 0xef, sub = d->mode == SIM_MODE_DFU ? 0 : 2,
		proto = d->mode == SIM_MODE_DFU ? 0 : 1;
	/* Multi-byte fields little-endian (docs/testing/umockdev.md#usb-devices). */
	uint8_t b[18] = {18,
			 1,
			 0x00,
			 0x02,
			 cls,
			 sub,
			 proto,
			 64,
			 (uint8_t)p->vid,
			 (uint8_t)(p->vid >> 8),
			 (uint8_t)pid,
			 (uint8_t)(pid >> 8),
			 (uint8_t)bcd,
			 (uint8_t)(bcd >> 8),
			 STR_MANUFACTURER,
			 STR_PRODUCT,
			 STR_SERIAL,
			 1};
	add(a, b, sizeof(b));
}

static void dfu_config(struct sim_device *d, GByteArray *a)
{
	unsigned alts = d->flash->n_regions;
	uint16_t total = (uint16_t)(9 + 9 * alts + 9);
	uint8_t cfg[9] = {9,	2,   (uint8_t)total, (uint8_t)(total >> 8), 1, 1, STR_CONFIG,
			  0xc0, 0x32};
	add(a, cfg, 9);
	for (unsigned i = 0; i < alts; i++) {
		uint8_t intf[9] = {
		    9, 4, 0, (uint8_t)i, 0, 0xfe, 0x01, 0x02, alt_string_index(d, (int)i)};
		add(a, intf, 9);
	}
	/* bmAttributes 0x0B, wDetachTimeOut 255, wTransferSize 4096, bcdDFUVersion 0x011A. */
	uint8_t func[9] = {9, 0x21, 0x0b, 0xff, 0x00, 0x00, 0x10, 0x1a, 0x01};
	add(a, func, 9);
}

static void cdc_interfaces(GByteArray *a, uint8_t comm, uint8_t ep_base)
{
	uint8_t iad[8] = {8, 0x0b, comm, 2, 0x02, 0x02, 0x01, 0};
	/* bInterfaceProtocol 1 (AT commands V.250), as every Particle CDC
	 * (docs/device/platforms.md#runtime-interface-layout). */
	uint8_t ci[9] = {9, 4, comm, 0, 1, 0x02, 0x02, 0x01, STR_CDC_SERIAL};
	uint8_t hdr[5] = {5, 0x24, 0x00, 0x10, 0x01};
	uint8_t cm[5] = {5, 0x24, 0x01, 0x00, (uint8_t)(comm + 1)};
	uint8_t acm[4] = {4, 0x24, 0x02, 0x02};
	uint8_t un[5] = {5, 0x24, 0x06, comm, (uint8_t)(comm + 1)};
	uint8_t ep_int[7] = {7, 5, (uint8_t)(0x80 | (ep_base + 1)), 0x03, 8, 0, 0xff};
	uint8_t di[9] = {9, 4, (uint8_t)(comm + 1), 0, 2, 0x0a, 0x00, 0x00, 0};
	uint8_t ep_out[7] = {7, 5, ep_base, 0x02, 64, 0, 0};
	uint8_t ep_in[7] = {7, 5, (uint8_t)(0x80 | ep_base), 0x02, 64, 0, 0};
	add(a, iad, 8);
	add(a, ci, 9);
	add(a, hdr, 5);
	add(a, cm, 5);
	add(a, acm, 4);
	add(a, un, 5);
	add(a, ep_int, 7);
	add(a, di, 9);
	add(a, ep_out, 7);
	add(a, ep_in, 7);
}

static void control_interface(GByteArray *a, uint8_t number)
{
	uint8_t vi[9] = {9, 4, number, 0, 0, 0xff, 0xff, 0xff, STR_CDC_CONTROL};
	add(a, vi, 9);
}

static void cdc_config(struct sim_device *d, GByteArray *a)
{
	GByteArray *body = g_byte_array_new();
	if (usbdesc_cdc_interface(d) == 1) {
		/* P2 family: control interface first, then CDC
		 * (docs/device/platforms.md#runtime-interface-layout, INFERRED). */
		control_interface(body, 0);
		cdc_interfaces(body, 1, 1);
	} else {
		cdc_interfaces(body, 0, 1);
		control_interface(body, 2);
	}
	uint16_t total = (uint16_t)(9 + body->len);
	uint8_t cfg[9] = {9, 2, (uint8_t)total, (uint8_t)(total >> 8), 3, 1, 0, 0xc0, 0x32};
	add(a, cfg, 9);
	add(a, body->data, body->len);
	g_byte_array_unref(body);
}

static GByteArray *config_descriptor(struct sim_device *d)
{
	GByteArray *a = g_byte_array_new();
	if (d->mode == SIM_MODE_DFU)
		dfu_config(d, a);
	else
		cdc_config(d, a);
	return a;
}

GByteArray *usbdesc_sysfs(struct sim_device *d)
{
	GByteArray *a = g_byte_array_new();
	device_descriptor(d, a);
	GByteArray *c = config_descriptor(d);
	add(a, c->data, c->len);
	g_byte_array_unref(c);
	return a;
}

static GByteArray *string_descriptor(const char *s)
{
	GByteArray *a = g_byte_array_new();
	size_t n = strlen(s);
	if (n > 126)
		n = 126;
	uint8_t hdr[2] = {(uint8_t)(2 + 2 * n), 3};
	add(a, hdr, 2);
	for (size_t i = 0; i < n; i++) {
		uint8_t ch[2] = {(uint8_t)s[i], 0};
		add(a, ch, 2);
	}
	return a;
}

static char *string_text(struct sim_device *d, uint8_t index)
{
	const char *serial = d->spec.serial[0] ? d->spec.serial : d->spec.id;
	switch (index) {
	case STR_MANUFACTURER:
		return g_strdup("Particle");
	case STR_PRODUCT:
		return g_strdup(usbdesc_product(d));
	case STR_SERIAL:
		return g_strdup(serial);
	default:
		break;
	}
	if (d->mode == SIM_MODE_DFU)
		return dfu_string(d, index);
	const char *name = d->spec.platform->cdc_product;
	/* "<Name> Serial" (Gen 2/3), "<product> USB Serial" (P2), "<Name> Control Interface". */
	gchar *base = g_strdup(name);
	char *mode = strstr(base, " CDC Mode");
	if (mode)
		*mode = '\0';
	char *r = NULL;
	if (index == STR_CDC_SERIAL)
		r = g_strdup_printf("%s %sSerial", base,
				    d->spec.platform->mcu == MCU_RTL8721D ? "USB " : "");
	else if (index == STR_CDC_CONTROL)
		r = g_strdup_printf("%s Control Interface", base);
	g_free(base);
	return r;
}

GByteArray *usbdesc_get(struct sim_device *d, uint8_t type, uint8_t index)
{
	switch (type) {
	case 1: {
		GByteArray *a = g_byte_array_new();
		device_descriptor(d, a);
		return a;
	}
	case 2:
		return index == 0 ? config_descriptor(d) : NULL;
	case 3: {
		if (index == 0) {
			GByteArray *a = g_byte_array_new();
			static const uint8_t langs[4] = {4, 3, 0x09, 0x04};
			add(a, langs, 4);
			return a;
		}
		char *s = string_text(d, index);
		if (!s)
			return NULL;
		GByteArray *a = string_descriptor(s);
		g_free(s);
		return a;
	}
	/* DFU functional descriptor: the Gen 3 bootloader answers it
	 * (docs/device/dfuse.md#dfu-util-sequence) */
	case 0x21:
		if (d->mode == SIM_MODE_DFU) {
			GByteArray *a = g_byte_array_new();
			static const uint8_t func[9] = {9,    0x21, 0x0b, 0xff, 0x00,
							0x00, 0x10, 0x1a, 0x01};
			add(a, func, 9);
			return a;
		}
		return NULL;
	default:
		return NULL;
	}
}
