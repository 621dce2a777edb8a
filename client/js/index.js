// flashd-client: a flashd client for Node.js (>= 18) with no dependencies.
//
// It speaks the protocol of proto/PROTOCOL.md (flashd-protocol(7)) over the
// daemon's Unix socket with node:net.  Node cannot pass file descriptors, so
// firmware goes to the daemon in-band: announced size and SHA-256
// (upload-begin), then base64 chunks of at most 64 KiB (upload-chunk), then a
// flash request that names the uploads.  The daemon still never opens a path:
// this module reads the files.
'use strict';

const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { CATALOGUE } = require('./errors.js');

const PROTOCOL_VERSION = 1;
const CHUNK_BYTES = 64 * 1024;
// Chunks in flight per upload: enough to keep the socket busy, bounded memory.
const CHUNK_WINDOW = 4;
const VERSION = require('./package.json').version;

/** A failure from the catalogue (proto/errors.def): `code` is its stable id. */
class FlashdError extends Error {
  constructor(obj) {
    const code = obj && typeof obj.code === 'string' ? obj.code : 'internal';
    const info = CATALOGUE[code];
    super((obj && obj.message) || (info ? info.message : code));
    this.name = info ? info.className : 'FlashdError';
    this.code = code;
    this.hint = (obj && obj.hint) || (info ? info.hint : '');
    this.detail = (obj && obj.detail) || {};
    this.exitStatus = info ? info.exit : 1;
    if (obj && obj.job) this.job = obj.job;
  }

  /** Whether e is a FlashdError, and of that id when code is given. */
  static is(e, code) {
    return e instanceof FlashdError && (code === undefined || e.code === code);
  }
}

const ERROR_CODES = Object.freeze(Object.keys(CATALOGUE));

function unreachable(message, detail) {
  return new FlashdError({ code: 'daemon-unreachable', message, detail: detail || {} });
}

/** The documented search order: option, $FLASHD_SOCKET, the system socket, then the user's. */
function socketPath(explicit) {
  if (explicit) return explicit;
  if (process.env.FLASHD_SOCKET) return process.env.FLASHD_SOCKET;
  if (fs.existsSync('/run/flashd/flashd.sock')) return '/run/flashd/flashd.sock';
  return path.join(process.env.XDG_RUNTIME_DIR || '/run/flashd', 'flashd.sock');
}

/**
 * One connection to flashd.  Events: 'event' (every event object), and each
 * event by its name ('device-added', 'job-progress', ...); 'close'.
 */
class Client extends EventEmitter {
  constructor(socket, sockPath) {
    super();
    this.socketPath = sockPath;
    this._sock = socket;
    this._buf = '';
    this._nextId = 1;
    this._pending = []; // in request order: {id, resolve, reject}
    this._closed = false;
    this._subscribed = { devices: false, jobs: false };
    this.server = null; // the hello reply
    socket.setEncoding('utf8');
    socket.on('data', (d) => this._onData(d));
    socket.on('error', (e) => this._onClose(e));
    socket.on('close', () => this._onClose());
  }

  _onData(data) {
    this._buf += data;
    let nl;
    while ((nl = this._buf.indexOf('\n')) >= 0) {
      const line = this._buf.slice(0, nl).replace(/\r$/, '');
      this._buf = this._buf.slice(nl + 1);
      if (!line) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch (e) {
        this._fail(new FlashdError({ code: 'internal', message: `flashd sent malformed JSON: ${e.message}` }));
        return;
      }
      this._dispatch(msg);
    }
  }

  _dispatch(msg) {
    if (msg.type === 'event') {
      this.emit('event', msg);
      if (typeof msg.event === 'string') this.emit(msg.event, msg);
      return;
    }
    // Replies and errors come in request order; an error without an id (the
    // request was unreadable) answers the oldest request.
    let k = this._pending.findIndex((p) => p.id === msg.id);
    if (k < 0 && msg.id === undefined && this._pending.length) k = 0;
    if (k < 0) return;
    const [p] = this._pending.splice(k, 1);
    if (msg.type === 'error') p.reject(new FlashdError(msg));
    else p.resolve(msg);
  }

  _onClose(err) {
    if (this._closed) return;
    this._closed = true;
    const why = err ? `connection to flashd failed: ${err.message}` : 'flashd closed the connection';
    this._fail(unreachable(why, { socket: this.socketPath }));
    this.emit('close');
  }

