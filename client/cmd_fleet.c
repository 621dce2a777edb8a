/*
 * flashctl fleet: many stations in one view.  Subscribes at the MQTT broker the
 * stations publish to (flashd's [mqtt], proto/PROTOCOL.md "MQTT") and shows
 * every station, its devices, its live jobs and its recent failures: a table
 * (redrawn while it runs on a terminal), or one JSON object per station and
 * line (--json).  --once prints what the broker holds (the retained status and
 * devices) and exits; --timeout S stops after S seconds.  A blocking client
 * loop: this is flashctl, not the daemon.
 */
#include "errors.h"
#include "mqtt_url.h"
#include "render.h"
#include "verbs.h"
#include "wire.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --once: the retained messages have come when the broker has been quiet this long. */
#define FLEET_QUIET_S	 0.5
#define FLEET_ONCE_MAX_S 5.0
/* Stations, devices per station, live jobs per station, message size: bounds on what is kept. */
#define FLEET_STATIONS_MAX 1000
#define FLEET_DEVICES_MAX  1000
#define FLEET_JOBS_MAX	   1000
#define FLEET_MESSAGE_MAX  (1024 * 1024)

struct fleet {
	const struct cli_global *g;
	char prefix[256];
	json_t
	    *stations; /* name -> {"status","devices":{key:DEVICE},"jobs":{id:JOB},"history":[]} */
	bool connected, subscribed, refused;
	int connect_rc;
	double last_message;
	bool changed;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *str_or(const json_t *obj, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : def;
}

static json_t *station(struct fleet *f, const char *name)
{
	json_t *st = json_object_get(f->stations, name);
	if (st || json_object_size(f->stations) >= FLEET_STATIONS_MAX)
		return st;
	st = json_pack("{s:s, s:n, s:{}, s:{}, s:[]}", "station", name, "status", "devices", "jobs",
		       "failures");
	json_object_set_new(f->stations, name, st);
	return st;
}

/* A job's event: the live view keeps its device, state and progress until it ends. */
static void job_event(json_t *st, const char *id, const json_t *ev)
{
	json_t *jobs = json_object_get(st, "jobs");
	const char *name = str_or(ev, "event", "");
	if (strcmp(name, "job-ended") == 0) {
		json_object_del(jobs, id);
		return;
	}
	json_t *j = json_object_get(jobs, id);
	if (!j) {
		if (json_object_size(jobs) >= FLEET_JOBS_MAX)
			return;
		j = json_pack("{s:s, s:n, s:s, s:n}", "job", id, "device", "state", "queued",
			      "percent");
		json_object_set_new(jobs, id, j);
	}
	const json_t *rec = json_object_get(ev, "record");
	if (json_is_string(json_object_get(rec, "device")))
		json_object_set(j, "device", json_object_get(rec, "device"));
	if (json_is_string(json_object_get(rec, "state")))
		json_object_set(j, "state", json_object_get(rec, "state"));
	if (json_is_string(json_object_get(ev, "state")))
		json_object_set(j, "state", json_object_get(ev, "state"));
	if (json_is_integer(json_object_get(ev, "percent")))
		json_object_set(j, "percent", json_object_get(ev, "percent"));
}

/* A history record: a failure joins the station's recent failures. */
static void history_record(json_t *st, const json_t *rec)
{
	const char *result = str_or(rec, "result", "");
	if (strcmp(result, "done") == 0)
		return;
	json_t *failures = json_object_get(st, "failures");
	const json_t *f;
	size_t i;
	json_array_foreach(failures, i, f) if (json_equal(json_object_get(f, "job"),
							  json_object_get(rec, "job"))) return;
	wire_failures_add(failures, rec);
}

static void on_message(struct mosquitto *mosq, void *arg, const struct mosquitto_message *msg)
{
	struct fleet *f = arg;
	(void)mosq;
	f->last_message = now_s();
	size_t plen = strlen(f->prefix);
	if (strncmp(msg->topic, f->prefix, plen) != 0 || msg->topic[plen] != '/' ||
	    msg->payloadlen > FLEET_MESSAGE_MAX)
		return;
	/* STATION/KIND[/NAME] */
	char rest[512];
	snprintf(rest, sizeof(rest), "%s", msg->topic + plen + 1);
	char *kind = strchr(rest, '/');
	if (!kind)
		return;
	*kind++ = '\0';
	char *name = strchr(kind, '/');
	if (name)
		*name++ = '\0';
	json_t *payload =
	    msg->payloadlen ? json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL) : NULL;
	if (msg->payloadlen && !json_is_object(payload)) {
		json_decref(payload);
		return; /* not one of ours */
	}
	json_t *st = NULL;
	if (strcmp(kind, "status") == 0 && !name && payload) {
		if ((st = station(f, rest)))
			json_object_set(st, "status", payload);
	} else if (strcmp(kind, "devices") == 0 && name) {
		if ((st = station(f, rest))) {
			json_t *devs = json_object_get(st, "devices");
			if (!payload)
				json_object_del(
				    devs, name); /* unplugged: the retained state is cleared */
			else if (json_object_size(devs) < FLEET_DEVICES_MAX ||
				 json_object_get(devs, name))
				json_object_set(devs, name, payload);
		}
	} else if (strcmp(kind, "jobs") == 0 && name && payload) {
		if ((st = station(f, rest)))
			job_event(st, name, payload);
	} else if (strcmp(kind, "history") == 0 && !name && payload) {
		if ((st = station(f, rest)))
			history_record(st, payload);
	}
	if (st)
		f->changed = true;
	json_decref(payload);
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc)
{
	struct fleet *f = arg;
	f->connect_rc = rc;
	if (rc) {
		f->refused = true;
		return;
	}
	f->connected = true;
	const char *kinds[] = {"status", "devices/+", "jobs/+", "history"};
	for (size_t i = 0; i < 4; i++) {
		char t[512];
		snprintf(t, sizeof(t), "%s/+/%s", f->prefix, kinds[i]);
		mosquitto_subscribe(mosq, NULL, t, 1);
	}
}

