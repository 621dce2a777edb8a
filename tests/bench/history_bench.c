/*
 * The flash history's cost per job (issue 15), printed, not judged:
 *
 *   - on the event loop: history_job_started() + history_job_ended() for a
 *     real job (the record built from the job, queued for the worker): p50,
 *     p99, max;
 *   - on the worker: one job at a time (its start and end records, waited
 *     for): p50, p99, max per job;
 *   - a burst of jobs ending together (batched transactions): jobs per second.
 *
 * usage: history-bench [JOBS]     (default 1000; TMPDIR holds the database)
 *
 * Jobs run through daemon/jobs.c with a transport that writes and verifies
 * at once, on a simulated Photon whose facts list four modules; the image is
 * the Photon Tinker fixture when FLASHD_FIXTURES has it.
 */
#include "bench_jobs.h"
#include "history.h"
#include "image_cache.h"
#include "jobs.h"
#include "log.h"
#include "registry.h"
#include "settings.h"

#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void report(const char *what, double *v, size_t n)
{
	bench_sort(v, n);
	printf("%-52s p50 %8.1f us   p99 %8.1f us   max %8.1f us   (%zu jobs)\n", what,
	       v[n / 2] * 1e6, v[n * 99 / 100] * 1e6, v[n - 1] * 1e6, n);
}

static void spin(struct event_base *base)
{
	for (int i = 0; i < 4; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
	if (n < 10)
		n = 10;
	const char *tmp = getenv("TMPDIR");
	char dir[512];
	snprintf(dir, sizeof(dir), "%s/history-bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		return 1;

	struct error err;
	error_init(&err);
	log_set_level(LOG_WARNING); /* not a line per job */
	struct event_base *base = event_base_new();
	struct registry *reg = registry_new(base);
	struct image_cache *images = image_cache_new(1 << 24);
	struct jobs *jobs = jobs_new(base, reg, images, bench_transports, 64, 16);
	struct history_config cfg;
	history_config_defaults(&cfg);
	struct history *h = history_open(base, dir, &cfg, &err);
	if (!h) {
		fprintf(stderr, "history_open: %s\n", err.message);
		return 1;
	}
	jobs_set_history(jobs, h);

	struct device *dev = bench_plug_photon(reg);

	char img_path[1024];
	const char *fixtures = getenv("FLASHD_FIXTURES");
	snprintf(img_path, sizeof(img_path), "%s/modules/photon/photon_tinker.bin",
		 fixtures ? fixtures : ".");
	int img_fd = open(img_path, O_RDONLY | O_CLOEXEC);

	double *in_loop = calloc(n, sizeof(double)), *worker = calloc(n, sizeof(double));
	struct job *job = NULL;
	for (size_t i = 0; i < n; i++) {
		struct job_request jr;
		bench_job_request(&jr, dev);
		if (img_fd >= 0 && image_cache_load_fd(images, img_fd, "photon_tinker.bin",
						       &jr.images[0], &err) == 0) {
			snprintf(jr.names[0], sizeof(jr.names[0]), "photon_tinker.bin");
			jr.n_images = 1;
			lseek(img_fd, 0, SEEK_SET);
		}
		error_clear(&err);
		job = jobs_create(jobs, &jr, &err);
		if (!job)
			return 1;
		jobs_submit(jobs, job);
		double t0 = bench_mono();
		spin(base); /* the job starts, writes and ends: both hooks run */
		history_flush(h);
		worker[i] = bench_mono() - t0;
		/* The hooks' own cost on the loop, measured on the same (ended) job. */
		t0 = bench_mono();
		history_job_started(h, job);
		history_job_ended(h, job);
		in_loop[i] = bench_mono() - t0;
		history_flush(h);
	}
	printf("history bench: %zu jobs, database %s/%s, image %s\n", n, dir, HISTORY_FILE_NAME,
	       img_fd >= 0 ? "photon_tinker.bin" : "(none)");
	report("on the loop: started + ended hooks (build + queue)", in_loop, n);
	report("one job at a time: job run + both rows on disk", worker, n);

	/* A burst: jobs ending together (new rows); the worker batches them. */
	size_t burst_n = n < HISTORY_QUEUE_MAX ? n : HISTORY_QUEUE_MAX;
	for (size_t i = 0; i < burst_n; i++) {
		json_t *r = history_record_from_job(job, true);
		json_object_set_new(r, "job", json_sprintf("burst-%zu", i));
		history_put(h, r, true);
	}
	double t0 = bench_mono();
	history_flush(h);
	n = burst_n;
	double burst = bench_mono() - t0;
	printf("%-52s %8.0f jobs/s   (%.1f us per job)\n", "worker, burst of job ends (batched)",
	       (double)n / burst, burst / (double)n * 1e6);
	json_t *s = history_status_json(h);
	printf("written %lld records, write errors %lld, dropped %lld\n",
	       (long long)json_integer_value(json_object_get(s, "written")),
	       (long long)json_integer_value(json_object_get(s, "write_errors")),
	       (long long)json_integer_value(json_object_get(s, "dropped")));
	json_decref(s);

	jobs_free(jobs);
	history_free(h);
	registry_free(reg);
	image_cache_free(images);
	event_base_free(base);
	if (img_fd >= 0)
		close(img_fd);
	free(in_loop);
	free(worker);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : 1;
}
