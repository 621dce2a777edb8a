#include "server.h"

#include "cleanup.h"
#include "config.h"
#include "device_json.h"
#include "autoflash.h"
#include "history.h"
#include "rules.h"
#include "mqtt.h"
#include "log.h"
#include "transports.h"
#include "upload.h"
#include "wire.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define SERVER_GROUPS_MAX      64
#define SERVER_ACCEPT_BURST    64
#define SERVER_ACCEPT_PAUSE_MS 100

static const struct timeout_def server_timeouts[] = {
    {"client_idle_ms", 60000,
     "a connection that neither subscribes nor owns a job is closed after this long without a "
     "request"},
    {"image_read_ms", 5000,
     "a firmware file must deliver its bytes within this (else file-unreadable)"},
    {0},
};

/* A flash request whose files are being read off the loop (image_cache.h). */
struct flash_read {
	char *line;
	size_t len;
	unsigned n_fds;
	struct image_read *reads[SERVER_CLIENT_FDS_MAX];
	uint8_t *bufs[SERVER_CLIENT_FDS_MAX];
	size_t lens[SERVER_CLIENT_FDS_MAX];
	unsigned pending;
	bool failed;
	struct error err;
	json_t *id;
};

struct client {
	struct client *next;
	struct server *srv;
	unsigned long id;
	int fd;
	struct event *rev, *wev;
	bool dead;
	bool close_after_flush;
	struct ucred cred;
	gid_t groups[SERVER_GROUPS_MAX];
	int n_groups;
	char *in;
	size_t in_len;
	struct evbuffer *out;
	int fds[SERVER_CLIENT_FDS_MAX];
	unsigned n_fds;
	bool fds_overflow;
	bool uploading;		    /* began an upload: its lines may be WIRE_LINE_MAX long */
	bool sub_devices, sub_jobs; /* sub_jobs: every job */
	char sub_job_ids[WIRE_SUBSCRIBE_JOBS_MAX][64]; /* and these jobs (they add up) */
	unsigned n_sub_job_ids;
	/* A device-info probe in progress: its reply waits for the probe job, and the
	 * client's later requests wait for that reply (replies stay in order). */
	struct job *probe_job;
	json_t *probe_id;
	char probe_device[DEVICE_KEY_MAX];
	/* A history query in progress: the same rule, its reply comes from the
	 * history's worker thread (history_query()). */
	struct history_query *history_q;
	json_t *history_id;
	struct event *resume;
	/* A flash request waiting for its files; later requests wait for its reply. */
	struct flash_read *reading;
	struct event *idle;
	struct event *closed; /* while a probe waits: the client's hang-up, read or not */
};

struct server {
	struct event_base *base;
	int listen_fd;
	struct event *listen_ev;
	struct event *accept_pause;
	struct event *reaper;
	struct registry *reg;
	struct jobs *jobs;
	struct image_cache *images;
	struct config cfg;
	struct uploads *uploads;
	gid_t admin_gid;
	bool have_admin_gid;
	struct client *clients;
	size_t n_clients;
	unsigned long next_id;
	struct history *history;
	char history_off[256];
	struct rules *rules;
	struct autoflash *autoflash;
	struct mqtt *mqtt;
};

/* ---- output ------------------------------------------------------------ */

static void client_kill(struct client *c, const char *why)
{
	if (c->dead)
		return;
	log_debug("client %lu (pid %d): disconnecting: %s", c->id, (int)c->cred.pid, why);
	c->dead = true;
	event_del(c->rev);
	event_del(c->wev);
	if (c->closed)
		event_del(c->closed);
	jobs_client_gone(c->srv->jobs, c->id);
	uploads_client_gone(c->srv->uploads, c->id);
	event_active(c->srv->reaper, 0, 0);
}

static void client_send(struct client *c, const json_t *obj)
{
	size_t len;
	if (c->dead)
		return;
	_cleanup_free_ char *line = wire_encode(obj, &len);
	if (!line)
		return;
	/* A client that does not read must not make the daemon hold unbounded memory. */
	if (evbuffer_get_length(c->out) + len > c->srv->cfg.output_buffer_max) {
		log_warning("client %lu (pid %d) stopped reading: output buffer over %zu bytes",
			    c->id, (int)c->cred.pid, c->srv->cfg.output_buffer_max);
		client_kill(c, "slow reader");
		return;
	}
	evbuffer_add(c->out, line, len);
	event_add(c->wev, NULL);
}

static void send_error(struct client *c, const json_t *id, struct error *err)
{
	json_t *obj = wire_error_new(id, err);
	client_send(c, obj);
	json_decref(obj);
	error_clear(err);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct client *c = arg;
	while (evbuffer_get_length(c->out) > 0) {
		int n = evbuffer_write(c->out, fd);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			client_kill(c, "write failed");
			return;
		}
	}
	event_del(c->wev);
	if (c->close_after_flush)
		client_kill(c, "closed after error");
}

/* ---- requests ---------------------------------------------------------- */

static void upload_hello(struct client *c, json_t *reply);

static void flash_read_free(struct flash_read *fr)
{
	if (!fr)
		return;
	for (unsigned i = 0; i < SERVER_CLIENT_FDS_MAX; i++) {
		image_read_free(fr->reads[i]);
		free(fr->bufs[i]);
	}
	error_clear(&fr->err);
	json_decref(fr->id);
	free(fr->line);
	free(fr);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct flash_read *, flash_read_free)

static void close_fds(struct client *c)
{
	for (unsigned i = 0; i < c->n_fds; i++)
		close(c->fds[i]);
	c->n_fds = 0;
	c->fds_overflow = false;
}

static bool listed(const struct device *d)
{
	return d->s.present || d->job;
}

static json_t *devices_json(struct server *s)
{
	json_t *a = json_array();
	for (struct device *d = registry_first(s->reg); d; d = d->next)
		if (listed(d))
			json_array_append_new(a, device_to_json(d, false));
	return a;
}

