/*
 * The MQTT publisher's cost on the event loop (issue 17), printed, not judged:
 * the time a job's events spend in mqtt_job_event() (each event serialized and
 * queued; at job-ended the history record built and queued, and the status),
 * per job: p50, p99, max; then how long the queue takes to drain to the broker.
 *
 * usage: mqtt-bench [JOBS] [mqtt://HOST:PORT]
 *        (default 1000 jobs; without a broker URL the broker is unreachable:
 *         the queue fills to its bound and then drops, which is counted)
 *
 * Jobs run through daemon/jobs.c with a transport that writes and verifies at
 * once, on a simulated Photon, as in history-bench.
 */
#include "bench_jobs.h"
#include "image_cache.h"
#include "jobs.h"
#include "log.h"
#include "mqtt.h"
#include "registry.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bench {
	struct mqtt *mqtt;
	double spent; /* in mqtt_job_event() for the current job */
	unsigned events;
};

static void on_job_event(void *ctx, struct job *job, json_t *event)
{
	struct bench *b = ctx;
	double t0 = bench_mono();
	mqtt_job_event(b->mqtt, job, event);
	b->spent += bench_mono() - t0;
	b->events++;
}

static json_int_t status_int(struct mqtt *m, const char *key)
{
	json_t *s = mqtt_status_json(m);
	json_int_t v = json_integer_value(json_object_get(s, key));
	json_decref(s);
	return v;
}

static bool connected(struct mqtt *m)
{
	json_t *s = mqtt_status_json(m);
	bool c = json_is_true(json_object_get(s, "connected"));
	json_decref(s);
	return c;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
	const char *url = argc > 2 ? argv[2] : "mqtt://127.0.0.1:1";
	if (n < 10)
		n = 10;
	struct error err;
	error_init(&err);
	log_set_level(LOG_WARNING);
	struct event_base *base = event_base_new();
	struct registry *reg = registry_new(base);
	struct image_cache *images = image_cache_new(1 << 24);
	struct jobs *jobs = jobs_new(base, reg, images, bench_transports, 64, 16);
	struct mqtt_config cfg;
	mqtt_config_defaults(&cfg);
	if (mqtt_config_set(&cfg, "url", url, "argv", &err) < 0 ||
	    mqtt_config_set(&cfg, "station", "bench", "argv", &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return 2;
	}
	struct bench b = {0};
	if (!(b.mqtt = mqtt_new(base, &cfg, reg, &err))) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	mqtt_start(b.mqtt);
	jobs_set_sink(jobs, on_job_event, &b);
	double deadline = bench_mono() + 5;
	while (argc > 2 && bench_mono() < deadline && !connected(b.mqtt))
		event_base_loop(base, EVLOOP_ONCE);

	struct device *dev = bench_plug_photon(reg);

	double *per_job = calloc(n, sizeof(double));
	double t_all = bench_mono();
	for (size_t i = 0; i < n; i++) {
		struct job_request jr;
		bench_job_request(&jr, dev);
		struct job *job = jobs_create(jobs, &jr, &err);
		if (!job)
			return 1;
		b.spent = 0;
		jobs_submit(jobs, job);
		for (int k = 0; k < 4; k++)
			event_base_loop(base, EVLOOP_NONBLOCK);
		per_job[i] = b.spent;
	}
	double t_jobs = bench_mono() - t_all;
	/* The queue drains to the broker. */
	double t0 = bench_mono();
	while (argc > 2 && bench_mono() - t0 < 30 &&
	       (status_int(b.mqtt, "queued") || status_int(b.mqtt, "in_flight")))
		event_base_loop(base, EVLOOP_ONCE);
	double t_drain = bench_mono() - t0;

	bench_sort(per_job, n);
	printf("mqtt bench: %zu jobs (%u events + a history record each), broker %s (%s)\n", n,
	       b.events / (unsigned)n, url, argc > 2 ? "connected" : "unreachable");
	printf("%-46s p50 %7.1f us   p99 %7.1f us   max %7.1f us\n",
	       "on the loop, per job (all its publications)", per_job[n / 2] * 1e6,
	       per_job[n * 99 / 100] * 1e6, per_job[n - 1] * 1e6);
	printf("%-46s %7.2f s for %zu jobs\n", "jobs run with publishing", t_jobs, n);
	if (argc > 2)
		printf("%-46s %7.2f s after the last job\n", "queue drained to the broker",
		       t_drain);
	printf("published %lld, queued %lld, dropped %lld (queue %u)\n",
	       (long long)status_int(b.mqtt, "published"), (long long)status_int(b.mqtt, "queued"),
	       (long long)status_int(b.mqtt, "dropped"), cfg.queue_max);
	jobs_free(jobs);
	mqtt_free(b.mqtt);
	registry_free(reg);
	image_cache_free(images);
	event_base_free(base);
	free(per_job);
	return 0;
}
