#include "image_cache.h"

#include "asset_module.h"

#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <nettle/sha2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct image_cache {
	struct image_ref *refs;
	size_t bytes, limit, count;
};

struct image_cache *image_cache_new(size_t limit)
{
	struct image_cache *c = calloc(1, sizeof(*c));
	if (c)
		c->limit = limit;
	return c;
}

void image_cache_free(struct image_cache *c)
{
	if (!c)
		return;
	while (c->refs) {
		struct image_ref *r = c->refs;
		c->refs = r->next;
		if (r->bundle)
			bundle_free(r->bundle);
		else
			image_free(r->img);
		free(r);
	}
	free(c);
}

size_t image_cache_bytes(const struct image_cache *c)
{
	return c->bytes;
}

size_t image_cache_count(const struct image_cache *c)
{
	return c->count;
}

static int unreadable(struct error *err, int errnum, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int unreadable(struct error *err, int errnum, const char *name, const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	error_set(err, ERR_FILE_UNREADABLE, "%s: %s", name, reason);
	error_detail_str(err, "reason", reason);
	error_detail_str(err, "file", name);
	if (errnum)
		error_detail_int(err, "errno", errnum);
	return -1;
}

/* What reading a file came to, without touching the error machinery (which is
 * not for threads): the reader fills it, the loop turns it into an error. */
struct raw_read {
	uint8_t *buf;
	size_t len;
	int errnum;
	long long size;	 /* for "over the limit" */
	long long limit; /* ... and the limit that applied */
	char reason[160];
};

/* Reads the whole file with pread (the client's file offset does not matter). */
static int read_raw(int fd, struct raw_read *r)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		r->errnum = errno;
		snprintf(r->reason, sizeof(r->reason), "fstat failed: %s", strerror(errno));
		return -1;
	}
	/* Pipes, sockets and devices could block the daemon or never end. */
	if (!S_ISREG(st.st_mode)) {
		snprintf(r->reason, sizeof(r->reason), "not a regular file");
		return -1;
	}
	/* Zip bundles may be larger than modules: the first bytes say which limit applies. */
	uint8_t head[4];
	size_t limit = IMAGE_FILE_MAX;
	if ((uint64_t)st.st_size > IMAGE_FILE_MAX &&
	    pread(fd, head, sizeof(head), 0) == (ssize_t)sizeof(head) &&
	    bundle_is_zip(head, sizeof(head)))
		limit = BUNDLE_FILE_MAX;
	if ((uint64_t)st.st_size > limit) {
		r->size = st.st_size;
		r->limit = (long long)limit;
		snprintf(r->reason, sizeof(r->reason), "%lld bytes is over the limit",
			 (long long)st.st_size);
		return -1;
	}
	size_t len = (size_t)st.st_size;
	_cleanup_free_ uint8_t *buf = malloc(len ? len : 1);
	if (!buf) {
		r->errnum = ENOMEM;
		snprintf(r->reason, sizeof(r->reason), "out of memory");
		return -1;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r->errnum = n < 0 ? errno : 0;
			snprintf(r->reason, sizeof(r->reason), "read failed: %s",
				 n < 0 ? strerror(errno) : "file shrank while reading");
			return -1;
		}
		got += (size_t)n;
	}
	r->buf = TAKE_PTR(buf);
	r->len = len;
	return 0;
}

static void raw_error(const struct raw_read *r, const char *name, struct error *err)
{
	unreadable(err, r->errnum, name, "%s", r->reason);
	if (r->size) {
		error_detail_int(err, "size", r->size);
		error_detail_int(err, "limit", r->limit);
	}
}

static uint8_t *read_all(int fd, const char *name, size_t *ret_len, struct error *err)
{
	struct raw_read r = {0};
	if (read_raw(fd, &r) < 0) {
		raw_error(&r, name, err);
		return NULL;
	}
	*ret_len = r.len;
	return r.buf;
}

int image_cache_load_fd(struct image_cache *c, int fd, const char *name, struct image_ref **ret,
			struct error *err)
{
	size_t len = 0;
	uint8_t *buf = read_all(fd, name, &len, err);
	if (!buf)
		return -1;
	return image_cache_load_buffer(c, buf, len, name, ret, err);
}