static void do_hello(struct client *c, struct wire_request *req, json_t *reply)
{
	(void)req;
	json_t *transports = json_array();
	for (const struct transport_ops *const *t = transports_builtin(); *t; t++)
		json_array_append_new(transports, json_string((*t)->name));
	json_object_set_new(reply, "protocol", json_integer(WIRE_PROTOCOL_VERSION));
	json_object_set_new(reply, "server", json_string("flashd " FLASHD_VERSION));
	json_object_set_new(reply, "capabilities",
			    json_pack("[s,s,s,s,s,s,s]", "fd-passing", "subscribe", "device-events",
				      "job-events", "device-probe", "history", "upload",
				      "auto-flash"));
	json_object_set_new(reply, "history", history_status_json(c->srv->history));
	json_object_set_new(reply, "mqtt", mqtt_status_json(c->srv->mqtt));
	json_object_set_new(reply, "transports", transports);
	json_object_set_new(reply, "uid", json_integer((json_int_t)c->cred.uid));
	const struct config *cfg = &c->srv->cfg;
	json_object_set_new(reply, "limits",
			    json_pack("{s:i, s:i, s:I, s:i, s:I, s:I, s:I, s:I}", "message_bytes",
				      WIRE_REQUEST_MAX, "images_per_job", WIRE_IMAGES_MAX,
				      "output_buffer_bytes", (json_int_t)cfg->output_buffer_max,
				      "jobs", cfg->max_jobs, "clients",
				      (json_int_t)cfg->max_clients, "clients_per_uid",
				      (json_int_t)cfg->clients_per_uid, "jobs_per_uid",
				      (json_int_t)cfg->jobs_per_uid, "waiting_jobs_per_uid",
				      (json_int_t)cfg->waiting_jobs_per_uid));
	upload_hello(c, reply);
}

/* Finds a device by key, device id, tty or USB port path; ambiguous ids fail. */
static struct device *find_device(struct server *s, const char *what, struct error *err)
{
	struct device *found = NULL;
	unsigned n = 0;
	struct device *d = registry_find_key(s->reg, what);
	if (d)
		return d;
	json_auto_t *candidates = json_array();
	for (d = registry_first(s->reg); d; d = d->next) {
		if (!listed(d))
			continue;
		if (jobs_target_matches(WIRE_TARGET_DEVICE, what, d) ||
		    jobs_target_matches(WIRE_TARGET_PORT, what, d) ||
		    jobs_target_matches(WIRE_TARGET_USB, what, d)) {
			found = d;
			n++;
			json_array_append_new(candidates, device_to_json(d, false));
		}
	}
	if (n == 1)
		return found;
	if (n == 0) {
		error_set(err, ERR_DEVICE_NOT_FOUND, "no attached device is known as %s", what);
		error_detail_str(err, "target", what);
		return NULL;
	}
	error_set(err, ERR_AMBIGUOUS_TARGET, "%u devices are known as %s", n, what);
	error_detail_str(err, "target", what);
	error_detail_json(err, "candidates", TAKE_PTR(candidates));
	return NULL;
}

/* Runs a probe job on the device (transport.h: no images, dry run); the reply
 * goes out when it ends (probe_ended). */
static int start_probe(struct client *c, struct wire_request *req, struct device *d,
		       struct error *err)
{
	if (!d->s.present) {
		error_set(err, ERR_DEVICE_NOT_FOUND,
			  "%s is not attached now, so it cannot be probed", d->s.key);
		error_detail_str(err, "target", d->s.key);
		return -1;
	}
	struct job *holder = jobs_holding_device(c->srv->jobs, d);
	if (holder) {
		error_set(err, ERR_DEVICE_BUSY, "%s is busy with job %s", d->s.key, job_id(holder));
		error_hint(err, "wait for the job to end (flashctl jobs), or ask without probing");
		error_detail_str(err, "job_id", job_id(holder));
		error_detail_str(err, "device", d->s.key);
		return -1;
	}
	struct job_request jr;
	memset(&jr, 0, sizeof(jr));
	jr.target = WIRE_TARGET_DEVICE;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", d->s.key);
	jr.device = d;
	jr.opts.dry_run = true;
	jr.opts.detach = false;
	jr.cancel_on_disconnect = true; /* nobody waits for the answer any more */
	jr.uid = c->cred.uid;
	jr.gid = c->cred.gid;
	jr.pid = c->cred.pid;
	jr.client_id = c->id;
	struct job *job = jobs_create(c->srv->jobs, &jr, err);
	if (!job)
		return -1;
	c->probe_job = job;
	c->probe_id = req->id ? json_incref(req->id) : NULL;
	snprintf(c->probe_device, sizeof(c->probe_device), "%s", d->s.key);
	jobs_submit(c->srv->jobs, job);
	return 1;
}

/* The probe job ended: the deferred device-info reply (or its error), then the
 * client's next requests. */
static void probe_ended(struct client *c, struct job *job, const json_t *event)
{
	c->probe_job = NULL;
	const struct error *e = job_error(job);
	struct device *d = registry_find_key(c->srv->reg, c->probe_device);
	if (error_is_set(e)) {
		json_t *obj = wire_error_new(c->probe_id, e);
		client_send(c, obj);
		json_decref(obj);
	} else {
		json_t *reply = wire_reply_new(c->probe_id, WIRE_REQ_DEVICE_INFO);
		json_object_set_new(reply, "device", d ? device_to_json(d, true) : json_null());
		json_t *outcome = json_object_get(event, "outcome");
		json_object_set_new(reply, "probe",
				    json_pack("{s:s, s:O?}", "job", job_id(job), "outcome",
					      outcome && json_is_string(outcome) ? outcome : NULL));
		client_send(c, reply);
		json_decref(reply);
	}
	json_decref(c->probe_id);
	c->probe_id = NULL;
	/* From the loop: this runs inside whatever ended the job. */
	event_active(c->resume, 0, 0);
}

static int do_device_info(struct client *c, struct wire_request *req, json_t *reply,
			  struct error *err)
{
	const char *what;
	bool probe;
	if (wire_get_string(req->obj, "device", WIRE_TARGET_MAX, &what, err) < 0 ||
	    wire_get_bool(req->obj, "probe", false, &probe, err) < 0)
		return -1;
	if (!what) {
		error_set(err, ERR_BAD_REQUEST, "bad request: missing \"device\"");
		error_detail_str(err, "reason", "missing \"device\"");
		error_detail_str(err, "field", "device");
		return -1;
	}
	struct device *d = find_device(c->srv, what, err);
	if (!d)
		return -1;
	if (probe)
		return start_probe(c, req, d, err);
	json_object_set_new(reply, "device", device_to_json(d, true));
	return 0;
}

/* Resolves a flash target to the devices it means now (present ones only). */
static unsigned match_devices(struct server *s, const struct wire_flash *f, struct device **out,
			      unsigned max)
{
	unsigned n = 0;
	for (struct device *d = registry_first(s->reg); d; d = d->next)
		if (d->s.present && jobs_target_matches(f->target, f->target_value, d) && n < max)
			out[n++] = d;
	return n;
}

/* ---- in-band uploads (upload.h): the hooks ------------------------------ */

static void upload_hello(struct client *c, json_t *reply)
{
	json_t *limits = json_object_get(reply, "limits");
	json_object_set_new(limits, "upload_chunk_bytes", json_integer(WIRE_UPLOAD_CHUNK_MAX));
	json_object_set_new(limits, "upload_message_bytes", json_integer(WIRE_LINE_MAX));
	json_object_set_new(limits, "upload_bytes", json_integer(IMAGE_FILE_MAX));
	json_object_set_new(limits, "uploads_per_uid", json_integer(c->srv->cfg.uploads_per_uid));
}

