/*
 * Transcript runner for the listening-mode engine: plays one file of
 * tests/sim/cdc/transcripts/ against the engine with a fake core and checks
 * every byte the device sends, every reset, the data written and the timers.
 * Time only moves when the transcript says so (never sleeps).
 *
 * Transcript lines (one directive each; '#' starts a comment; strings are
 * double-quoted with C escapes \r \n \t \\ \" \xNN):
 *   config era=0.4|0.6|2|3|6 os=S platform=N wifi=0|1 cellular=0|1 id=S mac=S
 *          scale=X state=app|console              (before anything else)
 *   ota begin=N write=N write_fail_at=OFF finish=N mask=0xN   (fake core results)
 *       work_begin=MS work_write=MS  (device work the fake core reports per header / block)
 *   sysinfo "TEXT"                                  (the `s` body the core returns)
 *   fault KIND UNIT AT ["ARG"]    KIND unplug|cancel|nak|silent|reset|stray|atprobe,
 *                                 UNIT block|byte|percent
 *   file SIZE                     (the image the host sends: byte i = (i*7+3) & 0xff)
 *   time T | tick T               set the clock (tick also calls listening_tick)
 *   enter                         28800 baud: listening_enter()
 *   host "BYTES" | host-hex HH..  host writes (one listening_input call)
 *   header [NAME SIZE] [stx] [seq=N]   YMODEM header block (default: "binary" + file size)
 *   empty-header                  the end-of-batch block
 *   block SEQ [stx] [compl=N] [short=N]   next file chunk (zero-padded) as block SEQ;
 *                                 compl overrides the complement, short drops trailing bytes
 *   rewind N                      move the file cursor back by N bytes (retransmissions)
 *   eot                           EOT
 *   dev "BYTES" | dev-hex HH..    the device output since the last check, exactly
 *   silence                       no device output since the last check
 *   reset firmware|safe|unplug    the next ops->reset() call was this
 *   no-reset                      no ops->reset() call pending
 *   exit-listening                ops->exit_listening() was called (once more)
 *   state app|console             listening_state()
 *   deadline T|none               listening_next_deadline()
 *   written N                     total bytes stored through ota_write
 *   image-ok                      what was stored is the file, then zero padding
 *   ymodem-bytes N                listening_ymodem_bytes()
 *   finish-calls N                ota_finish() calls so far
 */
#include "listening.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUT	   (1u << 20)
#define MAX_IMAGE  (4u << 20)
#define MAX_RESETS 16

struct fake {
	uint8_t out[MAX_OUT];
	size_t out_len;
	enum listening_reset resets[MAX_RESETS];
	size_t n_resets;
	int exits;
	int begin_ret, write_ret, finish_ret;
	long write_fail_at;
	unsigned finish_mask;
	uint32_t declared;
	uint8_t *image;
	size_t image_len;
	int finish_calls;
	char *sysinfo;
	uint64_t work_begin, work_write, work_pending;
};

static const char *path;
static int lineno;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s:%d: ", path, lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* ---- fake core ---------------------------------------------------------- */

static void fk_send(void *ctx, const uint8_t *buf, size_t len)
{
	struct fake *f = ctx;
	if (f->out_len + len > MAX_OUT)
		fail("device output overflow");
	memcpy(f->out + f->out_len, buf, len);
	f->out_len += len;
}

static void fk_reset(void *ctx, enum listening_reset how)
{
	struct fake *f = ctx;
	if (f->n_resets >= MAX_RESETS)
		fail("too many resets");
	f->resets[f->n_resets++] = how;
}

static void fk_exit(void *ctx)
{
	((struct fake *)ctx)->exits++;
}

static int fk_begin(void *ctx, uint32_t size)
{
	struct fake *f = ctx;
	f->declared = size;
	f->image_len = 0;
	f->work_pending = f->work_begin;
	return f->begin_ret;
}

static int fk_write(void *ctx, uint32_t off, const uint8_t *data, size_t len)
{
	struct fake *f = ctx;
	f->work_pending = f->work_write;
	if (f->write_ret)
		return f->write_ret;
	if (f->write_fail_at >= 0 && off + len > (unsigned long)f->write_fail_at)
		return -1;
	if (off + len > MAX_IMAGE)
		return -1;
	memcpy(f->image + off, data, len);
	if (off + len > f->image_len)
		f->image_len = off + len;
	return 0;
}

static uint64_t fk_work(void *ctx)
{
	struct fake *f = ctx;
	uint64_t ms = f->work_pending;
	f->work_pending = 0;
	return ms;
}

