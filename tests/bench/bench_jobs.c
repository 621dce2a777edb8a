/* What the in-process benchmarks share (bench_jobs.h). */
#include "bench_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

void bench_sort(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp);
}

static struct transport_run *instant_start(struct job *job, const struct job_step *step,
					   struct error *err)
{
	(void)step;
	(void)err;
	struct device_facts f = job_device(job)->facts;
	job_set_state(job, JOB_WRITING);
	job_progress(job, 0, 3952);
	job_progress(job, 3952, 3952);
	f.modules[3].version++;
	job_update_facts(job, &f);
	job_finish(job, JOB_RESULT_DONE, "verified", NULL);
	return NULL;
}

static bool instant_can_serve(const struct device_snapshot *dev)
{
	(void)dev;
	return true;
}

static void instant_free(struct transport_run *run)
{
	(void)run;
}

static const struct transport_ops instant = {
    .name = "serial",
    .can_serve = instant_can_serve,
    .start = instant_start,
    .free = instant_free,
};

const struct transport_ops *const bench_transports[] = {&instant, NULL};

struct device *bench_plug_photon(struct registry *reg)
{
	struct registry_node node;
	memset(&node, 0, sizeof(node));
	snprintf(node.syspath, sizeof(node.syspath), "/sys/devices/usb1/1-1");
	snprintf(node.usb_syspath, sizeof(node.usb_syspath), "%s", node.syspath);
	snprintf(node.port_path, sizeof(node.port_path), "1-1");
	snprintf(node.devnode, sizeof(node.devnode), "/dev/bus/usb/001/002");
	snprintf(node.serial, sizeof(node.serial), "3c0021000d47353033323637");
	node.vid = 0x2b04;
	node.pid = 0xc006;
	registry_node_added(reg, &node);
	struct device *dev = registry_find_key(reg, "3c0021000d47353033323637");
	struct device_facts f = dev->s.facts;
	snprintf(f.os_version, sizeof(f.os_version), "1.5.2");
	f.modules_known = true;
	f.n_modules = 4;
	const uint8_t fn[4] = {MODULE_FUNCTION_BOOTLOADER, MODULE_FUNCTION_SYSTEM,
			       MODULE_FUNCTION_SYSTEM, MODULE_FUNCTION_USER};
	for (int i = 0; i < 4; i++) {
		f.modules[i].function = fn[i];
		f.modules[i].index = i == 0 ? 0 : i == 3 ? 1 : (uint8_t)i;
		f.modules[i].version = i == 3 ? 2 : 1512;
	}
	registry_update_facts(reg, dev, &f);
	return dev;
}

void bench_job_request(struct job_request *jr, struct device *dev)
{
	memset(jr, 0, sizeof(*jr));
	jr->target = WIRE_TARGET_DEVICE;
	snprintf(jr->target_value, sizeof(jr->target_value), "%s", dev->s.key);
	jr->device = dev;
	jr->uid = 1000;
}
