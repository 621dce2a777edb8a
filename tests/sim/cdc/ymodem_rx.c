/*
 * The device's YMODEM receiver and the update wrapper around it
 * (docs/device/ymodem.md; Device OS system/src/system_ymodem.cpp:
 * receive_packet, handle_packet, receive_file, Ymodem_Serial_Flash_Update;
 * system/src/system_update.cpp: system_fileTransfer).  Read from v0.5.0,
 * v0.6.4, v1.5.2, v2.3.1 and v5.9.0; the receiver itself is identical in all
 * of them, the eras differ in the end-of-batch handling and the texts.
 *
 * Byte-driven rewrite of the blocking original: every receive_byte() with its
 * 5 s wait becomes "one byte in" or "deadline passed".
 */
#include "listening_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t byte_deadline(const struct listening *l, uint64_t now_ms)
{
	/* receive_byte(): while (now - start <= timeout) → gives up 1 ms later. */
	return now_ms + listening_scaled(l, YM_NAK_TIMEOUT_MS) + 1;
}

static void send_byte(struct listening *l, uint8_t c)
{
	listening_send(l, &c, 1);
}

static void send_ca_ca(struct listening *l)
{
	static const uint8_t ca2[2] = {YM_CA, YM_CA};
	listening_send(l, ca2, sizeof(ca2));
}

static bool is_gen2(const struct listening *l)
{
	return l->cfg.platform_id == 6 || l->cfg.platform_id == 8 || l->cfg.platform_id == 10;
}

/* ---- faults at a point of the transfer --------------------------------- */

static uint64_t fault_byte_point(const struct listening *l, const struct listening_fault *f)
{
	if (f->unit == LISTENING_AT_PERCENT)
		return (uint64_t)l->ym.file_length * f->at / 100;
	return f->at;
}

/* Unplug / reset as a data byte arrives: `data_count` data bytes so far. */
static bool fault_at_data_byte(struct listening *l, uint64_t data_count)
{
	for (size_t i = 0; i < l->n_faults; i++) {
		struct fault_slot *fs = &l->faults[i];
		if (fs->fired || fs->f.unit == LISTENING_AT_BLOCK)
			continue;
		if (fs->f.kind != LISTENING_FAULT_UNPLUG && fs->f.kind != LISTENING_FAULT_RESET)
			continue;
		if (data_count <= fault_byte_point(l, &fs->f))
			continue;
		fs->fired = true;
		listening_do_reset(l, fs->f.kind == LISTENING_FAULT_UNPLUG
					  ? LISTENING_RESET_UNPLUG
					  : LISTENING_RESET_FIRMWARE);
		return true;
	}
	return false;
}

/* Unplug / reset as the first byte of block `block` arrives. */
static bool fault_at_block_start(struct listening *l, uint32_t block)
{
	for (size_t i = 0; i < l->n_faults; i++) {
		struct fault_slot *fs = &l->faults[i];
		if (fs->fired || fs->f.unit != LISTENING_AT_BLOCK || fs->f.at != block)
			continue;
		if (fs->f.kind != LISTENING_FAULT_UNPLUG && fs->f.kind != LISTENING_FAULT_RESET)
			continue;
		fs->fired = true;
		listening_do_reset(l, fs->f.kind == LISTENING_FAULT_UNPLUG
					  ? LISTENING_RESET_UNPLUG
					  : LISTENING_RESET_FIRMWARE);
		return true;
	}
	return false;
}

/* Cancel / NAK storm / silence decided when data block `block` is complete. */
static struct fault_slot *fault_at_block_end(struct listening *l, enum listening_fault_kind kind,
					     uint32_t block, uint32_t start, uint32_t end)
{
	for (size_t i = 0; i < l->n_faults; i++) {
		struct fault_slot *fs = &l->faults[i];
		if (fs->f.kind != kind)
			continue;
		/* A NAK storm stays on once it started (fired marks "running"). */
		if (fs->fired && kind != LISTENING_FAULT_NAK_STORM)
			continue;
		bool hit;
		if (fs->f.unit == LISTENING_AT_BLOCK)
			hit = kind == LISTENING_FAULT_NAK_STORM ? block >= fs->f.at
								: block == fs->f.at;
		else
			hit = fault_byte_point(l, &fs->f) < end ||
			      (kind == LISTENING_FAULT_NAK_STORM &&
			       fault_byte_point(l, &fs->f) < start);
		if (fs->f.at == UINT32_MAX)
			hit = false; /* storm ended by a reset */
		if (hit) {
			fs->fired = true;
			return fs;
		}
	}
	return NULL;
}

