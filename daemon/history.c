#include "history.h"

#include "cleanup.h"
#include "jobs.h"
#include "log.h"
#include "rfc3339.h"
#include "wire.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Records the worker writes in one transaction at most (a burst of job ends). */
#define HISTORY_BATCH_MAX 64
/* A worker statement waits this long for a lock another process holds (a
 * reader with the sqlite3 shell open during a checkpoint). */
#define HISTORY_BUSY_TIMEOUT_MS 5000
/* SQLite's page cache per connection, in KiB (PRAGMA cache_size = -N).  The
 * default (2000 KiB) fills with every page the worker touches: the database
 * grows by about 2.5 KiB a job, so flashd's RSS grew with it for ~800 jobs (the
 * soak, tests/soak/README.md).  Records append and queries read the newest rows
 * through an index: a few pages each. */
#define HISTORY_CACHE_KIB "256"

/*
 * The schema, as an ordered list of steps: step N brings a database from
 * user_version N-1 to N, in one transaction with the version bump.  Append
 * only: a released step is never edited, a change is a new step.
 */
static const char *const migrations[] = {
    /* 1: one row per job, times as RFC 3339 UTC text (they sort as text) */
    "CREATE TABLE jobs ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " job TEXT NOT NULL UNIQUE,"
    " created TEXT NOT NULL, started TEXT, ended TEXT, duration_s REAL,"
    " device TEXT, device_id TEXT, platform TEXT, port TEXT, transport TEXT,"
    " uid INTEGER,"
    " plan TEXT,"		/* JSON: the job's plan (final once the job ended) */
    " images TEXT,"		/* JSON: [{"file","sha256"}] */
    " before TEXT, after TEXT," /* JSON: installed modules */
    " result TEXT, outcome TEXT,"
    " error TEXT, error_message TEXT, error_detail TEXT," /* catalogue id, JSON detail */
    " trace TEXT,"					  /* JSON: the USB flight recorder */
    " bytes_written INTEGER);"
    "CREATE INDEX jobs_created ON jobs(created);"
    "CREATE INDEX jobs_device ON jobs(device);",
    /* 2: auto-flash rules and port labels (issue 15) */
    "ALTER TABLE jobs ADD COLUMN rule TEXT;"
    "ALTER TABLE jobs ADD COLUMN label TEXT;"
    "CREATE INDEX jobs_result ON jobs(result);"
    "CREATE INDEX jobs_device_id ON jobs(device_id);",
    /* 3: an auto-flash rule's hook: JSON {argv, exit_status, signal, timed_out, output, ...} */
    "ALTER TABLE jobs ADD COLUMN hook TEXT;",
    /* 4: how often the job resumed after its device left and came back (the replug rule) */
    "ALTER TABLE jobs ADD COLUMN resumes INTEGER;",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == HISTORY_SCHEMA_VERSION,
	       "HISTORY_SCHEMA_VERSION is the number of migration steps");

/* Columns that hold JSON text: parsed back into values by queries. */
static const char *const json_columns[] = {"plan",  "images",	    "before", "after",
					   "trace", "error_detail", "hook",   NULL};

static const char sql_started[] =
    "INSERT INTO jobs (job, created, started, device, device_id, platform, port, label,"
    " transport, uid, plan, images, before, rule)"
    " VALUES (:job, :created, :started, :device, :device_id, :platform, :port, :label,"
    " :transport, :uid, :plan, :images, :before, :rule)"
    " ON CONFLICT(job) DO UPDATE SET started = COALESCE(jobs.started, excluded.started),"
    " device = excluded.device, device_id = excluded.device_id, platform = excluded.platform,"
    " port = excluded.port, label = excluded.label, transport = excluded.transport,"
    " plan = excluded.plan, before = COALESCE(jobs.before, excluded.before)";

static const char sql_ended[] =
    "INSERT INTO jobs (job, created, started, ended, duration_s, device, device_id, platform,"
    " port, label, transport, uid, plan, images, before, after, result, outcome, error,"
    " error_message, error_detail, trace, bytes_written, rule, resumes)"
    " VALUES (:job, :created, :started, :ended, :duration_s, :device, :device_id, :platform,"
    " :port, :label, :transport, :uid, :plan, :images, :before, :after, :result, :outcome,"
    " :error, :error_message, :error_detail, :trace, :bytes_written, :rule, :resumes)"
    " ON CONFLICT(job) DO UPDATE SET ended = excluded.ended, duration_s = excluded.duration_s,"
    " started = COALESCE(jobs.started, excluded.started),"
    " device = COALESCE(excluded.device, jobs.device),"
    " device_id = COALESCE(excluded.device_id, jobs.device_id),"
    " platform = COALESCE(excluded.platform, jobs.platform),"
    " port = COALESCE(excluded.port, jobs.port), label = COALESCE(excluded.label, jobs.label),"
    " transport = COALESCE(excluded.transport, jobs.transport),"
    " plan = COALESCE(excluded.plan, jobs.plan)," /* the final plan replaces the preliminary one */
    " before = COALESCE(excluded.before, jobs.before), after = excluded.after,"
    " result = excluded.result, outcome = excluded.outcome, error = excluded.error,"
    " error_message = excluded.error_message, error_detail = excluded.error_detail,"
    " trace = excluded.trace, bytes_written = excluded.bytes_written,"
    " rule = COALESCE(excluded.rule, jobs.rule), resumes = excluded.resumes";

static const char sql_hook[] = "UPDATE jobs SET hook = :hook WHERE job = :job";

