#include "config.h"

#include "mqtt.h"

#include "device_json.h"
#include "history.h"
#include "jobs.h"
#include "log.h"
#include "mqtt_url.h"
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Messages handed to libmosquitto and not yet confirmed (its own window is 20 for QoS > 0). */
#define MQTT_LIB_WINDOW	 64
#define MQTT_KEEPALIVE_S 30
/* A connection that has not been accepted (CONNACK) by then is given up and retried. */
#define MQTT_CONNECT_TIMEOUT_S 10
/* A changed status (job ended, device, drops) is republished at most this often. */
#define MQTT_STATUS_INTERVAL_S 1
/* Name resolution (getaddrinfo_a) is polled this often while it runs. */
#define MQTT_RESOLVE_POLL_MS 20
#define MQTT_CREDENTIAL_MAX  256
/* After connecting, the station reads its own retained device states this long. */
#define MQTT_SWEEP_S 5
/* Running jobs whose started record is kept (the daemon's job limit is far lower). */
#define MQTT_STARTED_MAX 4096
/* Failed jobs the status lists (newest last). */

struct msg {
	struct msg *next;
	char *topic;
	char *payload; /* NULL: an empty (clearing) message */
	size_t len;
	bool retain;
};

enum mqtt_state {
	MQTT_WAITING,	 /* until the retry timer */
	MQTT_RESOLVING,	 /* getaddrinfo_a runs */
	MQTT_CONNECTING, /* TCP / TLS / CONNECT sent, no CONNACK yet */
	MQTT_CONNECTED,
};

struct mqtt {
	struct event_base *base;
	struct mqtt_config cfg;
	struct registry *reg;
	struct mosquitto *mosq;
	char username[MQTT_CREDENTIAL_MAX], password[MQTT_CREDENTIAL_MAX];
	bool have_credentials;

	enum mqtt_state state;
	int fd; /* the socket the events watch, or -1 */
	struct event *read_ev, *write_ev;
	struct event *retry_timer, *tick_timer, *resolve_timer;
	struct gaicb gai;
	struct gaicb *gai_list[1];
	struct addrinfo gai_hints;
	bool gai_running;
	unsigned backoff_s;
	time_t connect_started;
	char last_error[256];
	char refused[200];   /* the CONNACK's reason, until the broker closes */
	char lib_error[160]; /* libmosquitto's last error message in this attempt (TLS) */
	unsigned attempt;    /* which of the resolved addresses this attempt uses */

	struct msg *head, *tail;
	size_t queued;	  /* in our queue */
	size_t in_flight; /* handed to libmosquitto, not yet confirmed */
	unsigned long long published, dropped, reconnects, connects;
	unsigned long long jobs_done, jobs_failed, jobs_cancelled, jobs_interrupted;
	json_t *failures; /* the newest WIRE_FAILURES_MAX failed jobs, for the status */
	json_t *started;  /* job id -> its history record at job-started, until it ends */
	bool status_dirty;
	time_t status_sent;
	time_t sweep_until; /* reading our own devices/+ until then (0: not) */

	char topic_status[MQTT_PREFIX_MAX + MQTT_NAME_MAX + 16];
};

static const char *state_name(enum mqtt_state s)
{
	switch (s) {
	case MQTT_WAITING:
		return "disconnected";
	case MQTT_RESOLVING:
	case MQTT_CONNECTING:
		return "connecting";
	case MQTT_CONNECTED:
		return "connected";
	}
	return "?";
}

/* ---- configuration ------------------------------------------------------------------ */

void mqtt_config_defaults(struct mqtt_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->topic_prefix, sizeof(c->topic_prefix), "flashd");
	c->qos = 1;
	c->queue_max = MQTT_QUEUE_DEFAULT;
}

static int config_error(struct error *err, const char *where, const char *key, const char *value,
			const char *reason)
{
	error_set(err, ERR_MQTT_CONFIG, "%s: [mqtt] %s = \"%s\": %s", where, key, value, reason);
	error_detail_str(err, "key", key);
	error_detail_str(err, "value", value);
	error_detail_str(err, "reason", reason);
	return -1;
}

bool mqtt_name_valid(const char *name, bool is_prefix)
{
	size_t n = strlen(name);
	if (n == 0 || n >= (is_prefix ? MQTT_PREFIX_MAX : MQTT_NAME_MAX))
		return false;
	if (is_prefix && (name[0] == '/' || name[n - 1] == '/' || strstr(name, "//")))
		return false; /* no empty topic level */
	for (const char *p = name; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch == '+' || ch == '#' || ch < 0x20 || ch == 0x7f || (!is_prefix && ch == '/'))
			return false;
	}
	return true;
}

