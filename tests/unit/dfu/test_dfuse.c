/* The DfuSe state machine against a scripted fake device (fake_dfu.c). */
#include "../../event_timers.h"
#include "fake_dfu.h"

#include <libusb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

struct rig {
	struct event_base *base;
	struct fake_dfu *fake;
	struct dfuse *dfuse;
	int result;
	bool done;
	struct error err;
};

static void on_done(struct dfuse *s, int result, struct error *err, void *userdata)
{
	(void)s;
	struct rig *r = userdata;
	r->result = result;
	r->done = true;
	error_clear(&r->err);
	if (err)
		error_move(&r->err, err);
}

static struct rig *rig_new(int gen)
{
	struct rig *r = calloc(1, sizeof(*r));
	r->base = event_base_new();
	r->fake = fake_dfu_new(r->base, gen);
	struct dfu_descriptors d;
	fake_dfu_descriptors(r->fake, &d);
	struct dfu_io io = fake_dfu_io(r->fake);
	r->dfuse = dfuse_new(r->base, &io, &d);
	r->fake->dfuse = r->dfuse;
	error_init(&r->err);
	return r;
}

static void rig_free(struct rig *r)
{
	dfuse_free(r->dfuse);
	fake_dfu_free(r->fake);
	event_base_free(r->base);
	error_clear(&r->err);
	free(r);
}

/* Runs the loop until the operation completes; a bounded wait keeps failures from hanging. */
static int rig_wait(struct rig *r)
{
	struct timeval limit = {10, 0};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!r->done) {
		event_base_loop(r->base, EVLOOP_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec > limit.tv_sec)
			fail_msg("operation did not complete");
	}
	r->done = false;
	return r->result;
}

static void rig_open(struct rig *r)
{
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_open(r->dfuse, on_done, r, &err), 0);
	if (rig_wait(r) < 0)
		fail_msg("open failed: %s", r->err.message);
}

static int rig_download(struct rig *r, uint32_t addr, const uint8_t *data, size_t len)
{
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_download(r->dfuse, 0, addr, data, len, on_done, r, &err), 0);
	return rig_wait(r);
}

static int rig_erase(struct rig *r, uint32_t addr, size_t len)
{
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_erase(r->dfuse, 0, addr, len, on_done, r, &err), 0);
	return rig_wait(r);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 31 + seed) ^ (i >> 8));
	return p;
}

static long long detail_int(const struct error *e, const char *key)
{
	json_t *v = json_object_get(e->detail, key);
	if (!json_is_integer(v))
		fail_msg("detail %s missing in '%s'", key, e->message);
	return json_integer_value(v);
}

static void test_open_reads_serial_maps_and_functional_descriptor(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->strings[0xfa] = "sm=o";
	rig_open(r);
	const struct dfuse_info *info = dfuse_get_info(r->dfuse);
	assert_string_equal(info->serial, "e00fce68aabbccddeeff0011");
	assert_true(info->map_valid[0] && info->map_valid[1] && info->map_valid[2]);
	assert_string_equal(info->maps[2].name, "External Flash");
	assert_int_equal(info->maps[0].n_segments, 6);
	assert_string_equal(info->protection, "sm=o");
	assert_false(info->protected_device);
	assert_int_equal(dfuse_transfer_size(r->dfuse), 4096);
	assert_int_equal(dfuse_get_descriptors(r->dfuse)->attributes, 0x0b);
	assert_int_equal(dfuse_get_descriptors(r->dfuse)->detach_timeout, 255);
	/* SET_INTERFACE alt 0 came first, then GETSTATUS in dfuIDLE. */
	assert_int_equal(r->fake->log[0].req, 0x0b);
	assert_int_equal(r->fake->log[1].req, DFU_GETSTATUS);
	rig_free(r);
}

static void test_protection_string_and_all_b_map_mean_protected(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->strings[0xfa] = "sm=p";
	rig_open(r);
	assert_true(dfuse_get_info(r->dfuse)->protected_device);
	rig_free(r);

	/* No 0xFA (bootloader < 6.1.2): every segment erasable-only means protected
	 * (docs/device/dfuse.md#particle-usb-sequence). */
	r = rig_new(3);
	r->fake->strings[6] = "@Internal Flash   /0x00000000/1*004Kb,47*004Kb,192*004Kb";
	r->fake->strings[7] = "@DCT Flash   /0x00000000/1*016Kb";
	r->fake->strings[8] = "@External Flash   /0x80000000/1024*004Kb";
	rig_open(r);
	assert_true(dfuse_get_info(r->dfuse)->protected_device);
	assert_string_equal(dfuse_get_info(r->dfuse)->protection, "");
	rig_free(r);
}

