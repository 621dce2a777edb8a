/*
 * The listening-mode query (cdc_query.h): one explicit state per step; the
 * events are the console's completion, the run's timer and a deferred "kick"
 * that delivers the result outside the caller's stack.
 */
#include "cdc_query.h"

#include "console.h"
#include "image.h"
#include "port.h"
#include "transport.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* any speed but the magic ones (docs/device/console.md#magic-baud-rates) */
#define BAUD_TOGGLE 9600
/* docs/device/console.md#magic-baud-rates: enter listening mode (<= 5.9.x) */
#define BAUD_LISTEN 28800

enum query_state {
	QUERY_OPEN,  /* waiting for the tty node (timer) */
	QUERY_PROBE, /* `v` before asking for listening mode */
	QUERY_QUERY, /* 9600 -> 28800 set if asked, then at once `v` [`i`] `s` */
	QUERY_DONE,  /* result delivered or about to be (kick) */
};

struct cdc_query {
	struct event_base *base;
	enum query_state state;
	struct cdc_query_config cfg;
	char tty[DEVICE_PATH_MAX];
	struct serial_port *port;
	struct console *console;
	struct event *timer, *kick;
	unsigned open_attempts;
	unsigned listens; /* 28800 toggles so far */
	bool entered;	  /* the console answered after flashd asked for listening mode */
	struct cdc_query_result res;
	struct error err;	      /* the last console result, then the final one */
	enum console_phase failed_in; /* where the last console run failed */
	cdc_query_done_fn done;
	void *ctx;
};

bool cdc_query_facts_safe_mode(const struct device_facts *f)
{
	for (unsigned i = 0; i < f->n_modules; i++)
		if (f->modules[i].store == MODULE_STORE_MAIN &&
		    !installed_module_valid(&f->modules[i]))
			return true;
	return false;
}

static void arm(struct cdc_query *q, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(q->timer, &tv);
}

static void release(struct cdc_query *q)
{
	console_free(q->console);
	q->console = NULL;
	serial_port_close(q->port);
	q->port = NULL;
}

static bool probe_silence(const struct cdc_query *q);

/* Ends the query; the callback runs from the kick event. */
static void finish(struct cdc_query *q, struct error *err)
{
	if (q->state == QUERY_DONE)
		return;
	q->state = QUERY_DONE;
	evtimer_del(q->timer);
	if (err && err != &q->err) {
		error_clear(&q->err);
		error_move(&q->err, err);
		q->failed_in = CONSOLE_PHASE_NONE; /* not the console's error */
	}
	if (!err)
		error_clear(&q->err);
	q->res.no_listening_mode = err && probe_silence(q);
	if (q->entered && !q->res.was_listening && q->cfg.keep_listening && !err) {
		/* the caller's serial step follows: the device stays listening */
		q->res.kept_listening = true;
	} else if (q->entered && !q->res.was_listening && q->port) {
		/* docs/device/console.md#commands `x`: give the device back to its firmware as it
		 * was found
		 * (also when a later step failed: flashd put it there). */
		if (write(q->port->fd, "x", 1) == 1)
			q->res.left_listening = true;
	}
	release(q);
	event_active(q->kick, 0, 0);
}

static void on_console_done(void *ctx, struct error *err);

static void run_console(struct cdc_query *q, enum query_state st, unsigned steps, unsigned probe_ms)
{
	struct error e;
	error_init(&e);
	struct console_config cc;
	console_config_default(&cc);
	cc.probe_ms = probe_ms;
	cc.reply_ms = q->cfg.reply_ms;
	cc.slow_reply_ms = q->cfg.slow_reply_ms;
	console_free(q->console);
	struct console_ops ops = {q, on_console_done};
	q->console = console_new(q->base, q->port->fd, &cc, &ops);
	q->state = st;
	if (!q->console) {
		error_set(&e, ERR_OUT_OF_MEMORY, NULL);
		finish(q, &e);
		return;
	}
	if (console_run(q->console, steps, &q->res.facts, &e) < 0)
		finish(q, &e);
}

static unsigned query_steps(const struct cdc_query *q)
{
	return CONSOLE_PROBE | (q->cfg.identify ? CONSOLE_IDENTIFY : 0) | CONSOLE_INFO;
}

/*
 * 9600 -> 28800, then `v` at once: no fixed wait for the device to enter
 * listening mode.  Bytes that arrive before the console runs stay in the
 * device's CDC buffer and the console reads them when it starts (Device OS
 * reads its input with peek(); what particle-cli's "open at 28800, send f"
 * relies on), so the answer comes as soon as the device listens.  The `v`
 * may take serial_listen_ms (entering) + serial_probe_ms (answering).
 */
static void ask_listening(struct cdc_query *q)
{
	struct error e;
	error_init(&e);
	q->listens++;
	if (q->cfg.asking)
		q->cfg.asking(q->ctx);
	if (serial_port_set_baud(q->port, BAUD_TOGGLE, &e) < 0 ||
	    serial_port_set_baud(q->port, BAUD_LISTEN, &e) < 0) {
		finish(q, &e);
		return;
	}
	run_console(q, QUERY_QUERY, query_steps(q), q->cfg.listen_ms + q->cfg.probe_ms);
}