static void on_subscribe(struct mosquitto *mosq, void *arg, int mid, int n, const int *granted)
{
	struct fleet *f = arg;
	(void)mosq;
	(void)mid;
	(void)n;
	(void)granted;
	f->subscribed = true;
	f->last_message = now_s();
}

/* {"station","online","status","devices":[...],"jobs":[live...],"failures":[...]} */
static json_t *station_view(const json_t *st)
{
	const json_t *status = json_object_get(st, "status");
	json_t *devices = json_array(), *jobs = json_array();
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)json_object_get(st, "devices"), key, v)
	    json_array_append(devices, v);
	json_object_foreach((json_t *)json_object_get(st, "jobs"), key, v)
	    json_array_append(jobs, v);
	/* Jobs the devices say they hold, when no event of theirs was seen (--once). */
	const json_t *d;
	size_t i;
	json_array_foreach(devices, i, d)
	{
		const char *job = json_string_value(json_object_get(d, "job"));
		if (job && !json_object_get(json_object_get(st, "jobs"), job))
			json_array_append_new(jobs, json_pack("{s:s, s:O?, s:n, s:n}", "job", job,
							      "device", json_object_get(d, "key"),
							      "state", "percent"));
	}
	/* The station's own list of failures (retained), then any seen since. */
	json_t *failures = json_array();
	json_array_foreach(json_object_get(status, "failures"), i, d)
	    json_array_append(failures, (json_t *)d);
	json_array_foreach(json_object_get(st, "failures"), i, d)
	{
		bool known = false;
		const json_t *x;
		size_t k;
		json_array_foreach(failures, k, x) known =
		    known || json_equal(json_object_get(x, "job"), json_object_get(d, "job"));
		if (!known)
			json_array_append(failures, (json_t *)d);
	}
	while (json_array_size(failures) > 5)
		json_array_remove(failures, 0);
	return json_pack(
	    "{s:O, s:O?, s:O, s:o, s:o, s:o}", "station", json_object_get(st, "station"), "online",
	    json_object_get(status, "online"), "status", status ? (json_t *)status : json_null(),
	    "devices", devices, "jobs", jobs, "failures", failures);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The stations, sorted by name (the caller frees the array, not the names). */
static const char **sorted_names(const struct fleet *f, size_t *n)
{
	*n = json_object_size(f->stations);
	const char **names = calloc(*n + 1, sizeof(*names));
	size_t i = 0;
	const char *key;
	json_t *v;
	json_object_foreach(f->stations, key, v) if (names) names[i++] = key;
	if (names)
		qsort(names, *n, sizeof(*names), cmp_names);
	return names;
}