static void test_open_recovers_from_dfu_error_with_clrstatus(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->state = DFU_STATE_ERROR;
	r->fake->status = DFU_STATUS_ERR_UNKNOWN;
	rig_open(r);
	assert_int_equal(fake_dfu_count(r->fake, DFU_CLRSTATUS, -1), 1);
	assert_int_equal(fake_dfu_count(r->fake, DFU_ABORT, -1), 0);
	rig_free(r);
}

static void test_open_aborts_a_device_left_in_dnload_idle(void **state)
{
	(void)state;
	struct rig *r = rig_new(2);
	r->fake->state = DFU_STATE_DNLOAD_IDLE;
	rig_open(r);
	assert_int_equal(fake_dfu_count(r->fake, DFU_ABORT, -1), 1);
	assert_int_equal(r->fake->state, DFU_STATE_IDLE);
	rig_free(r);
}

/* A flash killed mid-erase leaves the device finishing that erase: on open it says
 * dfuDNBUSY, which is waited out (bwPollTimeout), not a failure. */
static void test_open_waits_out_a_device_busy_with_a_dead_hosts_erase(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->busy_polls = 3;
	r->fake->poll_ms = 5;
	rig_open(r);
	assert_int_equal(fake_dfu_count(r->fake, DFU_GETSTATUS, -1) >= 4, 1);
	assert_int_equal(fake_dfu_count(r->fake, DFU_ABORT, -1), 1);
	assert_int_equal(r->fake->state, DFU_STATE_IDLE);
	rig_free(r);
}

/* A device may answer "busy, ask again in 0 ms" as fast as the bus allows for as long as its
 * flash takes: the wait is bounded by time (DFUSE_BUSY_MAX_MS), not by a number of polls
 * (it once gave up after 1000), on open and after a command alike. */
static void test_busy_wait_is_bounded_by_time_not_by_polls(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->busy_polls = 2500;
	r->fake->poll_ms = 0;
	rig_open(r);
	assert_true(fake_dfu_count(r->fake, DFU_GETSTATUS, -1) > 2500);
	r->fake->busy_polls = 2500;
	unsigned before = fake_dfu_count(r->fake, DFU_GETSTATUS, -1);
	assert_int_equal(rig_erase(r, 0x30000, 4096), 0);
	assert_true(fake_dfu_count(r->fake, DFU_GETSTATUS, -1) - before > 2500);
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_ERASE), 1);
	rig_free(r);
}

/* Runs the loop until the device has answered its n-th GETSTATUS, the first busy one:
 * the pause it asked for and the busy wait's deadline are armed, nothing else. */
static void rig_until_first_busy(struct rig *r, unsigned n)
{
	struct armed_timers t;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (fake_dfu_count(r->fake, DFU_GETSTATUS, -1) < n || armed_timers(r->base, &t) != 2) {
		if (r->done)
			fail_msg("the operation ended: %s", r->err.message);
		event_base_loop(r->base, EVLOOP_NONBLOCK);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec > 10)
			fail_msg("no busy wait with a pause and a deadline armed");
	}
}

/* The device has been busy for DFUSE_BUSY_MAX_MS in a pause that would end later: time
 * passes without the test waiting it out, the busy wait's deadline (the armed timer due
 * last, after the bwPollTimeout) comes due now. */
static void rig_deadline_passes(struct rig *r)
{
	struct armed_timers t;
	assert_int_equal(armed_timers(r->base, &t), 2); /* the pause and the deadline */
	event_active(t.last, EV_TIMEOUT, 1);
}

/* A device that stays busy past the deadline: the pause it asked for is cut short, it is
 * asked once more, and a busy answer then fails the operation: timed-out with the DFU
 * context as before, the bound (timeout_ms) and the polls; nothing stays armed. */
