#include "dfu_diff.h"

#include "flash_cost.h"
#include "platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The cost model:
 *  - bus: USB full speed moves at most 19 packets of 64 bytes per 1 ms frame (USB 2.0
 *    table 5-9), so a 4 KiB UPLOAD or DNLOAD takes about 3.5 ms on the bus, both ways;
 *    READ_4K_US adds the requests around it (SET_ADDRESS, ABORT) for 4 ms;
 *  - erase and program: the datasheet figures of daemon/flash_cost.c (the module's
 *    own slot: STM32F205 sectors of 16 KiB to 128 KiB, 250 ms to 1 s; nRF52840 85 ms
 *    per 4 KiB page; the P2's SPI NOR 45 ms per 4 KiB sector; programming 4 KiB
 *    16.4 ms, 42 ms and 6.4 ms).
 * Rewriting a unit costs its erase, its programming and its bus time; reading it costs
 * READ_4K_US per 4 KiB.  The ratio read/rewrite is 8 % on Gen 2 (128 KiB sectors),
 * 3 % on Gen 3 and 7 % on the P2.
 *
 * When to read (dfu_diff_pays()): only over the same module in the same version (the
 * case where most units can match), and only when reading a unit costs at most a
 * quarter of rewriting it (MAX_READ_SHARE), so that even when every unit differs and
 * the reading is not cut short the job takes at most 1.25 times as long.
 *
 * When to stop reading (after every block): with k units decided, s of them identical,
 * reading on pays while the share of identical units expected ahead, s/k, saves more
 * than the reading costs: s/k * rewrite > read.  With a margin of two, and not before
 * PROBE_UNITS units are decided, the reading stops once s/k < 2 * read/rewrite, and the
 * undecided units are written without reading.  A unit that differs is read only up to
 * its first differing 4 KiB block (a 128 KiB Gen 2 sector that differs at its start
 * costs one block).
 */
#define READ_4K_US     4000u
#define BUS_4K_US      3500u
#define MAX_READ_SHARE 4 /* read at most 1/4 of the rewrite */
#define PROBE_UNITS    8

static uint64_t rewrite_us(const struct platform *p, uint32_t size)
{
	enum flash_kind k = flash_kind_of(p, false);
	uint64_t blocks = (size + 4095) / 4096;
	return flash_erase_us(k, size) + blocks * (flash_program_us(k, 4096) + BUS_4K_US);
}

static uint64_t read_us(uint32_t size)
{
	return (uint64_t)(size + 4095) / 4096 * READ_4K_US;
}

static bool known_mcu(const struct platform *p)
{
	return p && (p->mcu == MCU_STM32F205 || p->mcu == MCU_NRF52840 || p->mcu == MCU_RTL8721D);
}

bool dfu_diff_pays(const struct platform *p, const struct dfuse_info *info,
		   const struct device_facts *facts, const struct dfu_write *w, char *why,
		   size_t size)
{
	char dummy[8];
	if (!why) {
		why = dummy;
		size = sizeof(dummy);
	}
	why[0] = '\0';
	if (w->erase_only || w->len == 0 || w->len > UINT32_MAX) {
		snprintf(why, size, "nothing to compare");
		return false;
	}
	if (!known_mcu(p)) {
		snprintf(why, size, "no cost model for this device");
		return false;
	}
	if (!info || w->alt >= DFUSE_MAX_ALTS || !info->map_valid[w->alt] ||
	    info->protected_device) {
		snprintf(why, size, "the device cannot be read back");
		return false;
	}
	const struct dfuse_map *map = &info->maps[w->alt];
	if (!dfuse_map_range_has(map, w->address, (uint32_t)w->len, DFUSE_MEM_READABLE, NULL)) {
		snprintf(why, size, "the memory map does not let the range be read");
		return false;
	}
	/* The predictor: the same module in the same version where it goes (a re-flash, a
	 * rebuild, a few patched bytes).  Another version of it has its code moved almost
	 * everywhere, and an erased slot differs everywhere: reading would not pay. */
	bool installed = false, same = false;
	uint64_t end = (uint64_t)w->address + w->len;
	for (unsigned i = 0; facts && i < facts->n_modules && i < DEVICE_FACTS_MAX_MODULES; i++) {
		const struct installed_module *m = &facts->modules[i];
		if (!m->address || !m->slot_size || m->address >= end ||
		    (uint64_t)m->address + m->slot_size <= w->address)
			continue;
		installed = true;
		same |= m->address == w->address && m->function == w->function &&
			m->index == w->index && m->version == w->version;
	}
	if (!installed || !same) {
		snprintf(why, size, "%s",
			 installed ? "another module or version is installed there"
				   : "nothing is installed there to compare with");
		return false;
	}
	/* the first unit stands for the rest (a map's units in one range are alike) */
	const struct dfuse_segment *seg = dfuse_map_find(map, w->address);
	if (!seg) {
		snprintf(why, size, "the range is outside the memory map");
		return false;
	}
	if (read_us(seg->sector_size) * MAX_READ_SHARE > rewrite_us(p, seg->sector_size)) {
		snprintf(why, size,
			 "reading a unit back costs more than a quarter of rewriting it");
		return false;
	}
	return true;
}