/*
 * Answers an accepted block once the device's flash work for it is done:
 * receive_file() calls the flash code (erase at the header, write per data
 * block) between reading the block and sending the reply, and reads nothing
 * meanwhile, so bytes that arrive are held until then.
 */
static void reply_after_work(struct listening *l, const uint8_t *reply, size_t n, uint64_t now_ms)
{
	uint64_t ms = l->ops.ota_work_ms ? l->ops.ota_work_ms(l->ops.ctx) : 0;
	l->ym.st = YR_WAIT_FIRST;
	if (!ms) {
		listening_send(l, reply, n);
		l->ym.deadline = byte_deadline(l, now_ms);
		return;
	}
	memcpy(l->busy_reply, reply, n);
	l->busy_reply_len = n;
	listening_start_busy(l, BUSY_YMODEM_REPLY, now_ms, ms);
}

void ymodem_rx_resume(struct listening *l, uint64_t now_ms)
{
	l->sub = CONSOLE_YMODEM;
	listening_send(l, l->busy_reply, l->busy_reply_len);
	l->busy_reply_len = 0;
	l->ym.st = YR_WAIT_FIRST;
	l->ym.deadline = byte_deadline(l, now_ms);
}

/* ---- the wrapper: Ymodem_Serial_Flash_Update + system_fileTransfer ----- */

static void finish(struct listening *l, int32_t size, uint64_t now_ms)
{
	enum listening_era era = l->cfg.era;
	l->sub = CONSOLE_IDLE;

	if (era == LISTENING_ERA_0_4) {
		/* v0.5.0: the empty header was ACKed already; success is printed
		 * unconditionally, the update finished after the 1 s delay. */
		if (size > 0) {
			listening_printf(
			    l,
			    "\r\nDownloaded file successfully!\r\nName: %s\r\nSize: %d bytes\r\n",
			    l->ym.file_name, (int)size);
			if (l->ops.ota_finish) {
				unsigned mask = 0;
				(void)l->ops.ota_finish(l->ops.ctx, &mask);
			}
			listening_start_busy(l, BUSY_SUCCESS_RESTART, now_ms,
					     LISTENING_SUCCESS_DELAY_MS);
			return;
		}
		if (size == -1)
			listening_print(
			    l, "The file size is higher than the allowed space memory!\r\n");
		else if (size == -2)
			listening_print(l, "Verification failed!\r\n");
		else if (size == -3)
			listening_print(l, "Aborted by user.\r\n");
		else
			listening_print(l, "Failed to receive the file!\r\n");
		return;
	}

	if (size > 0) {
		unsigned mask = 0;
		int r = l->ops.ota_finish ? l->ops.ota_finish(l->ops.ctx, &mask) : 0;
		bool ok = era == LISTENING_ERA_0_6 ? (r == 0 && mask == 0) : r >= 0;
		if (ok) {
			/* "Respond to EOT with ACK", then the text; 1 s; restart line
			 * (docs/device/ymodem.md#end-of-transfer). */
			send_byte(l, YM_ACK);
			listening_printf(
			    l,
			    "\r\nDownloaded file successfully!\r\nName: %s\r\nSize: %d bytes\r\n",
			    l->ym.file_name, (int)size);
			listening_start_busy(l, BUSY_SUCCESS_RESTART, now_ms,
					     LISTENING_SUCCESS_DELAY_MS);
			return;
		}
		send_ca_ca(l);
		if (era == LISTENING_ERA_0_6)
			listening_printf(l, "Validation failed: 0x%x\r\n", mask);
		else
			listening_printf(l, "Validation failed: %d\r\n", r);
		/* Spark_Finish_Firmware_Update() scheduled the reset either way
		 * (docs/device/ymodem.md#end-of-transfer). */
		listening_start_busy(l, BUSY_RESET, now_ms, LISTENING_RESET_DELAY_MS);
		return;
	}

	send_ca_ca(l);
	if (size == -1)
		listening_print(l, "The file size is higher than the allowed space memory!\r\n");
	else if (size == -2)
		listening_print(l, "Failed to save chunk!\r\n");
	else if (size == -3)
		listening_print(l, "Aborted by user.\r\n");
	else
		listening_print(l, "Failed to receive the file!\r\n");

	/* docs/device/ymodem.md#cancellation INFERRED: on 3.0-5.x nobody finishes or cancels the
	 * update that
	 * startUpdate() began, so the next header is refused until a reset.  Gen 2
	 * on 3.x resets after 300 s of update inactivity. */
	if (era == LISTENING_ERA_3 && l->ym.header_accepted) {
		l->update_stuck = true;
		if (is_gen2(l))
			l->stuck_deadline =
			    now_ms + listening_scaled(l, LISTENING_GEN2_UPDATE_TIMEOUT_MS);
	}
}

