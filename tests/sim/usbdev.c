/*
 * usbfs emulation of a simulated device node (docs/testing/umockdev.md#control-transfers): control
 * URBs are answered from the device model, queued, and reaped by libusb.
 * Runs on umockdev's worker thread: everything under sim->lock.
 *
 * One node per enumeration, as with usbfs: a host that still holds the old
 * node after a reset (dfu-util reaping the GETSTATUS that asked for the
 * leave) reaps the URBs the old device answered, then gets ENODEV; the
 * next enumeration of the device is a new node and never sees them.
 *
 * Readiness: usbfs polls writable when a URB can be reaped (and after a
 * disconnect), so libusb sleeps in poll until a device has answered.  The
 * node is a FIFO whose buffer the simulator keeps full while nothing is
 * reapable and empties when something is (at submit, when a busy device's
 * answer falls due, at a discard or a disconnect).  umockdev's own node, a
 * regular file, always polled ready: every libusb host polled it (flashd on a
 * 1 ms timer, one reap ioctl per open device per tick; dfu-util spinning), so
 * with N devices open the emulation cost N round trips per millisecond and
 * each transfer waited up to a tick.
 */
#include "device.h"
#include "usbdesc.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/usb/ch9.h>
#include <linux/usbdevice_fs.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

struct usbdev_node {
	struct sim_device *d;
	UMockdevIoctlBase *handler;
	GQueue urbs; /* submitted control URBs waiting to be reaped */
	bool gone;   /* unplugged: every ioctl but reaping fails with ENODEV */
	int fifo;    /* our end of the node's FIFO (-1: none); buffer full = nothing to reap */
	bool ready;  /* the FIFO is empty: hosts poll writable */
	GMainContext *worker; /* umockdev's worker context (timers of busy answers) */
	GSource *wake;	      /* when the earliest busy answer falls due */
	uint64_t wake_ms;
};

struct queued_urb {
	UMockdevIoctlData *urb;
	UMockdevIoctlClient *client; /* the opener that submitted it (a reference) */
	uint64_t ready_ms;	     /* G_MAXUINT64: never (fault "silent") */
	int then;		     /* reset into this mode once reaped (ctrlreq), or -1 */
};

static void queued_urb_free(gpointer p)
{
	struct queued_urb *q = p;
	g_object_unref(q->urb);
	g_clear_object(&q->client);
	g_free(q);
}

static void set_ready(struct usbdev_node *n, bool ready)
{
	char buf[4096];
	if (n->fifo < 0 || n->ready == ready)
		return;
	n->ready = ready;
	if (ready)
		while (read(n->fifo, buf, sizeof(buf)) > 0)
			;
	else {
		memset(buf, 0, sizeof(buf));
		while (write(n->fifo, buf, sizeof(buf)) > 0)
			;
	}
}

static gboolean on_wake(gpointer p);

/* Lock held: the FIFO says whether a URB can be reaped now; a busy answer yet to come
 * gets a timer on the worker context. */
static void update_ready(struct usbdev_node *n)
{
	uint64_t now = sim_now_ms(), next = G_MAXUINT64;
	bool ready = n->gone;
	for (GList *l = n->urbs.head; l && !ready; l = l->next) {
		const struct queued_urb *q = l->data;
		if (q->ready_ms <= now)
			ready = true;
		else if (q->ready_ms < next)
			next = q->ready_ms; /* G_MAXUINT64: never (fault "silent") */
	}
	set_ready(n, ready);
	if (ready || next == G_MAXUINT64 || !n->worker || (n->wake && n->wake_ms <= next))
		return;
	if (n->wake) {
		g_source_destroy(n->wake);
		g_source_unref(n->wake);
	}
	n->wake = g_timeout_source_new((guint)(next - now));
	n->wake_ms = next;
	g_source_set_callback(n->wake, on_wake, n, NULL);
	g_source_attach(n->wake, n->worker);
}

