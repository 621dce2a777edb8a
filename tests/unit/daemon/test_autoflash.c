/*
 * Auto-flash dispatch (daemon/autoflash.c) against a fake transport that
 * finishes jobs when the test says so: one job per matching device, a rule's
 * max_jobs (the others wait), "no rule matched", equal priorities (nothing
 * flashed), the higher priority winning, once (a replugged device skipped),
 * a device already at the target (the flash job, whose planner ends it done /
 * already-installed: no probe, no second opinion), skip_installed = no (rewrite),
 * and the station's counters.
 */
#include "autoflash.h"
#include "fake_transport.h"
#include "image.h"
#include "jobs.h"
#include "registry.h"
#include "rules.h"
#include "settings.h"

#include <event2/event.h>
#include <nettle/sha2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- the fake transport (fake_transport.c): runs stay until finish_all() ---- */

static const struct transport_ops *const transports[] = {&fake_serial, NULL};

/* ---- fixture ----------------------------------------------------------------- */

struct fx {
	struct event_base *base;
	struct registry *reg;
	struct image_cache *images;
	struct jobs *jobs;
	struct rules *rules;
	struct autoflash *af;
	char dir[256], rules_dir[300], image[320];
};

static void on_job(void *ctx, struct job *job, json_t *event)
{
	struct fx *fx = ctx;
	autoflash_on_job_event(fx->af, job, event);
}

static void on_device(void *ctx, struct device *dev, enum registry_change c)
{
	struct fx *fx = ctx;
	jobs_on_device(fx->jobs, dev, c);
	autoflash_on_device(fx->af, dev, c);
}

static void spin(struct fx *fx)
{
	for (int i = 0; i < 16; i++)
		event_base_loop(fx->base, EVLOOP_NONBLOCK);
}

/* A valid Photon user part, version 7. */
static void write_image(const char *path)
{
	uint8_t m[300];
	const uint32_t start = 0x080a0000, payload = 200;
	size_t total = 24 + payload + 36 + 4, n;
	memset(m, 0, sizeof(m));
	for (int i = 0; i < 4; i++) {
		m[i] = (uint8_t)(start >> (8 * i));
		m[4 + i] = (uint8_t)((start + total - 4) >> (8 * i));
	}
	m[10] = 7;
	m[12] = 6;
	m[14] = 5;
	m[15] = 1;
	for (uint32_t i = 0; i < payload; i++)
		m[24 + i] = (uint8_t)i;
	n = 24 + payload + 2;
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, n, m);
	sha256_digest(&ctx, 32, m + n);
	n += 32;
	m[n++] = 36;
	m[n++] = 0;
	uint32_t crc = image_crc32(m, n);
	for (int i = 3; i >= 0; i--)
		m[n++] = (uint8_t)(crc >> (8 * i));
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(m, 1, n, f), n);
	fclose(f);
}

static struct fx *fx_new(const char *rules_text)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	fake_reset();
	timeouts_reset();
	const char *tmp = getenv("TMPDIR");
	snprintf(fx->dir, sizeof(fx->dir), "%s/af-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->rules_dir, sizeof(fx->rules_dir), "%s/rules.d", fx->dir);
	snprintf(fx->image, sizeof(fx->image), "%s/app.bin", fx->dir);
	mkdir(fx->rules_dir, 0755);
	write_image(fx->image);
	char path[400];
	snprintf(path, sizeof(path), "%s/test.conf", fx->rules_dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	/* "@" in rules_text stands for the image's path. */
	for (const char *c = rules_text; *c; c++)
		if (*c == '@')
			fputs(fx->image, f);
		else
			fputc(*c, f);
	fclose(f);
	chmod(path, 0644);

	fx->base = event_base_new();
	fx->reg = registry_new(fx->base);
	fx->images = image_cache_new(1 << 20);
	fx->jobs = jobs_new(fx->base, fx->reg, fx->images, transports, 32, 64);
	struct auto_config c;
	auto_config_defaults(&c);
	snprintf(c.rules_dir, sizeof(c.rules_dir), "%s", fx->rules_dir);
	fx->rules = rules_new(NULL, &c, fx->images);
	rules_load(fx->rules);
	fx->af = autoflash_new(fx->base, fx->reg, fx->jobs, fx->rules, transports);
	timeouts_set("auto_settle_ms", 0);
	jobs_set_sink(fx->jobs, on_job, fx);
	registry_set_listener(fx->reg, on_device, fx);
	return fx;
}

static void fx_free(struct fx *fx)
{
	autoflash_free(fx->af);
	jobs_free(fx->jobs);
	registry_free(fx->reg);
	rules_free(fx->rules);
	image_cache_free(fx->images);
	event_base_free(fx->base);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
}

/* The fake's runs end: done / verified, with the image's module now installed. */
static void finish_all(struct fx *fx)
{
	while (fake.n) {
		struct job *job = fake.runs[0]->job;
		struct device_facts f;
		memset(&f, 0, sizeof(f));
		f.modules_known = true;
		f.n_modules = 1;
		f.modules[0].function = 5;
		f.modules[0].index = 1;
		f.modules[0].version = 7;
		job_progress(job, 0, 100);
		job_set_state(job, JOB_WRITING);
		job_progress(job, 100, 100);
		job_update_facts(job, &f);
		job_finish(job, JOB_RESULT_DONE, "verified", NULL);
		spin(fx);
	}
}

static json_t *port_of(json_t *station, const char *device)
{
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(station, "ports"), i, p)
	{
		const char *d = json_string_value(json_object_get(p, "device"));
		if (d && strcmp(d, device) == 0)
			return p;
	}
	return NULL;
}

