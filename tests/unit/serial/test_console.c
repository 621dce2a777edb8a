/*
 * The listening-mode console client against a scripted device console
 * (docs/device/console.md, docs/device/console.md#modemmanager) over a socketpair: `v`, `i`
 * (ended by the `v` after it), `s` (ends with "}\r\n"), the claim-code prompt
 * a stray 'C' opens, application output mixed into the replies, silence.
 */
#include "console.h"

#include "platform.h"

#include <errno.h>
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define PHOTON_ID "3a001d000a47353138383138"
#define BORON_ID  "e00fce6811223344556677aa"

/* Photon 1.5.2: bootloader, system parts 1 and 2, and an application whose
 * dependency check failed (vv 26 = 30 without DEPENDENCIES). */
#define PHOTON_S                                                                                   \
	"{\"p\":6,\"m\":[{\"s\":16384,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"b\",\"n\":\"0\","    \
	"\"v\":501,\"d\":[]},{\"s\":262144,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"s\",\"n\":"     \
	"\"1\",\"v\":1512,\"d\":[]},{\"s\":262144,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"s\","    \
	"\"n\":\"2\",\"v\":1512,\"d\":[{\"f\":\"s\",\"n\":\"1\",\"v\":1512},{\"f\":\"b\",\"n\":"   \
	"\"0\",\"v\":400}]},{\"s\":131072,\"l\":\"m\",\"vc\":30,\"vv\":26,\"u\":"                  \
	"\"ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789\",\"f\":\"u\",\"n\":"  \
	"\"1\",\"v\":6,\"d\":[{\"f\":\"s\",\"n\":\"2\",\"v\":2202}]}]}"

/* Boron 2.3.1 (cellular: extra top-level keys before "m",
 * docs/device/console.md#module-info-reply). */
#define BORON_S                                                                                    \
	"{\"p\":13,\"imei\":\"352753090000000\",\"iccid\":\"89014100000000000000\",\"cellfw\":"    \
	"\"L0.0.00.00.05.12\",\"m\":[{\"s\":49152,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"b\","    \
	"\"n\":\"0\",\"v\":1100,\"d\":[]},{\"s\":671744,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":"    \
	"\"s\",\"n\":\"1\",\"v\":2301,\"d\":[{\"f\":\"b\",\"n\":\"0\",\"v\":1100},{\"f\":\"a\","   \
	"\"n\":\"0\",\"v\":202}]}]}"

struct peer {
	int fd;
	struct event *ev;
	/* script */
	const char *os;
	bool cellular;
	const char *sysinfo;
	const char *stray;	 /* printed once, before the next reply */
	unsigned claim_prompts;	 /* the next N commands land in the claim-code prompt */
	unsigned closed_prompts; /* ... in a prompt that a probe\'s CR closed at once */
	bool silent;		 /* never answers */
	bool split;		 /* replies one byte per write */
	/* state */
	bool in_claim;
	char commands[64];
	size_t n_commands;
	char out[4096];
	size_t out_len, out_off;
	struct event *tick;
};

static void peer_str(struct peer *p, const char *s)
{
	size_t n = strlen(s);
	if (!p->split) {
		if (write(p->fd, s, n) != (ssize_t)n)
			fail_msg("peer write");
		return;
	}
	/* dribbled out by peer_on_tick: the console sees every partial reply */
	assert_true(p->out_len + n <= sizeof(p->out));
	memcpy(p->out + p->out_len, s, n);
	p->out_len += n;
}

static void peer_on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	(void)fd;
	(void)what;
	if (p->out_off == p->out_len)
		return;
	size_t n = p->out_len - p->out_off < 3 ? p->out_len - p->out_off : 3;
	ssize_t w = write(p->fd, p->out + p->out_off, n);
	if (w > 0)
		p->out_off += (size_t)w;
}

static void peer_reply(struct peer *p, char c)
{
	char buf[512];
	if (p->stray) {
		peer_str(p, p->stray);
		p->stray = NULL;
	}
	switch (c) {
	case 'v':
		snprintf(buf, sizeof(buf), "system firmware version: %s\n\r\n", p->os);
		peer_str(p, buf);
		break;
	case 'i':
		if (p->cellular)
			peer_str(
			    p, "Device ID: " BORON_ID "\r\nIMEI: 352753067153799\r\nICCID: "
			       "89014103991520593709\r\nCell Radio Version: L0.0.00.00.05.12\r\n");
		else
			peer_str(p, "Your device id is " PHOTON_ID "\r\n");
		break;
	case 's':
		peer_str(p, p->sysinfo);
		peer_str(p, "\r\n");
		break;
	default:
		break;
	}
}

