/*
 * The YMODEM sender against a scripted model of the device's receiver
 * (docs/device/ymodem.md) over a socketpair, driven by the same
 * libevent loop: every device end maps to its own catalogue id.
 */
#include "ymodem.h"

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
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

enum peer_verdict {
	V_OK,
	V_MASK_PLATFORM,
	V_CODE_1360,
	V_CODE_1340,
	V_HEADER_REFUSED,
	V_NO_YMODEM,
	V_NOISE /* cancels at the header with bytes that are not text */
};

struct peer {
	int fd;
	struct event *ev;
	struct event_base *base;
	/* script */
	enum peer_verdict verdict;
	const char *stray; /* printed before the prompt */
	/* first 'f' lands in the claim-code prompt (docs/device/console.md#modemmanager) */
	bool claim_first;
	int drop_ack_block;    /* swallow the ACK of this block once */
	int nak_from_block;    /* NAK every block from here */
	int silent_from_block; /* stop answering */
	int close_at_block;    /* unplug */
	/* state */
	bool in_ymodem, in_claim;
	uint8_t pkt[1029 + 16];
	size_t pkt_len, pkt_need;
	unsigned expected_seq;
	uint8_t received[300000];
	size_t received_len;
	bool dropped;
	unsigned final_headers;
};

static void peer_send(struct peer *p, const void *buf, size_t len)
{
	if (p->fd >= 0 && write(p->fd, buf, len) != (ssize_t)len)
		fail_msg("peer write");
}

static void peer_str(struct peer *p, const char *s)
{
	peer_send(p, s, strlen(s));
}

static void peer_close(struct peer *p)
{
	event_del(p->ev);
	close(p->fd);
	p->fd = -1;
}

static void peer_verdict(struct peer *p)
{
	p->final_headers++;
	switch (p->verdict) {
	case V_OK:
		peer_str(p, "\x06\r\nDownloaded file successfully!\r\nName: x\r\nSize: 1 bytes\r\n"
			    "Restarting system to apply firmware update...\r\n");
		break;
	case V_MASK_PLATFORM:
		peer_str(p, "\x18\x18Validation failed: 0x10\r\n");
		break;
	case V_CODE_1360:
		peer_str(p, "\x18\x18Validation failed: -1360\r\n");
		break;
	case V_CODE_1340:
		peer_str(p, "\x18\x18Validation failed: -1340\r\n");
		break;
	default:
		break;
	}
	p->in_ymodem = false;
}

static void peer_packet(struct peer *p)
{
	unsigned seq = p->pkt[1];
	if ((uint8_t)~p->pkt[2] != seq) {
		peer_str(p, "C");
		return;
	}
	if (seq != (p->expected_seq & 0xff)) {
		/* duplicate or out of order: NAK (docs/device/ymodem.md#block-reception) */
		peer_str(p, "\x15");
		return;
	}
	size_t size = p->pkt[0] == 0x02 ? 1024 : 128;
	if (seq == 0 && p->expected_seq == 0 && p->received_len == 0 && p->pkt[3] != 0) {
		if (p->verdict == V_NOISE) {
			peer_str(p, "\x18\x18\x18\x18No \xff\xfe\x1b[2J space\r\n");
			p->in_ymodem = false;
			return;
		}
		if (p->verdict == V_HEADER_REFUSED) {
			peer_str(p, "\x18\x18\x18\x18The file size is higher than the allowed "
				    "space memory!\r\n");
			p->in_ymodem = false;
			return;
		}
		p->expected_seq = 1;
		peer_str(p, "\x06"
			    "C");
		return;
	}
	if (seq == 0 && p->pkt[3] == 0) {
		peer_verdict(p);
		return;
	}
	int block = (int)p->expected_seq;
	if (p->close_at_block == block) {
		peer_close(p);
		return;
	}
	if (p->silent_from_block && block >= p->silent_from_block)
		return;
	if (p->nak_from_block && block >= p->nak_from_block) {
		peer_str(p, "\x15");
		return;
	}
	memcpy(p->received + p->received_len, p->pkt + 3, size);
	p->received_len += size;
	p->expected_seq++;
	if (p->drop_ack_block == block && !p->dropped) {
		p->dropped = true;
		return;
	}
	peer_str(p, "\x06");
}