  _fail(err) {
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) p.reject(err);
    this._sock.destroy();
  }

  /** Sends one request object and resolves with its reply (rejects with a FlashdError). */
  request(obj) {
    if (this._closed) return Promise.reject(unreachable('the connection is closed', { socket: this.socketPath }));
    const id = this._nextId++;
    const line = JSON.stringify({ ...obj, id }) + '\n';
    return new Promise((resolve, reject) => {
      this._pending.push({ id, resolve, reject });
      this._sock.write(line);
    });
  }

  /** hello: versions, capabilities, limits (connect() does it). */
  async hello(clientName) {
    this.server = await this.request({ request: 'hello', protocol: PROTOCOL_VERSION, client: clientName || `flashd-client.js ${VERSION}` });
    return this.server;
  }

  /** The devices flashd sees. */
  async list() {
    return (await this.request({ request: 'list-devices' })).devices;
  }

  /** A device's facts and modules; probe: ask the device now. */
  async info(device, options = {}) {
    const reply = await this.request({ request: 'device-info', device, probe: !!options.probe });
    return options.probe ? { ...reply.device, probe: reply.probe } : reply.device;
  }

  /** Current and recent jobs. */
  async jobs() {
    return (await this.request({ request: 'list-jobs' })).jobs;
  }

  /** Cancels a job: {already_ended, job}.  Its job-ended event follows. */
  async cancel(job) {
    const reply = await this.request({ request: 'cancel', job });
    return { alreadyEnded: reply.already_ended, job: reply.job };
  }

  /** Subscribes to device and/or job events (they add up for the connection). */
  async subscribe(what = { devices: true, jobs: true }) {
    const want = { devices: !!what.devices, jobs: !!what.jobs };
    if ((!want.devices || this._subscribed.devices) && (!want.jobs || this._subscribed.jobs)) return;
    const reply = await this.request({ request: 'subscribe', ...want });
    this._subscribed = { devices: reply.devices, jobs: reply.jobs };
  }

  /**
   * Sends one image in-band and resolves with its upload id once the daemon
   * has all of its bytes and their SHA-256 matched.  onProgress(sent, total).
   */
  async upload(name, data, onProgress) {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
    const begun = await this.request({ request: 'upload-begin', name, size: bytes.length, sha256 });
    const chunk = Math.min(CHUNK_BYTES, begun.chunk_bytes || CHUNK_BYTES);
    const inFlight = [];
    let done = 0;
    for (let offset = 0; offset < bytes.length; offset += chunk) {
      const part = bytes.subarray(offset, Math.min(offset + chunk, bytes.length));
      const sent = this.request({ request: 'upload-chunk', upload: begun.upload, offset, data: part.toString('base64') }).then((r) => {
        done += part.length;
        if (onProgress) onProgress(done, bytes.length); // may throw to stop the upload
        return r;
      });
      sent.catch(() => {}); // awaited below; an early failure must not be unhandled
      inFlight.push(sent);
      if (inFlight.length >= CHUNK_WINDOW) await inFlight.shift();
    }
    const replies = await Promise.all(inFlight);
    const last = replies[replies.length - 1];
    if (last && !last.complete) throw new FlashdError({ code: 'internal', message: `upload ${begun.upload} did not complete` });
    return begun.upload;
  }

  /**
   * Flashes firmware files (paths, or {name, data}) and follows the job(s) to
   * their end.  Returns a FlashOperation: events 'upload' ({file, sent, total}),
   * 'jobs' (JOB records from the reply), 'progress' (job-progress events),
   * 'ended' (each job-ended event); await op (or op.result) for the outcome.
   */
  flash(files, options = {}) {
    return new FlashOperation(this, files, options);
  }

  /** Closes the connection (jobs continue unless cancel-on-disconnect was asked). */
  close() {
    if (!this._closed) this._sock.end();
  }
}

async function readImage(file) {
  if (typeof file === 'string') return { name: path.basename(file), data: await fs.promises.readFile(file) };
  if (file && typeof file.name === 'string' && file.data) return { name: path.basename(file.name), data: file.data };
  throw new TypeError('a file is a path or {name, data}');
}

function requestTarget(options) {
  const t = {};
  for (const k of ['device', 'port', 'usb', 'platform']) if (options[k] !== undefined) t[k] = options[k];
  if (options.all) t.all = true;
  return t;
}

/** One flash: uploads, the flash request, then the job events until every job ended. */
class FlashOperation extends EventEmitter {
  constructor(client, files, options) {
    super();
    this.client = client;
    this.jobIds = [];
    this.result = this._run(files, options);
    this.result.catch(() => {}); // the caller awaits op or op.result
  }

  then(onOk, onErr) {
    return this.result.then(onOk, onErr);
  }

  catch(onErr) {
    return this.result.catch(onErr);
  }

  /**
   * Cancels the operation: its jobs once they exist (their job-ended events
   * still come), else the upload stops at its next chunk and no job is made.
   */
  async cancel() {
    this._cancelled = true;
    await Promise.all(this.jobIds.map((id) => this.client.cancel(id)));
  }

  _stopIfCancelled(phase) {
    if (this._cancelled && this.jobIds.length === 0)
      throw new FlashdError({ code: 'cancelled', message: `cancelled while ${phase}: no job was created`, detail: { phase } });
  }

