/*
 * flashd's configuration file (INI style, --config FILE):
 *
 *   [daemon]
 *   admin_group =               # members may cancel any job; empty: nobody but root
 *   socket_group = flashd       # group of the socket flashd creates itself (not activated)
 *   socket_mode = 0660          # its mode; others' bits need world_socket = yes as root
 *   world_socket = no
 *   lock_dir = /run/lock        # UUCP lock files (LCK..ttyACM0); $FLASHD_LOCK_DIR wins
 *   replug_timeout_s = 30       # a device that leaves mid-job is waited for this long
 *   [limits]
 *   clients = 256               # connected clients; more are refused (too-many-clients)
 *   clients_per_uid = 32        # connections of one uid (too-many-clients)
 *   jobs = 64                   # queued + running jobs (too-many-jobs)
 *   jobs_per_uid = 16           # unended jobs of one uid (too-many-jobs)
 *   waiting_jobs_per_uid = 8    # ... of which wait for a device (wait:true or a wait time)
 *   output_buffer_bytes = 1048576   # a client that falls further behind is disconnected
 *   image_memory_bytes = 268435456  # firmware kept in memory, all jobs together
 *   job_history = 64            # ended jobs kept for list-jobs
 *   uploads_per_uid = 16        # in-band uploads open for one uid (too-many-uploads)
 *   upload_bytes_per_uid = 67108864 # bytes those uploads announce together
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
 *   [mqtt]                      # publishing to a broker (daemon/mqtt.c); off without url
 *   url = mqtt://HOST:PORT      # or mqtts://HOST:PORT (TLS, certificate verified)
 *   station = NAME              # this station: one topic level, no + # /
 *   topic_prefix = flashd       # topics PREFIX/STATION/...
 *   ca_file, cert_file, key_file, password_file = /absolute/path
 *   qos = 1                     # 0, 1 or 2
 *   queue = 1000                # messages waiting for the broker; the oldest is dropped beyond
 *
 * Also the registry of timeout keys behind timeout_ms() (transport.h).
 */
#pragma once

#include "errors.h"
#include "history.h"
#include "rules.h"
#include "mqtt.h"
#include "transport.h"

#include <stddef.h>

#define CONFIG_LINE_MAX 1024
#define CONFIG_FILE_MAX (256u * 1024)
#define TIMEOUTS_MAX	128

struct config {
	char admin_group[64]; /* "" = none: only root and a job's owner cancel it */
	char socket_group[64];
	unsigned socket_mode;
	bool world_socket;
	char lock_dir[256]; /* "" = the default (SERIAL_LOCK_DIR) */
	unsigned max_clients;
	unsigned clients_per_uid;
	unsigned max_jobs;
	unsigned jobs_per_uid;
	unsigned waiting_jobs_per_uid;
	size_t output_buffer_max;
	size_t image_memory_max;
	unsigned job_history;
	unsigned replug_timeout_s; /* jobs.h jobs_set_replug_timeout() */
	unsigned uploads_per_uid;
	size_t upload_bytes_per_uid;
	struct history_config history;
	struct auto_config autoflash;
	struct mqtt_config mqtt;
};

void config_defaults(struct config *c);
/* Reads FILE; unknown sections or keys are warned about, bad values are errors (usage;
 * mqtt-config for [mqtt], which is also checked as a whole). */
WARN_UNUSED_RESULT int config_load(struct config *c, const char *path, struct error *err);
/* Same over a buffer (unit tests). */
WARN_UNUSED_RESULT int config_parse(struct config *c, const char *text, const char *origin,
				    struct error *err);

/* Registers timeout keys with their defaults (a NULL-key-terminated array). */
void timeouts_register(const struct timeout_def *defs);
/* Sets a registered key; -1 if the key is unknown. */
int timeouts_set(const char *key, unsigned ms);
/* Forgets every key (tests). */
void timeouts_reset(void);
