#include "settings.h"

#include "cleanup.h"
#include "log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static struct {
	const struct timeout_def *def;
	unsigned value;
} timeouts[TIMEOUTS_MAX];
static size_t n_timeouts;

void timeouts_register(const struct timeout_def *defs)
{
	for (; defs && defs->key; defs++) {
		bool known = false;
		for (size_t i = 0; i < n_timeouts; i++)
			known = known || strcmp(timeouts[i].def->key, defs->key) == 0;
		if (known)
			continue;
		assert(n_timeouts < TIMEOUTS_MAX);
		timeouts[n_timeouts].def = defs;
		timeouts[n_timeouts].value = defs->default_ms;
		n_timeouts++;
	}
}

int timeouts_set(const char *key, unsigned ms)
{
	for (size_t i = 0; i < n_timeouts; i++) {
		if (strcmp(timeouts[i].def->key, key) == 0) {
			timeouts[i].value = ms;
			return 0;
		}
	}
	return -1;
}

void timeouts_reset(void)
{
	n_timeouts = 0;
}

unsigned timeout_ms(const char *key)
{
	for (size_t i = 0; i < n_timeouts; i++)
		if (strcmp(timeouts[i].def->key, key) == 0)
			return timeouts[i].value;
	/* An unregistered key is a programming error: the table is the documentation. */
	assert(!"timeout key not registered");
	return 0;
}

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	/* Connecting (the socket's group) is not administering: no admin group unless named. */
	c->admin_group[0] = '\0';
	snprintf(c->socket_group, sizeof(c->socket_group), "flashd");
	c->socket_mode = 0660;
	c->max_clients = 256;
	c->clients_per_uid = 32;
	c->max_jobs = 64;
	c->jobs_per_uid = 16;
	c->waiting_jobs_per_uid = 8;
	c->output_buffer_max = 1024 * 1024;
	c->image_memory_max = 256u * 1024 * 1024;
	c->job_history = 64;
	c->replug_timeout_s = 30;
	c->uploads_per_uid = 16;
	c->upload_bytes_per_uid = 64u * 1024 * 1024;
	history_config_defaults(&c->history);
	auto_config_defaults(&c->autoflash);
	mqtt_config_defaults(&c->mqtt);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

static int parse_number(const char *value, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(value, &end, 10);
	if (errno || end == value || *end || v > max || value[0] == '-')
		return -1;
	*out = v;
	return 0;
}

static int set_string(char *dst, size_t size, const char *key, const char *value, const char *where,
		      struct error *err)
{
	if (strlen(value) >= size)
		return error_set(err, ERR_USAGE, "%s: %s is longer than %zu bytes", where, key,
				 size - 1);
	memcpy(dst, value, strlen(value) + 1);
	return 0;
}

static int parse_bool(const char *value, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
										    "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(value, yes[i]) == 0)
			return *out = true, 0;
		if (strcasecmp(value, no[i]) == 0)
			return *out = false, 0;
	}
	return -1;
}

static int set_daemon_key(struct config *c, const char *key, const char *value, const char *where,
			  struct error *err)
{
	if (strcmp(key, "admin_group") == 0)
		return set_string(c->admin_group, sizeof(c->admin_group), key, value, where, err);
	if (strcmp(key, "socket_group") == 0)
		return set_string(c->socket_group, sizeof(c->socket_group), key, value, where, err);
	if (strcmp(key, "lock_dir") == 0) {
		if (value[0] != '/')
			return error_set(err, ERR_USAGE, "%s: lock_dir must be an absolute path",
					 where);
		return set_string(c->lock_dir, sizeof(c->lock_dir), key, value, where, err);
	}
	if (strcmp(key, "replug_timeout_s") == 0) {
		/* How long a job waits for its device to come back after it left
		 * mid-job (0: the job ends device-gone at once). */
		unsigned long long v;
		if (parse_number(value, 3600, &v) < 0)
			return error_set(err, ERR_USAGE,
					 "%s: replug_timeout_s = \"%s\" is not a number of seconds "
					 "from 0 to 3600",
					 where, value);
		c->replug_timeout_s = (unsigned)v;
		return 0;
	}
	if (strcmp(key, "socket_mode") == 0) {
		char *end;
		errno = 0;
		unsigned long m = strtoul(value, &end, 8);
		if (errno || end == value || *end || m > 0777 || value[0] == '-')
			return error_set(err, ERR_USAGE,
					 "%s: socket_mode = \"%s\" is not an octal mode", where,
					 value);
		c->socket_mode = (unsigned)m;
		return 0;
	}
	if (strcmp(key, "world_socket") == 0) {
		if (parse_bool(value, &c->world_socket) < 0)
			return error_set(err, ERR_USAGE,
					 "%s: world_socket = \"%s\" is not yes or no", where,
					 value);
		return 0;
	}
	log_warning("%s: unknown key [daemon] %s (ignored)", where, key);
	return 0;
}

