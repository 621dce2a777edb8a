/*
 * The flash history (daemon/history.c) on real SQLite files: migrations from
 * an old schema, a database from a newer flashd left alone, unfinished jobs
 * marked interrupted on reopen, retention by count and by age, queries and
 * statistics, a locked database counted and shown without losing later
 * records, and a writer killed with SIGKILL mid-write leaving a database that
 * passes PRAGMA integrity_check.
 */
#include "history.h"
#include "rfc3339.h"
#include "settings.h"

#include <setjmp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[256], db_path[300];

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/history-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(db_path, sizeof(db_path), "%s/%s", dir, HISTORY_FILE_NAME);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static struct history_config config(unsigned max_jobs, unsigned max_age_days)
{
	struct history_config c;
	history_config_defaults(&c);
	c.max_jobs = max_jobs;
	c.max_age_days = max_age_days;
	return c;
}

static struct history *open_ok(const struct history_config *c)
{
	struct error err;
	error_init(&err);
	struct history *h = history_open(NULL, dir, c, &err);
	if (!h)
		fail_msg("history_open: %s", err.message);
	return h;
}

static json_t *record(const char *id, double created, const char *result, const char *error)
{
	char t[RFC3339_MAX], e[RFC3339_MAX];
	json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:s}], s:i}", "job", id,
			      "created", rfc3339_format(created, t), "started", t, "device",
			      "3a001d000a47353138383101", "platform", "photon", "port", "1-1",
			      "images", "file", "app.bin", "sha256", "00ff", "uid", 1000);
	if (result) {
		json_object_set_new(r, "ended", json_string(rfc3339_format(created + 2, e)));
		json_object_set_new(r, "duration_s", json_real(2.0));
		json_object_set_new(r, "result", json_string(result));
		json_object_set_new(r, "bytes_written", json_integer(3952));
		if (error) {
			json_object_set_new(r, "error", json_string(error));
			json_object_set_new(r, "error_detail",
					    json_pack("{s:s}", "phase", "writing"));
		}
	}
	return r;
}

/* ---- synchronous queries (the callback runs inside history_flush()) ---- */

struct answer {
	json_t *result;
	bool error;
	bool called;
};

static void on_answer(void *ctx, json_t *result, const struct error *err)
{
	struct answer *a = ctx;
	a->called = true;
	a->result = result;
	a->error = err != NULL;
}

static json_t *query(struct history *h, const char *device, const char *result, unsigned limit,
		     bool stats)
{
	struct history_filter f;
	struct answer a = {0};
	struct error err;
	error_init(&err);
	memset(&f, 0, sizeof(f));
	if (device)
		snprintf(f.device, sizeof(f.device), "%s", device);
	if (result)
		snprintf(f.result, sizeof(f.result), "%s", result);
	f.limit = limit;
	f.stats = stats;
	assert_non_null(history_query(h, &f, on_answer, &a, &err));
	history_flush(h);
	assert_true(a.called);
	assert_false(a.error);
	return a.result;
}

static json_t *rows(struct history *h)
{
	json_t *r = query(h, NULL, NULL, HISTORY_LIMIT_MAX, false);
	json_t *jobs = json_incref(json_object_get(r, "jobs"));
	json_decref(r);
	return jobs;
}

