/*
 * Listening-mode engine of flashd-sim (issue 4): dispatch of host bytes to
 * the running application, the console or the YMODEM receiver, the timers
 * (all driven by now_ms, never by a clock of our own) and the faults.
 *
 * Re-entrancy rule for the core: ops callbacks must not free the engine.
 * After ops->reset() the engine drops the rest of the bytes it was given
 * (the device is gone) and is ready for the next life of the device:
 * LISTENING_APP after a firmware reset or an unplug, LISTENING_CONSOLE after
 * `L` (safe mode re-enters listening mode, docs/device/console.md#entering-and-leaving).
 */
#include "listening_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

struct listening *listening_new(const struct listening_config *cfg, const struct listening_ops *ops,
				enum listening_state_kind initial)
{
	struct listening *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->cfg = *cfg;
	l->ops = *ops;
	l->os_version = dup_or_null(cfg->os_version ? cfg->os_version : "0.0.0");
	l->device_id = dup_or_null(cfg->device_id ? cfg->device_id : "000000000000000000000000");
	l->mac = dup_or_null(cfg->mac);
	l->cfg.os_version = l->os_version;
	l->cfg.device_id = l->device_id;
	l->cfg.mac = l->mac;
	if (!(l->cfg.timeout_scale > 0))
		l->cfg.timeout_scale = 1.0;
	/* 6.x has no 28800 switch (docs/device/console.md#magic-baud-rates) but a device can still
	 * boot into listening mode. */
	l->kind = initial;
	l->sub = CONSOLE_IDLE;
	l->stuck_deadline = UINT64_MAX;
	if (!l->os_version || !l->device_id || (cfg->mac && !l->mac)) {
		listening_free(l);
		return NULL;
	}
	return l;
}

void listening_free(struct listening *l)
{
	if (!l)
		return;
	free(l->hold);
	free(l->os_version);
	free(l->device_id);
	free(l->mac);
	free(l);
}

enum listening_state_kind listening_state(const struct listening *l)
{
	return l->kind;
}

uint64_t listening_ymodem_bytes(const struct listening *l)
{
	return l->ymodem_bytes;
}

uint64_t listening_app_discarded(const struct listening *l)
{
	return l->app_discarded;
}

/* ---- output helpers ---------------------------------------------------- */

void listening_send(struct listening *l, const void *buf, size_t len)
{
	if (len && l->ops.send)
		l->ops.send(l->ops.ctx, buf, len);
}

void listening_print(struct listening *l, const char *s)
{
	listening_send(l, s, strlen(s));
}

