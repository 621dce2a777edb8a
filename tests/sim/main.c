/*
 * flashd-sim: runs COMMAND inside a umockdev testbed holding simulated
 * Particle devices (issues 3 and 4; flashd-sim(1)).
 *
 *   flashd-sim [--device SPEC]... [--state-dir DIR] [--time-scale X]
 *              [--timeout-scale Y] [--control PATH] -- COMMAND [ARG...]
 *
 * Exits with COMMAND's status; 125 on the simulator's own failures.
 */
#include "config.h"
#include "control.h"
#include "device.h"
#include "spec.h"
#include "state.h"

#include <errno.h>
#include <ftw.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PRELOAD_LIB  "libumockdev-preload.so.0"
#define REEXEC_GUARD "FLASHD_SIM_REEXEC"

static struct sim sim_state;

uint64_t sim_now_ms(void)
{
	return (uint64_t)(g_get_monotonic_time() / 1000);
}

struct scheduled {
	struct sim *sim;
	void (*fn)(void *);
	void *data;
};

/*
 * The scheduled work is re-enumeration (resets, unplugs, plugs), and one
 * enumeration costs the testbed real time (sysfs files, device nodes,
 * uevents: ~10-50 ms on a loaded machine).  Due work waits in a FIFO and runs
 * one item per main-loop iteration, as a host's hub driver enumerates one
 * device at a time while the others keep talking: the loop polls the ptys of
 * every other device between two enumerations.  Run from the timeouts
 * themselves, all the work due at once ran in one dispatch (GLib dispatches
 * every ready source of a priority together), and a device that was back
 * already went unanswered until the last of them was (with 16 devices
 * rebooting together, every job ended at the same instant).
 */
static GQueue due_work = G_QUEUE_INIT;
static guint due_source;

static gboolean run_next_due(gpointer unused)
{
	(void)unused;
	struct scheduled *s = g_queue_pop_head(&due_work);
	if (s) {
		s->fn(s->data);
		sim_work_done(s->sim);
		g_free(s);
	}
	if (!g_queue_is_empty(&due_work))
		return G_SOURCE_CONTINUE;
	due_source = 0;
	return G_SOURCE_REMOVE;
}

static gboolean run_scheduled(gpointer p)
{
	g_queue_push_tail(&due_work, p);
	if (!due_source)
		due_source = g_idle_add_full(G_PRIORITY_DEFAULT, run_next_due, NULL, NULL);
	return G_SOURCE_REMOVE;
}

void sim_schedule(struct sim *sim, unsigned delay_ms, void (*fn)(void *), void *data)
{
	struct scheduled *s = g_new0(struct scheduled, 1);
	s->sim = sim;
	s->fn = fn;
	s->data = data;
	g_atomic_int_inc(&sim->pending_work);
	/* Thread-safe: the DFU handler schedules from umockdev's worker thread. */
	g_timeout_add(delay_ms, run_scheduled, s);
}

void sim_work_done(struct sim *sim)
{
	if (g_atomic_int_dec_and_test(&sim->pending_work))
		control_poke(sim);
}

static uid_t owner_uid;
static gid_t owner_gid;

static int give_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	(void)st;
	/* A tty node is a symlink to its pty (/dev/pts/N): the pty too. */
	if (flag == FTW_SL && chown(path, owner_uid, owner_gid) < 0 && errno != ENOENT)
		fprintf(stderr, "flashd-sim: --owner: %s: %s\n", path, strerror(errno));
	if (lchown(path, owner_uid, owner_gid) < 0 && errno != ENOENT)
		fprintf(stderr, "flashd-sim: --owner: %s: %s\n", path, strerror(errno));
	return 0;
}

void sim_apply_owner(struct sim *sim)
{
	if (!sim->has_owner)
		return;
	gchar *root = umockdev_testbed_get_root_dir(sim->tb);
	owner_uid = sim->owner_uid;
	owner_gid = sim->owner_gid;
	g_mutex_lock(&sim->lock);
	nftw(root, give_entry, 16, FTW_PHYS);
	g_mutex_unlock(&sim->lock);
	g_free(root);
}