/* ---- the diff --------------------------------------------------------------------- */

enum unit_state {
	UNIT_UNDECIDED,
	UNIT_SAME,
	UNIT_DIFFERS, /* read and different, or written without reading */
};

struct unit {
	uint32_t address, size; /* the erase unit */
	uint32_t from, to;	/* the part of the write inside it */
	uint32_t read_to;	/* bytes of [from, to) read so far end here */
	enum unit_state state;
	bool unread; /* written without reading */
};

struct dfu_diff {
	struct dfuse *s;
	const struct platform *platform;
	struct dfu_write w;
	struct dfu_diff_cb cb;
	void *ctx;
	struct unit *units;
	unsigned n_units;
	uint8_t *buf; /* the read-back, indexed like w.data */
	enum dfu_diff_phase phase;
	/* reading */
	uint32_t op_start; /* address of the current upload */
	unsigned decided, same;
	bool stop_reading, read_failed;
	uint64_t bytes_read;
	/* erasing/writing: the run in flight */
	unsigned run_first, run_end; /* units [run_first, run_end) */
	uint64_t phase_done0, phase_total;
	uint64_t erased, written;
	size_t op_done; /* dfuse progress of the op in flight */
	bool touched;
	bool running;
};

static uint64_t unit_rewrite_us(const struct dfu_diff *d, const struct unit *u)
{
	return rewrite_us(d->platform, u->size);
}

