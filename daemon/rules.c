#include "rules.h"

#include "log.h"
#include "osver.h"
#include "platform.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RULES_DIR_DEFAULT "/etc/flashd/rules.d"

struct label {
	char port[DEVICE_PORT_PATH_MAX];
	char label[JOB_LABEL_MAX];
};

struct rules {
	struct rule *list;
	char dir[PATH_MAX]; /* STATE_DIR/auto, "" without a state directory */
	struct auto_config cfg;
	struct image_cache *images;
	struct label labels[RULES_LABELS_MAX];
	unsigned n_labels;
	json_t *done_pending; /* done-sets of rules not loaded (yet): kept on save */
};

struct image_cache *rules_image_cache(struct rules *r)
{
	return r->images;
}

void auto_config_defaults(struct auto_config *c)
{
	snprintf(c->rules_dir, sizeof(c->rules_dir), "%s", RULES_DIR_DEFAULT);
	c->max_rules_per_uid = 32;
	c->max_image_bytes_per_uid = 64ull * 1024 * 1024;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- small helpers ------------------------------------------------------- */

static void argv_free(char **argv)
{
	for (size_t i = 0; argv[i]; i++) {
		free(argv[i]);
		argv[i] = NULL;
	}
}

static void rule_free(struct rules *r, struct rule *rule)
{
	if (!rule)
		return;
	for (unsigned i = 0; i < rule->n_images; i++)
		if (rule->images[i].ref)
			image_cache_put(r->images, rule->images[i].ref);
	argv_free(rule->on_success);
	argv_free(rule->on_failure);
	free(rule->done);
	free(rule);
}

static int rule_error(struct error *err, const char *rule, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int rule_error(struct error *err, const char *rule, const char *field, const char *fmt, ...)
{
	char msg[ERROR_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	error_set(err, ERR_RULE_INVALID, "%s", msg);
	error_detail_str(err, "reason", msg);
	if (field)
		error_detail_str(err, "field", field);
	if (rule && rule[0])
		error_detail_str(err, "rule", rule);
	return -1;
}

/* Writes text to path atomically (temporary file, rename); -1 and logs on failure. */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		log_error("auto: cannot write %s: %s", tmp, strerror(errno));
		return -1;
	}
	const char *p = data;
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_error("auto: cannot write %s: %s", tmp, strerror(errno));
			close(fd);
			unlink(tmp);
			return -1;
		}
		done += (size_t)n;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		log_error("auto: cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int save_json(const char *path, json_t *value)
{
	char *text = json_dumps(value, JSON_INDENT(1) | JSON_SORT_KEYS);
	int rc = text ? write_atomic(path, text, strlen(text), 0640) : -1;
	free(text);
	return rc;
}

/* Splits a hook command line into argv: words separated by blanks, "double"
 * or 'single' quotes group, backslash escapes one character.  No shell. */
static int split_argv(const char *s, char **argv, struct error *err, const char *rule,
		      const char *field)
{
	size_t n = 0;
	char word[1024];
	while (*s) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s)
			break;
		size_t len = 0;
		char quote = 0;
		for (; *s && (quote || (*s != ' ' && *s != '\t')); s++) {
			char ch = *s;
			if (!quote && (ch == '"' || ch == '\'')) {
				quote = ch;
				continue;
			}
			if (quote && ch == quote) {
				quote = 0;
				continue;
			}
			if (ch == '\\' && s[1] && quote != '\'')
				ch = *++s;
			if (len + 1 >= sizeof(word))
				return rule_error(err, rule, field, "%s: a word is too long",
						  field);
			word[len++] = ch;
		}
		if (quote)
			return rule_error(err, rule, field, "%s: unterminated quote", field);
		if (n >= RULE_ARGV_MAX)
			return rule_error(err, rule, field, "%s: more than %d words", field,
					  RULE_ARGV_MAX);
		word[len] = '\0';
		argv[n++] = strdup(word);
	}
	argv[n] = NULL;
	if (n == 0)
		return rule_error(err, rule, field, "%s: empty command", field);
	if (argv[0][0] != '/')
		return rule_error(err, rule, field,
				  "%s: the program must be an absolute path (no shell, no PATH "
				  "search): %s",
				  field, argv[0]);
	return 0;
}

static bool id_ok(const char *id)
{
	if (!id[0] || strlen(id) >= RULE_ID_MAX)
		return false;
	for (const char *p = id; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("-_.:@", *p))
			return false;
	return true;
}

static void random_id(char out[RULE_ID_MAX])
{
	uint8_t b[4] = {0};
	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		static unsigned counter;
		unsigned v = (unsigned)time(NULL) ^ (unsigned)getpid() << 16 ^ ++counter;
		memcpy(b, &v, sizeof(b));
	}
	snprintf(out, RULE_ID_MAX, "r%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

/* ---- fields (socket requests, stored rules and rule files share them) ---- */

static int get_str(const json_t *o, const char *key, char *out, size_t size, const char *rule,
		   struct error *err)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return rule_error(err, rule, key, "\"%s\" must be a string", key);
	if (json_string_length(v) >= size)
		return rule_error(err, rule, key, "\"%s\" is longer than %zu bytes", key, size - 1);
	snprintf(out, size, "%s", json_string_value(v));
	return 0;
}

