#include "control.h"

#include "device.h"
#include "spec.h"
#include "state.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <jansson.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#define CONTROL_LINE_MAX 65536
/* wait-idle: default and largest bound of the wait, and what counts as long-term. */
#define WAIT_IDLE_DEFAULT_MS 30000
#define WAIT_IDLE_MAX_MS     600000
#define IDLE_LONG_TERM_MS    60000 /* e.g. the 300 s Gen 2 update inactivity reset */

struct client {
	struct sim *sim;
	GSocketConnection *conn;
	GDataInputStream *in;
	GOutputStream *out;
	uint64_t idle_deadline; /* wait-idle gives up then (monotonic ms) */
};

static GSocketService *service;
static char *socket_path;
static guint idle_timer;

static void client_free(struct client *c)
{
	g_object_unref(c->in);
	g_object_unref(c->conn);
	g_free(c);
}

static void reply(struct client *c, json_t *r)
{
	char *text = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	gchar *line = g_strdup_printf("%s\n", text);
	g_output_stream_write_all(c->out, line, strlen(line), NULL, NULL, NULL);
	g_free(line);
	free(text);
}

static json_t *fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	gchar *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	json_t *r = json_pack("{s:b,s:s}", "ok", 0, "error", msg);
	g_free(msg);
	return r;
}

static struct sim_device *find(struct sim *sim, const char *name)
{
	for (unsigned i = 0; name && i < sim->n_devices; i++)
		if (strcmp(sim->devices[i]->spec.name, name) == 0)
			return sim->devices[i];
	return NULL;
}

static json_t *cmd_plug(struct sim *sim, json_t *req)
{
	const char *text = json_string_value(json_object_get(req, "spec"));
	const char *name = json_string_value(json_object_get(req, "name"));
	struct sim_device *d = find(sim, name);
	if (d && !text) {
		if (d->present)
			return fail("device %s is plugged in already", name);
		g_autoptr(GError) err = NULL;
		if (device_plug(d, &err) < 0)
			return fail("plug failed: %s", err->message);
		return json_pack("{s:b}", "ok", 1);
	}
	if (!text)
		return fail("plug needs %s", "\"spec\"");
	if (sim->n_devices >= SIM_MAX_DEVICES)
		return fail("at most %s devices", G_STRINGIFY(SIM_MAX_DEVICES));
	struct sim_spec spec;
	char err[SIM_SPEC_ERROR_MAX];
	if (spec_parse(text, sim->n_devices, &spec, err, sizeof(err)) < 0)
		return fail("%s", err);
	if (find(sim, spec.name)) {
		char dup[SIM_NAME_MAX];
		g_strlcpy(dup, spec.name, sizeof(dup));
		spec_clear(&spec);
		return fail("a device named %s exists", dup);
	}
	d = device_new(sim, &spec);
	spec_clear(&spec);
	g_mutex_lock(&sim->lock);
	sim->devices[sim->n_devices++] = d;
	g_mutex_unlock(&sim->lock);
	g_autoptr(GError) gerr = NULL;
	if (device_plug(d, &gerr) < 0)
		return fail("plug failed: %s", gerr->message);
	return json_pack("{s:b,s:s,s:s}", "ok", 1, "name", d->spec.name, "device_id", d->spec.id);
}

