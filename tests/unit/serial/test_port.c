/*
 * Taking a serial port exclusively (docs/device/console.md#modemmanager): a
 * non-blocking flock plus the HDB lock file, and the device-busy error that
 * names the holder (lock file pid or /proc/locks -> /proc/PID/comm) with the
 * hint for it.  Uses a pty for the port and a private lock directory; the
 * holders are child processes renamed with prctl(PR_SET_NAME).
 */
#include "port.h"

#include <asm/ioctls.h>
#include <asm/termbits.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

struct bench {
	int master;
	char tty[64];
	char lock_dir[64];
	pid_t holder;
};

static int setup(void **state)
{
	struct bench *b = calloc(1, sizeof(*b));
	b->master = posix_openpt(O_RDWR | O_NOCTTY);
	assert_true(b->master >= 0);
	assert_int_equal(grantpt(b->master), 0);
	assert_int_equal(unlockpt(b->master), 0);
	snprintf(b->tty, sizeof(b->tty), "%s", ptsname(b->master));
	snprintf(b->lock_dir, sizeof(b->lock_dir), "/tmp/flashd-lock.XXXXXX");
	assert_non_null(mkdtemp(b->lock_dir));
	*state = b;
	return 0;
}

static void lock_path(const struct bench *b, char *out, size_t size)
{
	const char *base = strrchr(b->tty, '/') + 1;
	snprintf(out, size, "%s/LCK..%s", b->lock_dir, base);
}

static int teardown(void **state)
{
	struct bench *b = *state;
	if (b->holder > 0) {
		kill(b->holder, SIGKILL);
		waitpid(b->holder, NULL, 0);
	}
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	unlink(lp);
	rmdir(b->lock_dir);
	close(b->master);
	free(b);
	return 0;
}

/* A child named `comm` that optionally flocks the tty, then waits to be killed. */
static pid_t spawn_holder(const char *comm, const char *flock_path)
{
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		prctl(PR_SET_NAME, comm, 0, 0, 0);
		if (flock_path) {
			int fd = open(flock_path, O_RDWR | O_NOCTTY);
			if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
				_exit(1);
		}
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	char c;
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	return pid;
}

static void write_lock_file(const struct bench *b, pid_t pid)
{
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	FILE *f = fopen(lp, "w");
	assert_non_null(f);
	fprintf(f, "%10d\n", (int)pid); /* HDB format */
	fclose(f);
}

static const char *dstr(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_string_value(v) : "";
}

static long long dint(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_integer_value(v) : -1;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_open_writes_the_lock_file_and_close_removes_it(void **state)
{
	struct bench *b = *state;
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p, &e), 0);
	char lp[256], buf[32] = "";
	lock_path(b, lp, sizeof(lp));
	FILE *f = fopen(lp, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_int_equal(strlen(buf), 11); /* "%10d\n" */
	assert_int_equal(atoi(buf), getpid());
	/* a second open of the same port by this process is refused too (flock) */
	struct serial_port *p2;
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p2, &e), -1);
	assert_int_equal(e.code, ERR_DEVICE_BUSY);
	error_clear(&e);
	serial_port_close(p);
	assert_int_equal(access(lp, F_OK), -1);
}

static void test_flock_holder_is_named_from_proc_locks(void **state)
{
	struct bench *b = *state;
	b->holder = spawn_holder("minicom", b->tty);
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p, &e), -1);
	assert_int_equal(e.code, ERR_DEVICE_BUSY);
	assert_string_equal(dstr(&e, "holder"), "minicom");
	assert_int_equal(dint(&e, "holder_pid"), b->holder);
	assert_string_equal(dstr(&e, "port"), b->tty);
	assert_non_null(strstr(e.message, "minicom"));
	assert_string_equal(e.hint, "close your serial monitor, then try again");
	error_clear(&e);
}

static void test_lock_file_of_modemmanager_gets_the_udev_rule_hint(void **state)
{
	struct bench *b = *state;
	b->holder = spawn_holder("ModemManager", NULL);
	write_lock_file(b, b->holder);
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p, &e), -1);
	assert_int_equal(e.code, ERR_DEVICE_BUSY);
	assert_string_equal(dstr(&e, "holder"), "ModemManager");
	assert_int_equal(dint(&e, "holder_pid"), b->holder);
	assert_non_null(strstr(e.hint, "ID_MM_DEVICE_IGNORE=1"));
	assert_non_null(strstr(e.message, "ModemManager"));
	error_clear(&e);
	/* the holder's lock file is left alone */
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	assert_int_equal(access(lp, F_OK), 0);
}

static void test_stale_lock_file_of_a_dead_process_is_replaced(void **state)
{
	struct bench *b = *state;
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	write_lock_file(b, dead);
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p, &e), 0);
	char comm[64];
	/* we hold it now: the lock file names us, and a holder query skips us */
	assert_int_equal(serial_port_holder(b->tty, b->lock_dir, comm, sizeof(comm)), 0);
	serial_port_close(p);
}

static void test_missing_lock_directory_falls_back_to_flock(void **state)
{
	struct bench *b = *state;
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, "/nonexistent/flashd-lock", &p, &e), 0);
	assert_string_equal(p->lock_path, "");
	b->holder = 0;
	serial_port_close(p);
}