static void test_busy_past_the_deadline_is_timed_out(void **state)
{
	(void)state;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* on open: a dead host's erase that never ends */
	struct rig *r = rig_new(3);
	r->fake->busy_polls = UINT32_MAX;
	r->fake->poll_ms = 5000;
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_open(r->dfuse, on_done, r, &err), 0);
	rig_until_first_busy(r, 1);
	rig_deadline_passes(r);
	assert_int_equal(rig_wait(r), -1);
	assert_int_equal(r->err.code, ERR_TIMED_OUT);
	assert_string_equal(r->err.message,
			    "the device stayed busy (dfuDNBUSY) for more than 15000 ms (2 status "
			    "polls) on open");
	assert_int_equal(detail_int(&r->err, "timeout_ms"), DFUSE_BUSY_MAX_MS);
	assert_int_equal(detail_int(&r->err, "dfu_state"), DFU_STATE_DNBUSY);
	assert_int_equal(fake_dfu_count(r->fake, DFU_GETSTATUS, -1), 2);
	struct armed_timers t;
	assert_int_equal(armed_timers(r->base, &t), 0);
	rig_free(r);

	/* after an ERASE command */
	r = rig_new(3);
	rig_open(r);
	r->fake->busy_polls = UINT32_MAX;
	r->fake->poll_ms = 5000;
	unsigned before = fake_dfu_count(r->fake, DFU_GETSTATUS, -1);
	assert_int_equal(dfuse_erase(r->dfuse, 0, 0x30000, 4096, on_done, r, &err), 0);
	rig_until_first_busy(r, before + 1);
	rig_deadline_passes(r);
	assert_int_equal(rig_wait(r), -1);
	assert_int_equal(r->err.code, ERR_TIMED_OUT);
	assert_string_equal(r->err.message,
			    "the device stayed busy for more than 15000 ms (2 status polls)");
	assert_int_equal(detail_int(&r->err, "timeout_ms"), DFUSE_BUSY_MAX_MS);
	assert_int_equal(detail_int(&r->err, "address"), 0x30000);
	assert_int_equal(detail_int(&r->err, "dfu_state"), DFU_STATE_DNBUSY);
	assert_string_equal(json_string_value(json_object_get(r->err.detail, "phase")), "erase");
	assert_int_equal(armed_timers(r->base, &t), 0);
	/* the next operation starts a wait of its own */
	r->fake->busy_polls = 3;
	r->fake->poll_ms = 0;
	assert_int_equal(rig_erase(r, 0x30000, 4096), 0);
	rig_free(r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 4); /* no 5 s pause was waited out */
}

static void test_malformed_map_string_fails_open(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	r->fake->strings[7] = "@DCT Flash   /0x00000000/1*016Kz";
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_open(r->dfuse, on_done, r, &err), 0);
	assert_int_equal(rig_wait(r), -1);
	assert_int_equal(r->err.code, ERR_DFU_DESCRIPTOR_INVALID);
	assert_int_equal(detail_int(&r->err, "alt"), 1);
	rig_free(r);
}

static void test_download_sets_address_once_and_advances_block_numbers(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	size_t len = 3 * 4096 + 1000;
	uint8_t *img = pattern(len, 7);
	assert_int_equal(rig_erase(r, 0xB4000, len), 0);
	unsigned before = r->fake->n_log;
	assert_int_equal(rig_download(r, 0xB4000, img, len), 0);
	assert_memory_equal(fake_dfu_at(r->fake, 0xB4000), img, len);
	/* One SET_ADDRESS, then DNLOAD wValue 2, 3, 4, 5
	 * (docs/device/dfuse.md#requests-and-states). */
	unsigned set_address = 0, data = 0;
	for (unsigned i = before; i < r->fake->n_log; i++) {
		const struct fake_req *q = &r->fake->log[i];
		if (q->req == DFU_DNLOAD && q->value == 0 && q->cmd == DFUSE_CMD_SET_ADDRESS) {
			set_address++;
			assert_int_equal(q->cmd_address, 0xB4000);
		}
		if (q->req == DFU_DNLOAD && q->value >= 2) {
			assert_int_equal(q->value, 2 + data);
			assert_int_equal(q->length, data < 3 ? 4096 : 1000);
			data++;
		}
	}
	assert_int_equal(set_address, 1);
	assert_int_equal(data, 4);
	assert_int_equal(dfuse_get_stats(r->dfuse)->bytes_written, len);
	free(img);
	rig_free(r);
}

/* Found by fuzz_dfuse: dfuse_download() sent data wherever it was asked, also to
 * sectors the device's map says are read-only (preflight is the only check). */