static gboolean on_wake(gpointer p)
{
	struct usbdev_node *n = p;
	g_mutex_lock(&n->d->sim->lock);
	if (!g_source_is_destroyed(g_main_current_source())) {
		g_source_unref(n->wake);
		n->wake = NULL;
		update_ready(n);
	}
	g_mutex_unlock(&n->d->sim->lock);
	return G_SOURCE_REMOVE;
}

/*
 * At a disconnect usbfs gives back the URBs the device had not answered yet
 * (busy or silent) with -ESHUTDOWN; answered ones keep their result.  All of
 * them stay reapable (USBDEVFS_CAP_REAP_AFTER_DISCONNECT), then ENODEV.
 */
static void give_back_unanswered(struct usbdev_node *n)
{
	uint64_t now = sim_now_ms();
	for (GList *l = n->urbs.head; l; l = l->next) {
		struct queued_urb *q = l->data;
		if (q->ready_ms <= now)
			continue;
		struct usbdevfs_urb *urb = (struct usbdevfs_urb *)q->urb->data;
		urb->status = -ESHUTDOWN;
		urb->actual_length = 0;
		q->ready_ms = 0;
	}
}

static int standard_request(struct sim_device *d, const struct usb_ctrlrequest *setup, uint8_t *in)
{
	uint16_t value = le16toh(setup->wValue), length = le16toh(setup->wLength);
	if (setup->bRequest == USB_REQ_GET_DESCRIPTOR && (setup->bRequestType & USB_DIR_IN)) {
		GByteArray *desc = usbdesc_get(d, (uint8_t)(value >> 8), (uint8_t)value);
		if (!desc)
			return -1;
		int n = (int)MIN(desc->len, length);
		memcpy(in, desc->data, (size_t)n);
		g_byte_array_unref(desc);
		return n;
	}
	switch (setup->bRequest) {
	case USB_REQ_GET_STATUS:
		memset(in, 0, MIN(length, 2));
		return MIN(length, 2);
	case USB_REQ_GET_CONFIGURATION:
		if (length)
			in[0] = 1;
		return MIN(length, 1);
	case USB_REQ_SET_CONFIGURATION:
	case USB_REQ_SET_INTERFACE:
	case USB_REQ_CLEAR_FEATURE:
	case USB_REQ_SET_FEATURE:
		return 0;
	default:
		return -1;
	}
}

/* One control transfer: reply length, or -1 for a stall. */
static int control(struct sim_device *d, const struct usb_ctrlrequest *setup, const uint8_t *out,
		   uint8_t *in)
{
	d->dfu_requests++;
	switch (setup->bRequestType & USB_TYPE_MASK) {
	case USB_TYPE_STANDARD:
		return standard_request(d, setup, in);
	case USB_TYPE_CLASS:
		if (d->mode != SIM_MODE_DFU)
			return -1;
		return dfu_class_request(d, setup->bRequestType, setup->bRequest,
					 le16toh(setup->wValue), le16toh(setup->wLength), out, in);
	case USB_TYPE_VENDOR:
		return ctrlreq_handle(d, setup, out, in);
	default:
		return -1;
	}
}

static uint64_t ready_time(struct sim_device *d)
{
	if (d->dfu.silent || d->ctrl.silent)
		return G_MAXUINT64;
	uint64_t now = sim_now_ms();
	return d->dfu.busy_until_ms > now ? d->dfu.busy_until_ms : now;
}