static int do_upload(struct client *c, struct wire_request *req, json_t *reply, struct error *err)
{
	if (req->type == WIRE_REQ_UPLOAD_BEGIN) {
		struct wire_upload_begin b;
		if (wire_parse_upload_begin(req->obj, &b, err) < 0)
			return -1;
		if (uploads_begin(c->srv->uploads, c->id, c->cred.uid, &b, reply, err) < 0)
			return -1;
		c->uploading = true;
		return 0;
	}
	struct wire_upload_chunk ch;
	int rc = wire_parse_upload_chunk(req->obj, &ch, err);
	if (rc == 0)
		rc = uploads_chunk(c->srv->uploads, c->id, &ch, reply, err);
	wire_upload_chunk_clear(&ch);
	return rc;
}

/* A copy of a finished upload's bytes into the image cache; the upload itself is
 * freed once the request has made its jobs (release_uploads). */
static int load_upload(struct client *c, const char *id, const char *name, struct image_ref **ret,
		       struct error *err)
{
	size_t len;
	const uint8_t *bytes = uploads_get(c->srv->uploads, c->id, id, &len, err);
	if (!bytes)
		return -1;
	uint8_t *copy = malloc(len);
	if (!copy)
		return error_set(err, ERR_INTERNAL, "out of memory");
	memcpy(copy, bytes, len);
	return image_cache_load_buffer(c->srv->images, copy, len, name, ret, err);
}

/* Every upload the request names is complete on this connection: the client's
 * own mistakes are reported before anything about devices. */
static int check_uploads(struct client *c, const struct wire_flash *f, struct error *err)
{
	size_t len;
	for (unsigned i = 0; i < f->n_images; i++)
		if (f->images[i].upload[0] &&
		    !uploads_get(c->srv->uploads, c->id, f->images[i].upload, &len, err))
			return -1;
	return 0;
}

static void release_uploads(struct client *c, const struct wire_flash *f)
{
	for (unsigned i = 0; i < f->n_images; i++)
		if (f->images[i].upload[0])
			uploads_release(c->srv->uploads, c->id, f->images[i].upload);
}

/* The files were read off the loop (begin_flash): parse and share them. */
static int load_images(struct client *c, const struct wire_flash *f, struct job_request *jr,
		       const struct flash_read *fr, struct error *err)
{
	for (unsigned i = 0; i < f->n_images; i++) {
		int rc;
		if (f->images[i].upload[0]) {
			rc = load_upload(c, f->images[i].upload, f->images[i].name, &jr->images[i],
					 err);
		} else {
			unsigned k = f->images[i].fd_index;
			size_t len = fr->lens[k];
			uint8_t *copy = malloc(len ? len : 1);
			if (copy && len)
				memcpy(copy, fr->bufs[k], len);
			rc = copy ? image_cache_load_buffer(c->srv->images, copy, len,
							    f->images[i].name, &jr->images[i], err)
				  : error_set(err, ERR_OUT_OF_MEMORY, NULL);
		}
		if (rc < 0) {
			for (unsigned j = 0; j < i; j++)
				image_cache_put(c->srv->images, jr->images[j]);
			return -1;
		}
		snprintf(jr->names[i], sizeof(jr->names[i]), "%s", f->images[i].name);
		jr->n_images = i + 1;
	}
	/* Bundles: each asset becomes a file of the job (an asset module), after the others. */
	unsigned n_files = jr->n_images;
	for (unsigned i = 0; i < n_files; i++) {
		unsigned n = 0;
		if (image_ref_expand_assets(c->srv->images, jr->images[i], jr->names[i],
					    &jr->images[jr->n_images], &jr->names[jr->n_images],
					    WIRE_IMAGES_MAX - jr->n_images, &n, err) < 0) {
			for (unsigned k = 0; k < jr->n_images; k++)
				image_cache_put(c->srv->images, jr->images[k]);
			jr->n_images = 0;
			return -1;
		}
		jr->n_images += n;
	}
	return 0;
}

static void put_images(struct server *s, struct job_request *jr)
{
	for (unsigned i = 0; i < jr->n_images; i++)
		image_cache_put(s->images, jr->images[i]);
	jr->n_images = 0;
}

static int ambiguous(struct wire_flash *f, struct device **devs, unsigned n, struct error *err)
{
	json_t *candidates = json_array();
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(candidates, device_to_json(devs[i], false));
	error_set(err, ERR_AMBIGUOUS_TARGET, "%u devices match%s%s and none was chosen", n,
		  f->target == WIRE_TARGET_ANY ? "" : " ",
		  f->target == WIRE_TARGET_ANY ? "" : f->target_value);
	error_detail_json(err, "candidates", candidates);
	error_detail_str(err, "target", f->target == WIRE_TARGET_ANY ? "any" : f->target_value);
	return -1;
}

/* The devices a flash request means now; fails with bad-request (platform),
 * device-not-found or ambiguous-target. */
static int resolve_targets(struct server *s, struct wire_flash *f, struct device **devs,
			   unsigned *ret_n, struct error *err)
{
	if (f->target == WIRE_TARGET_PLATFORM && !platform_by_name(f->target_value)) {
		error_set(err, ERR_BAD_REQUEST, "bad request: unknown platform \"%s\"",
			  f->target_value);
		error_detail_str(err, "reason", "unknown platform");
		error_detail_str(err, "field", "platform");
		return -1;
	}
	unsigned n = match_devices(s, f, devs, REGISTRY_DEVICES_MAX);
	/* A tty path means the USB port behind it now (issue 5): the job follows
	 * that device, not the node name, across re-enumeration. */
	if (f->target == WIRE_TARGET_PORT && n == 0) {
		error_set(err, ERR_DEVICE_NOT_FOUND, "no Particle device is attached at %s",
			  f->target_value);
		error_detail_str(err, "target", f->target_value);
		return -1;
	}
	if (n == 0 && f->wait_ms == 0) {
		error_set(err, ERR_DEVICE_NOT_FOUND, "%s%s",
			  f->target == WIRE_TARGET_ANY ? "no Particle device is attached"
						       : "no attached device matches ",
			  f->target == WIRE_TARGET_ANY ? "" : f->target_value);
		error_detail_str(err, "target",
				 f->target == WIRE_TARGET_ANY ? "any" : f->target_value);
		return -1;
	}
	if (n > 1 && !f->all)
		return ambiguous(f, devs, n, err);
	*ret_n = n;
	return 0;
}

