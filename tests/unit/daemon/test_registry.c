/* Device identity rules of the registry (daemon/registry.c), without udev. */
#include "registry.h"
#include "settings.h"

#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct fx {
	struct event_base *base;
	struct registry *reg;
	int added, changed, removed;
};

static void listener(void *ctx, struct device *dev, enum registry_change c)
{
	(void)dev;
	struct fx *fx = ctx;
	if (c == REGISTRY_ADDED)
		fx->added++;
	else if (c == REGISTRY_CHANGED)
		fx->changed++;
	else
		fx->removed++;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	timeouts_reset();
	fx->base = event_base_new();
	fx->reg = registry_new(fx->base);
	registry_set_listener(fx->reg, listener, fx);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	registry_free(fx->reg);
	event_base_free(fx->base);
	free(fx);
	return 0;
}

static void node(struct fx *fx, const char *serial, const char *port, uint16_t pid, bool tty)
{
	struct registry_node n;
	memset(&n, 0, sizeof(n));
	snprintf(n.usb_syspath, sizeof(n.usb_syspath), "/sys/devices/usb1/%s", port);
	if (tty) {
		n.is_tty = true;
		snprintf(n.syspath, sizeof(n.syspath),
			 "/sys/devices/usb1/%.16s/%.16s:1.0/tty/ttyACM0", port, port);
		snprintf(n.devnode, sizeof(n.devnode), "/dev/ttyACM0");
	} else {
		snprintf(n.syspath, sizeof(n.syspath), "%s", n.usb_syspath);
		snprintf(n.devnode, sizeof(n.devnode), "/dev/bus/usb/001/002");
	}
	snprintf(n.port_path, sizeof(n.port_path), "%s", port);
	snprintf(n.serial, sizeof(n.serial), "%s", serial);
	n.vid = 0x2b04;
	n.pid = pid;
	registry_node_added(fx->reg, &n);
}

static void gone(struct fx *fx, const char *port)
{
	char p[DEVICE_PATH_MAX];
	snprintf(p, sizeof(p), "/sys/devices/usb1/%s", port);
	registry_node_removed(fx->reg, p);
}

#define ID1	  "e00fce68aaaaaaaaaaaaaaaa"
#define ID1_UPPER "E00FCE68AAAAAAAAAAAAAAAA"

static void test_device_id_is_the_identity_and_platform_comes_from_usb_ids(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1_UPPER, "1-1", 0xd00c, false);
	struct device *d = registry_find_key(fx->reg, ID1);
	assert_non_null(d);
	assert_string_equal(d->s.facts.device_id, ID1);
	assert_string_equal(d->s.facts.platform->name, "argon");
	assert_int_equal(d->s.mode, DEVICE_MODE_DFU);
	assert_int_equal(fx->added, 1);
}

static void test_cdc_device_mode_stays_unknown_and_gets_its_tty(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	node(fx, ID1, "1-1", 0xc00c, true);
	struct device *d = registry_find_key(fx->reg, ID1);
	assert_int_equal(d->s.mode, DEVICE_MODE_UNKNOWN);
	assert_string_equal(d->s.tty, "/dev/ttyACM0");
	assert_int_equal(fx->added, 1);
	assert_int_equal(fx->changed, 1);
	assert_int_equal(registry_count_present(fx->reg), 1);
}

/* Issue 13: a --wait job took a CDC device before its tty existed. */
static void test_cdc_device_is_ready_for_jobs_only_with_its_tty(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	struct device *d = registry_find_key(fx->reg, ID1);
	assert_false(registry_device_ready(d));
	node(fx, ID1, "1-1", 0xc00c, true);
	assert_true(registry_device_ready(d));
	gone(fx, "1-1");
	assert_false(registry_device_ready(d));
	/* back in DFU mode: ready without a tty */
	node(fx, ID1, "1-1", 0xd00c, false);
	assert_true(registry_device_ready(d));
	/* and back as a serial device: not ready until the tty is there again */
	gone(fx, "1-1");
	node(fx, ID1, "1-1", 0xc00c, false);
	assert_false(registry_device_ready(d));
}

