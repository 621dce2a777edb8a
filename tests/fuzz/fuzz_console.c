/*
 * libFuzzer harness for what a device says on its serial port in listening
 * mode (daemon/serial/console.c, daemon/serial/ymodem.c): the replies to `v`,
 * `i` and `s` (with application output, claim-code prompts and junk mixed
 * in), and everything a YMODEM receiver sends back, the prompt line before it
 * and the text after it ("Validation failed: ...", "Restarting system...",
 * "Failed to save chunk!").
 *
 * The input's first byte picks the target:
 *   0-3   the pure parsers (version, device id, the `s` JSON, validation codes)
 *   4-127 the console state machine, the rest of the input being the device's
 *         bytes on a socket pair (then end of file)
 *   128+  the YMODEM sender with a 2.5 KiB file, same device side
 * Checked beyond "no crash": the machines end exactly once, never hang (all
 * input read, then the end of file), and a failure is a catalogue error.
 */
#include "console.h"
#include "ymodem.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 16384
#define MAX_LOOPS 100000

static struct {
	unsigned calls;
	bool failed;
} outcome;

static void check_error(struct error *err)
{
	if (!err)
		return;
	if (!error_is_set(err) || !err->message[0]) {
		fprintf(stderr, "error without code or message: %d \"%s\"\n", err->code,
			err->message);
		abort();
	}
	json_t *j = error_to_json(err);
	if (!j)
		abort();
	json_decref(j);
}

static void on_console_done(void *ctx, struct error *err)
{
	(void)ctx;
	outcome.calls++;
	outcome.failed = err != NULL;
	check_error(err);
}

static void on_ymodem_done(void *ctx, const struct ymodem_result *res, struct error *err)
{
	(void)ctx;
	outcome.calls++;
	outcome.failed = err != NULL;
	if (!res || !memchr(res->device_text, '\0', sizeof(res->device_text)))
		abort();
	if (res->ok == (err != NULL))
		abort();
	check_error(err);
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	if (done > total)
		abort();
}

static void parsers(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	char out[64];
	if (console_parse_version(text, out, sizeof(out)) && !memchr(out, '\0', sizeof(out)))
		abort();
	if (console_parse_device_id(text, out, sizeof(out)) && !memchr(out, '\0', sizeof(out)))
		abort();
	struct device_facts facts;
	memset(&facts, 0, sizeof(facts));
	struct error err;
	error_init(&err);
	if (console_parse_info(text, &facts, &err) < 0)
		check_error(&err);
	else if (facts.n_modules > DEVICE_FACTS_MAX_MODULES)
		abort();
	error_clear(&err);
	long code;
	bool mask;
	if (ymodem_parse_validation(text, &code, &mask)) {
		const char *name = NULL;
		enum error_code c = ymodem_validation_cause(code, mask, &name);
		if (!error_id(c))
			abort();
	}
	char why[256];
	console_silence_reason(&facts, why, sizeof(why));
	free(text);
}

/* Feeds the device's bytes, then the end of file; drains what the host sends. */
static void run_device(struct event_base *base, int dev_fd, const uint8_t *data, size_t size)
{
	size_t sent = 0;
	bool closed = false;
	char sink[4096];
	for (unsigned i = 0; i < MAX_LOOPS; i++) {
		while (read(dev_fd, sink, sizeof(sink)) > 0)
			;
		if (outcome.calls)
			break;
		if (sent < size) {
			ssize_t n =
			    write(dev_fd, data + sent, size - sent > 512 ? 512 : size - sent);
			if (n > 0)
				sent += (size_t)n;
		} else if (!closed) {
			shutdown(dev_fd, SHUT_WR);
			closed = true;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (closed && !outcome.calls &&
		    event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED) == 0)
			abort(); /* waiting for nothing */
		if (closed && !outcome.calls)
			event_base_loop(base, EVLOOP_ONCE); /* a phase timer (a few ms) */
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	if (outcome.calls != 1)
		abort(); /* never ended, or ended twice */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > MAX_INPUT)
		return 0;
	uint8_t sel = data[0];
	data++;
	size--;
	if (sel < 4) {
		parsers(data, size);
		return 0;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	struct event_base *base = event_base_new();
	memset(&outcome, 0, sizeof(outcome));
	if (sel < 128) {
		struct console_config cfg;
		console_config_default(&cfg);
		cfg.probe_ms = cfg.reply_ms = cfg.slow_reply_ms = 3;
		struct console_ops ops = {NULL, on_console_done};
		struct console *c = console_new(base, sv[0], &cfg, &ops);
		struct device_facts facts;
		memset(&facts, 0, sizeof(facts));
		struct error err;
		error_init(&err);
		unsigned steps = (sel & 0x0f) | CONSOLE_PROBE;
		if (console_run(c, steps, &facts, &err) < 0) {
			check_error(&err);
			error_clear(&err);
		} else {
			run_device(base, sv[1], data, size);
			if (facts.n_modules > DEVICE_FACTS_MAX_MODULES ||
			    !memchr(facts.os_version, '\0', sizeof(facts.os_version)) ||
			    !memchr(facts.device_id, '\0', sizeof(facts.device_id)))
				abort();
		}
		console_free(c);
	} else {
		static uint8_t file[2560];
		memset(file, 0xa5, sizeof(file));
		struct ymodem_config cfg;
		ymodem_config_default(&cfg);
		cfg.prompt_ms = cfg.header_ms = cfg.block_ms = cfg.final_ms = 3;
		cfg.text_ms = 1;
		cfg.start = sel & 1 ? YMODEM_START_WAIT_C : YMODEM_START_COMMAND;
		cfg.device_nak_semantics = sel & 2;
		struct ymodem_ops ops = {NULL, on_progress, on_ymodem_done};
		struct ymodem *y =
		    ymodem_new(base, sv[0], sv[0], file, sizeof(file), "fuzz.bin", &cfg, &ops);
		struct error err;
		error_init(&err);
		if (ymodem_start(y, &err) < 0) {
			check_error(&err);
			error_clear(&err);
		} else {
			if (sel & 4)
				ymodem_cancel(y);
			run_device(base, sv[1], data, size);
		}
		ymodem_free(y);
	}
	event_base_free(base);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