static void flash_read_done(void *ctx, struct image_read *r);
static void finish_flash(struct client *c);

/*
 * A flash request: its files are read off the loop first (a file on a stalled
 * mount must not stop the daemon); the client's later requests wait, and
 * finish_flash() runs the request when every file has arrived.  1 = deferred.
 */
static int begin_flash(struct client *c, struct wire_request *req, const char *line, size_t len,
		       struct error *err)
{
	struct wire_flash f;
	if (c->fds_overflow) {
		error_set(err, ERR_BAD_REQUEST, "bad request: more than %d file descriptors",
			  SERVER_CLIENT_FDS_MAX);
		error_detail_str(err, "reason", "too many file descriptors");
		error_detail_int(err, "limit", SERVER_CLIENT_FDS_MAX);
		return -1;
	}
	if (wire_parse_flash(req->obj, c->n_fds, &f, err) < 0 || check_uploads(c, &f, err) < 0)
		return -1;
	/* Target errors first, as before the files are read (and again after). */
	struct device *devs[REGISTRY_DEVICES_MAX];
	unsigned n;
	if (resolve_targets(c->srv, &f, devs, &n, err) < 0)
		return -1;
	_cleanup_(flash_read_freep) struct flash_read *fr = calloc(1, sizeof(*fr));
	if (!fr || !(fr->line = malloc(len + 1)))
		return error_set(err, ERR_OUT_OF_MEMORY, NULL);
	memcpy(fr->line, line, len);
	fr->line[len] = '\0';
	fr->len = len;
	fr->n_fds = c->n_fds;
	fr->id = req->id ? json_incref(req->id) : NULL;
	error_init(&fr->err);
	unsigned deadline = timeout_ms("image_read_ms");
	for (unsigned i = 0; i < f.n_images; i++) {
		unsigned k = f.images[i].fd_index;
		if (f.images[i].upload[0] || fr->reads[k])
			continue; /* an upload is in memory; one fd named twice: read once */
		fr->reads[k] = image_read_start(c->srv->base, c->fds[k], f.images[i].name,
						c->cred.uid, deadline, flash_read_done, c, err);
		if (!fr->reads[k])
			return -1;
		fr->pending++;
	}
	c->reading = TAKE_PTR(fr);
	if (c->reading->pending == 0)
		finish_flash(c); /* uploads only: nothing to read */
	return 1;
}

static int do_flash(struct client *c, struct wire_request *req, json_t *reply,
		    const struct flash_read *fr, struct error *err)
{
	struct server *s = c->srv;
	struct wire_flash f;
	struct device *devs[REGISTRY_DEVICES_MAX];
	struct job_request jr;
	memset(&jr, 0, sizeof(jr));
	if (wire_parse_flash(req->obj, fr->n_fds, &f, err) < 0)
		return -1;
	unsigned n;
	if (resolve_targets(s, &f, devs, &n, err) < 0)
		return -1;
	if (load_images(c, &f, &jr, fr, err) < 0)
		return -1;
	jr.target = f.target;
	snprintf(jr.target_value, sizeof(jr.target_value), "%s", f.target_value);
	jr.all = f.all;
	jr.opts.force = f.force;
	jr.opts.verify = f.verify;
	jr.opts.dry_run = f.dry_run;
	jr.opts.detach = f.detach;
	jr.opts.wait_ms = (int)f.wait_ms;
	jr.cancel_on_disconnect = f.cancel_on_disconnect;
	jr.uid = c->cred.uid;
	jr.gid = c->cred.gid;
	jr.pid = c->cred.pid;
	jr.client_id = c->id;
	struct job *created[REGISTRY_DEVICES_MAX];
	unsigned n_jobs = n ? n : 1;
	for (unsigned i = 0; i < n_jobs; i++) {
		struct job_request one = jr;
		for (unsigned k = 0; k < jr.n_images; k++)
			jr.images[k]->refs++; /* each job holds its own reference */
		one.device = n ? devs[i] : NULL;
		created[i] = jobs_create(s->jobs, &one, err);
		if (!created[i]) {
			/* Jobs made so far stand; report how far we got. */
			put_images(s, &jr);
			if (i == 0)
				return -1;
			n_jobs = i;
			error_clear(err);
			break;
		}
	}
	put_images(s, &jr);
	release_uploads(c, &f);
	json_t *arr = json_array();
	for (unsigned i = 0; i < n_jobs; i++)
		json_array_append_new(arr, job_to_json(created[i]));
	json_object_set_new(reply, "jobs", arr);
	/* The reply goes out before the jobs' first events. */
	client_send(c, reply);
	for (unsigned i = 0; i < n_jobs; i++)
		jobs_submit(s->jobs, created[i]);
	return 1;
}

static bool is_admin(struct client *c)
{
	if (c->cred.uid == 0)
		return true;
	if (!c->srv->have_admin_gid)
		return false;
	if (c->cred.gid == c->srv->admin_gid)
		return true;
	for (int i = 0; i < c->n_groups; i++)
		if (c->groups[i] == c->srv->admin_gid)
			return true;
	return false;
}

static bool may_cancel(struct client *c, const struct job *job)
{
	return c->cred.uid == job_owner_uid(job) || is_admin(c);
}

/* ---- auto-flash rules (daemon/rules.c, daemon/autoflash.c) ------------------ */

static int no_auto(struct client *c, struct error *err)
{
	(void)c;
	error_set(err, ERR_INTERNAL, "auto-flash is not set up in this daemon");
	error_detail_str(err, "reason", "no rules");
	return -1;
}

static int do_auto_add(struct client *c, struct wire_request *req, json_t *reply, struct error *err)
{
	if (!c->srv->rules)
		return no_auto(c, err);
	if (c->fds_overflow) {
		error_set(err, ERR_BAD_REQUEST, "bad request: more than %d file descriptors",
			  SERVER_CLIENT_FDS_MAX);
		error_detail_str(err, "reason", "too many file descriptors");
		error_detail_int(err, "limit", SERVER_CLIENT_FDS_MAX);
		return -1;
	}
	struct rule *rule =
	    rules_add_request(c->srv->rules, req->obj, c->fds, c->n_fds, c->cred.uid, err);
	if (!rule)
		return -1;
	json_object_set_new(reply, "rule", rule_to_json(rule));
	autoflash_rules_changed(c->srv->autoflash); /* coldplug: devices attached now */
	return 0;
}