static int get_bool(const json_t *o, const char *key, bool *out, const char *rule,
		    struct error *err)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return rule_error(err, rule, key, "\"%s\" must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

static int get_int(const json_t *o, const char *key, long long lo, long long hi, long long *out,
		   const char *rule, struct error *err)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return rule_error(err, rule, key, "\"%s\" must be an integer from %lld to %lld",
				  key, lo, hi);
	*out = json_integer_value(v);
	return 0;
}

static int get_argv(const json_t *o, const char *key, char **argv, const char *rule,
		    struct error *err)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return 0;
	if (json_is_string(v))
		return split_argv(json_string_value(v), argv, err, rule, key);
	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > RULE_ARGV_MAX)
		return rule_error(err, rule, key, "\"%s\" must be a command line or an argv array",
				  key);
	size_t i;
	const json_t *w;
	json_array_foreach(v, i, w)
	{
		if (!json_is_string(w) || json_string_length(w) >= 1024)
			return rule_error(err, rule, key, "\"%s\": every word must be a string",
					  key);
		argv[i] = strdup(json_string_value(w));
	}
	argv[json_array_size(v)] = NULL;
	if (argv[0][0] != '/')
		return rule_error(err, rule, key, "%s: the program must be an absolute path: %s",
				  key, argv[0]);
	return 0;
}

static const char *const known_keys[] = {
    "id",
    "platform",
    "port",
    "label",
    "device",
    "mode",
    "os_older_than",
    "once",
    "skip_installed",
    "priority",
    "max_jobs",
    "paused",
    "on_success",
    "on_failure",
    "hook_timeout_s",
    "images",
    "owner",
    "created",
    "request",
    "file",
    "done",
    NULL,
};

/* Fills rule's match, options and hooks from o (images are the caller's). */
static int rule_fields(struct rule *rule, const json_t *o, bool hooks_allowed, struct error *err)
{
	char platform[32] = "", mode[16] = "";
	long long prio = 0, max_jobs = 0, timeout = RULE_HOOK_TIMEOUT_S;
	const char *id = rule->id;
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)o, key, v)
	{
		bool known = false;
		for (size_t i = 0; known_keys[i] && !known; i++)
			known = strcmp(known_keys[i], key) == 0;
		if (!known && strcmp(key, "id") != 0)
			return rule_error(err, id, key, "unknown field \"%s\"", key);
	}
	rule->mode = -1;
	rule->skip_installed = true;
	if (get_str(o, "platform", platform, sizeof(platform), id, err) < 0 ||
	    get_str(o, "port", rule->port, sizeof(rule->port), id, err) < 0 ||
	    get_str(o, "label", rule->label, sizeof(rule->label), id, err) < 0 ||
	    get_str(o, "device", rule->device_glob, sizeof(rule->device_glob), id, err) < 0 ||
	    get_str(o, "mode", mode, sizeof(mode), id, err) < 0 ||
	    get_str(o, "os_older_than", rule->os_older_than, sizeof(rule->os_older_than), id, err) <
		0 ||
	    get_bool(o, "once", &rule->once, id, err) < 0 ||
	    get_bool(o, "skip_installed", &rule->skip_installed, id, err) < 0 ||
	    get_bool(o, "paused", &rule->paused, id, err) < 0 ||
	    get_int(o, "priority", -1000000, 1000000, &prio, id, err) < 0 ||
	    get_int(o, "max_jobs", 0, 65536, &max_jobs, id, err) < 0 ||
	    get_int(o, "hook_timeout_s", 1, RULE_HOOK_TIMEOUT_MAXS, &timeout, id, err) < 0)
		return -1;
	if (platform[0] && !(rule->platform = platform_by_name(platform)))
		return rule_error(err, id, "platform", "unknown platform \"%s\"", platform);
	if (mode[0]) {
		static const enum device_mode modes[] = {DEVICE_MODE_UNKNOWN, DEVICE_MODE_NORMAL,
							 DEVICE_MODE_LISTENING, DEVICE_MODE_DFU,
							 DEVICE_MODE_SAFE};
		for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
			if (strcmp(device_mode_name(modes[i]), mode) == 0)
				rule->mode = (int)modes[i];
		if (rule->mode < 0)
			return rule_error(err, id, "mode",
					  "unknown mode \"%s\" (listening, dfu, normal, safe)",
					  mode);
	}
	if (rule->os_older_than[0] &&
	    osver_parse(rule->os_older_than, &(int){0}, &(int){0}, &(int){0}) < 0)
		return rule_error(err, id, "os_older_than",
				  "\"%s\" is not a Device OS version (4.0.2)", rule->os_older_than);
	rule->priority = (int)prio;
	rule->max_jobs = (unsigned)max_jobs;
	rule->hook_timeout_s = (unsigned)timeout;
	bool has_hooks = json_object_get(o, "on_success") || json_object_get(o, "on_failure");
	if (has_hooks && !hooks_allowed) {
		const char *field = json_object_get(o, "on_success") ? "on_success" : "on_failure";
		error_set(err, ERR_HOOK_NOT_ALLOWED,
			  "a rule added over the socket may not run programs (\"%s\"): hooks come "
			  "only from root-owned rule files",
			  field);
		error_detail_str(err, "reason", "rule added over the socket");
		error_detail_str(err, "field", field);
		return -1;
	}
	if (get_argv(o, "on_success", rule->on_success, id, err) < 0 ||
	    get_argv(o, "on_failure", rule->on_failure, id, err) < 0)
		return -1;
	return 0;
}

