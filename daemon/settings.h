/*
 * flashd's configuration file (INI style, --config FILE):
 *
 *   [daemon]
 *   admin_group = flashd        # members may cancel any job
 *   [limits]
 *   clients = 256               # connected clients; more are refused (too-many-clients)
 *   jobs = 64                   # queued + running jobs (too-many-jobs)
 *   output_buffer_bytes = 1048576   # a client that falls further behind is disconnected
 *   image_memory_bytes = 268435456  # firmware kept in memory, all jobs together
 *   job_history = 64            # ended jobs kept for list-jobs
 *   [timeouts]
 *   serial_prompt_ms = 10000    # any key registered by the core or a transport
 *   [history]                   # the flash history (daemon/history.c)
 *   max_age_days = 90           # rows older than this are deleted (0 = no age limit)
 *   max_jobs = 100000           # at most this many rows are kept (0 = no count limit)
 *   retention_interval_s = 3600 # how often retention runs (and once at start)
 *   [auto]                      # auto-flash rules (daemon/rules.c)
 *   rules_dir = /etc/flashd/rules.d
 *   max_rules_per_uid = 32      # rules one uid may add over the socket
 *   max_image_bytes_per_uid = 67108864 # image bytes those rules may store
 *
 * Also the registry of timeout keys behind timeout_ms() (transport.h).
 */
#pragma once

#include "errors.h"
#include "history.h"
#include "rules.h"
#include "transport.h"

#include <stddef.h>

#define CONFIG_LINE_MAX 1024
#define CONFIG_FILE_MAX (256u * 1024)
#define TIMEOUTS_MAX	128

struct config {
	char admin_group[64];
	unsigned max_clients;
	unsigned max_jobs;
	size_t output_buffer_max;
	size_t image_memory_max;
	unsigned job_history;
	struct history_config history;
	struct auto_config autoflash;
};

void config_defaults(struct config *c);
/* Reads FILE; unknown sections or keys are warned about, bad values are errors (usage). */
int config_load(struct config *c, const char *path, struct error *err);
/* Same over a buffer (unit tests). */
int config_parse(struct config *c, const char *text, const char *origin, struct error *err);

/* Registers timeout keys with their defaults (a NULL-key-terminated array). */
void timeouts_register(const struct timeout_def *defs);
/* Sets a registered key; -1 if the key is unknown. */
int timeouts_set(const char *key, unsigned ms);
/* Forgets every key (tests). */
void timeouts_reset(void);