static json_t *dispatch(struct client *c, json_t *req, bool *deferred)
{
	struct sim *sim = c->sim;
	const char *cmd = json_string_value(json_object_get(req, "cmd"));
	if (!cmd)
		return fail("expected {\"cmd\": ...}%s", "");
	if (strcmp(cmd, "plug") == 0)
		return cmd_plug(sim, req);
	if (strcmp(cmd, "state") == 0) {
		state_write(sim);
		g_mutex_lock(&sim->lock);
		json_t *doc = state_document(sim, NULL);
		g_mutex_unlock(&sim->lock);
		return json_pack("{s:b,s:o}", "ok", 1, "state", doc);
	}
	if (strcmp(cmd, "wait-idle") == 0) {
		json_t *t = json_object_get(req, "timeout_ms");
		if (t && (!json_is_integer(t) || json_integer_value(t) < 0 ||
			  json_integer_value(t) > WAIT_IDLE_MAX_MS))
			return fail("wait-idle: timeout_ms must be an integer 0..%d",
				    WAIT_IDLE_MAX_MS);
		c->idle_deadline =
		    sim_now_ms() + (uint64_t)(t ? json_integer_value(t) : WAIT_IDLE_DEFAULT_MS);
		g_ptr_array_add(sim->idle_waiters, c);
		*deferred = true;
		control_poke(sim);
		return NULL;
	}
	static const char *const known[] = {"unplug", "replug", "mode", "fault"};
	bool is_known = false;
	for (unsigned i = 0; i < G_N_ELEMENTS(known); i++)
		is_known |= strcmp(cmd, known[i]) == 0;
	if (!is_known)
		return fail(
		    "unknown command %s (plug, unplug, replug, mode, fault, state, wait-idle)",
		    cmd);
	const char *name = json_string_value(json_object_get(req, "name"));
	struct sim_device *d = find(sim, name);
	if (!d)
		return fail("no device named %s", name ? name : "(missing \"name\")");
	if (strcmp(cmd, "unplug") == 0) {
		device_unplug(d);
		return json_pack("{s:b}", "ok", 1);
	}
	if (strcmp(cmd, "replug") == 0) {
		const char *port = json_string_value(json_object_get(req, "port"));
		if (port) {
			struct sim_spec tmp = {0};
			char err[SIM_SPEC_ERROR_MAX];
			gchar *text =
			    g_strdup_printf("platform=%s,port=%s", d->spec.platform->name, port);
			int rc = spec_parse(text, 0, &tmp, err, sizeof(err));
			g_free(text);
			spec_clear(&tmp);
			if (rc < 0)
				return fail("%s", err);
		}
		device_replug(d, port);
		return json_pack("{s:b}", "ok", 1);
	}
	if (strcmp(cmd, "mode") == 0) {
		int m = sim_mode_from_name(json_string_value(json_object_get(req, "mode")));
		if (m < 0 || m == SIM_MODE_UNPLUGGED)
			return fail("mode: expected listening, dfu, normal or safe%s", "");
		device_reset(d, (enum sim_mode)m);
		return json_pack("{s:b}", "ok", 1);
	}
	if (strcmp(cmd, "fault") == 0) {
		const char *faults = json_string_value(json_object_get(req, "faults"));
		char err[SIM_SPEC_ERROR_MAX];
		if (!faults)
			return fail("fault needs %s (\"\" clears)", "\"faults\"");
		g_mutex_lock(&sim->lock);
		struct sim_spec tmp = d->spec;
		int rc = spec_parse_faults(faults, &tmp, err, sizeof(err));
		if (rc == 0) {
			/* At once on both sides: DFU reads spec.faults per request, the
			 * serial engine gets them handed over now. */
			memcpy(d->spec.faults, tmp.faults, sizeof(tmp.faults));
			d->spec.n_faults = tmp.n_faults;
			cdc_faults_changed(d);
		}
		g_mutex_unlock(&sim->lock);
		if (rc < 0)
			return fail("%s", err);
		return json_pack("{s:b}", "ok", 1);
	}
	return fail("unknown command %s (plug, unplug, replug, mode, fault, state, wait-idle)",
		    cmd);
}

static void read_next(struct client *c);

static void on_line(GObject *src, GAsyncResult *res, gpointer data)
{
	struct client *c = data;
	gsize len = 0;
	g_autoptr(GError) err = NULL;
	char *line =
	    g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(src), res, &len, &err);
	if (!line) {
		g_ptr_array_remove(c->sim->idle_waiters, c);
		client_free(c);
		return;
	}
	bool deferred = false;
	if (len > CONTROL_LINE_MAX) {
		reply(c, fail("line longer than %s bytes", G_STRINGIFY(CONTROL_LINE_MAX)));
	} else if (len > 0) {
		json_error_t jerr;
		json_t *req = json_loads(line, 0, &jerr);
		json_t *r = req ? dispatch(c, req, &deferred) : fail("not JSON: %s", jerr.text);
		json_decref(req);
		if (r)
			reply(c, r);
	}
	g_free(line);
	if (!deferred)
		read_next(c);
}