static void print_table(const struct fleet *f)
{
	const struct cli_global *g = f->g;
	size_t n;
	const char **names = sorted_names(f, &n);
	if (!names)
		return;
	if (n == 0)
		printf("no stations (nothing under %s/ at the broker yet)\n", f->prefix);
	else
		printf("%-20s %-8s %7s %5s %8s  %s\n", "STATION", "STATE", "DEVICES", "JOBS",
		       "DROPPED", "VERSION");
	for (size_t i = 0; i < n; i++) {
		json_t *view = station_view(json_object_get(f->stations, names[i]));
		const json_t *status = json_object_get(view, "status");
		const char *state = str_or(status, "state", "unknown");
		bool online = strcmp(state, "online") == 0;
		printf("%-20s %s%-8s%s %7zu %5zu %8lld  %s\n", names[i],
		       g->no_color ? "" : (online ? "\033[32m" : "\033[31m"), state,
		       g->no_color ? "" : "\033[0m",
		       json_array_size(json_object_get(view, "devices")),
		       json_array_size(json_object_get(view, "jobs")),
		       (long long)json_integer_value(
			   json_object_get(json_object_get(status, "counters"), "dropped")),
		       str_or(status, "version", "-"));
		const json_t *d;
		size_t k;
		json_array_foreach(json_object_get(view, "devices"), k, d)
		{
			const json_t *job = NULL, *x;
			size_t j;
			json_array_foreach(json_object_get(view, "jobs"), j,
					   x) if (json_equal(json_object_get(x, "device"),
							     json_object_get(d, "key"))) job = x;
			char jobtext[96] = "";
			if (job) {
				const json_t *pct = json_object_get(job, "percent");
				snprintf(jobtext, sizeof(jobtext), "%.8s %s",
					 str_or(job, "job", ""), str_or(job, "state", "running"));
				if (json_is_integer(pct))
					snprintf(jobtext + strlen(jobtext),
						 sizeof(jobtext) - strlen(jobtext), " %lld%%",
						 (long long)json_integer_value(pct));
			}
			printf("  %-26s %-10s %-10s %s\n", str_or(d, "key", "?"),
			       str_or(d, "platform", "-"), str_or(d, "mode", "-"),
			       jobtext[0] ? jobtext : "idle");
		}
		json_array_foreach(json_object_get(view, "failures"), k, d) printf(
		    "  %sfailed%s %-26s %s %s: %s\n", g->no_color ? "" : "\033[31m",
		    g->no_color ? "" : "\033[0m", str_or(d, "device", "?"), str_or(d, "ended", "-"),
		    str_or(d, "error", str_or(d, "result", "?")), str_or(d, "error_message", ""));
		json_decref(view);
	}
	free(names);
	fflush(stdout);
}

static void print_json(const struct fleet *f)
{
	size_t n;
	const char **names = sorted_names(f, &n);
	for (size_t i = 0; names && i < n; i++) {
		json_t *view = station_view(json_object_get(f->stations, names[i]));
		render_json_line(view);
		json_decref(view);
	}
	free(names);
}

static void show(struct fleet *f, bool redraw)
{
	if (f->g->json) {
		print_json(f);
		return;
	}
	if (redraw && f->g->is_tty)
		printf("\033[H\033[2J");
	print_table(f);
}

static int broker_error(const struct cli_global *g, const char *url, const char *reason)
{
	struct error err;
	error_init(&err);
	error_set(&err, ERR_BROKER_UNREACHABLE, "cannot subscribe at %s: %s", url, reason);
	error_detail_str(&err, "broker", url);
	error_detail_str(&err, "reason", reason);
	return render_error_free(g, &err);
}

/* "username\npassword\n", as flashd's password_file. */
static int read_credentials(const char *path, char *user, char *pass, size_t size)
{
	char buf[1024];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl)
		return -1;
	*nl = '\0';
	nl[1 + strcspn(nl + 1, "\r\n")] = '\0';
	buf[strcspn(buf, "\r")] = '\0';
	if (strlen(buf) >= size || strlen(nl + 1) >= size)
		return -1;
	snprintf(user, size, "%s", buf);
	snprintf(pass, size, "%s", nl + 1);
	return 0;
}

static const struct option fleet_options[] = {
    {"broker", required_argument, NULL, 'b'},
    {"prefix", required_argument, NULL, 'p'},
    {"json", no_argument, NULL, 'j'},
    {"once", no_argument, NULL, '1'},
    {"timeout", required_argument, NULL, 't'},
    {"ca-file", required_argument, NULL, 'C'},
    {"cert-file", required_argument, NULL, 'c'},
    {"key-file", required_argument, NULL, 'k'},
    {"password-file", required_argument, NULL, 'P'},
    {0},
};

