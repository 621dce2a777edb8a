/*
 * Listening-mode engine of flashd-sim (issue 4): placeholder so the core links;
 * the faithful console and YMODEM receiver follow.
 */
#include "listening.h"

#include <stdlib.h>

struct listening {
	struct listening_config cfg;
	struct listening_ops ops;
	enum listening_state_kind state;
	uint64_t ymodem_bytes;
};

struct listening *listening_new(const struct listening_config *cfg, const struct listening_ops *ops,
				enum listening_state_kind initial)
{
	struct listening *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->cfg = *cfg;
	l->ops = *ops;
	l->state = initial;
	return l;
}

void listening_free(struct listening *l)
{
	free(l);
}

void listening_input(struct listening *l, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	(void)l;
	(void)buf;
	(void)len;
	(void)now_ms;
}

void listening_tick(struct listening *l, uint64_t now_ms)
{
	(void)l;
	(void)now_ms;
}

uint64_t listening_next_deadline(const struct listening *l)
{
	(void)l;
	return UINT64_MAX;
}

void listening_enter(struct listening *l, uint64_t now_ms)
{
	(void)now_ms;
	if (l->cfg.era != LISTENING_ERA_6)
		l->state = LISTENING_CONSOLE;
}

enum listening_state_kind listening_state(const struct listening *l)
{
	return l->state;
}

void listening_add_fault(struct listening *l, const struct listening_fault *f)
{
	(void)l;
	(void)f;
}

uint64_t listening_ymodem_bytes(const struct listening *l)
{
	return l->ymodem_bytes;
}
