/*
 * The flash history (issue 15): one row per job in an SQLite database in the
 * state directory (STATE_DIR/history.sqlite3, WAL mode), written when a job
 * starts and updated when it ends, queryable over the protocol (`history`
 * request, `flashctl history`).
 *
 * Nothing here runs SQLite on the event loop.  The loop turns a job into a
 * record (a JSON object, history_record_*()) and queues it; one worker thread
 * owns the database connection and writes, deletes (retention) and answers
 * queries.  The queue is bounded: when it is full a record is dropped and
 * counted, the loop never waits.  Results and failures come back to the loop
 * through an eventfd: the loop logs them and hands query results to their
 * callback.  A failing database (full disk, I/O error, corruption) never
 * stops a job: the error is logged, counted and shown by
 * history_status_json() (the `history` reply's "database" object and the
 * `hello` reply).
 *
 * The schema is versioned (PRAGMA user_version) and brought up to date by an
 * ordered list of migration steps when the database is opened.  A database
 * of a newer version than this daemon knows is left alone (the history is
 * then unavailable).  Rows whose job never ended (the daemon was killed) are
 * marked interrupted when the database is opened.
 */
#pragma once

#include "errors.h"
#include "rfc3339.h"

#include <jansson.h>
#include <stdbool.h>

struct event_base;
struct history;
struct history_query;
struct job;

#define HISTORY_FILE_NAME      "history.sqlite3"
#define HISTORY_SCHEMA_VERSION 4
/* Rows one query returns at most (a `history` request's limit). */
#define HISTORY_LIMIT_MAX     10000
#define HISTORY_LIMIT_DEFAULT 100
/* A reply's jobs stop at this many bytes of JSON (the newest are kept, the
 * reply says "truncated"): it must fit a client's output buffer (1 MiB by
 * default) and flashctl's line limit. */
#define HISTORY_REPLY_BYTES_MAX (512u * 1024)
/* Records waiting for the worker; beyond this they are dropped (and counted). */
#define HISTORY_QUEUE_MAX 4096

/* [history] in the config file (settings.c). */
struct history_config {
	unsigned max_age_days;	       /* rows older than this are deleted; 0 = no age limit */
	unsigned max_jobs;	       /* at most this many rows are kept; 0 = no count limit */
	unsigned retention_interval_s; /* how often retention runs (and once at start) */
};
void history_config_defaults(struct history_config *c);

/*
 * Opens (creating and migrating as needed) STATE_DIR/history.sqlite3 and starts
 * the worker.  Runs at startup, before the loop serves: it may block.  Rows of
 * jobs that never ended are marked interrupted.  base may be NULL (no periodic
 * retention, no event: history_flush() delivers results).  Fails with
 * history-unavailable.
 */
struct history *history_open(struct event_base *base, const char *state_dir,
			     const struct history_config *cfg, struct error *err);
/* Writes what is queued, stops the worker, closes the database.  Accepts NULL. */
void history_free(struct history *h);

/* The hooks in jobs.c: a record of the job now, queued for the worker.  NULL h: no-op. */
void history_job_started(struct history *h, const struct job *job);
void history_job_ended(struct history *h, const struct job *job);
/* An auto-flash hook ran for the job: its record (taken) goes in the row's hook column. */
void history_job_hook(struct history *h, const char *job, json_t *hook);

/*
 * The record of a job as stored (keys of the `history` reply's HISTORY_JOB,
 * proto/PROTOCOL.md).  history_put() queues it (taking the reference):
 * started = the row is created or refreshed, otherwise it is completed.
 * Unit tests and benchmarks build records directly.
 */
json_t *history_record_from_job(const struct job *job, bool ended);
void history_put(struct history *h, json_t *record, bool ended);

/* A finished job's row as a `history` query (`flashctl history --json`) returns
 * it, from its started record (NULL: it never started) and its ended record
 * (taken and returned), merged as the database merges them. */
json_t *history_row_from_records(const json_t *started, json_t *ended);

/* A `history` request's filters. */
struct history_filter {
	char device[128];	 /* device key or id, "" = any */
	char since[RFC3339_MAX]; /* RFC 3339 UTC ("2026-12-01T10:00:00.000Z"), "" = any */
	char result[16];	 /* done | failed | cancelled | interrupted, "" = any */
	unsigned limit;		 /* newest N (returned oldest first); 0 = HISTORY_LIMIT_DEFAULT */
	bool stats;		 /* per-platform statistics instead of rows */
};
/* Parses a request's "device", "since", "result", "limit", "stats" (bad-request on errors). */
WARN_UNUSED_RESULT int history_filter_parse(const json_t *req, struct history_filter *f,
					    struct error *err);

/*
 * Runs a query on the worker; cb gets {"jobs":[...]} or {"stats":{...}} (owned
 * by cb) or an error, on the loop (or inside history_flush()).  Returns a
 * handle for history_query_abandon() (the requester went away: cb is not
 * called), or NULL with err set.
 */
typedef void (*history_result_cb)(void *ctx, json_t *result, const struct error *err);
struct history_query *history_query(struct history *h, const struct history_filter *f,
				    history_result_cb cb, void *ctx, struct error *err);
void history_query_abandon(struct history *h, struct history_query *q);

/* {"enabled","path","schema_version","queued","written","write_errors","dropped","last_error"} */
json_t *history_status_json(struct history *h);
/* Queues a retention pass now (the timer does it every retention_interval_s). */
void history_retain_now(struct history *h);
/* Waits until the worker has done everything queued, then delivers the
 * results on the calling thread.  Blocks: tests, benchmarks and shutdown only. */
void history_flush(struct history *h);

/* Creates a database at path with the schema of the given version (an older
 * one, for migration tests); 0 or -1. */
WARN_UNUSED_RESULT int history_create_at_version(const char *path, int version, struct error *err);
