/* Re-flashing only what differs (dfu_diff.c) against the scripted fake device (fake_dfu.c). */
#include "dfu_diff.h"
#include "fake_dfu.h"

#include "platform.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define SYSTEM_START 0x30000u /* Argon system part 1 */
#define LEN	     (64u * 1024 - 100)

struct rig {
	struct event_base *base;
	struct fake_dfu *fake;
	struct dfuse *dfuse;
	struct dfu_diff *diff;
	int result;
	bool done;
	uint64_t written_progress;
	unsigned phases;
};

static void on_open(struct dfuse *s, int result, struct error *err, void *userdata)
{
	(void)s;
	(void)err;
	struct rig *r = userdata;
	r->result = result;
	r->done = true;
}

static void on_phase(void *ctx, enum dfu_diff_phase phase)
{
	struct rig *r = ctx;
	r->phases |= 1u << phase;
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct rig *r = ctx;
	assert_true(done <= total);
	r->written_progress = done;
}

static void on_done(void *ctx, int result, struct error *err)
{
	struct rig *r = ctx;
	r->result = result;
	r->done = true;
	if (err)
		error_clear(err);
}

static void forward(struct dfuse *s, uint32_t address, size_t done, size_t total, void *userdata)
{
	(void)s;
	(void)address;
	struct rig *r = userdata;
	if (r->diff)
		dfu_diff_on_progress(r->diff, done, total);
}

static void wait_done(struct rig *r)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!r->done) {
		event_base_loop(r->base, EVLOOP_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec > 10)
			fail_msg("did not complete");
	}
	r->done = false;
}

static struct rig *rig_new(void)
{
	struct rig *r = calloc(1, sizeof(*r));
	r->base = event_base_new();
	r->fake = fake_dfu_new(r->base, 3);
	struct dfu_descriptors d;
	fake_dfu_descriptors(r->fake, &d);
	struct dfu_io io = fake_dfu_io(r->fake);
	r->dfuse = dfuse_new(r->base, &io, &d);
	r->fake->dfuse = r->dfuse;
	dfuse_set_progress(r->dfuse, forward, r);
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_open(r->dfuse, on_open, r, &err), 0);
	wait_done(r);
	assert_int_equal(r->result, 0);
	return r;
}

static void rig_free(struct rig *r)
{
	dfu_diff_free(r->diff);
	dfuse_free(r->dfuse);
	fake_dfu_free(r->fake);
	event_base_free(r->base);
	free(r);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 31 + seed) ^ (i >> 8));
	return p;
}

static void facts_with_system(struct device_facts *f)
{
	memset(f, 0, sizeof(*f));
	f->platform = platform_by_id(12);
	f->n_modules = 1;
	f->modules[0].function = MODULE_FUNCTION_SYSTEM;
	f->modules[0].index = 1;
	f->modules[0].address = SYSTEM_START;
	f->modules[0].slot_size = LEN;
	f->modules[0].version = 2302;
}

static void run_diff(struct rig *r, const struct dfu_write *w, struct dfu_diff_stats *st)
{
	static const struct dfu_diff_cb cb = {on_phase, on_progress, on_done};
	struct error err;
	error_init(&err);
	r->diff = dfu_diff_new(r->dfuse, platform_by_id(12), w, &cb, r, &err);
	assert_non_null(r->diff);
	assert_int_equal(dfu_diff_start(r->diff, &err), 0);
	wait_done(r);
	assert_int_equal(r->result, 0);
	dfu_diff_stats(r->diff, st);
}

