#include "registry.h"

#include "log.h"
#include "settings.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct registry {
	struct event_base *base;
	struct device *devices;
	size_t n_devices;
	registry_listener listener;
	void *listener_ctx;
};

static const struct timeout_def registry_timeouts[] = {
    {"registry_forget_ms", 10 * 60 * 1000,
     "how long a removed device keeps its identity for when it comes back"},
    {"registry_tty_settle_ms", 2000,
     "a running device whose CDC interface has no tty node this long after it appeared is "
     "taken as having none (control requests only)"},
    {0},
};

const char *registry_change_event(enum registry_change c)
{
	switch (c) {
	case REGISTRY_ADDED:
		return "device-added";
	case REGISTRY_CHANGED:
		return "device-changed";
	case REGISTRY_REMOVED:
		return "device-removed";
	}
	return "?";
}

bool registry_id_plausible(const char *s)
{
	size_t n = 0;
	for (; s && s[n]; n++)
		if (!isxdigit((unsigned char)s[n]))
			return false;
	/* All-zero or all-f ids come from unprogrammed or broken descriptors. */
	return n == DEVICE_ID_LEN && strspn(s, "0") != n && strspn(s, "fF") != n;
}

struct registry *registry_new(struct event_base *base)
{
	struct registry *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->base = base;
	timeouts_register(registry_timeouts);
	return r;
}

static void device_free(struct device *d)
{
	if (!d)
		return;
	if (d->forget_timer)
		event_free(d->forget_timer);
	if (d->tty_timer)
		event_free(d->tty_timer);
	free(d);
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	while (r->devices) {
		struct device *d = r->devices;
		r->devices = d->next;
		device_free(d);
	}
	free(r);
}

void registry_set_listener(struct registry *r, registry_listener fn, void *ctx)
{
	r->listener = fn;
	r->listener_ctx = ctx;
}

static void notify(struct registry *r, struct device *d, enum registry_change c)
{
	log_debug("%s %s (%s, port %s)", registry_change_event(c), d->s.key,
		  device_mode_name(d->s.mode), d->s.port_path);
	if (r->listener)
		r->listener(r->listener_ctx, d, c);
}

bool registry_device_ready(const struct device *d)
{
	return d->s.present && (d->s.mode == DEVICE_MODE_DFU || d->s.tty[0] || d->s.facts.no_tty);
}

struct device *registry_first(struct registry *r)
{
	return r->devices;
}

struct device *registry_find_key(struct registry *r, const char *key)
{
	for (struct device *d = r->devices; d; d = d->next)
		if (strcmp(d->s.key, key) == 0)
			return d;
	return NULL;
}

size_t registry_count_present(struct registry *r)
{
	size_t n = 0;
	for (struct device *d = r->devices; d; d = d->next)
		n += d->s.present;
	return n;
}

static void lower_id(char *dst, size_t size, const char *serial)
{
	size_t i = 0;
	for (; serial[i] && i + 1 < size; i++)
		dst[i] = (char)tolower((unsigned char)serial[i]);
	dst[i] = '\0';
}

static struct device *find_present_by_usb(struct registry *r, const char *usb_syspath)
{
	for (struct device *d = r->devices; d; d = d->next)
		if (d->s.present && strcmp(d->s.syspath, usb_syspath) == 0)
			return d;
	return NULL;
}

/* A ghost this node is the return of: same id (preferring the same port),
 * or, for a device whose id is unknown, the same port. */
static struct device *find_ghost(struct registry *r, const char *id, const char *port)
{
	struct device *by_id = NULL;
	for (struct device *d = r->devices; d; d = d->next) {
		if (d->s.present)
			continue;
		if (id[0] && strcmp(d->s.facts.device_id, id) == 0) {
			if (strcmp(d->s.port_path, port) == 0)
				return d;
			if (!by_id)
				by_id = d;
		}
	}
	if (by_id || id[0])
		return by_id;
	for (struct device *d = r->devices; d; d = d->next)
		if (!d->s.present && !d->s.facts.device_id[0] && strcmp(d->s.port_path, port) == 0)
			return d;
	return NULL;
}

static void make_key(struct registry *r, struct device *d, const char *id, const char *port)
{
	bool collides = false;
	for (struct device *o = r->devices; o; o = o->next)
		if (o != d && id[0] && strcmp(o->s.facts.device_id, id) == 0)
			collides = true;
	if (id[0] && !collides)
		snprintf(d->s.key, sizeof(d->s.key), "%s", id);
	else if (id[0])
		snprintf(d->s.key, sizeof(d->s.key), "%s@%s", id, port);
	else
		snprintf(d->s.key, sizeof(d->s.key), "usb-%s", port);
	/* Keys are unique even in corner cases (the same port reused by an id-less
	 * device while its ghost lives): add a counter. */
	char base[DEVICE_KEY_MAX];
	memcpy(base, d->s.key, sizeof(base));
	for (unsigned n = 2; n < 1000; n++) {
		struct device *o = registry_find_key(r, d->s.key);
		if (!o || o == d)
			break;
		snprintf(d->s.key, sizeof(d->s.key), "%.80s#%u", base, n);
	}
	d->colliding = collides;
}

