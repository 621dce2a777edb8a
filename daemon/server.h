/*
 * The client socket: accepts connections, frames newline-delimited JSON,
 * receives firmware fds (SCM_RIGHTS) and peer credentials (SO_PEERCRED),
 * answers requests (proto/PROTOCOL.md) and fans out events to subscribers.
 * Every limit is enforced here: clients (too-many-clients), message size and
 * malformed input (bad-request), queued fds, and the per-client output buffer
 * (a client that stops reading is disconnected, nobody else waits for it).
 */
#pragma once

#include "settings.h"
#include "image_cache.h"
#include "jobs.h"
#include "registry.h"

#include <jansson.h>

/* fds a client may have queued before its flash request line is complete. */
#define SERVER_CLIENT_FDS_MAX WIRE_IMAGES_MAX
/* Bytes read per readable event: keeps one busy client from starving others. */
#define SERVER_READ_CHUNK (16u * 1024)

struct event_base;
struct server;

/* listen_fd: a bound, listening, non-blocking Unix stream socket (taken over). */
struct server *server_new(struct event_base *base, int listen_fd, struct registry *reg,
			  struct jobs *jobs, struct image_cache *images, const struct config *cfg);
void server_free(struct server *s);

/* Fan-out entry points, wired by main.c to the registry and the job queue. */
void server_device_event(struct server *s, struct device *dev, enum registry_change change);
void server_job_event(struct server *s, struct job *job, json_t *event);
size_t server_client_count(const struct server *s);
/* The flash history for `history` requests (NULL: requests fail with
 * history-unavailable saying why_not). */
struct history;
/* Auto-flash rules and the station view for the auto-* and station requests. */
struct rules;
struct autoflash;
void server_set_auto(struct server *s, struct rules *rules, struct autoflash *af);
void server_set_history(struct server *s, struct history *h, const char *why_not);
/* The server's timeout keys (client_idle_ms, image_read_ms), before the config is read. */
void server_register_timeouts(void);
/* The MQTT publisher whose state the hello reply shows ("mqtt"), or NULL. */
struct mqtt;
void server_set_mqtt(struct server *s, struct mqtt *m);