struct dfu_diff *dfu_diff_new(struct dfuse *s, const struct platform *p, const struct dfu_write *w,
			      const struct dfu_diff_cb *cb, void *ctx, struct error *err)
{
	const struct dfuse_info *info = dfuse_get_info(s);
	struct dfu_diff *d = calloc(1, sizeof(*d));
	struct dfuse_erase_unit *eu = calloc(DFU_DIFF_MAX_UNITS, sizeof(*eu));
	if (!d || !eu || w->len > UINT32_MAX) {
		free(d);
		free(eu);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	int n = dfuse_map_erase_units(&info->maps[w->alt], w->address, (uint32_t)w->len, eu,
				      DFU_DIFF_MAX_UNITS, err);
	if (n <= 0) {
		free(eu);
		free(d);
		if (n == 0)
			error_set(err, ERR_INTERNAL, "no erase unit covers 0x%08x", w->address);
		return NULL;
	}
	d->units = calloc((size_t)n, sizeof(*d->units));
	d->buf = malloc(w->len);
	if (!d->units || !d->buf) {
		free(eu);
		dfu_diff_free(d);
		error_set(err, ERR_OUT_OF_MEMORY, NULL);
		return NULL;
	}
	uint64_t end = (uint64_t)w->address + w->len;
	for (int i = 0; i < n; i++) {
		struct unit *u = &d->units[i];
		u->address = eu[i].address;
		u->size = eu[i].size;
		u->from = eu[i].address > w->address ? eu[i].address : w->address;
		uint64_t uend = (uint64_t)eu[i].address + eu[i].size;
		u->to = (uint32_t)(uend < end ? uend : end);
		u->read_to = u->from;
	}
	free(eu);
	d->n_units = (unsigned)n;
	d->s = s;
	d->platform = p;
	d->w = *w;
	d->cb = *cb;
	d->ctx = ctx;
	return d;
}

void dfu_diff_free(struct dfu_diff *d)
{
	if (!d)
		return;
	free(d->units);
	free(d->buf);
	free(d);
}

static void op_done(struct dfuse *s, int result, struct error *err, void *userdata);

static void set_phase(struct dfu_diff *d, enum dfu_diff_phase ph, uint64_t total)
{
	d->phase = ph;
	d->phase_done0 = 0;
	d->phase_total = total;
	d->op_done = 0;
	if (d->cb.phase)
		d->cb.phase(d->ctx, ph);
	if (d->cb.progress)
		d->cb.progress(d->ctx, 0, total);
}

static void decide(struct dfu_diff *d, struct unit *u, enum unit_state st)
{
	if (u->state != UNIT_UNDECIDED)
		return;
	u->state = st;
	d->decided++;
	if (st == UNIT_SAME)
		d->same++;
}

/* The reading stops when the units decided so far promise too little (see the model). */
static void check_worth(struct dfu_diff *d)
{
	if (d->stop_reading || d->decided < PROBE_UNITS || d->decided >= d->n_units)
		return;
	const struct unit *u = &d->units[0];
	/* same/decided < 2 * read/rewrite */
	if ((uint64_t)d->same * unit_rewrite_us(d, u) < (uint64_t)2 * d->decided * read_us(u->size))
		d->stop_reading = true;
}

/* Bytes [offset, offset + n) of the current upload arrived: compare them. */
static bool more(void *userdata, size_t offset, size_t n)
{
	struct dfu_diff *d = userdata;
	uint32_t a = d->op_start + (uint32_t)offset, e = a + (uint32_t)n;
	d->bytes_read += n;
	if (d->cb.progress)
		d->cb.progress(d->ctx, d->bytes_read, d->phase_total);
	struct unit *last = NULL;
	for (unsigned i = 0; i < d->n_units; i++) {
		struct unit *u = &d->units[i];
		uint32_t from = a > u->from ? a : u->from, to = e < u->to ? e : u->to;
		if (from >= to)
			continue;
		last = u;
		size_t k = from - d->w.address;
		if (u->state == UNIT_UNDECIDED && memcmp(d->buf + k, d->w.data + k, to - from) != 0)
			decide(d, u, UNIT_DIFFERS);
		if (to > u->read_to)
			u->read_to = to;
		if (u->read_to >= u->to)
			decide(d, u, UNIT_SAME);
	}
	check_worth(d);
	if (d->stop_reading)
		return false;
	/* the rest of a unit known to differ need not be read */
	return !(last && last->state == UNIT_DIFFERS && last->read_to < last->to);
}

static unsigned first_undecided(const struct dfu_diff *d)
{
	unsigned i = 0;
	while (i < d->n_units && d->units[i].state != UNIT_UNDECIDED)
		i++;
	return i;
}

static int next_run(struct dfu_diff *d, unsigned from)
{
	unsigned i = from;
	while (i < d->n_units && d->units[i].state != UNIT_DIFFERS)
		i++;
	if (i >= d->n_units)
		return -1;
	unsigned j = i;
	while (j < d->n_units && d->units[j].state == UNIT_DIFFERS)
		j++;
	d->run_first = i;
	d->run_end = j;
	return 0;
}

static void finish(struct dfu_diff *d, int result, struct error *err)
{
	d->running = false;
	d->cb.done(d->ctx, result, err);
}

/* Starts the next operation of the current phase, or the next phase. */
static void advance(struct dfu_diff *d)
{
	struct error err;
	error_init(&err);
	int rc = 0;
	if (d->phase == DFU_DIFF_READING) {
		unsigned i = first_undecided(d);
		if (i < d->n_units && !d->stop_reading && !d->read_failed) {
			struct unit *u = &d->units[i];
			d->op_start = u->read_to;
			size_t off = d->op_start - d->w.address;
			rc = dfuse_upload_until(d->s, d->w.alt, d->op_start, d->buf + off,
						d->w.len - off, more, op_done, d, &err);
			goto started;
		}
		/* what was not read is written */
		uint64_t total = 0;
		for (unsigned k = 0; k < d->n_units; k++) {
			struct unit *u = &d->units[k];
			if (u->state == UNIT_UNDECIDED) {
				u->unread = true;
				decide(d, u, UNIT_DIFFERS);
			}
			if (u->state == UNIT_DIFFERS)
				total += u->size;
		}
		d->run_end = 0;
		set_phase(d, DFU_DIFF_ERASING, total);
	}
	if (d->phase == DFU_DIFF_ERASING) {
		if (next_run(d, d->run_end) == 0) {
			const struct unit *f = &d->units[d->run_first],
					  *l = &d->units[d->run_end - 1];
			d->phase_done0 = d->erased;
			d->op_done = 0;
			d->touched = true;
			rc = dfuse_erase(d->s, d->w.alt, f->address,
					 l->address + l->size - f->address, op_done, d, &err);
			goto started;
		}
		uint64_t total = 0;
		for (unsigned k = 0; k < d->n_units; k++)
			if (d->units[k].state == UNIT_DIFFERS)
				total += d->units[k].to - d->units[k].from;
		d->run_end = 0;
		set_phase(d, DFU_DIFF_WRITING, total);
	}
	if (next_run(d, d->run_end) == 0) {
		const struct unit *f = &d->units[d->run_first], *l = &d->units[d->run_end - 1];
		d->phase_done0 = d->written;
		d->op_done = 0;
		rc = dfuse_download(d->s, d->w.alt, f->from, d->w.data + (f->from - d->w.address),
				    l->to - f->from, op_done, d, &err);
		goto started;
	}
	finish(d, 0, NULL);
	return;
started:
	if (rc < 0) {
		finish(d, -1, &err);
		error_clear(&err);
	}
}

static void op_done(struct dfuse *s, int result, struct error *err, void *userdata)
{
	struct dfu_diff *d = userdata;
	if (result < 0) {
		/* A failed read is no reason to fail the job: what was not decided is
		 * written as dfu-util would.  A vanished device or a cancel ends it. */
		if (d->phase == DFU_DIFF_READING && err->code != ERR_DEVICE_GONE &&
		    err->code != ERR_CANCELLED) {
			d->read_failed = true;
			advance(d);
			return;
		}
		finish(d, result, err);
		return;
	}
	switch (d->phase) {
	case DFU_DIFF_READING:
		/* a read that ended short of what was asked: more() said enough */
		(void)dfuse_upload_length(s);
		break;
	case DFU_DIFF_ERASING: {
		const struct unit *f = &d->units[d->run_first], *l = &d->units[d->run_end - 1];
		d->erased += l->address + l->size - f->address;
		break;
	}
	case DFU_DIFF_WRITING: {
		const struct unit *f = &d->units[d->run_first], *l = &d->units[d->run_end - 1];
		d->written += l->to - f->from;
		break;
	}
	}
	advance(d);
}

int dfu_diff_start(struct dfu_diff *d, struct error *err)
{
	(void)err;
	uint64_t total = 0;
	for (unsigned i = 0; i < d->n_units; i++)
		total += d->units[i].to - d->units[i].from;
	d->running = true;
	set_phase(d, DFU_DIFF_READING, total);
	struct unit *u = &d->units[0];
	d->op_start = u->read_to;
	return dfuse_upload_until(d->s, d->w.alt, d->op_start, d->buf, d->w.len, more, op_done, d,
				  err);
}

void dfu_diff_on_progress(struct dfu_diff *d, size_t done, size_t total)
{
	(void)total;
	if (d->phase == DFU_DIFF_READING || !d->cb.progress)
		return;
	d->op_done = done;
	uint64_t base = d->phase == DFU_DIFF_ERASING ? d->erased : d->written;
	d->cb.progress(d->ctx, base + done, d->phase_total);
}

void dfu_diff_stats(const struct dfu_diff *d, struct dfu_diff_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->units = d->n_units;
	for (unsigned i = 0; i < d->n_units; i++) {
		if (d->units[i].state == UNIT_DIFFERS)
			st->differing++;
		if (d->units[i].unread)
			st->unread++;
	}
	st->bytes_read = d->bytes_read;
	st->bytes_erased = d->erased;
	st->bytes_written = d->written;
	st->read_failed = d->read_failed;
}

static void kib(uint64_t bytes, char *buf, size_t size)
{
	if (bytes % 1024 == 0 || bytes >= 100 * 1024)
		snprintf(buf, size, "%llu KiB", (unsigned long long)((bytes + 512) / 1024));
	else
		snprintf(buf, size, "%.1f KiB", bytes / 1024.0);
}

void dfu_diff_summary(const struct dfu_diff *d, char *buf, size_t size)
{
	struct dfu_diff_stats st;
	dfu_diff_stats(d, &st);
	const char *unit = d->platform && d->platform->mcu == MCU_STM32F205 ? "sectors" : "pages";
	char wrote[24], read[24], erased[24];
	kib(st.bytes_written, wrote, sizeof(wrote));
	kib(st.bytes_read, read, sizeof(read));
	kib(st.bytes_erased, erased, sizeof(erased));
	int n = snprintf(buf, size, "%u of %u %s differ; wrote %s (read back %s, erased %s)",
			 st.differing, st.units, unit, wrote, read, erased);
	if (n > 0 && (size_t)n < size && st.unread)
		snprintf(buf + n, size - (size_t)n, "; %u %s written without reading them: %s",
			 st.unread, unit,
			 st.read_failed ? "the read-back failed"
					: "the ones read first differed, so reading on would not "
					  "pay");
}

void dfu_diff_position(const struct dfu_diff *d, struct dfu_diff_position *pos)
{
	memset(pos, 0, sizeof(*pos));
	pos->phase = d->phase;
	pos->touched = d->touched;
	pos->chunk = -1;
	pos->bytes_written = d->written;
	if (d->phase == DFU_DIFF_READING || !d->touched)
		return;
	struct dfuse_position p;
	dfuse_position(d->s, &p);
	if (d->phase == DFU_DIFF_ERASING) {
		pos->address = p.valid && p.erasing ? p.address : d->units[d->run_first].address;
		return;
	}
	if (p.valid && !p.erasing) {
		pos->address = p.address;
		pos->bytes_written = d->written + p.done;
		pos->chunk = (int)p.chunk;
	} else {
		pos->address = d->units[d->run_first].from;
	}
}