int mqtt_config_set(struct mqtt_config *c, const char *key, const char *value, const char *where,
		    struct error *err)
{
	if (strcmp(key, "url") == 0) {
		if (strlen(value) >= sizeof(c->url) ||
		    mqtt_url_parse(value, c->host, sizeof(c->host), &c->port, &c->tls) < 0)
			return config_error(err, where, key, value,
					    "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]");
		snprintf(c->url, sizeof(c->url), "%s", value);
		c->enabled = true;
		return 0;
	}
	if (strcmp(key, "station") == 0 || strcmp(key, "client_id") == 0) {
		if (!mqtt_name_valid(value, false))
			return config_error(
			    err, where, key, value,
			    "a station name is 1-63 characters without '+', '#', '/' or control "
			    "characters (it is one level of every topic)");
		snprintf(c->station, sizeof(c->station), "%s", value);
		return 0;
	}
	if (strcmp(key, "topic_prefix") == 0) {
		if (!mqtt_name_valid(value, true))
			return config_error(err, where, key, value,
					    "a topic prefix is 1-127 characters without '+', '#', "
					    "control characters or empty levels ('//', leading or "
					    "trailing '/')");
		snprintf(c->topic_prefix, sizeof(c->topic_prefix), "%s", value);
		return 0;
	}
	struct {
		const char *key;
		char *dst;
	} files[] = {{"ca_file", c->ca_file},
		     {"cert_file", c->cert_file},
		     {"key_file", c->key_file},
		     {"password_file", c->password_file}};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (strcmp(key, files[i].key) == 0) {
			if (value[0] != '/' || strlen(value) >= PATH_MAX)
				return config_error(err, where, key, value,
						    "expected an absolute path");
			snprintf(files[i].dst, PATH_MAX, "%s", value);
			return 0;
		}
	}
	if (strcmp(key, "qos") == 0) {
		if (strcmp(value, "0") && strcmp(value, "1") && strcmp(value, "2"))
			return config_error(err, where, key, value, "expected 0, 1 or 2");
		c->qos = value[0] - '0';
		return 0;
	}
	if (strcmp(key, "queue") == 0) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(value, &end, 10);
		if (errno || end == value || *end || value[0] == '-' || v < 1 || v > MQTT_QUEUE_MAX)
			return config_error(err, where, key, value,
					    "expected a number of messages, 1-1000000");
		c->queue_max = (unsigned)v;
		return 0;
	}
	return config_error(err, where, key, value, "unknown key");
}

int mqtt_config_check(const struct mqtt_config *c, struct error *err)
{
	bool any = c->station[0] || c->ca_file[0] || c->cert_file[0] || c->key_file[0] ||
		   c->password_file[0];
	if (!c->enabled) {
		if (any)
			return config_error(err, "[mqtt]", "url", "",
					    "the section needs url = mqtt://HOST:PORT");
		return 0;
	}
	if (!c->station[0])
		return config_error(err, "[mqtt]", "station", "",
				    "the section needs station = NAME (this station's name)");
	if (!c->tls && (c->ca_file[0] || c->cert_file[0] || c->key_file[0]))
		return config_error(err, "[mqtt]", "url", c->url,
				    "TLS files are given but the url is not mqtts://");
	if (!c->cert_file[0] != !c->key_file[0])
		return config_error(err, "[mqtt]", c->cert_file[0] ? "key_file" : "cert_file", "",
				    "cert_file and key_file go together");
	return 0;
}

/* "username\npassword\n": readable by the daemon's user, by nobody else. */
static int read_credentials(struct mqtt *m, struct error *err)
{
	const char *path = m->cfg.password_file;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char buf[2 * MQTT_CREDENTIAL_MAX + 4];
	if (fd < 0)
		return config_error(err, "[mqtt]", "password_file", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return config_error(err, "[mqtt]", "password_file", path, "not a regular file");
	}
	if (st.st_mode & S_IROTH) {
		close(fd);
		return config_error(err, "[mqtt]", "password_file", path,
				    "the file is readable by other users (chmod o-r)");
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return config_error(err, "[mqtt]", "password_file", path, strerror(errno));
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl)
		return config_error(err, "[mqtt]", "password_file", path,
				    "expected the user name on the first line, the password on "
				    "the second");
	*nl = '\0';
	char *pw = nl + 1;
	pw[strcspn(pw, "\r\n")] = '\0';
	buf[strcspn(buf, "\r")] = '\0';
	if (!buf[0] || strlen(buf) >= MQTT_CREDENTIAL_MAX || strlen(pw) >= MQTT_CREDENTIAL_MAX)
		return config_error(err, "[mqtt]", "password_file", path,
				    "the user name is empty or a line is too long");
	snprintf(m->username, sizeof(m->username), "%s", buf);
	snprintf(m->password, sizeof(m->password), "%s", pw);
	m->have_credentials = true;
	memset(buf, 0, sizeof(buf));
	return 0;
}

