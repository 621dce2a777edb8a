#include "log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int max_level = LOG_INFO;

void log_set_level(int level)
{
	max_level = level;
}

int log_get_level(void)
{
	return max_level;
}

int log_level_from_name(const char *name)
{
	static const struct {
		const char *name;
		int level;
	} names[] = {{"error", LOG_ERR},     {"warning", LOG_WARNING}, {"warn", LOG_WARNING},
		     {"notice", LOG_NOTICE}, {"info", LOG_INFO},       {"debug", LOG_DEBUG}};
	for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i].name, name) == 0)
			return names[i].level;
	return -1;
}

void log_msgv(int level, const char *fmt, va_list ap)
{
	static const char *const labels[] = {"emerg",	"alert",  "crit", "error",
					     "warning", "notice", "info", "debug"};
	char line[2048];
	if (level > max_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	/* journald parses "<N>" prefixes on its stdout/stderr streams. */
	if (getenv("JOURNAL_STREAM"))
		fprintf(stderr, "<%d>%s\n", level, line);
	else
		fprintf(stderr, "flashd: %s: %s\n", labels[level & 7], line);
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_msgv(level, fmt, ap);
	va_end(ap);
}
