/*
 * --control PATH: a Unix stream socket speaking newline-delimited JSON, one
 * reply line per command (flashd-sim(1) "CONTROL PROTOCOL").
 */
#pragma once

#include "sim.h"

int control_start(struct sim *sim, const char *path, GError **error);
void control_stop(void);
/* Something that wait-idle waits for may have ended (main thread, lock NOT held). */
void control_poke(struct sim *sim);