/* The rule a request names, if the client may change it. */
static struct rule *rule_to_change(struct client *c, struct wire_request *req, const char *op,
				   struct error *err)
{
	const char *id;
	if (!c->srv->rules) {
		no_auto(c, err);
		return NULL;
	}
	if (wire_get_string(req->obj, "rule", RULE_ID_MAX, &id, err) < 0)
		return NULL;
	if (!id) {
		error_set(err, ERR_BAD_REQUEST, "bad request: missing \"rule\"");
		error_detail_str(err, "reason", "missing \"rule\"");
		error_detail_str(err, "field", "rule");
		return NULL;
	}
	struct rule *rule = rules_find(c->srv->rules, id);
	if (!rule) {
		error_set(err, ERR_RULE_NOT_FOUND, "no auto-flash rule %s", id);
		error_detail_str(err, "rule", id);
		return NULL;
	}
	bool owner = !rule->from_file && rule->owner == c->cred.uid;
	if (!owner && !is_admin(c)) {
		error_set(err, ERR_NOT_ALLOWED, "rule %s belongs to uid %u", id,
			  (unsigned)rule->owner);
		error_hint(err,
			   "only the rule's owner, root or a member of the admin group (%s) "
			   "may change it",
			   c->srv->cfg.admin_group);
		error_detail_str(err, "operation", op);
		error_detail_int(err, "uid", c->cred.uid);
		error_detail_int(err, "owner_uid", rule->owner);
		error_detail_str(err, "admin_group", c->srv->cfg.admin_group);
		return NULL;
	}
	if (rule->from_file && strcmp(op, "auto-remove") == 0) {
		error_set(err, ERR_NOT_ALLOWED, "rule %s comes from the rule file %s", id,
			  rule->file);
		error_hint(err, "remove or edit the file, then reload (flashctl auto reload or "
				"SIGHUP); or pause the rule");
		error_detail_str(err, "operation", op);
		error_detail_int(err, "uid", c->cred.uid);
		error_detail_int(err, "owner_uid", rule->owner);
		return NULL;
	}
	return rule;
}

static int do_auto_change(struct client *c, struct wire_request *req, json_t *reply,
			  struct error *err)
{
	const char *op = wire_request_name(req->type);
	struct rule *rule = rule_to_change(c, req, op, err);
	if (!rule)
		return -1;
	if (req->type == WIRE_REQ_AUTO_REMOVE) {
		json_object_set_new(reply, "rule", rule_to_json(rule));
		json_object_set_new(json_object_get(reply, "rule"), "removed", json_true());
		autoflash_rule_removed(c->srv->autoflash, rule);
		rules_remove(c->srv->rules, rule);
		return 0;
	}
	rules_set_paused(c->srv->rules, rule, req->type == WIRE_REQ_AUTO_PAUSE);
	json_object_set_new(reply, "rule", rule_to_json(rule));
	if (req->type == WIRE_REQ_AUTO_RESUME)
		autoflash_rules_changed(c->srv->autoflash);
	return 0;
}

static int do_auto_reload(struct client *c, json_t *reply, struct error *err)
{
	if (!c->srv->rules)
		return no_auto(c, err);
	if (!is_admin(c)) {
		error_set(err, ERR_NOT_ALLOWED,
			  "only root or the admin group may reload the rules");
		error_detail_str(err, "operation", "auto-reload");
		error_detail_int(err, "uid", c->cred.uid);
		error_detail_str(err, "admin_group", c->srv->cfg.admin_group);
		return -1;
	}
	json_object_set_new(reply, "reload", rules_reload_files(c->srv->rules));
	autoflash_rules_changed(c->srv->autoflash);
	return 0;
}

static json_t *rules_json(struct server *s)
{
	json_t *a = json_array();
	for (struct rule *r = s->rules ? rules_first(s->rules) : NULL; r; r = r->next)
		json_array_append_new(a, rule_to_json(r));
	return a;
}

static int do_cancel(struct client *c, struct wire_request *req, json_t *reply, struct error *err)
{
	const char *id;
	if (wire_get_string(req->obj, "job", 64, &id, err) < 0)
		return -1;
	if (!id) {
		error_set(err, ERR_BAD_REQUEST, "bad request: missing \"job\"");
		error_detail_str(err, "reason", "missing \"job\"");
		error_detail_str(err, "field", "job");
		return -1;
	}
	struct job *job = jobs_find(c->srv->jobs, id);
	if (!job) {
		error_set(err, ERR_JOB_NOT_FOUND, "no job %s", id);
		error_detail_str(err, "job_id", id);
		return -1;
	}
	if (!may_cancel(c, job)) {
		error_set(err, ERR_NOT_ALLOWED, "job %s belongs to uid %u", id,
			  (unsigned)job_owner_uid(job));
		error_detail_str(err, "operation", "cancel");
		error_detail_int(err, "uid", c->cred.uid);
		error_detail_int(err, "owner_uid", job_owner_uid(job));
		error_detail_str(err, "admin_group", c->srv->cfg.admin_group);
		return -1;
	}
	bool was_ended = job_ended(job);
	jobs_cancel(c->srv->jobs, job, c->cred.uid);
	json_object_set_new(reply, "already_ended", json_boolean(was_ended));
	json_object_set_new(reply, "job", job_to_json(job));
	return 0;
}

/* The history's answer (on the loop): the deferred reply, then the client's next requests. */
static void history_answered(void *ctx, json_t *result, const struct error *e)
{
	struct client *c = ctx;
	c->history_q = NULL;
	json_t *obj;
	if (e) {
		obj = wire_error_new(c->history_id, e);
	} else {
		obj = wire_reply_new(c->history_id, WIRE_REQ_HISTORY);
		json_object_update(obj, result);
		json_object_set_new(obj, "database", history_status_json(c->srv->history));
	}
	json_decref(result);
	client_send(c, obj);
	json_decref(obj);
	json_decref(c->history_id);
	c->history_id = NULL;
	event_active(c->resume, 0, 0);
}

/* Anyone who may connect may read the history (a line operator must). */
static int do_history(struct client *c, struct wire_request *req, struct error *err)
{
	struct history_filter f;
	if (history_filter_parse(req->obj, &f, err) < 0)
		return -1;
	if (!c->srv->history) {
		error_set(err, ERR_HISTORY_UNAVAILABLE, "the flash history is not available: %s",
			  c->srv->history_off);
		error_detail_str(err, "reason", c->srv->history_off);
		return -1;
	}
	c->history_q = history_query(c->srv->history, &f, history_answered, c, err);
	if (!c->history_q)
		return -1;
	c->history_id = req->id ? json_incref(req->id) : NULL;
	return 1;
}

static bool subscribed_to_job(const struct client *c, const char *id)
{
	for (unsigned i = 0; i < c->n_sub_job_ids; i++)
		if (strcasecmp(c->sub_job_ids[i], id) == 0)
			return true;
	return false;
}