static void submit_urb(struct usbdev_node *node, UMockdevIoctlClient *client,
		       UMockdevIoctlData *arg)
{
	struct sim_device *d = node->d;
	g_autoptr(GError) err = NULL;
	UMockdevIoctlData *urb_data =
	    umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_urb), &err);
	if (!urb_data) {
		umockdev_ioctl_client_complete(client, -1, EFAULT);
		return;
	}
	struct usbdevfs_urb *urb = (struct usbdevfs_urb *)urb_data->data;
	if (urb->type != USBDEVFS_URB_TYPE_CONTROL || urb->buffer_length < 8 ||
	    urb->buffer_length > 8 + 65535) {
		g_object_unref(urb_data);
		umockdev_ioctl_client_complete(client, -1, EINVAL);
		return;
	}
	UMockdevIoctlData *buf = umockdev_ioctl_data_resolve(
	    urb_data, offsetof(struct usbdevfs_urb, buffer), (gsize)urb->buffer_length, &err);
	if (!buf) {
		g_object_unref(urb_data);
		umockdev_ioctl_client_complete(client, -1, EFAULT);
		return;
	}
	struct usb_ctrlrequest setup;
	memcpy(&setup, buf->data, sizeof(setup));
	uint16_t length = le16toh(setup.wLength);
	if ((size_t)length + 8 > (size_t)urb->buffer_length)
		length = (uint16_t)(urb->buffer_length - 8);
	uint64_t ready = ready_time(d);
	d->ctrl.then = -1;
	int n = control(d, &setup, buf->data + 8, buf->data + 8);
	urb->status = n < 0 ? -EPIPE : 0;
	urb->actual_length = n < 0 ? 0 : ((setup.bRequestType & USB_DIR_IN) ? n : length);
	g_object_unref(buf);
	struct queued_urb *q = g_new0(struct queued_urb, 1);
	q->urb = urb_data;
	q->client = g_object_ref(client);
	q->ready_ms = ready;
	q->then = n < 0 ? -1 : d->ctrl.then;
	d->ctrl.then = -1;
	g_queue_push_tail(&node->urbs, q);
	if (node->gone) /* an unplug@/reset@ fault fired on this transfer */
		give_back_unanswered(node);
	update_ready(node);
	umockdev_ioctl_client_complete(client, 0, 0);
}

static void reap_urb(struct usbdev_node *n, UMockdevIoctlClient *client, UMockdevIoctlData *arg)
{
	uint64_t now = sim_now_ms();
	for (GList *l = n->urbs.head; l; l = l->next) {
		struct queued_urb *q = l->data;
		if (q->client != client)
			continue; /* usbfs reaps only the opener's own URBs */
		if (q->ready_ms > now)
			break; /* EP0 handles one transfer at a time, in order */
		g_autoptr(GError) err = NULL;
		UMockdevIoctlData *ptr =
		    umockdev_ioctl_data_resolve(arg, 0, sizeof(gpointer), &err);
		if (!ptr) {
			umockdev_ioctl_client_complete(client, -1, EFAULT);
			return;
		}
		umockdev_ioctl_data_set_ptr(ptr, 0, q->urb);
		g_object_unref(ptr);
		g_queue_delete_link(&n->urbs, l);
		struct usbdevfs_urb *urb = (struct usbdevfs_urb *)q->urb->data;
		if (urb->status == 0 && !n->gone)
			ctrlreq_delivered(n->d, q->then);
		queued_urb_free(q);
		update_ready(n);
		umockdev_ioctl_client_complete(client, 0, 0);
		return;
	}
	update_ready(n);
	umockdev_ioctl_client_complete(client, -1, n->gone ? ENODEV : EAGAIN);
}

static void discard_urb(struct usbdev_node *n, UMockdevIoctlClient *client, UMockdevIoctlData *arg)
{
	gulong addr = *(gulong *)arg->data;
	for (GList *l = n->urbs.head; l; l = l->next) {
		struct queued_urb *q = l->data;
		if (q->urb->client_addr == addr) {
			struct usbdevfs_urb *urb = (struct usbdevfs_urb *)q->urb->data;
			urb->status = -ENOENT;
			urb->actual_length = 0;
			q->ready_ms = 0;
			/* Moved to the front: a cancelled transfer is reaped first. */
			g_queue_unlink(&n->urbs, l);
			g_queue_push_head_link(&n->urbs, l);
			update_ready(n);
			umockdev_ioctl_client_complete(client, 0, 0);
			return;
		}
	}
	umockdev_ioctl_client_complete(client, -1, EINVAL);
}

