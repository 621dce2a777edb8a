/*
 * Preflight: the images of one job against the live device, before the first
 * byte is sent.  Pure functions over parsed images and device facts (no I/O),
 * shared by the transports: each passes its own rules (which module kinds and
 * formats it can write) and reuses the generic checks (platform, slot, size,
 * CRC, dependencies; docs/device/memory-maps.md, docs/device/validation.md).
 */
#pragma once

#include "device_facts.h"
#include "errors.h"
#include "image.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Files in one job: the one limit of the planner (plan.h) and of these checks
 * (the wire allows fewer, WIRE_IMAGES_MAX; this bounds the arrays). */
#define PREFLIGHT_MAX_IMAGES 16

enum preflight_transport {
	PREFLIGHT_TRANSPORT_SERIAL,
	PREFLIGHT_TRANSPORT_DFU,
	PREFLIGHT_TRANSPORT_CTRL, /* the firmware-update exchange of USB control requests */
};

/* What a transport can write.  preflight_rules_serial() fills the serial ones. */
struct preflight_rules {
	enum preflight_transport transport;
	const char *transport_name; /* "serial", "dfu": detail.transport */
	uint32_t functions;	    /* bit (1 << enum module_function) per writable function */
	bool compressed;	    /* compressed modules (flag 0x02) accepted */
	bool combined;		    /* combined files (flag 0x04) accepted */
	bool encrypted;		    /* encrypted modules (flag 0x08) accepted */
	uint32_t max_file_size;	    /* whole-file limit of the transport (OTA region), 0 = none */
	const char *why_not;	    /* reason shown for refused kinds ("YMODEM ... only") */
	/* The planner (plan.h) ordered the images and checked their dependencies:
	 * keep the given order and leave dependencies out. */
	bool planned;
};

/* One image of the plan, in the order it must be written. */
struct preflight_step {
	const struct image *img;	   /* not owned */
	size_t job_index;		   /* position in the job's submission order */
	const char *name;		   /* file name for messages (not owned) */
	const struct image_module *module; /* first module of the file */
};

struct preflight_plan {
	struct preflight_step steps[PREFLIGHT_MAX_IMAGES];
	size_t n_steps;
};

struct preflight_input {
	const struct image *img;
	const char *name; /* client's basename */
};

/*
 * The one check of a job's files before any other, for the planner and the
 * checks below alike: at most PREFLIGHT_MAX_IMAGES (bad-request), each holding
 * a module (image-not-a-module).  images may be NULL when n is over the limit.
 */
WARN_UNUSED_RESULT int preflight_files_check(const struct preflight_input *images, size_t n,
					     struct error *err);

/*
 * The serial (YMODEM, listening mode) rules for a device: every function that
 * has a slot, including bootloaders and NCP firmware on Device OS <= 5.x;
 * compressed/combined only on Gen 3 / P2 with a bootloader from Device OS
 * 2.0.0 on (see preflight.c for the source); nothing on 6.x.
 */
void preflight_rules_serial(const struct device_facts *dev, struct preflight_rules *rules);
/* What the firmware-update exchange of USB control requests takes (the planner's
 * capability table says on which devices it is chosen). */
void preflight_rules_ctrl(const struct device_facts *dev, struct preflight_rules *rules);

/*
 * Orders the images by their dependencies and checks each against the device
 * (installed modules plus those earlier in the plan).  device_label names the
 * device in hints ("/dev/ttyACM0").  force skips only the host-side
 * compatibility checks (platform, dependencies).  Returns 0 with *plan
 * filled, or -1 with err set (wrong-platform, wrong-slot, image-too-large,
 * image-corrupt, dependency-unmet, not-flashable-here, image-unsupported).
 */
WARN_UNUSED_RESULT int preflight_check(const struct device_facts *dev, const char *device_label,
				       const struct preflight_input *images, size_t n_images,
				       const struct preflight_rules *rules, bool force,
				       struct preflight_plan *plan, struct error *err);

/*
 * Only the dependency ordering: indices into images.  dev (may be NULL) lets
 * installed versions break cycles between slots.  Among images that wait for
 * nothing, bootloaders go first, then radio stack, NCP, system parts, user
 * parts, then submission order.  File names never matter.
 */
WARN_UNUSED_RESULT int preflight_order(const struct device_facts *dev,
				       const struct preflight_input *images, size_t n_images,
				       size_t *order, struct error *err);

/*
 * flashd's own explanation of why the device would reject this image, for a
 * device-rejected report after a --force transfer: "built for Electron; the
 * device is a Photon".  Writes "" and returns false when no check fails.
 * *ret_cause gets the catalogue error the check found (ERR_NONE if none).
 */
bool preflight_diagnose(const struct device_facts *dev, const struct image *img, char *buf,
			size_t size, enum error_code *ret_cause);

/* The installed module with this function and index (main store), or NULL. */
const struct installed_module *preflight_installed(const struct device_facts *dev, uint8_t function,
						   uint8_t index);