/* ---- the queue ---------------------------------------------------------------------- */

static void msg_free(struct msg *q)
{
	if (!q)
		return;
	free(q->topic);
	free(q->payload);
	free(q);
}

static void pump(struct mqtt *m);
static void watch_socket(struct mqtt *m);

static void unqueue_head(struct mqtt *m)
{
	struct msg *q = m->head;
	m->head = q->next;
	if (!m->head)
		m->tail = NULL;
	m->queued--;
	msg_free(q);
}

/* Takes payload (malloc'd, or NULL for an empty message). */
static void enqueue(struct mqtt *m, const char *topic, char *payload, size_t len, bool retain)
{
	if (retain) {
		/* A retained message supersedes one of the same topic still waiting. */
		for (struct msg *q = m->head; q; q = q->next) {
			if (q->retain && strcmp(q->topic, topic) == 0) {
				free(q->payload);
				q->payload = payload;
				q->len = len;
				pump(m);
				return;
			}
		}
	}
	struct msg *q = calloc(1, sizeof(*q));
	if (!q || !(q->topic = strdup(topic))) {
		free(q);
		free(payload);
		m->dropped++;
		return;
	}
	q->payload = payload;
	q->len = len;
	q->retain = retain;
	while (m->head && m->queued + m->in_flight >= m->cfg.queue_max) {
		unqueue_head(m); /* the oldest goes */
		m->dropped++;
		m->status_dirty = true;
	}
	if (m->queued + m->in_flight >= m->cfg.queue_max) {
		/* Everything is in libmosquitto's hands: this one cannot wait. */
		m->dropped++;
		m->status_dirty = true;
		msg_free(q);
		return;
	}
	if (m->tail)
		m->tail->next = q;
	else
		m->head = q;
	m->tail = q;
	m->queued++;
	pump(m);
}

static void publish_json(struct mqtt *m, const char *topic, const json_t *obj, bool retain)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	if (!text) {
		m->dropped++;
		return;
	}
	enqueue(m, topic, text, strlen(text), retain);
}

/* Hands waiting messages to libmosquitto while connected.  mosquitto_publish()
 * may write at once (and call on_publish for QoS 0 inside), so the message
 * counts as in flight before the call.  A QoS 1/2 message it has accepted stays
 * with it (sent again after a reconnect) even when the write failed. */
static void pump(struct mqtt *m)
{
	if (m->state != MQTT_CONNECTED)
		return;
	while (m->head && m->in_flight < MQTT_LIB_WINDOW) {
		struct msg *q = m->head;
		m->in_flight++;
		int rc = mosquitto_publish(m->mosq, NULL, q->topic, (int)q->len, q->payload,
					   m->cfg.qos, q->retain);
		if (rc == MOSQ_ERR_NO_CONN) {
			m->in_flight--;
			break; /* not connected after all: the queue waits */
		}
		if (rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_NOMEM || rc == MOSQ_ERR_PAYLOAD_SIZE ||
		    rc == MOSQ_ERR_MALFORMED_UTF8 || rc == MOSQ_ERR_OVERSIZE_PACKET ||
		    rc == MOSQ_ERR_QOS_NOT_SUPPORTED) {
			log_warning("mqtt: %s not published: %s", q->topic, mosquitto_strerror(rc));
			m->in_flight--;
			m->dropped++;
		}
		unqueue_head(m);
	}
	watch_socket(m);
}

/* ---- what is published -------------------------------------------------------------- */

static void topic(const struct mqtt *m, char *buf, size_t size, const char *kind, const char *name)
{
	int n = snprintf(buf, size, "%s/%s/%s%s", m->cfg.topic_prefix, m->cfg.station, kind,
			 name ? "/" : "");
	if (!name || n < 0 || (size_t)n >= size)
		return;
	/* A device key or job id never holds these, and one level must not. */
	size_t i = (size_t)n;
	for (; *name && i + 1 < size; name++)
		buf[i++] = (*name == '+' || *name == '#' || *name == '/') ? '_' : *name;
	buf[i] = '\0';
}

