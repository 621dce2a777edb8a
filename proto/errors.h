/* The error catalogue (errors.def) and the error object every layer fills. */
#pragma once

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>

/*
 * For a function that reports failure through its result (a negative value
 * with a filled struct error, or NULL): dropping the result is a bug.  A
 * result ignored on purpose gets a void cast and the reason beside it; GCC
 * does not accept a plain (void) cast for this attribute (GCC bug 66425), so
 * such a call is written (void)!f(...).
 */
#define WARN_UNUSED_RESULT __attribute__((warn_unused_result))

enum error_code {
	ERR_NONE = 0,
#define X(sym, id, exit_status, details, message, hint) ERR_##sym,
#include "errors.def"
#undef X
	ERR__COUNT
};

struct error_info {
	enum error_code code;
	const char *id;	     /* stable kebab-case id */
	int exit_status;     /* flashctl exit status */
	const char *details; /* "key:type,..." declared detail keys */
	const char *message; /* default message */
	const char *hint;    /* default hint */
};

#define ERROR_MESSAGE_MAX 1024
#define ERROR_HINT_MAX	  512

/*
 * A failure with its facts.  Functions that fail fill one and return a
 * negative value; callers add context with error_prefix() instead of
 * replacing the cause.  Nothing below the edge prints it.
 */
struct error {
	enum error_code code;
	char message[ERROR_MESSAGE_MAX];
	char hint[ERROR_HINT_MAX];
	json_t *detail; /* object, owned; NULL until a detail is added */
};

const struct error_info *error_info(enum error_code code);
const struct error_info *error_info_by_id(const char *id);
size_t error_catalogue(const struct error_info **ret_table);
const char *error_id(enum error_code code);
int error_exit_status(enum error_code code);
/* The declared type letter of a detail key for a code, or 0 if undeclared. */
char error_detail_type(enum error_code code, const char *key);

void error_init(struct error *e);
void error_clear(struct error *e);
bool error_is_set(const struct error *e);
void error_move(struct error *dst, struct error *src);

/* Sets code and message (printf-style, NULL = default message); the hint is
 * reset to the catalogue default.  Returns -1 so callers can
 * "return error_set(...)". */
int error_set(struct error *e, enum error_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int error_setv(struct error *e, enum error_code code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
void error_hint(struct error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context: "flashing system part 2: " + message. */
void error_prefix(struct error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Details: keys must be declared for the code in errors.def (checked by assert). */
void error_detail_str(struct error *e, const char *key, const char *value);
void error_detail_int(struct error *e, const char *key, long long value);
void error_detail_bool(struct error *e, const char *key, bool value);
void error_detail_json(struct error *e, const char *key, json_t *value); /* steals value */

/* {"code":id,"message":...,"hint":...,"detail":{...}} */
json_t *error_to_json(const struct error *e);
/* Parses the object above; unknown ids become ERR_INTERNAL with the id kept in detail. */
int error_from_json(struct error *e, const json_t *obj);
