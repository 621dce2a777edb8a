/*
 * cdc_query (the listening-mode query behind device probes and the DFU
 * transport's verify) against a scripted device on a pty: the device answers
 * the console only in listening mode, which it enters when the line coding
 * becomes 28800 (docs/device/console.md#magic-baud-rates); the query must leave it as it found it
 * (`x` only when
 * flashd asked for listening mode).  ioctl is wrapped at link time
 * (-Wl,--wrap=ioctl) so that the device sees every line coding the port is
 * set to, and, like the kernel's cdc-acm, only changes reach it.
 */
#include "cdc_query.h"

#include <asm/termbits.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define PHOTON_ID "3a001d000a47353138383138"
#define PHOTON_S                                                                                   \
	"{\"p\":6,\"m\":[{\"s\":262144,\"l\":\"m\",\"vc\":30,\"vv\":30,\"f\":\"s\",\"n\":\"1\","   \
	"\"v\":1512,\"d\":[]},{\"s\":131072,\"l\":\"m\",\"vc\":30,\"vv\":14,\"u\":"                \
	"\"ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789\",\"f\":\"u\",\"n\":"  \
	"\"1\",\"v\":6,\"d\":[]}]}"

/* The query's config keys are not registered here: every value is given. */
unsigned timeout_ms(const char *key);
unsigned timeout_ms(const char *key)
{
	(void)key;
	fail_msg("timeout_ms called");
	return 0;
}

struct bench {
	struct event_base *base;
	int master;
	char tty[64];
	char lock_dir[64];
	struct event *rev;
	/* device script */
	bool listening;
	bool never_listens; /* Device OS 6.x */
	unsigned enter_ms;  /* 28800 -> listening mode after this long; input waits meanwhile */
	unsigned probe_ms;  /* the query's probe_ms, 0 = 150 */
	struct event *enter;
	unsigned last_speed;
	char commands[64];
	size_t n_commands;
	/* result */
	bool done;
	struct cdc_query_result res;
	struct error err;
};

static struct bench *current;

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

/* cdc-acm sends SET_LINE_CODING only when the speed changes;
 * docs/device/console.md#magic-baud-rates: 28800 enters
 * listening mode (<= 5.9.x). */
static void line_coding(struct bench *b, unsigned speed)
{
	if (speed == b->last_speed)
		return;
	b->last_speed = speed;
	if (speed != 28800 || b->never_listens)
		return;
	if (!b->enter_ms) {
		b->listening = true;
		return;
	}
	/* Entering takes a while; what the host writes meanwhile stays in the
	 * device's buffer (not read) and the console reads it when it runs. */
	event_del(b->rev);
	struct timeval tv = {0, (suseconds_t)b->enter_ms * 1000};
	evtimer_add(b->enter, &tv);
}

static void on_entered(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct bench *b = arg;
	b->listening = true;
	event_add(b->rev, NULL);
	event_active(b->rev, EV_READ, 0);
}

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	int r = __real_ioctl(fd, req, arg);
	if (r == 0 && req == TCSETS2 && current)
		line_coding(current, ((const struct termios2 *)arg)->c_ospeed);
	return r;
}

static unsigned slave_speed(int master)
{
	struct termios2 t;
	if (__real_ioctl(master, TCGETS2, &t) < 0)
		return 0;
	return t.c_ospeed;
}

static void device_say(struct bench *b, const char *s)
{
	if (write(b->master, s, strlen(s)) != (ssize_t)strlen(s))
		fail_msg("device write");
}

static void on_device_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct bench *b = arg;
	char c[64];
	ssize_t n = read(fd, c, sizeof(c));
	for (ssize_t i = 0; i < n; i++) {
		if (b->n_commands < sizeof(b->commands) - 1)
			b->commands[b->n_commands++] = c[i];
		if (!b->listening)
			continue; /* the application ignores it */
		switch (c[i]) {
		case 'v':
			device_say(b, "system firmware version: 1.5.2\n\r\n");
			break;
		case 'i':
			device_say(b, "Your device id is " PHOTON_ID "\r\n");
			break;
		case 's':
			device_say(b, PHOTON_S "\r\n");
			break;
		case 'x':
			b->listening = false;
			break;
		default:
			break;
		}
	}
}

static int setup(void **state)
{
	struct bench *b = calloc(1, sizeof(*b));
	b->base = event_base_new();
	b->master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	assert_true(b->master >= 0);
	assert_int_equal(grantpt(b->master), 0);
	assert_int_equal(unlockpt(b->master), 0);
	snprintf(b->tty, sizeof(b->tty), "%s", ptsname(b->master));
	snprintf(b->lock_dir, sizeof(b->lock_dir), "/tmp/cdc-query-test.XXXXXX");
	assert_non_null(mkdtemp(b->lock_dir));
	b->last_speed = slave_speed(b->master);
	b->rev = event_new(b->base, b->master, EV_READ | EV_PERSIST, on_device_read, b);
	event_add(b->rev, NULL);
	b->enter = evtimer_new(b->base, on_entered, b);
	current = b;
	error_init(&b->err);
	*state = b;
	return 0;
}

static int teardown(void **state)
{
	struct bench *b = *state;
	current = NULL;
	event_free(b->rev);
	event_free(b->enter);
	close(b->master);
	event_base_free(b->base);
	rmdir(b->lock_dir);
	error_clear(&b->err);
	free(b);
	return 0;
}

static void on_done(void *ctx, const struct cdc_query_result *res, struct error *err)
{
	struct bench *b = ctx;
	b->done = true;
	b->res = *res;
	if (err)
		error_move(&b->err, err);
	event_base_loopbreak(b->base);
}

