#include "errors.h"

#include <assert.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static const struct error_info catalogue[] = {
#define X(sym, id, exit_status, details, message, hint)                                            \
	{ERR_##sym, id, exit_status, details, message, hint},
#include "errors.def"
#undef X
};

/* Keys every error may carry in addition to its declared ones. */
static const char common_details[] = "file:s,device:s,job:s,port:s,platform:s";

size_t error_catalogue(const struct error_info **ret_table)
{
	*ret_table = catalogue;
	return sizeof(catalogue) / sizeof(catalogue[0]);
}

const struct error_info *error_info(enum error_code code)
{
	if (code <= ERR_NONE || code >= ERR__COUNT)
		return NULL;
	return &catalogue[code - 1];
}

const struct error_info *error_info_by_id(const char *id)
{
	for (size_t i = 0; id && i < sizeof(catalogue) / sizeof(catalogue[0]); i++)
		if (strcmp(catalogue[i].id, id) == 0)
			return &catalogue[i];
	return NULL;
}

const char *error_id(enum error_code code)
{
	const struct error_info *info = error_info(code);
	return info ? info->id : "none";
}

int error_exit_status(enum error_code code)
{
	const struct error_info *info = error_info(code);
	return info ? info->exit_status : 0;
}

static char find_key_type(const char *list, const char *key)
{
	size_t klen = strlen(key);
	for (const char *p = list; p && *p;) {
		const char *colon = strchr(p, ':');
		if (!colon)
			return 0;
		if ((size_t)(colon - p) == klen && strncmp(p, key, klen) == 0)
			return colon[1];
		p = strchr(colon, ',');
		if (p)
			p++;
	}
	return 0;
}

char error_detail_type(enum error_code code, const char *key)
{
	const struct error_info *info = error_info(code);
	char t = find_key_type(common_details, key);
	if (t || !info)
		return t;
	return find_key_type(info->details, key);
}

void error_init(struct error *e)
{
	memset(e, 0, sizeof(*e));
}

void error_clear(struct error *e)
{
	if (!e)
		return;
	json_decref(e->detail);
	error_init(e);
}

bool error_is_set(const struct error *e)
{
	return e && e->code != ERR_NONE;
}

void error_move(struct error *dst, struct error *src)
{
	error_clear(dst);
	*dst = *src;
	error_init(src);
}

int error_setv(struct error *e, enum error_code code, const char *fmt, va_list ap)
{
	const struct error_info *info = error_info(code);
	assert(info);
	error_clear(e);
	e->code = code;
	if (fmt)
		vsnprintf(e->message, sizeof(e->message), fmt, ap);
	else
		snprintf(e->message, sizeof(e->message), "%s", info->message);
	snprintf(e->hint, sizeof(e->hint), "%s", info->hint);
	return -1;
}

int error_set(struct error *e, enum error_code code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_setv(e, code, fmt, ap);
	va_end(ap);
	return -1;
}

void error_hint(struct error *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->hint, sizeof(e->hint), fmt, ap);
	va_end(ap);
}

void error_prefix(struct error *e, const char *fmt, ...)
{
	char prefix[ERROR_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	size_t plen = (size_t)n < sizeof(prefix) ? (size_t)n : sizeof(prefix) - 1;
	size_t mlen = strnlen(e->message, sizeof(e->message) - 1);
	/* Keep the cause whole where possible: it is the part that matters. */
	if (plen + mlen > sizeof(e->message) - 1)
		plen = sizeof(e->message) - 1 - mlen;
	memmove(e->message + plen, e->message, mlen + 1);
	memcpy(e->message, prefix, plen);
}

static void detail_put(struct error *e, const char *key, json_t *value, char type)
{
	char declared = error_detail_type(e->code, key);
	/* An undeclared key is a programming error: the catalogue is the contract. */
	assert(declared == type);
	(void)declared;
	(void)type;
	if (!value)
		return;
	if (!e->detail)
		e->detail = json_object();
	json_object_set_new(e->detail, key, value);
}

/* Text from a device or a file need not be UTF-8, but JSON must be: when it
 * is not, every byte outside ASCII becomes '?' (lossy, never fails). */
static json_t *json_text(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	size_t n = strlen(s);
	char *copy = malloc(n + 1);
	if (!copy)
		return NULL;
	for (size_t i = 0; i <= n; i++)
		copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
	j = json_string(copy);
	free(copy);
	return j;
}

void error_detail_str(struct error *e, const char *key, const char *value)
{
	detail_put(e, key, value ? json_text(value) : json_null(), 's');
}

void error_detail_int(struct error *e, const char *key, long long value)
{
	detail_put(e, key, json_integer(value), 'i');
}

void error_detail_bool(struct error *e, const char *key, bool value)
{
	detail_put(e, key, json_boolean(value), 'b');
}

void error_detail_json(struct error *e, const char *key, json_t *value)
{
	char t = json_is_array(value) ? 'a' : json_is_object(value) ? 'o' : 0;
	if (json_is_string(value))
		t = 's';
	else if (json_is_integer(value))
		t = 'i';
	else if (json_is_boolean(value))
		t = 'b';
	detail_put(e, key, value, t);
}

json_t *error_to_json(const struct error *e)
{
	/* "o" steals: a fresh empty object must not get a second reference.
	 * Messages may quote a device's words: json_text keeps them JSON. */
	return json_pack("{s:s, s:o, s:o, s:o}", "code", error_id(e->code), "message",
			 json_text(e->message), "hint", json_text(e->hint), "detail",
			 e->detail ? json_incref(e->detail) : json_object());
}

int error_from_json(struct error *e, const json_t *obj)
{
	const char *code = NULL, *message = NULL, *hint = NULL;
	json_t *detail = NULL;
	error_clear(e);
	if (json_unpack((json_t *)obj, "{s:s, s?s, s?s, s?o}", "code", &code, "message", &message,
			"hint", &hint, "detail", &detail) != 0)
		return error_set(e, ERR_BAD_REQUEST, "malformed error object");
	const struct error_info *info = error_info_by_id(code);
	e->code = info ? info->code : ERR_INTERNAL;
	snprintf(e->message, sizeof(e->message), "%s",
		 message ? message : (info ? info->message : code));
	snprintf(e->hint, sizeof(e->hint), "%s", hint ? hint : (info ? info->hint : ""));
	if (json_is_object(detail))
		e->detail = json_deep_copy(detail);
	if (!info) {
		if (!e->detail)
			e->detail = json_object();
		json_object_set_new(e->detail, "reason", json_sprintf("unknown error id %s", code));
	}
	return 0;
}