static int do_subscribe(struct client *c, struct wire_request *req, json_t *reply,
			struct error *err)
{
	struct wire_subscribe sub;
	if (wire_parse_subscribe(req->obj, &sub, err) < 0)
		return -1;
	if (sub.job[0] && !subscribed_to_job(c, sub.job)) {
		if (c->n_sub_job_ids >= WIRE_SUBSCRIBE_JOBS_MAX) {
			error_set(err, ERR_BAD_REQUEST,
				  "bad request: subscribed to %u jobs one by one already",
				  WIRE_SUBSCRIBE_JOBS_MAX);
			error_hint(err, "subscribe with \"jobs\":true to get every job's events");
			error_detail_str(err, "reason", "too many job subscriptions");
			error_detail_str(err, "field", "job");
			error_detail_int(err, "limit", WIRE_SUBSCRIBE_JOBS_MAX);
			return -1;
		}
		snprintf(c->sub_job_ids[c->n_sub_job_ids++], sizeof(c->sub_job_ids[0]), "%s",
			 sub.job);
	}
	/* Subscriptions add up for the life of the connection (PROTOCOL.md). */
	c->sub_devices = c->sub_devices || sub.devices;
	c->sub_jobs = c->sub_jobs || sub.jobs;
	json_t *ids = json_array();
	for (unsigned i = 0; i < c->n_sub_job_ids; i++)
		json_array_append_new(ids, json_string(c->sub_job_ids[i]));
	json_object_set_new(reply, "devices", json_boolean(c->sub_devices));
	json_object_set_new(reply, "jobs", json_boolean(c->sub_jobs));
	json_object_set_new(reply, "job", sub.job[0] ? json_string(sub.job) : json_null());
	json_object_set_new(reply, "job_ids", ids);
	return 0;
}

/* The request's answer: its reply, its error, or nothing yet (rc 1: deferred). */
static void answer(struct client *c, struct wire_request *req, json_t *reply, int rc,
		   struct error *err)
{
	if (rc < 0)
		send_error(c, req->id, err);
	else if (rc == 0)
		client_send(c, reply);
}

/* Every file of a deferred flash request is in (or one failed): run it. */
static void finish_flash(struct client *c)
{
	struct flash_read *fr = c->reading;
	struct wire_request req;
	struct error err;
	error_init(&err);
	c->reading = NULL;
	if (c->dead) {
		/* gone while its files were read: nobody to make jobs for */
	} else if (fr->failed) {
		send_error(c, fr->id, &fr->err);
	} else if (wire_parse_request(fr->line, fr->len, &req, &err) < 0) {
		send_error(c, req.id, &err); /* cannot happen: it parsed before */
		wire_request_clear(&req);
	} else {
		json_t *reply = wire_reply_new(req.id, req.type);
		int rc = do_flash(c, &req, reply, fr, &err);
		answer(c, &req, reply, rc, &err);
		json_decref(reply);
		wire_request_clear(&req);
	}
	flash_read_free(fr);
	/* From the loop: the client's next requests, then reading again. */
	event_active(c->resume, 0, 0);
}

static void flash_read_done(void *ctx, struct image_read *r)
{
	struct client *c = ctx;
	struct flash_read *fr = c->reading;
	unsigned k = 0;
	while (k < SERVER_CLIENT_FDS_MAX && fr->reads[k] != r)
		k++;
	if (k == SERVER_CLIENT_FDS_MAX)
		return; /* cannot happen */
	fr->reads[k] = NULL;
	fr->pending--;
	if (!fr->failed) {
		fr->bufs[k] = image_read_take(r, &fr->lens[k], &fr->err);
		fr->failed = !fr->bufs[k];
	}
	image_read_free(r);
	if (fr->failed) {
		/* The request fails with the first file that did: the others need not arrive. */
		for (unsigned i = 0; i < SERVER_CLIENT_FDS_MAX; i++) {
			image_read_free(fr->reads[i]);
			fr->reads[i] = NULL;
		}
		fr->pending = 0;
	}
	if (fr->pending == 0)
		finish_flash(c);
}

static void handle_line(struct client *c, const char *line, size_t len)
{
	struct wire_request req;
	struct error err;
	error_init(&err);
	if (wire_parse_request(line, len, &req, &err) < 0) {
		close_fds(c);
		send_error(c, req.id, &err);
		wire_request_clear(&req);
		return;
	}
	json_t *reply = wire_reply_new(req.id, req.type);
	int rc = 0;
	switch (req.type) {
	case WIRE_REQ_HELLO:
		do_hello(c, &req, reply);
		break;
	case WIRE_REQ_LIST_DEVICES:
		json_object_set_new(reply, "devices", devices_json(c->srv));
		break;
	case WIRE_REQ_DEVICE_INFO:
		rc = do_device_info(c, &req, reply, &err);
		break;
	case WIRE_REQ_FLASH:
		rc = begin_flash(c, &req, line, len, &err);
		break;
	case WIRE_REQ_LIST_JOBS:
		json_object_set_new(reply, "jobs", jobs_list_json(c->srv->jobs));
		break;
	case WIRE_REQ_CANCEL:
		rc = do_cancel(c, &req, reply, &err);
		break;
	case WIRE_REQ_SUBSCRIBE:
		rc = do_subscribe(c, &req, reply, &err);
		break;
	case WIRE_REQ_HISTORY:
		rc = do_history(c, &req, &err);
		break;
	case WIRE_REQ_UPLOAD_BEGIN:
	case WIRE_REQ_UPLOAD_CHUNK:
		rc = do_upload(c, &req, reply, &err);
		break;
	case WIRE_REQ_AUTO_ADD:
		rc = do_auto_add(c, &req, reply, &err);
		break;
	case WIRE_REQ_AUTO_LIST:
		json_object_set_new(reply, "rules", rules_json(c->srv));
		json_object_set_new(reply, "labels",
				    c->srv->rules ? rules_labels_json(c->srv->rules)
						  : json_object());
		break;
	case WIRE_REQ_AUTO_REMOVE:
	case WIRE_REQ_AUTO_PAUSE:
	case WIRE_REQ_AUTO_RESUME:
		rc = do_auto_change(c, &req, reply, &err);
		break;
	case WIRE_REQ_AUTO_RELOAD:
		rc = do_auto_reload(c, reply, &err);
		break;
	case WIRE_REQ_STATION:
		if (c->srv->autoflash)
			json_object_set_new(reply, "station",
					    autoflash_station_json(c->srv->autoflash));
		else
			rc = no_auto(c, &err);
		break;
	case WIRE_REQ__COUNT:
		break;
	}
	/* fds belong to the request they came with; a flash request has read them. */
	close_fds(c);
	answer(c, &req, reply, rc, &err);
	json_decref(reply);
	wire_request_clear(&req);
}

/* ---- input ------------------------------------------------------------- */

