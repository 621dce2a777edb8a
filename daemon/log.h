/* The daemon's log: stderr, one line per message, syslog-style levels.
 * Under systemd (JOURNAL_STREAM) lines carry "<N>" priority prefixes. */
#pragma once

#include <stdarg.h>
#include <syslog.h>

void log_set_level(int level);
int log_get_level(void);
/* "error", "warning", "info", "debug" -> LOG_*; -1 if unknown. */
int log_level_from_name(const char *name);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_msgv(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_error(...)	 log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)	 log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	 log_msg(LOG_DEBUG, __VA_ARGS__)