static void test_download_outside_the_writable_map_is_refused_before_any_request(void **state)
{
	(void)state;
	struct rig *r = rig_new(2);
	rig_open(r);
	unsigned before = r->fake->n_log;
	uint8_t data[64] = {0};
	struct error err;
	error_init(&err);
	/* 0x08000000: the Photon's bootloader sectors, 'a' (read-only) in its map */
	assert_int_equal(
	    dfuse_download(r->dfuse, 0, 0x08000000, data, sizeof(data), on_done, r, &err), -1);
	assert_int_equal(err.code, ERR_OUTSIDE_MEMORY_MAP);
	assert_int_equal(detail_int(&err, "address"), 0x08000000);
	error_clear(&err);
	/* past the end of the map */
	assert_int_equal(
	    dfuse_download(r->dfuse, 0, 0x080ffff0, data, sizeof(data), on_done, r, &err), -1);
	assert_int_equal(detail_int(&err, "address"), 0x08100000);
	error_clear(&err);
	assert_int_equal(r->fake->n_log, before);
	/* and the machine is still usable */
	assert_int_equal(rig_download(r, 0x080a0000, data, sizeof(data)), 0);
	rig_free(r);
}

static void test_address_per_chunk_fallback_resends_set_address(void **state)
{
	(void)state;
	struct rig *r = rig_new(2);
	rig_open(r);
	dfuse_set_address_per_chunk(r->dfuse, true);
	size_t len = 2 * 4096 + 10;
	uint8_t *img = pattern(len, 3);
	assert_int_equal(rig_erase(r, 0x080A0000, len), 0);
	unsigned before = r->fake->n_log;
	assert_int_equal(rig_download(r, 0x080A0000, img, len), 0);
	assert_memory_equal(fake_dfu_at(r->fake, 0x080A0000), img, len);
	unsigned set_address = 0;
	for (unsigned i = before; i < r->fake->n_log; i++) {
		const struct fake_req *q = &r->fake->log[i];
		if (q->req == DFU_DNLOAD && q->value == 0 && q->cmd == DFUSE_CMD_SET_ADDRESS)
			assert_int_equal(q->cmd_address, 0x080A0000 + 4096 * set_address++);
		if (q->req == DFU_DNLOAD && q->value >= 2)
			assert_int_equal(q->value, 2);
	}
	assert_int_equal(set_address, 3);
	free(img);
	rig_free(r);
}

static void test_gen2_erase_sends_one_command_per_sector(void **state)
{
	(void)state;
	struct rig *r = rig_new(2);
	rig_open(r);
	/* A Photon system part 1 (0x08020000, 248732 bytes) covers two 128 KiB sectors. */
	assert_int_equal(rig_erase(r, 0x08020000, 248732), 0);
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_ERASE), 2);
	rig_free(r);
}

static void test_gen3_erase_covers_exactly_the_image_pages(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	memset(fake_dfu_at(r->fake, 0xD3000), 0x11, 0x5000);
	assert_int_equal(rig_erase(r, 0xD4000, 11972), 0);
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_ERASE), 3);
	/* Pages around the image keep their contents. */
	assert_int_equal(*fake_dfu_at(r->fake, 0xD3FFF), 0x11);
	assert_int_equal(*fake_dfu_at(r->fake, 0xD4000), 0xff);
	assert_int_equal(*fake_dfu_at(r->fake, 0xD6FFF), 0xff);
	assert_int_equal(*fake_dfu_at(r->fake, 0xD7000), 0x11);
	rig_free(r);
}

static void test_erase_outside_memory_map_is_refused_before_any_request(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	unsigned before = r->fake->n_log;
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_erase(r->dfuse, 0, 0xF4000, 0xC164, on_done, r, &err), -1);
	assert_int_equal(err.code, ERR_OUTSIDE_MEMORY_MAP);
	assert_int_equal(detail_int(&err, "address"), 0xF8000);
	assert_int_equal(r->fake->n_log, before);
	error_clear(&err);
	rig_free(r);
}

static void test_poll_timeout_is_honoured_with_a_timer(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	r->fake->poll_ms = 60;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(rig_erase(r, 0x30000, 2 * 4096), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	assert_true(ms >= 2 * 60);
	rig_free(r);
}

static void test_upload_reads_back_with_set_address_abort_and_block_numbers(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	uint8_t *img = pattern(9000, 11);
	memcpy(fake_dfu_at(r->fake, 0x30000), img, 9000);
	uint8_t buf[9000];
	struct error err;
	error_init(&err);
	unsigned before = r->fake->n_log;
	assert_int_equal(dfuse_upload(r->dfuse, 0, 0x30000, buf, sizeof(buf), on_done, r, &err), 0);
	assert_int_equal(rig_wait(r), 0);
	assert_memory_equal(buf, img, sizeof(buf));
	unsigned uploads = 0;
	for (unsigned i = before; i < r->fake->n_log; i++)
		if (r->fake->log[i].req == DFU_UPLOAD)
			assert_int_equal(r->fake->log[i].value, 2 + uploads++);
	assert_int_equal(uploads, 3);
	/* Ends in dfuIDLE so that a download may follow. */
	assert_int_equal(r->fake->state, DFU_STATE_IDLE);
	assert_int_equal(r->fake->log[r->fake->n_log - 1].req, DFU_ABORT);
	free(img);
	rig_free(r);
}

static int rig_upload(struct rig *r, uint32_t addr, uint8_t *buf, size_t len)
{
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_upload(r->dfuse, 0, addr, buf, len, on_done, r, &err), 0);
	return rig_wait(r);
}