static int parse_owner(struct sim *sim, const char *v)
{
	unsigned long u, g;
	char *end;
	errno = 0;
	u = strtoul(v, &end, 10);
	if (errno || end == v || *end != ':')
		return -1;
	const char *gs = end + 1;
	g = strtoul(gs, &end, 10);
	if (errno || end == gs || *end || u >= (uid_t)-1 || g >= (gid_t)-1)
		return -1;
	sim->has_owner = true;
	sim->owner_uid = (uid_t)u;
	sim->owner_gid = (gid_t)g;
	return 0;
}

static void usage(FILE *out)
{
	fputs("Usage: flashd-sim [--device SPEC]... [--state-dir DIR] [--time-scale X]\n"
	      "                  [--timeout-scale Y] [--control PATH] [--owner UID:GID]\n"
	      "                  -- COMMAND [ARG...]\n"
	      "       flashd-sim --list-releases\n"
	      "Runs COMMAND next to simulated Particle devices (umockdev testbed); exits with\n"
	      "its status, 125 on the simulator's own failures, 127 if COMMAND is not found.\n"
	      "\n"
	      "SPEC: platform=NAME,mode=listening|dfu|normal|safe,os=RELEASE[,name=N][,id=HEX24]\n"
	      "      [,serial=S][,port=1-1.2][,protected=0|1][,faults=FAULT[+FAULT]...]\n"
	      "      [,peer=COMMAND (last key)]\n"
	      "\n"
	      "FAULT: KIND@WHERE[:ARG]; WHERE = N% | chunkN (DFU data DNLOAD) | blockN (YMODEM)\n"
	      "       | byteN | N | empty; each fires once (slow-erase stays).\n"
	      "  stall@chunkN[:errTARGET|errFILE|errWRITE|errERASE|errPROG|errVERIFY|\n"
	      "               errADDRESS|errVENDOR|errUNKNOWN|errSTALLEDPKT]   DFU stall\n"
	      "  error@chunkN[:STATUS]                        DFU: no stall; the GETSTATUS after\n"
	      "                                               DNBUSY: dfuERROR/STATUS (errWRITE)\n"
	      "  silent@chunkN | silent@blockN | silent@N%    stops answering\n"
	      "  unplug@N% | unplug@byteN | unplug@chunkN | unplug@blockN\n"
	      "                                               cable pulled (back by control)\n"
	      "  reset@WHERE (as unplug)                      resets, re-enumerates\n"
	      "  cancel@blockN | cancel@N% | cancel@byteN     serial: CA CA mid-transfer\n"
	      "  nak@blockN | nak@N%                          serial: NAK every block on\n"
	      "  stray@[:TEXT]                                serial: application output\n"
	      "  atprobe@[:TEXT]                              serial: AT probe arrives\n"
	      "  slow-erase@[:X]                              DFU: erases X (4) times slower\n"
	      "  ctrl-busy@N                                  control requests: BUSY to N INITs\n"
	      "  ctrl-unplug@chunkN                           cable pulled after firmware-update\n"
	      "                                               chunk N\n"
	      "  ctrl-silent@chunkN                           stops answering after chunk N\n"
	      "  ctrl-result@chunkN[:CODE]                    chunk N's request ends with\n"
	      "                                               system_error_t CODE (-219)\n"
	      "\n"
	      "Control socket (--control PATH): one JSON object per line, one reply line each,\n"
	      "{\"ok\":true,...} or {\"ok\":false,\"error\":\"...\"}:\n"
	      "  {\"cmd\":\"plug\",\"spec\":\"SPEC\"}      -> "
	      "{\"ok\":true,\"name\":N,\"device_id\":ID}\n"
	      "  {\"cmd\":\"plug\",\"name\":\"N\"}         plug an unplugged device back in\n"
	      "  {\"cmd\":\"unplug\",\"name\":\"N\"}\n"
	      "  {\"cmd\":\"replug\",\"name\":\"N\"[,\"port\":\"1-6\"]}\n"
	      "  {\"cmd\":\"mode\",\"name\":\"N\",\"mode\":\"listening|dfu|normal|safe\"}\n"
	      "  {\"cmd\":\"fault\",\"name\":\"N\",\"faults\":\"FAULT+...\"}  replaces, at once "
	      "(\"\" clears)\n"
	      "  {\"cmd\":\"state\"}                    -> "
	      "{\"ok\":true,\"state\":{...state.json...}}\n"
	      "  {\"cmd\":\"wait-idle\"[,\"timeout_ms\":30000]}  no reset/re-enumeration pending, "
	      "no\n"
	      "      DFU busy time, no serial timer due within 60 s; ok:false at the timeout\n"
	      "See flashd-sim(1).\n",
	      out);
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "flashd-sim: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return SIM_EXIT_OWN_FAILURE;
}