static void read_next(struct client *c)
{
	g_data_input_stream_read_line_async(c->in, G_PRIORITY_DEFAULT, NULL, on_line, c);
}

/*
 * Why the simulator is not idle (NULL when it is) and when to look again
 * (*recheck, monotonic ms; UINT64_MAX: at the next event).  Idle = no reset
 * or re-enumeration scheduled, no DFU device busy (erase/program time), and
 * no CDC engine with a deadline before now + IDLE_LONG_TERM_MS (console
 * delays, YMODEM byte timeouts); longer ones do not count.
 */
static const char *busy_reason(struct sim *sim, uint64_t now, uint64_t *recheck)
{
	*recheck = UINT64_MAX;
	if (g_atomic_int_get(&sim->pending_work) > 0)
		return "a reset or re-enumeration is scheduled";
	const char *why = NULL;
	g_mutex_lock(&sim->lock);
	for (unsigned i = 0; i < sim->n_devices; i++) {
		struct sim_device *d = sim->devices[i];
		if (!d->present)
			continue;
		uint64_t due = cdc_next_deadline(d);
		if (due != UINT64_MAX && due <= now + IDLE_LONG_TERM_MS) {
			why = "a serial device has a timer running";
			*recheck = MIN(*recheck, due + 1);
		}
		if (d->mode == SIM_MODE_DFU && d->dfu.busy_until_ms > now) {
			why = "a DFU device is busy";
			*recheck = MIN(*recheck, d->dfu.busy_until_ms);
		}
	}
	g_mutex_unlock(&sim->lock);
	return why;
}

static gboolean on_idle_timer(gpointer data)
{
	idle_timer = 0;
	control_poke(data);
	return G_SOURCE_REMOVE;
}

void control_poke(struct sim *sim)
{
	if (!sim->idle_waiters || !sim->idle_waiters->len)
		return;
	uint64_t now = sim_now_ms(), recheck;
	const char *why = busy_reason(sim, now, &recheck);
	for (guint i = 0; i < sim->idle_waiters->len;) {
		struct client *c = g_ptr_array_index(sim->idle_waiters, i);
		if (why && now < c->idle_deadline) {
			recheck = MIN(recheck, c->idle_deadline);
			i++;
			continue;
		}
		g_ptr_array_remove_index(sim->idle_waiters, i);
		reply(c, why ? fail("not idle within the timeout: %s", why)
			     : json_pack("{s:b}", "ok", 1));
		read_next(c);
	}
	if (idle_timer) {
		g_source_remove(idle_timer);
		idle_timer = 0;
	}
	if (sim->idle_waiters->len && recheck != UINT64_MAX)
		idle_timer =
		    g_timeout_add((guint)(recheck > now ? recheck - now : 0), on_idle_timer, sim);
}

static gboolean on_incoming(GSocketService *svc, GSocketConnection *conn, GObject *source,
			    gpointer data)
{
	(void)svc;
	(void)source;
	struct client *c = g_new0(struct client, 1);
	c->sim = data;
	c->conn = g_object_ref(conn);
	c->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(conn)));
	c->out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
	read_next(c);
	return TRUE;
}

int control_start(struct sim *sim, const char *path, GError **error)
{
	unlink(path);
	service = g_socket_service_new();
	GSocketAddress *addr = g_unix_socket_address_new(path);
	gboolean ok =
	    g_socket_listener_add_address(G_SOCKET_LISTENER(service), addr, G_SOCKET_TYPE_STREAM,
					  G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, error);
	g_object_unref(addr);
	if (!ok)
		return -1;
	socket_path = g_strdup(path);
	g_signal_connect(service, "incoming", G_CALLBACK(on_incoming), sim);
	g_socket_service_start(service);
	return 0;
}

void control_stop(void)
{
	if (idle_timer) {
		g_source_remove(idle_timer);
		idle_timer = 0;
	}
	if (service) {
		g_socket_service_stop(service);
		g_socket_listener_close(G_SOCKET_LISTENER(service));
		g_clear_object(&service);
	}
	if (socket_path) {
		unlink(socket_path);
		g_free(socket_path);
		socket_path = NULL;
	}
}