/* issue 18: reads left open share one SET_ADDRESS where the block numbers reach them,
 * and the read is closed with one ABORT before anything else. */
static void test_reads_left_open_share_one_set_address(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	uint8_t *img = pattern(0x8000, 5);
	memcpy(fake_dfu_at(r->fake, 0x30000), img, 0x8000);
	uint8_t a[0x220], b[0x1100], c[40], d[40];
	dfuse_set_keep_upload(r->dfuse, true);
	unsigned set0 = fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_SET_ADDRESS);
	unsigned abort0 = fake_dfu_count(r->fake, DFU_ABORT, -1);
	assert_int_equal(rig_upload(r, 0x30000, a, sizeof(a)), 0);
	assert_true(dfuse_upload_open(r->dfuse));
	assert_int_equal(r->fake->state, DFU_STATE_UPLOAD_IDLE);
	assert_int_equal(rig_upload(r, 0x32000, b, sizeof(b)), 0); /* two blocks on */
	assert_int_equal(rig_upload(r, 0x34010, c, sizeof(c)), 0); /* 16 bytes into a block */
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_SET_ADDRESS), set0 + 1);
	assert_int_equal(fake_dfu_count(r->fake, DFU_ABORT, -1), abort0 + 1);
	/* 3 KiB into its block: a new read is cheaper than the bytes before it */
	assert_int_equal(rig_upload(r, 0x35c00, d, sizeof(d)), 0);
	assert_int_equal(fake_dfu_count(r->fake, DFU_DNLOAD, DFUSE_CMD_SET_ADDRESS), set0 + 2);
	assert_memory_equal(a, img, sizeof(a));
	assert_memory_equal(b, img + 0x2000, sizeof(b));
	assert_memory_equal(c, img + 0x4010, sizeof(c));
	assert_memory_equal(d, img + 0x5c00, sizeof(d));
	/* an erase after an open read: ABORT first (no DNLOAD in dfuUPLOAD-IDLE) */
	assert_int_equal(rig_erase(r, 0x30000, 4096), 0);
	assert_false(dfuse_upload_open(r->dfuse));
	dfuse_set_keep_upload(r->dfuse, false);
	assert_int_equal(rig_upload(r, 0x31000, b, 100), 0);
	assert_false(dfuse_upload_open(r->dfuse));
	assert_int_equal(r->fake->state, DFU_STATE_IDLE);
	/* dfuse_idle() ends an open read, and is done at once when none is open */
	dfuse_set_keep_upload(r->dfuse, true);
	assert_int_equal(rig_upload(r, 0x32000, b, 100), 0);
	assert_int_equal(r->fake->state, DFU_STATE_UPLOAD_IDLE);
	struct error err;
	error_init(&err);
	for (int k = 0; k < 2; k++) {
		unsigned n = r->fake->n_log;
		assert_int_equal(dfuse_idle(r->dfuse, on_done, r, &err), 0);
		assert_int_equal(rig_wait(r), 0);
		assert_int_equal(r->fake->state, DFU_STATE_IDLE);
		assert_int_equal(r->fake->n_log, n + (k == 0 ? 1 : 0));
	}
	free(img);
	rig_free(r);
}

static void leave_and_expect(int gen, uint8_t expect_state)
{
	struct rig *r = rig_new(gen);
	rig_open(r);
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_leave(r->dfuse, on_done, r, &err), 0);
	assert_int_equal(rig_wait(r), 0);
	/* Exactly: zero-length DNLOAD, one GETSTATUS, then nothing. */
	const struct fake_req *last = &r->fake->log[r->fake->n_log - 1];
	const struct fake_req *prev = &r->fake->log[r->fake->n_log - 2];
	assert_int_equal(prev->req, DFU_DNLOAD);
	assert_int_equal(prev->length, 0);
	assert_int_equal(prev->value, 2);
	assert_int_equal(last->req, DFU_GETSTATUS);
	assert_int_equal(r->fake->after_leave_status, 0);
	(void)expect_state;
	rig_free(r);
}