static const char *str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static int sql_int(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int v = -1;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void sql_exec(const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static bool integrity_ok(void)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	bool ok = false;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
			 SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return ok;
}

/* ---- tests ----------------------------------------------------------------- */

static void test_new_database_is_wal_at_the_latest_schema(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	history_free(h);
	assert_int_equal(sql_int("PRAGMA user_version"), HISTORY_SCHEMA_VERSION);
	sqlite3 *db;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_version_1_database_is_migrated_and_keeps_its_rows(void **state)
{
	(void)state;
	struct error err;
	error_init(&err);
	assert_int_equal(history_create_at_version(db_path, 1, &err), 0);
	assert_int_equal(sql_int("PRAGMA user_version"), 1);
	/* Version 1 had no rule column: a row written by an old flashd. */
	assert_int_equal(
	    sql_int("SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name='rule'"), 0);
	sql_exec("INSERT INTO jobs (job, created, result, platform) VALUES "
		 "('old-job', '2026-11-30T10:00:00.000Z', 'done', 'argon')");
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	json_t *r = rows(h);
	assert_int_equal(json_array_size(r), 1);
	json_t *row = json_array_get(r, 0);
	assert_string_equal(str(row, "job"), "old-job");
	assert_string_equal(str(row, "result"), "done");
	assert_true(json_is_null(json_object_get(row, "rule")));
	json_decref(r);
	history_free(h);
	assert_int_equal(sql_int("PRAGMA user_version"), HISTORY_SCHEMA_VERSION);
	assert_int_equal(
	    sql_int("SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name='rule'"), 1);
}

static void test_database_of_a_newer_flashd_is_left_alone(void **state)
{
	(void)state;
	struct error err;
	error_init(&err);
	assert_int_equal(history_create_at_version(db_path, HISTORY_SCHEMA_VERSION, &err), 0);
	sql_exec("PRAGMA user_version = 99");
	struct history_config c = config(0, 0);
	struct history *h = history_open(NULL, dir, &c, &err);
	assert_null(h);
	assert_int_equal(err.code, ERR_HISTORY_UNAVAILABLE);
	assert_non_null(strstr(err.message, "99"));
	error_clear(&err);
	assert_int_equal(sql_int("PRAGMA user_version"), 99);
}

static void test_unfinished_job_is_interrupted_on_reopen(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	double now = (double)time(NULL);
	history_put(h, record("done-job", now - 10, NULL, NULL), false);
	history_put(h, record("done-job", now - 10, "done", NULL), true);
	history_put(h, record("running-job", now - 5, NULL, NULL), false);
	history_flush(h);
	json_t *r = rows(h);
	assert_int_equal(json_array_size(r), 2);
	assert_true(json_is_null(json_object_get(json_array_get(r, 1), "result")));
	json_decref(r);
	history_free(h); /* as if killed: nothing ended the running job */

	h = open_ok(&c);
	r = rows(h);
	assert_int_equal(json_array_size(r), 2);
	assert_string_equal(str(json_array_get(r, 0), "result"), "done");
	json_t *k = json_array_get(r, 1);
	assert_string_equal(str(k, "job"), "running-job");
	assert_string_equal(str(k, "result"), "interrupted");
	assert_string_equal(str(k, "error"), "interrupted");
	assert_non_null(str(k, "ended"));
	json_decref(r);
	history_free(h);
}

static void test_retention_keeps_the_newest_max_jobs(void **state)
{
	(void)state;
	struct history_config c = config(5, 0);
	struct history *h = open_ok(&c);
	double now = (double)time(NULL);
	for (int i = 0; i < 12; i++) {
		char id[16];
		snprintf(id, sizeof(id), "job-%02d", i);
		history_put(h, record(id, now - 100 + i, "done", NULL), true);
	}
	history_put(h, record("still-running", now - 200, NULL, NULL), false);
	history_retain_now(h);
	history_flush(h);
	json_t *r = rows(h);
	/* Five rows: the running job (never deleted) and the four newest ended ones. */
	assert_int_equal(json_array_size(r), 5);
	assert_string_equal(str(json_array_get(r, 0), "job"), "still-running");
	assert_string_equal(str(json_array_get(r, 1), "job"), "job-08");
	assert_string_equal(str(json_array_get(r, 4), "job"), "job-11");
	json_decref(r);
	history_free(h);
}

static void test_retention_deletes_jobs_older_than_max_age(void **state)
{
	(void)state;
	struct history_config c = config(0, 90);
	struct history *h = open_ok(&c);
	double now = (double)time(NULL);
	history_put(h, record("ancient", now - 91 * 86400.0, "failed", "timed-out"), true);
	history_put(h, record("recent", now - 89 * 86400.0, "done", NULL), true);
	history_retain_now(h);
	history_flush(h);
	json_t *r = rows(h);
	assert_int_equal(json_array_size(r), 1);
	assert_string_equal(str(json_array_get(r, 0), "job"), "recent");
	json_decref(r);
	history_free(h);
}

static void test_filters_limit_and_stats(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	double now = (double)time(NULL);
	history_put(h, record("a", now - 40, "done", NULL), true);
	history_put(h, record("b", now - 30, "failed", "wrong-platform"), true);
	history_put(h, record("c", now - 20, "failed", "wrong-platform"), true);
	history_put(h, record("d", now - 10, "failed", "timed-out"), true);
	json_t *other = record("e", now - 5, "done", NULL);
	json_object_set_new(other, "device", json_string("e00fce68aabbccddeeff0001"));
	json_object_set_new(other, "platform", json_string("argon"));
	json_object_set_new(other, "rule", json_string("rule-1"));
	history_put(h, other, true);

	json_t *r = query(h, NULL, "failed", 0, false);
	assert_int_equal(json_array_size(json_object_get(r, "jobs")), 3);
	json_decref(r);
	r = query(h, "e00fce68aabbccddeeff0001", NULL, 0, false);
	assert_int_equal(json_array_size(json_object_get(r, "jobs")), 1);
	json_decref(r);
	r = query(h, NULL, NULL, 2, false); /* the two newest, oldest first */
	json_t *jobs = json_object_get(r, "jobs");
	assert_int_equal(json_array_size(jobs), 2);
	assert_string_equal(str(json_array_get(jobs, 0), "job"), "d");
	assert_string_equal(str(json_array_get(jobs, 1), "job"), "e");
	assert_string_equal(str(json_object_get(json_array_get(jobs, 0), "error_detail"), "phase"),
			    "writing");
	json_decref(r);

	r = query(h, NULL, NULL, 0, true);
	json_t *platforms = json_object_get(json_object_get(r, "stats"), "platforms");
	assert_int_equal(json_array_size(platforms), 2);
	json_t *p = json_array_get(platforms, 0);
	if (strcmp(str(p, "platform"), "photon") != 0)
		p = json_array_get(platforms, 1);
	assert_int_equal(json_integer_value(json_object_get(p, "jobs")), 4);
	assert_int_equal(json_integer_value(json_object_get(p, "failed")), 3);
	assert_true(json_real_value(json_object_get(p, "failure_rate")) == 0.75);
	assert_true(json_real_value(json_object_get(p, "median_duration_s")) == 2.0);
	json_t *errors = json_object_get(p, "errors");
	assert_int_equal(json_array_size(errors), 2);
	assert_string_equal(str(json_array_get(errors, 0), "error"), "wrong-platform");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(errors, 0), "count")),
			 2);
	/* Per rule: only jobs a rule made. */
	json_t *rules = json_object_get(json_object_get(r, "stats"), "rules");
	assert_int_equal(json_array_size(rules), 1);
	assert_string_equal(str(json_array_get(rules, 0), "rule"), "rule-1");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(rules, 0), "done")), 1);
	json_decref(r);
	history_free(h);
}

