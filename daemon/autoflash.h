/*
 * Auto-flash (issue 15): turns devices that appear into jobs according to the
 * rules (rules.h), runs the rules' hooks when those jobs end, and keeps the
 * station view (`station` request, `flashctl station`).
 *
 * A present device that no job holds is decided once per presence:
 *   - the matching, unpaused rules are collected; none -> "no rule matched"
 *     (logged); two or more of the highest priority -> rule-conflict (logged,
 *     shown, nothing flashed);
 *   - a rule that matches on what the device has installed (os_older_than)
 *     first gets a probe job (no images, nothing written), then the device is
 *     decided again;
 *   - once: a device in the rule's done-set is skipped;
 *   - else a job with the rule's images, one per device, all in parallel
 *     (max_jobs caps a rule's running jobs; the others wait).  Already
 *     installed is the planner's: with skip_installed (the default) it skips
 *     identically installed modules, and a job with nothing to write ends done
 *     / already-installed, no hook run; skip_installed = no sets the job's
 *     rewrite option (identical modules written again, the checks still made).
 * A device that leaves mid-job keeps its job (the replug rule of jobs.c): no
 * decision is made for it while the job holds it, on whatever port it is back.
 * A device is decided again when it is unplugged and plugged back (a
 * re-enumeration within auto_settle_ms of its job's end is the job's own
 * reset, not a new plug), when the rules change (add, resume, reload) and at
 * start (coldplug).
 *
 * Hooks run with fork/exec: the job-ended event on stdin, output collected
 * through a pipe the loop watches, the child reaped through a pidfd, killed
 * (its process group) after the rule's hook_timeout_s.  Nothing waits.
 */
#pragma once

#include "jobs.h"
#include "registry.h"
#include "rules.h"

#include <jansson.h>

struct autoflash;
struct event_base;
struct history;

struct autoflash *autoflash_new(struct event_base *base, struct registry *reg, struct jobs *jobs,
				struct rules *rules, const struct transport_ops *const *transports);
void autoflash_free(struct autoflash *af);
void autoflash_set_history(struct autoflash *af, struct history *h);
/* Registers auto_settle_ms (idempotent). */
void autoflash_register_timeouts(void);

void autoflash_on_device(struct autoflash *af, struct device *dev, enum registry_change change);
void autoflash_on_job_event(struct autoflash *af, struct job *job, const json_t *event);
/* The rules changed: devices not flashed in this presence are decided again. */
void autoflash_rules_changed(struct autoflash *af);
/* A rule is about to be removed: forget references to it. */
void autoflash_rule_removed(struct autoflash *af, struct rule *rule);

/* {"since","counters":{"flashed","failed","skipped"},"rate_per_hour","rules","ports":[...]} */
json_t *autoflash_station_json(struct autoflash *af);
