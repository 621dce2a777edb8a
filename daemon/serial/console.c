#include "console.h"

#include "cleanup.h"
#include "osver.h"
#include "platform.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEXT_VERSION	  "system firmware version:"
#define TEXT_CLAIM_PROMPT "Enter 63-digit claim code"
#define TEXT_CLAIM_ANSWER "laim code"

enum console_state {
	CONSOLE_IDLE,
	CONSOLE_WAIT_PROBE,
	CONSOLE_WAIT_IDENTIFY,
	CONSOLE_WAIT_INFO,
	CONSOLE_WAIT_CLAIM_END,
	CONSOLE_DONE,
};

struct console {
	struct event_base *base;
	int fd;
	struct console_config cfg;
	struct console_ops ops;
	struct event *rev, *timer;
	enum console_state state, resume; /* resume: the step a claim prompt interrupted */
	unsigned steps;
	struct device_facts *facts;
	char buf[CONSOLE_REPLY_MAX + 1];
	size_t len;
	unsigned claim_recoveries;
	enum console_phase failed; /* set with the error that ends a run */
};

const char *console_phase_name(enum console_phase p)
{
	switch (p) {
	case CONSOLE_PHASE_PROBE:
		return "probe";
	case CONSOLE_PHASE_IDENTIFY:
		return "identify";
	case CONSOLE_PHASE_INFO:
		return "info";
	case CONSOLE_PHASE_CLAIM_PROMPT:
		return "claim-prompt";
	case CONSOLE_PHASE_IO:
		return "console";
	case CONSOLE_PHASE_NONE:
		break;
	}
	return NULL;
}

enum console_phase console_failed_phase(const struct console *c)
{
	return c->failed;
}

/* Ends a run with err, failed in phase (the error's "phase" detail says it too). */
static void finish(struct console *c, struct error *err);
static void fail(struct console *c, enum console_phase phase, struct error *err)
{
	c->failed = phase;
	if (error_detail_type(err->code, "phase") && !json_object_get(err->detail, "phase"))
		error_detail_str(err, "phase", console_phase_name(phase));
	finish(c, err);
}

void console_config_default(struct console_config *cfg)
{
	cfg->probe_ms = 2000;
	cfg->reply_ms = 5000;
	/* particle-cli waits 20 s for `i` and `s` (docs/device/console.md#device-id-reply) */
	cfg->slow_reply_ms = 20000;
	cfg->max_claim_recoveries = 3;
}

/* ---- parsers ------------------------------------------------------------------ */

bool console_parse_version(const char *text, char *out, size_t size)
{
	const char *p = strstr(text, TEXT_VERSION);
	if (!p)
		return false;
	p += strlen(TEXT_VERSION);
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, " \r\n");
	if (!n || !strpbrk(p, "\n"))
		return false; /* the line is not complete yet */
	snprintf(out, size, "%.*s", (int)n, p);
	return true;
}

static bool hex24(const char *p)
{
	for (int i = 0; i < DEVICE_ID_LEN; i++)
		if (!isxdigit((unsigned char)p[i]))
			return false;
	return !isxdigit((unsigned char)p[DEVICE_ID_LEN]);
}

bool console_parse_device_id(const char *text, char *out, size_t size)
{
	static const char *const labels[] = {"Your device id is ", "Your core id is ",
					     "Device ID: "};
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
		const char *p = strstr(text, labels[i]);
		if (!p)
			continue;
		p += strlen(labels[i]);
		while (*p == ' ')
			p++;
		if (hex24(p)) {
			snprintf(out, size, "%.*s", DEVICE_ID_LEN, p);
			for (char *c = out; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			return true;
		}
	}
	return false;
}

