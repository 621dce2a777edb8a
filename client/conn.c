#include "conn.h"

#include "cleanup.h"

#include <errno.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONN_DEFAULT_SYSTEM_SOCKET "/run/flashd/flashd.sock"

int conn_socket_path(const struct cli_global *g, char *buf, size_t size)
{
	struct stat st;
	const char *env = getenv("FLASHD_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (g->socket_path)
		snprintf(buf, size, "%s", g->socket_path);
	else if (env && *env)
		snprintf(buf, size, "%s", env);
	else if (stat(CONN_DEFAULT_SYSTEM_SOCKET, &st) == 0)
		snprintf(buf, size, "%s", CONN_DEFAULT_SYSTEM_SOCKET);
	else if (xdg && *xdg)
		snprintf(buf, size, "%s/flashd.sock", xdg);
	else
		snprintf(buf, size, "%s", CONN_DEFAULT_SYSTEM_SOCKET);
	return 0;
}

static int unreachable(struct error *err, const char *path, int errnum)
{
	error_set(err, ERR_DAEMON_UNREACHABLE, "cannot reach flashd at %s: %s", path,
		  strerror(errnum));
	error_detail_str(err, "socket", path);
	error_detail_int(err, "errno", errnum);
	return -1;
}

/* EACCES on connect: the socket is the daemon's group's (0660) and we are not in it. */
static int not_in_group(struct error *err, const char *path, int errnum)
{
	struct stat st;
	char group[64] = "flashd";
	if (stat(path, &st) == 0) {
		struct group *gr = getgrgid(st.st_gid);
		if (gr)
			snprintf(group, sizeof(group), "%s", gr->gr_name);
		else
			snprintf(group, sizeof(group), "%u", (unsigned)st.st_gid);
	}
	error_set(err, ERR_DAEMON_UNREACHABLE,
		  "permission denied on %s: add yourself to the %s group (then log in again)", path,
		  group);
	error_hint(err, "sudo usermod -aG %s $USER, then log out and in again (or run 'newgrp %s')",
		   group, group);
	error_detail_str(err, "socket", path);
	error_detail_int(err, "errno", errnum);
	return -1;
}

/*
 * The daemon refused us (too-many-clients: it says why in one line, then
 * closes): a write then fails with EPIPE, but the line is still there to read.
 * Shows the daemon's refusal rather than a broken pipe.
 */
static int refused_or_unreachable(struct conn *c, int errnum, struct error *err)
{
	char buf[4096];
	size_t len = 0;
	while (len < sizeof(buf) - 1) {
		struct pollfd p = {c->fd, POLLIN, 0};
		if (poll(&p, 1, 200) <= 0)
			break;
		ssize_t n = read(c->fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	char *nl = len ? memchr(buf, '\n', len) : NULL;
	json_t *obj = nl ? json_loadb(buf, (size_t)(nl - buf), 0, NULL) : NULL;
	const char *type = json_string_value(json_object_get(obj, "type"));
	if (type && strcmp(type, "error") == 0 && error_from_json(err, obj) == 0) {
		json_decref(obj);
		return -1;
	}
	json_decref(obj);
	return unreachable(err, c->path, errnum);
}

int conn_open(struct conn *c, const struct cli_global *g, struct error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	conn_socket_path(g, c->path, sizeof(c->path));
	if (strlen(c->path) >= sizeof(sa.sun_path))
		return unreachable(err, c->path, ENAMETOOLONG);
	memcpy(sa.sun_path, c->path, strlen(c->path));
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		conn_close(c);
		if (e == EACCES || e == EPERM)
			return not_in_group(err, c->path, e);
		return unreachable(err, c->path, e);
	}
	c->next_id = 1;
	return 0;
}

void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->len = 0;
}

int conn_send(struct conn *c, json_t *req, const int *fds, unsigned n_fds, struct error *err)
{
	json_object_set_new(req, "id", json_integer(c->next_id++));
	size_t len;
	_cleanup_free_ char *line = wire_encode(req, &len);
	if (!line)
		return error_set(err, ERR_INTERNAL, "cannot encode the request");
	char cbuf[CMSG_SPACE(sizeof(int) * WIRE_IMAGES_MAX)];
	memset(cbuf, 0, sizeof(cbuf));
	size_t off = 0;
	while (off < len) {
		struct iovec iov = {line + off, len - off};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		/* The fds travel with the first byte of the request (PROTOCOL.md). */
		if (off == 0 && n_fds > 0 && n_fds <= WIRE_IMAGES_MAX) {
			msg.msg_control = cbuf;
			msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
		}
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			if (e == EPIPE || e == ECONNRESET)
				return refused_or_unreachable(c, e, err);
			return unreachable(err, c->path, e);
		}
		off += (size_t)n;
	}
	return 0;
}

json_t *conn_read(struct conn *c, int timeout_ms, struct error *err)
{
	for (;;) {
		char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			json_error_t jerr;
			json_t *obj = json_loadb(c->buf, n, 0, &jerr);
			memmove(c->buf, nl + 1, c->len - n - 1);
			c->len -= n + 1;
			if (!obj)
				error_set(err, ERR_INTERNAL, "the daemon sent malformed JSON: %s",
					  jerr.text);
			return obj;
		}
		if (c->len >= CONN_LINE_MAX) {
			error_set(err, ERR_INTERNAL, "the daemon sent a line over %u bytes",
				  CONN_LINE_MAX);
			return NULL;
		}
		struct pollfd p = {c->fd, POLLIN, 0};
		int r = poll(&p, 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			return NULL;
		char *nb = realloc(c->buf, c->len + 65536);
		if (!nb) {
			error_set(err, ERR_OUT_OF_MEMORY, NULL);
			return NULL;
		}
		c->buf = nb;
		ssize_t n = read(c->fd, c->buf + c->len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			unreachable(err, c->path, n < 0 ? errno : ECONNRESET);
			return NULL;
		}
		c->len += (size_t)n;
	}
}

json_t *conn_call(struct conn *c, json_t *req, const int *fds, unsigned n_fds,
		  void (*on_event)(void *ctx, json_t *event), void *ctx, struct error *err)
{
	if (conn_send(c, req, fds, n_fds, err) < 0)
		return NULL;
	json_int_t id = json_integer_value(json_object_get(req, "id"));
	for (;;) {
		json_auto_t *obj = conn_read(c, -1, err);
		if (!obj)
			return NULL;
		const char *type = json_string_value(json_object_get(obj, "type"));
		json_t *oid = json_object_get(obj, "id");
		if (type && strcmp(type, "event") == 0) {
			if (on_event)
				on_event(ctx, obj);
			continue;
		}
		if (type && strcmp(type, "error") == 0 && (!oid || json_integer_value(oid) == id)) {
			(void)error_from_json(err, obj); /* a malformed object fills err too */
			return NULL;
		}
		if (json_integer_value(oid) == id)
			return TAKE_PTR(obj);
	}
}

json_t *conn_request(const struct cli_global *g, json_t *req, struct error *err)
{
	struct conn c;
	json_t *reply = NULL;
	if (conn_open(&c, g, err) == 0) {
		reply = conn_call(&c, req, NULL, 0, NULL, NULL, err);
		conn_close(&c);
	}
	json_decref(req);
	return reply;
}