static int fk_finish(void *ctx, unsigned *mask)
{
	struct fake *f = ctx;
	f->finish_calls++;
	*mask = f->finish_mask;
	return f->finish_ret;
}

static char *fk_sysinfo(void *ctx)
{
	struct fake *f = ctx;
	return f->sysinfo ? strdup(f->sysinfo) : NULL;
}

/* ---- parsing helpers ---------------------------------------------------- */

static size_t unescape(const char *s, uint8_t *out, size_t max)
{
	size_t n = 0;
	if (*s != '"')
		fail("expected a quoted string");
	for (s++; *s && *s != '"'; s++) {
		if (n >= max)
			fail("string too long");
		if (*s != '\\') {
			out[n++] = (uint8_t)*s;
			continue;
		}
		s++;
		switch (*s) {
		case 'r':
			out[n++] = '\r';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case '0':
			out[n++] = 0;
			break;
		case 'x': {
			char h[3] = {s[1], s[2], 0};
			out[n++] = (uint8_t)strtoul(h, NULL, 16);
			s += 2;
			break;
		}
		default:
			out[n++] = (uint8_t)*s;
			break;
		}
	}
	if (*s != '"')
		fail("unterminated string");
	return n;
}

static size_t parse_hex(const char *s, uint8_t *out, size_t max)
{
	size_t n = 0;
	while (*s) {
		while (isspace((unsigned char)*s))
			s++;
		if (!*s || *s == '#')
			break;
		if (n >= max)
			fail("hex too long");
		char *end;
		unsigned long v = strtoul(s, &end, 16);
		if (end == s)
			fail("bad hex at '%s'", s);
		out[n++] = (uint8_t)v;
		s = end;
	}
	return n;
}

static const char *kv(const char *args, const char *key, char *buf, size_t size)
{
	size_t kl = strlen(key);
	for (const char *p = args; (p = strstr(p, key)); p += kl) {
		if ((p == args || isspace((unsigned char)p[-1])) && p[kl] == '=') {
			const char *v = p + kl + 1;
			size_t n = strcspn(v, " \t\r\n");
			if (n >= size)
				fail("value too long");
			memcpy(buf, v, n);
			buf[n] = '\0';
			return buf;
		}
	}
	return NULL;
}

static bool has_word(const char *args, const char *w)
{
	size_t wl = strlen(w);
	for (const char *p = args; (p = strstr(p, w)); p += wl)
		if ((p == args || isspace((unsigned char)p[-1])) &&
		    (!p[wl] || isspace((unsigned char)p[wl])))
			return true;
	return false;
}

static void show(const char *what, const uint8_t *b, size_t n)
{
	fprintf(stderr, "  %s (%zu bytes): \"", what, n);
	for (size_t i = 0; i < n; i++) {
		if (b[i] == '\r')
			fputs("\\r", stderr);
		else if (b[i] == '\n')
			fputs("\\n", stderr);
		else if (b[i] == '"' || b[i] == '\\')
			fprintf(stderr, "\\%c", b[i]);
		else if (b[i] >= 0x20 && b[i] < 0x7f)
			fputc(b[i], stderr);
		else
			fprintf(stderr, "\\x%02x", b[i]);
	}
	fputs("\"\n", stderr);
}

/* ---- the run ------------------------------------------------------------ */

struct run {
	struct fake fk;
	struct listening *l;
	struct listening_config cfg;
	enum listening_state_kind initial;
	char os[32], id[32], mac[32];
	uint64_t now;
	uint8_t *file;
	size_t file_len, cursor;
};

static uint8_t file_byte(size_t i)
{
	return (uint8_t)((i * 7 + 3) & 0xff);
}

static void ensure_engine(struct run *r)
{
	if (r->l)
		return;
	struct listening_ops ops = {
	    .ctx = &r->fk,
	    .send = fk_send,
	    .reset = fk_reset,
	    .exit_listening = fk_exit,
	    .ota_begin = fk_begin,
	    .ota_write = fk_write,
	    .ota_work_ms = fk_work,
	    .ota_finish = fk_finish,
	    .system_info = fk_sysinfo,
	};
	r->l = listening_new(&r->cfg, &ops, r->initial);
	if (!r->l)
		fail("listening_new failed");
}

static void input(struct run *r, const uint8_t *b, size_t n)
{
	ensure_engine(r);
	listening_input(r->l, b, n, r->now);
}