static const char *state_of(struct fx *fx, const char *device)
{
	static char buf[32];
	json_t *st = autoflash_station_json(fx->af);
	snprintf(buf, sizeof(buf), "%s",
		 json_string_value(json_object_get(port_of(st, device), "state")));
	json_decref(st);
	return buf;
}

#define P1	   "3c0021000d47353033320001"
#define P2	   "3c0021000d47353033320002"
#define P3	   "3c0021000d47353033320003"
#define E1	   "3c0021000d473530333200e1"
#define PHOTON_DFU 0xd006
#define ELECTRON   0xd00a

static void test_max_jobs_no_rule_once(void **state)
{
	(void)state;
	struct fx *fx = fx_new("[rule]\nid = line\nplatform = photon\nimage = @\nonce = yes\n"
			       "skip_installed = no\nmax_jobs = 1\n");
	fake_plug(fx->reg, P1, "1-1", PHOTON_DFU);
	fake_plug(fx->reg, P2, "1-2", PHOTON_DFU);
	fake_plug(fx->reg, P3, "1-3", PHOTON_DFU);
	fake_plug(fx->reg, E1, "1-4", ELECTRON);
	spin(fx);
	assert_int_equal(fake.n, 1); /* max_jobs = 1: the others wait */
	assert_string_equal(state_of(fx, E1), "no-rule");
	unsigned waiting = !strcmp(state_of(fx, P1), "waiting") +
			   !strcmp(state_of(fx, P2), "waiting") +
			   !strcmp(state_of(fx, P3), "waiting");
	assert_int_equal(waiting, 2);
	finish_all(fx);
	assert_int_equal(fake.starts, 3);
	assert_string_equal(state_of(fx, P1), "finished");
	json_t *st = autoflash_station_json(fx->af);
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(st, "counters"), "flashed")), 3);
	json_t *last = json_object_get(port_of(st, P2), "last");
	assert_string_equal(json_string_value(json_object_get(last, "outcome")), "verified");
	assert_string_equal(json_string_value(json_object_get(last, "rule")), "line");
	json_decref(st);
	assert_int_equal(rules_find(fx->rules, "line")->n_done, 3);

	/* Replugged: once, so skipped, nothing started. */
	fake_unplug(fx->reg, "1-2");
	spin(fx);
	fake_plug(fx->reg, P2, "1-2", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.n, 0);
	assert_string_equal(state_of(fx, P2), "skipped");
	fx_free(fx);
}

static void test_priorities(void **state)
{
	(void)state;
	struct fx *fx = fx_new("[rule]\nid = a\nplatform = photon\npriority = 5\nimage = @\n"
			       "skip_installed = no\n"
			       "[rule]\nid = b\ndevice = 3c00*\npriority = 5\nimage = @\n"
			       "skip_installed = no\n");
	fake_plug(fx->reg, P1, "1-1", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.starts, 0); /* equal priorities: nothing */
	assert_string_equal(state_of(fx, P1), "conflict");
	json_t *st = autoflash_station_json(fx->af);
	assert_non_null(strstr(json_string_value(json_object_get(port_of(st, P1), "message")),
			       "rule-conflict"));
	json_decref(st);
	/* b paused: a alone matches, and the device is decided again. */
	rules_set_paused(fx->rules, rules_find(fx->rules, "b"), true);
	autoflash_rules_changed(fx->af);
	spin(fx);
	assert_int_equal(fake.n, 1);
	assert_string_equal(job_rule(fake.runs[0]->job), "a");
	finish_all(fx);
	fx_free(fx);
}

#define PHOTON_CDC 0xc006

/* A CDC device's tty comes a moment after its USB device: auto-flash waits for it
 * (else the same board goes by serial or by DFU depending on who wins the race),
 * and a tty that never comes does not hold the device back beyond auto_tty_wait_ms. */