static void peer_byte(struct peer *p, char c)
{
	if (p->in_claim) {
		/* docs/device/console.md#modemmanager: line input until CR/LF, then the verdict;
		 * the rest is dropped */
		if (c == '\r' || c == '\n') {
			p->in_claim = false;
			peer_str(p, "\r\nSorry, claim code is not 63 characters long. Claim code "
				    "unchanged.\r\n");
		}
		return;
	}
	if (p->n_commands + 1 < sizeof(p->commands))
		p->commands[p->n_commands++] = c;
	if (p->silent)
		return;
	if (p->closed_prompts && (c == 'v' || c == 'i' || c == 's')) {
		/* "AT+GCAP\r" arrived with our key: prompt, echo, answer
		 * (docs/device/console.md#modemmanager) */
		p->closed_prompts--;
		peer_str(p, "Enter 63-digit claim code: AP\r\nSorry, claim code is not 63 "
			    "characters long. Claim code unchanged.\r\n");
		return;
	}
	if (p->claim_prompts && (c == 'v' || c == 'i' || c == 's')) {
		p->claim_prompts--;
		p->in_claim = true;
		peer_str(p, "Enter 63-digit claim code: ");
		return;
	}
	peer_reply(p, c);
}

static void peer_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	(void)what;
	char buf[256];
	ssize_t n = read(fd, buf, sizeof(buf));
	for (ssize_t i = 0; i < n; i++)
		peer_byte(p, buf[i]);
}

struct outcome {
	bool done;
	struct error err;
	struct event_base *base;
	struct console *console;
	enum console_phase failed; /* console_failed_phase() in the done callback */
};

static void on_done(void *ctx, struct error *err)
{
	struct outcome *o = ctx;
	o->done = true;
	o->failed = console_failed_phase(o->console);
	error_init(&o->err);
	if (err)
		error_move(&o->err, err);
	event_base_loopbreak(o->base);
}

static void run(struct peer *p, unsigned steps, struct device_facts *facts, struct outcome *o,
		unsigned reply_ms)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	struct event_base *base = event_base_new();
	p->fd = sv[1];
	p->ev = event_new(base, sv[1], EV_READ | EV_PERSIST, peer_on_read, p);
	event_add(p->ev, NULL);
	p->tick = event_new(base, -1, EV_PERSIST, peer_on_tick, p);
	struct timeval ms = {0, 1000};
	event_add(p->tick, &ms);
	memset(o, 0, sizeof(*o));
	error_init(&o->err);
	o->base = base;
	struct console_config cfg;
	console_config_default(&cfg);
	cfg.probe_ms = cfg.reply_ms = cfg.slow_reply_ms = reply_ms;
	struct console_ops ops = {o, on_done};
	struct console *c = console_new(base, sv[0], &cfg, &ops);
	assert_non_null(c);
	o->console = c;
	struct error e;
	error_init(&e);
	assert_int_equal(console_run(c, steps, facts, &e), 0);
	struct timeval guard = {10, 0};
	event_base_loopexit(base, &guard);
	event_base_dispatch(base);
	assert_true(o->done);
	console_free(c);
	event_free(p->ev);
	event_free(p->tick);
	close(sv[0]);
	close(sv[1]);
	event_base_free(base);
}

