#include "progress.h"
#include "render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_LINE_MAX	 512
#define PROGRESS_BAR_WIDTH	 20
#define PROGRESS_DEFAULT_COLUMNS 100

struct pjob {
	char id[64];
	char device[96];
	char state[32];
	char before_end[32]; /* last non-terminal state */
	char transport[16];  /* "serial", "dfu"; "" until a transport takes the job */
	long long done, total, rate;
	double eta_s; /* < 0: unknown */
	double timeout_s;
	double state_t0;
	int quarter;	/* plain mode: last quarter of the bytes printed */
	char step[160]; /* "step 2 of 4: writing system part 1 over DFU" */
	bool ended;
	char end_text[160];
	bool end_ok;
};

struct progress {
	const struct cli_global *g;
	bool live;
	bool cancelling;
	int drawn; /* lines of the live display on screen */
	double t0;
	size_t n;
	struct pjob jobs[PROGRESS_JOBS_MAX];
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *jstr(const json_t *o, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : def;
}

struct progress *progress_new(const struct cli_global *g, bool live)
{
	struct progress *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->g = g;
	p->live = live;
	p->t0 = now_s();
	return p;
}

void progress_free(struct progress *p)
{
	free(p);
}

double progress_elapsed(const struct progress *p)
{
	return now_s() - p->t0;
}

static struct pjob *find(struct progress *p, const char *id)
{
	for (size_t i = 0; id && i < p->n; i++)
		if (strcmp(p->jobs[i].id, id) == 0)
			return &p->jobs[i];
	return NULL;
}

static void set_device(struct pjob *j, const char *key)
{
	snprintf(j->device, sizeof(j->device), "%s", key ? key : "(waiting for a device)");
}

/* The transport in a job record; a handed-to-* note names the next one. */
static void set_transport(struct pjob *j, const char *name)
{
	if (name)
		snprintf(j->transport, sizeof(j->transport), "%s", name);
}

void progress_add_job(struct progress *p, const json_t *job)
{
	if (p->n >= PROGRESS_JOBS_MAX)
		return;
	struct pjob *j = &p->jobs[p->n++];
	memset(j, 0, sizeof(*j));
	snprintf(j->id, sizeof(j->id), "%s", jstr(job, "id", "?"));
	set_device(j, json_string_value(json_object_get(job, "device")));
	set_transport(j, json_string_value(json_object_get(job, "transport")));
	snprintf(j->state, sizeof(j->state), "%s", jstr(job, "state", "queued"));
	j->state_t0 = now_s();
	j->eta_s = -1;
	j->quarter = -1;
}

const char *progress_last_state(const struct progress *p, const char *job_id)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->jobs[i].id, job_id) == 0)
			return p->jobs[i].before_end[0] ? p->jobs[i].before_end : p->jobs[i].state;
	return NULL;
}

/* "3952 B", "48.0 KiB", "1.2 MiB" */
static void human_bytes(char *buf, size_t size, long long n)
{
	if (n < 10 * 1024)
		snprintf(buf, size, "%lld B", n);
	else if (n < 10 * 1024 * 1024)
		snprintf(buf, size, "%.1f KiB", (double)n / 1024.0);
	else
		snprintf(buf, size, "%.1f MiB", (double)n / (1024.0 * 1024.0));
}

/*
 * A phase in words: its label (the live display's column, the end line's
 * "while ...") and the rest of the sentence, which continues the label
 * ("checking" "the files against the device") or, after sep, says what the
 * phase waits for.
 */
struct phase_words {
	const char *label, *sep, *rest;
};

static struct phase_words phase_words(const struct pjob *j)
{
	static const struct {
		const char *state;
		struct phase_words w;
	} table[] = {
	    {"queued", {"queued", " ", "behind another job on this device"}},
	    {"waiting-for-device", {"waiting", " ", "for the device to appear"}},
	    {"switching-mode", {"switching mode", "", ""}},
	    {"preflight", {"checking", " ", "the files against the device"}},
	    {"erasing", {"erasing", "", ""}},
	    {"writing", {"writing", "", ""}},
	    {"rebooting", {"rebooting", ": ", "waiting for the device to come back"}},
	    {"verifying", {"verifying", "", ""}},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		if (strcmp(table[i].state, j->state) != 0)
			continue;
		struct phase_words w = table[i].w;
		/* the mode the transport needs: listening mode (YMODEM) or DFU */
		if (strcmp(j->state, "switching-mode") == 0 && !strcmp(j->transport, "serial"))
			w.sep = " ", w.rest = "to listening mode";
		else if (strcmp(j->state, "switching-mode") == 0 && !strcmp(j->transport, "dfu"))
			w.sep = " ", w.rest = "to DFU mode";
		return w;
	}
	return (struct phase_words){j->state, "", ""};
}

