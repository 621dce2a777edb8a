/*
 * The step driver (issue 11): the core runs every job as an ordered list of
 * steps and owns that order; transports execute one step at a time
 * (transport.h) and know nothing of each other.
 *
 *   READ     the transport that can read the device in its mode now (console,
 *            control requests, DFU read-back); one that gets no answer passes
 *            the READ to the next; a flash job whose device answers none is
 *            switched to DFU mode (14400 baud) and read there
 *   PLAN     job_plan_make() once, over what was read: a refusal happens here,
 *            before any mode switch and before any byte; a dry run ends here
 *   STEPS    for each plan step: the mode switch (mode_switch.h, or the
 *            enter-DFU control request run as a step of the ctrl transport);
 *            the write (the named transport with exactly that step's images;
 *            consecutive DFU writes are one step); the wait for the reboot
 *            (DEVICE_EVENT_BACK under the writer's *_reenumerate_ms); the
 *            verify (a VERIFY step of the transport that reads verdicts), then
 *            job_verdict() and the job's end.
 *
 * Where the job changes transport the core says so in a job-progress note
 * "handed-to-<name>" (the step's description as its message).
 *
 * jobs.c calls these; nothing else does.
 */
#pragma once

#include "transport.h"

struct job_steps;

/* Starts (or, after a replug, restarts) the job on its device: READ first. */
void job_steps_run(struct job *job);
/* A run ended its step (job_step_done()); err is moved from.  The driver
 * continues from the loop. */
void job_steps_done(struct job *job, const struct job_step_result *res, struct error *err);
/* job_step_image(): the running WRITE is at its k-th image. */
void job_steps_image(struct job *job, size_t k);
/* job_step_image_written(): the running WRITE's k-th image is whole. */
void job_steps_image_written(struct job *job, size_t k);
/* Every device event of the job's device (also while a run is live). */
void job_steps_device_event(struct job *job, enum device_event ev,
			    const struct device_snapshot *dev);
/* Cancel while no run is live: true when the driver ended the job itself. */
bool job_steps_cancel(struct job *job);
/* Stops the driver's waits (the job ended, or waits for a replug). */
void job_steps_stop(struct job *job);
void job_steps_free(struct job_steps *s);
