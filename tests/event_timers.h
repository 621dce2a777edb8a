/*
 * The timers armed on a libevent base, for tests that let time pass without
 * sleeping (a unit test or a fuzz harness fires a timer at once with
 * event_active()): how many, the one due first and the one due last.
 */
#pragma once

#include <event2/event.h>
#include <event2/util.h>
#include <string.h>

struct armed_timers {
	struct event *first, *last; /* due first, due last */
	struct timeval first_tv, last_tv;
	unsigned n;
};

static inline int armed_timers_visit(const struct event_base *base, const struct event *ev,
				     void *arg)
{
	(void)base;
	struct armed_timers *t = arg;
	struct timeval tv;
	if (!event_pending(ev, EV_TIMEOUT, &tv))
		return 0;
	if (!t->n || evutil_timercmp(&tv, &t->first_tv, <)) {
		t->first = (struct event *)ev;
		t->first_tv = tv;
	}
	if (!t->n || !evutil_timercmp(&tv, &t->last_tv, <)) {
		t->last = (struct event *)ev;
		t->last_tv = tv;
	}
	t->n++;
	return 0;
}

/* Fills t, returns how many timers are armed. */
static inline unsigned armed_timers(struct event_base *base, struct armed_timers *t)
{
	memset(t, 0, sizeof(*t));
	event_base_foreach_event(base, armed_timers_visit, t);
	return t->n;
}