static void peer_byte(struct peer *p, uint8_t c)
{
	if (p->pkt_need) {
		p->pkt[p->pkt_len++] = c;
		if (p->pkt_len == p->pkt_need) {
			p->pkt_need = 0;
			peer_packet(p);
		}
		return;
	}
	if (p->in_claim) {
		if (c == '\r' || c == '\n') {
			p->in_claim = false;
			peer_str(p, "\r\nSorry, claim code is not 63 characters long. Claim code "
				    "unchanged.\r\n");
		}
		return;
	}
	if (p->in_ymodem) {
		if (c == 0x01 || c == 0x02) {
			p->pkt[0] = c;
			p->pkt_len = 1;
			p->pkt_need = c == 0x02 ? 1029 : 133;
		} else if (c == 0x04) {
			peer_str(p, "\x06"); /* immediate ACK, no 'C' */
			p->expected_seq = 0;
		} else if (c == 'a') {
			peer_str(p, "\x18\x18\x18\x18"
				    "Aborted by user.\r\n");
			p->in_ymodem = false;
		}
		return;
	}
	if (c == 'f') {
		if (p->claim_first) {
			p->claim_first = false;
			p->in_claim = true;
			peer_str(p, "Enter 63-digit claim code: ");
			return;
		}
		if (p->stray)
			peer_str(p, p->stray);
		peer_str(p, "Waiting for the binary file to be sent ... (press 'a' to abort)\r\n");
		if (p->verdict == V_NO_YMODEM) {
			peer_str(
			    p, "\x18\x18\x18\x18Serial/YModem flashing is no longer supported\r\n");
			return;
		}
		p->in_ymodem = true;
		p->expected_seq = 0;
	}
}

static void peer_read(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	(void)what;
	uint8_t buf[2048];
	ssize_t n = read(fd, buf, sizeof(buf));
	for (ssize_t i = 0; i < n && p->fd >= 0; i++)
		peer_byte(p, buf[i]);
}

struct outcome {
	struct event_base *base;
	bool done, ok;
	struct error err;
	struct ymodem_result res;
	struct ymodem *y;
	int cancel_at_bytes;
};

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct outcome *o = ctx;
	(void)total;
	if (o->cancel_at_bytes && done >= (uint64_t)o->cancel_at_bytes)
		ymodem_cancel(o->y);
}

static void on_done(void *ctx, const struct ymodem_result *res, struct error *err)
{
	struct outcome *o = ctx;
	o->done = true;
	o->ok = res->ok;
	o->res = *res;
	if (err)
		error_move(&o->err, err);
	event_base_loopbreak(o->base);
}

static uint8_t image[5000];

static void run(struct peer *p, struct outcome *o, size_t len)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	for (size_t i = 0; i < sizeof(image); i++)
		image[i] = (uint8_t)(i * 7 + 3);
	struct event_base *base = event_base_new();
	p->fd = sv[1];
	p->base = base;
	p->ev = event_new(base, sv[1], EV_READ | EV_PERSIST, peer_read, p);
	event_add(p->ev, NULL);
	o->base = base;
	error_init(&o->err);
	struct ymodem_config cfg;
	ymodem_config_default(&cfg);
	cfg.prompt_ms = 1000;
	cfg.header_ms = 300;
	cfg.block_ms = 300;
	cfg.final_ms = 1000;
	cfg.text_ms = 100;
	struct ymodem_ops ops = {o, on_progress, on_done};
	o->y = ymodem_new(base, sv[0], sv[0], image, len, "app.bin", &cfg, &ops);
	struct error e;
	error_init(&e);
	assert_int_equal(ymodem_start(o->y, &e), 0);
	struct timeval guard = {10, 0};
	event_base_loopexit(base, &guard);
	event_base_dispatch(base);
	assert_true(o->done);
	ymodem_free(o->y);
	event_free(p->ev);
	if (p->fd >= 0)
		close(p->fd);
	close(sv[0]);
	event_base_free(base);
}

static const char *dstr(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_string_value(v) : "";
}

static long long dint(const struct error *e, const char *key)
{
	json_t *v = e->detail ? json_object_get(e->detail, key) : NULL;
	return v ? json_integer_value(v) : -99999;
}

static void test_crc16_matches_the_xmodem_check_value(void **state)
{
	(void)state;
	assert_int_equal(ymodem_crc16((const uint8_t *)"123456789", 9), 0x31c3);
}

static void test_successful_transfer_delivers_every_byte_and_reads_the_success_text(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .stray = "app says hi\r\n{\"temp\":21}\r\n"};
	struct outcome o = {0};
	run(&p, &o, sizeof(image));
	assert_true(o.ok);
	assert_int_equal(o.res.bytes_sent, sizeof(image));
	assert_true(p.received_len >= sizeof(image));
	assert_memory_equal(p.received, image, sizeof(image));
	assert_non_null(strstr(o.res.device_text, "Downloaded file successfully!"));
	assert_false(o.res.validation_failed);
	assert_int_equal(p.final_headers, 1);
}

