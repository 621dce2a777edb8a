/*
 * Auto-flash rules (issue 15): a match (platform, USB port path, device id
 * glob, mode, installed Device OS) and a target (images), with options (once
 * per device, skip when already installed, concurrency, priority) and, from
 * root-owned rule files only, hooks.
 *
 * Two sources:
 *   - rules added over the socket (`auto-add`): their images arrive as file
 *     descriptors and are copied into STATE_DIR/auto/images/<sha256>; the rules
 *     are kept in STATE_DIR/auto/rules.json.  They never carry hooks.
 *   - rule files RULES_DIR/<name>.conf (flashd(8), RULE FILES; [auto] rules_dir,
 *     default /etc/flashd/rules.d), naming image files the daemon reads; read
 *     at start, on SIGHUP and on an `auto-reload` request.
 * The set of devices each rule has flashed (the done-set, for "once") is kept
 * in STATE_DIR/auto/done.json, with the devices flashed since appended to
 * done.log (compacted into done.json at start).  Every other file is replaced
 * atomically (write to a temporary file, rename), so a daemon killed at any
 * moment leaves the old or the new version.
 *
 * Rule changes are rare and the files small: they are written from the loop.
 */
#pragma once

#include "errors.h"
#include "image_cache.h"
#include "jobs.h"
#include "registry.h"
#include "wire.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#define RULES_MAX	       256 /* rules in all, both sources */
#define RULE_ID_MAX	       JOB_RULE_MAX
#define RULE_ARGV_MAX	       32
#define RULE_GLOB_MAX	       64
#define RULE_DONE_MAX	       100000 /* devices remembered per rule */
#define RULES_FILE_MAX	       (64u * 1024)
#define RULES_FILES_MAX	       256 /* *.conf files read from the rules directory */
#define RULE_HOOK_TIMEOUT_S    30
#define RULE_HOOK_TIMEOUT_MAXS 3600
#define RULES_LABELS_MAX       256

/* [auto] in the config file (settings.c). */
struct auto_config {
	char rules_dir[PATH_MAX];		    /* default /etc/flashd/rules.d */
	unsigned max_rules_per_uid;		    /* socket rules one uid may own */
	unsigned long long max_image_bytes_per_uid; /* image bytes its rules store */
};
void auto_config_defaults(struct auto_config *c);

struct rule_image {
	char name[WIRE_NAME_MAX]; /* basename, for messages and the history */
	char path[PATH_MAX];	  /* the stored copy, or the rule file's image path */
	struct image_ref *ref;	  /* loaded, shared with the jobs */
};

enum rule_match {
	RULE_NO,
	RULE_YES,
	RULE_NEED_FACTS, /* the device must be probed before it can be decided */
};

struct rule {
	struct rule *next;
	char id[RULE_ID_MAX];
	bool from_file;
	char file[PATH_MAX]; /* the rule file, "" for socket rules */
	uid_t owner;
	bool paused;
	double created;

	/* match ("" / NULL / -1 = any) */
	const struct platform *platform;
	char port[DEVICE_PORT_PATH_MAX];
	char label[JOB_LABEL_MAX];
	char device_glob[RULE_GLOB_MAX];
	int mode; /* enum device_mode or -1 */
	char os_older_than[24];

	struct rule_image images[WIRE_IMAGES_MAX];
	unsigned n_images;

	bool once;
	bool skip_installed;
	int priority;
	unsigned max_jobs; /* running jobs of this rule at most; 0 = one per device, no cap */
	unsigned hook_timeout_s;
	char *on_success[RULE_ARGV_MAX + 1]; /* NULL-terminated argv, or on_success[0] == NULL */
	char *on_failure[RULE_ARGV_MAX + 1];

	/* the done-set: device ids this rule has flashed (sorted) */
	char (*done)[DEVICE_ID_LEN + 1];
	size_t n_done, cap_done;

	unsigned running; /* jobs of this rule not ended (autoflash.c) */
};

struct rules;

struct rules *rules_new(const char *state_dir, const struct auto_config *cfg,
			struct image_cache *images);
void rules_free(struct rules *r);
/* The image cache the rules' files are in (a bundle's assets are added from it). */
struct image_cache *rules_image_cache(struct rules *r);
/* Loads the socket rules and the done-sets from the state directory, then the
 * rule files.  Problems are logged; what can be loaded is. */
void rules_load(struct rules *r);
/* Re-reads the rule files (SIGHUP, auto-reload); returns
 * {"rules": N, "files": N, "errors": [{code, message, detail}...]}. */
json_t *rules_reload_files(struct rules *r);

struct rule *rules_first(struct rules *r);
struct rule *rules_find(struct rules *r, const char *id);
/* The label of a USB port path (rule files' [labels], or a rule's port label), or "". */
const char *rules_port_label(struct rules *r, const char *port);
/* {"port": label, ...} */
json_t *rules_labels_json(struct rules *r);

/*
 * An `auto-add` request: the rule's fields (proto/PROTOCOL.md) and its images
 * as fds (the request's "images" array indexes them).  Checks the owner's
 * quota, copies the images into the state directory and saves.  Fails with
 * bad-request, rule-invalid, hook-not-allowed, rule-quota-exceeded,
 * file-unreadable or the image parser's errors.
 */
struct rule *rules_add_request(struct rules *r, const json_t *req, const int *fds, unsigned n_fds,
			       uid_t owner, struct error *err);
/* Removes a socket rule (and its stored images no other rule uses); saves. */
void rules_remove(struct rules *r, struct rule *rule);
void rules_set_paused(struct rules *r, struct rule *rule, bool paused);

enum rule_match rule_matches(const struct rule *rule, const struct device *dev);
bool rule_done_has(const struct rule *rule, const char *device_id);
/* Adds the device to the rule's done-set and saves it. */
void rules_done_add(struct rules *r, struct rule *rule, const char *device_id);

json_t *rule_to_json(const struct rule *rule);