static const struct installed_module *find(const struct device_facts *f, int fn, int idx)
{
	for (unsigned i = 0; i < f->n_modules; i++)
		if (f->modules[i].function == fn && f->modules[i].index == idx)
			return &f->modules[i];
	static const struct installed_module none;
	fail_msg("no module %d/%d in the facts", fn, idx);
	return &none;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_probe_identify_info_fill_the_facts(void **state)
{
	(void)state;
	struct peer p = {.os = "1.5.2", .sysinfo = PHOTON_S};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_IDENTIFY | CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	/* `v` probes, `i` is closed by a `v`, then `s` */
	assert_string_equal(p.commands, "vivs");
	assert_string_equal(f.os_version, "1.5.2");
	assert_string_equal(f.device_id, PHOTON_ID);
	assert_non_null(f.platform);
	assert_string_equal(f.platform->name, "photon");
	assert_true(f.modules_known);
	assert_int_equal(f.n_modules, 4);
	assert_int_equal(f.system_version, 1512);
}

static void test_validity_flags_and_dependencies_are_parsed(void **state)
{
	(void)state;
	struct peer p = {.os = "1.5.2", .sysinfo = PHOTON_S};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	const struct installed_module *sys2 = find(&f, MODULE_FUNCTION_SYSTEM, 2);
	assert_true(installed_module_valid(sys2));
	assert_int_equal(sys2->deps[0].function, MODULE_FUNCTION_SYSTEM);
	assert_int_equal(sys2->deps[0].index, 1);
	assert_int_equal(sys2->deps[0].version, 1512);
	assert_int_equal(sys2->deps[1].function, MODULE_FUNCTION_BOOTLOADER);
	assert_int_equal(sys2->slot_size, 262144);
	const struct installed_module *app = find(&f, MODULE_FUNCTION_USER, 1);
	assert_false(installed_module_valid(app));
	assert_int_equal(app->checked & ~app->passed, 0x04); /* dependencies */
	/* the SHA-256 is uppercase on the wire, lowercase in the facts */
	assert_string_equal(app->sha256,
			    "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
}

static void test_cellular_multi_line_identify_and_info(void **state)
{
	(void)state;
	struct peer p = {.os = "2.3.1", .cellular = true, .sysinfo = BORON_S};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_IDENTIFY | CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	assert_string_equal(f.device_id, BORON_ID);
	assert_string_equal(f.os_version, "2.3.1");
	assert_string_equal(f.platform->name, "boron");
	assert_int_equal(f.n_modules, 2);
	assert_int_equal(f.system_version, 2301);
	const struct installed_module *sys1 = find(&f, MODULE_FUNCTION_SYSTEM, 1);
	assert_int_equal(sys1->deps[1].function, MODULE_FUNCTION_RADIO_STACK);
	assert_int_equal(sys1->deps[1].version, 202);
}

static void test_replies_split_into_single_bytes_are_reassembled(void **state)
{
	(void)state;
	struct peer p = {.os = "2.3.1", .cellular = true, .sysinfo = BORON_S, .split = true};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_IDENTIFY | CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	assert_string_equal(f.device_id, BORON_ID);
	assert_int_equal(f.n_modules, 2);
}

static void test_stray_application_output_is_skipped(void **state)
{
	(void)state;
	/* a threaded application prints while the console answers, braces included */
	struct peer p = {.os = "1.5.2",
			 .sysinfo = PHOTON_S,
			 .stray = "[app] {\"temp\":21} sensor=42 version: 9.9.9\r\n"};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	assert_int_equal(f.n_modules, 4);

	struct peer p2 = {.os = "1.5.2", .sysinfo = PHOTON_S, .stray = "uptime=17s\r\n"};
	struct device_facts f2 = {0};
	run(&p2, CONSOLE_PROBE, &f2, &o, 2000);
	assert_false(error_is_set(&o.err));
	assert_string_equal(f2.os_version, "1.5.2");
}

static void test_claim_code_prompt_is_closed_and_the_command_repeated(void **state)
{
	(void)state;
	struct peer p = {.os = "5.9.0", .sysinfo = PHOTON_S, .claim_prompts = 1};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	/* the prompt swallowed `v`; CR ended it; `v` again, then `s` */
	assert_string_equal(p.commands, "vvs");
	assert_string_equal(f.os_version, "5.9.0");
	assert_int_equal(f.n_modules, 4);
}

static void test_claim_prompt_closed_by_the_probe_itself_repeats_the_command(void **state)
{
	(void)state;
	struct peer p = {.os = "5.9.0", .sysinfo = PHOTON_S, .closed_prompts = 1};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_INFO, &f, &o, 2000);
	assert_false(error_is_set(&o.err));
	/* no CR: the line was over; `v` again at once */
	assert_string_equal(p.commands, "vvs");
	assert_string_equal(f.os_version, "5.9.0");

	/* the same, one byte at a time */
	struct peer p2 = {.os = "5.9.0", .sysinfo = PHOTON_S, .closed_prompts = 1, .split = true};
	struct device_facts f2 = {0};
	run(&p2, CONSOLE_PROBE | CONSOLE_INFO, &f2, &o, 2000);
	assert_false(error_is_set(&o.err));
	assert_string_equal(f2.os_version, "5.9.0");
	assert_int_equal(f2.n_modules, 4);
}

static void test_a_prompt_that_keeps_coming_back_is_device_busy_naming_modemmanager(void **state)
{
	(void)state;
	struct peer p = {.os = "5.9.0", .sysinfo = PHOTON_S, .claim_prompts = 100};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE, &f, &o, 2000);
	assert_int_equal(o.err.code, ERR_DEVICE_BUSY);
	assert_non_null(strstr(o.err.hint, "ID_MM_DEVICE_IGNORE"));
	json_t *holder = json_object_get(o.err.detail, "holder");
	assert_string_equal(json_string_value(holder), "ModemManager");
	error_clear(&o.err);
}

static void test_silence_is_timed_out_in_the_probe_phase(void **state)
{
	(void)state;
	struct peer p = {.os = "6.2.0", .silent = true};
	struct device_facts f = {0};
	struct outcome o;
	run(&p, CONSOLE_PROBE | CONSOLE_INFO, &f, &o, 200);
	assert_int_equal(o.err.code, ERR_TIMED_OUT);
	assert_string_equal(json_string_value(json_object_get(o.err.detail, "phase")), "probe");
	assert_int_equal(o.failed, CONSOLE_PHASE_PROBE); /* the typed fact callers decide on */
	assert_int_equal(json_integer_value(json_object_get(o.err.detail, "timeout_ms")), 200);
	error_clear(&o.err);
}

