#include "rfc3339.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

char *rfc3339_format(double t, char out[RFC3339_MAX])
{
	double whole = floor(t);
	long ms = lround((t - whole) * 1000.0);
	time_t secs = (time_t)whole;
	if (ms >= 1000) {
		secs++;
		ms -= 1000;
	}
	struct tm tm;
	if (!gmtime_r(&secs, &tm)) {
		snprintf(out, RFC3339_MAX, "1970-01-01T00:00:00.000Z");
		return out;
	}
	snprintf(out, RFC3339_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	return out;
}

/* n decimal digits at *p; advances p. */
static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int rfc3339_parse(const char *s, double *t)
{
	struct tm tm;
	int year, mon, day, hour = 0, min = 0, sec = 0, off = 0;
	double frac = 0;
	const char *p = s;
	memset(&tm, 0, sizeof(tm));
	if (!s || digits(&p, 4, &year) < 0 || *p++ != '-' || digits(&p, 2, &mon) < 0 ||
	    *p++ != '-' || digits(&p, 2, &day) < 0)
		return -1;
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (digits(&p, 2, &hour) < 0 || *p++ != ':' || digits(&p, 2, &min) < 0)
			return -1;
		if (*p == ':') {
			p++;
			if (digits(&p, 2, &sec) < 0)
				return -1;
			if (*p == '.') {
				double scale = 0.1;
				if (!isdigit((unsigned char)*++p))
					return -1;
				for (; isdigit((unsigned char)*p); p++, scale /= 10)
					frac += (*p - '0') * scale;
			}
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			int sign = *p++ == '-' ? -1 : 1, oh, om;
			if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0 ||
			    oh > 23 || om > 59)
				return -1;
			off = sign * (oh * 3600 + om * 60);
		}
	}
	if (*p || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return -1;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	time_t secs = timegm(&tm);
	if (secs == (time_t)-1)
		return -1;
	*t = (double)secs - off + frac;
	return 0;
}
