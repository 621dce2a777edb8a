/* state.json and the per-region flash dumps (issue 3 "--state-dir"); schema: state.schema.json. */
#pragma once

#include "sim.h"

#include <jansson.h>

/* The state document (lock held).  Dumps are written into dir when dir != NULL. */
json_t *state_document(struct sim *sim, const char *dir);
/* Writes DIR/state.json and the dumps (takes the lock).  Returns 0 or -1. */
int state_write(struct sim *sim);