static void take_fds(struct client *c, struct msghdr *msg)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(cm);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, fds + i, sizeof(fd));
			if (c->n_fds < SERVER_CLIENT_FDS_MAX) {
				c->fds[c->n_fds++] = fd;
			} else {
				close(fd);
				c->fds_overflow = true;
			}
		}
	}
	if (msg->msg_flags & MSG_CTRUNC)
		c->fds_overflow = true;
}

static void process_lines(struct client *c)
{
	size_t start = 0;
	while (!c->dead && !c->probe_job && !c->history_q && !c->reading) {
		char *nl = memchr(c->in + start, '\n', c->in_len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (c->in + start));
		if (len && c->in[start + len - 1] == '\r')
			len--; /* tolerate CRLF from hand-typed sessions (socat) */
		if (!wire_line_is_blank(c->in + start, len))
			handle_line(c, c->in + start, len);
		start = (size_t)(nl - c->in) + 1;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	if ((c->probe_job || c->history_q || c->reading) && !c->dead) {
		/* Read nothing more until the probe's, history's or flash's reply is
		 * out, but keep watching for the hang-up: a probe nobody waits for is
		 * cancelled (jobs_client_gone). */
		event_del(c->rev);
		if (c->closed)
			event_add(c->closed, NULL);
		return;
	}
	/* Only an upload chunk may be longer than a request, and only on a
	 * connection that has begun an upload. */
	unsigned max = c->uploading ? WIRE_LINE_MAX : WIRE_REQUEST_MAX;
	if (c->in_len > max && !c->dead) {
		/* No way to find the next message boundary reliably: answer, then close. */
		struct error err;
		error_init(&err);
		error_set(&err, ERR_BAD_REQUEST, "bad request: message longer than %u bytes", max);
		error_detail_str(&err, "reason", "message too large");
		error_detail_int(&err, "limit", max);
		send_error(c, NULL, &err);
		c->in_len = 0;
		c->close_after_flush = true;
		event_del(c->rev);
		close_fds(c);
	}
}

/* ---- idle connections ------------------------------------------------- */

/* A request arrived: the idle clock starts again. */
static void client_touch(struct client *c)
{
	unsigned ms = timeout_ms("client_idle_ms");
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	if (!c->dead)
		evtimer_add(c->idle, &tv);
}

/* Idle for client_idle_ms: a connection that waits for nothing it asked for
 * (no subscription, no job of its own, no reply pending) is closed, so that
 * connections held open for nothing do not use up anyone's share. */
static void on_idle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct client *c = arg;
	if (c->sub_devices || c->sub_jobs || c->n_sub_job_ids || c->probe_job || c->reading ||
	    evbuffer_get_length(c->out) > 0 || jobs_client_has_jobs(c->srv->jobs, c->id)) {
		client_touch(c);
		return;
	}
	log_info("client %lu (uid %u pid %d) idle for %u ms: closing", c->id, (unsigned)c->cred.uid,
		 (int)c->cred.pid, timeout_ms("client_idle_ms"));
	client_kill(c, "idle");
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct client *c = arg;
	char cbuf[CMSG_SPACE(sizeof(int) * SERVER_CLIENT_FDS_MAX)];
	size_t room = WIRE_LINE_MAX + 1 - c->in_len;
	if (room > SERVER_READ_CHUNK)
		room = SERVER_READ_CHUNK;
	struct iovec iov = {c->in + c->in_len, room};
	struct msghdr msg = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n == 0 && evbuffer_get_length(c->out) > 0) {
		/* The peer shut its sending side (socat, nc): the answers it asked
		 * for go out first, then the connection closes (on_writable). */
		event_del(c->rev);
		c->close_after_flush = true;
		return;
	}
	if (n <= 0) {
		client_kill(c, n == 0 ? "end of stream" : "read error");
		return;
	}
	take_fds(c, &msg);
	c->in_len += (size_t)n;
	client_touch(c);
	process_lines(c);
}

/* A probe's reply is out: handle the requests that waited, then read again. */
static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct client *c = arg;
	if (c->dead || c->probe_job || c->history_q || c->reading)
		return;
	if (c->closed)
		event_del(c->closed);
	process_lines(c);
	if (!c->dead && !c->probe_job && !c->history_q && !c->reading && !c->close_after_flush)
		event_add(c->rev, NULL);
}

/* The peer shut its side (EPOLLRDHUP) while its input was not being read.  A
 * close (POLLHUP: both directions shut) means nobody waits for the probe; a
 * shutdown(SHUT_WR) after the request (socat, nc) still reads the answer. */
static void on_closed(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct client *c = arg;
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)))
		client_kill(c, "hung up while waiting for a reply");
	else
		event_del(c->closed); /* half-closed: answer it, then read the end */
}

/* ---- connections ------------------------------------------------------- */

static void event_free_if(struct event *ev)
{
	if (ev) /* libevent's event_free() does not take NULL */
		event_free(ev);
}