  async _run(files, options) {
    const c = this.client;
    const list = Array.isArray(files) ? files : [files];
    if (list.length === 0) throw new TypeError('flash needs at least one file');
    await c.subscribe({ jobs: true }); // before flash: no event can be missed
    const images = [];
    for (const f of list) {
      const { name, data } = await readImage(f);
      this._stopIfCancelled('uploading');
      const upload = await c.upload(name, data, (sent, total) => {
        this._stopIfCancelled('uploading');
        this.emit('upload', { file: name, sent, total });
      });
      images.push({ name, upload });
    }
    this._stopIfCancelled('uploading');
    const ended = new Map();
    let finish;
    const allEnded = new Promise((resolve) => (finish = resolve));
    // Events read in the same chunk as the reply are dispatched before the
    // reply's continuation runs: keep them until the job ids are known.
    let early = [];
    const onEvent = (ev) => {
      if (early) {
        early.push(ev);
        return;
      }
      if (!this.jobIds.includes(ev.job)) return;
      if (ev.event === 'job-progress') this.emit('progress', ev);
      else if (ev.event === 'job-ended') {
        ended.set(ev.job, ev);
        this.emit('ended', ev);
        if (ended.size === this.jobIds.length) finish();
      }
    };
    const onClose = () => finish();
    c.on('event', onEvent);
    c.once('close', onClose);
    try {
      const reply = await c.request({
        request: 'flash',
        images,
        target: requestTarget(options),
        options: {
          force: !!options.force,
          verify: !!options.verify,
          'dry-run': !!options.dryRun,
          wait: options.wait === undefined ? 0 : options.wait,
          detach: false,
          'cancel-on-disconnect': !!options.cancelOnDisconnect,
        },
      });
      // The reply comes before the jobs' first events.
      this.jobIds = reply.jobs.map((j) => j.id);
      this.emit('jobs', reply.jobs);
      const before = early;
      early = null;
      for (const ev of before) onEvent(ev);
      await allEnded;
    } catch (e) {
      early = null;
      throw e;
    } finally {
      c.off('event', onEvent);
      c.off('close', onClose);
    }
    const results = this.jobIds.map((id) => ended.get(id));
    if (results.some((r) => r === undefined))
      throw unreachable('flashd closed the connection before the job ended', { socket: c.socketPath });
    const failed = results.find((r) => r.result !== 'done');
    if (failed) {
      const err = new FlashdError(failed.error || { code: 'internal', message: `job ${failed.job} ${failed.result}` });
      err.job = failed.record;
      err.results = results;
      throw err;
    }
    return { jobs: results.map((r) => r.record), outcomes: results.map((r) => r.outcome), results };
  }
}

/** Connects and says hello; rejects with daemon-unreachable when flashd cannot be reached. */
function connect(options = {}) {
  const sockPath = socketPath(options.socket);
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: sockPath });
    const onError = (e) => reject(unreachable(`cannot reach flashd at ${sockPath}: ${e.message}`, { socket: sockPath, errno: -(e.errno || 0) }));
    sock.once('error', onError);
    sock.once('connect', () => {
      sock.off('error', onError);
      const client = new Client(sock, sockPath);
      client.hello(options.clientName).then(() => resolve(client), reject);
    });
  });
}

// One-shot helpers: connect, do one thing, close.
async function withClient(options, fn) {
  const c = await connect(options);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

function list(options = {}) {
  return withClient(options, (c) => c.list());
}

function info(device, options = {}) {
  return withClient(options, (c) => c.info(device, options));
}

function cancel(job, options = {}) {
  return withClient(options, (c) => c.cancel(job));
}

/** Flashes on a connection of its own, closed when the jobs have ended. */
function flash(files, options = {}) {
  const op = new EventEmitter();
  let inner = null;
  op.result = connect(options).then(async (c) => {
    inner = c.flash(files, options);
    for (const ev of ['upload', 'jobs', 'progress', 'ended']) inner.on(ev, (x) => op.emit(ev, x));
    if (cancelAsked) inner.cancel().catch(() => {});
    try {
      return await inner.result;
    } finally {
      c.close();
    }
  });
  op.result.catch(() => {});
  op.then = (a, b) => op.result.then(a, b);
  op.catch = (b) => op.result.catch(b);
  let cancelAsked = false;
  op.cancel = async () => {
    cancelAsked = true;
    if (inner) await inner.cancel();
  };
  return op;
}

/**
 * Watches devices and jobs: resolves with a Watcher (an EventEmitter of every
 * event, by name and as 'event'; close() ends it), subscribed first, then
 * given the current devices (watcher.devices) so nothing is missed.
 */
async function watch(options = {}) {
  const c = await connect(options);
  const devices = options.devices !== false;
  const jobs = options.jobs !== false;
  await c.subscribe({ devices, jobs });
  const watcher = new EventEmitter();
  watcher.client = c;
  watcher.devices = devices ? await c.list() : [];
  c.on('event', (ev) => {
    watcher.emit('event', ev);
    watcher.emit(ev.event, ev);
  });
  c.on('close', () => watcher.emit('close'));
  watcher.close = () => c.close();
  return watcher;
}

module.exports = {
  connect,
  list,
  watch,
  flash,
  cancel,
  info,
  socketPath,
  Client,
  FlashOperation,
  FlashdError,
  ERROR_CODES,
  CATALOGUE,
  PROTOCOL_VERSION,
  CHUNK_BYTES,
};
