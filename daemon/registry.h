/*
 * The device registry: which Particle devices are attached, under which
 * identity, in which mode.  Fed by udev (udev_source.c) through
 * registry_node_added() / registry_node_removed(); pure logic otherwise, so
 * the identity rules are unit-tested without udev.
 *
 * Identity (issue 5):
 *   - The device id (USB iSerial, 24 hex digits) is the identity when it is
 *     plausibly unique: a device re-appearing with that id (mode switch, DFU
 *     leave, replug into another port) is the same device, same key.
 *   - When two attached devices report the same id, they stay two devices:
 *     the second one's key adds its USB port path ("<id>@1-1.3").
 *   - A device without a plausible id is known by its port path
 *     ("usb-1-1.2") until it tells us its id.
 *   - A removed device is kept as a ghost for registry_forget_ms so that it
 *     keeps its key when it comes back; ghosts holding a job are never
 *     forgotten.
 */
#pragma once

#include "transport.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define REGISTRY_DEVICES_MAX 256 /* devices + ghosts */

struct event_base;
struct registry;
struct job;

/* One udev node of interest: a Particle usb_device, or a tty below one. */
struct registry_node {
	bool is_tty;
	char syspath[DEVICE_PATH_MAX];	   /* this node */
	char devnode[DEVICE_PATH_MAX];	   /* /dev/ttyACM0 or /dev/bus/usb/001/002 */
	char usb_syspath[DEVICE_PATH_MAX]; /* the usb_device (== syspath for usb nodes) */
	char port_path[DEVICE_PORT_PATH_MAX];
	uint16_t vid, pid;
	unsigned busnum, devnum;
	char serial[DEVICE_ID_LEN + 8];
};

struct device {
	struct device *next;
	struct registry *registry;
	struct device_snapshot s; /* key, presence, nodes, facts */
	char tty_syspath[DEVICE_PATH_MAX];
	struct job *job; /* the job holding it, or NULL */
	struct event *forget_timer;
	struct event *tty_timer;  /* a running CDC device's tty not there yet (facts.no_tty) */
	bool colliding;		  /* another device reported the same id */
	unsigned long generation; /* bumps on every re-appearance */
};

enum registry_change {
	REGISTRY_ADDED,	  /* new device, or a ghost came back (same key) */
	REGISTRY_CHANGED, /* nodes, mode or facts changed */
	REGISTRY_REMOVED, /* gone (now a ghost) */
};
const char *registry_change_event(enum registry_change c); /* "device-added", ... */

typedef void (*registry_listener)(void *ctx, struct device *dev, enum registry_change change);

struct registry *registry_new(struct event_base *base);
void registry_free(struct registry *r);
void registry_set_listener(struct registry *r, registry_listener fn, void *ctx);

void registry_node_added(struct registry *r, const struct registry_node *n);
void registry_node_removed(struct registry *r, const char *syspath);
/* A transport learnt something (through its job). */
void registry_update_facts(struct registry *r, struct device *dev, const struct device_facts *f);
void registry_set_mode(struct registry *r, struct device *dev, enum device_mode mode);
/* The job holding the device changed (NULL = idle); emits device-changed. */
void registry_set_job(struct registry *r, struct device *dev, struct job *job);

/*
 * Whether a job may take the device now: present, and either in DFU mode or
 * with its tty.  The kernel announces a CDC device's usb_device before cdc-acm
 * has bound its interfaces and made the tty, and the mode of a CDC device is
 * unknown until a job asks its console: without the tty no transport can work
 * on it, so it is listed at once but offered to jobs only when the tty is there.
 */
bool registry_device_ready(const struct device *d);

struct device *registry_first(struct registry *r); /* then dev->next; includes ghosts */
struct device *registry_find_key(struct registry *r, const char *key);
size_t registry_count_present(struct registry *r);

/* Plausible Particle device id: 24 hex digits (case-insensitive). */
bool registry_id_plausible(const char *s);

/* A device as JSON for clients: device_json.h. */