int image_cache_load_buffer(struct image_cache *c, uint8_t *buf, size_t len, const char *name,
			    struct image_ref **ret, struct error *err)
{
	_cleanup_free_ uint8_t *owned = buf; /* ours on every path: the parsed image copies */
	_cleanup_(image_freep) struct image *img = NULL;
	uint8_t sha[32];
	struct sha256_ctx ctx;
	sha256_init(&ctx);
	sha256_update(&ctx, len, owned);
	sha256_digest(&ctx, sizeof(sha), sha);
	for (struct image_ref *r = c->refs; r; r = r->next) {
		if (memcmp(r->sha256, sha, sizeof(sha)) == 0) {
			r->refs++;
			*ret = r;
			return 0;
		}
	}
	if (c->bytes + len > c->limit) {
		unreadable(err, 0, name, "the daemon holds too much firmware for other jobs");
		error_detail_int(err, "limit", (long long)c->limit);
		return -1;
	}
	/* A zip's application belongs to its bundle; a module file's image to img. */
	_cleanup_(bundle_freep) struct bundle *bundle = NULL;
	size_t held = len;
	int rc;
	if (bundle_is_zip(owned, len)) {
		rc = bundle_parse(owned, len, &bundle, err);
		if (rc < 0)
			error_prefix(err, "%s: ", name);
		else
			held += (size_t)bundle_assets_bytes(bundle);
	} else {
		rc = image_parse(owned, len, &img, err);
	}
	if (rc < 0) {
		/* A damaged image or bundle is returned for display; it is not flashed. */
		error_detail_str(err, "file", name);
		return -1;
	}
	if (c->bytes + held > c->limit) { /* a bundle's assets may tip it over */
		unreadable(err, 0, name, "the daemon holds too much firmware for other jobs");
		error_detail_int(err, "limit", (long long)c->limit);
		return -1;
	}
	struct image_ref *r = calloc(1, sizeof(*r));
	if (!r)
		return error_set(err, ERR_OUT_OF_MEMORY, "out of memory reading %s", name);
	if (bundle) {
		r->img = bundle->app;
		r->bundle = TAKE_PTR(bundle);
	} else {
		r->img = TAKE_PTR(img);
	}
	memcpy(r->sha256, sha, sizeof(sha));
	for (int i = 0; i < 32; i++)
		snprintf(r->sha256_hex + 2 * i, 3, "%02x", sha[i]);
	r->bytes = len;
	r->held = held;
	r->refs = 1;
	r->next = c->refs;
	c->refs = r;
	c->bytes += held;
	c->count++;
	*ret = r;
	return 0;
}

void image_cache_put(struct image_cache *c, struct image_ref *ref)
{
	if (!ref || --ref->refs > 0)
		return;
	for (struct image_ref **pp = &c->refs; *pp; pp = &(*pp)->next) {
		if (*pp == ref) {
			*pp = ref->next;
			break;
		}
	}
	c->bytes -= ref->held;
	c->count--;
	if (ref->bundle)
		bundle_free(ref->bundle);
	else
		image_free(ref->img);
	free(ref);
}

int image_ref_expand_assets(struct image_cache *c, const struct image_ref *ref, const char *name,
			    struct image_ref **out, char (*names)[WIRE_NAME_MAX], unsigned room,
			    unsigned *n_out, struct error *err)
{
	*n_out = 0;
	if (!ref->bundle || ref->bundle->n_assets == 0)
		return 0;
	const struct bundle *b = ref->bundle;
	if (b->n_assets > room) {
		error_set(err, ERR_ASSETS_NOT_FLASHABLE,
			  "%s holds %u assets; with its application and the job's other files "
			  "that is more than the %d files one job writes",
			  name, b->n_assets, WIRE_IMAGES_MAX);
		error_detail_str(err, "file", name);
		error_detail_int(err, "assets", b->n_assets);
		error_detail_int(err, "bytes", (long long)bundle_assets_bytes(b));
		error_detail_int(err, "limit", WIRE_IMAGES_MAX);
		error_detail_str(err, "reason", "too many files for one job");
		error_hint(err, "flash the bundle alone, or split its assets over several jobs");
		return -1;
	}
	for (unsigned i = 0; i < b->n_assets; i++) {
		const struct bundle_asset *a = &b->assets[i];
		uint8_t *m;
		size_t len;
		if (asset_module_build(a->name, a->data, a->size, &m, &len, err) < 0 ||
		    image_cache_load_buffer(c, m, len, a->name, &out[i], err) < 0) {
			error_detail_str(err, "file", name);
			for (unsigned k = 0; k < i; k++)
				image_cache_put(c, out[k]);
			return -1;
		}
		snprintf(names[i], WIRE_NAME_MAX, "%s%s", BUNDLE_ASSETS_DIR, a->name);
		*n_out = i + 1;
	}
	return 0;
}