static int cmd_fleet_exec(int argc, char **argv, const struct cli_global *g)
{
	struct cli_global local = *g;
	struct fleet f = {.g = &local};
	const char *url = NULL, *ca = NULL, *cert = NULL, *key = NULL, *pwfile = NULL;
	bool once = false;
	double timeout = 0;
	char *end;
	int o;
	snprintf(f.prefix, sizeof(f.prefix), "flashd");
	while ((o = getopt_long(argc, argv, "", fleet_options, NULL)) != -1) {
		switch (o) {
		case 'b':
			url = optarg;
			break;
		case 'p':
			if (!*optarg || strlen(optarg) >= sizeof(f.prefix) || strpbrk(optarg, "+#"))
				return render_usage_error(
				    g, "--prefix: a topic prefix without + or #");
			snprintf(f.prefix, sizeof(f.prefix), "%s", optarg);
			break;
		case 'j':
			local.json = true;
			break;
		case '1':
			once = true;
			break;
		case 't':
			timeout = strtod(optarg, &end);
			if (*end || !(timeout > 0) || timeout > 86400)
				return render_usage_error(
				    g, "--timeout wants seconds (0 < S <= 86400)");
			break;
		case 'C':
			ca = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'P':
			pwfile = optarg;
			break;
		default:
			return cmd_usage_error(g, &cmd_fleet_entry);
		}
	}
	if (optind < argc || !url)
		return cmd_usage_error(g, &cmd_fleet_entry);
	char host[256];
	int port;
	bool tls;
	if (mqtt_url_parse(url, host, sizeof(host), &port, &tls) < 0)
		return render_usage_error(
		    g, "--broker wants mqtt://HOST[:PORT] or mqtts://HOST[:PORT]");
	if (!cert != !key)
		return render_usage_error(g, "--cert-file and --key-file go together");

	mosquitto_lib_init();
	char id[64];
	snprintf(id, sizeof(id), "flashctl-fleet-%ld", (long)getpid());
	struct mosquitto *mosq = mosquitto_new(id, true, &f);
	int rc = mosq ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
	f.stations = json_object();
	if (mosq) {
		mosquitto_connect_callback_set(mosq, on_connect);
		mosquitto_subscribe_callback_set(mosq, on_subscribe);
		mosquitto_message_callback_set(mosq, on_message);
	}
	if (rc == MOSQ_ERR_SUCCESS && pwfile) {
		char user[256], pass[256];
		if (read_credentials(pwfile, user, pass, sizeof(user)) < 0) {
			mosquitto_destroy(mosq);
			mosquitto_lib_cleanup();
			json_decref(f.stations);
			return render_usage_error(
			    g,
			    "--password-file: cannot read a user name and a password (two lines)");
		}
		rc = mosquitto_username_pw_set(mosq, user, pass);
		memset(pass, 0, sizeof(pass));
	}
	if (rc == MOSQ_ERR_SUCCESS && tls) {
		if (ca || cert)
			rc = mosquitto_tls_set(mosq, ca, ca ? NULL : "/etc/ssl/certs", cert, key,
					       NULL);
		else
			rc = mosquitto_int_option(mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
	}
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_connect_async(mosq, host, port, 30); /* bounded below by --timeout */
	char reason[256] = "";
	if (rc != MOSQ_ERR_SUCCESS)
		snprintf(reason, sizeof(reason), "%s",
			 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));

	double start = now_s(), last_draw = 0;
	while (!reason[0]) {
		rc = mosquitto_loop(mosq, 100, 1);
		double t = now_s();
		if (f.refused) {
			snprintf(reason, sizeof(reason), "%s",
				 mosquitto_connack_string(f.connect_rc));
			break;
		}
		if (rc != MOSQ_ERR_SUCCESS) {
			if (!f.connected || once) {
				snprintf(reason, sizeof(reason), "%s",
					 rc == MOSQ_ERR_ERRNO ? strerror(errno)
							      : mosquitto_strerror(rc));
				break;
			}
			/* Live: the broker went away; keep the view and try again. */
			usleep(1000 * 1000);
			mosquitto_reconnect(mosq);
		}
		if (!f.subscribed && t - start > (timeout ? timeout : FLEET_ONCE_MAX_S)) {
			snprintf(reason, sizeof(reason), "no answer from the broker");
			break;
		}
		if (once && f.subscribed &&
		    (t - f.last_message >= FLEET_QUIET_S ||
		     t - start >= (timeout ? timeout : FLEET_ONCE_MAX_S)))
			break;
		if (timeout && t - start >= timeout)
			break;
		if (!once && f.subscribed && f.changed && t - last_draw >= 0.25) {
			show(&f, true);
			f.changed = false;
			last_draw = t;
		}
	}
	int status = 0;
	if (reason[0])
		status = broker_error(g, url, reason);
	else if (once || !local.json)
		show(&f, !once);
	if (mosq) {
		mosquitto_disconnect(mosq);
		mosquitto_destroy(mosq);
	}
	mosquitto_lib_cleanup();
	json_decref(f.stations);
	return status;
}

const struct cmd_entry cmd_fleet_entry = {
    .name = "fleet",
    .options = fleet_options,
    .usage = "--broker URL [--prefix P] [--json] [--once] [--timeout S]\n"
	     "[--ca-file F] [--cert-file F --key-file F] [--password-file F]",
    .summary = "all stations publishing to an MQTT broker, in one view",
    .exec = cmd_fleet_exec,
};
