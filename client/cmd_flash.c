/*
 * flashctl flash FILE... [--device ID | --port TTY | --usb PORTPATH |
 *                         --platform NAME [--all]] [--wait[=S]] [--force]
 *                         [--verify] [--dry-run] [--detach]
 * flashctl check FILE... [target]      (the same with --dry-run: preflight only)
 *
 * Opens the files itself and passes them to flashd as file descriptors (the
 * daemon never opens a client's path), then follows the jobs' events until
 * each has ended (unless --detach), with the live display of progress.c.
 * Ctrl-C cancels the jobs and waits for them to stop at a safe point.
 */
#include "conn.h"
#include "image.h"
#include "platform.h"
#include "progress.h"
#include "render.h"
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How often the display moves on without events (seconds waited). */
#define FLASH_TICK_MS 250
/* Particle zip bundles (application + assets) start with a local file header. */
static const unsigned char zip_magic[4] = {'P', 'K', 3, 4};

struct flash_args {
	const char *target_key;
	const char *target_value;
	bool all, force, verify, dry_run, detach;
	bool check;   /* flashctl check: preflight verdicts only */
	json_t *wait; /* NULL, true, or seconds */
};

static int parse(int argc, char **argv, const struct cli_global *g, struct flash_args *a)
{
	static const struct option opts[] = {
	    {"device", required_argument, NULL, 'd'}, {"port", required_argument, NULL, 'p'},
	    {"usb", required_argument, NULL, 'u'},    {"platform", required_argument, NULL, 'P'},
	    {"all", no_argument, NULL, 'a'},	      {"wait", optional_argument, NULL, 'w'},
	    {"force", no_argument, NULL, 'f'},	      {"verify", no_argument, NULL, 'v'},
	    {"dry-run", no_argument, NULL, 'n'},      {"detach", no_argument, NULL, 'D'},
	    {"json", no_argument, NULL, 'j'},	      {0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *key = NULL;
		switch (c) {
		case 'd':
			key = "device";
			break;
		case 'p':
			key = "port";
			break;
		case 'u':
			key = "usb";
			break;
		case 'P':
			key = "platform";
			break;
		case 'a':
			a->all = true;
			break;
		case 'w': {
			char *end;
			json_decref(a->wait);
			if (!optarg) {
				a->wait = json_true();
				break;
			}
			double s = strtod(optarg, &end);
			if (*end || end == optarg || s < 0)
				return render_usage_error(g, "--wait=S needs a number of seconds");
			a->wait = json_real(s);
			break;
		}
		case 'f':
			a->force = true;
			break;
		case 'v':
			a->verify = true;
			break;
		case 'n':
			a->dry_run = true;
			break;
		case 'D':
			a->detach = true;
			break;
		case 'j':
			((struct cli_global *)g)->json = true;
			break;
		default:
			return render_usage_error(
			    g, a->check
				   ? "usage: flashctl check FILE... [--device ID | --port TTY | "
				     "--usb PORTPATH | --platform NAME [--all]] [--wait[=S]] "
				     "[--force]"
				   : "usage: flashctl flash FILE... [--device ID | "
				     "--port TTY | --usb PORTPATH | --platform NAME "
				     "[--all]] [--wait[=S]] [--force] [--verify] "
				     "[--dry-run] [--detach]");
		}
		if (key) {
			if (a->target_key)
				return render_usage_error(
				    g, "give at most one of --device, --port, --usb, --platform");
			a->target_key = key;
			a->target_value = optarg;
		}
	}
	if (a->all && (!a->target_key || strcmp(a->target_key, "platform") != 0))
		return render_usage_error(g, "--all needs --platform NAME");
	if (optind >= argc)
		return render_usage_error(g, a->check ? "check needs at least one FILE"
						      : "flash needs at least one FILE");
	if (a->check) {
		a->dry_run = true;
		a->detach = false;
	}
	if (argc - optind > WIRE_IMAGES_MAX)
		return render_usage_error(g, "too many files for one job");
	return 0;
}

/* A zip bundle is refused here, with what to do instead, before any daemon
 * is asked: it is not a module and flashd does not unpack bundles yet. */
static int refuse_zip(int fd, const char *path, const struct cli_global *g)
{
	unsigned char head[4];
	if (pread(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
	    memcmp(head, zip_magic, sizeof(head)) != 0)
		return 0;
	struct error e;
	error_init(&e);
	error_set(&e, ERR_IMAGE_UNSUPPORTED,
		  "%s is a zip bundle (an application with its assets, as 'particle compile' "
		  "makes for projects with assets), not a firmware module",
		  path);
	error_detail_str(&e, "file", path);
	error_detail_str(&e, "reason", "zip bundle");
	error_hint(&e,
		   "flashd does not flash bundles yet: unzip it and flash the application "
		   ".bin inside (flashctl flash app.bin); flash the assets with particle-cli "
		   "('particle flash --local %s')",
		   path);
	return render_error_free(g, &e);
}

static int open_files(int n, char **paths, int *fds, const struct cli_global *g)
{
	for (int i = 0; i < n; i++) {
		fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC);
		int status = fds[i] >= 0 ? refuse_zip(fds[i], paths[i], g) : 0;
		if (status) {
			while (i >= 0)
				close(fds[i--]);
			return status;
		}
		if (fds[i] < 0) {
			struct error e;
			error_init(&e);
			error_set(&e, ERR_FILE_UNREADABLE, "cannot open %s: %s", paths[i],
				  strerror(errno));
			error_detail_str(&e, "file", paths[i]);
			error_detail_int(&e, "errno", errno);
			status = render_error(g, &e);
			error_clear(&e);
			while (i-- > 0)
				close(fds[i]);
			return status;
		}
	}
	return 0;
}

static json_t *build_request(const struct flash_args *a, int n, char **paths)
{
	json_t *req = wire_request_new(WIRE_REQ_FLASH, 0);
	json_t *images = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(images, json_pack("{s:s, s:i}", "name", paths[i], "fd", i));
	json_object_set_new(req, "images", images);
	json_t *target = json_object();
	if (a->target_key)
		json_object_set_new(target, a->target_key, json_string(a->target_value));
	if (a->all)
		json_object_set_new(target, "all", json_true());
	json_object_set_new(req, "target", target);
	json_object_set_new(req, "options",
			    json_pack("{s:b, s:b, s:b, s:b, s:O}", "force", a->force, "verify",
				      a->verify, "dry-run", a->dry_run, "detach", a->detach, "wait",
				      a->wait ? a->wait : json_false()));
	return req;
}

/* A terminal user picks one of several candidates; returns its key or NULL. */
static const char *pick(const struct cli_global *g, const json_t *candidates)
{
	json_t *dev;
	size_t i;
	if (!g->is_tty || g->json || !isatty(STDIN_FILENO))
		return NULL;
	fprintf(stderr, "Several devices match:\n");
	json_array_foreach(candidates, i, dev)
	{
		fprintf(stderr, "  [%zu] ", i + 1);
		fflush(stderr);
		render_device_line(g, dev);
	}
	fprintf(stderr, "Flash which one? [1-%zu] ", json_array_size(candidates));
	char line[32];
	if (!fgets(line, sizeof(line), stdin))
		return NULL;
	long k = strtol(line, NULL, 10);
	if (k < 1 || (size_t)k > json_array_size(candidates))
		return NULL;
	return json_string_value(json_object_get(json_array_get(candidates, (size_t)k - 1), "key"));
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	/* The second Ctrl-C quits at once (the cancel requests stand). */
	if (interrupted)
		signal(SIGINT, SIG_DFL), raise(SIGINT);
	interrupted = 1;
}

struct follow {
	const struct cli_global *g;
	const struct flash_args *a;
	struct progress *prog; /* NULL with --json */
	json_t *pending;       /* job ids not ended yet */
	json_t *ends;	       /* job-ended events in order */
	bool cancel_sent;
	int status;
};

static void on_event(struct follow *f, json_t *ev)
{
	const char *job = json_string_value(json_object_get(ev, "job"));
	if (!job || !json_object_get(f->pending, job))
		return; /* other clients' jobs */
	if (f->g->json)
		render_json_line(ev);
	else
		progress_event(f->prog, ev);
	if (strcmp(json_string_value(json_object_get(ev, "event")), "job-ended") != 0)
		return;
	json_object_del(f->pending, job);
	json_array_append(f->ends, ev);
	const json_t *err = json_object_get(ev, "error");
	if (json_is_object(err) && f->status == 0) {
		const struct error_info *info =
		    error_info_by_id(json_string_value(json_object_get(err, "code")));
		f->status = info ? info->exit_status : 1;
	}
}

/* Ctrl-C: one cancel request per job still running; their replies and the
 * job-ended events come back on the same connection. */
static void send_cancels(struct conn *c, struct follow *f)
{
	const char *id;
	json_t *v;
	struct error err;
	error_init(&err);
	if (f->prog)
		progress_cancelling(f->prog);
	json_object_foreach(f->pending, id, v)
	{
		json_t *req = wire_request_new(WIRE_REQ_CANCEL, 0);
		json_object_set_new(req, "job", json_string(id));
		conn_send(c, req, NULL, 0, &err);
		json_decref(req);
		error_clear(&err);
	}
	f->cancel_sent = true;
}

static int follow_jobs(struct conn *c, struct follow *f)
{
	struct error err;
	error_init(&err);
	struct sigaction sa = {.sa_handler = on_sigint}, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);
	while (json_object_size(f->pending) > 0) {
		if (interrupted && !f->cancel_sent)
			send_cancels(c, f);
		json_t *ev = conn_read(c, FLASH_TICK_MS, &err);
		if (!ev && error_is_set(&err)) {
			if (f->prog)
				progress_end(f->prog);
			sigaction(SIGINT, &old, NULL);
			return render_error_free(f->g, &err);
		}
		if (!ev) {
			if (f->prog)
				progress_tick(f->prog);
			continue;
		}
		if (json_is_string(json_object_get(ev, "event")))
			on_event(f, ev);
		json_decref(ev);
	}
	sigaction(SIGINT, &old, NULL);
	if (f->prog)
		progress_end(f->prog);
	return f->status;
}