static json_t *status_json(const struct mqtt *m, bool online)
{
	json_t *s = json_pack(
	    "{s:s, s:s, s:b, s:s, s:s, s:[], s:{s:I, s:I, s:I, s:I}}", "station", m->cfg.station,
	    "state", online ? "online" : "offline", "online", online, "version",
	    "flashd " FLASHD_VERSION, "server", "flashd " FLASHD_VERSION, "rules", "jobs", "done",
	    (json_int_t)m->jobs_done, "failed", (json_int_t)m->jobs_failed, "cancelled",
	    (json_int_t)m->jobs_cancelled, "interrupted", (json_int_t)m->jobs_interrupted);
	json_object_set_new(s, "counters",
			    json_pack("{s:I, s:I, s:I, s:I, s:I}", "published",
				      (json_int_t)m->published, "dropped", (json_int_t)m->dropped,
				      "queued", (json_int_t)(m->queued + m->in_flight), "queue_max",
				      (json_int_t)m->cfg.queue_max, "reconnects",
				      (json_int_t)m->reconnects));
	json_object_set_new(s, "failures",
			    m->failures ? json_deep_copy(m->failures) : json_array());
	if (m->reg)
		json_object_set_new(s, "devices",
				    json_integer((json_int_t)registry_count_present(m->reg)));
	json_object_set_new(s, "time", json_real((double)time(NULL)));
	return s;
}

static void publish_status(struct mqtt *m)
{
	json_t *s = status_json(m, true);
	publish_json(m, m->topic_status, s, true);
	json_decref(s);
	m->status_dirty = false;
	m->status_sent = time(NULL);
}

static void publish_device(struct mqtt *m, const struct device *dev, bool present)
{
	char t[sizeof(m->topic_status) + DEVICE_KEY_MAX + 16];
	topic(m, t, sizeof(t), "devices", dev->s.key);
	if (!present) {
		enqueue(m, t, NULL, 0, true); /* clears the retained state */
		return;
	}
	json_t *obj = device_to_json(dev, false);
	publish_json(m, t, obj, true);
	json_decref(obj);
}

void mqtt_device_event(struct mqtt *m, const struct device *dev, enum registry_change change)
{
	if (!m)
		return;
	publish_device(m, dev, change != REGISTRY_REMOVED && dev->s.present);
	m->status_dirty = true;
}

void mqtt_job_event(struct mqtt *m, struct job *job, const json_t *event)
{
	if (!m)
		return;
	char t[sizeof(m->topic_status) + 64];
	topic(m, t, sizeof(t), "jobs", job_id(job));
	publish_json(m, t, event, false);
	const char *name = json_string_value(json_object_get(event, "event"));
	if (name && strcmp(name, "job-started") == 0) {
		/* The history row keeps some of what the job was at its start (created,
		 * uid, images; the plan when the end has none):
		 * the record the history made then, until the job ends. */
		if (json_object_size(m->started) < MQTT_STARTED_MAX)
			json_object_set_new(m->started, job_id(job),
					    history_record_from_job(job, false));
		return;
	}
	if (!name || strcmp(name, "job-ended") != 0)
		return;
	const char *result = json_string_value(json_object_get(event, "result"));
	if (result && strcmp(result, "done") == 0)
		m->jobs_done++;
	else if (result && strcmp(result, "cancelled") == 0)
		m->jobs_cancelled++;
	else if (result && strcmp(result, "interrupted") == 0)
		m->jobs_interrupted++;
	else
		m->jobs_failed++;
	json_t *rec = history_row_from_records(json_object_get(m->started, job_id(job)),
					       history_record_from_job(job, true));
	json_object_del(m->started, job_id(job));
	topic(m, t, sizeof(t), "history", NULL);
	publish_json(m, t, rec, false);
	if (!result || strcmp(result, "done") != 0) {
		wire_failures_add(m->failures, rec);
	}
	json_decref(rec);
	/* The retained status carries the counters and the failures (the tick
	 * publishes it within a second: a burst of job ends makes one status). */
	m->status_dirty = true;
}

json_t *mqtt_status_json(const struct mqtt *m)
{
	if (!m)
		return json_pack("{s:b}", "enabled", false);
	return json_pack(
	    "{s:b, s:s, s:s, s:s, s:s, s:b, s:s?, s:I, s:I, s:I, s:I, s:I, s:I}", "enabled", true,
	    "broker", m->cfg.url, "station", m->cfg.station, "topic_prefix", m->cfg.topic_prefix,
	    "state", state_name(m->state), "connected", m->state == MQTT_CONNECTED, "last_error",
	    m->last_error[0] ? m->last_error : NULL, "queued", (json_int_t)m->queued, "in_flight",
	    (json_int_t)m->in_flight, "queue_max", (json_int_t)m->cfg.queue_max, "published",
	    (json_int_t)m->published, "dropped", (json_int_t)m->dropped, "reconnects",
	    (json_int_t)m->reconnects);
}

/* ---- the connection, in the loop ---------------------------------------------------- */

static void unwatch(struct mqtt *m)
{
	if (m->read_ev) {
		event_free(m->read_ev);
		m->read_ev = NULL;
	}
	if (m->write_ev) {
		event_free(m->write_ev);
		m->write_ev = NULL;
	}
	m->fd = -1;
}

