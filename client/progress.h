/*
 * The live display of flash jobs: one line per job (device), redrawn in place
 * on a terminal with the phase, bytes, rate and ETA, and seconds waited in the
 * phases that wait ("waiting for the device to come back (12/45 s)").  When
 * stdout is not a terminal it prints plain lines instead: one per phase, per
 * quarter of a phase's bytes, per note, and the end.
 */
#pragma once

#include "verbs.h"

#include <jansson.h>
#include <stdbool.h>

/* Jobs one display follows (a --platform X --all job per device). */
#define PROGRESS_JOBS_MAX 64

struct progress;

/* live: redraw in place (stdout is a terminal and TERM is not "dumb"). */
struct progress *progress_new(const struct cli_global *g, bool live);
void progress_free(struct progress *p);
/* Follows a job: JOB record from the flash reply. */
void progress_add_job(struct progress *p, const json_t *job);
/* A job-* event (others are ignored); returns true if it ended one of its jobs. */
bool progress_event(struct progress *p, const json_t *event);
/* Redraws with the current time (seconds waited move on without events). */
void progress_tick(struct progress *p);
/* The user asked to cancel: the lines say so until the jobs end. */
void progress_cancelling(struct progress *p);
/* Prints a line above the display (notes, messages). */
void progress_log(struct progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the display: the final lines stay, the cursor goes below them. */
void progress_end(struct progress *p);
/* The state a job was in before it ended ("writing"), for the recovery advice. */
const char *progress_last_state(const struct progress *p, const char *job_id);
/* Wall-clock seconds since the display started. */
double progress_elapsed(const struct progress *p);