/* ---- receive_file ------------------------------------------------------ */

void ymodem_rx_start(struct listening *l, uint64_t now_ms)
{
	bool stuck_kept = l->update_stuck;
	memset(&l->ym, 0, sizeof(l->ym));
	l->update_stuck = stuck_kept;
	l->sub = CONSOLE_YMODEM;
	l->ym.st = YR_WAIT_FIRST;
	l->ym.deadline = byte_deadline(l, now_ms);
}

/* receive_packet() returned -1 (timeout, garbage, bad seq/complement). */
static void packet_error(struct listening *l, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	ym->errors++;
	send_byte(l, YM_CRC16);
	if (ym->errors > YM_MAX_ERRORS) {
		send_ca_ca(l);
		finish(l, 0, now_ms);
		return;
	}
	ym->st = YR_WAIT_FIRST;
	ym->deadline = byte_deadline(l, now_ms);
}

/* parse_file_packet(): name up to NUL (max 256), size up to ' ' (max 16), strtoul. */
static void parse_header(struct ymodem_rx *ym)
{
	const uint8_t *p = ym->pkt + YM_PACKET_HEADER;
	const uint8_t *end = ym->pkt + ym->need;
	size_t i = 0;
	while (p < end && *p && i < YM_FILE_NAME_LENGTH)
		ym->file_name[i++] = (char)*p++;
	ym->file_name[i] = '\0';
	p++;
	char size[YM_FILE_SIZE_LENGTH + 1];
	i = 0;
	while (p < end && *p != ' ' && i < YM_FILE_SIZE_LENGTH)
		size[i++] = (char)*p++;
	size[i] = '\0';
	ym->file_length = (uint32_t)strtoul(size, NULL, 10);
}

static void handle_header(struct listening *l, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	if (ym->pkt[YM_PACKET_HEADER] == 0) {
		/* Empty header: end of batch.  0.4-era ACKs at once; since 0.6.1 the
		 * reply waits for validation (docs/device/ymodem.md#end-of-transfer). */
		if (l->cfg.era == LISTENING_ERA_0_4)
			send_byte(l, YM_ACK);
		ym->session_done = true;
		finish(l, (int32_t)ym->file_length, now_ms);
		return;
	}
	parse_header(ym);
	int r = 0;
	if (l->update_stuck)
		r = -1; /* FirmwareUpdate::startUpdate(): SYSTEM_ERROR_INVALID_STATE */
	else if (l->ops.ota_begin)
		r = l->ops.ota_begin(l->ops.ctx, ym->file_length);
	if (r != 0) {
		send_ca_ca(l);
		finish(l, -1, now_ms);
		return;
	}
	ym->header_accepted = true;
	ym->chunk_offset = 0;
	ym->packets_received++;
	static const uint8_t ack_c[2] = {YM_ACK, YM_CRC16};
	reply_after_work(l, ack_c, sizeof(ack_c), now_ms);
}