#define FILTER_SQL                                                                                 \
	" WHERE (:device IS NULL OR device = :device OR device_id = :device)"                      \
	" AND (:since IS NULL OR created >= :since) AND (:result IS NULL OR result = :result)"

static const char sql_query[] =
    "SELECT job, device, device_id, platform, port, label, rule, result, outcome, error,"
    " error_message, error_detail, trace, created, started, ended, duration_s, bytes_written,"
    " images, before, after, uid, transport, plan, hook, resumes FROM jobs" FILTER_SQL
    " ORDER BY created DESC, seq DESC LIMIT :limit";

/* ---- the queue ----------------------------------------------------------- */

enum op_kind {
	OP_STARTED,
	OP_ENDED,
	OP_HOOK,
	OP_RETAIN,
	OP_QUERY,
};

struct op {
	struct op *next;
	enum op_kind kind;
	json_t *record;		 /* OP_STARTED, OP_ENDED, OP_HOOK */
	struct history_query *q; /* OP_QUERY */
	double now;		 /* OP_RETAIN */
};

struct history_query {
	struct history_query *next;
	struct history_filter f;
	history_result_cb cb;
	void *ctx;
	bool abandoned; /* loop thread only */
	json_t *result; /* worker fills, then the loop */
	struct error err;
};

struct history {
	char path[PATH_MAX];
	struct history_config cfg;
	sqlite3 *db; /* the worker's, after history_open() */
	sqlite3_stmt *st_started, *st_ended, *st_hook;
	struct event_base *base;
	struct event *wake_ev, *retain_timer;
	int efd;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t mu; /* everything below */
	pthread_cond_t cv;  /* work queued, or stopping */
	pthread_cond_t idle;
	struct op *head, *tail;
	unsigned queued;
	bool busy, stopping;
	struct history_query *done; /* answered, for the loop */
	unsigned long long written, write_errors, dropped;
	unsigned long long errors_logged; /* loop side: write_errors already logged */
	char last_error[256];
};