/* A reply never outgrows a client's output buffer: the newest jobs are kept. */
static void test_large_reply_is_truncated_to_the_newest_jobs(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	char big[4096];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	double now = (double)time(NULL);
	for (int i = 0; i < 400; i++) {
		char id[16];
		snprintf(id, sizeof(id), "job-%03d", i);
		json_t *r = record(id, now - 400 + i, "done", NULL);
		json_object_set_new(r, "plan", json_pack("{s:s}", "note", big));
		history_put(h, r, true);
	}
	json_t *r = query(h, NULL, NULL, HISTORY_LIMIT_MAX, false);
	json_t *jobs = json_object_get(r, "jobs");
	char *text = json_dumps(jobs, JSON_COMPACT);
	assert_true(json_is_true(json_object_get(r, "truncated")));
	assert_true(json_array_size(jobs) > 50 && json_array_size(jobs) < 400);
	assert_true(strlen(text) <= HISTORY_REPLY_BYTES_MAX + 4096);
	assert_string_equal(str(json_array_get(jobs, json_array_size(jobs) - 1), "job"), "job-399");
	free(text);
	json_decref(r);
	r = query(h, NULL, NULL, 10, false);
	assert_true(json_is_false(json_object_get(r, "truncated")));
	json_decref(r);
	history_free(h);
}