static void test_leave_succeeds_on_gen2_dnload_idle_and_gen3_manifest(void **state)
{
	(void)state;
	leave_and_expect(2, DFU_STATE_DNLOAD_IDLE);
	leave_and_expect(3, DFU_STATE_MANIFEST);
}

static void test_leave_counts_a_vanished_device_as_success(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	/* The device resets before answering the GETSTATUS. */
	struct error err;
	error_init(&err);
	r->fake->fault = FAKE_FAULT_NONE;
	assert_int_equal(dfuse_leave(r->dfuse, on_done, r, &err), 0);
	r->fake->gone = false;
	/* Make the fake drop off after the DNLOAD: run one loop step then unplug. */
	while (r->fake->n_log == 0 || r->fake->log[r->fake->n_log - 1].length != 0)
		event_base_loop(r->base, EVLOOP_ONCE);
	r->fake->gone = true;
	assert_int_equal(rig_wait(r), 0);
	rig_free(r);
}

static struct rig *download_with_fault(int gen, enum fake_fault fault, unsigned chunk,
				       uint8_t status)
{
	struct rig *r = rig_new(gen);
	rig_open(r);
	uint32_t addr = gen == 2 ? 0x08020000 : 0x30000;
	size_t len = 8 * 4096;
	uint8_t *img = pattern(len, 5);
	assert_int_equal(rig_erase(r, addr, len), 0);
	r->fake->fault = fault;
	r->fake->fault_chunk = chunk;
	r->fake->fault_status = status;
	assert_int_equal(rig_download(r, addr, img, len), -1);
	free(img);
	return r;
}

static void assert_dfu_context(struct rig *r, unsigned chunk, uint32_t address)
{
	assert_int_equal(detail_int(&r->err, "chunk"), chunk);
	assert_int_equal(detail_int(&r->err, "address"), address);
	assert_int_equal(detail_int(&r->err, "alt"), 0);
	json_t *t = json_object_get(r->err.detail, "usb_trace");
	assert_true(json_is_array(t) && json_array_size(t) > 0);
}

static void test_stall_at_chunk_is_explained_by_getstatus(void **state)
{
	(void)state;
	struct rig *r = download_with_fault(2, FAKE_FAULT_STALL, 3, 0);
	assert_int_equal(r->err.code, ERR_TRANSFER_FAILED);
	assert_dfu_context(r, 3, 0x08020000 + 3 * 4096);
	assert_int_equal(detail_int(&r->err, "dfu_state"), DFU_STATE_ERROR);
	assert_int_equal(detail_int(&r->err, "dfu_status"), DFU_STATUS_ERR_STALLEDPKT);
	/* The stall was followed by a GETSTATUS. */
	assert_int_equal(r->fake->log[r->fake->n_log - 1].req, DFU_GETSTATUS);
	assert_non_null(strstr(r->err.message, "stalled"));
	rig_free(r);
}

static void test_dfu_error_at_chunk_maps_status_to_catalogue(void **state)
{
	(void)state;
	struct rig *r = download_with_fault(3, FAKE_FAULT_STATUS, 5, DFU_STATUS_ERR_PROG);
	assert_int_equal(r->err.code, ERR_TRANSFER_FAILED);
	assert_dfu_context(r, 5, 0x30000 + 5 * 4096);
	assert_int_equal(detail_int(&r->err, "dfu_status"), DFU_STATUS_ERR_PROG);
	assert_int_equal(detail_int(&r->err, "dfu_state"), DFU_STATE_ERROR);
	assert_non_null(strstr(r->err.message, "errPROG"));
	rig_free(r);

	r = download_with_fault(3, FAKE_FAULT_STATUS, 0, DFU_STATUS_ERR_TARGET);
	assert_int_equal(r->err.code, ERR_DEVICE_REJECTED);
	assert_int_equal(detail_int(&r->err, "dfu_status"), DFU_STATUS_ERR_TARGET);
	rig_free(r);
}

static void test_every_dfu_status_has_a_catalogue_id_and_sentence(void **state)
{
	(void)state;
	/* Chunk 0 follows its SET_ADDRESS: no fallback applies, every status is final. */
	for (uint8_t st = 1; st <= 15; st++) {
		struct rig *r = download_with_fault(3, FAKE_FAULT_STATUS, 0, st);
		assert_true(r->err.code == ERR_TRANSFER_FAILED ||
			    r->err.code == ERR_DEVICE_REJECTED ||
			    r->err.code == ERR_DEVICE_PROTECTED);
		assert_non_null(strstr(r->err.message, dfu_status_name(st)));
		assert_int_equal(detail_int(&r->err, "dfu_status"), st);
		rig_free(r);
	}
}

