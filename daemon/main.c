/*
 * flashd: command line, configuration, the listening socket (own or
 * systemd-activated), readiness notification, and the one event loop that
 * runs everything: udev, clients, jobs, transports.
 */
#include "cleanup.h"
#include "config.h"

#include "autoflash.h"
#include "history.h"
#include "image_cache.h"
#include "jobs.h"
#include "log.h"
#include "mqtt.h"
#include "registry.h"
#include "rules.h"
#include "server.h"
#include "settings.h"
#include "transports.h"
#include "udev_source.h"
#include "upload.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3
#define LISTEN_BACKLOG	    128

struct options {
	const char *socket_path;
	const char *state_dir;
	const char *config_file;
	int log_level;
	bool foreground;
};

struct daemon {
	struct event_base *base;
	struct registry *reg;
	struct image_cache *images;
	struct jobs *jobs;
	struct history *history;
	struct mqtt *mqtt; /* NULL without [mqtt] */
	struct server *server;
	struct udev_source *udev;
	struct rules *rules;
	struct autoflash *autoflash;
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: flashd [--socket PATH] [--state-dir DIR] [--config FILE]\n"
		     "              [--log-level error|warning|info|debug] [--foreground]\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'}, {"state-dir", required_argument, NULL, 'd'},
	    {"config", required_argument, NULL, 'c'}, {"log-level", required_argument, NULL, 'l'},
	    {"foreground", no_argument, NULL, 'f'},   {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},      {0},
	};
	int c;
	o->log_level = LOG_INFO;
	while ((c = getopt_long(argc, argv, "s:d:c:l:fhV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->socket_path = optarg;
			break;
		case 'd':
			o->state_dir = optarg;
			break;
		case 'c':
			o->config_file = optarg;
			break;
		case 'l':
			o->log_level = log_level_from_name(optarg);
			if (o->log_level < 0) {
				fprintf(stderr, "flashd: unknown log level '%s'\n", optarg);
				return -1;
			}
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("flashd %s\n", FLASHD_VERSION);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return -1;
	}
	return 0;
}

/* Many clients and devices: use the hard limit (issue 5). */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warning("cannot raise the fd limit: %s", strerror(errno));
	}
}