/* ---- reading a client's file off the loop -------------------------------- */

/*
 * A file on a stalled network mount or a FUSE file system can leave read()
 * hanging for ever, so the loop never reads a client's file: a detached thread
 * does (read_raw) and wakes the loop through a pipe.  Both sides share the
 * state under a mutex; whoever lets go last frees it.  A read the loop gave up
 * on (deadline, client gone) is "abandoned": its thread frees everything when
 * (if ever) its read returns.  The number of such threads is bounded.
 */
struct image_read {
	pthread_mutex_t lock;
	bool done, abandoned;
	int fd;	     /* the reader's own duplicate of the client's fd */
	int wake[2]; /* reader -> loop */
	struct raw_read raw;
	/* loop side only */
	struct event *wake_ev, *deadline_ev;
	image_read_cb cb;
	void *ctx;
	bool timed_out;
	unsigned deadline_ms;
	char name[WIRE_NAME_MAX];
	uid_t owner;
};

static atomic_uint readers_alive;

/* Reader threads per uid (a uid's stalled files must not use up everyone's). */
static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uid_t uid;
	unsigned n;
} owners[IMAGE_READERS_MAX];

static bool owner_take(uid_t uid)
{
	bool ok = false;
	pthread_mutex_lock(&owners_lock);
	int slot = -1;
	for (int i = 0; i < IMAGE_READERS_MAX; i++) {
		if (owners[i].n && owners[i].uid == uid) {
			slot = i;
			break;
		}
		if (!owners[i].n && slot < 0)
			slot = i;
	}
	if (slot >= 0 && owners[slot].n < IMAGE_READERS_PER_UID) {
		owners[slot].uid = uid;
		owners[slot].n++;
		ok = true;
	}
	pthread_mutex_unlock(&owners_lock);
	return ok;
}

static void owner_put(uid_t uid)
{
	pthread_mutex_lock(&owners_lock);
	for (int i = 0; i < IMAGE_READERS_MAX; i++) {
		if (owners[i].n && owners[i].uid == uid) {
			owners[i].n--;
			break;
		}
	}
	pthread_mutex_unlock(&owners_lock);
}