static int set_key(struct config *c, const char *section, const char *key, const char *value,
		   const char *where, struct error *err)
{
	unsigned long long v = 0;
	if (strcmp(section, "daemon") == 0)
		return set_daemon_key(c, key, value, where, err);
	if (strcmp(section, "auto") == 0 && strcmp(key, "rules_dir") == 0) {
		if (value[0] != '/' || strlen(value) >= sizeof(c->autoflash.rules_dir))
			return error_set(err, ERR_USAGE, "%s: rules_dir must be an absolute path",
					 where);
		snprintf(c->autoflash.rules_dir, sizeof(c->autoflash.rules_dir), "%s", value);
		return 0;
	}
	if (strcmp(section, "mqtt") == 0)
		return mqtt_config_set(&c->mqtt, key, value, where, err);
	bool numeric = strcmp(section, "limits") == 0 || strcmp(section, "timeouts") == 0 ||
		       strcmp(section, "history") == 0 || strcmp(section, "auto") == 0;
	if (numeric && parse_number(value, 1ull << 40, &v) < 0)
		return error_set(err, ERR_USAGE, "%s: %s = \"%s\" is not a number", where, key,
				 value);
	if (strcmp(section, "timeouts") == 0) {
		if (v > 24ull * 3600 * 1000)
			return error_set(err, ERR_USAGE, "%s: %s is longer than a day", where, key);
		if (timeouts_set(key, (unsigned)v) < 0)
			log_warning("%s: unknown timeout key %s (ignored)", where, key);
		return 0;
	}
	if (strcmp(section, "history") == 0) {
		/* 0 switches a retention limit off. */
		if (strcmp(key, "max_age_days") == 0 && v <= 100000)
			c->history.max_age_days = (unsigned)v;
		else if (strcmp(key, "max_jobs") == 0 && v <= 1000000000)
			c->history.max_jobs = (unsigned)v;
		else if (strcmp(key, "retention_interval_s") == 0 && v >= 1 && v <= 7 * 86400)
			c->history.retention_interval_s = (unsigned)v;
		else
			return error_set(err, ERR_USAGE, "%s: unknown or out-of-range [history] %s",
					 where, key);
		return 0;
	}
	if (strcmp(section, "auto") == 0) {
		if (strcmp(key, "max_rules_per_uid") == 0 && v <= RULES_MAX)
			c->autoflash.max_rules_per_uid = (unsigned)v;
		else if (strcmp(key, "max_image_bytes_per_uid") == 0)
			c->autoflash.max_image_bytes_per_uid = v;
		else
			return error_set(err, ERR_USAGE, "%s: unknown or out-of-range [auto] %s",
					 where, key);
		return 0;
	}
	if (strcmp(section, "limits") == 0) {
		if (v == 0)
			return error_set(err, ERR_USAGE, "%s: %s must be positive", where, key);
		if (strcmp(key, "clients") == 0 && v <= 65536)
			c->max_clients = (unsigned)v;
		else if (strcmp(key, "clients_per_uid") == 0 && v <= 65536)
			c->clients_per_uid = (unsigned)v;
		else if (strcmp(key, "jobs") == 0 && v <= 65536)
			c->max_jobs = (unsigned)v;
		else if (strcmp(key, "jobs_per_uid") == 0 && v <= 65536)
			c->jobs_per_uid = (unsigned)v;
		else if (strcmp(key, "waiting_jobs_per_uid") == 0 && v <= 65536)
			c->waiting_jobs_per_uid = (unsigned)v;
		else if (strcmp(key, "output_buffer_bytes") == 0)
			c->output_buffer_max = (size_t)v;
		else if (strcmp(key, "image_memory_bytes") == 0)
			c->image_memory_max = (size_t)v;
		else if (strcmp(key, "job_history") == 0 && v <= 65536)
			c->job_history = (unsigned)v;
		else if (strcmp(key, "uploads_per_uid") == 0 && v <= 65536)
			c->uploads_per_uid = (unsigned)v;
		else if (strcmp(key, "upload_bytes_per_uid") == 0)
			c->upload_bytes_per_uid = (size_t)v;
		else
			log_warning("%s: unknown or out-of-range limit %s (ignored)", where, key);
		return 0;
	}
	log_warning("%s: unknown key [%s] %s (ignored)", where, section, key);
	return 0;
}

int config_parse(struct config *c, const char *text, const char *origin, struct error *err)
{
	char section[64] = "";
	unsigned lineno = 0;
	const char *p = text;
	while (*p) {
		char line[CONFIG_LINE_MAX], where[CONFIG_LINE_MAX / 2];
		size_t n = strcspn(p, "\n");
		lineno++;
		snprintf(where, sizeof(where), "%s:%u", origin, lineno);
		if (n >= sizeof(line))
			return error_set(err, ERR_USAGE, "%s: line too long", where);
		memcpy(line, p, n);
		line[n] = '\0';
		p += n + (p[n] == '\n');
		char *hash = strpbrk(line, "#;");
		if (hash)
			*hash = '\0';
		char *s = trim(line);
		if (!*s)
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			if (!close || close[1])
				return error_set(err, ERR_USAGE, "%s: malformed section header",
						 where);
			*close = '\0';
			snprintf(section, sizeof(section), "%s", trim(s + 1));
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq)
			return error_set(err, ERR_USAGE, "%s: expected key = value", where);
		*eq = '\0';
		if (set_key(c, section, trim(s), trim(eq + 1), where, err) < 0)
			return -1;
	}
	return mqtt_config_check(&c->mqtt, err);
}

int config_load(struct config *c, const char *path, struct error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, ERR_USAGE, "cannot open config file %s: %s", path,
				 strerror(errno));
	_cleanup_free_ char *buf = malloc(CONFIG_FILE_MAX + 1);
	if (!buf)
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	size_t len = 0;
	ssize_t r;
	while (len < CONFIG_FILE_MAX && (r = read(fd, buf + len, CONFIG_FILE_MAX - len)) > 0)
		len += (size_t)r;
	buf[len] = '\0';
	return config_parse(c, buf, path, err);
}