static void test_waits_for_the_tty_of_a_cdc_device(void **state)
{
	(void)state;
	struct fx *fx = fx_new("[rule]\nid = up\nplatform = photon\nimage = @\n");
	timeouts_set("auto_tty_wait_ms", 2000); /* long enough for valgrind */
	fake_plug(fx->reg, P1, "1-1", PHOTON_CDC);
	spin(fx);
	assert_int_equal(fake.starts, 0); /* no tty yet */
	fake_plug_tty(fx->reg, P1, "1-1");
	spin(fx);
	assert_int_equal(fake.n, 1);
	finish_all(fx);

	fake_plug(fx->reg, P2, "1-2", PHOTON_CDC); /* its tty never comes */
	spin(fx);
	assert_int_equal(fake.n, 0);
	event_base_loop(fx->base, EVLOOP_ONCE); /* the wait runs out */
	spin(fx);
	assert_int_equal(fake.n, 1);
	assert_string_equal(job_device(fake.runs[0]->job)->key, P2);
	finish_all(fx);
	timeouts_set("auto_tty_wait_ms", 3000);
	fx_free(fx);
}

static void test_already_installed(void **state)
{
	(void)state;
	struct fx *fx = fx_new("[rule]\nid = up\nplatform = photon\nimage = @\n");
	fake_plug(fx->reg, P1, "1-1", PHOTON_DFU);
	spin(fx);
	/* No probe, no comparison of its own: the flash job straight away, and the
	 * planner in it finds what is installed (no rewrite: skip_installed). */
	assert_int_equal(fake.n, 1);
	assert_int_equal(job_image_count(fake.runs[0]->job), 1);
	assert_false(job_options(fake.runs[0]->job)->rewrite);
	assert_false(job_options(fake.runs[0]->job)->force);
	/* The planner found nothing to write. */
	job_finish(fake.runs[0]->job, JOB_RESULT_DONE, "already-installed", NULL);
	spin(fx);
	assert_int_equal(fake.n, 0);
	assert_int_equal(fake.starts, 1);
	json_t *st = autoflash_station_json(fx->af);
	json_t *last = json_object_get(port_of(st, P1), "last");
	assert_string_equal(json_string_value(json_object_get(last, "outcome")),
			    "already-installed");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(st, "counters"), "skipped")), 1);
	json_decref(st);
	fx_free(fx);
}

/* skip_installed = no: the job asks the planner to write identical modules
 * again (rewrite), never to override its checks (force). */
static void test_always_write(void **state)
{
	(void)state;
	struct fx *fx =
	    fx_new("[rule]\nid = always\nplatform = photon\nimage = @\nskip_installed = no\n");
	fake_plug(fx->reg, P1, "1-1", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.n, 1);
	assert_true(job_options(fake.runs[0]->job)->rewrite);
	assert_false(job_options(fake.runs[0]->job)->force);
	finish_all(fx);
	fx_free(fx);
}

/* A device unplugged mid-job is the job's (the replug rule): no second job
 * while the job holds it; if the job ends without it (device-gone), its
 * return is a new plug-in. */
static void test_unplugged_mid_job(void **state)
{
	(void)state;
	struct fx *fx = fx_new("[rule]\nid = up\nplatform = photon\nimage = @\n");
	jobs_set_replug_timeout(fx->jobs, 0); /* the fake transport ends the job itself */
	fake_plug(fx->reg, P1, "1-1", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.starts, 1);
	struct job *job = fake.runs[0]->job;
	fake_unplug(fx->reg, "1-1");
	spin(fx);
	fake_plug(fx->reg, P1, "1-7", PHOTON_DFU); /* back on another port while the job runs */
	spin(fx);
	assert_int_equal(fake.starts, 1); /* no second job */
	fake_unplug(fx->reg, "1-7");
	spin(fx);
	struct error err;
	error_init(&err);
	error_set(&err, ERR_DEVICE_GONE, "gone");
	job_finish(job, JOB_RESULT_FAILED, NULL, &err);
	error_clear(&err);
	spin(fx);
	assert_int_equal(fake.n, 0);
	fake_plug(fx->reg, P1, "1-2", PHOTON_DFU);
	spin(fx);
	assert_int_equal(fake.starts, 2); /* a new plug-in: decided again */
	finish_all(fx);
	fx_free(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_max_jobs_no_rule_once),
	    cmocka_unit_test(test_priorities),
	    cmocka_unit_test(test_already_installed),
	    cmocka_unit_test(test_always_write),
	    cmocka_unit_test(test_unplugged_mid_job),
	    cmocka_unit_test(test_waits_for_the_tty_of_a_cdc_device),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
