#include "usb.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct usb_dfu_dev {
	struct usb_loop *loop;
	libusb_device_handle *handle;
	uint8_t interface;
	struct libusb_transfer *xfer;
	uint8_t buf[LIBUSB_CONTROL_SETUP_SIZE + DFUSE_MAX_TRANSFER];
	bool busy;    /* a transfer is in flight */
	bool closing; /* close requested while busy */
	bool claimed;
	struct dfuse *dfuse;
};

/* ---- one DFU device ----------------------------------------------------------------- */

static void close_now(struct usb_dfu_dev *d)
{
	if (d->claimed)
		libusb_release_interface(d->handle, d->interface);
	if (d->handle)
		libusb_close(d->handle);
	libusb_free_transfer(d->xfer);
	free(d);
}

static int transfer_status(enum libusb_transfer_status st)
{
	switch (st) {
	case LIBUSB_TRANSFER_COMPLETED:
		return 0;
	case LIBUSB_TRANSFER_STALL:
		return LIBUSB_ERROR_PIPE;
	case LIBUSB_TRANSFER_NO_DEVICE:
		return LIBUSB_ERROR_NO_DEVICE;
	case LIBUSB_TRANSFER_TIMED_OUT:
		return LIBUSB_ERROR_TIMEOUT;
	case LIBUSB_TRANSFER_OVERFLOW:
		return LIBUSB_ERROR_OVERFLOW;
	case LIBUSB_TRANSFER_CANCELLED:
		return LIBUSB_ERROR_INTERRUPTED;
	case LIBUSB_TRANSFER_ERROR:
	default:
		return LIBUSB_ERROR_IO;
	}
}

static void LIBUSB_CALL on_transfer(struct libusb_transfer *xfer)
{
	struct usb_dfu_dev *d = xfer->user_data;
	d->busy = false;
	usb_loop_in_flight(d->loop, -1);
	if (d->closing) {
		close_now(d);
		return;
	}
	if (!d->dfuse)
		return;
	int st = transfer_status(xfer->status);
	dfuse_transfer_done(d->dfuse, st, libusb_control_transfer_get_data(xfer),
			    st == 0 ? (size_t)xfer->actual_length : 0);
}

static int usb_control(void *ctx, const struct dfu_setup *s, const uint8_t *out,
		       unsigned timeout_ms)
{
	struct usb_dfu_dev *d = ctx;
	if (d->busy)
		return LIBUSB_ERROR_BUSY;
	if (s->length > DFUSE_MAX_TRANSFER)
		return LIBUSB_ERROR_INVALID_PARAM;
	libusb_fill_control_setup(d->buf, s->request_type, s->request, s->value, s->index,
				  s->length);
	if (!(s->request_type & LIBUSB_ENDPOINT_IN) && s->length && out)
		memcpy(d->buf + LIBUSB_CONTROL_SETUP_SIZE, out, s->length);
	libusb_fill_control_transfer(d->xfer, d->handle, d->buf, on_transfer, d, timeout_ms);
	int r = libusb_submit_transfer(d->xfer);
	if (r < 0)
		return r;
	d->busy = true;
	usb_loop_in_flight(d->loop, +1);
	return 0;
}

