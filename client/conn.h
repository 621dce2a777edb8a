/* flashctl's connection to flashd: finding the socket, sending requests
 * (with file descriptors), reading replies and events (proto/PROTOCOL.md). */
#pragma once

#include "errors.h"
#include "verbs.h"
#include "wire.h"

#include <jansson.h>
#include <stdbool.h>

/* Largest line flashctl accepts from the daemon (device lists, job records). */
#define CONN_LINE_MAX (4u * 1024 * 1024)

struct conn {
	int fd;
	char path[108];
	char *buf;
	size_t len;
	long long next_id;
};

/* The socket, in the documented order: --socket, $FLASHD_SOCKET,
 * /run/flashd/flashd.sock if it exists, $XDG_RUNTIME_DIR/flashd.sock. */
int conn_socket_path(const struct cli_global *g, char *buf, size_t size);
/* Connects; fails with daemon-unreachable. */
WARN_UNUSED_RESULT int conn_open(struct conn *c, const struct cli_global *g, struct error *err);
void conn_close(struct conn *c);
/* Sends one request (its "id" is assigned here) with optional fds. */
WARN_UNUSED_RESULT int conn_send(struct conn *c, json_t *req, const int *fds, unsigned n_fds,
				 struct error *err);
/* The next object from the daemon; NULL and err set on end of stream or error.
 * timeout_ms < 0 waits forever; on timeout returns NULL with err unset. */
json_t *conn_read(struct conn *c, int timeout_ms, struct error *err);
/*
 * Sends req and returns its reply.  Events that arrive first go to on_event
 * (may be NULL).  An error reply fills err (error_from_json) and returns NULL.
 */
json_t *conn_call(struct conn *c, json_t *req, const int *fds, unsigned n_fds,
		  void (*on_event)(void *ctx, json_t *event), void *ctx, struct error *err);
/*
 * One request on a connection of its own (list, jobs, cancel): connects, sends
 * req (its reference is taken), disconnects and returns the reply; NULL with
 * err set when the daemon is unreachable or answers with an error.
 */
json_t *conn_request(const struct cli_global *g, json_t *req, struct error *err);