static void test_replug_into_the_same_port_keeps_identity(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	struct device *d = registry_find_key(fx->reg, ID1);
	gone(fx, "1-1");
	assert_false(d->s.present);
	assert_int_equal(fx->removed, 1);
	node(fx, ID1, "1-1", 0xd00c, false); /* came back in DFU mode */
	assert_true(registry_find_key(fx->reg, ID1) == d);
	assert_true(d->s.present);
	assert_int_equal(d->s.mode, DEVICE_MODE_DFU);
	assert_int_equal(fx->added, 2);
}

static void test_replug_into_another_port_keeps_identity(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	struct device *d = registry_find_key(fx->reg, ID1);
	gone(fx, "1-1");
	node(fx, ID1, "1-4.2", 0xc00c, false);
	assert_true(registry_find_key(fx->reg, ID1) == d);
	assert_string_equal(d->s.port_path, "1-4.2");
	size_t n = 0;
	for (struct device *x = registry_first(fx->reg); x; x = x->next)
		n++;
	assert_int_equal(n, 1);
}

static void test_colliding_serials_stay_two_devices(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	node(fx, ID1, "1-2", 0xc00c, false);
	assert_int_equal(registry_count_present(fx->reg), 2);
	struct device *a = registry_find_key(fx->reg, ID1);
	struct device *b = registry_find_key(fx->reg, ID1 "@1-2");
	assert_non_null(a);
	assert_non_null(b);
	assert_true(a != b);
	assert_true(b->colliding);
	/* Each keeps its identity across a replug into its own port. */
	gone(fx, "1-2");
	node(fx, ID1, "1-2", 0xc00c, false);
	assert_true(registry_find_key(fx->reg, ID1 "@1-2") == b);
	assert_int_equal(registry_count_present(fx->reg), 2);
}

static void test_device_without_id_is_known_by_its_port(void **state)
{
	struct fx *fx = *state;
	node(fx, "", "1-3", 0xd006, false);
	struct device *d = registry_find_key(fx->reg, "usb-1-3");
	assert_non_null(d);
	gone(fx, "1-3");
	node(fx, "", "1-3", 0xd006, false);
	assert_true(registry_find_key(fx->reg, "usb-1-3") == d);
}

static void test_non_hex_serial_is_not_an_id(void **state)
{
	(void)state;
	assert_true(registry_id_plausible(ID1));
	assert_false(registry_id_plausible("e00fce68"));
	assert_false(registry_id_plausible("000000000000000000000000"));
	assert_false(registry_id_plausible("zz0fce68aaaaaaaaaaaaaaaa"));
	assert_false(registry_id_plausible(""));
}

static void test_tty_removal_keeps_the_device(void **state)
{
	struct fx *fx = *state;
	node(fx, ID1, "1-1", 0xc00c, false);
	node(fx, ID1, "1-1", 0xc00c, true);
	registry_node_removed(fx->reg, "/sys/devices/usb1/1-1/1-1:1.0/tty/ttyACM0");
	struct device *d = registry_find_key(fx->reg, ID1);
	assert_true(d->s.present);
	assert_string_equal(d->s.tty, "");
}

static void test_ghost_is_forgotten_after_its_time(void **state)
{
	struct fx *fx = *state;
	timeouts_set("registry_forget_ms", 10);
	node(fx, ID1, "1-1", 0xc00c, false);
	gone(fx, "1-1");
	assert_non_null(registry_find_key(fx->reg, ID1));
	struct timeval tv = {0, 100 * 1000};
	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
	assert_null(registry_find_key(fx->reg, ID1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_device_id_is_the_identity_and_platform_comes_from_usb_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cdc_device_mode_stays_unknown_and_gets_its_tty,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replug_into_the_same_port_keeps_identity, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_replug_into_another_port_keeps_identity, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_colliding_serials_stay_two_devices, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_device_without_id_is_known_by_its_port, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_non_hex_serial_is_not_an_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tty_removal_keeps_the_device, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cdc_device_is_ready_for_jobs_only_with_its_tty,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ghost_is_forgotten_after_its_time, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