/* Issue 13: a Photon on 1.5.2, silent after an interrupted transfer, was handed
 * to DFU "(Device OS 6.x has no YMODEM)". */
static void test_silence_reason_follows_what_is_known(void **state)
{
	(void)state;
	struct device_facts f;
	char why[256];
	memset(&f, 0, sizeof(f));
	f.platform = platform_by_name("photon");
	snprintf(f.os_version, sizeof(f.os_version), "1.5.2");
	console_silence_reason(&f, why, sizeof(why));
	assert_non_null(strstr(why, "1.5.2"));
	assert_null(strstr(why, "6."));
	assert_non_null(strstr(why, "interrupted transfer"));

	f.os_version[0] = '\0'; /* a Gen 2 board never runs 6.x */
	console_silence_reason(&f, why, sizeof(why));
	assert_non_null(strstr(why, "Photon"));
	assert_null(strstr(why, "6.x"));

	f.platform = platform_by_name("argon");
	snprintf(f.os_version, sizeof(f.os_version), "6.1.0");
	console_silence_reason(&f, why, sizeof(why));
	assert_non_null(strstr(why, "6.1.0"));
	assert_non_null(strstr(why, "removed in 6.0.0"));

	f.os_version[0] = '\0'; /* an Argon may run 6.x: that is one of the reasons */
	console_silence_reason(&f, why, sizeof(why));
	assert_non_null(strstr(why, "Device OS 6.x has none"));

	f.platform = NULL;
	snprintf(f.os_version, sizeof(f.os_version), "not-a-version");
	console_silence_reason(&f, why, sizeof(why));
	assert_non_null(strstr(why, "6.x"));

	char tiny[8]; /* truncated, still terminated */
	console_silence_reason(&f, tiny, sizeof(tiny));
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
}

static void test_parsers(void **state)
{
	(void)state;
	char out[32];
	assert_false(console_parse_version("system firmware version: 1.5", out, sizeof(out)));
	assert_true(
	    console_parse_version("x\r\nsystem firmware version: 6.2.0-rc.1\n", out, sizeof(out)));
	assert_string_equal(out, "6.2.0-rc.1");
	assert_true(console_parse_device_id("Your core id is 53FF6F065067544853401187\r\n", out,
					    sizeof(out)));
	assert_string_equal(out, "53ff6f065067544853401187");
	/* 23 or 25 hex digits are not an id */
	assert_false(
	    console_parse_device_id("Device ID: e00fce6811223344556677a\r\n", out, sizeof(out)));
	assert_false(
	    console_parse_device_id("Device ID: e00fce6811223344556677aab\r\n", out, sizeof(out)));
	struct device_facts f = {0};
	struct error e;
	error_init(&e);
	assert_int_equal(console_parse_info("}\r\n", &f, &e), -1);
	assert_int_equal(e.code, ERR_TRANSFER_FAILED);
	error_clear(&e);
	/* a module list longer than the facts hold is not "known" */
	char big[8192];
	size_t o = (size_t)snprintf(big, sizeof(big), "{\"p\":6,\"m\":[");
	for (int i = 0; i < DEVICE_FACTS_MAX_MODULES + 2; i++)
		o += (size_t)snprintf(big + o, sizeof(big) - o,
				      "%s{\"s\":1,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"u\","
				      "\"n\":\"%d\",\"v\":1,\"d\":[]}",
				      i ? "," : "", i);
	snprintf(big + o, sizeof(big) - o, "]}\r\n");
	assert_int_equal(console_parse_info(big, &f, &e), 0);
	assert_int_equal(f.n_modules, DEVICE_FACTS_MAX_MODULES);
	assert_false(f.modules_known);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_probe_identify_info_fill_the_facts),
	    cmocka_unit_test(test_validity_flags_and_dependencies_are_parsed),
	    cmocka_unit_test(test_cellular_multi_line_identify_and_info),
	    cmocka_unit_test(test_replies_split_into_single_bytes_are_reassembled),
	    cmocka_unit_test(test_stray_application_output_is_skipped),
	    cmocka_unit_test(test_claim_code_prompt_is_closed_and_the_command_repeated),
	    cmocka_unit_test(test_claim_prompt_closed_by_the_probe_itself_repeats_the_command),
	    cmocka_unit_test(
		test_a_prompt_that_keeps_coming_back_is_device_busy_naming_modemmanager),
	    cmocka_unit_test(test_silence_is_timed_out_in_the_probe_phase),
	    cmocka_unit_test(test_parsers),
	    cmocka_unit_test(test_silence_reason_follows_what_is_known),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