static void set_usb_node(struct device *d, const struct registry_node *n)
{
	enum platform_usb_mode um = PLATFORM_USB_NONE;
	const struct platform *p = platform_by_usb(n->vid, n->pid, &um);
	snprintf(d->s.syspath, sizeof(d->s.syspath), "%s", n->usb_syspath);
	snprintf(d->s.port_path, sizeof(d->s.port_path), "%s", n->port_path);
	d->s.vid = n->vid;
	d->s.pid = n->pid;
	d->s.busnum = n->busnum;
	d->s.devnum = n->devnum;
	if (!n->is_tty)
		snprintf(d->s.usb_devnode, sizeof(d->s.usb_devnode), "%s", n->devnode);
	snprintf(d->s.usb_serial, sizeof(d->s.usb_serial), "%s", n->serial);
	if (p)
		d->s.facts.platform = p;
	/* A CDC device's mode stays unknown until a job probes it: flashd never
	 * writes to the port of a running application on its own. */
	d->s.mode = um == PLATFORM_USB_DFU ? DEVICE_MODE_DFU : DEVICE_MODE_UNKNOWN;
}

static void set_tty_node(struct device *d, const struct registry_node *n)
{
	if (!n->is_tty)
		return;
	snprintf(d->s.tty, sizeof(d->s.tty), "%s", n->devnode);
	snprintf(d->tty_syspath, sizeof(d->tty_syspath), "%s", n->syspath);
	d->s.facts.no_tty = false;
	if (d->tty_timer)
		evtimer_del(d->tty_timer);
}

static void forget_cb(evutil_socket_t fd, short what, void *arg);

/* No tty came for a running CDC device (no cdc_acm binding, or udev rules hide
 * it): only control requests reach it (device_facts.no_tty; the ctrl transport). */
static void tty_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct device *d = arg;
	if (!d->s.present || d->s.tty[0] || d->s.mode == DEVICE_MODE_DFU || d->s.facts.no_tty)
		return;
	d->s.facts.no_tty = true;
	log_info("device %s has no tty %u ms after it appeared: control requests only", d->s.key,
		 timeout_ms("registry_tty_settle_ms"));
	notify(d->registry, d, REGISTRY_CHANGED);
}

static struct device *device_new(struct registry *r)
{
	if (r->n_devices >= REGISTRY_DEVICES_MAX) {
		/* Make room: drop the oldest ghost without a job. */
		struct device **pp = &r->devices, **victim = NULL;
		for (; *pp; pp = &(*pp)->next)
			if (!(*pp)->s.present && !(*pp)->job)
				victim = pp;
		if (!victim)
			return NULL;
		struct device *v = *victim;
		*victim = v->next;
		device_free(v);
		r->n_devices--;
	}
	struct device *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->registry = r;
	d->forget_timer = evtimer_new(r->base, forget_cb, d);
	d->tty_timer = evtimer_new(r->base, tty_cb, d);
	if (!d->forget_timer ||
	    !d->tty_timer) { /* out of memory: the device is not tracked (callers log it) */
		device_free(d);
		return NULL;
	}
	/* Append: list order is arrival order, which clients show. */
	struct device **pp = &r->devices;
	while (*pp)
		pp = &(*pp)->next;
	*pp = d;
	r->n_devices++;
	return d;
}

static void forget_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct device *d = arg;
	struct registry *r = d->registry;
	if (d->s.present || d->job)
		return;
	for (struct device **pp = &r->devices; *pp; pp = &(*pp)->next) {
		if (*pp == d) {
			*pp = d->next;
			r->n_devices--;
			log_debug("forgetting device %s", d->s.key);
			device_free(d);
			return;
		}
	}
}

