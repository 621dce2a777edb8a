/*
 * Publishing to an MQTT broker (issue 17): a station's status, its devices,
 * its jobs' events and its finished jobs' history records, so that many
 * stations can be watched in one place (`flashctl fleet`).  Publishing only:
 * nothing the broker sends can make this daemon do anything.
 *
 * Topics (proto/PROTOCOL.md, "MQTT"):
 *   PREFIX/STATION/status        retained; {"state":"online",...}, "offline" by the last will
 *   PREFIX/STATION/devices/KEY   retained; the device object, empty when it is unplugged
 *   PREFIX/STATION/jobs/JOB      the job's events, as subscribers of the socket get them
 *   PREFIX/STATION/history       one HISTORY_JOB per finished job
 *
 * libmosquitto runs inside the daemon's libevent loop: its socket is watched
 * by the loop, mosquitto_loop_read/write are called when it is readable or
 * writable and mosquitto_loop_misc (keepalive) from a timer.  No libmosquitto
 * thread, no blocking connect: mosquitto_connect_async() with a numeric
 * address (the broker's name is resolved off the loop by getaddrinfo_a()).
 * What remains on the loop is documented in flashd(8): with mqtts:// and a
 * host name libmosquitto resolves the name again on the loop (certificate
 * verification needs the name), and it reads the TLS files at each connect.
 *
 * Messages wait in a bounded queue (queue_max, default 1000; retained
 * messages of one topic replace each other) and are handed to libmosquitto
 * while connected; when the queue is full the oldest message is dropped and
 * counted.  Flashing never waits for the broker.  A lost connection is retried
 * after 1 s, doubling up to 60 s.  The only subscription: the station's own
 * devices/+ for a few seconds after connecting, to clear retained states of
 * devices from an earlier run that are not attached now.
 */
#pragma once

#include "errors.h"
#include "registry.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>

#define MQTT_QUEUE_DEFAULT 1000
#define MQTT_QUEUE_MAX	   1000000
#define MQTT_NAME_MAX	   64  /* station */
#define MQTT_PREFIX_MAX	   128 /* topic_prefix */
#define MQTT_HOST_MAX	   256
#define MQTT_RETRY_MIN_S   1
#define MQTT_RETRY_MAX_S   60

struct event_base;
struct job;
struct mqtt;

/* [mqtt] in flashd's config file (settings.c). */
struct mqtt_config {
	bool enabled; /* a url was given */
	char url[MQTT_HOST_MAX + 32];
	char host[MQTT_HOST_MAX];
	int port;
	bool tls; /* mqtts:// */
	char station[MQTT_NAME_MAX];
	char topic_prefix[MQTT_PREFIX_MAX];
	char ca_file[PATH_MAX];
	char cert_file[PATH_MAX];
	char key_file[PATH_MAX];
	char password_file[PATH_MAX];
	int qos;	    /* 0, 1 (default) or 2 */
	unsigned queue_max; /* messages waiting for the broker */
};

void mqtt_config_defaults(struct mqtt_config *c);
/* One key of [mqtt]; fails with mqtt-config. */
int mqtt_config_set(struct mqtt_config *c, const char *key, const char *value, const char *where,
		    struct error *err);
/* The section as a whole (station given, names valid, files consistent); mqtt-config. */
int mqtt_config_check(const struct mqtt_config *c, struct error *err);
/* A station name or topic prefix usable in a topic: no MQTT wildcard (+ #),
 * no separator (/) in a station, no empty level in a prefix. */
bool mqtt_name_valid(const char *name, bool is_prefix);

/* Checks the section, reads the password file (mqtt-config when it cannot be
 * read or others may read it) and the TLS files; no thread, no connection yet. */
struct mqtt *mqtt_new(struct event_base *base, const struct mqtt_config *cfg, struct registry *reg,
		      struct error *err);
/* Starts connecting (in the background: never waits for the broker).  After a
 * fork: name resolution runs on glibc's threads.  Accepts NULL. */
void mqtt_start(struct mqtt *m);
/* Publishes the offline status, gives the queue up to a second to leave, disconnects.
 * Accepts NULL. */
void mqtt_free(struct mqtt *m);

/* The hooks: main.c calls them beside the server's fan-out.  NULL m: no-op. */
void mqtt_device_event(struct mqtt *m, const struct device *dev, enum registry_change change);
void mqtt_job_event(struct mqtt *m, struct job *job, const json_t *event);

/* {"enabled","broker","station","topic_prefix","state","connected","last_error",
 *  "queued","in_flight","published","dropped","reconnects"} (the hello reply's "mqtt"). */
json_t *mqtt_status_json(const struct mqtt *m);
