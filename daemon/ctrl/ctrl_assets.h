/*
 * Assets over control requests (issue 14): what the ctrl transport reads of
 * the device's asset store and how it judges the assets a job wrote.  The
 * writes themselves are ordinary plan writes of asset modules (the bundle's
 * assets, built by proto/asset_module.c, are files of the job) through the
 * firmware-update exchange; Device OS stores each at FINISH and resets.
 */
#pragma once

#include "ctrl.h"
#include "device_facts.h"
#include "errors.h"
#include "transport.h"

#include <stdbool.h>

/* The GET_ASSET_INFO reply into facts (assets_known, assets). */
void ctrl_assets_take(struct device_facts *facts, const struct ctrl_result *res);

/* Whether a failure of op may be passed over: GET_ASSET_INFO answered "not
 * supported" (Device OS before 5.6.0, platforms without assets) or not at all
 * leaves the asset store unknown, it does not fail the job.  Clears err then. */
bool ctrl_assets_optional(enum ctrl_op op, struct error *err);

/*
 * After the last reboot: every asset module the job wrote is in the device's
 * asset store under its name with its SHA-256.  0 (also when the store is not
 * known: Device OS before 5.6.0 does not report it; a note "assets-not-verified"
 * says so), or -1 with asset-not-stored.
 */
int ctrl_assets_verdict(struct job *job, const struct device_facts *now, struct error *err);