static void on_notice(struct dfuse *s, const char *note, const char *message, void *userdata)
{
	(void)s;
	(void)message;
	if (strcmp(note, "retrying-set-address") == 0)
		++*(unsigned *)userdata;
}

static void test_refused_block_numbered_chunk_switches_to_set_address_per_chunk(void **state)
{
	(void)state;
	uint8_t statuses[] = {DFU_STATUS_ERR_ADDRESS, DFU_STATUS_ERR_TARGET};
	for (size_t k = 0; k < sizeof(statuses); k++) {
		struct rig *r = rig_new(3);
		unsigned notices = 0;
		dfuse_set_notice(r->dfuse, on_notice, &notices);
		rig_open(r);
		size_t len = 5 * 4096 + 100;
		uint8_t *img = pattern(len, 11);
		assert_int_equal(rig_erase(r, 0x30000, len), 0);
		r->fake->fault = FAKE_FAULT_STATUS;
		r->fake->fault_chunk = 2; /* wValue 4: block-numbered */
		r->fake->fault_status = statuses[k];
		unsigned before = r->fake->n_log;
		assert_int_equal(rig_download(r, 0x30000, img, len), 0);
		assert_memory_equal(fake_dfu_at(r->fake, 0x30000), img, len);
		assert_int_equal(notices, 1);
		assert_true(dfuse_address_per_chunk(r->dfuse));
		assert_int_equal(dfuse_get_stats(r->dfuse)->address_fallbacks, 1);
		/* After the refusal every chunk is preceded by SET_ADDRESS and sent as wValue 2. */
		unsigned set_address = 0;
		bool refused = false;
		for (unsigned i = before; i < r->fake->n_log; i++) {
			const struct fake_req *q = &r->fake->log[i];
			if (q->req == DFU_CLRSTATUS)
				refused = true;
			if (refused && q->req == DFU_DNLOAD && q->value == 0 &&
			    q->cmd == DFUSE_CMD_SET_ADDRESS)
				assert_int_equal(q->cmd_address,
						 0x30000 + 4096 * (2 + set_address++));
			if (refused && q->req == DFU_DNLOAD && q->value >= 2)
				assert_int_equal(q->value, 2);
		}
		assert_true(refused);
		assert_int_equal(set_address, 4); /* chunks 2, 3, 4 and the 100-byte tail */
		free(img);
		rig_free(r);
	}
}

static void test_cancel_stops_a_download_at_the_next_chunk(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	size_t len = 8 * 4096;
	uint8_t *img = pattern(len, 13);
	assert_int_equal(rig_erase(r, 0x30000, len), 0);
	struct error err;
	error_init(&err);
	assert_int_equal(dfuse_download(r->dfuse, 0, 0x30000, img, len, on_done, r, &err), 0);
	while (dfuse_get_stats(r->dfuse)->bytes_written < 2 * 4096)
		event_base_loop(r->base, EVLOOP_ONCE);
	dfuse_cancel(r->dfuse);
	assert_int_equal(rig_wait(r), -1);
	assert_int_equal(r->err.code, ERR_CANCELLED);
	long long chunk = detail_int(&r->err, "chunk");
	assert_true(chunk >= 2 && chunk <= 3);
	assert_int_equal(detail_int(&r->err, "address"), 0x30000 + 4096 * chunk);
	assert_true(dfuse_get_stats(r->dfuse)->bytes_written < len);
	free(img);
	rig_free(r);
}

static void test_protected_erase_is_device_protected(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	r->fake->fault = FAKE_FAULT_ERASE_STATUS;
	r->fake->fault_status = DFU_STATUS_ERR_VENDOR;
	assert_int_equal(rig_erase(r, 0x30000, 4096), -1);
	assert_int_equal(r->err.code, ERR_DEVICE_PROTECTED);
	assert_int_equal(detail_int(&r->err, "dfu_status"), DFU_STATUS_ERR_VENDOR);
	rig_free(r);
}

static void test_unplug_mid_download_is_device_gone(void **state)
{
	(void)state;
	struct rig *r = download_with_fault(3, FAKE_FAULT_UNPLUG, 4, 0);
	assert_int_equal(r->err.code, ERR_DEVICE_GONE);
	assert_dfu_context(r, 4, 0x30000 + 4 * 4096);
	rig_free(r);
}