static int read_descriptors(libusb_device *dev, struct dfu_descriptors *desc, uint8_t *interface,
			    struct error *err)
{
	struct libusb_device_descriptor dd;
	struct libusb_config_descriptor *cfg = NULL;
	memset(desc, 0, sizeof(*desc));
	/* Both are served from libusb's enumeration-time copy: no bus traffic. */
	int r = libusb_get_device_descriptor(dev, &dd);
	if (r == 0)
		r = libusb_get_config_descriptor(dev, 0, &cfg);
	if (r < 0)
		return dfu_usb_error_set(err, r, "reading descriptors");
	desc->vid = dd.idVendor;
	desc->pid = dd.idProduct;
	desc->bcd_device = dd.bcdDevice;
	desc->i_serial = dd.iSerialNumber;
	bool found = false;
	for (int i = 0; i < cfg->bNumInterfaces && !found; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];
		for (int a = 0; a < itf->num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &itf->altsetting[a];
			if (alt->bInterfaceClass != 0xfe || alt->bInterfaceSubClass != 0x01)
				continue;
			found = true;
			*interface = alt->bInterfaceNumber;
			if (desc->n_alts < DFUSE_MAX_ALTS &&
			    alt->bAlternateSetting < DFUSE_MAX_ALTS) {
				desc->alt_string[alt->bAlternateSetting] = alt->iInterface;
				if (alt->bAlternateSetting + 1 > desc->n_alts)
					desc->n_alts = (uint8_t)(alt->bAlternateSetting + 1);
			}
			if (!desc->has_functional && alt->extra)
				dfu_descriptors_parse_functional(desc, alt->extra,
								 (size_t)alt->extra_length);
		}
	}
	/* Some devices put the functional descriptor after the interfaces. */
	if (!desc->has_functional && cfg->extra)
		dfu_descriptors_parse_functional(desc, cfg->extra, (size_t)cfg->extra_length);
	libusb_free_config_descriptor(cfg);
	desc->interface = *interface;
	if (!found) {
		error_set(err, ERR_DFU_DESCRIPTOR_INVALID, "the device has no DFU interface");
		error_detail_str(err, "reason", "no interface of class FE/01");
		return -1;
	}
	return 0;
}

int usb_dfu_open(struct usb_loop *l, unsigned busnum, unsigned devnum, const char *devnode,
		 struct usb_dfu_dev **ret, struct dfu_descriptors *desc, struct error *err)
{
	*ret = NULL;
	libusb_device *dev = usb_loop_find(l, busnum, devnum);
	if (!dev) {
		error_set(err, ERR_DEVICE_GONE,
			  "the DFU device %s is not (or no longer) on the bus",
			  devnode ? devnode : "");
		error_detail_str(err, "phase", "open");
		return -1;
	}
	struct usb_dfu_dev *d = calloc(1, sizeof(*d));
	uint8_t interface = 0;
	int r = d ? read_descriptors(dev, desc, &interface, err) : -1;
	if (!d)
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
	if (r == 0) {
		d->loop = l;
		d->interface = interface;
		d->xfer = libusb_alloc_transfer(0);
		r = libusb_open(dev, &d->handle);
		if (r < 0) {
			dfu_usb_error_set(err, r, "opening the DFU device");
			if (r == LIBUSB_ERROR_ACCESS) {
				error_detail_str(err, "path", devnode ? devnode : "");
				error_detail_int(err, "errno", EACCES);
			}
			r = -1;
		}
	}
	if (r == 0) {
		r = libusb_claim_interface(d->handle, interface);
		if (r < 0) {
			dfu_usb_error_set(err, r, "claiming the DFU interface");
			r = -1;
		} else {
			d->claimed = true;
		}
	}
	libusb_unref_device(dev);
	if (r < 0) {
		if (d)
			close_now(d);
		return -1;
	}
	*ret = d;
	return 0;
}

struct dfu_io usb_dfu_io(struct usb_dfu_dev *d)
{
	return (struct dfu_io){usb_control, d};
}

void usb_dfu_attach(struct usb_dfu_dev *d, struct dfuse *s)
{
	d->dfuse = s;
}

void usb_dfu_close(struct usb_dfu_dev *d)
{
	if (!d)
		return;
	d->dfuse = NULL;
	if (d->busy) {
		/* The callback (CANCELLED, or NO_DEVICE when it is gone) finishes the close. */
		d->closing = true;
		if (libusb_cancel_transfer(d->xfer) == 0)
			return;
		/* Not cancellable (the device is gone and usbfs has forgotten the URB): no
		 * callback will come.  libusb_close() drops the transfer from its in-flight
		 * list, after which it may be freed. */
		d->busy = false;
		usb_loop_in_flight(d->loop, -1);
	}
	close_now(d);
}