static const char *phase_label(const struct pjob *j)
{
	return phase_words(j).label;
}

/* Seconds waited in this phase, with the limit when the daemon gave one. */
static void waited(char *buf, size_t size, const struct pjob *j)
{
	double w = now_s() - j->state_t0;
	if (j->timeout_s > 0)
		snprintf(buf, size, "(%.0f/%.0f s)", w, j->timeout_s);
	else
		snprintf(buf, size, "(%.0f s)", w);
}

static void bytes_detail(char *buf, size_t size, const struct pjob *j, bool bar)
{
	char done[32], total[32], rate[32], eta[32] = "";
	int pct = j->total ? (int)(j->done * 100 / j->total) : 0;
	human_bytes(done, sizeof(done), j->done);
	human_bytes(total, sizeof(total), j->total);
	human_bytes(rate, sizeof(rate), j->rate);
	if (j->eta_s >= 0 && j->done < j->total)
		snprintf(eta, sizeof(eta), "  ETA %.0f s", j->eta_s + 0.5);
	char bars[PROGRESS_BAR_WIDTH + 3] = "";
	if (bar) {
		int fill = pct * PROGRESS_BAR_WIDTH / 100;
		bars[0] = '[';
		for (int i = 0; i < PROGRESS_BAR_WIDTH; i++)
			bars[1 + i] = i < fill ? '#' : '.';
		bars[PROGRESS_BAR_WIDTH + 1] = ']';
		bars[PROGRESS_BAR_WIDTH + 2] = '\0';
	}
	snprintf(buf, size, "%s%s%3d%%  %s / %s  %s/s%s", bars, bar ? " " : "", pct, done, total,
		 rate, eta);
}

/* What the job is doing now, after its label: bytes, or the rest of the
 * phase's sentence and the seconds waited. */
static void job_detail(char *buf, size_t size, const struct pjob *j, bool live)
{
	char w[32];
	waited(w, sizeof(w), j);
	struct phase_words pw = phase_words(j);
	if (j->total > 0)
		bytes_detail(buf, size, j, live);
	else
		snprintf(buf, size, "%s%s%s", pw.rest, pw.rest[0] ? " " : "", w);
}

static int columns(void)
{
	struct winsize ws;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
		return ws.ws_col;
	return PROGRESS_DEFAULT_COLUMNS;
}

static void format_line(char *buf, size_t size, const struct pjob *j, bool cancelling, bool live)
{
	char detail[256];
	if (j->ended) {
		snprintf(buf, size, "%-24s %s", j->device, j->end_text);
		return;
	}
	job_detail(detail, sizeof(detail), j, live);
	snprintf(buf, size, "%-24s %-14s %s%s", j->device, phase_label(j), detail,
		 cancelling ? "  -- cancelling at the next safe point" : "");
}

static void redraw(struct progress *p)
{
	if (!p->live)
		return;
	char line[PROGRESS_LINE_MAX];
	int cols = columns();
	if (p->drawn)
		printf("\033[%dA", p->drawn);
	for (size_t i = 0; i < p->n; i++) {
		const struct pjob *j = &p->jobs[i];
		format_line(line, sizeof(line), j, p->cancelling, true);
		/* A wrapped line would break the cursor arithmetic. */
		if ((int)strlen(line) >= cols)
			line[cols - 1] = '\0';
		const char *on = "", *off = "";
		if (!p->g->no_color && j->ended) {
			on = j->end_ok ? "\033[32m" : "\033[31m";
			off = "\033[0m";
		}
		printf("\r\033[2K%s%s%s\n", on, line, off);
	}
	p->drawn = (int)p->n;
	fflush(stdout);
}

void progress_log(struct progress *p, const char *fmt, ...)
{
	va_list ap;
	if (p->live && p->drawn) {
		printf("\033[%dA\033[J", p->drawn);
		p->drawn = 0;
	}
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	redraw(p);
	fflush(stdout);
}

/* Plain mode: one sentence per phase ("checking the files against the device",
 * "rebooting: waiting for the device to come back (up to 45 s)"), without the
 * seconds ticking. */
static void plain(const struct pjob *j)
{
	char detail[256];
	struct phase_words pw = phase_words(j);
	if (j->total > 0) {
		bytes_detail(detail, sizeof(detail), j, false);
		printf("%s: %s %s\n", j->device, pw.label, detail);
	} else {
		char limit[48] = "";
		if (j->timeout_s > 0)
			snprintf(limit, sizeof(limit), " (up to %.0f s)", j->timeout_s);
		printf("%s: %s%s%s%s\n", j->device, pw.label, pw.sep, pw.rest, limit);
	}
	fflush(stdout);
}