static void handle_data(struct listening *l, size_t size, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	uint32_t block = ym->packets_received;
	uint32_t start = ym->chunk_offset, end = start + (uint32_t)size;

	if (fault_at_block_end(l, LISTENING_FAULT_SILENT, block, start, end)) {
		l->sub = CONSOLE_HUNG;
		return;
	}
	if (fault_at_block_end(l, LISTENING_FAULT_NAK_STORM, block, start, end)) {
		send_byte(l, YM_NAK);
		ym->st = YR_WAIT_FIRST;
		ym->deadline = byte_deadline(l, now_ms);
		return;
	}
	/* The device's only way to cancel mid-transfer is a failed chunk write
	 * (docs/device/ymodem.md#what-is-checked-when). */
	int w = fault_at_block_end(l, LISTENING_FAULT_CANCEL, block, start, end) ? -1 : 0;
	if (w == 0 && l->ops.ota_write)
		w = l->ops.ota_write(l->ops.ctx, start, ym->pkt + YM_PACKET_HEADER, size);
	if (w != 0) {
		send_ca_ca(l);
		finish(l, -2, now_ms);
		return;
	}
	ym->chunk_offset = end;
	l->ymodem_bytes += size;
	ym->packets_received++;
	static const uint8_t ack = YM_ACK;
	reply_after_work(l, &ack, 1, now_ms);
}

static void packet_complete(struct listening *l, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	unsigned seq = ym->pkt[1], compl = ym->pkt[2];
	if (seq != (compl ^0xffu)) {
		packet_error(l, now_ms);
		return;
	}
	ym->errors = 0;
	/* Wrong sequence, duplicates included: NAK (docs/device/ymodem.md#block-reception,
	 * non-standard). */
	if (seq != (ym->packets_received & 0xffu)) {
		send_byte(l, YM_NAK);
		ym->st = YR_WAIT_FIRST;
		ym->deadline = byte_deadline(l, now_ms);
		return;
	}
	if (ym->packets_received == 0)
		handle_header(l, now_ms);
	else
		handle_data(l, ym->need - YM_PACKET_OVERHEAD, now_ms);
}

static void first_byte(struct listening *l, uint8_t c, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	switch (c) {
	case YM_SOH:
	case YM_STX:
		if (fault_at_block_start(l, ym->packets_received))
			return;
		ym->pkt[0] = c;
		ym->have = 1;
		ym->need = (c == YM_SOH ? YM_PACKET_SIZE : YM_PACKET_1K_SIZE) + YM_PACKET_OVERHEAD;
		ym->st = YR_IN_PACKET;
		ym->deadline = byte_deadline(l, now_ms);
		return;
	case YM_EOT:
		/* End of file: immediate ACK, then wait for the next header without 'C'. */
		ym->errors = 0;
		send_byte(l, YM_ACK);
		ym->packets_received = 0;
		ym->st = YR_WAIT_FIRST;
		ym->deadline = byte_deadline(l, now_ms);
		return;
	case YM_CA:
		ym->st = YR_WAIT_CA2;
		ym->deadline = byte_deadline(l, now_ms);
		return;
	case 'A':
	case 'a':
		send_ca_ca(l);
		finish(l, -3, now_ms);
		return;
	case ' ':
		send_byte(l, YM_ACK);
		ym->deadline = byte_deadline(l, now_ms);
		return;
	default:
		packet_error(l, now_ms);
		return;
	}
}

void ymodem_rx_byte(struct listening *l, uint8_t c, uint64_t now_ms)
{
	struct ymodem_rx *ym = &l->ym;
	switch (ym->st) {
	case YR_WAIT_FIRST:
		first_byte(l, c, now_ms);
		return;
	case YR_IN_PACKET:
		ym->pkt[ym->have++] = c;
		if (ym->packets_received > 0 && ym->have > YM_PACKET_HEADER &&
		    ym->have <= ym->need - 2 &&
		    fault_at_data_byte(l,
				       (uint64_t)ym->chunk_offset + (ym->have - YM_PACKET_HEADER)))
			return;
		if (ym->have == ym->need) {
			packet_complete(l, now_ms);
			return;
		}
		ym->deadline = byte_deadline(l, now_ms);
		return;
	case YR_WAIT_CA2:
		if (c == YM_CA) {
			/* Aborted by the sender: ACK, give up (result 0). */
			ym->errors = 0;
			send_byte(l, YM_ACK);
			finish(l, 0, now_ms);
			return;
		}
		packet_error(l, now_ms);
		return;
	}
}

void ymodem_rx_timeout(struct listening *l, uint64_t now_ms)
{
	packet_error(l, now_ms);
}