/* Silence to `v` is what "not in listening mode" looks like
 * (docs/device/console.md#magic-baud-rates: entering
 * prints nothing).  A timeout after the console answered is not. */
static bool probe_silence(const struct cdc_query *q)
{
	return q->err.code == ERR_TIMED_OUT && q->failed_in == CONSOLE_PHASE_PROBE;
}

static void on_console_done(void *ctx, struct error *err)
{
	struct cdc_query *q = ctx;
	error_clear(&q->err);
	q->failed_in = err ? console_failed_phase(q->console) : CONSOLE_PHASE_NONE;
	if (err)
		error_move(&q->err, err);
	/* Decided from the kick: the console must not be freed from its own callback. */
	event_active(q->kick, 0, 0);
}

static void open_port(struct cdc_query *q)
{
	struct error e;
	error_init(&e);
	const char *lock_dir = q->cfg.lock_dir ? q->cfg.lock_dir : getenv("FLASHD_LOCK_DIR");
	if (serial_port_open(q->tty, lock_dir, &q->port, &e) < 0) {
		if (e.code == ERR_DEVICE_NOT_FOUND && ++q->open_attempts < CDC_QUERY_OPEN_RETRIES) {
			error_clear(&e);
			q->state = QUERY_OPEN;
			arm(q, CDC_QUERY_OPEN_RETRY_MS);
			return;
		}
		finish(q, &e);
		return;
	}
	if (q->cfg.skip_first_probe || q->cfg.relisten)
		ask_listening(q);
	else
		run_console(q, QUERY_PROBE, CONSOLE_PROBE, q->cfg.probe_ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct cdc_query *q = arg;
	(void)fd;
	(void)what;
	switch (q->state) {
	case QUERY_OPEN:
		open_port(q);
		break;
	default:
		break;
	}
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct cdc_query *q = arg;
	(void)fd;
	(void)what;
	switch (q->state) {
	case QUERY_DONE:
		q->done(q->ctx, &q->res, error_is_set(&q->err) ? &q->err : NULL);
		return;
	case QUERY_PROBE:
		if (!error_is_set(&q->err)) {
			/* listening already: ask the rest and leave it listening */
			q->res.was_listening = true;
			run_console(q, QUERY_QUERY, query_steps(q) & ~(unsigned)CONSOLE_PROBE,
				    q->cfg.probe_ms);
		} else if (probe_silence(q)) {
			error_clear(&q->err);
			ask_listening(q);
		} else {
			finish(q, &q->err);
		}
		return;
	case QUERY_QUERY:
		if (!probe_silence(q))
			q->entered = true;
		if (probe_silence(q) && q->cfg.relisten && q->listens < 2) {
			error_clear(&q->err);
			ask_listening(q);
			return;
		}
		finish(q, error_is_set(&q->err) ? &q->err : NULL);
		return;
	default:
		return;
	}
}

static unsigned or_default(unsigned v, const char *key)
{
	return v ? v : timeout_ms(key);
}

struct cdc_query *cdc_query_start(struct event_base *base, const char *tty,
				  const struct device_facts *known,
				  const struct cdc_query_config *cfg, cdc_query_done_fn done,
				  void *ctx, struct error *err)
{
	struct cdc_query *q = calloc(1, sizeof(*q));
	if (!q) {
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	q->base = base;
	q->cfg = *cfg;
	q->cfg.probe_ms = or_default(cfg->probe_ms, "serial_probe_ms");
	q->cfg.listen_ms = or_default(cfg->listen_ms, "serial_listen_ms");
	q->cfg.reply_ms = or_default(cfg->reply_ms, "serial_reply_ms");
	q->cfg.slow_reply_ms = or_default(cfg->slow_reply_ms, "serial_slow_reply_ms");
	q->done = done;
	q->ctx = ctx;
	error_init(&q->err);
	snprintf(q->tty, sizeof(q->tty), "%s", tty);
	if (known)
		q->res.facts = *known;
	/* The module list is the device's answer, not what was known before. */
	q->res.facts.modules_known = false;
	q->res.facts.n_modules = 0;
	q->timer = evtimer_new(base, on_timer, q);
	q->kick = event_new(base, -1, 0, on_kick, q);
	if (!q->timer || !q->kick) {
		cdc_query_free(q);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	q->state = QUERY_OPEN;
	arm(q, 0); /* from the loop: the callback never runs inside this call */
	return q;
}

void cdc_query_free(struct cdc_query *q)
{
	if (!q)
		return;
	release(q);
	if (q->timer)
		event_free(q->timer);
	if (q->kick)
		event_free(q->kick);
	error_clear(&q->err);
	free(q);
}

int cdc_query_give_back(const char *tty, const char *lock_dir, struct error *err)
{
	struct serial_port *port = NULL;
	if (serial_port_open(tty, lock_dir ? lock_dir : getenv("FLASHD_LOCK_DIR"), &port, err) < 0)
		return -1;
	int rc = 0;
	if (write(port->fd, "x", 1) != 1)
		rc = error_set(err, ERR_TRANSFER_FAILED, "writing `x` to %s: %m", tty);
	serial_port_close(port);
	return rc;
}