static void sync_control(struct sim_device *d, UMockdevIoctlClient *client, UMockdevIoctlData *arg)
{
	g_autoptr(GError) err = NULL;
	UMockdevIoctlData *ct =
	    umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_ctrltransfer), &err);
	if (!ct) {
		umockdev_ioctl_client_complete(client, -1, EFAULT);
		return;
	}
	struct usbdevfs_ctrltransfer *c = (struct usbdevfs_ctrltransfer *)ct->data;
	struct usb_ctrlrequest setup = {c->bRequestType, c->bRequest, htole16(c->wValue),
					htole16(c->wIndex), htole16(c->wLength)};
	uint8_t empty[1];
	UMockdevIoctlData *data = NULL;
	if (c->wLength)
		data = umockdev_ioctl_data_resolve(ct, offsetof(struct usbdevfs_ctrltransfer, data),
						   c->wLength, &err);
	uint8_t *p = data ? data->data : empty;
	d->ctrl.then = -1;
	int n = control(d, &setup, p, p);
	if (n >= 0)
		ctrlreq_delivered(d, d->ctrl.then);
	d->ctrl.then = -1;
	if (data)
		g_object_unref(data);
	g_object_unref(ct);
	if (n < 0)
		umockdev_ioctl_client_complete(client, -1, EPIPE);
	else
		umockdev_ioctl_client_complete(client,
					       (c->bRequestType & USB_DIR_IN) ? n : c->wLength, 0);
}

static void set_interface(struct sim_device *d, UMockdevIoctlClient *client, UMockdevIoctlData *arg)
{
	g_autoptr(GError) err = NULL;
	UMockdevIoctlData *si =
	    umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_setinterface), &err);
	if (!si) {
		umockdev_ioctl_client_complete(client, -1, EFAULT);
		return;
	}
	struct usbdevfs_setinterface *s = (struct usbdevfs_setinterface *)si->data;
	int rc =
	    d->mode == SIM_MODE_DFU ? dfu_set_alt(d, (int)s->altsetting) : (s->altsetting ? -1 : 0);
	g_object_unref(si);
	d->dfu_requests++;
	umockdev_ioctl_client_complete(client, rc < 0 ? -1 : 0, rc < 0 ? EINVAL : 0);
}

static gboolean on_ioctl(UMockdevIoctlBase *handler, UMockdevIoctlClient *client,
			 gpointer user_data)
{
	(void)handler;
	struct usbdev_node *n = user_data;
	struct sim_device *d = n->d;
	unsigned request = (unsigned)umockdev_ioctl_client_get_request(client);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
	g_mutex_lock(&d->sim->lock);
	if (!n->worker)
		n->worker = g_main_context_ref_thread_default();
	if (n->gone && request != USBDEVFS_REAPURBNDELAY && request != USBDEVFS_REAPURB &&
	    request != USBDEVFS_DISCARDURB && request != USBDEVFS_RELEASEINTERFACE) {
		umockdev_ioctl_client_complete(client, -1, ENODEV);
		goto out;
	}
	switch (request) {
	case USBDEVFS_GET_CAPABILITIES: {
		g_autoptr(GError) err = NULL;
		UMockdevIoctlData *caps =
		    umockdev_ioctl_data_resolve(arg, 0, sizeof(guint32), &err);
		if (caps) {
			*(guint32 *)caps->data = USBDEVFS_CAP_ZERO_PACKET |
						 USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
						 USBDEVFS_CAP_REAP_AFTER_DISCONNECT;
			g_object_unref(caps);
		}
		umockdev_ioctl_client_complete(client, caps ? 0 : -1, caps ? 0 : EFAULT);
		break;
	}
	case USBDEVFS_CLAIMINTERFACE:
	case USBDEVFS_RELEASEINTERFACE:
	case USBDEVFS_CLEAR_HALT:
	case USBDEVFS_RESET:
	case USBDEVFS_RESETEP:
	case USBDEVFS_DISCONNECT_CLAIM:
	case USBDEVFS_SETCONFIGURATION:
		umockdev_ioctl_client_complete(client, 0, 0);
		break;
	case USBDEVFS_SETINTERFACE:
		set_interface(d, client, arg);
		break;
	case USBDEVFS_SUBMITURB:
		submit_urb(n, client, arg);
		break;
	case USBDEVFS_REAPURB:
	case USBDEVFS_REAPURBNDELAY:
		reap_urb(n, client, arg);
		break;
	case USBDEVFS_DISCARDURB:
		discard_urb(n, client, arg);
		break;
	case USBDEVFS_CONTROL:
		sync_control(d, client, arg);
		break;
	case USBDEVFS_GETDRIVER:
	case USBDEVFS_IOCTL:
		umockdev_ioctl_client_complete(client, -1, ENODATA);
		break;
	default:
		umockdev_ioctl_client_complete(client, -1, ENOTTY);
		break;
	}
out:
	g_mutex_unlock(&d->sim->lock);
	return TRUE;
}