/* One shell word: as it is when the shell would keep it whole, else single-quoted. */
static void print_shell_word(FILE *out, const char *w)
{
	static const char safe[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				   "0123456789_./@%+=:,-";
	if (*w && strspn(w, safe) == strlen(w)) {
		fputs(w, out);
		return;
	}
	fputc('\'', out);
	for (; *w; w++)
		if (*w == '\'')
			fputs("'\\''", out);
		else
			fputc(*w, out);
	fputc('\'', out);
}

/* The command that flashes the same files on the same device again (same daemon, same
 * --force/--verify), ready to paste into a shell. */
static void print_again_command(const struct follow *f, const char *device, int n, char **paths)
{
	fputs("flashctl", stderr);
	if (f->g->socket_path) {
		fputs(" --socket ", stderr);
		print_shell_word(stderr, f->g->socket_path);
	}
	fputs(" flash", stderr);
	for (int i = 0; i < n; i++) {
		fputc(' ', stderr);
		print_shell_word(stderr, paths[i]);
	}
	fputs(" --device ", stderr);
	print_shell_word(stderr, device);
	if (f->a->force)
		fputs(" --force", stderr);
	if (f->a->verify)
		fputs(" --verify", stderr);
}

/* What a device does at its next boot with a module that is not whole
 * (docs/device/dfuse.md#entering-dfu-mode, docs/device/validation.md). */
static const char *boot_with_broken(uint8_t function)
{
	switch (function) {
	case MODULE_FUNCTION_SYSTEM:
	case MODULE_FUNCTION_MONO:
		return "the bootloader finds no valid Device OS and stays in DFU mode (blinking "
		       "yellow)";
	case MODULE_FUNCTION_USER:
		return "Device OS finds the application invalid and runs safe mode (breathing "
		       "magenta)";
	default:
		return "the device may not start";
	}
}

/*
 * Where a cancelled erase or write stopped, in terms of the job's files: the module
 * that holds the detail's address (the next chunk or erase unit), its range, how much
 * of it was written.  False when no file's module holds it.
 */
static bool describe_partial(const char *state, const json_t *detail, int n, char **paths,
			     char *buf, size_t size)
{
	const json_t *a = json_object_get(detail, "address");
	if (!json_is_integer(a))
		return false;
	long long addr = json_integer_value(a);
	bool found = false;
	for (int i = 0; i < n && !found; i++) {
		struct image *img = NULL;
		struct error err;
		error_init(&err);
		if (image_load_path(paths[i], &img, &err) < 0) {
			error_clear(&err);
			continue;
		}
		for (unsigned k = 0; k < img->n_modules && !found; k++) {
			const struct image_module *m = &img->modules[k];
			uint32_t end = image_module_flash_end(m);
			if (addr < m->start || addr > end)
				continue;
			found = true;
			const char *what = module_function_phrase(m->function);
			if (strcmp(state, "writing") == 0) {
				const json_t *sent = json_object_get(detail, "bytes_sent");
				snprintf(buf, size,
					 "%s %u partly written (%s, 0x%08x-0x%08x): the first %lld "
					 "of %zu bytes, up to 0x%08llx (chunk %lld); at its next "
					 "boot %s",
					 what, m->index, paths[i], m->start, end,
					 json_is_integer(sent) ? json_integer_value(sent)
							       : addr - m->start,
					 m->size, addr,
					 json_integer_value(json_object_get(detail, "chunk")),
					 boot_with_broken(m->function));
			} else {
				snprintf(buf, size,
					 "%s %u partly erased (%s, 0x%08x-0x%08x): erased up to "
					 "0x%08llx, nothing written; at its next boot %s",
					 what, m->index, paths[i], m->start, end, addr,
					 boot_with_broken(m->function));
			}
		}
		image_free(img);
	}
	return found;
}

/* What a cancelled job left behind, and how to get the device back. */
static void advise_cancelled(const struct follow *f, const json_t *ev, const char *device, int n,
			     char **paths)
{
	const json_t *detail = json_object_get(json_object_get(ev, "error"), "detail");
	const char *dstate = json_string_value(json_object_get(detail, "device_state"));
	const char *state =
	    progress_last_state(f->prog, json_string_value(json_object_get(ev, "job")));
	const char *left, *todo;
	char partial[512];
	if (!state)
		state = "queued";
	bool broken = strcmp(state, "erasing") == 0 || strcmp(state, "writing") == 0;
	if ((dstate && strcmp(dstate, "untouched") == 0) || strcmp(state, "queued") == 0 ||
	    strcmp(state, "waiting-for-device") == 0) {
		left = "untouched: nothing was sent to it";
		todo = "nothing to recover";
	} else if (strcmp(state, "switching-mode") == 0 || strcmp(state, "preflight") == 0) {
		left = "unchanged (nothing was written), but possibly still in DFU mode (blinking "
		       "yellow) or listening mode (blinking blue)";
		todo = "press RESET to return it to its application";
	} else if (broken) {
		left = describe_partial(state, detail, n, paths, partial, sizeof(partial))
			   ? partial
			   : "with a partly erased or written module: its application may not "
			     "start (it can stay in DFU mode or safe mode, breathing magenta)";
		todo = "flash the same files again before relying on it:";
	} else {
		left = "fully written; it was restarting or being verified";
		todo = "check what it runs with: flashctl info";
	}
	if (strcmp(device, "(no device)") == 0)
		fprintf(stderr, "  the job was cancelled while %s, before it had a device\n",
			state);
	else
		fprintf(stderr, "  the job on %s was cancelled while %s\n", device, state);
	fprintf(stderr, "  device left:   %s\n", left);
	fprintf(stderr, "  to recover:    %s", todo);
	if (broken) {
		fputc(' ', stderr);
		print_again_command(f, device, n, paths);
	} else if (strncmp(todo, "check", 5) == 0) {
		fprintf(stderr, " %s", device);
	}
	fputc('\n', stderr);
}

/* Device facts for the check verdict: "Photon, Device OS 1.5.2, listening mode". */
static void device_words(struct conn *c, const char *key, char *buf, size_t size)
{
	struct error err;
	error_init(&err);
	json_t *req = wire_request_new(WIRE_REQ_DEVICE_INFO, 0);
	json_object_set_new(req, "device", json_string(key));
	json_t *r = conn_call(c, req, NULL, 0, NULL, NULL, &err);
	json_decref(req);
	error_clear(&err);
	const json_t *d = json_object_get(r, "device");
	const char *plat = json_string_value(json_object_get(d, "platform"));
	const char *os = json_string_value(json_object_get(d, "os"));
	const struct platform *p = plat ? platform_by_name(plat) : NULL;
	snprintf(buf, size, "%s%s%s", p ? p->display : (plat ? plat : "unknown platform"),
		 os ? ", Device OS " : "", os ? os : "");
	json_decref(r);
}

/* After the display: each failed job's error (what, why, what to do). */
static void report(struct conn *c, struct follow *f, int n, char **paths)
{
	json_t *ev;
	size_t i, n_ends = json_array_size(f->ends);
	json_array_foreach(f->ends, i, ev)
	{
		const json_t *rec = json_object_get(ev, "record");
		const char *dev = json_string_value(json_object_get(rec, "device"));
		const char *result = json_string_value(json_object_get(ev, "result"));
		const json_t *ej = json_object_get(ev, "error");
		char words[160] = "";
		if (!dev)
			dev = "(no device)";
		if (f->a->check) {
			if (json_is_string(json_object_get(rec, "device")))
				device_words(c, dev, words, sizeof(words));
			bool ok = result && strcmp(result, "done") == 0;
			printf("%s: %s would %sflash on %s%s%s%s\n", ok ? "ok" : "no",
			       n == 1 ? paths[0] : "these files", ok ? "" : "not ", dev,
			       words[0] ? " (" : "", words, words[0] ? ")" : "");
			fflush(stdout);
		} else if (n_ends > 1 && json_is_object(ej)) {
			fprintf(stderr, "%s:\n", dev);
		}
		if (!json_is_object(ej))
			continue;
		struct error e;
		error_init(&e);
		/* A cancelled job gets advice for its state instead of the generic hint. */
		if (error_from_json(&e, ej) == 0 && e.code == ERR_CANCELLED)
			e.hint[0] = '\0';
		if (error_is_set(&e))
			render_error(f->g, &e);
		if (e.code == ERR_CANCELLED)
			advise_cancelled(f, ev, dev, n, paths);
		error_clear(&e);
	}
}

static void print_queued(const json_t *reply, const struct flash_args *a)
{
	json_t *job;
	size_t i;
	if (a->check && !a->detach)
		return;
	json_array_foreach(json_object_get(reply, "jobs"), i, job)
	    printf("job %s queued for %s\n", json_string_value(json_object_get(job, "id")),
		   json_is_string(json_object_get(job, "device"))
		       ? json_string_value(json_object_get(job, "device"))
		       : "the first matching device");
	fflush(stdout);
}

static int run(struct conn *c, const struct cli_global *g, const struct flash_args *a,
	       json_t *reply, int n, char **paths)
{
	struct follow f = {.g = g, .a = a, .pending = json_object(), .ends = json_array()};
	json_t *job;
	size_t i;
	const char *term = getenv("TERM");
	bool live = g->is_tty && !(term && strcmp(term, "dumb") == 0) && !a->check;
	if (!g->json) {
		f.prog = progress_new(g, live);
		if (!f.prog) {
			json_decref(f.pending);
			json_decref(f.ends);
			return render_usage_error(g, "out of memory");
		}
	}
	json_array_foreach(json_object_get(reply, "jobs"), i, job)
	{
		json_object_set_new(f.pending, json_string_value(json_object_get(job, "id")),
				    json_true());
		if (f.prog && !a->check)
			progress_add_job(f.prog, job);
	}
	int status = follow_jobs(c, &f);
	if (!g->json && json_array_size(f.ends) > 0)
		report(c, &f, n, paths);
	progress_free(f.prog);
	json_decref(f.pending);
	json_decref(f.ends);
	return status;
}

int flash_run(int argc, char **argv, const struct cli_global *g, bool check)
{
	struct flash_args a = {.check = check};
	struct error err;
	struct conn c;
	int fds[WIRE_IMAGES_MAX];
	int status = parse(argc, argv, g, &a);
	error_init(&err);
	if (status)
		return status;
	int n = argc - optind;
	char **paths = argv + optind;
	if ((status = open_files(n, paths, fds, g)))
		return status;
	if (conn_open(&c, g, &err) < 0) {
		status = render_error_free(g, &err);
		goto out_fds;
	}
	if (!a.detach) {
		/* Subscribed before the job exists: no event can be missed. */
		json_t *sub = wire_request_new(WIRE_REQ_SUBSCRIBE, 0);
		json_object_set_new(sub, "jobs", json_true());
		json_t *r = conn_call(&c, sub, NULL, 0, NULL, NULL, &err);
		json_decref(sub);
		if (!r) {
			status = render_error_free(g, &err);
			goto out;
		}
		json_decref(r);
	}
	json_t *req = build_request(&a, n, paths);
	json_t *reply = conn_call(&c, req, fds, (unsigned)n, NULL, NULL, &err);
	if (!reply && err.code == ERR_AMBIGUOUS_TARGET) {
		const char *key = pick(g, json_object_get(err.detail, "candidates"));
		if (key) {
			json_t *target = json_pack("{s:s}", "device", key);
			json_object_set_new(req, "target", target);
			error_clear(&err);
			reply = conn_call(&c, req, fds, (unsigned)n, NULL, NULL, &err);
		}
	}
	json_decref(req);
	if (!reply) {
		status = render_error_free(g, &err);
		goto out;
	}
	if (g->json)
		render_json_line(reply);
	else
		print_queued(reply, &a);
	status = a.detach ? 0 : run(&c, g, &a, reply, n, paths);
	json_decref(reply);
out:
	conn_close(&c);
out_fds:
	for (int i = 0; i < n; i++)
		close(fds[i]);
	json_decref(a.wait);
	error_clear(&err);
	return status;
}

int cmd_flash(int argc, char **argv, const struct cli_global *g)
{
	return flash_run(argc, argv, g, false);
}

int cmd_check(int argc, char **argv, const struct cli_global *g)
{
	return flash_run(argc, argv, g, true);
}