static void on_progress(struct progress *p, struct pjob *j, const json_t *ev)
{
	const char *state = jstr(ev, "state", j->state);
	bool new_state = strcmp(state, j->state) != 0;
	const json_t *eta = json_object_get(ev, "eta_s");
	if (new_state) {
		snprintf(j->state, sizeof(j->state), "%s", state);
		j->state_t0 = now_s();
		j->quarter = -1;
	}
	j->done = json_integer_value(json_object_get(ev, "done"));
	j->total = json_integer_value(json_object_get(ev, "total"));
	j->rate = json_integer_value(json_object_get(ev, "rate"));
	j->eta_s = json_is_number(eta) ? json_number_value(eta) : -1;
	j->timeout_s = json_number_value(json_object_get(ev, "timeout_s"));
	if (json_is_integer(json_object_get(ev, "step"))) {
		char step[160];
		snprintf(step, sizeof(step), "step %lld of %lld: %s",
			 json_integer_value(json_object_get(ev, "step")),
			 json_integer_value(json_object_get(ev, "steps")),
			 jstr(ev, "step_description", ""));
		if (strcmp(step, j->step) != 0) {
			snprintf(j->step, sizeof(j->step), "%s", step);
			if (p->live)
				progress_log(p, "%s: %s", j->device, step);
			else
				printf("%s: %s\n", j->device, step);
		}
	}
	if (json_is_string(json_object_get(ev, "note"))) {
		const char *note = jstr(ev, "note", "");
		if (strncmp(note, "handed-to-", 10) == 0)
			set_transport(j, note + 10);
		if (p->live)
			progress_log(p, "%s: %s", j->device,
				     jstr(ev, "message", jstr(ev, "note", "")));
		else
			printf("%s: note %s: %s\n", j->device, jstr(ev, "note", ""),
			       jstr(ev, "message", ""));
		return;
	}
	if (p->live)
		return;
	if (new_state) {
		plain(j);
		if (j->total == 0)
			return;
	}
	int quarter = j->total ? (int)(j->done * 4 / j->total) : -1;
	if (j->total && quarter > j->quarter) {
		j->quarter = quarter;
		if (!new_state || j->done > 0)
			plain(j);
	}
}

static void on_end(struct progress *p, struct pjob *j, const json_t *ev)
{
	const char *result = jstr(ev, "result", "?");
	const json_t *err = json_object_get(ev, "error");
	snprintf(j->before_end, sizeof(j->before_end), "%s", j->state);
	j->ended = true;
	j->end_ok = strcmp(result, "done") == 0;
	double took = now_s() - p->t0;
	if (j->end_ok)
		snprintf(j->end_text, sizeof(j->end_text), "done: %s (%.1f s)",
			 jstr(ev, "outcome", "ok"), took);
	else if (strcmp(result, "cancelled") == 0)
		snprintf(j->end_text, sizeof(j->end_text), "cancelled while %s", phase_label(j));
	else
		snprintf(j->end_text, sizeof(j->end_text), "%s while %s: %s", result,
			 phase_label(j), jstr(err, "code", "?"));
	if (!p->live) {
		printf("%s: %s\n", j->device, j->end_text);
		fflush(stdout);
	}
}

bool progress_event(struct progress *p, const json_t *ev)
{
	const char *name = jstr(ev, "event", "");
	struct pjob *j = find(p, jstr(ev, "job", NULL));
	if (!j || j->ended)
		return false;
	const json_t *rec = json_object_get(ev, "record");
	if (json_is_string(json_object_get(rec, "device")))
		set_device(j, json_string_value(json_object_get(rec, "device")));
	set_transport(j, json_string_value(json_object_get(rec, "transport")));
	bool ended = false;
	if (strcmp(name, "job-progress") == 0) {
		on_progress(p, j, ev);
	} else if (strcmp(name, "job-ended") == 0) {
		on_end(p, j, ev);
		ended = true;
	} else if (strcmp(name, "job-plan") == 0) {
		if (p->live) {
			progress_log(p, "%s: plan: %s", j->device, jstr(ev, "message", ""));
		} else {
			printf("%s: ", j->device);
			render_plan(stdout, json_object_get(ev, "plan"), "");
			fflush(stdout);
		}
	} else if (strcmp(name, "job-started") == 0 && !p->live) {
		printf("%s: started\n", j->device);
		fflush(stdout);
	}
	redraw(p);
	return ended;
}

void progress_tick(struct progress *p)
{
	redraw(p);
}

void progress_cancelling(struct progress *p)
{
	p->cancelling = true;
	if (p->live)
		progress_log(p, "cancelling: the jobs stop at their next safe point "
				"(Ctrl-C again: quit without waiting)");
	else
		printf("cancelling: the jobs stop at their next safe point\n");
	fflush(stdout);
}

void progress_end(struct progress *p)
{
	redraw(p);
	p->drawn = 0;
	fflush(stdout);
}