/* The testbed owner must itself run under the preload, or add events never go out. */
static void reexec_under_preload(char **argv)
{
	const char *pre = getenv("LD_PRELOAD");
	if ((pre && strstr(pre, "libumockdev-preload")) || getenv(REEXEC_GUARD))
		return;
	gchar *value =
	    pre && *pre ? g_strdup_printf("%s:%s", pre, PRELOAD_LIB) : g_strdup(PRELOAD_LIB);
	setenv("LD_PRELOAD", value, 1);
	setenv(REEXEC_GUARD, "1", 1);
	g_free(value);
	execv("/proc/self/exe", argv);
	fprintf(stderr, "flashd-sim: cannot re-execute under %s: %s\n", PRELOAD_LIB,
		strerror(errno));
	exit(SIM_EXIT_OWN_FAILURE);
}

static void on_child_exit(GPid pid, gint status, gpointer data)
{
	(void)pid;
	struct sim *sim = data;
	sim->child_status = status;
	sim->child_exited = true;
	g_spawn_close_pid(pid);
	g_main_loop_quit(sim->loop);
}

static gboolean on_signal(gpointer data)
{
	struct sim *sim = &sim_state;
	int sig = GPOINTER_TO_INT(data);
	state_write(sim);
	if (sim->child > 0 && !sim->child_exited)
		kill(sim->child, sig);
	else
		g_main_loop_quit(sim->loop);
	return G_SOURCE_CONTINUE;
}