/* As usbfs does when an opener closes its fd: its URBs are discarded.  Left
 * queued, they would be handed to the next opener, whose reap would then get a
 * pointer into the dead process (the restarted flashd blocked in its ioctl). */
static void on_client_vanished(UMockdevIoctlBase *handler, UMockdevIoctlClient *client,
			       gpointer user_data)
{
	(void)handler;
	struct usbdev_node *n = user_data;
	g_mutex_lock(&n->d->sim->lock);
	for (GList *l = n->urbs.head; l;) {
		GList *next = l->next;
		struct queued_urb *q = l->data;
		if (q->client == client) {
			g_queue_delete_link(&n->urbs, l);
			queued_urb_free(q);
		}
		l = next;
	}
	update_ready(n);
	g_mutex_unlock(&n->d->sim->lock);
}

struct usbdev_node *usbdev_node_new(struct sim_device *d)
{
	struct usbdev_node *n = g_new0(struct usbdev_node, 1);
	n->d = d;
	n->fifo = -1;
	g_queue_init(&n->urbs);
	n->handler = umockdev_ioctl_base_new();
	g_signal_connect(n->handler, "handle-ioctl", G_CALLBACK(on_ioctl), n);
	g_signal_connect(n->handler, "client-vanished", G_CALLBACK(on_client_vanished), n);
	return n;
}

UMockdevIoctlBase *usbdev_node_handler(struct usbdev_node *n)
{
	return n->handler;
}

int usbdev_node_make_fifo(struct usbdev_node *n, const char *path, GError **error)
{
	gchar *dir = g_path_get_dirname(path);
	int rc = g_mkdir_with_parents(dir, 0755);
	g_free(dir);
	if (rc == 0 && (unlink(path) == 0 || errno == ENOENT) && mkfifo(path, 0666) == 0)
		n->fifo = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (n->fifo < 0) {
		g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno),
			    "cannot make the device node %s: %s", path, g_strerror(errno));
		return -1;
	}
	fcntl(n->fifo, F_SETPIPE_SZ, 4096); /* the smallest buffer: filled with one write */
	n->ready = true;
	set_ready(n, false);
	return 0;
}

void usbdev_node_disconnect(struct usbdev_node *n)
{
	if (!n || n->gone)
		return;
	n->gone = true;
	give_back_unanswered(n);
	/* Ready for good (reaps, then ENODEV); the hosts' own opens keep the FIFO. */
	update_ready(n);
	if (n->fifo >= 0)
		close(n->fifo);
	n->fifo = -1;
	if (n->wake) {
		g_source_destroy(n->wake);
		g_source_unref(n->wake);
		n->wake = NULL;
	}
}

void usbdev_node_free(struct usbdev_node *n)
{
	if (!n)
		return;
	if (n->fifo >= 0)
		close(n->fifo);
	if (n->wake) {
		g_source_destroy(n->wake);
		g_source_unref(n->wake);
	}
	if (n->worker)
		g_main_context_unref(n->worker);
	g_signal_handlers_disconnect_by_data(n->handler, n);
	g_object_unref(n->handler);
	g_queue_clear_full(&n->urbs, queued_urb_free);
	g_free(n);
}
