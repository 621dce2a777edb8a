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
 *   uploads_per_uid = 16        # in-band uploads open for one uid (too-many-uploads)
 *   upload_bytes_per_uid = 67108864 # bytes those uploads announce together
 *   [timeouts]
 *   serial_prompt_ms = 10000    # any key registered by the core or a transport
 *
 * Also the registry of timeout keys behind timeout_ms() (transport.h).
 */
#pragma once

#include "errors.h"
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
	unsigned uploads_per_uid;
	size_t upload_bytes_per_uid;
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