static void test_filter_parse_refuses_bad_values(void **state)
{
	(void)state;
	struct history_filter f;
	struct error err;
	error_init(&err);
	json_t *req = json_pack("{s:s}", "since", "yesterday");
	assert_int_equal(history_filter_parse(req, &f, &err), -1);
	assert_int_equal(err.code, ERR_BAD_REQUEST);
	error_clear(&err);
	json_decref(req);
	req = json_pack("{s:i}", "limit", HISTORY_LIMIT_MAX + 1);
	assert_int_equal(history_filter_parse(req, &f, &err), -1);
	error_clear(&err);
	json_decref(req);
	req = json_pack("{s:s}", "result", "maybe");
	assert_int_equal(history_filter_parse(req, &f, &err), -1);
	error_clear(&err);
	json_decref(req);
	req = json_pack("{s:s, s:s, s:i}", "since", "2026-12-01T10:00:00+01:00", "result", "done",
			"limit", 5);
	assert_int_equal(history_filter_parse(req, &f, &err), 0);
	assert_string_equal(f.since, "2026-12-01T09:00:00.000Z");
	assert_int_equal(f.limit, 5);
	json_decref(req);
}

/* Another process holds the write lock: the record fails (counted, shown),
 * nothing waits on the loop, and the next record is written once it is free. */
static void test_locked_database_is_counted_and_later_records_are_written(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	sqlite3 *other;
	assert_int_equal(sqlite3_open(db_path, &other), SQLITE_OK);
	assert_int_equal(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
	history_put(h, record("lost", (double)time(NULL), "done", NULL), true);
	history_flush(h); /* the worker gives up after its busy timeout */
	json_t *s = history_status_json(h);
	assert_int_equal(json_integer_value(json_object_get(s, "write_errors")), 1);
	assert_non_null(strstr(str(s, "last_error"), "locked"));
	json_decref(s);
	assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(other);
	history_put(h, record("kept", (double)time(NULL), "done", NULL), true);
	history_flush(h);
	json_t *r = rows(h);
	assert_int_equal(json_array_size(r), 1);
	assert_string_equal(str(json_array_get(r, 0), "job"), "kept");
	json_decref(r);
	history_free(h);
}

/* A child writes records as fast as it can and is killed with SIGKILL. */
static void test_sigkill_mid_write_leaves_an_intact_database(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	history_free(open_ok(&c)); /* created before the child runs */
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct history *h = open_ok(&c);
		double now = (double)time(NULL);
		for (unsigned i = 0;; i++) {
			char id[32];
			snprintf(id, sizeof(id), "job-%u", i);
			history_put(h, record(id, now, NULL, NULL), false);
			if (i % 3)
				history_put(h, record(id, now, "done", NULL), true);
			if (i % 64 == 0)
				history_flush(h);
		}
	}
	usleep(400 * 1000);
	kill(pid, SIGKILL);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_true(integrity_ok());
	int unfinished = sql_int("SELECT COUNT(*) FROM jobs WHERE result IS NULL");
	int total = sql_int("SELECT COUNT(*) FROM jobs");
	assert_true(total > 0);
	struct history *h = open_ok(&c);
	history_free(h);
	assert_true(integrity_ok());
	assert_int_equal(sql_int("SELECT COUNT(*) FROM jobs WHERE result IS NULL"), 0);
	assert_int_equal(sql_int("SELECT COUNT(*) FROM jobs WHERE result = 'interrupted'"),
			 unfinished);
	assert_int_equal(sql_int("SELECT COUNT(*) FROM jobs"), total);
}

static void test_config_history_keys_and_defaults(void **state)
{
	(void)state;
	struct config c;
	struct error err;
	error_init(&err);
	config_defaults(&c);
	assert_int_equal(c.history.max_age_days, 90);
	assert_int_equal(c.history.max_jobs, 100000);
	assert_int_equal(config_parse(&c,
				      "[history]\nmax_age_days = 0\nmax_jobs = 500\n"
				      "retention_interval_s = 60\n",
				      "test.conf", &err),
			 0);
	assert_int_equal(c.history.max_age_days, 0);
	assert_int_equal(c.history.max_jobs, 500);
	assert_int_equal(c.history.retention_interval_s, 60);
	assert_int_equal(config_parse(&c, "[history]\nmax_jobs = lots\n", "test.conf", &err), -1);
	assert_int_equal(err.code, ERR_USAGE);
	error_clear(&err);
	assert_int_equal(config_parse(&c, "[history]\nkeep_forever = 1\n", "test.conf", &err), -1);
	error_clear(&err);
	assert_int_equal(config_parse(&c, "[history]\nretention_interval_s = 0\n", "t", &err), -1);
	error_clear(&err);
}