static int json_index(json_t *v)
{
	if (json_is_string(v))
		return atoi(json_string_value(v));
	return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

static int letter_function(json_t *v)
{
	const char *s = json_string_value(v);
	int f = s && s[0] ? module_function_from_letter(s[0]) : -1;
	return f < 0 ? MODULE_FUNCTION_NONE : f;
}

static uint8_t store_from_letter(json_t *v)
{
	const char *s = json_string_value(v);
	switch (s ? s[0] : 'm') {
	case 'f':
		return MODULE_STORE_FACTORY;
	case 'b':
		return MODULE_STORE_BACKUP;
	case 't':
		return MODULE_STORE_SCRATCHPAD;
	default:
		return MODULE_STORE_MAIN;
	}
}

static void fill_module(struct installed_module *m, json_t *o)
{
	memset(m, 0, sizeof(*m));
	m->function = (uint8_t)letter_function(json_object_get(o, "f"));
	m->index = (uint8_t)json_index(json_object_get(o, "n"));
	m->version = (uint16_t)json_integer_value(json_object_get(o, "v"));
	m->slot_size = (uint32_t)json_integer_value(json_object_get(o, "s"));
	m->store = store_from_letter(json_object_get(o, "l"));
	m->checked = (uint16_t)json_integer_value(json_object_get(o, "vc"));
	m->passed = (uint16_t)json_integer_value(json_object_get(o, "vv"));
	const char *u = json_string_value(json_object_get(o, "u"));
	/* uppercase on the wire (docs/device/console.md#module-info-reply) */
	if (u && strlen(u) == 64)
		for (int i = 0; i < 64; i++)
			m->sha256[i] = (char)tolower((unsigned char)u[i]);
	json_t *deps = json_object_get(o, "d");
	for (size_t i = 0; i < json_array_size(deps) && i < 2; i++) {
		json_t *d = json_array_get(deps, i);
		m->deps[i].function = (uint8_t)letter_function(json_object_get(d, "f"));
		m->deps[i].index = (uint8_t)json_index(json_object_get(d, "n"));
		m->deps[i].version = (uint16_t)json_integer_value(json_object_get(d, "v"));
	}
}

int console_parse_info(const char *text, struct device_facts *facts, struct error *err)
{
	/* The body starts with {"p": (docs/device/console.md#module-info-reply); stray output may
	 * hold other braces. */
	const char *start = strstr(text, "{\"p\":");
	json_auto_t *root = NULL;
	if (start) {
		json_error_t je;
		root = json_loads(start, JSON_DISABLE_EOF_CHECK, &je);
	}
	if (!json_is_object(root)) {
		error_set(err, ERR_TRANSFER_FAILED, "the device's `s` reply holds no module list");
		error_detail_str(err, "phase", "info");
		error_detail_str(err, "reason", "no JSON object in the reply");
		return -1;
	}
	json_t *p = json_object_get(root, "p");
	if (json_is_integer(p))
		facts->platform = platform_by_id((int)json_integer_value(p));
	json_t *mods = json_object_get(root, "m");
	facts->n_modules = 0;
	uint16_t sys1 = 0, sys_any = 0;
	for (size_t i = 0; i < json_array_size(mods) && facts->n_modules < DEVICE_FACTS_MAX_MODULES;
	     i++) {
		struct installed_module *m = &facts->modules[facts->n_modules++];
		fill_module(m, json_array_get(mods, i));
		if ((m->function == MODULE_FUNCTION_SYSTEM ||
		     m->function == MODULE_FUNCTION_MONO) &&
		    m->store == MODULE_STORE_MAIN) {
			if (m->index == 1 || m->function == MODULE_FUNCTION_MONO)
				sys1 = m->version;
			if (m->version > sys_any)
				sys_any = m->version;
		}
	}
	facts->system_version = sys1 ? sys1 : sys_any;
	facts->modules_known = json_array_size(mods) <= DEVICE_FACTS_MAX_MODULES;
	return 0;
}

/* ---- state machine ---------------------------------------------------------------- */

static void arm(struct console *c, unsigned ms)
{
	struct timeval tv = {ms / 1000, (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static void finish(struct console *c, struct error *err)
{
	c->state = CONSOLE_DONE;
	event_del(c->rev);
	evtimer_del(c->timer);
	c->ops.done(c->ops.ctx, err && error_is_set(err) ? err : NULL);
}

static bool send_str(struct console *c, const char *s)
{
	size_t n = strlen(s);
	ssize_t w = write(c->fd, s, n);
	if (w == (ssize_t)n)
		return true;
	/* single command keys: a full tty buffer here means the device is wedged */
	struct error e;
	error_init(&e);
	error_set(&e, ERR_DEVICE_GONE, "cannot write to the device's console: %s",
		  w < 0 ? strerror(errno) : "short write");
	fail(c, CONSOLE_PHASE_IO, &e);
	error_clear(&e);
	return false;
}

static void next_step(struct console *c);

static void start_step(struct console *c, enum console_state st)
{
	c->len = 0;
	c->buf[0] = '\0';
	c->state = st;
	switch (st) {
	case CONSOLE_WAIT_PROBE:
		if (send_str(c, "v"))
			arm(c, c->cfg.probe_ms);
		break;
	case CONSOLE_WAIT_IDENTIFY:
		/* `i` has no end marker: the `v` reply after it closes it
		 * (docs/device/console.md#device-id-reply) */
		if (send_str(c, "iv"))
			arm(c, c->cfg.slow_reply_ms);
		break;
	case CONSOLE_WAIT_INFO:
		if (send_str(c, "s"))
			arm(c, c->cfg.slow_reply_ms);
		break;
	default:
		break;
	}
}

static void next_step(struct console *c)
{
	if (c->steps & CONSOLE_PROBE) {
		c->steps &= ~(unsigned)CONSOLE_PROBE;
		start_step(c, CONSOLE_WAIT_PROBE);
	} else if (c->steps & CONSOLE_IDENTIFY) {
		c->steps &= ~(unsigned)CONSOLE_IDENTIFY;
		start_step(c, CONSOLE_WAIT_IDENTIFY);
	} else if (c->steps & CONSOLE_INFO) {
		c->steps &= ~(unsigned)CONSOLE_INFO;
		start_step(c, CONSOLE_WAIT_INFO);
	} else if (c->steps & CONSOLE_EXIT) {
		c->steps &= ~(unsigned)CONSOLE_EXIT;
		if (send_str(c, "x"))
			finish(c, NULL);
	} else {
		finish(c, NULL);
	}
}

/* The claim-code line's answer ("Sorry, claim code ..."), complete, in text. */
static bool claim_answered(const char *text)
{
	const char *a = strstr(text, TEXT_CLAIM_ANSWER);
	return a && strchr(a, '\n');
}

static bool claim_prompt(struct console *c)
{
	const char *prompt = strstr(c->buf, TEXT_CLAIM_PROMPT);
	if (c->state == CONSOLE_WAIT_CLAIM_END || !prompt)
		return false;
	if (c->claim_recoveries++ >= c->cfg.max_claim_recoveries) {
		struct error e;
		error_init(&e);
		error_set(&e, ERR_DEVICE_BUSY,
			  "another program keeps writing to the port: the console's claim-code "
			  "prompt opened %u times",
			  c->claim_recoveries);
		error_hint(&e,
			   "ModemManager probes Particle ports with AT commands: install flashd's "
			   "udev rules (ID_MM_DEVICE_IGNORE=1) and re-plug the device, or stop "
			   "ModemManager");
		error_detail_str(&e, "holder", "ModemManager");
		finish(c, &e);
		error_clear(&e);
		return true;
	}
	/* docs/device/console.md#modemmanager: the prompt swallowed our command.  A probe that
	 * ended its own
	 * line (AT...\r) has closed the prompt already: the answer follows it in
	 * the same text, and the command is simply repeated.  Otherwise end the
	 * line input with CR first.  The text after the prompt is kept: the
	 * answer may have arrived in the same read. */
	enum console_state resume = c->state;
	const char *after = prompt + strlen(TEXT_CLAIM_PROMPT);
	if (claim_answered(after)) {
		start_step(c, resume);
		return true;
	}
	size_t keep = c->len - (size_t)(after - c->buf);
	memmove(c->buf, after, keep + 1);
	c->len = keep;
	c->resume = resume;
	c->state = CONSOLE_WAIT_CLAIM_END;
	if (send_str(c, "\r"))
		arm(c, c->cfg.reply_ms);
	if (c->state == CONSOLE_WAIT_CLAIM_END && claim_answered(c->buf))
		start_step(c, c->resume);
	return true;
}

static void on_input(struct console *c)
{
	if (claim_prompt(c))
		return;
	switch (c->state) {
	case CONSOLE_WAIT_PROBE:
		if (console_parse_version(c->buf, c->facts->os_version,
					  sizeof(c->facts->os_version)))
			next_step(c);
		break;
	case CONSOLE_WAIT_IDENTIFY:
		if (console_parse_version(c->buf, c->facts->os_version,
					  sizeof(c->facts->os_version))) {
			console_parse_device_id(c->buf, c->facts->device_id,
						sizeof(c->facts->device_id));
			next_step(c);
		}
		break;
	case CONSOLE_WAIT_INFO: {
		const char *body = strstr(c->buf, "{\"p\":");
		/* edge case (docs/device/console.md#module-info-reply): nothing appended prints
		 * only "}\r\n" */
		if (!body)
			body = c->buf;
		if (strstr(body, "}\r\n")) {
			struct error e;
			error_init(&e);
			if (console_parse_info(body, c->facts, &e) < 0) {
				fail(c, CONSOLE_PHASE_INFO, &e);
				error_clear(&e);
				return;
			}
			next_step(c);
		}
		break;
	}
	case CONSOLE_WAIT_CLAIM_END:
		if (claim_answered(c->buf))
			start_step(c, c->resume);
		break;
	default:
		break;
	}
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;
	(void)what;
	char tmp[512];
	ssize_t n = read(fd, tmp, sizeof(tmp));
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		struct error e;
		error_init(&e);
		error_set(&e, ERR_DEVICE_GONE,
			  "the device disappeared while answering the console");
		fail(c, CONSOLE_PHASE_IO, &e);
		error_clear(&e);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (tmp[i] == '\0')
			continue;
		if (c->len == CONSOLE_REPLY_MAX) {
			/* keep the newest half: replies end with their markers */
			memmove(c->buf, c->buf + CONSOLE_REPLY_MAX / 2, CONSOLE_REPLY_MAX / 2);
			c->len = CONSOLE_REPLY_MAX / 2;
		}
		c->buf[c->len++] = tmp[i];
	}
	c->buf[c->len] = '\0';
	on_input(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;
	(void)fd;
	(void)what;
	static const enum console_phase phase[] = {[CONSOLE_WAIT_PROBE] = CONSOLE_PHASE_PROBE,
						   [CONSOLE_WAIT_IDENTIFY] = CONSOLE_PHASE_IDENTIFY,
						   [CONSOLE_WAIT_INFO] = CONSOLE_PHASE_INFO,
						   [CONSOLE_WAIT_CLAIM_END] =
						       CONSOLE_PHASE_CLAIM_PROMPT};
	unsigned ms = c->state == CONSOLE_WAIT_PROBE	   ? c->cfg.probe_ms
		      : c->state == CONSOLE_WAIT_CLAIM_END ? c->cfg.reply_ms
							   : c->cfg.slow_reply_ms;
	struct error e;
	error_init(&e);
	enum console_phase ph = c->state <= CONSOLE_WAIT_CLAIM_END && phase[c->state]
				    ? phase[c->state]
				    : CONSOLE_PHASE_IO;
	error_set(&e, ERR_TIMED_OUT, "the device's console did not answer within %u ms (%s)", ms,
		  console_phase_name(ph));
	error_detail_str(&e, "phase", console_phase_name(ph));
	error_detail_int(&e, "timeout_ms", ms);
	fail(c, ph, &e);
	error_clear(&e);
}

struct console *console_new(struct event_base *base, int fd, const struct console_config *cfg,
			    const struct console_ops *ops)
{
	struct console *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->base = base;
	c->fd = fd;
	if (cfg)
		c->cfg = *cfg;
	else
		console_config_default(&c->cfg);
	c->ops = *ops;
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->timer = evtimer_new(base, on_timeout, c);
	if (!c->rev || !c->timer) {
		console_free(c);
		return NULL;
	}
	return c;
}

int console_run(struct console *c, unsigned steps, struct device_facts *facts, struct error *err)
{
	if (c->state != CONSOLE_IDLE && c->state != CONSOLE_DONE)
		return error_set(err, ERR_INTERNAL, "console busy");
	c->facts = facts;
	c->steps = steps;
	c->claim_recoveries = 0;
	c->failed = CONSOLE_PHASE_NONE;
	if (event_add(c->rev, NULL) < 0)
		return error_set(err, ERR_INTERNAL, "cannot watch the port");
	next_step(c);
	return 0;
}

void console_free(struct console *c)
{
	if (!c)
		return;
	if (c->rev)
		event_free(c->rev);
	if (c->timer)
		event_free(c->timer);
	free(c);
}

void console_silence_reason(const struct device_facts *facts, char *out, size_t size)
{
	int major = -1, minor, patch;
	const struct platform *p = facts->platform;
	if (facts->os_version[0] && osver_parse(facts->os_version, &major, &minor, &patch) < 0)
		major = -1;
	if (major >= 6)
		snprintf(out, size,
			 "the device runs Device OS %s, which has no listening mode or YMODEM "
			 "(removed in 6.0.0)",
			 facts->os_version);
	else if (major >= 0)
		snprintf(out, size,
			 "the device did not answer in listening mode although it runs Device OS "
			 "%s, which has it (still busy after an interrupted transfer, or an "
			 "application holds the console)",
			 facts->os_version);
	else if (p && p->gen > 0 && p->gen <= 2)
		snprintf(out, size,
			 "the %s did not answer in listening mode, which every Device OS release "
			 "for it has (still busy after an interrupted transfer, or an application "
			 "holds the console)",
			 p->display);
	else
		snprintf(out, size,
			 "the device does not enter listening mode (Device OS 6.x has none, or "
			 "its console is busy)");
}
