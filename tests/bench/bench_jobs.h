/*
 * What the in-process benchmarks (history-bench, mqtt-bench) share: a clock, a
 * transport that writes and verifies inside start(), and a simulated Photon to
 * run jobs on through daemon/jobs.c.
 */
#pragma once

#include "jobs.h"
#include "registry.h"

#include <stddef.h>

/* Seconds on the monotonic clock. */
double bench_mono(void);

/* Sorts n figures, smallest first (for p50 / p99 / max). */
void bench_sort(double *v, size_t n);

/* The transports for jobs_new(): one, "serial", that writes 3952 bytes, reads the
 * device back (its application one version up) and is done, all inside start(). */
extern const struct transport_ops *const bench_transports[];

/* A Photon on Device OS 1.5.2 plugged into reg at 1-1, its facts listing four
 * modules (bootloader, two system parts, application version 2). */
struct device *bench_plug_photon(struct registry *reg);

/* A job request for dev, no files, as uid 1000. */
void bench_job_request(struct job_request *jr, struct device *dev);