static void run_query(struct bench *b, bool relisten)
{
	struct cdc_query_config cfg = {.probe_ms = b->probe_ms ? b->probe_ms : 150,
				       .listen_ms = 30,
				       .reply_ms = 500,
				       .slow_reply_ms = 500,
				       .identify = true,
				       .relisten = relisten,
				       .lock_dir = b->lock_dir};
	struct error e;
	error_init(&e);
	struct cdc_query *q = cdc_query_start(b->base, b->tty, NULL, &cfg, on_done, b, &e);
	assert_non_null(q);
	assert_false(b->done); /* never from inside the start call */
	struct timeval limit = {5, 0};
	event_base_loopexit(b->base, &limit);
	event_base_dispatch(b->base);
	assert_true(b->done);
	cdc_query_free(q);
	/* let the device read what was written last (`x`) */
	struct timeval settle = {0, 30 * 1000};
	event_base_loopexit(b->base, &settle);
	event_base_dispatch(b->base);
}

static void test_listening_device_is_read_and_left_listening(void **state)
{
	struct bench *b = *state;
	b->listening = true;
	run_query(b, false);
	assert_false(error_is_set(&b->err));
	assert_false(b->res.no_listening_mode);
	assert_true(b->res.was_listening);
	assert_false(b->res.left_listening);
	assert_true(b->listening);
	assert_string_equal(b->res.facts.os_version, "1.5.2");
	assert_string_equal(b->res.facts.device_id, PHOTON_ID);
	assert_true(b->res.facts.modules_known);
	assert_int_equal(b->res.facts.n_modules, 2);
	assert_null(strchr(b->commands, 'x'));
	/* the user part fails its dependency check (vv 14): safe mode once it runs */
	assert_true(cdc_query_facts_safe_mode(&b->res.facts));
}

static void test_running_device_is_put_in_listening_mode_then_given_back(void **state)
{
	struct bench *b = *state;
	run_query(b, false);
	assert_false(error_is_set(&b->err));
	assert_false(b->res.was_listening);
	assert_true(b->res.left_listening);
	assert_false(b->listening); /* `x` */
	assert_int_equal(b->res.facts.n_modules, 2);
	assert_int_equal(b->res.facts.system_version, 1512);
	/* `v` first (answered by nobody), then after 28800 `v`, `i` (ended by `v`), `s`, `x` */
	assert_string_equal(b->commands, "vviv"
					 "sx");
}

static void test_port_left_at_28800_is_toggled_so_the_device_sees_the_change(void **state)
{
	struct bench *b = *state;
	/* an earlier program left the port at 28800: setting 28800 again would send nothing */
	int fd = open(b->tty, O_RDWR | O_NOCTTY | O_NONBLOCK);
	struct termios2 t;
	assert_int_equal(ioctl(fd, TCGETS2, &t), 0);
	t.c_cflag &= ~(tcflag_t)CBAUD;
	t.c_cflag |= BOTHER;
	t.c_ispeed = t.c_ospeed = 28800;
	assert_int_equal(ioctl(fd, TCSETS2, &t), 0);
	close(fd);
	b->listening = false; /* the device left listening mode since (`x`, reset) */
	assert_int_equal(b->last_speed, 28800);
	run_query(b, false);
	/* the device saw 28800 again only because the query went through 9600 */
	assert_false(error_is_set(&b->err));
	assert_true(b->res.left_listening);
}

static void test_device_without_console_is_a_probe_timeout_and_gets_no_x(void **state)
{
	struct bench *b = *state;
	b->never_listens = true;
	run_query(b, true);
	assert_int_equal(b->err.code, ERR_TIMED_OUT);
	assert_string_equal(json_string_value(json_object_get(b->err.detail, "phase")), "probe");
	assert_true(b->res.no_listening_mode);
	assert_false(b->res.left_listening);
	/* just booted (a verify): no probe first; `v` after 28800, `v` after the
	 * second toggle; never `x` */
	assert_string_equal(b->commands, "vv");
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Issue 18: a device that has just booted its firmware is asked for listening
 * mode at once and its `v` is written right after 28800, so the verify costs
 * the device's own time to enter listening mode - no probe of a console that
 * cannot answer yet, no fixed wait after 28800. */
static void test_just_booted_device_answers_as_soon_as_it_listens(void **state)
{
	struct bench *b = *state;
	b->enter_ms = 60;   /* longer than listen_ms (30): no fixed wait would fit */
	b->probe_ms = 3000; /* the old path's probe: far beyond any scheduling delay */
	double t0 = now_s();
	run_query(b, true);
	double took = now_s() - t0 - 0.030; /* run_query's settle */
	assert_false(error_is_set(&b->err));
	assert_false(b->res.was_listening);
	assert_true(b->res.left_listening);
	assert_int_equal(b->res.facts.n_modules, 2);
	assert_string_equal(b->commands, "vivsx");
	/* 60 ms of the device's own; the old path took probe 3000 + listen 30 + 60.  The
	 * bound tells the two paths apart; it is not a speed goal (a loaded machine may
	 * add hundreds of milliseconds of scheduling) */
	if (took > 1.5)
		fail_msg("took %.3f s for a device that listens after 0.060 s: the probe was "
			 "waited out",
			 took);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_listening_device_is_read_and_left_listening, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(
		test_running_device_is_put_in_listening_mode_then_given_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_port_left_at_28800_is_toggled_so_the_device_sees_the_change, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_device_without_console_is_a_probe_timeout_and_gets_no_x, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_just_booted_device_answers_as_soon_as_it_listens,
					    setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