static void read_state_free(struct image_read *r)
{
	if (r->fd >= 0)
		close(r->fd);
	if (r->wake[1] >= 0)
		close(r->wake[1]);
	free(r->raw.buf);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static void *reader_main(void *arg)
{
	struct image_read *r = arg;
	struct raw_read raw = {0};
	read_raw(r->fd, &raw);
	pthread_mutex_lock(&r->lock);
	r->raw = raw;
	r->done = true;
	bool abandoned = r->abandoned;
	/* Once unlocked, a read the loop still wants may be freed by it at any time. */
	uid_t owner = r->owner;
	if (!abandoned) {
		char one = 1;
		if (write(r->wake[1], &one, 1) < 0) {
			/* The pipe is fresh and holds one byte: cannot fail. */
		}
	}
	pthread_mutex_unlock(&r->lock);
	if (abandoned)
		read_state_free(r);
	owner_put(owner);
	atomic_fetch_sub(&readers_alive, 1);
	return NULL;
}

static void loop_side_free(struct image_read *r)
{
	if (r->wake_ev) /* event_free() does not take NULL */
		event_free(r->wake_ev);
	if (r->deadline_ev)
		event_free(r->deadline_ev);
	close(r->wake[0]);
	r->wake_ev = r->deadline_ev = NULL;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct image_read *r = arg;
	event_del(r->deadline_ev);
	r->cb(r->ctx, r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct image_read *r = arg;
	pthread_mutex_lock(&r->lock);
	r->timed_out = !r->done;
	pthread_mutex_unlock(&r->lock);
	event_del(r->wake_ev);
	r->cb(r->ctx, r);
}

struct image_read *image_read_start(struct event_base *base, int fd, const char *name, uid_t owner,
				    unsigned deadline_ms, image_read_cb cb, void *ctx,
				    struct error *err)
{
	if (atomic_load(&readers_alive) >= IMAGE_READERS_MAX) {
		unreadable(err, 0, name,
			   "%u reads of stalled files are still pending in the daemon",
			   IMAGE_READERS_MAX);
		error_detail_int(err, "limit", IMAGE_READERS_MAX);
		return NULL;
	}
	if (!owner_take(owner)) {
		unreadable(err, 0, name, "uid %u has %u file reads pending (stalled files?)",
			   (unsigned)owner, IMAGE_READERS_PER_UID);
		error_detail_int(err, "limit", IMAGE_READERS_PER_UID);
		return NULL;
	}
	struct image_read *r = calloc(1, sizeof(*r));
	if (!r) {
		owner_put(owner);
		error_set(err, ERR_OUT_OF_MEMORY, "out of memory reading %s", name);
		return NULL;
	}
	pthread_mutex_init(&r->lock, NULL);
	r->wake[0] = r->wake[1] = -1;
	r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->cb = cb;
	r->ctx = ctx;
	r->owner = owner;
	r->deadline_ms = deadline_ms;
	if (r->fd < 0 || pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		unreadable(err, errno, name, "cannot hand the file to a reader: %s",
			   strerror(errno));
		if (r->wake[0] >= 0)
			close(r->wake[0]);
		read_state_free(r);
		owner_put(owner);
		return NULL;
	}
	r->wake_ev = event_new(base, r->wake[0], EV_READ, on_wake, r);
	r->deadline_ev = evtimer_new(base, on_deadline, r);
	if (!r->wake_ev || !r->deadline_ev) {
		owner_put(owner);
		error_set(err, ERR_OUT_OF_MEMORY, "out of memory reading %s", name);
		loop_side_free(r);
		read_state_free(r);
		return NULL;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t t;
	atomic_fetch_add(&readers_alive, 1);
	int rc = pthread_create(&t, &attr, reader_main, r);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		atomic_fetch_sub(&readers_alive, 1);
		owner_put(owner);
		unreadable(err, rc, name, "cannot start a reader: %s", strerror(rc));
		loop_side_free(r);
		read_state_free(r);
		return NULL;
	}
	struct timeval tv = {deadline_ms / 1000, (deadline_ms % 1000) * 1000};
	event_add(r->wake_ev, NULL);
	event_add(r->deadline_ev, &tv);
	return r;
}

uint8_t *image_read_take(struct image_read *r, size_t *len, struct error *err)
{
	uint8_t *buf = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->timed_out) {
		unreadable(err, ETIMEDOUT, r->name,
			   "the file delivered no data within %u ms (a stalled file system?)",
			   r->deadline_ms);
		error_detail_int(err, "limit", r->deadline_ms);
	} else if (!r->raw.buf) {
		raw_error(&r->raw, r->name, err);
	} else {
		buf = r->raw.buf;
		*len = r->raw.len;
		r->raw.buf = NULL;
	}
	pthread_mutex_unlock(&r->lock);
	return buf;
}

void image_read_free(struct image_read *r)
{
	if (!r)
		return;
	loop_side_free(r);
	pthread_mutex_lock(&r->lock);
	bool done = r->done;
	r->abandoned = true;
	pthread_mutex_unlock(&r->lock);
	if (done)
		read_state_free(r);
	else
		log_warning("%s: giving up on a read that has not returned (its thread stays "
			    "until it does)",
			    r->name);
}

unsigned image_readers_alive(void)
{
	return atomic_load(&readers_alive);
}