void history_config_defaults(struct history_config *c)
{
	c->max_age_days = 90;
	c->max_jobs = 100000;
	c->retention_interval_s = 3600;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void op_free(struct op *op)
{
	if (!op)
		return;
	json_decref(op->record);
	free(op);
}

static void query_free(struct history_query *q)
{
	if (!q)
		return;
	json_decref(q->result);
	error_clear(&q->err);
	free(q);
}

static void wake_loop(struct history *h)
{
	uint64_t one = 1;
	if (h->efd >= 0 && write(h->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_debug("history: eventfd write: %s", strerror(errno));
}

/* Queues op (taking it); never waits.  Returns false when it was dropped. */
static bool enqueue(struct history *h, struct op *op)
{
	pthread_mutex_lock(&h->mu);
	if (h->queued >= HISTORY_QUEUE_MAX || h->stopping) {
		h->dropped++;
		snprintf(h->last_error, sizeof(h->last_error),
			 "%llu record(s) dropped: the database falls behind (%u queued)",
			 h->dropped, h->queued);
		pthread_mutex_unlock(&h->mu);
		op_free(op);
		wake_loop(h);
		return false;
	}
	if (h->tail)
		h->tail->next = op;
	else
		h->head = op;
	h->tail = op;
	h->queued++;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	return true;
}

/* ---- the worker ------------------------------------------------------------ */

static void note_error(struct history *h, const char *what)
{
	pthread_mutex_lock(&h->mu);
	h->write_errors++;
	snprintf(h->last_error, sizeof(h->last_error), "%s: %s", what, sqlite3_errmsg(h->db));
	pthread_mutex_unlock(&h->mu);
}

/* Binds every :name parameter of st to record[name] (strings, numbers, JSON text, NULL). */
static int bind_record(sqlite3_stmt *st, const json_t *record)
{
	int n = sqlite3_bind_parameter_count(st), rc = SQLITE_OK;
	for (int i = 1; i <= n && rc == SQLITE_OK; i++) {
		const char *name = sqlite3_bind_parameter_name(st, i);
		const json_t *v = name ? json_object_get(record, name + 1) : NULL;
		if (!v || json_is_null(v)) {
			rc = sqlite3_bind_null(st, i);
		} else if (json_is_string(v)) {
			rc = sqlite3_bind_text(st, i, json_string_value(v),
					       (int)json_string_length(v), SQLITE_TRANSIENT);
		} else if (json_is_integer(v)) {
			rc = sqlite3_bind_int64(st, i, json_integer_value(v));
		} else if (json_is_real(v)) {
			rc = sqlite3_bind_double(st, i, json_real_value(v));
		} else if (json_is_boolean(v)) {
			rc = sqlite3_bind_int(st, i, json_is_true(v));
		} else {
			char *text = json_dumps(v, JSON_COMPACT);
			rc = text ? sqlite3_bind_text(st, i, text, -1, free) : SQLITE_NOMEM;
		}
	}
	return rc;
}

static int run_record(struct history *h, sqlite3_stmt *st, const json_t *record)
{
	int rc = bind_record(st, record);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE) {
		const char *job = json_string_value(json_object_get(record, "job"));
		char what[128];
		snprintf(what, sizeof(what), "recording job %s", job ? job : "?");
		note_error(h, what);
		return -1;
	}
	return 0;
}

/* Runs sql; a failure adds `lost` to the write errors and becomes the last error. */
static int exec_sql(struct history *h, const char *sql, const char *what, unsigned long long lost)
{
	char *msg = NULL;
	if (sqlite3_exec(h->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		pthread_mutex_lock(&h->mu);
		h->write_errors += lost;
		snprintf(h->last_error, sizeof(h->last_error), "%s: %s", what,
			 msg ? msg : sqlite3_errmsg(h->db));
		pthread_mutex_unlock(&h->mu);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* Binds the filter's :device, :since, :result (NULL = any) and :limit. */
static void bind_filter(sqlite3_stmt *st, const struct history_filter *f)
{
	int i;
	if ((i = sqlite3_bind_parameter_index(st, ":device")) > 0 && f->device[0])
		sqlite3_bind_text(st, i, f->device, -1, SQLITE_STATIC);
	if ((i = sqlite3_bind_parameter_index(st, ":since")) > 0 && f->since[0])
		sqlite3_bind_text(st, i, f->since, -1, SQLITE_STATIC);
	if ((i = sqlite3_bind_parameter_index(st, ":result")) > 0 && f->result[0])
		sqlite3_bind_text(st, i, f->result, -1, SQLITE_STATIC);
	if ((i = sqlite3_bind_parameter_index(st, ":limit")) > 0)
		sqlite3_bind_int(st, i, (int)(f->limit ? f->limit : HISTORY_LIMIT_DEFAULT));
}

static bool is_json_column(const char *name)
{
	for (size_t i = 0; json_columns[i]; i++)
		if (strcmp(json_columns[i], name) == 0)
			return true;
	return false;
}

static json_t *column_json(sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		return json_integer(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT:
		return json_real(sqlite3_column_double(st, i));
	case SQLITE_TEXT: {
		const char *text = (const char *)sqlite3_column_text(st, i);
		if (is_json_column(sqlite3_column_name(st, i))) {
			json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
			return v ? v : json_string(text);
		}
		return json_string(text);
	}
	default:
		return json_null();
	}
}

static int query_rows(struct history *h, struct history_query *q)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(h->db, sql_query, -1, &st, NULL) != SQLITE_OK)
		return -1;
	bind_filter(st, &q->f);
	json_t *rows = json_array();
	size_t bytes = 0;
	bool truncated = false;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) { /* newest first */
		json_t *row = json_object();
		for (int i = 0; i < sqlite3_column_count(st); i++)
			json_object_set_new(row, sqlite3_column_name(st, i), column_json(st, i));
		char *text = json_dumps(row, JSON_COMPACT);
		bytes += text ? strlen(text) + 1 : 0;
		free(text);
		if (bytes > HISTORY_REPLY_BYTES_MAX && json_array_size(rows) > 0) {
			json_decref(row);
			truncated = true;
			rc = SQLITE_DONE;
			break;
		}
		json_array_insert_new(rows, 0, row); /* newest last */
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		json_decref(rows);
		return -1;
	}
	q->result = json_pack("{s:o, s:b}", "jobs", rows, "truncated", truncated);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The group's object in stats (a platform, a rule), created on first use. */
static json_t *group_stats(json_t *groups, const char *key, const char *name)
{
	json_t *p = json_object_get(groups, name);
	if (!p) {
		p = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:n}", key, name, "jobs", 0,
			      "done", 0, "failed", 0, "cancelled", 0, "interrupted", 0, "running",
			      0, "errors", json_object(), "median_duration_s");
		json_object_set_new(groups, name, p);
	}
	return p;
}

static void add_int(json_t *obj, const char *key, json_int_t n)
{
	json_object_set_new(obj, key,
			    json_integer(json_integer_value(json_object_get(obj, key)) + n));
}

/* Counts by result and error per group. */
static int stats_counts(struct history *h, const struct history_filter *f, const char *column,
			json_t *groups)
{
	char sql[1024];
	sqlite3_stmt *st;
	int rc;
	snprintf(sql, sizeof(sql),
		 "SELECT COALESCE(%s, 'unknown'), result, error, COUNT(*) FROM jobs" FILTER_SQL
		 " AND (%d OR %s IS NOT NULL) GROUP BY 1, 2, 3 ORDER BY 1",
		 column, strcmp(column, "platform") == 0, column);
	if (sqlite3_prepare_v2(h->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	bind_filter(st, f);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *p = group_stats(groups, column, (const char *)sqlite3_column_text(st, 0));
		const char *result = (const char *)sqlite3_column_text(st, 1);
		const char *error = (const char *)sqlite3_column_text(st, 2);
		json_int_t n = sqlite3_column_int64(st, 3);
		add_int(p, "jobs", n);
		add_int(p, result ? result : "running", n);
		if (error && result && strcmp(result, "failed") == 0)
			add_int(json_object_get(p, "errors"), error, n);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The median duration of the ended jobs per group. */
static int stats_durations(struct history *h, const struct history_filter *f, const char *column,
			   json_t *groups)
{
	char sql[1024], current[256] = "";
	sqlite3_stmt *st;
	double *d = NULL;
	size_t n = 0, cap = 0;
	int rc;
	snprintf(sql, sizeof(sql),
		 "SELECT COALESCE(%s, 'unknown'), duration_s FROM jobs" FILTER_SQL
		 " AND (%d OR %s IS NOT NULL) AND duration_s IS NOT NULL ORDER BY 1, 2",
		 column, strcmp(column, "platform") == 0, column);
	if (sqlite3_prepare_v2(h->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	bind_filter(st, f);
	for (;;) {
		rc = sqlite3_step(st);
		const char *name = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "";
		if (n && (rc != SQLITE_ROW || strcmp(name, current) != 0)) {
			json_object_set_new(group_stats(groups, column, current),
					    "median_duration_s", json_real(median(d, n)));
			n = 0;
		}
		if (rc != SQLITE_ROW)
			break;
		snprintf(current, sizeof(current), "%s", name);
		if (n == cap) {
			double *nd = realloc(d, (cap = cap ? cap * 2 : 256) * sizeof(*d));
			if (!nd) {
				rc = SQLITE_NOMEM;
				break;
			}
			d = nd;
		}
		d[n++] = sqlite3_column_double(st, 1);
	}
	free(d);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The groups as a list, with the failure rate and the errors by id (most frequent first). */
static json_t *stats_list(json_t *groups)
{
	json_t *list = json_array(), *p;
	const char *name;
	json_object_foreach(groups, name, p)
	{
		json_int_t ended = 0;
		static const char *const results[] = {"done", "failed", "cancelled", "interrupted"};
		for (size_t i = 0; i < 4; i++)
			ended += json_integer_value(json_object_get(p, results[i]));
		json_int_t failed = json_integer_value(json_object_get(p, "failed"));
		json_object_set_new(p, "failure_rate",
				    ended ? json_real((double)failed / (double)ended)
					  : json_null());
		json_t *errors = json_array(), *count;
		const char *id;
		json_object_foreach(json_object_get(p, "errors"), id, count)
		{
			json_int_t c = json_integer_value(count);
			size_t at = 0;
			while (at < json_array_size(errors) &&
			       json_integer_value(
				   json_object_get(json_array_get(errors, at), "count")) >= c)
				at++;
			json_array_insert_new(errors, at,
					      json_pack("{s:s, s:I, s:f}", "error", id, "count", c,
							"rate", (double)c / (double)ended));
		}
		json_object_set_new(p, "errors", errors);
		json_array_append(list, p);
	}
	return list;
}

/*
 * Per platform, and per auto-flash rule (jobs a rule made): jobs, counts by
 * result, failure rate (failed / ended), the errors by id with their share of
 * the ended jobs, and the median duration.
 */
static int query_stats(struct history *h, struct history_query *q)
{
	static const char *const columns[] = {"platform", "rule"};
	static const char *const keys[] = {"platforms", "rules"};
	json_t *stats = json_object();
	for (size_t i = 0; i < 2; i++) {
		json_t *groups = json_object();
		if (stats_counts(h, &q->f, columns[i], groups) < 0 ||
		    stats_durations(h, &q->f, columns[i], groups) < 0) {
			json_decref(groups);
			json_decref(stats);
			return -1;
		}
		json_object_set_new(stats, keys[i], stats_list(groups));
		json_decref(groups);
	}
	q->result = json_pack("{s:o}", "stats", stats);
	return 0;
}

static void run_query(struct history *h, struct history_query *q)
{
	int rc = q->f.stats ? query_stats(h, q) : query_rows(h, q);
	if (rc < 0) {
		error_set(&q->err, ERR_HISTORY_UNAVAILABLE, "reading the flash history failed: %s",
			  sqlite3_errmsg(h->db));
		error_detail_str(&q->err, "reason", "query failed");
		error_detail_str(&q->err, "path", h->path);
		error_detail_str(&q->err, "sqlite_error", sqlite3_errmsg(h->db));
	}
}

/* Deletes rows beyond the age and count limits (ended jobs only). */
static void run_retention(struct history *h, double now)
{
	char sql[512], cutoff[RFC3339_MAX];
	if (h->cfg.max_age_days) {
		rfc3339_format(now - (double)h->cfg.max_age_days * 86400.0, cutoff);
		snprintf(sql, sizeof(sql),
			 "DELETE FROM jobs WHERE result IS NOT NULL AND created < '%s'", cutoff);
		exec_sql(h, sql, "retention by age", 1);
	}
	if (h->cfg.max_jobs) {
		snprintf(
		    sql, sizeof(sql),
		    "DELETE FROM jobs WHERE result IS NOT NULL AND seq <= (SELECT seq FROM jobs"
		    " ORDER BY seq DESC LIMIT 1 OFFSET %u)",
		    h->cfg.max_jobs);
		exec_sql(h, sql, "retention by count", 1);
	}
}

static bool is_record(enum op_kind k)
{
	return k == OP_STARTED || k == OP_ENDED || k == OP_HOOK;
}

static void *worker_main(void *arg)
{
	struct history *h = arg;
	for (;;) {
		pthread_mutex_lock(&h->mu);
		while (!h->head && !h->stopping)
			pthread_cond_wait(&h->cv, &h->mu);
		if (!h->head) {
			pthread_mutex_unlock(&h->mu);
			break;
		}
		/* Take a batch: consecutive record writes share one transaction. */
		struct op *batch = h->head, *last = batch;
		unsigned n = 1;
		bool records = is_record(batch->kind);
		while (records && last->next && n < HISTORY_BATCH_MAX &&
		       is_record(last->next->kind)) {
			last = last->next;
			n++;
		}
		h->head = last->next;
		if (!h->head)
			h->tail = NULL;
		last->next = NULL;
		h->queued -= n;
		h->busy = true;
		unsigned long long errors0 = h->write_errors;
		pthread_mutex_unlock(&h->mu);

		unsigned long long ok = 0;
		struct history_query *answered = NULL;
		if (records) {
			/* write_errors counts the records that could not be written. */
			if (exec_sql(h, "BEGIN IMMEDIATE", "writing the history", n) == 0) {
				for (struct op *op = batch; op; op = op->next)
					ok += run_record(h,
							 op->kind == OP_STARTED ? h->st_started
							 : op->kind == OP_ENDED ? h->st_ended
										: h->st_hook,
							 op->record) == 0;
				if (exec_sql(h, "COMMIT", "writing the history", ok) < 0) {
					ok = 0;
					exec_sql(h, "ROLLBACK", "rollback", 0);
				}
			}
		} else if (batch->kind == OP_RETAIN) {
			run_retention(h, batch->now);
		} else if (batch->kind == OP_QUERY) {
			run_query(h, batch->q);
			answered = batch->q;
			batch->q = NULL;
		}
		while (batch) {
			struct op *next = batch->next;
			op_free(batch);
			batch = next;
		}
		/* Idle again: the cache's clean pages go back to the heap (the file
		 * and the OS cache hold them), so the worker's memory is what one
		 * batch needs, not what every batch so far touched. */
		sqlite3_db_release_memory(h->db);

		pthread_mutex_lock(&h->mu);
		h->written += ok;
		if (answered) {
			answered->next = h->done;
			h->done = answered;
		}
		h->busy = false;
		if (!h->head)
			pthread_cond_broadcast(&h->idle);
		bool tell = answered || h->write_errors != errors0;
		pthread_mutex_unlock(&h->mu);
		if (tell)
			wake_loop(h);
	}
	return NULL;
}

/* ---- the loop side ------------------------------------------------------------ */

/* Logs new errors and hands answered queries to their callbacks. */
static void deliver(struct history *h)
{
	pthread_mutex_lock(&h->mu);
	struct history_query *done = h->done;
	h->done = NULL;
	unsigned long long errors = h->write_errors + h->dropped;
	bool log_it = errors != h->errors_logged;
	char last[sizeof(h->last_error)];
	memcpy(last, h->last_error, sizeof(last));
	h->errors_logged = errors;
	pthread_mutex_unlock(&h->mu);
	if (log_it)
		log_warning("history: %s (%llu error(s) so far; flashing goes on)", last, errors);
	/* The list is newest first: answer in request order. */
	struct history_query *ordered = NULL;
	while (done) {
		struct history_query *next = done->next;
		done->next = ordered;
		ordered = done;
		done = next;
	}
	while (ordered) {
		struct history_query *q = ordered;
		ordered = q->next;
		if (!q->abandoned) {
			json_t *result = q->result;
			q->result = NULL;
			q->cb(q->ctx, result, error_is_set(&q->err) ? &q->err : NULL);
		}
		query_free(q);
	}
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	uint64_t n;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_debug("history: eventfd read: %s", strerror(errno));
	deliver(arg);
}

static void on_retain_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	history_retain_now(arg);
}

void history_retain_now(struct history *h)
{
	struct op *op = h ? calloc(1, sizeof(*op)) : NULL;
	if (!op)
		return;
	op->kind = OP_RETAIN;
	op->now = now_s();
	enqueue(h, op);
}

void history_flush(struct history *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	while (h->head || h->busy)
		pthread_cond_wait(&h->idle, &h->mu);
	pthread_mutex_unlock(&h->mu);
	deliver(h);
}

/* ---- records -------------------------------------------------------------------- */

/* {"os":"1.5.2","modules":[{"function","index","version"},...]} or null if nothing is known. */
static json_t *facts_json(const struct device_facts *f)
{
	if (!f || (!f->modules_known && !f->n_modules && !f->os_version[0]))
		return json_null();
	json_t *mods = json_array();
	for (unsigned i = 0; i < f->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
		const struct installed_module *m = &f->modules[i];
		json_t *o = json_pack("{s:s, s:i, s:i}", "function",
				      module_function_name((enum module_function)m->function),
				      "index", m->index, "version", m->version);
		if (m->sha256[0])
			json_object_set_new(o, "sha256", json_string(m->sha256));
		json_array_append_new(mods, o);
	}
	return json_pack("{s:s?, s:b, s:o}", "os", f->os_version[0] ? f->os_version : NULL,
			 "modules_known", f->modules_known, "modules", mods);
}

static json_t *time_json(const json_t *seconds)
{
	char buf[RFC3339_MAX];
	if (!json_is_number(seconds))
		return json_null();
	return json_string(rfc3339_format(json_number_value(seconds), buf));
}

json_t *history_record_from_job(const struct job *job, bool ended)
{
	json_t *rec = job_to_json(job); /* the job-started / job-ended record */
	json_t *out = json_object();
	const struct device_snapshot *dev = job_device(job);
	json_t *images = json_array(), *img;
	size_t i;
	json_array_foreach(json_object_get(rec, "images"), i, img) json_array_append_new(
	    images, json_pack("{s:O?, s:O?}", "file", json_object_get(img, "name"), "sha256",
			      json_object_get(img, "sha256")));
	json_object_set(out, "job", json_object_get(rec, "id"));
	json_object_set_new(out, "created", time_json(json_object_get(rec, "created")));
	json_object_set_new(out, "started", time_json(json_object_get(rec, "started")));
	json_object_set(out, "device", json_object_get(rec, "device"));
	json_object_set_new(out, "device_id",
			    dev->facts.device_id[0] ? json_string(dev->facts.device_id)
						    : json_null());
	json_object_set_new(out, "platform",
			    dev->facts.platform ? json_string(dev->facts.platform->name)
						: json_null());
	json_object_set_new(out, "port",
			    dev->port_path[0] ? json_string(dev->port_path) : json_null());
	/* An auto-flash job's rule and its port's label, once the job record carries them. */
	json_t *rule = json_object_get(rec, "rule"), *label = json_object_get(rec, "label");
	json_object_set_new(out, "label", label ? json_incref(label) : json_null());
	json_object_set_new(out, "rule", rule ? json_incref(rule) : json_null());
	json_object_set(out, "transport", json_object_get(rec, "transport"));
	json_object_set(out, "uid", json_object_get(json_object_get(rec, "owner"), "uid"));
	/* The plan: what the job-started record carries (a planner's "plan" when it
	 * has one; else the target, options and images with their modules). */
	json_t *plan = json_object_get(rec, "plan");
	json_object_set_new(out, "plan",
			    plan ? json_incref(plan)
				 : json_pack("{s:O?, s:O?, s:O?}", "target",
					     json_object_get(rec, "target"), "options",
					     json_object_get(rec, "options"), "images",
					     json_object_get(rec, "images")));
	json_object_set_new(out, "images", images);
	json_object_set_new(out, "before", facts_json(job_facts_before(job)));
	if (ended) {
		json_t *started = json_object_get(rec, "started");
		json_t *end = json_object_get(rec, "ended");
		double t0 = json_is_number(started)
				? json_number_value(started)
				: json_number_value(json_object_get(rec, "created"));
		json_object_set_new(out, "ended", time_json(end));
		json_object_set_new(out, "duration_s",
				    json_is_number(end) ? json_real(json_number_value(end) - t0)
							: json_null());
		json_object_set_new(out, "after", facts_json(job_facts_after(job)));
		json_object_set(out, "result", json_object_get(rec, "result"));
		json_object_set(out, "outcome", json_object_get(rec, "outcome"));
		json_object_set_new(out, "bytes_written",
				    json_integer((json_int_t)job_bytes_written(job)));
		json_object_set_new(out, "resumes", json_integer((json_int_t)job_resumes(job)));
		const json_t *err = json_object_get(rec, "error");
		if (json_is_object(err)) {
			json_t *detail = json_deep_copy(json_object_get(err, "detail"));
			json_object_set(out, "error", json_object_get(err, "code"));
			json_object_set(out, "error_message", json_object_get(err, "message"));
			/* The flight recorder (USB trace) gets a column of its own. */
			json_t *trace = json_object_get(detail, "usb_trace");
			json_object_set(out, "trace", trace ? trace : json_null());
			if (trace)
				json_object_del(detail, "usb_trace");
			json_object_set_new(out, "error_detail", detail ? detail : json_null());
		}
	}
	json_decref(rec);
	return out;
}

/*
 * What a `history` query returns for a job once it ended, without the
 * database: the ended record completed from the started one exactly as
 * sql_ended's ON CONFLICT clause does (keep the two in step), with every
 * column of sql_query (null when unknown).  The MQTT publisher sends it.
 */
json_t *history_row_from_records(const json_t *started, json_t *ended)
{
	/* The started row's value stays (not in the UPDATE, or COALESCE(jobs.x, ...)). */
	static const char *const started_wins[] = {"created", "uid", "images", "started", NULL};
	/* COALESCE(excluded.x, jobs.x): the ended record's unless it is null. */
	static const char *const ended_unless_null[] = {"device", "device_id", "platform", "port",
							"label",  "transport", "rule",	   "before",
							"plan",	  NULL};
	static const char *const columns[] = {
	    "job",    "device",	 "device_id", "platform", "port",	   "label",
	    "rule",   "result",	 "outcome",   "error",	  "error_message", "error_detail",
	    "trace",  "created", "started",   "ended",	  "duration_s",	   "bytes_written",
	    "images", "before",	 "after",     "uid",	  "transport",	   "plan",
	    "hook",   "resumes", NULL};
	for (size_t i = 0; started && started_wins[i]; i++) {
		json_t *v = json_object_get(started, started_wins[i]);
		if (v && !json_is_null(v))
			json_object_set(ended, started_wins[i], v);
	}
	for (size_t i = 0; started && ended_unless_null[i]; i++) {
		json_t *v = json_object_get(ended, ended_unless_null[i]);
		json_t *was = json_object_get(started, ended_unless_null[i]);
		if ((!v || json_is_null(v)) && was)
			json_object_set(ended, ended_unless_null[i], was);
	}
	for (size_t i = 0; columns[i]; i++)
		if (!json_object_get(ended, columns[i]))
			json_object_set_new(ended, columns[i], json_null());
	return ended;
}

void history_put(struct history *h, json_t *record, bool ended)
{
	struct op *op = h && record ? calloc(1, sizeof(*op)) : NULL;
	if (!op) {
		json_decref(record);
		return;
	}
	op->kind = ended ? OP_ENDED : OP_STARTED;
	op->record = record;
	enqueue(h, op);
}

void history_job_hook(struct history *h, const char *job, json_t *hook)
{
	struct op *op = h && job ? calloc(1, sizeof(*op)) : NULL;
	if (!op) {
		json_decref(hook);
		return;
	}
	op->kind = OP_HOOK;
	op->record = json_pack("{s:s, s:o}", "job", job, "hook", hook ? hook : json_null());
	enqueue(h, op);
}

void history_job_started(struct history *h, const struct job *job)
{
	if (h)
		history_put(h, history_record_from_job(job, false), false);
}

void history_job_ended(struct history *h, const struct job *job)
{
	if (h)
		history_put(h, history_record_from_job(job, true), true);
}

/* ---- queries ------------------------------------------------------------------------ */

static int bad_field(struct error *err, const char *field, const char *reason)
{
	error_set(err, ERR_BAD_REQUEST, "bad request: %s", reason);
	error_detail_str(err, "reason", reason);
	error_detail_str(err, "request", "history");
	error_detail_str(err, "field", field);
	return -1;
}

int history_filter_parse(const json_t *req, struct history_filter *f, struct error *err)
{
	const char *device, *since, *result;
	memset(f, 0, sizeof(*f));
	if (wire_get_string(req, "device", sizeof(f->device) - 1, &device, err) < 0 ||
	    wire_get_string(req, "since", 64, &since, err) < 0 ||
	    wire_get_string(req, "result", sizeof(f->result) - 1, &result, err) < 0 ||
	    wire_get_bool(req, "stats", false, &f->stats, err) < 0)
		return -1;
	if (device)
		snprintf(f->device, sizeof(f->device), "%s", device);
	if (since) {
		double t;
		if (rfc3339_parse(since, &t) < 0)
			return bad_field(
			    err, "since",
			    "\"since\" must be an RFC 3339 time (2026-12-01T10:00:00Z)");
		rfc3339_format(t, f->since);
	}
	if (result) {
		static const char *const results[] = {"done", "failed", "cancelled", "interrupted"};
		bool known = false;
		for (size_t i = 0; i < 4; i++)
			known = known || strcmp(result, results[i]) == 0;
		if (!known)
			return bad_field(
			    err, "result",
			    "\"result\" must be done, failed, cancelled or interrupted");
		snprintf(f->result, sizeof(f->result), "%s", result);
	}
	const json_t *limit = json_object_get(req, "limit");
	if (limit) {
		if (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
		    json_integer_value(limit) > HISTORY_LIMIT_MAX) {
			bad_field(err, "limit", "\"limit\" must be an integer from 1 to 10000");
			error_detail_int(err, "limit", HISTORY_LIMIT_MAX);
			return -1;
		}
		f->limit = (unsigned)json_integer_value(limit);
	}
	return 0;
}

struct history_query *history_query(struct history *h, const struct history_filter *f,
				    history_result_cb cb, void *ctx, struct error *err)
{
	_cleanup_free_ struct history_query *q = calloc(1, sizeof(*q));
	_cleanup_free_ struct op *op = calloc(1, sizeof(*op));
	if (!q || !op) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	q->f = *f;
	q->cb = cb;
	q->ctx = ctx;
	error_init(&q->err);
	op->kind = OP_QUERY;
	op->q = q;
	pthread_mutex_lock(&h->mu);
	bool full = h->queued >= HISTORY_QUEUE_MAX;
	pthread_mutex_unlock(&h->mu);
	if (full) {
		error_set(err, ERR_HISTORY_UNAVAILABLE,
			  "the flash history is busy: %u records wait to be written",
			  HISTORY_QUEUE_MAX);
		error_detail_str(err, "reason", "queue full");
		error_detail_str(err, "path", h->path);
		return NULL;
	}
	enqueue(h, TAKE_PTR(op));
	return TAKE_PTR(q);
}

void history_query_abandon(struct history *h, struct history_query *q)
{
	(void)h;
	if (q)
		q->abandoned = true;
}

json_t *history_status_json(struct history *h)
{
	if (!h)
		return json_pack("{s:b}", "enabled", false);
	pthread_mutex_lock(&h->mu);
	json_t *o = json_pack("{s:b, s:s, s:i, s:i, s:I, s:I, s:I, s:s?}", "enabled", true, "path",
			      h->path, "schema_version", HISTORY_SCHEMA_VERSION, "queued",
			      (int)h->queued, "written", (json_int_t)h->written, "write_errors",
			      (json_int_t)h->write_errors, "dropped", (json_int_t)h->dropped,
			      "last_error", h->last_error[0] ? h->last_error : NULL);
	pthread_mutex_unlock(&h->mu);
	return o;
}

/* ---- opening ------------------------------------------------------------------------- */

static int db_fail(struct error *err, sqlite3 *db, const char *path, const char *what)
{
	const char *msg = db ? sqlite3_errmsg(db) : "out of memory";
	error_set(err, ERR_HISTORY_UNAVAILABLE, "%s %s: %s", what, path, msg);
	error_detail_str(err, "reason", what);
	error_detail_str(err, "path", path);
	error_detail_str(err, "sqlite_error", msg);
	return -1;
}

static int user_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Brings db from its version to target, one transaction per step. */
static int migrate(sqlite3 *db, const char *path, int target, struct error *err)
{
	int v = user_version(db);
	if (v < 0)
		return db_fail(err, db, path, "cannot read the schema version of");
	if (v > HISTORY_SCHEMA_VERSION) {
		error_set(err, ERR_HISTORY_UNAVAILABLE,
			  "%s has schema version %d; this flashd knows up to %d", path, v,
			  HISTORY_SCHEMA_VERSION);
		error_detail_str(err, "reason", "database from a newer flashd");
		error_detail_str(err, "path", path);
		return -1;
	}
	int from = v;
	for (; v < target; v++) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			char what[64];
			snprintf(what, sizeof(what), "schema migration %d -> %d failed for", v,
				 v + 1);
			db_fail(err, db, path, what);
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
	}
	if (from > 0 && from < target)
		log_info("history: %s migrated from schema version %d to %d", path, from, target);
	return 0;
}

static sqlite3 *open_db(const char *path, struct error *err)
{
	sqlite3 *db = NULL;
	char *mode = NULL;
	sqlite3_stmt *st = NULL;
	/* The history names devices and users: readable by the daemon's group
	 * (the socket's), not by everyone.  SQLite gives its -wal and -shm files
	 * the database's mode. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd >= 0)
		close(fd);
	if (sqlite3_open_v2(path, &db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		db_fail(err, db, path, "cannot open");
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, HISTORY_BUSY_TIMEOUT_MS);
	/* WAL: readers (queries, the sqlite3 shell) never block the writer, and a
	 * killed daemon leaves a database that the next open recovers.  NORMAL
	 * syncs at checkpoints only: a power cut may lose the last records, never
	 * the database. */
	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW ||
	    strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0 ||
	    sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, &mode) != SQLITE_OK) {
		db_fail(err, db, path, "cannot switch to WAL mode");
		sqlite3_free(mode);
		sqlite3_finalize(st);
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_finalize(st);
	sqlite3_exec(db, "PRAGMA cache_size = -" HISTORY_CACHE_KIB, NULL, NULL, NULL);
	return db;
}

int history_create_at_version(const char *path, int version, struct error *err)
{
	sqlite3 *db = open_db(path, err);
	if (!db)
		return -1;
	int rc = version >= 0 && version <= HISTORY_SCHEMA_VERSION
		     ? migrate(db, path, version, err)
		     : error_set(err, ERR_INTERNAL, "no schema version %d", version);
	sqlite3_close(db);
	return rc;
}

/* Rows of jobs that never ended: the daemon was killed or crashed. */
static int mark_interrupted(sqlite3 *db, const char *path, struct error *err)
{
	char now[RFC3339_MAX], sql[768];
	rfc3339_format(now_s(), now);
	snprintf(sql, sizeof(sql),
		 "UPDATE jobs SET result = 'interrupted', error = 'interrupted', ended = '%s',"
		 " error_message = 'the daemon stopped without ending the job (found at restart)',"
		 " error_detail = '{\"phase\":\"unknown\",\"reason\":\"daemon killed or crashed\"}'"
		 " WHERE result IS NULL",
		 now);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(err, db, path, "cannot mark unfinished jobs interrupted in");
	int n = sqlite3_changes(db);
	if (n > 0)
		log_warning("history: %d job(s) never ended (the daemon was killed): recorded "
			    "as interrupted",
			    n);
	return 0;
}

struct history *history_open(struct event_base *base, const char *state_dir,
			     const struct history_config *cfg, struct error *err)
{
	struct history *h = calloc(1, sizeof(*h));
	if (!h) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	h->efd = -1;
	h->cfg = *cfg;
	h->base = base;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	pthread_cond_init(&h->idle, NULL);
	if ((size_t)snprintf(h->path, sizeof(h->path), "%s/%s", state_dir, HISTORY_FILE_NAME) >=
	    sizeof(h->path)) {
		error_set(err, ERR_HISTORY_UNAVAILABLE, "state directory path too long");
		error_detail_str(err, "reason", "path too long");
		goto fail;
	}
	if (!(h->db = open_db(h->path, err)) ||
	    migrate(h->db, h->path, HISTORY_SCHEMA_VERSION, err) < 0 ||
	    mark_interrupted(h->db, h->path, err) < 0)
		goto fail;
	if (sqlite3_prepare_v3(h->db, sql_started, -1, SQLITE_PREPARE_PERSISTENT, &h->st_started,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(h->db, sql_ended, -1, SQLITE_PREPARE_PERSISTENT, &h->st_ended,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(h->db, sql_hook, -1, SQLITE_PREPARE_PERSISTENT, &h->st_hook, NULL) !=
		SQLITE_OK) {
		db_fail(err, h->db, h->path, "cannot prepare statements for");
		goto fail;
	}
	if (base) {
		h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (h->efd < 0 ||
		    !(h->wake_ev = event_new(base, h->efd, EV_READ | EV_PERSIST, on_wake, h)) ||
		    !(h->retain_timer = event_new(base, -1, EV_PERSIST, on_retain_timer, h))) {
			error_set(err, ERR_INTERNAL, "cannot set up the history's events: %s",
				  strerror(errno));
			goto fail;
		}
		event_add(h->wake_ev, NULL);
		if (cfg->retention_interval_s) {
			struct timeval tv = {(time_t)cfg->retention_interval_s, 0};
			event_add(h->retain_timer, &tv);
		}
	}
	if (pthread_create(&h->thread, NULL, worker_main, h) != 0) {
		error_set(err, ERR_INTERNAL, "cannot start the history thread");
		goto fail;
	}
	h->thread_started = true;
	history_retain_now(h); /* once at start, off the loop like every pass */
	return h;
fail:
	history_free(h);
	return NULL;
}

void history_free(struct history *h)
{
	if (!h)
		return;
	if (h->thread_started) {
		pthread_mutex_lock(&h->mu);
		h->stopping = true;
		pthread_cond_signal(&h->cv);
		pthread_mutex_unlock(&h->mu);
		pthread_join(h->thread, NULL);
	}
	/* Whatever was answered: the requesters are gone (the server abandons its
	 * queries before this), so only free. */
	while (h->done) {
		struct history_query *q = h->done;
		h->done = q->next;
		query_free(q);
	}
	while (h->head) {
		struct op *op = h->head;
		h->head = op->next;
		query_free(op->q);
		op_free(op);
	}
	if (h->wake_ev)
		event_free(h->wake_ev);
	if (h->retain_timer)
		event_free(h->retain_timer);
	if (h->efd >= 0)
		close(h->efd);
	sqlite3_finalize(h->st_started);
	sqlite3_finalize(h->st_ended);
	sqlite3_finalize(h->st_hook);
	sqlite3_close(h->db);
	pthread_cond_destroy(&h->cv);
	pthread_cond_destroy(&h->idle);
	pthread_mutex_destroy(&h->mu);
	free(h);
}