/* systemd socket activation without libsystemd (sd_listen_fds(3) protocol). */
static int activated_socket(void)
{
	const char *pid = getenv("LISTEN_PID");
	const char *fds = getenv("LISTEN_FDS");
	if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid() || strtol(fds, NULL, 10) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	int fd = SD_LISTEN_FDS_START;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

static void notify_ready(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	static const char msg[] = "READY=1\nSTATUS=flashd is serving";
	if (sendto(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		log_warning("readiness notification failed: %s", strerror(errno));
	close(fd);
}

static int default_socket_path(char *buf, size_t size)
{
	if (geteuid() == 0) {
		if (mkdir(FLASHD_RUNSTATEDIR, 0755) < 0 && errno != EEXIST)
			log_warning("cannot create %s: %s", FLASHD_RUNSTATEDIR, strerror(errno));
		snprintf(buf, size, "%s/flashd.sock", FLASHD_RUNSTATEDIR);
		return 0;
	}
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (!xdg || !*xdg) {
		log_error("XDG_RUNTIME_DIR is not set: give --socket PATH");
		return -1;
	}
	snprintf(buf, size, "%s/flashd.sock", xdg);
	return 0;
}

/* The socket's group: the configured one (a name or a number), else the
 * daemon's primary group with a warning. */
static gid_t socket_gid(const struct config *cfg)
{
	char *end;
	struct group *g = getgrnam(cfg->socket_group);
	if (g)
		return g->gr_gid;
	unsigned long n = strtoul(cfg->socket_group, &end, 10);
	if (cfg->socket_group[0] && !*end && n < (gid_t)-1)
		return (gid_t)n;
	log_warning("no group %s on this machine: the socket belongs to the daemon's primary "
		    "group (gid %u); create the group (systemd-sysusers) or set socket_group",
		    cfg->socket_group, (unsigned)getegid());
	return getegid();
}

static int bind_socket(const char *path, const struct config *cfg)
{
	/* As root, a socket that any local user reaches lets any of them flash any
	 * board (and bypass the udev rules' flashd group): only when asked for. */
	if (geteuid() == 0 && (cfg->socket_mode & 0007) && !cfg->world_socket) {
		log_error("refusing to create %s with mode %04o as root: every local user could "
			  "flash every board; use socket_mode = 0660 with socket_group, or set "
			  "world_socket = yes if that is really meant",
			  path, cfg->socket_mode);
		return -1;
	}
	gid_t gid = socket_gid(cfg);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("socket path too long: %s", path);
		return -1;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	{
		_cleanup_close_ int probe =
		    socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (probe < 0)
			return -1;
		/* Remove a stale socket, but never one a running daemon answers on. */
		if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			log_error("another flashd is already serving %s", path);
			return -1;
		}
	}
	/* Bind and listen under a temporary name, then rename into place: a client
	 * that sees the path can always connect (no window between bind and listen). */
	struct sockaddr_un tmp = {.sun_family = AF_UNIX};
	if ((size_t)snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%s.%ld.tmp", path,
			     (long)getpid()) >= sizeof(tmp.sun_path)) {
		log_error("socket path too long: %s", path);
		return -1;
	}
	unlink(tmp.sun_path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/* Born owner-only (umask), then given to the group: never more open than asked. */
	mode_t old_umask = umask(0177);
	int bound = bind(fd, (struct sockaddr *)&tmp, sizeof(tmp));
	umask(old_umask);
	if (bound < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
	    (gid != getegid() && chown(tmp.sun_path, (uid_t)-1, gid) < 0) ||
	    chmod(tmp.sun_path, cfg->socket_mode) < 0 || rename(tmp.sun_path, path) < 0) {
		/* Who may connect: the socket group (flashing); who may administer: the
		 * admin group and root (server.c, SO_PEERCRED / SO_PEERGROUPS). */
		log_error("cannot listen on %s: %s", path, strerror(errno));
		(void)unlink(tmp.sun_path); /* best effort: a leftover name is removed next start */
		return -1;
	}
	return TAKE_FD(fd);
}

/*
 * libevent's own warnings go to our log at debug level: under umockdev the
 * emulated usbfs node is refused by epoll ("Epoll ADD ... Operation not
 * permitted") and the DFU transport polls it instead (daemon/dfu/usb.c), so
 * the warning is expected noise there, not something a user must act on.
 */
static void on_libevent_log(int severity, const char *msg)
{
	log_msg(severity >= EVENT_LOG_ERR ? LOG_ERR : LOG_DEBUG, "libevent: %s", msg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	log_info("signal %d: stopping", (int)sig);
	event_base_loopbreak(arg);
}

static void on_device(void *ctx, struct device *dev, enum registry_change change)
{
	struct daemon *d = ctx;
	if (d->server)
		server_device_event(d->server, dev, change);
	mqtt_device_event(d->mqtt, dev, change);
	if (d->jobs)
		jobs_on_device(d->jobs, dev, change);
	if (d->autoflash)
		autoflash_on_device(d->autoflash, dev, change);
}

static void on_job_event(void *ctx, struct job *job, json_t *event)
{
	struct daemon *d = ctx;
	if (d->server)
		server_job_event(d->server, job, event);
	if (d->autoflash)
		autoflash_on_job_event(d->autoflash, job, event);
	mqtt_job_event(d->mqtt, job, event);
}

/* SIGHUP: the rule files are read again. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	struct daemon *d = arg;
	log_info("SIGHUP: reloading the auto-flash rule files");
	json_decref(rules_reload_files(d->rules));
	autoflash_rules_changed(d->autoflash);
}

static int prepare_state_dir(const char *dir)
{
	if (!dir)
		return 0;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		log_error("cannot create state directory %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

static void daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		exit(1);
	}
	if (pid > 0)
		_exit(0);
	setsid();
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct config cfg;
	struct error err;
	struct daemon d = {0};
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	error_init(&err);
	if (parse_args(argc, argv, &o) < 0)
		return 2;
	log_set_level(o.log_level);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();

	event_set_log_callback(on_libevent_log);
	if (!(d.base = event_base_new()) || !(d.reg = registry_new(d.base)))
		return 1;
	config_defaults(&cfg);
	/* Timeout keys are registered (core and transports) before the config
	 * file is read, so that it can set them. */
	jobs_register_timeouts(transports_builtin());
	server_register_timeouts();
	uploads_register_timeouts();
	autoflash_register_timeouts();
	/* The [mqtt] section is checked as a whole here too (files, credentials,
	 * TLS): a station that cannot publish as configured does not start. */
	if ((o.config_file && config_load(&cfg, o.config_file, &err) < 0) ||
	    (cfg.mqtt.enabled && !(d.mqtt = mqtt_new(d.base, &cfg.mqtt, d.reg, &err)))) {
		log_error("%s [%s]; %s", err.message, error_id(err.code), err.hint);
		error_clear(&err);
		registry_free(d.reg);
		event_base_free(d.base);
		return 2;
	}
	/* The transports take lock files in $FLASHD_LOCK_DIR; the environment wins
	 * over the config file's lock_dir (flashd(8)). */
	if (cfg.lock_dir[0] && !getenv("FLASHD_LOCK_DIR"))
		setenv("FLASHD_LOCK_DIR", cfg.lock_dir, 1);
	d.images = image_cache_new(cfg.image_memory_max);
	d.jobs =
	    jobs_new(d.base, d.reg, d.images, transports_builtin(), cfg.max_jobs, cfg.job_history);
	if (!d.images || !d.jobs)
		return 1;
	jobs_set_replug_timeout(d.jobs, cfg.replug_timeout_s);
	if (prepare_state_dir(o.state_dir) < 0)
		return 1;

	int lfd = activated_socket();
	bool activated = lfd >= 0;
	if (!activated) {
		if (!o.socket_path && default_socket_path(path, sizeof(path)) == 0)
			o.socket_path = path;
		if (!o.socket_path || (lfd = bind_socket(o.socket_path, &cfg)) < 0)
			return 1;
	}
	if (!o.foreground && !activated && !getenv("NOTIFY_SOCKET"))
		daemonize();

	/* After daemonize(): the history has a thread, and fork() keeps only the
	 * calling one.  Without a state directory there is no history; a database
	 * that cannot be opened leaves the daemon flashing without one (logged;
	 * the history request says why). */
	char history_off[ERROR_MESSAGE_MAX] = "flashd runs without a state directory (--state-dir)";
	if (o.state_dir && !(d.history = history_open(d.base, o.state_dir, &cfg.history, &err))) {
		log_error("%s; flashing goes on without a history", err.message);
		snprintf(history_off, sizeof(history_off), "%s", err.message);
		error_clear(&err);
	}
	jobs_set_history(d.jobs, d.history);
	/* Rules before udev: the devices attached at start are decided (coldplug). */
	d.rules = rules_new(o.state_dir, &cfg.autoflash, d.images);
	if (!d.rules ||
	    !(d.autoflash = autoflash_new(d.base, d.reg, d.jobs, d.rules, transports_builtin())))
		return 1;
	rules_load(d.rules);
	autoflash_set_history(d.autoflash, d.history);
	/* Also after daemonize() (name resolution runs on glibc's threads).  It never
	 * waits for the broker: an unreachable one is retried in the background. */
	mqtt_start(d.mqtt);
	jobs_set_sink(d.jobs, on_job_event, &d);
	registry_set_listener(d.reg, on_device, &d);
	d.server = server_new(d.base, lfd, d.reg, d.jobs, d.images, &cfg);
	if (!d.server) {
		log_error("out of memory starting the socket server");
		return 1;
	}
	server_set_history(d.server, d.history, history_off);
	server_set_auto(d.server, d.rules, d.autoflash);
	server_set_mqtt(d.server, d.mqtt);
	d.udev = udev_source_new(d.base, d.reg, &err);
	if (!d.udev) {
		log_error("%s", err.message);
		error_clear(&err);
	}
	struct event *sigint = evsignal_new(d.base, SIGINT, on_signal, d.base);
	struct event *sigterm = evsignal_new(d.base, SIGTERM, on_signal, d.base);
	if (!sigint || !sigterm) {
		log_error("out of memory setting up signal handling");
		return 1;
	}
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	struct event *sighup = evsignal_new(d.base, SIGHUP, on_sighup, &d);
	event_add(sighup, NULL);

	log_info("flashd %s serving %s%s", FLASHD_VERSION,
		 activated ? "a systemd-activated socket" : o.socket_path, "");
	notify_ready();
	event_base_dispatch(d.base);

	/* Auto-flash first: interrupted jobs run no hooks.  Then jobs: their
	 * "interrupted" ends go to clients still connected. */
	autoflash_free(d.autoflash);
	d.autoflash = NULL;
	jobs_free(d.jobs);
	d.jobs = NULL;
	server_free(d.server);
	d.server = NULL;
	mqtt_free(d.mqtt);	 /* says offline, lets the queue go for up to a second */
	history_free(d.history); /* writes the ends of the interrupted jobs */
	udev_source_free(d.udev);
	registry_free(d.reg);
	rules_free(d.rules);
	image_cache_free(d.images);
	event_free(sigint);
	event_free(sigterm);
	event_free(sighup);
	event_base_free(d.base);
	if (!activated && o.socket_path)
		unlink(o.socket_path);
	return 0;
}