static void schedule_retry(struct mqtt *m, const char *why)
{
	unwatch(m);
	if (why)
		snprintf(m->last_error, sizeof(m->last_error), "%s", why);
	if (m->state == MQTT_CONNECTED || m->state == MQTT_CONNECTING)
		log_warning("mqtt: %s: %s; retrying in %u s", m->cfg.url, m->last_error,
			    m->backoff_s);
	else
		log_debug("mqtt: %s: %s; retrying in %u s", m->cfg.url, m->last_error,
			  m->backoff_s);
	m->state = MQTT_WAITING;
	struct timeval tv = {.tv_sec = m->backoff_s};
	evtimer_add(m->retry_timer, &tv);
	m->backoff_s = m->backoff_s * 2 > MQTT_RETRY_MAX_S ? MQTT_RETRY_MAX_S : m->backoff_s * 2;
}

/* A libmosquitto call failed (rc): the connection is gone. */
static void lost(struct mqtt *m, int rc)
{
	char why[sizeof(m->last_error)];
	const char *what = rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc);
	if (m->lib_error[0])
		snprintf(why, sizeof(why), "%s (%s)", what, m->lib_error);
	else
		snprintf(why, sizeof(why), "%s", what);
	schedule_retry(m, why);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

/* The loop watches libmosquitto's socket: always for reading, for writing
 * while it has something to write. */
static void watch_socket(struct mqtt *m)
{
	if (m->state != MQTT_CONNECTING && m->state != MQTT_CONNECTED)
		return;
	int fd = mosquitto_socket(m->mosq);
	if (fd != m->fd)
		unwatch(m);
	if (fd < 0)
		return;
	if (!m->read_ev) {
		m->fd = fd;
		m->read_ev = event_new(m->base, fd, EV_READ | EV_PERSIST, on_io, m);
		m->write_ev = event_new(m->base, fd, EV_WRITE | EV_PERSIST, on_io, m);
		if (!m->read_ev || !m->write_ev) {
			unwatch(m);
			return;
		}
		event_add(m->read_ev, NULL);
	}
	if (mosquitto_want_write(m->mosq))
		event_add(m->write_ev, NULL);
	else
		event_del(m->write_ev);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct mqtt *m = arg;
	(void)fd;
	int rc = MOSQ_ERR_SUCCESS;
	/* loop_read also drives a TLS handshake in progress. */
	if (what & EV_READ)
		rc = mosquitto_loop_read(m->mosq, 1);
	if (rc == MOSQ_ERR_SUCCESS && m->state != MQTT_WAITING && (what & EV_WRITE)) {
		rc = mosquitto_loop_read(m->mosq, 1); /* TLS handshake progress */
		if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0)
			rc = mosquitto_loop_write(m->mosq, 1);
	}
	if (m->state == MQTT_WAITING)
		return; /* on_disconnect scheduled the retry */
	if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(m->mosq) < 0) {
		lost(m, rc ? rc : MOSQ_ERR_CONN_LOST);
		return;
	}
	pump(m);
}

static void on_connect(struct mosquitto *mosq, void *arg, int rc)
{
	struct mqtt *m = arg;
	(void)mosq;
	if (rc != 0) {
		/* Refused (bad credentials, not authorised): the broker closes the connection. */
		snprintf(m->refused, sizeof(m->refused), "the broker refused the connection: %s",
			 mosquitto_connack_string(rc));
		return;
	}
	m->state = MQTT_CONNECTED;
	m->last_error[0] = '\0';
	m->backoff_s = MQTT_RETRY_MIN_S;
	m->attempt = 0;
	if (m->connects++)
		m->reconnects++;
	log_info("mqtt: connected to %s as station %s", m->cfg.url, m->cfg.station);
	/* The broker may have lost the retained state (restarted without persistence). */
	publish_status(m);
	if (m->reg)
		for (struct device *d = registry_first(m->reg); d; d = d->next)
			if (d->s.present)
				publish_device(m, d, true);
	/* Device states retained from an earlier run (killed with boards attached)
	 * are cleared: for a few seconds the station reads its own devices/+. */
	char t[sizeof(m->topic_status) + 16];
	topic(m, t, sizeof(t), "devices", "+");
	t[strlen(t) - 1] = '+'; /* topic() would have escaped the wildcard */
	if (mosquitto_subscribe(m->mosq, NULL, t, 0) == MOSQ_ERR_SUCCESS)
		m->sweep_until = time(NULL) + MQTT_SWEEP_S;
	pump(m);
}

/* The only messages a station reads: its own retained device states, right
 * after connecting.  One whose device is not present here is cleared.  A
 * broker can make it do nothing else. */