void listening_printf(struct listening *l, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	listening_send(l, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

uint64_t listening_scaled(const struct listening *l, uint64_t ms)
{
	double v = (double)ms * l->cfg.timeout_scale;
	return v < 1.0 ? 1 : (uint64_t)v;
}

/* ---- resets and delays ------------------------------------------------- */

static void hold_clear(struct listening *l)
{
	free(l->hold);
	l->hold = NULL;
	l->hold_len = 0;
}

void listening_do_reset(struct listening *l, enum listening_reset how)
{
	/* The next life of the device starts clean: no console state, no pending
	 * update (a reset is what clears the 3.0-5.x stuck state,
	 * docs/device/ymodem.md#cancellation). */
	l->kind = how == LISTENING_RESET_SAFE_LISTENING ? LISTENING_CONSOLE : LISTENING_APP;
	l->sub = CONSOLE_IDLE;
	hold_clear(l);
	memset(&l->ym, 0, sizeof(l->ym));
	l->update_stuck = false;
	l->stuck_deadline = UINT64_MAX;
	l->discard_rest = false;
	for (size_t i = 0; i < l->n_faults; i++)
		if (l->faults[i].f.kind == LISTENING_FAULT_NAK_STORM && l->faults[i].fired)
			l->faults[i].f.at = UINT32_MAX; /* a storm ends with the device's life */
	l->gone = true;
	if (l->ops.reset)
		l->ops.reset(l->ops.ctx, how);
}

void listening_start_busy(struct listening *l, enum busy_then then, uint64_t now_ms,
			  uint64_t delay_ms)
{
	l->sub = CONSOLE_BUSY;
	l->busy_then = then;
	l->busy_until = now_ms + delay_ms;
}

static void hold_byte(struct listening *l, uint8_t c)
{
	if (l->hold_len >= LISTENING_RX_HOLD_MAX)
		return; /* documented limit: beyond it the simulated endpoint drops */
	if (!l->hold) {
		l->hold = malloc(LISTENING_RX_HOLD_MAX);
		if (!l->hold)
			return;
	}
	l->hold[l->hold_len++] = c;
}

static void at_probe_inject(struct listening *l, uint64_t now_ms);

/* ---- faults ------------------------------------------------------------ */

void listening_add_fault(struct listening *l, const struct listening_fault *f)
{
	if (l->n_faults >= LISTENING_FAULTS_MAX)
		return;
	struct fault_slot *fs = &l->faults[l->n_faults++];
	memset(fs, 0, sizeof(*fs));
	fs->f = *f;
	if (f->arg && *f->arg) {
		snprintf(fs->arg, sizeof(fs->arg), "%s", f->arg);
		fs->has_arg = true;
	}
	fs->f.arg = fs->has_arg ? fs->arg : NULL;
	/* An AT probe against a device already listening arrives right away. */
	if (f->kind == LISTENING_FAULT_AT_PROBE && l->kind == LISTENING_CONSOLE &&
	    l->sub == CONSOLE_IDLE)
		at_probe_inject(l, l->now_ms);
}

struct fault_slot *listening_fault_pending(struct listening *l, enum listening_fault_kind kind)
{
	for (size_t i = 0; i < l->n_faults; i++)
		if (l->faults[i].f.kind == kind && !l->faults[i].fired)
			return &l->faults[i];
	return NULL;
}

/* Fault texts may carry C escapes (\r \n \t \\ \xNN) since SPEC values are one line. */
const char *listening_fault_text(const struct fault_slot *fs, const char *dflt, char *buf,
				 size_t size)
{
	if (!fs->has_arg)
		return dflt;
	size_t o = 0;
	for (const char *p = fs->arg; *p && o + 1 < size; p++) {
		if (*p != '\\' || !p[1]) {
			buf[o++] = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'r':
			buf[o++] = '\r';
			break;
		case 'n':
			buf[o++] = '\n';
			break;
		case 't':
			buf[o++] = '\t';
			break;
		case 'x': {
			unsigned v = 0;
			int k = 0;
			while (k < 2 && p[1] && strchr("0123456789abcdefABCDEF", p[1])) {
				char d = *++p;
				v = v * 16 + (unsigned)(d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
				k++;
			}
			buf[o++] = (char)v;
			break;
		}
		default:
			buf[o++] = *p;
			break;
		}
	}
	buf[o] = '\0';
	return buf;
}

/* ModemManager-style probe (docs/device/console.md#modemmanager): the lines arrive as host
 * input. */
static void at_probe_inject(struct listening *l, uint64_t now_ms)
{
	struct fault_slot *fs = listening_fault_pending(l, LISTENING_FAULT_AT_PROBE);
	if (!fs)
		return;
	fs->fired = true;
	static const char *const dflt[] = {"AT\r", "ATE0\r", "AT+GCAP\r", "ATI\r"};
	char buf[LISTENING_FAULT_ARG_MAX + 1];
	if (fs->has_arg) {
		const char *t = listening_fault_text(fs, NULL, buf, sizeof(buf));
		listening_input(l, (const uint8_t *)t, strlen(t), now_ms);
		return;
	}
	/* One write per command, as a prober waits for each answer (it gets none). */
	for (size_t i = 0; i < sizeof(dflt) / sizeof(dflt[0]) && !l->gone; i++)
		listening_input(l, (const uint8_t *)dflt[i], strlen(dflt[i]), now_ms);
}

/* ---- dispatch ---------------------------------------------------------- */

static void feed_byte(struct listening *l, uint8_t c, uint64_t now_ms)
{
	switch (l->sub) {
	case CONSOLE_IDLE:
		/* handle_peek(): SOH/STX starts the receiver without being consumed
		 * and without the prompt, before 6.0 only (docs/device/console.md#mechanics). */
		if (l->cfg.era != LISTENING_ERA_6 && (c == YM_SOH || c == YM_STX)) {
			ymodem_rx_start(l, now_ms);
			ymodem_rx_byte(l, c, now_ms);
			return;
		}
		console_byte(l, c, now_ms);
		return;
	case CONSOLE_LINE:
		console_byte(l, c, now_ms);
		return;
	case CONSOLE_YMODEM:
		ymodem_rx_byte(l, c, now_ms);
		return;
	case CONSOLE_BUSY:
		hold_byte(l, c);
		return;
	case CONSOLE_HUNG:
		return;
	}
}

static void feed(struct listening *l, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	for (size_t i = 0; i < len; i++) {
		if (l->kind == LISTENING_APP) {
			app_input(l, buf + i, len - i);
			return;
		}
		feed_byte(l, buf[i], now_ms);
		if (l->gone)
			return;
		if (l->discard_rest) {
			/* read_line(): everything still buffered is read and dropped
			 * (docs/device/console.md#mechanics). */
			l->discard_rest = false;
			hold_clear(l);
			return;
		}
	}
}

static void busy_done(struct listening *l, uint64_t now_ms)
{
	switch (l->busy_then) {
	case BUSY_F6_CANCEL: {
		static const uint8_t can4[4] = {YM_CA, YM_CA, YM_CA, YM_CA};
		listening_send(l, can4, sizeof(can4));
		listening_print(l, "Serial/YModem flashing is no longer supported\r\n");
		l->sub = CONSOLE_IDLE;
		break;
	}
	case BUSY_SUCCESS_RESTART:
		/* system_fileTransfer(): restart line, 100 ms, reset
		 * (docs/device/ymodem.md#end-of-transfer). */
		listening_print(l, "Restarting system to apply firmware update...\r\n");
		listening_start_busy(l, BUSY_RESET, now_ms, LISTENING_RESET_DELAY_MS);
		return;
	case BUSY_RESET:
		listening_do_reset(l, LISTENING_RESET_FIRMWARE);
		return;
	case BUSY_YMODEM_REPLY:
		ymodem_rx_resume(l, now_ms);
		break;
	}
	/* Bytes that arrived during the delay are processed now, in order. */
	uint8_t *h = l->hold;
	size_t n = l->hold_len;
	l->hold = NULL;
	l->hold_len = 0;
	feed(l, h, n, now_ms);
	free(h);
}

static void run_timers(struct listening *l, uint64_t now_ms)
{
	for (int guard = 0; guard < 1000 && !l->gone; guard++) {
		if (l->kind == LISTENING_CONSOLE && l->sub == CONSOLE_BUSY &&
		    now_ms >= l->busy_until) {
			busy_done(l, l->busy_until);
			continue;
		}
		if (l->kind == LISTENING_CONSOLE && l->sub == CONSOLE_YMODEM &&
		    now_ms >= l->ym.deadline) {
			ymodem_rx_timeout(l, l->ym.deadline);
			continue;
		}
		if (l->stuck_deadline != UINT64_MAX && now_ms >= l->stuck_deadline) {
			/* Gen 2 on 3.x: FirmwareUpdate::process() gives up and resets. */
			l->stuck_deadline = UINT64_MAX;
			listening_do_reset(l, LISTENING_RESET_FIRMWARE);
			continue;
		}
		break;
	}
}

void listening_input(struct listening *l, const uint8_t *buf, size_t len, uint64_t now_ms)
{
	l->gone = false;
	l->now_ms = now_ms;
	run_timers(l, now_ms);
	if (l->gone)
		return;
	feed(l, buf, len, now_ms);
}

void listening_tick(struct listening *l, uint64_t now_ms)
{
	l->gone = false;
	l->now_ms = now_ms;
	run_timers(l, now_ms);
}

uint64_t listening_next_deadline(const struct listening *l)
{
	uint64_t d = l->stuck_deadline;
	if (l->kind == LISTENING_CONSOLE) {
		if (l->sub == CONSOLE_BUSY && l->busy_until < d)
			d = l->busy_until;
		if (l->sub == CONSOLE_YMODEM && l->ym.deadline < d)
			d = l->ym.deadline;
	}
	return d;
}

void listening_enter(struct listening *l, uint64_t now_ms)
{
	/* 28800 only while not listening, and not at all since 6.0.0
	 * (docs/device/console.md#magic-baud-rates). */
	if (l->cfg.era == LISTENING_ERA_6) {
		l->gone = false;
		l->now_ms = now_ms;
		return;
	}
	listening_enter_by_request(l, now_ms);
}

void listening_enter_by_request(struct listening *l, uint64_t now_ms)
{
	l->gone = false;
	l->now_ms = now_ms;
	if (l->kind == LISTENING_CONSOLE)
		return;
	l->kind = LISTENING_CONSOLE;
	l->sub = CONSOLE_IDLE;
	/* Entering prints nothing (docs/device/console.md#entering-and-leaving). */
	at_probe_inject(l, now_ms);
}