void registry_node_added(struct registry *r, const struct registry_node *n)
{
	char id[DEVICE_ID_LEN + 8] = "";
	if (registry_id_plausible(n->serial))
		lower_id(id, sizeof(id), n->serial);
	struct device *d = find_present_by_usb(r, n->usb_syspath);
	if (d) {
		/* Another node of a device we have (its tty, or a repeated add). */
		bool changed = n->is_tty ? strcmp(d->s.tty, n->devnode) != 0
					 : strcmp(d->s.usb_devnode, n->devnode) != 0;
		if (!n->is_tty)
			snprintf(d->s.usb_devnode, sizeof(d->s.usb_devnode), "%s", n->devnode);
		set_tty_node(d, n);
		if (changed)
			notify(r, d, REGISTRY_CHANGED);
		return;
	}
	d = find_ghost(r, id, n->port_path);
	bool back = d != NULL;
	if (!d && !(d = device_new(r))) {
		log_warning("device table full (%d) or out of memory: ignoring %s",
			    REGISTRY_DEVICES_MAX, n->syspath);
		return;
	}
	if (d->forget_timer)
		evtimer_del(d->forget_timer);
	memset(d->s.tty, 0, sizeof(d->s.tty));
	memset(d->s.usb_devnode, 0, sizeof(d->s.usb_devnode));
	d->tty_syspath[0] = '\0';
	set_usb_node(d, n);
	set_tty_node(d, n);
	if (id[0])
		snprintf(d->s.facts.device_id, sizeof(d->s.facts.device_id), "%s", id);
	if (!back)
		make_key(r, d, id, n->port_path);
	d->s.present = true;
	d->generation++;
	if (d->s.mode != DEVICE_MODE_DFU && !d->s.tty[0] && d->tty_timer) {
		struct timeval tv = {timeout_ms("registry_tty_settle_ms") / 1000,
				     (timeout_ms("registry_tty_settle_ms") % 1000) * 1000};
		evtimer_add(d->tty_timer, &tv);
	}
	notify(r, d, REGISTRY_ADDED);
}

void registry_node_removed(struct registry *r, const char *syspath)
{
	for (struct device *d = r->devices; d; d = d->next) {
		if (!d->s.present)
			continue;
		if (d->tty_syspath[0] && strcmp(d->tty_syspath, syspath) == 0) {
			d->s.tty[0] = '\0';
			d->tty_syspath[0] = '\0';
			notify(r, d, REGISTRY_CHANGED);
			return;
		}
		if (strcmp(d->s.syspath, syspath) == 0) {
			d->s.present = false;
			d->s.tty[0] = '\0';
			d->tty_syspath[0] = '\0';
			d->s.usb_devnode[0] = '\0';
			/* What the device was doing is no longer known once it left. */
			d->s.facts.modules_known = false;
			d->s.facts.assets_known = false;
			struct timeval tv = {timeout_ms("registry_forget_ms") / 1000,
					     (timeout_ms("registry_forget_ms") % 1000) * 1000};
			evtimer_add(d->forget_timer, &tv);
			notify(r, d, REGISTRY_REMOVED);
			return;
		}
	}
}

void registry_update_facts(struct registry *r, struct device *dev, const struct device_facts *f)
{
	struct device_facts *df = &dev->s.facts;
	if (f->platform)
		df->platform = f->platform;
	if (f->device_id[0] && !df->device_id[0])
		snprintf(df->device_id, sizeof(df->device_id), "%s", f->device_id);
	if (f->os_version[0])
		snprintf(df->os_version, sizeof(df->os_version), "%s", f->os_version);
	if (f->system_version)
		df->system_version = f->system_version;
	if (f->modules_known || f->n_modules) {
		df->n_modules = f->n_modules <= DEVICE_FACTS_MAX_MODULES ? f->n_modules
									 : DEVICE_FACTS_MAX_MODULES;
		memcpy(df->modules, f->modules, df->n_modules * sizeof(df->modules[0]));
		df->modules_known = f->modules_known;
	}
	if (f->protection != DEVICE_PROTECTION_UNKNOWN)
		df->protection = f->protection;
	if (f->no_tty && !dev->s.tty[0])
		df->no_tty = true;
	if (f->assets_known) {
		df->n_assets =
		    f->n_assets <= DEVICE_FACTS_MAX_ASSETS ? f->n_assets : DEVICE_FACTS_MAX_ASSETS;
		memcpy(df->assets, f->assets, df->n_assets * sizeof(df->assets[0]));
		df->assets_known = true;
	}
	notify(r, dev, REGISTRY_CHANGED);
}

void registry_set_mode(struct registry *r, struct device *dev, enum device_mode mode)
{
	if (dev->s.mode == mode)
		return;
	dev->s.mode = mode;
	notify(r, dev, REGISTRY_CHANGED);
}

void registry_set_job(struct registry *r, struct device *dev, struct job *job)
{
	dev->job = job;
	if (!job && !dev->s.present) {
		struct timeval tv = {timeout_ms("registry_forget_ms") / 1000,
				     (timeout_ms("registry_forget_ms") % 1000) * 1000};
		evtimer_add(dev->forget_timer, &tv);
	}
	notify(r, dev, REGISTRY_CHANGED);
}