/* Frees a client, also one that client_add() built only in part. */
static void client_destroy(struct client *c)
{
	if (!c)
		return;
	close_fds(c);
	history_query_abandon(c->srv->history, c->history_q);
	json_decref(c->history_id);
	flash_read_free(c->reading); /* abandons reads still pending */
	event_free_if(c->idle);
	json_decref(c->probe_id);
	event_free_if(c->closed);
	event_free_if(c->resume);
	event_free_if(c->rev);
	event_free_if(c->wev);
	if (c->out)
		evbuffer_free(c->out);
	close(c->fd);
	free(c->in);
	free(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(struct client *, client_destroy)

static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct server *s = arg;
	for (struct client **pp = &s->clients; *pp;) {
		struct client *c = *pp;
		if (c->dead) {
			*pp = c->next;
			s->n_clients--;
			client_destroy(c);
		} else {
			pp = &c->next;
		}
	}
}

/* Tells a connection why it is refused (too-many-clients), then closes it. */
static void refuse(struct server *s, int fd, const struct ucred *cred, unsigned uid_clients)
{
	struct error err;
	error_init(&err);
	if (uid_clients >= s->cfg.clients_per_uid) {
		error_set(&err, ERR_TOO_MANY_CLIENTS, "uid %u already has %u connections",
			  (unsigned)cred->uid, uid_clients);
		error_detail_int(&err, "limit", s->cfg.clients_per_uid);
		error_detail_int(&err, "uid", cred->uid);
		/* debug: a uid that hammers the socket must not flood the journal */
		log_debug("refusing a connection of uid %u (pid %d): it has %u",
			  (unsigned)cred->uid, (int)cred->pid, uid_clients);
	} else {
		error_set(&err, ERR_TOO_MANY_CLIENTS, "the daemon has %u clients connected",
			  s->cfg.max_clients);
		error_detail_int(&err, "limit", s->cfg.max_clients);
	}
	json_auto_t *obj = wire_error_new(NULL, &err);
	size_t len;
	_cleanup_free_ char *line = obj ? wire_encode(obj, &len) : NULL;
	/* Best effort: a fresh socket buffer takes one short line without blocking. */
	if (line && send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("could not tell a refused client why: %s", strerror(errno));
	error_clear(&err);
	close(fd);
}

static void client_add(struct server *s, int fd, const struct ucred *cred)
{
	_cleanup_(client_destroyp) struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd; /* the client's from here: client_destroy() closes it */
	if (!(c->in = malloc(WIRE_LINE_MAX + 1)) || !(c->out = evbuffer_new()))
		return;
	c->id = ++s->next_id;
	c->cred = *cred;
	socklen_t glen = sizeof(c->groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &glen) == 0)
		c->n_groups = (int)(glen / sizeof(gid_t));
	c->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_readable, c);
	c->wev = event_new(s->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
	c->resume = event_new(s->base, -1, 0, on_resume, c);
	c->idle = evtimer_new(s->base, on_idle, c);
	/* EV_CLOSED needs a backend that reports hang-ups (epoll); without one a
	 * probe's client is only seen gone when the probe ends. */
	if (event_base_get_features(s->base) & EV_FEATURE_EARLY_CLOSE)
		c->closed = event_new(s->base, fd, EV_CLOSED | EV_PERSIST, on_closed, c);
	if (!c->rev || !c->wev || !c->resume || !c->idle) {
		log_warning("out of memory: closing a new connection (uid %u pid %d)",
			    (unsigned)cred->uid, (int)cred->pid);
		return;
	}
	event_add(c->rev, NULL);
	client_touch(c);
	log_debug("client %lu connected (uid %u pid %d)", c->id, (unsigned)c->cred.uid,
		  (int)c->cred.pid);
	c->next = s->clients;
	s->clients = TAKE_PTR(c);
	s->n_clients++;
}

static void accept_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct server *s = arg;
	event_add(s->listen_ev, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	struct server *s = arg;
	for (int i = 0; i < SERVER_ACCEPT_BURST; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM ||
			    errno == ENOBUFS) {
				/* Out of fds: stop accepting briefly instead of spinning. */
				log_warning("accept: %s; pausing", strerror(errno));
				event_del(s->listen_ev);
				struct timeval tv = {0, SERVER_ACCEPT_PAUSE_MS * 1000};
				evtimer_add(s->accept_pause, &tv);
			}
			return;
		}
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			cred.uid = (uid_t)-1;
			cred.gid = (gid_t)-1;
			cred.pid = 0;
		}
		/* Fair share: one uid's connections cannot lock the others out. */
		unsigned mine = 0;
		for (const struct client *c = s->clients; c; c = c->next)
			mine += !c->dead && c->cred.uid == cred.uid;
		if (s->n_clients >= s->cfg.max_clients || mine >= s->cfg.clients_per_uid)
			refuse(s, fd, &cred, mine);
		else
			client_add(s, fd, &cred);
	}
}

struct server *server_new(struct event_base *base, int listen_fd, struct registry *reg,
			  struct jobs *jobs, struct image_cache *images, const struct config *cfg)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->listen_fd = listen_fd;
	s->reg = reg;
	s->jobs = jobs;
	s->images = images;
	s->cfg = *cfg;
	timeouts_register(server_timeouts);
	/* Looked up once: NSS may block, and the loop must not.  No admin group
	 * (the default): only root and a job's owner may cancel it. */
	struct group *g = cfg->admin_group[0] ? getgrnam(cfg->admin_group) : NULL;
	if (g) {
		s->admin_gid = g->gr_gid;
		s->have_admin_gid = true;
	} else if (cfg->admin_group[0]) {
		log_warning("admin group %s does not exist: only root may cancel others' jobs",
			    cfg->admin_group);
	}
	jobs_set_uid_limits(jobs, cfg->jobs_per_uid, cfg->waiting_jobs_per_uid);
	struct upload_limits ul;
	upload_limits_default(&ul, cfg->image_memory_max);
	ul.per_uid = cfg->uploads_per_uid;
	ul.bytes_per_uid = cfg->upload_bytes_per_uid;
	s->uploads = uploads_new(base, &ul);
	if (!s->uploads) {
		free(s);
		return NULL;
	}
	s->listen_ev = event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, s);
	s->accept_pause = evtimer_new(base, accept_resume, s);
	s->reaper = event_new(base, -1, 0, reaper_cb, s);
	if (!s->listen_ev || !s->accept_pause || !s->reaper) {
		server_free(s); /* the caller reports a NULL server as out of memory */
		return NULL;
	}
	event_add(s->listen_ev, NULL);
	return s;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	/* Flush what can be flushed without blocking (job-ended "interrupted"). */
	for (struct client *c = s->clients; c; c = c->next)
		if (!c->dead)
			evbuffer_write(c->out, c->fd);
	while (s->clients) {
		struct client *c = s->clients;
		s->clients = c->next;
		client_destroy(c);
	}
	event_free_if(s->listen_ev);
	event_free_if(s->accept_pause);
	event_free_if(s->reaper);
	uploads_free(s->uploads);
	close(s->listen_fd);
	free(s);
}

size_t server_client_count(const struct server *s)
{
	return s->n_clients;
}

void server_device_event(struct server *s, struct device *dev, enum registry_change change)
{
	json_t *ev = wire_event_new(registry_change_event(change));
	json_object_set_new(ev, "device", device_to_json(dev, false));
	for (struct client *c = s->clients; c; c = c->next)
		if (c->sub_devices)
			client_send(c, ev);
	json_decref(ev);
}

void server_job_event(struct server *s, struct job *job, json_t *event)
{
	const char *name = json_string_value(json_object_get(event, "event"));
	bool ended = name && strcmp(name, "job-ended") == 0;
	for (struct client *c = s->clients; c; c = c->next) {
		if (c->sub_jobs || subscribed_to_job(c, job_id(job)))
			client_send(c, event);
		if (ended && c->probe_job == job)
			probe_ended(c, job, event);
	}
}

void server_set_auto(struct server *s, struct rules *rules, struct autoflash *af)
{
	s->rules = rules;
	s->autoflash = af;
}

void server_set_history(struct server *s, struct history *h, const char *why_not)
{
	s->history = h;
	snprintf(s->history_off, sizeof(s->history_off), "%s", why_not ? why_not : "");
}

void server_register_timeouts(void)
{
	timeouts_register(server_timeouts);
}

void server_set_mqtt(struct server *s, struct mqtt *m)
{
	s->mqtt = m;
}