static void send_block(struct run *r, int mark, unsigned seq, int compl, const uint8_t *data,
		       size_t n, size_t cut)
{
	size_t size = mark == 0x02 ? 1024 : 128;
	uint8_t pkt[1029] = {0};
	pkt[0] = (uint8_t)mark;
	pkt[1] = (uint8_t)seq;
	pkt[2] = (uint8_t)(compl >= 0 ? (unsigned)compl : (~seq & 0xffu));
	memcpy(pkt + 3, data, n < size ? n : size);
	size_t total = size + 5;
	if (cut > total)
		fail("short= larger than the block");
	input(r, pkt, total - cut);
}

static void cmd_config(struct run *r, const char *a)
{
	char v[64];
	if (kv(a, "era", v, sizeof(v))) {
		if (!strcmp(v, "0.4"))
			r->cfg.era = LISTENING_ERA_0_4;
		else if (!strcmp(v, "0.6"))
			r->cfg.era = LISTENING_ERA_0_6;
		else if (!strcmp(v, "2"))
			r->cfg.era = LISTENING_ERA_2;
		else if (!strcmp(v, "3"))
			r->cfg.era = LISTENING_ERA_3;
		else if (!strcmp(v, "6"))
			r->cfg.era = LISTENING_ERA_6;
		else
			fail("bad era %s", v);
	}
	if (kv(a, "os", r->os, sizeof(r->os)))
		r->cfg.os_version = r->os;
	if (kv(a, "id", r->id, sizeof(r->id)))
		r->cfg.device_id = r->id;
	if (kv(a, "mac", r->mac, sizeof(r->mac)))
		r->cfg.mac = r->mac;
	if (kv(a, "platform", v, sizeof(v)))
		r->cfg.platform_id = atoi(v);
	if (kv(a, "wifi", v, sizeof(v)))
		r->cfg.wifi = atoi(v) != 0;
	if (kv(a, "cellular", v, sizeof(v)))
		r->cfg.cellular = atoi(v) != 0;
	if (kv(a, "scale", v, sizeof(v)))
		r->cfg.timeout_scale = atof(v);
	if (kv(a, "state", v, sizeof(v)))
		r->initial = !strcmp(v, "console") ? LISTENING_CONSOLE : LISTENING_APP;
}

static void cmd_fault(struct run *r, const char *a)
{
	char kind[16], unit[16];
	unsigned long at;
	int used = 0;
	if (sscanf(a, "%15s %15s %lu %n", kind, unit, &at, &used) < 3)
		fail("fault KIND UNIT AT [\"ARG\"]");
	static const char *const kinds[] = {"unplug", "cancel", "nak",	  "silent",
					    "reset",  "stray",	"atprobe"};
	struct listening_fault f = {0};
	size_t k;
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kinds[k], kind); k++)
		;
	if (k == sizeof(kinds) / sizeof(kinds[0]))
		fail("bad fault kind %s", kind);
	f.kind = (enum listening_fault_kind)k;
	f.unit = !strcmp(unit, "byte")	    ? LISTENING_AT_BYTE
		 : !strcmp(unit, "percent") ? LISTENING_AT_PERCENT
					    : LISTENING_AT_BLOCK;
	f.at = (uint32_t)at;
	char arg[1100];
	const char *rest = a + used;
	if (*rest == '"') {
		uint8_t raw[1024];
		size_t n = unescape(rest, raw, sizeof(raw) - 1);
		/* The engine takes SPEC-style escapes; hand the raw text over escaped. */
		size_t o = 0;
		for (size_t i = 0; i < n && o + 5 < sizeof(arg); i++) {
			if (raw[i] < 0x20 || raw[i] == '\\')
				o += (size_t)snprintf(arg + o, sizeof(arg) - o, "\\x%02x", raw[i]);
			else
				arg[o++] = (char)raw[i];
		}
		arg[o] = '\0';
		f.arg = arg;
	}
	ensure_engine(r);
	listening_add_fault(r->l, &f);
}

static void expect_out(struct run *r, const uint8_t *want, size_t n)
{
	if (r->fk.out_len != n || memcmp(r->fk.out, want, n)) {
		fprintf(stderr, "%s:%d: device output differs\n", path, lineno);
		show("expected", want, n);
		show("got     ", r->fk.out, r->fk.out_len);
		exit(1);
	}
	r->fk.out_len = 0;
}