static void on_message(struct mosquitto *mosq, void *arg, const struct mosquitto_message *msg)
{
	struct mqtt *m = arg;
	(void)mosq;
	char t[sizeof(m->topic_status) + DEVICE_KEY_MAX + 16];
	topic(m, t, sizeof(t), "devices", "");
	size_t n = strlen(t);
	if (!m->sweep_until || !msg->retain || msg->payloadlen == 0 ||
	    strncmp(msg->topic, t, n) != 0 || !msg->topic[n] || strchr(msg->topic + n, '/'))
		return;
	for (struct device *d = m->reg ? registry_first(m->reg) : NULL; d; d = d->next) {
		topic(m, t, sizeof(t), "devices", d->s.key);
		if (d->s.present && strcmp(t, msg->topic) == 0)
			return;
	}
	log_debug("mqtt: clearing %s (retained from an earlier run)", msg->topic);
	enqueue(m, msg->topic, NULL, 0, true);
}

static void on_disconnect(struct mosquitto *mosq, void *arg, int rc)
{
	struct mqtt *m = arg;
	(void)mosq;
	if (m->state == MQTT_WAITING)
		return;
	if (m->refused[0])
		schedule_retry(m, m->refused);
	else
		lost(m, rc);
}

static void on_log(struct mosquitto *mosq, void *arg, int level, const char *text)
{
	struct mqtt *m = arg;
	(void)mosq;
	if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
		log_debug("mqtt: libmosquitto: %s", text);
		snprintf(m->lib_error, sizeof(m->lib_error), "%s", text);
	}
}

static void on_publish(struct mosquitto *mosq, void *arg, int mid)
{
	struct mqtt *m = arg;
	(void)mosq;
	(void)mid;
	if (m->in_flight)
		m->in_flight--;
	m->published++;
}

static void connect_to(struct mqtt *m, const char *address)
{
	unwatch(m);
	if (m->cfg.qos == 0 && m->in_flight) {
		/* QoS 0 messages libmosquitto had not written are gone with the connection. */
		m->dropped += m->in_flight;
		m->in_flight = 0;
	}
	m->state = MQTT_CONNECTING;
	m->sweep_until = 0;
	m->refused[0] = '\0';
	m->lib_error[0] = '\0';
	int rc = mosquitto_connect_async(m->mosq, address, m->cfg.port, MQTT_KEEPALIVE_S);
	if (rc != MOSQ_ERR_SUCCESS) {
		lost(m, rc);
		return;
	}
	watch_socket(m);
}

static bool is_numeric(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void on_resolve_poll(evutil_socket_t fd, short what, void *arg)
{
	struct mqtt *m = arg;
	(void)fd;
	(void)what;
	int rc = gai_error(&m->gai);
	if (rc == EAI_INPROGRESS) {
		if (time(NULL) - m->connect_started > MQTT_CONNECT_TIMEOUT_S) {
			gai_cancel(&m->gai); /* the result is collected when it comes */
			schedule_retry(m, "resolving the broker's name timed out");
			return;
		}
		struct timeval tv = {.tv_usec = MQTT_RESOLVE_POLL_MS * 1000};
		evtimer_add(m->resolve_timer, &tv);
		return;
	}
	m->gai_running = false;
	if (rc != 0 || !m->gai.ar_result) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", m->cfg.host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		if (m->gai.ar_result)
			freeaddrinfo(m->gai.ar_result);
		m->gai.ar_result = NULL;
		if (m->state == MQTT_RESOLVING)
			schedule_retry(m, why);
		return;
	}
	/* Each attempt takes the next address (a name with an IPv6 and an IPv4
	 * address, a broker listening on one of them). */
	char addr[INET6_ADDRSTRLEN] = "";
	unsigned n = 0;
	for (const struct addrinfo *ai = m->gai.ar_result; ai; ai = ai->ai_next)
		n++;
	const struct addrinfo *ai = m->gai.ar_result;
	for (unsigned i = 0; ai && i < m->attempt % n; i++)
		ai = ai->ai_next;
	m->attempt++;
	if (ai && ai->ai_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, addr,
			  sizeof(addr));
	else if (ai && ai->ai_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, addr,
			  sizeof(addr));
	freeaddrinfo(m->gai.ar_result);
	m->gai.ar_result = NULL;
	if (m->state != MQTT_RESOLVING)
		return; /* given up meanwhile */
	if (!addr[0]) {
		schedule_retry(m, "the broker's name has no IP address");
		return;
	}
	/* TLS verifies the certificate against the name libmosquitto connects to. */
	connect_to(m, m->cfg.tls ? m->cfg.host : addr);
}