static void test_a_few_changed_pages_are_the_only_ones_erased_and_written(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	uint8_t *old = pattern(LEN, 1), *new = pattern(LEN, 1);
	memcpy(fake_dfu_at(r->fake, SYSTEM_START), old, LEN);
	new[3 * 4096 + 7] ^= 1;
	new[10 * 4096] ^= 1;
	new[LEN - 3] ^= 1; /* the last page (CRC) */
	struct dfu_write w = {.alt = 0,
			      .address = SYSTEM_START,
			      .data = new,
			      .len = LEN,
			      .function = MODULE_FUNCTION_SYSTEM,
			      .index = 1,
			      .version = 2302};
	struct device_facts facts;
	facts_with_system(&facts);
	char why[128];
	assert_true(
	    dfu_diff_pays(facts.platform, dfuse_get_info(r->dfuse), &facts, &w, why, sizeof(why)));
	struct dfu_diff_stats st;
	run_diff(r, &w, &st);
	assert_memory_equal(fake_dfu_at(r->fake, SYSTEM_START), new, LEN);
	assert_int_equal(st.units, 16);
	assert_int_equal(st.differing, 3);
	assert_int_equal(st.unread, 0);
	assert_int_equal(st.bytes_erased, 3 * 4096);
	assert_int_equal(st.bytes_written, 2 * 4096 + (LEN - 15 * 4096));
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_ERASE), 3);
	assert_int_equal(r->phases, 7u); /* read, erase, write */
	assert_int_equal(r->written_progress, st.bytes_written);
	char summary[200];
	dfu_diff_summary(r->diff, summary, sizeof(summary));
	assert_non_null(strstr(summary, "3 of 16 pages differ"));
	free(old);
	free(new);
	rig_free(r);
}

static void test_identical_range_writes_nothing(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	uint8_t *img = pattern(LEN, 5);
	memcpy(fake_dfu_at(r->fake, SYSTEM_START), img, LEN);
	struct dfu_write w = {.alt = 0, .address = SYSTEM_START, .data = img, .len = LEN};
	struct dfu_diff_stats st;
	run_diff(r, &w, &st);
	assert_int_equal(st.differing, 0);
	assert_int_equal(st.bytes_written, 0);
	assert_int_equal(st.bytes_read, LEN);
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_ERASE), 0);
	free(img);
	rig_free(r);
}

static void test_reading_stops_when_the_first_pages_all_differ(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	uint8_t *old = pattern(LEN, 1), *new = pattern(LEN, 99);
	memcpy(fake_dfu_at(r->fake, SYSTEM_START), old, LEN);
	struct dfu_write w = {.alt = 0, .address = SYSTEM_START, .data = new, .len = LEN};
	struct dfu_diff_stats st;
	run_diff(r, &w, &st);
	assert_memory_equal(fake_dfu_at(r->fake, SYSTEM_START), new, LEN);
	assert_int_equal(st.differing, 16);
	assert_int_equal(st.unread, 8); /* 8 read, the rest written without reading */
	assert_int_equal(st.bytes_read, 8 * 4096);
	assert_int_equal(st.bytes_written, LEN);
	free(old);
	free(new);
	rig_free(r);
}

static void test_diff_needs_something_installed_and_a_readable_device(void **state)
{
	(void)state;
	struct rig *r = rig_new();
	uint8_t *img = pattern(LEN, 5);
	struct dfu_write w = {.alt = 0, .address = SYSTEM_START, .data = img, .len = LEN};
	struct device_facts facts;
	facts_with_system(&facts);
	facts.n_modules = 0;
	char why[128];
	assert_false(
	    dfu_diff_pays(facts.platform, dfuse_get_info(r->dfuse), &facts, &w, why, sizeof(why)));
	assert_non_null(strstr(why, "nothing is installed"));
	facts_with_system(&facts);
	w.function = MODULE_FUNCTION_SYSTEM;
	w.index = 1;
	w.version = 2302;
	assert_true(dfu_diff_pays(facts.platform, dfuse_get_info(r->dfuse), &facts, &w, NULL, 0));
	w.version = 2400; /* another version: its code moved everywhere */
	assert_false(
	    dfu_diff_pays(facts.platform, dfuse_get_info(r->dfuse), &facts, &w, why, sizeof(why)));
	assert_non_null(strstr(why, "another module or version"));
	w.version = 2302;
	struct dfuse_info info = *dfuse_get_info(r->dfuse);
	info.protected_device = true;
	assert_false(dfu_diff_pays(facts.platform, &info, &facts, &w, why, sizeof(why)));
	/* the 0xD4000 invalidation page: an erase, nothing to compare */
	w.erase_only = true;
	assert_false(dfu_diff_pays(facts.platform, dfuse_get_info(r->dfuse), &facts, &w, NULL, 0));
	free(img);
	rig_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_few_changed_pages_are_the_only_ones_erased_and_written),
	    cmocka_unit_test(test_identical_range_writes_nothing),
	    cmocka_unit_test(test_reading_stops_when_the_first_pages_all_differ),
	    cmocka_unit_test(test_diff_needs_something_installed_and_a_readable_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
