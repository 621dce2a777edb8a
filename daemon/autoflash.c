#include "autoflash.h"

#include "history.h"
#include "log.h"
#include "settings.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HOOK_OUTPUT_MAX 4096 /* bytes of a hook's output kept for the history */
#define RATE_WINDOW_S	3600

enum slot_state {
	SLOT_IDLE,
	SLOT_PROBING,
	SLOT_FLASHING,
	SLOT_WAITING,  /* the rule's max_jobs are running */
	SLOT_FINISHED, /* its job ended (see last) */
	SLOT_SKIPPED,  /* once: already done */
	SLOT_NO_RULE,
	SLOT_CONFLICT,
	SLOT_ERROR,
};

static const char *const slot_names[] = {
    [SLOT_IDLE] = "idle",	[SLOT_PROBING] = "probing",   [SLOT_FLASHING] = "flashing",
    [SLOT_WAITING] = "waiting", [SLOT_FINISHED] = "finished", [SLOT_SKIPPED] = "skipped",
    [SLOT_NO_RULE] = "no-rule", [SLOT_CONFLICT] = "conflict", [SLOT_ERROR] = "error",
};

/* What auto-flash knows of one device (by registry key). */
struct af_slot {
	struct af_slot *next;
	char key[DEVICE_KEY_MAX];
	enum slot_state state;
	bool decided; /* for this presence */
	bool probed;  /* a probe ran in this presence */
	char job[40]; /* the job running for it (probe or flash), "" = none */
	bool job_is_probe;
	char rule[RULE_ID_MAX];
	double job_ended_mono; /* its last job's end, for auto_settle_ms */
	double seen_mono;      /* when this presence was first seen, for auto_tty_wait_ms */
	bool removed_early;    /* removed within auto_settle_ms of that end */
	char last_result[16], last_outcome[32], last_error[64], last_job[40],
	    last_rule[RULE_ID_MAX];
	char message[256]; /* why nothing was flashed (no rule, conflict) */
};

struct hook_run {
	struct hook_run *next;
	struct autoflash *af;
	pid_t pid;
	int pidfd, in_fd, out_fd;
	struct event *pid_ev, *in_ev, *out_ev, *timer;
	char *input;
	size_t input_len, input_off;
	char output[HOOK_OUTPUT_MAX + 1];
	size_t output_len;
	bool truncated, timed_out;
	double t0;
	char job[40], rule[RULE_ID_MAX], which[16];
	json_t *argv;
};

struct autoflash {
	struct event_base *base;
	struct registry *reg;
	struct jobs *jobs;
	struct rules *rules;
	const struct transport_ops *const *transports;
	struct history *history;
	struct af_slot *slots;
	struct event *kick;
	struct event *retry; /* decide again when the first device's tty wait runs out */
	double retry_at;     /* mono time it is armed for, 0 = not armed */
	struct hook_run *hooks;
	double since;
	unsigned long long flashed, failed, skipped;
	double ends[512]; /* realtime of recent successful flashes (ring), for the rate */
	unsigned n_ends, ends_at;
};

static const struct timeout_def auto_timeouts[] = {
    {"auto_settle_ms", 3000,
     "a device re-enumerating this soon after its auto-flash job ended is the same plug-in"},
    {"auto_tty_wait_ms", 3000,
     "a CDC device's tty appears after its USB device: auto-flash waits this long for it"},
    {0},
};

