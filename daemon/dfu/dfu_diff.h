/*
 * Re-flashing only what differs (issue 18): before erasing a module's range,
 * read it back with DFU UPLOAD, compare it erase unit by erase unit (the
 * sectors or pages of the DfuSe memory map, memmap.h) with the image, then
 * erase and write only the units that differ.  dfu-util writes everything.
 *
 * Reading costs bus time too, so it runs only where the cost model
 * (dfu_diff_pays()) says it can pay, and stops early: a unit is read only up
 * to its first differing 4 KiB block, and the reading stops altogether once
 * the units read so far show too few identical ones to win back what the rest
 * of the reading would cost (the rest is then written without reading).
 *
 * One object per DFU write; the caller forwards the dfuse progress callback
 * (dfu_diff_on_progress()) and hears of phases, progress and the end through
 * struct dfu_diff_cb.  The units that differ are erased in ascending order,
 * then written in ascending order, so the module's last unit (its suffix and
 * CRC) is written last: a job stopped half-way never leaves a module whose
 * end says it is whole.
 */
#pragma once

#include "device_facts.h"
#include "dfu_preflight.h"
#include "dfuse.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DFU_DIFF_MAX_UNITS 4096 /* 16 MiB of 4 KiB pages */

/*
 * Whether reading back w's range before writing it can pay on this device: the
 * alt's map says the range is readable, the device is not protected, the same
 * module in the same version is installed there (an erased slot or another
 * version differs almost everywhere), and by the
 * cost model reading a unit costs at most a quarter of erasing and writing it.
 * why (may be NULL) gets the reason when it does not.
 */
bool dfu_diff_pays(const struct platform *p, const struct dfuse_info *info,
		   const struct device_facts *facts, const struct dfu_write *w, char *why,
		   size_t size);

enum dfu_diff_phase {
	DFU_DIFF_READING, /* UPLOAD of the range, compared as it arrives */
	DFU_DIFF_ERASING, /* the differing units */
	DFU_DIFF_WRITING, /* the image's bytes of the differing units */
};

struct dfu_diff_cb {
	void (*phase)(void *ctx, enum dfu_diff_phase phase);
	/* bytes done/total of the current phase (read, erased or written) */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	/* exactly once, from a dfuse completion; err is set when result < 0 */
	void (*done)(void *ctx, int result, struct error *err);
};

struct dfu_diff;

/* Fails (err) when the range's erase units cannot be listed or memory runs out. */
struct dfu_diff *dfu_diff_new(struct dfuse *s, const struct platform *p, const struct dfu_write *w,
			      const struct dfu_diff_cb *cb, void *ctx, struct error *err);
void dfu_diff_free(struct dfu_diff *d);
/* Starts reading; then everything goes through the callbacks. */
WARN_UNUSED_RESULT int dfu_diff_start(struct dfu_diff *d, struct error *err);
/* The dfuse progress callback of the operation in flight, passed on. */
void dfu_diff_on_progress(struct dfu_diff *d, size_t done, size_t total);

struct dfu_diff_stats {
	unsigned units;	    /* erase units of the range */
	unsigned differing; /* units erased and written (read and different, or not read) */
	unsigned unread;    /* units written without reading (the reading stopped early) */
	uint64_t bytes_read, bytes_erased, bytes_written;
	bool read_failed; /* an UPLOAD failed: what was not decided was written */
};
void dfu_diff_stats(const struct dfu_diff *d, struct dfu_diff_stats *st);
/* "12 of 160 pages differ; wrote 48 KiB (read back 640 KiB, erased 48 KiB)". */
void dfu_diff_summary(const struct dfu_diff *d, char *buf, size_t size);

/* Where an unfinished diff stands, for transport.h's job_partial. */
struct dfu_diff_position {
	enum dfu_diff_phase phase;
	bool touched;		/* something was erased: the module is no longer whole */
	uint32_t address;	/* the first address not erased (ERASING) or written (WRITING) */
	uint64_t bytes_written; /* of the image's bytes */
	int chunk;		/* WRITING: chunks of the current download, else -1 */
};
void dfu_diff_position(const struct dfu_diff *d, struct dfu_diff_position *pos);