static int parse_scale(const char *opt, const char *s, double *ret)
{
	char *end;
	double v = g_ascii_strtod(s, &end);
	if (end == s || *end || v < 0 || v > 1000)
		return die("%s: expected a number between 0 and 1000", opt);
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct sim *sim = &sim_state;
	sim->time_scale = 0;
	sim->timeout_scale = 1;
	const char *control = NULL;
	g_autoptr(GPtrArray) specs = g_ptr_array_new();
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--list-releases") == 0) {
			spec_list_releases(stdout);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("flashd-sim %s\n", FLASHD_VERSION);
			return 0;
		} else if (!v && a[0] == '-') {
			return die("%s needs a value", a);
		} else if (strcmp(a, "--device") == 0) {
			g_ptr_array_add(specs, argv[++i]);
		} else if (strcmp(a, "--state-dir") == 0) {
			sim->state_dir = argv[++i];
		} else if (strcmp(a, "--time-scale") == 0) {
			if (parse_scale(a, argv[++i], &sim->time_scale))
				return SIM_EXIT_OWN_FAILURE;
		} else if (strcmp(a, "--timeout-scale") == 0) {
			if (parse_scale(a, argv[++i], &sim->timeout_scale))
				return SIM_EXIT_OWN_FAILURE;
		} else if (strcmp(a, "--control") == 0) {
			control = argv[++i];
		} else if (strcmp(a, "--owner") == 0) {
			if (parse_owner(sim, argv[++i]) < 0)
				return die("--owner %s: expected UID:GID (numbers)", argv[i]);
		} else if (a[0] == '-') {
			usage(stderr);
			return die("unknown option %s", a);
		} else {
			break; /* COMMAND without "--" */
		}
	}
	if (i >= argc) {
		usage(stderr);
		return die("%s", "no COMMAND given");
	}
	if (specs->len > SIM_MAX_DEVICES)
		return die("at most %s devices", G_STRINGIFY(SIM_MAX_DEVICES));

	/* Validate every SPEC before touching the testbed (exit 125 on a bad one). */
	struct sim_spec parsed[SIM_MAX_DEVICES];
	for (guint k = 0; k < specs->len; k++) {
		char err[SIM_SPEC_ERROR_MAX];
		if (spec_parse(g_ptr_array_index(specs, k), k, &parsed[k], err, sizeof(err)) < 0)
			return die("--device: %s", err);
		for (guint j = 0; j < k; j++)
			if (strcmp(parsed[j].name, parsed[k].name) == 0)
				return die("--device: two devices named %s", parsed[k].name);
	}
	if (sim->state_dir && g_mkdir_with_parents(sim->state_dir, 0755) < 0)
		return die("--state-dir %s: cannot create", sim->state_dir);

	reexec_under_preload(argv);

	g_mutex_init(&sim->lock);
	sim->retired = g_ptr_array_new_with_free_func((GDestroyNotify)usbdev_node_free);
	sim->idle_waiters = g_ptr_array_new();
	sim->loop = g_main_loop_new(NULL, FALSE);
	sim->tb = umockdev_testbed_new();
	if (!sim->tb)
		return die("%s", "cannot create the umockdev testbed");
	{
		g_autoptr(GError) err = NULL;
		if (cdc_tty_handler_install(sim, &err) < 0)
			return die("testbed: %s",
				   err ? err->message : "cannot attach the tty handler");
	}
	for (guint k = 0; k < specs->len; k++) {
		sim->devices[sim->n_devices++] = device_new(sim, &parsed[k]);
		spec_clear(&parsed[k]);
	}
	for (unsigned k = 0; k < sim->n_devices; k++) {
		g_autoptr(GError) err = NULL;
		if (device_plug(sim->devices[k], &err) < 0)
			return die("testbed: %s", err ? err->message : "cannot add device");
	}
	sim_apply_owner(sim);
	if (control) {
		g_autoptr(GError) err = NULL;
		if (control_start(sim, control, &err) < 0)
			return die("--control: %s", err->message);
	}
	g_unix_signal_add(SIGTERM, on_signal, GINT_TO_POINTER(SIGTERM));
	g_unix_signal_add(SIGINT, on_signal, GINT_TO_POINTER(SIGINT));
	signal(SIGPIPE, SIG_IGN);

	/* umockdev's preload ends every emulated ioctl with usleep(0) ("force a context
	 * switch"), which sleeps for the caller's timer slack: 50 us by default, twice per
	 * USB transfer and per reap poll, in a host's one event loop.  A usbfs ioctl costs
	 * a real host no sleep at all: COMMAND (which inherits it from this thread) gets a
	 * slack of 1 us. */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	g_autoptr(GError) err = NULL;
	if (!g_spawn_async(NULL, argv + i, NULL,
			   G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
			       G_SPAWN_CHILD_INHERITS_STDIN,
			   NULL, NULL, &sim->child, &err)) {
		fprintf(stderr, "flashd-sim: %s: %s\n", argv[i], err->message);
		return err->code == G_SPAWN_ERROR_NOENT ? 127 : 126;
	}
	g_child_watch_add(sim->child, on_child_exit, sim);
	g_main_loop_run(sim->loop);

	state_write(sim);
	control_stop();
	int status = sim->child_status;
	int rc = WIFEXITED(status)     ? WEXITSTATUS(status)
		 : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
				       : 1;
	for (unsigned k = 0; k < sim->n_devices; k++)
		if (sim->devices[k]->peer_pid > 0)
			kill(sim->devices[k]->peer_pid, SIGTERM);
	g_object_unref(sim->tb);
	return rc;
}