static void test_silent_device_times_out_in_bounded_time(void **state)
{
	(void)state;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct rig *r = download_with_fault(3, FAKE_FAULT_SILENT, 2, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(r->err.code, ERR_TIMED_OUT);
	assert_dfu_context(r, 2, 0x30000 + 2 * 4096);
	assert_true(t1.tv_sec - t0.tv_sec < 5);
	rig_free(r);
}

static void test_operation_after_failure_recovers_first(void **state)
{
	(void)state;
	struct rig *r = download_with_fault(3, FAKE_FAULT_STATUS, 1, DFU_STATUS_ERR_WRITE);
	r->fake->fault = FAKE_FAULT_NONE;
	unsigned before = fake_dfu_count(r->fake, DFU_CLRSTATUS, -1);
	uint8_t data[16] = {1, 2, 3};
	assert_int_equal(rig_erase(r, 0x40000, 16), 0);
	assert_int_equal(rig_download(r, 0x40000, data, sizeof(data)), 0);
	assert_int_equal(fake_dfu_count(r->fake, DFU_CLRSTATUS, -1), before + 1);
	assert_memory_equal(fake_dfu_at(r->fake, 0x40000), data, sizeof(data));
	rig_free(r);
}

static void test_flight_recorder_keeps_only_the_last_lines(void **state)
{
	(void)state;
	struct rig *r = rig_new(3);
	rig_open(r);
	size_t len = 64 * 4096;
	uint8_t *img = pattern(len, 1);
	assert_int_equal(rig_erase(r, 0x30000, len), 0);
	assert_int_equal(rig_download(r, 0x30000, img, len), 0);
	json_t *t = dfuse_trace_json(r->dfuse);
	assert_int_equal(json_array_size(t), DFU_TRACE_MAX / DFU_TRACE_LINE_MAX);
	size_t total = 0;
	for (size_t i = 0; i < json_array_size(t); i++)
		total += strlen(json_string_value(json_array_get(t, i)));
	assert_true(total <= DFU_TRACE_MAX);
	json_decref(t);
	free(img);
	rig_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_reads_serial_maps_and_functional_descriptor),
	    cmocka_unit_test(test_protection_string_and_all_b_map_mean_protected),
	    cmocka_unit_test(test_open_recovers_from_dfu_error_with_clrstatus),
	    cmocka_unit_test(test_open_aborts_a_device_left_in_dnload_idle),
	    cmocka_unit_test(test_open_waits_out_a_device_busy_with_a_dead_hosts_erase),
	    cmocka_unit_test(test_busy_wait_is_bounded_by_time_not_by_polls),
	    cmocka_unit_test(test_busy_past_the_deadline_is_timed_out),
	    cmocka_unit_test(test_malformed_map_string_fails_open),
	    cmocka_unit_test(test_download_sets_address_once_and_advances_block_numbers),
	    cmocka_unit_test(test_address_per_chunk_fallback_resends_set_address),
	    cmocka_unit_test(test_download_outside_the_writable_map_is_refused_before_any_request),
	    cmocka_unit_test(test_gen2_erase_sends_one_command_per_sector),
	    cmocka_unit_test(test_gen3_erase_covers_exactly_the_image_pages),
	    cmocka_unit_test(test_erase_outside_memory_map_is_refused_before_any_request),
	    cmocka_unit_test(test_poll_timeout_is_honoured_with_a_timer),
	    cmocka_unit_test(test_upload_reads_back_with_set_address_abort_and_block_numbers),
	    cmocka_unit_test(test_reads_left_open_share_one_set_address),
	    cmocka_unit_test(test_leave_succeeds_on_gen2_dnload_idle_and_gen3_manifest),
	    cmocka_unit_test(test_leave_counts_a_vanished_device_as_success),
	    cmocka_unit_test(test_stall_at_chunk_is_explained_by_getstatus),
	    cmocka_unit_test(test_dfu_error_at_chunk_maps_status_to_catalogue),
	    cmocka_unit_test(test_every_dfu_status_has_a_catalogue_id_and_sentence),
	    cmocka_unit_test(test_refused_block_numbered_chunk_switches_to_set_address_per_chunk),
	    cmocka_unit_test(test_cancel_stops_a_download_at_the_next_chunk),
	    cmocka_unit_test(test_protected_erase_is_device_protected),
	    cmocka_unit_test(test_unplug_mid_download_is_device_gone),
	    cmocka_unit_test(test_silent_device_times_out_in_bounded_time),
	    cmocka_unit_test(test_operation_after_failure_recovers_first),
	    cmocka_unit_test(test_flight_recorder_keeps_only_the_last_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
