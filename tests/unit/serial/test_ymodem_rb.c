/*
 * Interop: flashd's YMODEM sender against lrzsz `rb --ymodem` (a spec-strict
 * receiver that checks every CRC-16) over pipes (docs/testing/umockdev.md#lrzsz: rb on a
 * pty hangs; it aborts if the file exists, so each run gets an empty dir).
 * The received file must be byte-identical.
 */
#include "ymodem.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

struct run {
	struct event_base *base;
	bool done, ok;
	enum error_code code;
	uint64_t bytes;
	uint64_t last_progress;
};

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct run *r = ctx;
	assert_true(done <= total);
	assert_true(done >= r->last_progress);
	r->last_progress = done;
}

static void on_done(void *ctx, const struct ymodem_result *res, struct error *err)
{
	struct run *r = ctx;
	r->done = true;
	r->ok = res->ok;
	r->bytes = res->bytes_sent;
	r->code = err ? err->code : ERR_NONE;
	if (err)
		fprintf(stderr, "# ymodem: %s\n", err->message);
	event_base_loopbreak(r->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static void send_to_rb(size_t size, unsigned seed)
{
	char dir[] = "/tmp/flashd-rb-XXXXXX";
	assert_non_null(mkdtemp(dir));
	uint8_t *data = malloc(size ? size : 1);
	srand(seed);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)rand();
	/* a few bytes that look like protocol bytes inside the data */
	if (size > 8)
		memcpy(data + size / 2, "\x18\x18\x06\x15\x04", 5);

	int to_rb[2], from_rb[2];
	assert_int_equal(pipe(to_rb), 0);
	assert_int_equal(pipe(from_rb), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(to_rb[0], 0);
		dup2(from_rb[1], 1);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 2);
		close(to_rb[1]);
		close(from_rb[0]);
		if (chdir(dir) != 0)
			_exit(126);
		execlp("rb", "rb", "--ymodem", "-y", "-q", (char *)NULL);
		_exit(127);
	}
	close(to_rb[0]);
	close(from_rb[1]);
	fcntl(to_rb[1], F_SETFL, O_NONBLOCK);
	fcntl(from_rb[0], F_SETFL, O_NONBLOCK);

	struct run r = {0};
	r.base = event_base_new();
	struct ymodem_config cfg;
	ymodem_config_default(&cfg);
	cfg.start = YMODEM_START_WAIT_C;
	cfg.device_nak_semantics = false;
	struct ymodem_ops ops = {&r, on_progress, on_done};
	struct ymodem *y =
	    ymodem_new(r.base, from_rb[0], to_rb[1], data, size, "test image.bin", &cfg, &ops);
	assert_non_null(y);
	struct error e;
	error_init(&e);
	assert_int_equal(ymodem_start(y, &e), 0);
	struct event *guard = evtimer_new(r.base, on_guard, r.base);
	struct timeval tv = {60, 0};
	evtimer_add(guard, &tv);
	event_base_dispatch(r.base);
	event_free(guard);
	ymodem_free(y);
	event_base_free(r.base);
	close(to_rb[1]);
	close(from_rb[0]);

	int status = 0;
	if (!r.done)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	assert_true(r.done);
	assert_true(r.ok);
	assert_int_equal(r.bytes, size);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	char path[256];
	snprintf(path, sizeof(path), "%s/test_image.bin", dir);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	uint8_t *got = malloc(size + 16);
	size_t n = fread(got, 1, size + 16, f);
	fclose(f);
	assert_int_equal(n, size);
	assert_memory_equal(got, data, size);
	unlink(path);
	rmdir(dir);
	free(got);
	free(data);
}

static void test_rb_receives_files_byte_identical_across_block_boundaries(void **state)
{
	(void)state;
	static const size_t sizes[] = {1, 127, 128, 129, 1023, 1024, 1025, 3952, 5776, 131072 + 77};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		send_to_rb(sizes[i], (unsigned)i + 1);
}

static void test_rb_receives_a_real_module(void **state)
{
	(void)state;
	send_to_rb(260840, 99); /* the size of a Photon system part */
}

static int have_rb(void **state)
{
	(void)state;
	return system("command -v rb >/dev/null 2>&1") == 0 ? 0 : -1;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rb_receives_files_byte_identical_across_block_boundaries),
	    cmocka_unit_test(test_rb_receives_a_real_module),
	};
	return cmocka_run_group_tests(tests, have_rb, NULL);
}