static void start_connect(struct mqtt *m)
{
	m->connect_started = time(NULL);
	if (is_numeric(m->cfg.host)) {
		connect_to(m, m->cfg.host);
		return;
	}
	if (m->gai_running) {
		/* A lookup given up earlier has not answered yet: wait for it. */
		if (gai_error(&m->gai) == EAI_INPROGRESS) {
			schedule_retry(m, "resolving the broker's name timed out");
			return;
		}
		if (m->gai.ar_result)
			freeaddrinfo(m->gai.ar_result);
		m->gai.ar_result = NULL;
		m->gai_running = false;
	}
	memset(&m->gai, 0, sizeof(m->gai));
	memset(&m->gai_hints, 0, sizeof(m->gai_hints));
	m->gai_hints.ai_family = AF_UNSPEC;
	m->gai_hints.ai_socktype = SOCK_STREAM;
	m->gai.ar_name = m->cfg.host;
	m->gai.ar_request = &m->gai_hints;
	m->gai_list[0] = &m->gai;
	struct sigevent sev = {.sigev_notify = SIGEV_NONE};
	int rc = getaddrinfo_a(GAI_NOWAIT, m->gai_list, 1, &sev);
	if (rc != 0) {
		char why[300];
		snprintf(why, sizeof(why), "cannot resolve %s: %s", m->cfg.host, gai_strerror(rc));
		schedule_retry(m, why);
		return;
	}
	m->gai_running = true;
	m->state = MQTT_RESOLVING;
	struct timeval tv = {.tv_usec = MQTT_RESOLVE_POLL_MS * 1000};
	evtimer_add(m->resolve_timer, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	start_connect(arg);
}

/* Once a second: keepalive (PINGREQ), the connect timeout, the status's counters. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct mqtt *m = arg;
	(void)fd;
	(void)what;
	time_t now = time(NULL);
	if (m->state == MQTT_CONNECTING && now - m->connect_started > MQTT_CONNECT_TIMEOUT_S) {
		schedule_retry(m, "no answer from the broker (connect timed out)");
		return;
	}
	if (m->state == MQTT_CONNECTING || m->state == MQTT_CONNECTED) {
		int rc = mosquitto_loop_misc(m->mosq);
		if (m->state == MQTT_WAITING)
			return;
		if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
			lost(m, rc);
			return;
		}
	}
	if (m->state == MQTT_CONNECTED && m->sweep_until && now > m->sweep_until) {
		char t[sizeof(m->topic_status) + 16];
		topic(m, t, sizeof(t), "devices", "+");
		t[strlen(t) - 1] = '+';
		mosquitto_unsubscribe(m->mosq, NULL, t);
		m->sweep_until = 0;
	}
	if (m->state == MQTT_CONNECTED && m->status_dirty &&
	    now - m->status_sent >= MQTT_STATUS_INTERVAL_S)
		publish_status(m);
	watch_socket(m);
}

static int tls_setup(struct mqtt *m, struct error *err)
{
	const struct mqtt_config *c = &m->cfg;
	int rc;
	if (c->ca_file[0])
		rc = mosquitto_tls_set(m->mosq, c->ca_file, NULL,
				       c->cert_file[0] ? c->cert_file : NULL,
				       c->key_file[0] ? c->key_file : NULL, NULL);
	else
		rc = mosquitto_int_option(m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
	if (rc == MOSQ_ERR_SUCCESS && !c->ca_file[0] && c->cert_file[0])
		rc = mosquitto_tls_set(m->mosq, NULL, "/etc/ssl/certs", c->cert_file, c->key_file,
				       NULL);
	if (rc != MOSQ_ERR_SUCCESS)
		return config_error(err, "[mqtt]", c->ca_file[0] ? "ca_file" : "cert_file",
				    c->ca_file[0] ? c->ca_file : c->cert_file,
				    rc == MOSQ_ERR_ERRNO ? strerror(errno)
							 : mosquitto_strerror(rc));
	/* Certificate verification is on: tls_insecure stays false, peer verification required. */
	return mosquitto_tls_opts_set(m->mosq, 1, NULL, NULL) == MOSQ_ERR_SUCCESS
		   ? 0
		   : config_error(err, "[mqtt]", "url", c->url, "cannot set the TLS options");
}