static void test_mask_verdict_of_1_5_x_decodes_to_wrong_platform(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_MASK_PLATFORM};
	struct outcome o = {0};
	run(&p, &o, 3000);
	assert_false(o.ok);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_int_equal(dint(&o.err, "device_code"), 0x10);
	assert_string_equal(dstr(&o.err, "cause"), "wrong-platform");
	assert_string_equal(dstr(&o.err, "device_text"), "Validation failed: 0x10");
	assert_int_equal(o.res.bytes_sent, 3000); /* the whole file went over */
	assert_true(o.res.validation_failed);	  /* the device resets after this verdict */
	error_clear(&o.err);
}

static void test_negative_code_of_2_x_decodes_to_its_cause(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_CODE_1360};
	struct outcome o = {0};
	run(&p, &o, 100);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_int_equal(dint(&o.err, "device_code"), -1360);
	assert_string_equal(dstr(&o.err, "cause"), "wrong-platform");
	error_clear(&o.err);

	struct peer p2 = {.verdict = V_CODE_1340};
	struct outcome o2 = {0};
	run(&p2, &o2, 100);
	assert_string_equal(dstr(&o2.err, "cause"), "dependency-unmet");
	error_clear(&o2.err);
}

static void test_header_refusal_reports_every_possible_cause(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_HEADER_REFUSED};
	struct outcome o = {0};
	run(&p, &o, 100);
	assert_int_equal(o.err.code, ERR_DEVICE_REJECTED);
	assert_string_equal(dstr(&o.err, "phase"), "header");
	assert_non_null(strstr(o.err.message, "disabled updates"));
	assert_non_null(strstr(o.err.message, "in progress"));
	assert_int_equal(o.res.bytes_sent, 0);
	assert_false(o.res.validation_failed); /* refused before any block: no reset */
	error_clear(&o.err);
}

static void test_device_os_6_prompt_is_not_flashable_here(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_NO_YMODEM};
	struct outcome o = {0};
	run(&p, &o, 100);
	assert_int_equal(o.err.code, ERR_NOT_FLASHABLE_HERE);
	error_clear(&o.err);
}

/* Found by fuzz_console: a device's non-UTF-8 bytes in the error made
 * error_to_json() fail, so the job-ended event went out without its error. */
static void test_device_text_that_is_not_ascii_still_makes_a_json_error(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_NOISE};
	struct outcome o = {0};
	run(&p, &o, 100);
	assert_false(o.ok);
	assert_int_equal(o.err.code, ERR_TRANSFER_FAILED);
	assert_non_null(strstr(o.err.message, "(\"No ???[2J space\")"));
	json_t *j = error_to_json(&o.err);
	assert_non_null(j);
	json_decref(j);
	error_clear(&o.err);
}

static void test_lost_ack_then_duplicate_nak_moves_on(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .drop_ack_block = 2};
	struct outcome o = {0};
	run(&p, &o, sizeof(image));
	assert_true(o.ok);
	assert_int_equal(p.received_len, 5 * 1024); /* block 2 stored once */
	assert_memory_equal(p.received, image, sizeof(image));
}

static void test_nak_storm_fails_with_block_number(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .nak_from_block = 3};
	struct outcome o = {0};
	run(&p, &o, sizeof(image));
	assert_int_equal(o.err.code, ERR_TRANSFER_FAILED);
	assert_int_equal(dint(&o.err, "block"), 3);
	assert_int_equal(dint(&o.err, "bytes_sent"), 2048);
	assert_non_null(strstr(dstr(&o.err, "reason"), "NAK storm"));
	error_clear(&o.err);
}

static void test_silence_times_out_in_the_data_phase(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .silent_from_block = 4};
	struct outcome o = {0};
	run(&p, &o, sizeof(image));
	assert_int_equal(o.err.code, ERR_TIMED_OUT);
	assert_string_equal(dstr(&o.err, "phase"), "data");
	assert_int_equal(dint(&o.err, "block"), 4);
	assert_int_equal(dint(&o.err, "bytes_sent"), 3072);
	error_clear(&o.err);
}

