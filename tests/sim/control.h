/*
 * --control PATH: a Unix stream socket speaking newline-delimited JSON, one
 * reply line per command (flashd-sim(1) "CONTROL PROTOCOL").
 */
#pragma once

#include "sim.h"

int control_start(struct sim *sim, const char *path, GError **error);
void control_stop(void);
/* Called when sim->pending_work drops to 0: answers wait-idle requests. */
void control_idle(struct sim *sim);