struct mqtt *mqtt_new(struct event_base *base, const struct mqtt_config *cfg, struct registry *reg,
		      struct error *err)
{
	if (mqtt_config_check(cfg, err) < 0)
		return NULL;
	struct mqtt *m = calloc(1, sizeof(*m));
	if (!m) {
		error_set(err, ERR_INTERNAL, "out of memory");
		return NULL;
	}
	mosquitto_lib_init(); /* counted: mosquitto_lib_cleanup() in mqtt_free() */
	m->base = base;
	m->cfg = *cfg;
	m->reg = reg;
	m->fd = -1;
	m->backoff_s = MQTT_RETRY_MIN_S;
	m->state = MQTT_WAITING;
	m->failures = json_array();
	m->started = json_object();
	snprintf(m->topic_status, sizeof(m->topic_status), "%s/%s/status", cfg->topic_prefix,
		 cfg->station);
	if (cfg->password_file[0] && read_credentials(m, err) < 0)
		goto fail;
	/* The client id is the station: a second daemon under the same name takes over. */
	char id[MQTT_NAME_MAX + 16];
	snprintf(id, sizeof(id), "flashd-%s", cfg->station);
	m->mosq = mosquitto_new(id, true, m);
	if (!m->mosq) {
		error_set(err, ERR_INTERNAL, "mosquitto_new: %s", strerror(errno));
		goto fail;
	}
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_connect_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_callback_set(m->mosq, on_publish);
	mosquitto_message_callback_set(m->mosq, on_message);
	mosquitto_log_callback_set(m->mosq, on_log);
	if (m->have_credentials &&
	    mosquitto_username_pw_set(m->mosq, m->username, m->password) != MOSQ_ERR_SUCCESS) {
		error_set(err, ERR_INTERNAL, "mosquitto_username_pw_set failed");
		goto fail;
	}
	if (cfg->tls && tls_setup(m, err) < 0)
		goto fail;
	json_t *will = status_json(m, false);
	json_object_del(will, "counters");
	json_object_del(will, "jobs");
	json_object_del(will, "devices");
	json_object_del(will, "time");
	json_object_del(will, "failures");
	char *text = json_dumps(will, JSON_COMPACT);
	json_decref(will);
	int rc = text ? mosquitto_will_set(m->mosq, m->topic_status, (int)strlen(text), text,
					   cfg->qos, true)
		      : MOSQ_ERR_NOMEM;
	free(text);
	if (rc != MOSQ_ERR_SUCCESS) {
		error_set(err, ERR_INTERNAL, "mosquitto_will_set: %s", mosquitto_strerror(rc));
		goto fail;
	}
	m->retry_timer = evtimer_new(base, on_retry, m);
	m->resolve_timer = evtimer_new(base, on_resolve_poll, m);
	m->tick_timer = event_new(base, -1, EV_PERSIST, on_tick, m);
	if (!m->retry_timer || !m->resolve_timer || !m->tick_timer) {
		error_set(err, ERR_INTERNAL, "out of memory");
		goto fail;
	}
	return m;
fail:
	mqtt_free(m);
	return NULL;
}

void mqtt_start(struct mqtt *m)
{
	if (!m)
		return;
	struct timeval second = {.tv_sec = 1};
	event_add(m->tick_timer, &second);
	log_info("mqtt: publishing to %s as station %s (topics %s/%s/...)", m->cfg.url,
		 m->cfg.station, m->cfg.topic_prefix, m->cfg.station);
	start_connect(m);
}

void mqtt_free(struct mqtt *m)
{
	if (!m)
		return;
	if (m->state == MQTT_CONNECTED && m->mosq) {
		/* A clean stop says offline itself (a disconnect suppresses the will). */
		json_t *s = status_json(m, false);
		publish_json(m, m->topic_status, s, true); /* replaces a waiting "online" */
		json_decref(s);
		/* The loop has stopped: give what is queued up to a second to leave. */
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;;) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			double spent = (double)(now.tv_sec - t0.tv_sec) +
				       (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
			if (m->state != MQTT_CONNECTED || spent > 1.0 ||
			    (!m->head && !m->in_flight && !mosquitto_want_write(m->mosq)))
				break;
			pump(m);
			if (mosquitto_loop(m->mosq, 50, 1) != MOSQ_ERR_SUCCESS)
				break;
		}
		m->state = MQTT_WAITING; /* on_disconnect: no retry */
		mosquitto_disconnect(m->mosq);
		mosquitto_loop_write(m->mosq, 1);
	}
	m->state = MQTT_WAITING;
	unwatch(m);
	if (m->gai_running) {
		if (gai_cancel(&m->gai) == EAI_NOTCANCELED) {
			/* Its thread still writes into m->gai: wait for it (shutdown only). */
			const struct gaicb *list[1] = {&m->gai};
			gai_suspend(list, 1, NULL);
		}
		if (m->gai.ar_result)
			freeaddrinfo(m->gai.ar_result);
	}
	if (m->mosq)
		mosquitto_destroy(m->mosq);
	mosquitto_lib_cleanup();
	if (m->retry_timer)
		event_free(m->retry_timer);
	if (m->resolve_timer)
		event_free(m->resolve_timer);
	if (m->tick_timer)
		event_free(m->tick_timer);
	while (m->head) {
		struct msg *q = m->head;
		m->head = q->next;
		msg_free(q);
	}
	memset(m->password, 0, sizeof(m->password));
	json_decref(m->failures);
	json_decref(m->started);
	free(m);
}