/* ---- images ------------------------------------------------------------------ */

static int load_image_path(struct rules *r, struct rule *rule, const char *path, const char *name,
			   struct error *err)
{
	struct rule_image *im = &rule->images[rule->n_images];
	if (rule->n_images >= WIRE_IMAGES_MAX)
		return rule_error(err, rule->id, "images", "more than %d images", WIRE_IMAGES_MAX);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		error_set(err, ERR_FILE_UNREADABLE, "rule %s: cannot open %s: %s", rule->id, path,
			  strerror(errno));
		error_detail_int(err, "errno", errno);
		error_detail_str(err, "file", path);
		return -1;
	}
	int rc = image_cache_load_fd(r->images, fd, name, &im->ref, err);
	close(fd);
	if (rc < 0)
		return -1;
	snprintf(im->name, sizeof(im->name), "%s", name);
	snprintf(im->path, sizeof(im->path), "%s", path);
	rule->n_images++;
	return 0;
}

/* Copies the fd's bytes to the content-addressed store (if not there yet). */
static int store_image(struct rules *r, int fd, const struct image_ref *ref, char *out, size_t size,
		       struct error *err)
{
	char dir[PATH_MAX + 16];
	snprintf(dir, sizeof(dir), "%s/images", r->dir);
	if (mkdir(dir, 0750) < 0 && errno != EEXIST)
		goto fail;
	if ((size_t)snprintf(out, size, "%s/%s", dir, ref->sha256_hex) >= size)
		goto fail;
	if (access(out, R_OK) == 0)
		return 0;
	uint8_t *buf = malloc(ref->bytes ? ref->bytes : 1);
	size_t got = 0;
	while (buf && got < ref->bytes) {
		ssize_t n = pread(fd, buf + got, ref->bytes - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	int rc = buf && got == ref->bytes ? write_atomic(out, buf, got, 0640) : -1;
	free(buf);
	if (rc == 0)
		return 0;
fail:
	error_set(err, ERR_INTERNAL, "cannot store the image in %s: %s", dir, strerror(errno));
	error_detail_int(err, "errno", errno);
	return -1;
}

/* ---- persistence ------------------------------------------------------------- */

static json_t *done_json(const struct rule *rule)
{
	json_t *a = json_array();
	for (size_t i = 0; i < rule->n_done; i++)
		json_array_append_new(a, json_string(rule->done[i]));
	return a;
}

/*
 * The done-sets: done.json holds them all, done.log the devices added since
 * (one "RULE<TAB>DEVICE" line each, appended: a board flashed costs one short
 * write, not a rewrite of every set).  Loading replays the log and writes the
 * whole again (compaction), as does removing a rule.
 */
static void save_done(struct rules *r)
{
	if (!r->dir[0])
		return;
	json_t *o = json_deep_copy(r->done_pending);
	for (struct rule *rule = r->list; rule; rule = rule->next)
		if (rule->n_done)
			json_object_set_new(o, rule->id, done_json(rule));
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/done.json", r->dir);
	int rc = save_json(path, o);
	json_decref(o);
	snprintf(path, sizeof(path), "%s/done.log", r->dir);
	if (rc == 0 && truncate(path, 0) < 0 && errno != ENOENT)
		log_warning("auto: cannot truncate %s: %s", path, strerror(errno));
}

static void append_done(struct rules *r, const struct rule *rule, const char *device_id)
{
	if (!r->dir[0])
		return;
	char path[PATH_MAX + 16], line[RULE_ID_MAX + DEVICE_ID_LEN + 8];
	snprintf(path, sizeof(path), "%s/done.log", r->dir);
	int n = snprintf(line, sizeof(line), "%s\t%s\n", rule->id, device_id);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0 || write(fd, line, (size_t)n) != n)
		log_error("auto: cannot record that rule %s flashed %s in %s: %s", rule->id,
			  device_id, path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* done.log's lines into done_pending (before the rules adopt their sets). */
static void replay_done_log(struct rules *r)
{
	char path[PATH_MAX + 16], line[256];
	snprintf(path, sizeof(path), "%s/done.log", r->dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *tab = strchr(line, '\t'), *nl = strchr(line, '\n');
		if (!tab || !nl) /* a torn last line: the board is flashed again, at worst */
			continue;
		*tab = *nl = '\0';
		json_t *a = json_object_get(r->done_pending, line);
		if (!a)
			json_object_set_new(r->done_pending, line, a = json_array());
		if (strlen(tab + 1) <= DEVICE_ID_LEN)
			json_array_append_new(a, json_string(tab + 1));
	}
	fclose(f);
}

static void save_rules(struct rules *r)
{
	if (!r->dir[0])
		return;
	json_t *a = json_array();
	for (struct rule *rule = r->list; rule; rule = rule->next)
		if (!rule->from_file) {
			json_t *o = rule_to_json(rule);
			json_object_del(o, "done");
			json_object_del(o, "running");
			json_array_append_new(a, o);
		}
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/rules.json", r->dir);
	save_json(path, a);
	json_decref(a);
}

static int cmp_id(const void *a, const void *b)
{
	return strcasecmp(a, b);
}

bool rule_done_has(const struct rule *rule, const char *device_id)
{
	return device_id[0] && rule->n_done &&
	       bsearch(device_id, rule->done, rule->n_done, sizeof(rule->done[0]), cmp_id);
}

static void done_insert(struct rule *rule, const char *device_id)
{
	if (!device_id[0] || rule_done_has(rule, device_id) || rule->n_done >= RULE_DONE_MAX)
		return;
	if (rule->n_done == rule->cap_done) {
		size_t cap = rule->cap_done ? rule->cap_done * 2 : 16;
		void *p = realloc(rule->done, cap * sizeof(rule->done[0]));
		if (!p)
			return;
		rule->done = p;
		rule->cap_done = cap;
	}
	snprintf(rule->done[rule->n_done++], sizeof(rule->done[0]), "%s", device_id);
	qsort(rule->done, rule->n_done, sizeof(rule->done[0]), cmp_id);
}

void rules_done_add(struct rules *r, struct rule *rule, const char *device_id)
{
	if (rule_done_has(rule, device_id))
		return;
	done_insert(rule, device_id);
	append_done(r, rule, device_id);
}

/* The done-set kept for a rule id (from done.json), moved into the rule. */
static void adopt_done(struct rules *r, struct rule *rule)
{
	json_t *a = json_object_get(r->done_pending, rule->id);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) if (json_is_string(v) && json_string_length(v) <= DEVICE_ID_LEN)
	    done_insert(rule, json_string_value(v));
	json_object_del(r->done_pending, rule->id);
}

static json_t *read_json_file(const char *path)
{
	json_error_t je;
	json_t *v = json_load_file(path, 0, &je);
	if (!v && errno != ENOENT && access(path, F_OK) == 0)
		log_error("auto: %s: %s (line %d)", path, je.text, je.line);
	return v;
}

static void append(struct rules *r, struct rule *rule)
{
	struct rule **pp = &r->list;
	while (*pp)
		pp = &(*pp)->next;
	*pp = rule;
	adopt_done(r, rule);
}

static size_t rules_count(struct rules *r)
{
	size_t n = 0;
	for (struct rule *x = r->list; x; x = x->next)
		n++;
	return n;
}

static void load_state(struct rules *r)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/done.json", r->dir);
	json_t *done = read_json_file(path);
	if (json_is_object(done)) {
		json_decref(r->done_pending);
		r->done_pending = done;
	} else {
		json_decref(done);
	}
	replay_done_log(r);
	snprintf(path, sizeof(path), "%s/rules.json", r->dir);
	json_t *a = read_json_file(path);
	size_t i;
	json_t *o;
	json_array_foreach(a, i, o)
	{
		struct error err;
		error_init(&err);
		struct rule *rule = calloc(1, sizeof(*rule));
		const char *id = json_string_value(json_object_get(o, "id"));
		if (!rule || !id || !id_ok(id)) {
			free(rule);
			continue;
		}
		snprintf(rule->id, sizeof(rule->id), "%s", id);
		rule->owner = (uid_t)json_integer_value(json_object_get(o, "owner"));
		rule->created = json_number_value(json_object_get(o, "created"));
		json_t *fields = json_deep_copy(o);
		json_object_del(fields, "images");
		json_t *match = json_object_get(o, "match");
		json_object_update(fields, match);
		json_object_del(fields, "match");
		json_t *opts = json_object_get(o, "options");
		json_object_update(fields, opts);
		json_object_del(fields, "options");
		json_object_del(fields, "hooks");
		json_object_del(fields, "source");
		int rc = rule_fields(rule, fields, false, &err);
		json_decref(fields);
		size_t k;
		json_t *img;
		json_array_foreach(json_object_get(o, "images"), k, img)
		{
			char p[PATH_MAX + 80];
			const char *sha = json_string_value(json_object_get(img, "sha256"));
			const char *name = json_string_value(json_object_get(img, "file"));
			if (rc < 0)
				break;
			if (!sha || strlen(sha) != 64 || strchr(sha, '/')) {
				rc = rule_error(&err, rule->id, "images", "bad stored image");
				break;
			}
			snprintf(p, sizeof(p), "%s/images/%s", r->dir, sha);
			rc = load_image_path(r, rule, p, name ? name : sha, &err);
		}
		if (rc < 0 || rules_find(r, rule->id) || rules_count(r) >= RULES_MAX) {
			log_error("auto: stored rule %s is dropped: %s", rule->id,
				  error_is_set(&err) ? err.message : "duplicate or too many");
			rule_free(r, rule);
		} else {
			append(r, rule);
		}
		error_clear(&err);
	}
	json_decref(a);
}

/* ---- rule files ----------------------------------------------------------------- */

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Owned by root (or by the daemon's own user, who could change the daemon
 * anyway) and writable by nobody else: the only files whose hooks run. */
static bool trusted(const struct stat *st)
{
	return (st->st_uid == 0 || st->st_uid == geteuid()) && !(st->st_mode & (S_IWGRP | S_IWOTH));
}

static json_t *file_error(json_t *errors, struct error *err, const char *path, unsigned line)
{
	if (err->code != ERR_RULE_INVALID) {
		/* Keep the cause's own code, and say where. */
		error_detail_str(err, "file", path);
	} else {
		error_detail_str(err, "path", path);
		if (line)
			error_detail_int(err, "line", line);
	}
	log_error("auto: %s%s%u: %s", path, line ? ":" : "", line, err->message);
	json_array_append_new(errors, error_to_json(err));
	error_clear(err);
	return errors;
}

/* One [rule] section (its fields as JSON strings) -> a rule, or NULL with err. */
static struct rule *rule_from_section(struct rules *r, json_t *fields, json_t *images,
				      const char *path, bool hooks_ok, struct error *err)
{
	struct rule *rule = calloc(1, sizeof(*rule));
	if (!rule) {
		error_set(err, ERR_INTERNAL, "out of memory");
		return NULL;
	}
	rule->from_file = true;
	snprintf(rule->file, sizeof(rule->file), "%s", path);
	rule->created = now_s();
	snprintf(rule->id, sizeof(rule->id), "%s",
		 json_string_value(json_object_get(fields, "id")));
	if (!id_ok(rule->id)) {
		rule_error(err, rule->id, "id", "bad rule id \"%s\" (letters, digits, -_.:@)",
			   rule->id);
		goto fail;
	}
	/* Numbers and booleans arrive as text. */
	const char *key;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(fields, tmp, key, v)
	{
		const char *s = json_string_value(v);
		if (strcmp(key, "once") == 0 || strcmp(key, "skip_installed") == 0 ||
		    strcmp(key, "paused") == 0) {
			bool yes =
			    strcmp(s, "yes") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0;
			bool no =
			    strcmp(s, "no") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0;
			if (!yes && !no) {
				rule_error(err, rule->id, key, "%s must be yes or no", key);
				goto fail;
			}
			json_object_set_new(fields, key, json_boolean(yes));
		} else if (strcmp(key, "priority") == 0 || strcmp(key, "max_jobs") == 0 ||
			   strcmp(key, "hook_timeout_s") == 0) {
			char *end;
			long long n = strtoll(s, &end, 10);
			if (end == s || *end) {
				rule_error(err, rule->id, key, "%s must be an integer", key);
				goto fail;
			}
			json_object_set_new(fields, key, json_integer(n));
		}
	}
	if (rule_fields(rule, fields, hooks_ok, err) < 0)
		goto fail;
	if (json_array_size(images) == 0) {
		rule_error(err, rule->id, "image", "a rule needs at least one image = PATH");
		goto fail;
	}
	size_t i;
	json_array_foreach(images, i, v)
	{
		const char *p = json_string_value(v);
		const char *slash = strrchr(p, '/');
		if (p[0] != '/') {
			rule_error(err, rule->id, "image", "image paths must be absolute: %s", p);
			goto fail;
		}
		if (load_image_path(r, rule, p, slash ? slash + 1 : p, err) < 0)
			goto fail;
	}
	return rule;
fail:
	rule_free(r, rule);
	return NULL;
}

static void finish_section(struct rules *r, json_t *fields, json_t *images, const char *path,
			   unsigned line, unsigned nth, bool hooks_ok, json_t *errors)
{
	struct error err;
	error_init(&err);
	if (!json_object_get(fields, "id")) {
		/* The file's name ("photon.conf" -> "photon"), then photon.2 ... */
		char id[RULE_ID_MAX];
		const char *base = strrchr(path, '/');
		base = base ? base + 1 : path;
		size_t n = strlen(base) > 5 ? strlen(base) - 5 : strlen(base);
		if (n >= RULE_ID_MAX - 8)
			n = RULE_ID_MAX - 8;
		if (nth > 1)
			snprintf(id, sizeof(id), "%.*s.%u", (int)n, base, nth);
		else
			snprintf(id, sizeof(id), "%.*s", (int)n, base);
		json_object_set_new(fields, "id", json_string(id));
	}
	struct rule *rule = rule_from_section(r, fields, images, path, hooks_ok, &err);
	if (rule && (rules_find(r, rule->id) || rules_count(r) >= RULES_MAX)) {
		rule_error(&err, rule->id, "id", "rule id %s is used twice, or more than %d rules",
			   rule->id, RULES_MAX);
		rule_free(r, rule);
		rule = NULL;
	}
	if (!rule) {
		file_error(errors, &err, path, line);
		return;
	}
	append(r, rule);
	if (rule->port[0] && rule->label[0] && !rules_port_label(r, rule->port)[0] &&
	    r->n_labels < RULES_LABELS_MAX) {
		struct label *l = &r->labels[r->n_labels++];
		snprintf(l->port, sizeof(l->port), "%s", rule->port);
		snprintf(l->label, sizeof(l->label), "%s", rule->label);
	}
}

static void read_rule_file(struct rules *r, const char *path, json_t *errors)
{
	struct error err;
	error_init(&err);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > RULES_FILE_MAX) {
		rule_error(&err, NULL, NULL, "cannot read the rule file (%s)",
			   fd < 0 ? strerror(errno) : "not a regular file of at most 64 KiB");
		if (fd >= 0)
			close(fd);
		file_error(errors, &err, path, 0);
		return;
	}
	bool hooks_ok = trusted(&st);
	json_t *fields = NULL, *images = NULL;
	unsigned lineno = 0, section_line = 0, nth = 0;
	bool in_labels = false;
	lseek(fd, 0, SEEK_SET);
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return;
	}
	char buf[2048];
	while (fgets(buf, sizeof(buf), f)) {
		lineno++;
		char *hash = buf[0] == '#' || buf[0] == ';' ? buf : strstr(buf, " #");
		if (hash)
			*hash = '\0';
		char *s = trim(buf);
		if (!*s)
			continue;
		if (*s == '[') {
			if (fields)
				finish_section(r, fields, images, path, section_line, nth, hooks_ok,
					       errors);
			json_decref(fields);
			json_decref(images);
			fields = images = NULL;
			in_labels = false;
			if (strcmp(s, "[rule]") == 0) {
				fields = json_object();
				images = json_array();
				section_line = lineno;
				nth++;
			} else if (strcmp(s, "[labels]") == 0) {
				in_labels = true;
			} else {
				rule_error(&err, NULL, NULL,
					   "unknown section %s ([rule] or [labels])", s);
				file_error(errors, &err, path, lineno);
				break;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq || (!fields && !in_labels)) {
			rule_error(&err, NULL, NULL,
				   eq ? "key = value outside a [rule] or [labels] section"
				      : "expected key = value");
			file_error(errors, &err, path, lineno);
			json_decref(fields);
			fields = NULL;
			break;
		}
		*eq = '\0';
		char *key = trim(s), *value = trim(eq + 1);
		if (in_labels) {
			if (r->n_labels < RULES_LABELS_MAX && strlen(key) < DEVICE_PORT_PATH_MAX) {
				struct label *l = &r->labels[r->n_labels++];
				snprintf(l->port, sizeof(l->port), "%s", key);
				snprintf(l->label, sizeof(l->label), "%s", value);
			}
			continue;
		}
		if (strcmp(key, "image") == 0)
			json_array_append_new(images, json_string(value));
		else
			json_object_set_new(fields, key, json_string(value));
	}
	fclose(f);
	if (fields)
		finish_section(r, fields, images, path, section_line, nth, hooks_ok, errors);
	json_decref(fields);
	json_decref(images);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

json_t *rules_reload_files(struct rules *r)
{
	json_t *errors = json_array();
	json_t *running = json_object();
	/* Drop the file rules, keeping their done-sets (and counts of running jobs)
	 * for the reloaded ones. */
	for (struct rule **pp = &r->list; *pp;) {
		struct rule *rule = *pp;
		if (rule->from_file) {
			if (rule->n_done)
				json_object_set_new(r->done_pending, rule->id, done_json(rule));
			if (rule->running)
				json_object_set_new(running, rule->id, json_integer(rule->running));
			*pp = rule->next;
			rule_free(r, rule);
		} else {
			pp = &rule->next;
		}
	}
	r->n_labels = 0;
	unsigned files = 0;
	DIR *d = opendir(r->cfg.rules_dir);
	if (!d) {
		if (errno != ENOENT)
			log_warning("auto: cannot read the rules directory %s: %s",
				    r->cfg.rules_dir, strerror(errno));
	} else {
		char *names[RULES_FILES_MAX];
		unsigned n = 0;
		struct dirent *e;
		while ((e = readdir(d)) && n < RULES_FILES_MAX) {
			size_t len = strlen(e->d_name);
			if (e->d_name[0] != '.' && len > 5 &&
			    strcmp(e->d_name + len - 5, ".conf") == 0)
				names[n++] = strdup(e->d_name);
		}
		closedir(d);
		qsort(names, n, sizeof(names[0]), cmp_str);
		for (unsigned i = 0; i < n; i++) {
			char path[PATH_MAX * 2];
			snprintf(path, sizeof(path), "%s/%s", r->cfg.rules_dir, names[i]);
			if (names[i]) {
				read_rule_file(r, path, errors);
				files++;
			}
			free(names[i]);
		}
	}
	for (struct rule *rule = r->list; rule; rule = rule->next)
		if (rule->from_file)
			rule->running =
			    (unsigned)json_integer_value(json_object_get(running, rule->id));
	json_decref(running);
	size_t n_rules = rules_count(r);
	log_info("auto: %zu rule(s), %u rule file(s) read from %s, %zu error(s)", n_rules, files,
		 r->cfg.rules_dir, json_array_size(errors));
	return json_pack("{s:I, s:i, s:s, s:o}", "rules", (json_int_t)n_rules, "files", files,
			 "dir", r->cfg.rules_dir, "errors", errors);
}

/* ---- public ------------------------------------------------------------------------ */

struct rules *rules_new(const char *state_dir, const struct auto_config *cfg,
			struct image_cache *images)
{
	struct rules *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cfg = *cfg;
	r->images = images;
	r->done_pending = json_object();
	if (state_dir) {
		snprintf(r->dir, sizeof(r->dir), "%s/auto", state_dir);
		if (mkdir(r->dir, 0750) < 0 && errno != EEXIST) {
			log_error("auto: cannot create %s: %s; rules added over the socket will "
				  "not survive a restart",
				  r->dir, strerror(errno));
			r->dir[0] = '\0';
		}
	}
	return r;
}

void rules_free(struct rules *r)
{
	if (!r)
		return;
	while (r->list) {
		struct rule *rule = r->list;
		r->list = rule->next;
		rule_free(r, rule);
	}
	json_decref(r->done_pending);
	free(r);
}

void rules_load(struct rules *r)
{
	if (r->dir[0])
		load_state(r);
	json_decref(rules_reload_files(r));
	save_done(r); /* the log, compacted */
}

struct rule *rules_first(struct rules *r)
{
	return r->list;
}

struct rule *rules_find(struct rules *r, const char *id)
{
	for (struct rule *rule = r->list; rule; rule = rule->next)
		if (strcmp(rule->id, id) == 0)
			return rule;
	return NULL;
}

const char *rules_port_label(struct rules *r, const char *port)
{
	for (unsigned i = 0; port && port[0] && i < r->n_labels; i++)
		if (strcmp(r->labels[i].port, port) == 0)
			return r->labels[i].label;
	for (struct rule *rule = r->list; port && port[0] && rule; rule = rule->next)
		if (rule->label[0] && strcmp(rule->port, port) == 0)
			return rule->label;
	return "";
}

json_t *rules_labels_json(struct rules *r)
{
	json_t *o = json_object();
	for (unsigned i = 0; i < r->n_labels; i++)
		json_object_set_new(o, r->labels[i].port, json_string(r->labels[i].label));
	for (struct rule *rule = r->list; rule; rule = rule->next)
		if (rule->port[0] && rule->label[0] && !json_object_get(o, rule->port))
			json_object_set_new(o, rule->port, json_string(rule->label));
	return o;
}

struct rule *rules_add_request(struct rules *r, const json_t *req, const int *fds, unsigned n_fds,
			       uid_t owner, struct error *err)
{
	struct wire_flash f;
	memset(&f, 0, sizeof(f));
	if (wire_parse_images(req, "auto-add", n_fds, &f, err) < 0)
		return NULL;
	struct rule *rule = calloc(1, sizeof(*rule));
	if (!rule) {
		error_set(err, ERR_INTERNAL, "out of memory");
		return NULL;
	}
	rule->owner = owner;
	rule->created = now_s();
	do
		random_id(rule->id);
	while (rules_find(r, rule->id));
	json_t *fields = json_deep_copy(req);
	json_object_del(fields, "images");
	json_object_del(fields, "id");
	json_object_del(fields, "request");
	json_object_del(fields, "owner");
	json_object_del(fields, "created");
	json_object_del(fields, "file");
	json_object_del(fields, "done");
	int rc = rule_fields(rule, fields, false, err);
	json_decref(fields);
	if (rc < 0)
		goto fail;
	/* Quotas: this owner's socket rules and the image bytes they keep. */
	unsigned n_rules = 0;
	unsigned long long bytes = 0;
	for (struct rule *x = r->list; x; x = x->next)
		if (!x->from_file && x->owner == owner) {
			n_rules++;
			for (unsigned i = 0; i < x->n_images; i++)
				bytes += x->images[i].ref->bytes;
		}
	if (rules_count(r) >= RULES_MAX || n_rules + 1 > r->cfg.max_rules_per_uid) {
		error_set(err, ERR_RULE_QUOTA_EXCEEDED, "uid %u already has %u rule(s) (limit %u)",
			  (unsigned)owner, n_rules, r->cfg.max_rules_per_uid);
		error_detail_int(err, "uid", owner);
		error_detail_int(err, "rules", n_rules);
		error_detail_int(err, "limit", r->cfg.max_rules_per_uid);
		goto fail;
	}
	for (unsigned i = 0; i < f.n_images; i++) {
		struct rule_image *im = &rule->images[i];
		int fd = fds[f.images[i].fd_index];
		if (image_cache_load_fd(r->images, fd, f.images[i].name, &im->ref, err) < 0)
			goto fail;
		rule->n_images = i + 1;
		snprintf(im->name, sizeof(im->name), "%s", f.images[i].name);
		bytes += im->ref->bytes;
		if (bytes > r->cfg.max_image_bytes_per_uid) {
			error_set(err, ERR_RULE_QUOTA_EXCEEDED,
				  "uid %u's rules would store %llu bytes of images (limit %llu)",
				  (unsigned)owner, bytes, r->cfg.max_image_bytes_per_uid);
			error_detail_int(err, "uid", owner);
			error_detail_int(err, "bytes", (long long)bytes);
			error_detail_int(err, "limit", (long long)r->cfg.max_image_bytes_per_uid);
			goto fail;
		}
		if (!r->dir[0]) {
			im->path[0] = '\0';
			continue;
		}
		if (store_image(r, fd, im->ref, im->path, sizeof(im->path), err) < 0)
			goto fail;
	}
	append(r, rule);
	save_rules(r);
	log_info("auto: rule %s added by uid %u (%u image(s))", rule->id, (unsigned)owner,
		 rule->n_images);
	return rule;
fail:
	rule_free(r, rule);
	return NULL;
}

void rules_remove(struct rules *r, struct rule *rule)
{
	for (struct rule **pp = &r->list; *pp; pp = &(*pp)->next) {
		if (*pp != rule)
			continue;
		*pp = rule->next;
		break;
	}
	/* Stored images no other socket rule uses go too. */
	for (unsigned i = 0; i < rule->n_images && r->dir[0] && !rule->from_file; i++) {
		bool used = false;
		for (struct rule *x = r->list; x && !used; x = x->next)
			for (unsigned k = 0; k < x->n_images && !used; k++)
				used = strcmp(x->images[k].path, rule->images[i].path) == 0;
		if (!used && rule->images[i].path[0])
			unlink(rule->images[i].path);
	}
	log_info("auto: rule %s removed", rule->id);
	rule_free(r, rule);
	save_rules(r);
	save_done(r);
}

void rules_set_paused(struct rules *r, struct rule *rule, bool paused)
{
	rule->paused = paused;
	log_info("auto: rule %s %s", rule->id, paused ? "paused" : "resumed");
	if (!rule->from_file)
		save_rules(r);
}

/* ---- matching ------------------------------------------------------------------------- */

/* The device's Device OS release: what `v` said, else what its system part
 * version corresponds to; NULL when unknown. */
static const char *device_os(const struct device *dev)
{
	const struct device_facts *f = &dev->s.facts;
	if (f->os_version[0])
		return f->os_version;
	if (f->system_version)
		return osver_release_for(MODULE_FUNCTION_SYSTEM, f->system_version);
	return NULL;
}

enum rule_match rule_matches(const struct rule *rule, const struct device *dev)
{
	const struct device_snapshot *s = &dev->s;
	if (rule->platform && s->facts.platform != rule->platform)
		return RULE_NO;
	if (rule->port[0] && strcmp(rule->port, s->port_path) != 0)
		return RULE_NO;
	bool need_facts = false;
	if (rule->mode >= 0 && (int)s->mode != rule->mode) {
		/* A CDC device's mode is not known until a job has talked to it. */
		if (s->mode != DEVICE_MODE_UNKNOWN)
			return RULE_NO;
		need_facts = true;
	}
	if (rule->device_glob[0]) {
		const char *id = s->facts.device_id[0] ? s->facts.device_id : s->usb_serial;
		if (fnmatch(rule->device_glob, id, FNM_CASEFOLD) != 0 &&
		    fnmatch(rule->device_glob, s->key, FNM_CASEFOLD) != 0)
			return RULE_NO;
	}
	/* An image for another platform never matches (the rule says which boards). */
	for (unsigned i = 0; i < rule->n_images; i++) {
		const struct image *img = rule->images[i].ref->img;
		for (unsigned m = 0; s->facts.platform && m < img->n_modules; m++)
			if (image_module_has_platform(&img->modules[m]) &&
			    img->modules[m].platform_id != (uint16_t)s->facts.platform->id)
				return RULE_NO;
	}
	if (rule->os_older_than[0]) {
		const char *os = device_os(dev);
		if (!os)
			return RULE_NEED_FACTS;
		if (osver_compare(os, rule->os_older_than) >= 0)
			return RULE_NO;
	}
	return need_facts ? RULE_NEED_FACTS : RULE_YES;
}

static json_t *argv_json(char *const *argv)
{
	if (!argv[0])
		return json_null();
	json_t *a = json_array();
	for (size_t i = 0; argv[i]; i++)
		json_array_append_new(a, json_string(argv[i]));
	return a;
}

json_t *rule_to_json(const struct rule *rule)
{
	json_t *images = json_array();
	for (unsigned i = 0; i < rule->n_images; i++)
		json_array_append_new(images,
				      json_pack("{s:s, s:s, s:I}", "file", rule->images[i].name,
						"sha256", rule->images[i].ref->sha256_hex, "size",
						(json_int_t)rule->images[i].ref->bytes));
	return json_pack(
	    "{s:s, s:s, s:s?, s:i, s:b, s:f,"
	    " s:{s:s?, s:s?, s:s?, s:s?, s:s?, s:s?},"
	    " s:o, s:{s:b, s:b, s:i, s:i, s:i}, s:{s:o, s:o}, s:I, s:i}",
	    "id", rule->id, "source", rule->from_file ? "file" : "socket", "file",
	    rule->from_file ? rule->file : NULL, "owner", (int)rule->owner, "paused", rule->paused,
	    "created", rule->created, "match", "platform",
	    rule->platform ? rule->platform->name : NULL, "port", rule->port[0] ? rule->port : NULL,
	    "label", rule->label[0] ? rule->label : NULL, "device",
	    rule->device_glob[0] ? rule->device_glob : NULL, "mode",
	    rule->mode >= 0 ? device_mode_name((enum device_mode)rule->mode) : NULL,
	    "os_older_than", rule->os_older_than[0] ? rule->os_older_than : NULL, "images", images,
	    "options", "once", rule->once, "skip_installed", rule->skip_installed, "priority",
	    rule->priority, "max_jobs", (int)rule->max_jobs, "hook_timeout_s",
	    (int)rule->hook_timeout_s, "hooks", "on_success", argv_json(rule->on_success),
	    "on_failure", argv_json(rule->on_failure), "done", (json_int_t)rule->n_done, "running",
	    (int)rule->running);
}