void autoflash_register_timeouts(void)
{
	timeouts_register(auto_timeouts);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct af_slot *slot_find(struct autoflash *af, const char *key)
{
	for (struct af_slot *s = af->slots; s; s = s->next)
		if (strcmp(s->key, key) == 0)
			return s;
	return NULL;
}

static struct af_slot *slot_get(struct autoflash *af, const struct device *dev)
{
	struct af_slot *s = slot_find(af, dev->s.key);
	if (s || !(s = calloc(1, sizeof(*s))))
		return s;
	snprintf(s->key, sizeof(s->key), "%s", dev->s.key);
	s->next = af->slots;
	af->slots = s;
	return s;
}

static struct af_slot *slot_of_job(struct autoflash *af, const char *job)
{
	for (struct af_slot *s = af->slots; s; s = s->next)
		if (s->job[0] && strcmp(s->job, job) == 0)
			return s;
	return NULL;
}

static void kick(struct autoflash *af)
{
	event_active(af->kick, 0, 0);
}

/* ---- deciding ------------------------------------------------------------------------ */

static const char *describe(const struct device *dev, char *buf, size_t size)
{
	snprintf(buf, size, "%s (%s, %s mode, USB port %s)", dev->s.key,
		 dev->s.facts.platform ? dev->s.facts.platform->name : "unknown platform",
		 device_mode_name(dev->s.mode), dev->s.port_path[0] ? dev->s.port_path : "?");
	return buf;
}

/* A job of the rule for the device; probe: no images, nothing written (the
 * probe is made for the rule, so it carries the rule's id too). */
static struct job *submit(struct autoflash *af, struct device *dev, struct rule *rule, bool probe,
			  struct error *err)
{
	struct job_request jr;
	memset(&jr, 0, sizeof(jr));
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", dev->s.key);
	jr.device = dev;
	jr.opts.detach = true;
	jr.uid = rule->owner;
	jr.gid = (gid_t)-1;
	snprintf(jr.rule, sizeof(jr.rule), "%s", rule->id);
	/* The port's label, else the rule's own (a rule for any port may name its boards). */
	const char *label = rules_port_label(af->rules, dev->s.port_path);
	snprintf(jr.label, sizeof(jr.label), "%s", label[0] ? label : rule->label);
	if (!probe) {
		jr.opts.verify = true;
		/* Whether the device is at the target already is the planner's call: it
		 * skips what is installed identically (a job with nothing to write ends
		 * done / already-installed).  A rule that always writes asks it to write
		 * identical modules again, with every check still made (not --force). */
		jr.opts.rewrite = !rule->skip_installed;
		for (unsigned i = 0; i < rule->n_images; i++) {
			jr.images[i] = rule->images[i].ref;
			jr.images[i]->refs++; /* the job's own reference */
			snprintf(jr.names[i], sizeof(jr.names[i]), "%s", rule->images[i].name);
		}
		jr.n_images = rule->n_images;
		/* a bundle's assets: files of the job after the rule's own (as server.c does) */
		for (unsigned i = 0; i < rule->n_images; i++) {
			unsigned n = 0;
			if (image_ref_expand_assets(rules_image_cache(af->rules), jr.images[i],
						    jr.names[i], &jr.images[jr.n_images],
						    &jr.names[jr.n_images],
						    WIRE_IMAGES_MAX - jr.n_images, &n, err) < 0) {
				for (unsigned k = 0; k < jr.n_images; k++)
					image_cache_put(rules_image_cache(af->rules), jr.images[k]);
				return NULL;
			}
			jr.n_images += n;
		}
	} else {
		jr.opts.dry_run = true; /* a probe: nothing is written */
	}
	struct job *job = jobs_create(af->jobs, &jr, err);
	if (job)
		jobs_submit(af->jobs, job);
	return job;
}

/* A job started before a CDC device's tty exists is read and planned without its
 * console: the same board would be flashed over serial or DFU depending on who wins
 * the race with cdc-acm.  So wait for the tty, as a --wait job does, for a while:
 * a device whose tty never comes (no cdc-acm) is decided without it. */
static bool waits_for_tty(struct autoflash *af, struct af_slot *s, const struct device *dev)
{
	if (registry_device_ready(dev))
		return false;
	double now = mono_s(), wait = timeout_ms("auto_tty_wait_ms") / 1000.0;
	if (s->seen_mono <= 0)
		s->seen_mono = now;
	double left = s->seen_mono + wait - now;
	if (left <= 0)
		return false;
	if (!af->retry_at || af->retry_at > now + left) {
		/* one timer for every waiting device: armed for the first to run out (the
		 * registry's device-changed with the tty usually comes long before) */
		struct timeval tv = {(time_t)left,
				     (suseconds_t)((left - (time_t)left) * 1e6) + 1000};
		evtimer_add(af->retry, &tv);
		af->retry_at = now + left;
	}
	return true;
}

static void decide(struct autoflash *af, struct device *dev)
{
	char what[512];
	struct af_slot *s = slot_get(af, dev);
	if (!s || s->decided || s->job[0] || !dev->s.present || jobs_holding_device(af->jobs, dev))
		return;
	/* Not before a transport can work on it: a CDC device's tty appears a moment
	 * after its USB device (the registry's device-changed brings us back). */
	bool servable = false;
	for (size_t i = 0; af->transports[i] && !servable; i++)
		servable = af->transports[i]->can_serve && af->transports[i]->can_serve(&dev->s);
	if (!servable || waits_for_tty(af, s, dev))
		return;
	/* The candidates of the highest priority. */
	struct rule *best[8];
	unsigned n_best = 0;
	bool need_facts = false;
	int prio = 0;
	for (struct rule *r = rules_first(af->rules); r; r = r->next) {
		if (r->paused)
			continue;
		enum rule_match m = rule_matches(r, dev);
		if (m == RULE_NO || (m == RULE_NEED_FACTS && s->probed))
			continue;
		if (n_best == 0 || r->priority > prio) {
			n_best = 0;
			need_facts = false;
			prio = r->priority;
		} else if (r->priority < prio) {
			continue;
		}
		need_facts = need_facts || m == RULE_NEED_FACTS;
		if (n_best < sizeof(best) / sizeof(best[0]))
			best[n_best++] = r;
	}
	s->decided = true;
	s->message[0] = '\0';
	if (n_best == 0) {
		s->state = SLOT_NO_RULE;
		snprintf(s->message, sizeof(s->message), "no rule matched");
		log_info("auto: no rule matched device %s", describe(dev, what, sizeof(what)));
		return;
	}
	struct rule *rule = best[0];
	const char *id = dev->s.facts.device_id[0] ? dev->s.facts.device_id : dev->s.usb_serial;
	if (n_best == 1 && rule->once && rule_done_has(rule, id)) {
		s->state = SLOT_SKIPPED;
		snprintf(s->rule, sizeof(s->rule), "%s", rule->id);
		snprintf(s->message, sizeof(s->message), "rule %s already flashed it (once)",
			 rule->id);
		af->skipped++;
		log_info("auto: %s: rule %s flashed it already (once): skipped", dev->s.key,
			 rule->id);
		return;
	}
	/* Probe first when the match needs the installed OS (what is installed for
	 * skip_installed is the flash job's planner's to find). */
	if (need_facts) {
		struct error err;
		error_init(&err);
		struct job *job = submit(af, dev, rule, true, &err);
		if (!job) {
			log_warning("auto: cannot probe %s: %s", dev->s.key, err.message);
			error_clear(&err);
			s->decided = false;
			s->state = SLOT_WAITING;
			return;
		}
		s->state = SLOT_PROBING;
		s->job_is_probe = true;
		snprintf(s->job, sizeof(s->job), "%s", job_id(job));
		return;
	}
	if (n_best > 1) {
		struct error err;
		error_init(&err);
		json_t *ids = json_array();
		char list[256] = "";
		for (unsigned i = 0; i < n_best; i++) {
			json_array_append_new(ids, json_string(best[i]->id));
			size_t l = strlen(list);
			snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "", best[i]->id);
		}
		error_set(&err, ERR_RULE_CONFLICT,
			  "rules %s match device %s with the same priority %d; nothing was flashed",
			  list, dev->s.key, prio);
		error_detail_json(&err, "rules", ids);
		error_detail_int(&err, "priority", prio);
		error_detail_str(&err, "port", dev->s.port_path);
		error_detail_str(&err, "device", dev->s.key);
		log_error("auto: rule-conflict: %s", err.message);
		s->state = SLOT_CONFLICT;
		snprintf(s->message, sizeof(s->message), "rule-conflict: %.200s", err.message);
		snprintf(s->last_error, sizeof(s->last_error), "rule-conflict");
		error_clear(&err);
		return;
	}
	if (rule->max_jobs && rule->running >= rule->max_jobs) {
		s->decided = false; /* again when one of the rule's jobs ends */
		s->state = SLOT_WAITING;
		return;
	}
	struct error err;
	error_init(&err);
	struct job *job = submit(af, dev, rule, false, &err);
	if (!job) {
		log_warning("auto: rule %s: cannot start a job for %s: %s", rule->id, dev->s.key,
			    err.message);
		error_clear(&err);
		s->decided = false;
		s->state = SLOT_WAITING;
		return;
	}
	rule->running++;
	s->state = SLOT_FLASHING;
	s->job_is_probe = false;
	snprintf(s->job, sizeof(s->job), "%s", job_id(job));
	snprintf(s->rule, sizeof(s->rule), "%s", rule->id);
	log_info("auto: rule %s: job %s for %s", rule->id, job_id(job),
		 describe(dev, what, sizeof(what)));
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct autoflash *af = arg;
	evtimer_del(af->retry); /* the devices still waiting arm it again */
	af->retry_at = 0;
	for (struct device *d = registry_first(af->reg); d; d = d->next)
		if (d->s.present)
			decide(af, d);
	/* Devices the registry has forgotten (gone for registry_forget_ms) lose
	 * their slot: a station sees many boards, the table stays small. */
	for (struct af_slot **pp = &af->slots; *pp;) {
		struct af_slot *s = *pp;
		if (!s->job[0] && !registry_find_key(af->reg, s->key)) {
			*pp = s->next;
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

static void forget_decision(struct af_slot *s)
{
	s->seen_mono = 0;
	s->decided = false;
	s->probed = false;
	s->removed_early = false;
	s->state = SLOT_IDLE;
}

void autoflash_on_device(struct autoflash *af, struct device *dev, enum registry_change change)
{
	struct af_slot *s = slot_find(af, dev->s.key);
	double settle = timeout_ms("auto_settle_ms") / 1000.0;
	if (s && !s->job[0] && change == REGISTRY_REMOVED) {
		/* Unplugged: decided again when it comes back, unless it is back
		 * within auto_settle_ms of its job's end (the job's own reset). */
		if (mono_s() - s->job_ended_mono > settle)
			forget_decision(s);
		else
			s->removed_early = true;
	} else if (s && !s->job[0] && change == REGISTRY_ADDED && s->removed_early) {
		if (mono_s() - s->job_ended_mono > settle)
			forget_decision(s); /* it stayed away: a new plug-in */
		s->removed_early = false;
	}
	if (change != REGISTRY_REMOVED)
		kick(af);
}

void autoflash_rules_changed(struct autoflash *af)
{
	for (struct af_slot *s = af->slots; s; s = s->next)
		if (!s->job[0] && (s->state == SLOT_NO_RULE || s->state == SLOT_CONFLICT ||
				   s->state == SLOT_WAITING || s->state == SLOT_IDLE)) {
			s->decided = false;
			s->probed = false;
		}
	kick(af);
}

void autoflash_rule_removed(struct autoflash *af, struct rule *rule)
{
	(void)af;
	(void)rule; /* slots keep the id as text; running jobs keep theirs */
}

/* ---- hooks -------------------------------------------------------------------------------- */

static void hook_free(struct hook_run *h)
{
	for (struct hook_run **pp = &h->af->hooks; *pp; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	if (h->pid_ev)
		event_free(h->pid_ev);
	if (h->in_ev)
		event_free(h->in_ev);
	if (h->out_ev)
		event_free(h->out_ev);
	if (h->timer)
		event_free(h->timer);
	if (h->pidfd >= 0)
		close(h->pidfd);
	if (h->in_fd >= 0)
		close(h->in_fd);
	if (h->out_fd >= 0)
		close(h->out_fd);
	free(h->input);
	json_decref(h->argv);
	free(h);
}

static void hook_read(struct hook_run *h)
{
	char buf[4096];
	for (;;) {
		ssize_t n = read(h->out_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0 || errno != EAGAIN) {
				event_del(h->out_ev);
				close(h->out_fd);
				h->out_fd = -1;
			}
			return;
		}
		size_t room = HOOK_OUTPUT_MAX - h->output_len;
		size_t take = (size_t)n < room ? (size_t)n : room;
		memcpy(h->output + h->output_len, buf, take);
		h->output_len += take;
		h->truncated = h->truncated || take < (size_t)n;
	}
}

static void on_hook_out(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	hook_read(arg);
}

static void on_hook_in(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct hook_run *h = arg;
	while (h->input_off < h->input_len) {
		ssize_t n = write(fd, h->input + h->input_off, h->input_len - h->input_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			break; /* the hook does not read its input: fine */
		h->input_off += (size_t)n;
	}
	event_del(h->in_ev);
	close(h->in_fd);
	h->in_fd = -1;
}

static void on_hook_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct hook_run *h = arg;
	h->timed_out = true;
	log_warning("auto: job %s: %s hook did not end within its timeout: killing it", h->job,
		    h->which);
	kill(-h->pid, SIGKILL);
	kill(h->pid, SIGKILL);
}

static void on_hook_exit(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct hook_run *h = arg;
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return;
	if (h->out_fd >= 0)
		hook_read(h); /* what it wrote before it ended */
	h->output[h->output_len] = '\0';
	/* JSON strings are UTF-8: a hook that prints other bytes gets them as '?'. */
	json_t *probe = json_stringn(h->output, h->output_len);
	if (!probe)
		for (size_t i = 0; i < h->output_len; i++)
			if ((unsigned char)h->output[i] >= 0x80 || h->output[i] == '\0')
				h->output[i] = '?';
	json_decref(probe);
	bool exited = si.si_code == CLD_EXITED;
	json_t *rec = json_pack(
	    "{s:s, s:O, s:o, s:o, s:b, s:s, s:b, s:f}", "hook", h->which, "argv", h->argv,
	    "exit_status", exited ? json_integer(si.si_status) : json_null(), "signal",
	    exited ? json_null() : json_integer(si.si_status), "timed_out", h->timed_out, "output",
	    h->output, "output_truncated", h->truncated, "duration_s", mono_s() - h->t0);
	if (!rec)
		rec = json_pack("{s:s}", "hook", h->which);
	log_info("auto: job %s: %s hook %s %d%s", h->job, h->which, exited ? "exited" : "killed by",
		 si.si_status, h->timed_out ? " (timed out)" : "");
	history_job_hook(h->af->history, h->job, rec);
	hook_free(h);
}

static void run_hook(struct autoflash *af, struct rule *rule, struct job *job, const json_t *event,
		     bool success)
{
	char *const *argv = success ? rule->on_success : rule->on_failure;
	if (!argv[0])
		return;
	struct hook_run *h = calloc(1, sizeof(*h));
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	if (!h || pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		log_error("auto: job %s: cannot run the hook: %s", job_id(job), strerror(errno));
		goto fail;
	}
	h->af = af;
	h->pidfd = h->in_fd = h->out_fd = -1;
	snprintf(h->job, sizeof(h->job), "%s", job_id(job));
	snprintf(h->rule, sizeof(h->rule), "%s", rule->id);
	snprintf(h->which, sizeof(h->which), "%s", success ? "on_success" : "on_failure");
	h->argv = json_array();
	for (size_t i = 0; argv[i]; i++)
		json_array_append_new(h->argv, json_string(argv[i]));
	char *text = json_dumps(event, JSON_COMPACT);
	size_t len = text ? strlen(text) : 0;
	if (text && (h->input = malloc(len + 1))) {
		memcpy(h->input, text, len);
		h->input[len] = '\n';
		h->input_len = len + 1;
	}
	free(text);
	/* The environment is built before fork: the child only calls async-signal-safe functions.
	 */
	char env_job[80], env_rule[RULE_ID_MAX + 16], env_result[48], env_dev[DEVICE_KEY_MAX + 16];
	snprintf(env_job, sizeof(env_job), "FLASHD_JOB=%s", job_id(job));
	snprintf(env_rule, sizeof(env_rule), "FLASHD_RULE=%s", rule->id);
	snprintf(env_result, sizeof(env_result), "FLASHD_RESULT=%s",
		 job_result_name(job_state(job) == JOB_DONE	     ? JOB_RESULT_DONE
				 : job_state(job) == JOB_CANCELLED   ? JOB_RESULT_CANCELLED
				 : job_state(job) == JOB_INTERRUPTED ? JOB_RESULT_INTERRUPTED
								     : JOB_RESULT_FAILED));
	snprintf(env_dev, sizeof(env_dev), "FLASHD_DEVICE=%s", job_device(job)->key);
	char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			env_job,
			env_rule,
			env_result,
			env_dev,
			NULL};
	pid_t pid = fork();
	if (pid < 0) {
		log_error("auto: job %s: fork: %s", job_id(job), strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		setpgid(0, 0);
		dup2(in[0], STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(out[1], STDERR_FILENO);
		close_range(3, ~0u, 0);
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		sigaction(SIGPIPE, &sa, NULL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	h->pid = pid;
	h->t0 = mono_s();
	close(in[0]);
	close(out[1]);
	in[0] = out[1] = -1;
	h->in_fd = in[1];
	h->out_fd = out[0];
	fcntl(h->in_fd, F_SETFL, O_NONBLOCK);
	fcntl(h->out_fd, F_SETFL, O_NONBLOCK);
	h->pidfd = pidfd_open(pid, 0);
	if (h->pidfd < 0) {
		log_error("auto: job %s: pidfd_open: %s", job_id(job), strerror(errno));
		/* Without a pidfd (Linux < 5.3) there is no way to watch it from the
		 * loop: killed, and reaped if it is already gone (the loop never waits). */
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, WNOHANG);
		goto fail;
	}
	h->pid_ev = event_new(af->base, h->pidfd, EV_READ | EV_PERSIST, on_hook_exit, h);
	h->in_ev = event_new(af->base, h->in_fd, EV_WRITE | EV_PERSIST, on_hook_in, h);
	h->out_ev = event_new(af->base, h->out_fd, EV_READ | EV_PERSIST, on_hook_out, h);
	h->timer = evtimer_new(af->base, on_hook_timeout, h);
	struct timeval tv = {(time_t)rule->hook_timeout_s, 0};
	event_add(h->pid_ev, NULL);
	event_add(h->in_ev, NULL);
	event_add(h->out_ev, NULL);
	evtimer_add(h->timer, &tv);
	h->next = af->hooks;
	af->hooks = h;
	log_info("auto: job %s: running the %s hook %s", job_id(job), h->which, argv[0]);
	return;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	if (h) {
		h->in_fd = h->out_fd = -1;
		h->pidfd = -1;
		free(h->input);
		json_decref(h->argv);
		free(h);
	}
}

/* ---- job events ---------------------------------------------------------------------------- */

void autoflash_on_job_event(struct autoflash *af, struct job *job, const json_t *event)
{
	const char *name = json_string_value(json_object_get(event, "event"));
	if (!name || strcmp(name, "job-ended") != 0)
		return;
	struct af_slot *s = slot_of_job(af, job_id(job));
	if (!s)
		return;
	s->job[0] = '\0';
	s->job_ended_mono = mono_s();
	if (s->job_is_probe) {
		/* Decide again, now with what the probe learnt. */
		s->job_is_probe = false;
		s->probed = true;
		s->decided = false;
		s->state = SLOT_IDLE;
		kick(af);
		return;
	}
	struct rule *rule = rules_find(af->rules, job_rule(job));
	if (rule && rule->running)
		rule->running--;
	/* Its unplug went to the job (waited for, replug_timeout_s), not to us: a
	 * device still away when its job ends (device-gone) is a new plug-in when it
	 * comes back, decided again. */
	if (!job_device(job)->present) {
		s->decided = false;
		s->removed_early = false;
	}
	enum job_state st = job_state(job);
	const json_t *outcome = json_object_get(event, "outcome");
	const struct error *e = job_error(job);
	s->state = SLOT_FINISHED;
	snprintf(s->last_result, sizeof(s->last_result), "%s",
		 json_string_value(json_object_get(event, "result")));
	snprintf(s->last_outcome, sizeof(s->last_outcome), "%s",
		 json_is_string(outcome) ? json_string_value(outcome) : "");
	snprintf(s->last_error, sizeof(s->last_error), "%s",
		 error_is_set(e) ? error_id(e->code) : "");
	snprintf(s->last_job, sizeof(s->last_job), "%s", job_id(job));
	snprintf(s->last_rule, sizeof(s->last_rule), "%s", job_rule(job));
	bool ok = st == JOB_DONE;
	bool skipped = ok && json_is_string(outcome) &&
		       strcmp(json_string_value(outcome), "already-installed") == 0;
	if (skipped) {
		af->skipped++;
	} else if (ok) {
		af->flashed++;
		af->ends[af->ends_at] = now_s();
		af->ends_at = (af->ends_at + 1) % (sizeof(af->ends) / sizeof(af->ends[0]));
		if (af->n_ends < sizeof(af->ends) / sizeof(af->ends[0]))
			af->n_ends++;
	} else {
		af->failed++;
	}
	if (rule) {
		const struct device_snapshot *d = job_device(job);
		const char *id = d->facts.device_id[0] ? d->facts.device_id : d->usb_serial;
		if (ok)
			rules_done_add(af->rules, rule, id);
		/* A hook signals what the job did to the board: a skipped one runs none. */
		if (!skipped)
			run_hook(af, rule, job, event, ok);
	}
	kick(af); /* a rule's waiting devices */
}

/* ---- station ----------------------------------------------------------------------------------
 */

static json_t *port_json(struct autoflash *af, struct device *d, struct af_slot *s)
{
	json_t *o = json_object();
	const char *port = d ? d->s.port_path : "";
	const char *label = rules_port_label(af->rules, port);
	json_object_set_new(o, "port", port[0] ? json_string(port) : json_null());
	json_object_set_new(o, "label", label[0] ? json_string(label) : json_null());
	json_object_set_new(o, "device", d ? json_string(d->s.key) : json_null());
	json_object_set_new(o, "id",
			    d && d->s.facts.device_id[0] ? json_string(d->s.facts.device_id)
							 : json_null());
	json_object_set_new(o, "platform",
			    d && d->s.facts.platform ? json_string(d->s.facts.platform->name)
						     : json_null());
	json_object_set_new(o, "mode", d ? json_string(device_mode_name(d->s.mode)) : json_null());
	json_object_set_new(o, "present", json_boolean(d && d->s.present));
	const char *state = s ? slot_names[s->state] : d ? "idle" : "empty";
	struct job *job = s && s->job[0] ? jobs_find(af->jobs, s->job) : NULL;
	if (!job && d)
		job = jobs_holding_device(af->jobs, d);
	if (job && !job_ended(job)) {
		json_t *rec = job_to_json(job);
		json_t *prog = json_object_get(rec, "progress");
		json_int_t done = json_integer_value(json_object_get(prog, "done"));
		json_int_t total = json_integer_value(json_object_get(prog, "total"));
		json_decref(rec);
		json_object_set_new(o, "job", json_string(job_id(job)));
		json_object_set_new(o, "job_state", json_string(job_state_name(job_state(job))));
		json_object_set_new(
		    o, "progress",
		    json_pack("{s:I, s:I, s:o}", "done", done, "total", total, "percent",
			      total ? json_integer(done * 100 / total) : json_null()));
		if (!s || !s->job[0])
			state = "busy"; /* a job of a client, not of a rule */
	} else {
		json_object_set_new(o, "job", json_null());
		json_object_set_new(o, "job_state", json_null());
		json_object_set_new(o, "progress", json_null());
	}
	json_object_set_new(o, "state", json_string(state));
	json_object_set_new(o, "rule", s && s->rule[0] ? json_string(s->rule) : json_null());
	json_object_set_new(o, "message",
			    s && s->message[0] ? json_string(s->message) : json_null());
	json_object_set_new(o, "last",
			    s && s->last_job[0]
				? json_pack("{s:s, s:s, s:s?, s:s?, s:s?}", "job", s->last_job,
					    "result", s->last_result, "outcome",
					    s->last_outcome[0] ? s->last_outcome : NULL, "error",
					    s->last_error[0] ? s->last_error : NULL, "rule",
					    s->last_rule[0] ? s->last_rule : NULL)
				: json_null());
	return o;
}

json_t *autoflash_station_json(struct autoflash *af)
{
	json_t *ports = json_array();
	json_t *labels = rules_labels_json(af->rules);
	for (struct device *d = registry_first(af->reg); d; d = d->next) {
		if (!d->s.present)
			continue;
		json_array_append_new(ports, port_json(af, d, slot_find(af, d->s.key)));
		json_object_del(labels, d->s.port_path);
	}
	/* Labelled ports with nothing plugged in. */
	const char *port;
	json_t *label;
	json_object_foreach(labels, port, label)
	{
		json_array_append_new(
		    ports, json_pack("{s:s, s:O, s:n, s:n, s:n, s:n, s:b, s:s, s:n,"
				     " s:n, s:n, s:n, s:n, s:n}",
				     "port", port, "label", label, "device", "id", "platform",
				     "mode", "present", 0, "state", "empty", "job", "job_state",
				     "progress", "rule", "message", "last"));
	}
	json_decref(labels);
	double now = now_s(), window = now - af->since;
	if (window > RATE_WINDOW_S)
		window = RATE_WINDOW_S;
	unsigned recent = 0;
	for (unsigned i = 0; i < af->n_ends; i++)
		recent += now - af->ends[i] <= RATE_WINDOW_S;
	/* At least a minute of window: the first board is not "3600 per hour". */
	double rate = recent / ((window < 60 ? 60 : window) / 3600.0);
	unsigned n_rules = 0, active = 0;
	for (struct rule *r = rules_first(af->rules); r; r = r->next) {
		n_rules++;
		active += !r->paused;
	}
	return json_pack("{s:f, s:{s:I, s:I, s:I}, s:f, s:{s:i, s:i}, s:o}", "since", af->since,
			 "counters", "flashed", (json_int_t)af->flashed, "failed",
			 (json_int_t)af->failed, "skipped", (json_int_t)af->skipped,
			 "rate_per_hour", rate, "rules", "total", n_rules, "active", active,
			 "ports", ports);
}

/* ---- lifecycle ----------------------------------------------------------------------------------
 */

struct autoflash *autoflash_new(struct event_base *base, struct registry *reg, struct jobs *jobs,
				struct rules *rules, const struct transport_ops *const *transports)
{
	struct autoflash *af = calloc(1, sizeof(*af));
	if (!af)
		return NULL;
	af->base = base;
	af->reg = reg;
	af->jobs = jobs;
	af->rules = rules;
	af->transports = transports;
	af->since = now_s();
	af->kick = event_new(base, -1, 0, kick_cb, af);
	af->retry = evtimer_new(base, kick_cb, af);
	autoflash_register_timeouts();
	return af;
}

void autoflash_set_history(struct autoflash *af, struct history *h)
{
	af->history = h;
}

void autoflash_free(struct autoflash *af)
{
	if (!af)
		return;
	while (af->hooks) {
		/* Still running at shutdown: they are left to finish on their own. */
		struct hook_run *h = af->hooks;
		log_warning("auto: job %s: the %s hook is still running at shutdown", h->job,
			    h->which);
		hook_free(h);
	}
	while (af->slots) {
		struct af_slot *s = af->slots;
		af->slots = s->next;
		free(s);
	}
	event_free(af->kick);
	event_free(af->retry);
	free(af);
}