static void expect_reset(struct run *r, const char *how)
{
	enum listening_reset want = !strcmp(how, "firmware") ? LISTENING_RESET_FIRMWARE
				    : !strcmp(how, "safe")   ? LISTENING_RESET_SAFE_LISTENING
							     : LISTENING_RESET_UNPLUG;
	if (!r->fk.n_resets)
		fail("expected a reset (%s), none happened", how);
	if (r->fk.resets[0] != want)
		fail("expected reset %s, got %d", how, (int)r->fk.resets[0]);
	memmove(r->fk.resets, r->fk.resets + 1, (r->fk.n_resets - 1) * sizeof(r->fk.resets[0]));
	r->fk.n_resets--;
}

static void image_ok(struct run *r)
{
	if (r->fk.image_len < r->file_len)
		fail("stored %zu bytes, file has %zu", r->fk.image_len, r->file_len);
	for (size_t i = 0; i < r->fk.image_len; i++) {
		uint8_t want = i < r->file_len ? r->file[i] : 0;
		if (r->fk.image[i] != want)
			fail("stored byte %zu is 0x%02x, expected 0x%02x", i, r->fk.image[i], want);
	}
}

static void directive(struct run *r, char *line)
{
	char *a = line;
	while (*a && !isspace((unsigned char)*a))
		a++;
	if (*a)
		*a++ = '\0';
	while (isspace((unsigned char)*a))
		a++;
	const char *cmd = line;
	char v[64];
	uint8_t buf[8192];

	if (!strcmp(cmd, "config")) {
		if (r->l)
			fail("config after the engine started");
		cmd_config(r, a);
	} else if (!strcmp(cmd, "ota")) {
		if (kv(a, "begin", v, sizeof(v)))
			r->fk.begin_ret = atoi(v);
		if (kv(a, "write", v, sizeof(v)))
			r->fk.write_ret = atoi(v);
		if (kv(a, "write_fail_at", v, sizeof(v)))
			r->fk.write_fail_at = atol(v);
		if (kv(a, "finish", v, sizeof(v)))
			r->fk.finish_ret = atoi(v);
		if (kv(a, "mask", v, sizeof(v)))
			r->fk.finish_mask = (unsigned)strtoul(v, NULL, 0);
		if (kv(a, "work_begin", v, sizeof(v)))
			r->fk.work_begin = strtoull(v, NULL, 10);
		if (kv(a, "work_write", v, sizeof(v)))
			r->fk.work_write = strtoull(v, NULL, 10);
	} else if (!strcmp(cmd, "sysinfo")) {
		size_t n = unescape(a, buf, sizeof(buf) - 1);
		free(r->fk.sysinfo);
		r->fk.sysinfo = strndup((const char *)buf, n);
	} else if (!strcmp(cmd, "fault")) {
		cmd_fault(r, a);
	} else if (!strcmp(cmd, "file")) {
		r->file_len = strtoul(a, NULL, 10);
		free(r->file);
		r->file = malloc(r->file_len + 1);
		for (size_t i = 0; i < r->file_len; i++)
			r->file[i] = file_byte(i);
		r->cursor = 0;
	} else if (!strcmp(cmd, "time") || !strcmp(cmd, "tick")) {
		uint64_t t = strtoull(a, NULL, 10);
		if (t < r->now)
			fail("time goes backwards");
		r->now = t;
		if (!strcmp(cmd, "tick")) {
			ensure_engine(r);
			listening_tick(r->l, r->now);
		}
	} else if (!strcmp(cmd, "enter")) {
		ensure_engine(r);
		listening_enter(r->l, r->now);
	} else if (!strcmp(cmd, "host")) {
		input(r, buf, unescape(a, buf, sizeof(buf)));
	} else if (!strcmp(cmd, "host-hex")) {
		input(r, buf, parse_hex(a, buf, sizeof(buf)));
	} else if (!strcmp(cmd, "header")) {
		char name[64] = "binary";
		unsigned long size = r->file_len;
		int seq = 0;
		if (*a && *a != 's') {
			if (sscanf(a, "%63s %lu", name, &size) != 2)
				fail("header NAME SIZE");
		}
		if (kv(a, "seq", v, sizeof(v)))
			seq = atoi(v);
		int n = snprintf((char *)buf, sizeof(buf), "%s%c%lu ", name, 0, size);
		send_block(r, has_word(a, "stx") ? 0x02 : 0x01, (unsigned)seq, -1, buf, (size_t)n,
			   0);
		r->cursor = 0;
	} else if (!strcmp(cmd, "empty-header")) {
		uint8_t z[4] = {0, '0', ' ', 0};
		send_block(r, 0x01, 0, -1, z, 3, 0);
	} else if (!strcmp(cmd, "block")) {
		unsigned seq = (unsigned)strtoul(a, NULL, 10);
		bool stx = has_word(a, "stx");
		size_t size = stx ? 1024 : 128;
		size_t n = r->cursor < r->file_len ? r->file_len - r->cursor : 0;
		if (n > size)
			n = size;
		int compl = kv(a, "compl", v, sizeof(v)) ? (int)strtol(v, NULL, 0) : -1;
		size_t cut = kv(a, "short", v, sizeof(v)) ? strtoul(v, NULL, 10) : 0;
		send_block(r, stx ? 0x02 : 0x01, seq, compl, r->file + r->cursor, n, cut);
		r->cursor += n;
	} else if (!strcmp(cmd, "rewind")) {
		size_t n = strtoul(a, NULL, 10);
		r->cursor = n > r->cursor ? 0 : r->cursor - n;
	} else if (!strcmp(cmd, "eot")) {
		uint8_t e = 0x04;
		input(r, &e, 1);
	} else if (!strcmp(cmd, "dev")) {
		expect_out(r, buf, unescape(a, buf, sizeof(buf)));
	} else if (!strcmp(cmd, "dev-hex")) {
		expect_out(r, buf, parse_hex(a, buf, sizeof(buf)));
	} else if (!strcmp(cmd, "silence")) {
		expect_out(r, buf, 0);
	} else if (!strcmp(cmd, "reset")) {
		expect_reset(r, a);
	} else if (!strcmp(cmd, "no-reset")) {
		if (r->fk.n_resets)
			fail("unexpected reset %d", (int)r->fk.resets[0]);
	} else if (!strcmp(cmd, "exit-listening")) {
		if (r->fk.exits < 1)
			fail("exit_listening was not called");
		r->fk.exits--;
	} else if (!strcmp(cmd, "state")) {
		ensure_engine(r);
		enum listening_state_kind want =
		    !strcmp(a, "console") ? LISTENING_CONSOLE : LISTENING_APP;
		if (listening_state(r->l) != want)
			fail("state is %d, expected %s", (int)listening_state(r->l), a);
	} else if (!strcmp(cmd, "deadline")) {
		ensure_engine(r);
		uint64_t d = listening_next_deadline(r->l);
		uint64_t want = !strncmp(a, "none", 4) ? UINT64_MAX : strtoull(a, NULL, 10);
		if (d != want)
			fail("next deadline is %llu, expected %s", (unsigned long long)d, a);
	} else if (!strcmp(cmd, "written")) {
		if (r->fk.image_len != strtoul(a, NULL, 10))
			fail("stored %zu bytes, expected %s", r->fk.image_len, a);
	} else if (!strcmp(cmd, "image-ok")) {
		image_ok(r);
	} else if (!strcmp(cmd, "ymodem-bytes")) {
		ensure_engine(r);
		if (listening_ymodem_bytes(r->l) != strtoull(a, NULL, 10))
			fail("ymodem bytes %llu, expected %s",
			     (unsigned long long)listening_ymodem_bytes(r->l), a);
	} else if (!strcmp(cmd, "finish-calls")) {
		if (r->fk.finish_calls != atoi(a))
			fail("ota_finish called %d times, expected %s", r->fk.finish_calls, a);
	} else {
		fail("unknown directive '%s'", cmd);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s TRANSCRIPT\n", argv[0]);
		return 2;
	}
	path = argv[1];
	FILE *fp = fopen(path, "r");
	if (!fp) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 2;
	}
	static struct run r;
	r.cfg.era = LISTENING_ERA_3;
	r.cfg.os_version = "5.9.0";
	r.cfg.device_id = "e00fce68aabbccddeeff0011";
	r.cfg.platform_id = 12;
	r.cfg.wifi = true;
	r.cfg.timeout_scale = 1.0;
	r.initial = LISTENING_CONSOLE;
	r.fk.write_fail_at = -1;
	r.fk.image = calloc(1, MAX_IMAGE);
	char line[16384];
	while (fgets(line, sizeof(line), fp)) {
		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		char *s = line;
		while (isspace((unsigned char)*s))
			s++;
		if (!*s || *s == '#')
			continue;
		directive(&r, s);
	}
	fclose(fp);
	/* Nothing may be left unchecked at the end. */
	lineno++;
	if (r.fk.out_len)
		expect_out(&r, (const uint8_t *)"", 0);
	if (r.fk.n_resets)
		fail("unchecked reset %d at the end", (int)r.fk.resets[0]);
	if (r.fk.exits)
		fail("unchecked exit_listening at the end");
	listening_free(r.l);
	free(r.file);
	free(r.fk.image);
	free(r.fk.sysinfo);
	printf("ok %s\n", path);
	return 0;
}
