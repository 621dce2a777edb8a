/*
 * RFC 3339 times, as the flash history stores and the protocol carries them:
 * UTC with milliseconds ("2026-12-01T21:28:14.123Z").  Strings in this one
 * form sort as the times do, so the database compares them as text.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define RFC3339_MAX 64 /* "2026-12-01T21:28:14.123Z" is 24; room for any struct tm */

/* Seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS.mmmZ"; returns out. */
char *rfc3339_format(double t, char out[RFC3339_MAX]);
/*
 * Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS[.frac]]" followed by "Z" or
 * "+HH:MM" / "-HH:MM" (a space may replace the "T"; without a zone the time
 * is UTC).  Returns 0 and the seconds since the epoch, or -1.
 */
int rfc3339_parse(const char *s, double *t);