static void test_unplug_is_device_gone_with_block_and_bytes(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .close_at_block = 3};
	struct outcome o = {0};
	run(&p, &o, sizeof(image));
	assert_int_equal(o.err.code, ERR_DEVICE_GONE);
	assert_int_equal(dint(&o.err, "block"), 3);
	assert_int_equal(dint(&o.err, "bytes_sent"), 2048);
	error_clear(&o.err);
}

static void test_cancel_sends_abort_at_a_block_boundary(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK};
	struct outcome o = {.cancel_at_bytes = 2048};
	run(&p, &o, sizeof(image));
	assert_int_equal(o.err.code, ERR_CANCELLED);
	assert_int_equal(dint(&o.err, "bytes_sent"), 2048);
	assert_int_equal(p.received_len, 2048);
	error_clear(&o.err);
}

static void test_claim_code_prompt_is_recovered(void **state)
{
	(void)state;
	struct peer p = {.verdict = V_OK, .claim_first = true};
	struct outcome o = {0};
	run(&p, &o, 1500);
	assert_true(o.ok);
	assert_memory_equal(p.received, image, 1500);
}

static void test_validation_text_parser(void **state)
{
	(void)state;
	long code;
	bool mask;
	assert_true(ymodem_parse_validation("Validation failed: 0x2", &code, &mask));
	assert_true(mask);
	assert_int_equal(code, 2);
	assert_int_equal(ymodem_validation_cause(code, mask, NULL), ERR_IMAGE_CORRUPT);
	assert_true(ymodem_parse_validation("x\r\nValidation failed: -1300\r\n", &code, &mask));
	assert_false(mask);
	assert_int_equal(ymodem_validation_cause(code, mask, NULL), ERR_WRONG_SLOT);
	assert_int_equal(ymodem_validation_cause(-1330, false, NULL), ERR_IMAGE_CORRUPT);
	assert_false(ymodem_parse_validation("Validation failed: ", &code, &mask));
}

/* 1.5.x prints raw masks: with PLATFORM among the bits the platform is the cause. */
static void test_multi_bit_mask_with_platform_is_wrong_platform(void **state)
{
	(void)state;
	const char *name = NULL;
	/* the Electron app on a Photon 1.5.2: range + platform */
	assert_int_equal(ymodem_validation_cause(0x18, true, &name), ERR_WRONG_PLATFORM);
	assert_string_equal(name, "platform");
	assert_int_equal(ymodem_validation_cause(0x1c, true, NULL), ERR_WRONG_PLATFORM);
	assert_int_equal(ymodem_validation_cause(0x50, true, NULL), ERR_WRONG_PLATFORM);
	/* integrity still comes first: a damaged prefix makes the other bits moot */
	assert_int_equal(ymodem_validation_cause(0x12, true, NULL), ERR_IMAGE_CORRUPT);
	/* without PLATFORM the 2.0+ order holds */
	assert_int_equal(ymodem_validation_cause(0x0c, true, NULL), ERR_DEPENDENCY_UNMET);
	assert_int_equal(ymodem_validation_cause(0x08, true, NULL), ERR_WRONG_SLOT);
	assert_int_equal(ymodem_validation_cause(0x20, true, NULL), ERR_DEVICE_REJECTED);
	/* the 2.0+ codes are the device's own decision and stay as they are */
	assert_int_equal(ymodem_validation_cause(-1300, false, NULL), ERR_WRONG_SLOT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc16_matches_the_xmodem_check_value),
	    cmocka_unit_test(
		test_successful_transfer_delivers_every_byte_and_reads_the_success_text),
	    cmocka_unit_test(test_mask_verdict_of_1_5_x_decodes_to_wrong_platform),
	    cmocka_unit_test(test_negative_code_of_2_x_decodes_to_its_cause),
	    cmocka_unit_test(test_header_refusal_reports_every_possible_cause),
	    cmocka_unit_test(test_device_os_6_prompt_is_not_flashable_here),
	    cmocka_unit_test(test_lost_ack_then_duplicate_nak_moves_on),
	    cmocka_unit_test(test_device_text_that_is_not_ascii_still_makes_a_json_error),
	    cmocka_unit_test(test_nak_storm_fails_with_block_number),
	    cmocka_unit_test(test_silence_times_out_in_the_data_phase),
	    cmocka_unit_test(test_unplug_is_device_gone_with_block_and_bytes),
	    cmocka_unit_test(test_cancel_sends_abort_at_a_block_boundary),
	    cmocka_unit_test(test_claim_code_prompt_is_recovered),
	    cmocka_unit_test(test_validation_text_parser),
	    cmocka_unit_test(test_multi_bit_mask_with_platform_is_wrong_platform),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