/* RFC 3339: what the history stores and the `since` filter accepts. */
static void test_rfc3339_round_trip_and_zones(void **state)
{
	(void)state;
	char buf[RFC3339_MAX];
	double t;
	assert_string_equal(rfc3339_format(1764624494.123, buf), "2025-12-01T21:28:14.123Z");
	assert_int_equal(rfc3339_parse("2025-12-01T21:28:14.123Z", &t), 0);
	assert_true(t > 1764624494.122 && t < 1764624494.124);
	assert_int_equal(rfc3339_parse("2025-12-01T22:28:14+01:00", &t), 0);
	assert_true(t == 1764624494.0);
	assert_int_equal(rfc3339_parse("2025-12-01", &t), 0);
	assert_true(t == 1764547200.0);
	assert_int_equal(rfc3339_parse("2025-13-01", &t), -1);
	assert_int_equal(rfc3339_parse("2025-12-01T10", &t), -1);
	assert_int_equal(rfc3339_parse("yesterday", &t), -1);
	assert_int_equal(rfc3339_parse("2025-12-01T10:00:00Zjunk", &t), -1);
}

/* The row history_row_from_records() builds (what the MQTT publisher sends) is
 * the row the database makes of the same two records: it follows sql_ended. */
static void test_row_from_records_is_the_database_row(void **state)
{
	(void)state;
	struct history_config c = config(0, 0);
	struct history *h = open_ok(&c);
	double now = (double)time(NULL);
	for (int started_too = 0; started_too < 2; started_too++) {
		char id[32];
		snprintf(id, sizeof(id), "merge-%d", started_too);
		json_t *started = record(id, now - 10, NULL, NULL);
		json_object_set_new(started, "plan", json_pack("{s:b}", "preliminary", true));
		json_object_set_new(started, "before", json_pack("{s:s}", "os", "1.5.2"));
		json_object_set_new(started, "transport", json_string("serial"));
		json_object_set_new(started, "label", json_string("bench 3"));
		json_t *ended = record(id, now - 9, "failed", "transfer-failed");
		json_object_set_new(ended, "plan", json_pack("{s:i}", "writes", 1));
		json_object_set_new(ended, "before", json_null());
		json_object_set_new(ended, "after", json_pack("{s:s}", "os", "2.0.1"));
		json_object_set_new(ended, "platform", json_null());
		json_object_set_new(ended, "uid", json_integer(1001));
		json_object_set_new(ended, "transport", json_string("dfu"));
		json_t *expected =
		    history_row_from_records(started_too ? started : NULL, json_deep_copy(ended));
		if (started_too)
			history_put(h, json_incref(started), false);
		history_put(h, ended, true);
		history_flush(h);
		json_t *all = rows(h), *row = NULL, *v;
		size_t i;
		json_array_foreach(all, i, v) if (strcmp(str(v, "job"), id) == 0) row = v;
		assert_non_null(row);
		if (!json_equal(row, expected)) {
			char *a = json_dumps(row, JSON_SORT_KEYS),
			     *b = json_dumps(expected, JSON_SORT_KEYS);
			fail_msg("database row %s\n   merged row %s", a, b);
		}
		json_decref(all);
		json_decref(expected);
		json_decref(started);
	}
	history_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_new_database_is_wal_at_the_latest_schema, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_version_1_database_is_migrated_and_keeps_its_rows,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_database_of_a_newer_flashd_is_left_alone, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_unfinished_job_is_interrupted_on_reopen, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_retention_keeps_the_newest_max_jobs, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_retention_deletes_jobs_older_than_max_age, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_filters_limit_and_stats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_large_reply_is_truncated_to_the_newest_jobs, setup,
					    teardown),
	    cmocka_unit_test(test_filter_parse_refuses_bad_values),
	    cmocka_unit_test(test_config_history_keys_and_defaults),
	    cmocka_unit_test_setup_teardown(test_row_from_records_is_the_database_row, setup,
					    teardown),
	    cmocka_unit_test(test_rfc3339_round_trip_and_zones),
	    cmocka_unit_test_setup_teardown(
		test_locked_database_is_counted_and_later_records_are_written, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sigkill_mid_write_leaves_an_intact_database, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