static void test_missing_port_is_device_not_found(void **state)
{
	struct bench *b = *state;
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open("/dev/ttyACM-not-there", b->lock_dir, &p, &e), -1);
	assert_int_equal(e.code, ERR_DEVICE_NOT_FOUND);
	assert_null(p);
	error_clear(&e);
}

static void test_magic_baud_rates_are_set_exactly(void **state)
{
	struct bench *b = *state;
	struct serial_port *p;
	struct error e;
	error_init(&e);
	assert_int_equal(serial_port_open(b->tty, b->lock_dir, &p, &e), 0);
	unsigned bauds[] = {28800, 14400};
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(serial_port_set_baud(p, bauds[i], &e), 0);
		struct termios2 t;
		assert_int_equal(ioctl(p->fd, TCGETS2, &t), 0);
		assert_int_equal(t.c_ospeed, bauds[i]);
		assert_int_equal(t.c_cflag & CBAUD, BOTHER);
	}
	serial_port_close(p);
}

static void test_holder_hints(void **state)
{
	(void)state;
	assert_string_equal(serial_port_holder_hint("screen"),
			    "close your serial monitor, then try again");
	assert_string_equal(serial_port_holder_hint("picocom"),
			    "close your serial monitor, then try again");
	assert_non_null(strstr(serial_port_holder_hint("ModemManager"), "ModemManager"));
	assert_string_equal(serial_port_holder_hint("gpsd"),
			    "close the program that holds the port, then try again");
	assert_string_equal(serial_port_holder_hint(NULL),
			    "close the program that holds the port, then try again");
}

/* ---- planted lock files (issue 16): never a hang, never a permanent busy ------------- */

/* Opens the port with an alarm as a guard: a blocking open of a planted FIFO would hang. */
static void open_within_2s(struct bench *b, struct serial_port **p)
{
	struct error e;
	error_init(&e);
	alarm(2);
	int rc = serial_port_open(b->tty, b->lock_dir, p, &e);
	alarm(0);
	if (rc < 0)
		fail_msg("serial_port_open: %s", e.message);
	/* the port is ours, and so is the lock file now */
	char lp[256], buf[32] = "";
	lock_path(b, lp, sizeof(lp));
	FILE *f = fopen(lp, "re");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_int_equal(atoi(buf), getpid());
}

static void test_fifo_lock_file_does_not_hang(void **state)
{
	struct bench *b = *state;
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	assert_int_equal(mkfifo(lp, 0666), 0);
	struct serial_port *p;
	open_within_2s(b, &p);
	serial_port_close(p);
}

static void test_symlink_lock_file_is_not_followed(void **state)
{
	struct bench *b = *state;
	char lp[256], target[300];
	lock_path(b, lp, sizeof(lp));
	snprintf(target, sizeof(target), "%s/target", b->lock_dir);
	FILE *f = fopen(target, "w");
	assert_non_null(f);
	fprintf(f, "%10d\n", 1); /* a live pid, in a file of ours */
	fclose(f);
	assert_int_equal(symlink(target, lp), 0);
	struct serial_port *p;
	open_within_2s(b, &p);
	serial_port_close(p);
	/* the link's target was not written through */
	f = fopen(target, "re");
	char buf[32] = "";
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_int_equal(atoi(buf), 1);
	unlink(target);
}

static void test_foreign_owned_lock_file_naming_a_live_pid_is_ignored(void **state)
{
	struct bench *b = *state;
	if (geteuid() != 0)
		skip();				   /* chown to another uid needs root */
	b->holder = spawn_holder("minicom", NULL); /* alive, runs as root */
	write_lock_file(b, b->holder);
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	assert_int_equal(chown(lp, 65534, 65534), 0); /* ... but the file is nobody's */
	struct serial_port *p;
	open_within_2s(b, &p);
	serial_port_close(p);
}

static void test_pid_1_in_a_users_lock_file_is_not_busy_for_good(void **state)
{
	struct bench *b = *state;
	if (geteuid() != 0)
		skip();
	write_lock_file(b, 1);
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	assert_int_equal(chown(lp, 65534, 65534), 0);
	struct serial_port *p;
	open_within_2s(b, &p);
	serial_port_close(p);
}

static void test_oversized_lock_file_is_ignored(void **state)
{
	struct bench *b = *state;
	b->holder = spawn_holder("minicom", NULL);
	char lp[256];
	lock_path(b, lp, sizeof(lp));
	FILE *f = fopen(lp, "w");
	assert_non_null(f);
	fprintf(f, "%10d\n", (int)b->holder);
	for (int i = 0; i < 1000; i++)
		fputc(' ', f);
	fclose(f);
	struct serial_port *p;
	open_within_2s(b, &p);
	serial_port_close(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_writes_the_lock_file_and_close_removes_it,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flock_holder_is_named_from_proc_locks, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_lock_file_of_modemmanager_gets_the_udev_rule_hint,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_lock_file_of_a_dead_process_is_replaced,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_lock_directory_falls_back_to_flock, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_missing_port_is_device_not_found, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_magic_baud_rates_are_set_exactly, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fifo_lock_file_does_not_hang, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_symlink_lock_file_is_not_followed, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(
		test_foreign_owned_lock_file_naming_a_live_pid_is_ignored, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pid_1_in_a_users_lock_file_is_not_busy_for_good,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_lock_file_is_ignored, setup, teardown),
	    cmocka_unit_test(test_holder_hints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
