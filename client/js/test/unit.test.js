// flashd-client without a daemon: the error ids against proto/errors.def, the
// TypeScript declarations against the exports (and tsc --strict over a program
// that uses them), and the protocol handling against a scripted fake flashd.
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const test = require('node:test');

const HERE = path.resolve(__dirname, '..');
const ERRORS_DEF = path.join(HERE, '..', '..', 'proto', 'errors.def');
const flashd = require('..');
const { parseCatalogue } = require('../tools/gen-errors.js');

test('the error ids are proto/errors.def\'s, in order, with their exit statuses', () => {
  const def = parseCatalogue(fs.readFileSync(ERRORS_DEF, 'utf8'));
  assert.ok(def.length >= 30, `only ${def.length} entries parsed`);
  assert.deepEqual([...flashd.ERROR_CODES], def.map((e) => e.id));
  for (const e of def) {
    assert.equal(flashd.CATALOGUE[e.id].exit, e.exit, e.id);
    assert.deepEqual(Object.keys(flashd.CATALOGUE[e.id].details), e.details.map((d) => d.key), e.id);
  }
  for (const id of ['wrong-platform', 'upload-checksum-mismatch', 'upload-too-large', 'upload-invalid'])
    assert.ok(flashd.ERROR_CODES.includes(id), id);
});

test('errors.js and errors.d.ts are what tools/gen-errors.js makes of errors.def', () => {
  const r = spawnSync(process.execPath, [path.join(HERE, 'tools', 'gen-errors.js'), '--check', ERRORS_DEF], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

test('FlashdError carries the catalogue facts of its id', () => {
  const e = new flashd.FlashdError({ code: 'wrong-platform', message: 'm', hint: 'h', detail: { image_platform: 'electron' } });
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'WrongPlatformError');
  assert.equal(e.exitStatus, 4);
  assert.equal(e.detail.image_platform, 'electron');
  assert.ok(flashd.FlashdError.is(e, 'wrong-platform'));
  assert.ok(!flashd.FlashdError.is(e, 'usage'));
  const unknown = new flashd.FlashdError({ code: 'from-the-future', message: 'x' });
  assert.equal(unknown.exitStatus, 1);
});

// Names index.d.ts declares at top level with "export function|class|const".
function declaredExports() {
  const dts = fs.readFileSync(path.join(HERE, 'index.d.ts'), 'utf8');
  return new Set([...dts.matchAll(/^export (?:declare )?(?:function|class|const) ([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]));
}

test('index.d.ts declares every export of index.js, and nothing else', () => {
  const declared = declaredExports();
  const exported = new Set(Object.keys(flashd));
  for (const name of exported) assert.ok(declared.has(name), `${name} is exported but not declared`);
  for (const name of declared) assert.ok(exported.has(name), `${name} is declared but not exported`);
  for (const fn of ['list', 'watch', 'flash', 'cancel', 'info', 'connect'])
    assert.equal(typeof flashd[fn], 'function', fn);
});

function findTsc() {
  const base = process.env.XDG_CACHE_HOME || (process.env.HOME ? path.join(process.env.HOME, '.cache') : '/var/cache');
  const dir = process.env.FLASHD_TYPESCRIPT_DIR || path.join(base, 'flashd-test', 'typescript-5.6.3');
  const tsc = path.join(dir, 'node_modules', '.bin', 'tsc');
  return fs.existsSync(tsc) && fs.existsSync(path.join(dir, 'node_modules', '@types', 'node')) ? { tsc, dir } : null;
}

test('tsc --strict type-checks a program using index.d.ts (and refuses its marked misuses)', (t) => {
  const found = findTsc();
  if (!found) {
    t.skip('TypeScript is not installed: client/js/test/typescript-setup.sh installs it (scripts/install-deps runs it)');
    return;
  }
  const r = spawnSync(found.tsc, ['-p', path.join(__dirname, 'tsconfig.json'), '--typeRoots', path.join(found.dir, 'node_modules', '@types')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  // The check has teeth: the same program without one @ts-expect-error fails.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'flashd-js-'));
  try {
    const src = fs.readFileSync(path.join(__dirname, 'types-check.ts'), 'utf8').replace(/^\s*\/\/ @ts-expect-error: dryRun.*$/m, '');
    fs.writeFileSync(path.join(tmp, 'bad.ts'), src.replace(/'\.\.\/index'/g, JSON.stringify(path.join(HERE, 'index'))));
    const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'tsconfig.json'), 'utf8'));
    cfg.files = ['bad.ts'];
    fs.writeFileSync(path.join(tmp, 'tsconfig.json'), JSON.stringify(cfg));
    const bad = spawnSync(found.tsc, ['-p', path.join(tmp, 'tsconfig.json'), '--typeRoots', path.join(found.dir, 'node_modules', '@types')], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0, 'tsc accepted a string for dryRun');
    assert.match(bad.stdout, /TS2322/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

// ---- a scripted fake flashd -------------------------------------------------

// Serves one connection; handler(msg, send) answers each request line.
function fakeDaemon(handler) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashd-js-'));
  const sock = path.join(dir, 'flashd.sock');
  const seen = [];
  const server = net.createServer((conn) => {
    let buf = '';
    conn.setEncoding('utf8');
    const send = (...objs) => conn.write(objs.map((o) => JSON.stringify(o) + '\n').join(''));
    conn.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        seen.push(msg);
        if (msg.request === 'hello') send({ type: 'reply', id: msg.id, request: 'hello', protocol: 1, server: 'fake', capabilities: ['upload'], limits: {} });
        else handler(msg, send, conn);
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(sock, () =>
      resolve({
        sock,
        seen,
        close: () => {
          server.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      }),
    ),
  );
}

test('flash uploads in order-checked base64 chunks of at most 64 KiB with the SHA-256, then follows the job', { timeout: 20000 }, async () => {
  const data = crypto.randomBytes(150000);
  const got = [];
  const fake = await fakeDaemon((msg, send) => {
    if (msg.request === 'subscribe') send({ type: 'reply', id: msg.id, request: 'subscribe', devices: false, jobs: true });
    else if (msg.request === 'upload-begin') send({ type: 'reply', id: msg.id, request: 'upload-begin', upload: 'upload-1', size: msg.size, chunk_bytes: 65536 });
    else if (msg.request === 'upload-chunk') {
      const bytes = Buffer.from(msg.data, 'base64');
      assert.equal(msg.offset, got.reduce((n, b) => n + b.length, 0));
      got.push(bytes);
      const received = msg.offset + bytes.length;
      send({ type: 'reply', id: msg.id, request: 'upload-chunk', upload: 'upload-1', received, size: data.length, complete: received === data.length });
    } else if (msg.request === 'flash') {
      const record = { id: 'job-1', state: 'queued' };
      // The reply and the job's whole life in one write: no event may be lost.
      send(
        { type: 'reply', id: msg.id, request: 'flash', jobs: [record] },
        { type: 'event', event: 'job-progress', job: 'job-1', state: 'writing', phase: 'writing', done: 10, total: 20, percent: 50 },
        { type: 'event', event: 'job-progress', job: 'other', state: 'writing', phase: 'writing', done: 1, total: 2, percent: 50 },
        { type: 'event', event: 'job-ended', job: 'job-1', result: 'done', outcome: 'verified', record: { ...record, state: 'done' } },
      );
    }
  });
  try {
    const uploads = [];
    const progress = [];
    const op = flashd.flash({ name: '/some/dir/app.bin', data }, { socket: fake.sock, device: 'dev1' });
    op.on('upload', (u) => uploads.push(u));
    op.on('progress', (p) => progress.push(p));
    const res = await op;
    assert.deepEqual(res.outcomes, ['verified']);
    assert.ok(Buffer.concat(got).equals(data), 'the daemon got other bytes');
    assert.ok(got.every((b) => b.length <= 65536));
    assert.equal(got.length, 3);
    const begin = fake.seen.find((m) => m.request === 'upload-begin');
    assert.equal(begin.sha256, crypto.createHash('sha256').update(data).digest('hex'));
    assert.equal(begin.size, data.length);
    assert.equal(begin.name, 'app.bin');
    const req = fake.seen.find((m) => m.request === 'flash');
    assert.deepEqual(req.images, [{ name: 'app.bin', upload: 'upload-1' }]);
    assert.deepEqual(req.target, { device: 'dev1' });
    assert.equal(uploads[uploads.length - 1].sent, data.length);
    assert.deepEqual(progress.map((p) => p.job), ['job-1']);
    const subscribeAt = fake.seen.findIndex((m) => m.request === 'subscribe');
    assert.ok(subscribeAt >= 0 && subscribeAt < fake.seen.indexOf(req), 'subscribed after flashing');
  } finally {
    fake.close();
  }
});

test('cancel during the upload stops it: no flash request, rejected with cancelled', { timeout: 20000 }, async () => {
  const fake = await fakeDaemon((msg, send) => {
    if (msg.request === 'subscribe') send({ type: 'reply', id: msg.id, request: 'subscribe', jobs: true });
    else if (msg.request === 'upload-begin') send({ type: 'reply', id: msg.id, request: 'upload-begin', upload: 'u', size: msg.size });
    else if (msg.request === 'upload-chunk') setTimeout(() => send({ type: 'reply', id: msg.id, request: 'upload-chunk', upload: 'u', received: msg.offset + 65536, complete: false }), 5);
  });
  try {
    const op = flashd.flash({ name: 'big.bin', data: Buffer.alloc(64 * 65536) }, { socket: fake.sock });
    let chunks = 0;
    op.on('upload', () => {
      if (++chunks === 2) op.cancel();
    });
    await assert.rejects(op, (e) => flashd.FlashdError.is(e, 'cancelled') && e.detail.phase === 'uploading');
    assert.ok(!fake.seen.some((m) => m.request === 'flash'), 'a flash request was sent');
    assert.ok(fake.seen.filter((m) => m.request === 'upload-chunk').length < 64, 'the whole file was sent');
  } finally {
    fake.close();
  }
});

test('a failed job rejects with the typed error of its catalogue id', { timeout: 20000 }, async () => {
  const fake = await fakeDaemon((msg, send) => {
    if (msg.request === 'subscribe') send({ type: 'reply', id: msg.id, request: 'subscribe', jobs: true });
    else if (msg.request === 'upload-begin') send({ type: 'reply', id: msg.id, request: 'upload-begin', upload: 'u', size: msg.size });
    else if (msg.request === 'upload-chunk') send({ type: 'reply', id: msg.id, request: 'upload-chunk', complete: true });
    else if (msg.request === 'flash') {
      send({ type: 'reply', id: msg.id, request: 'flash', jobs: [{ id: 'j' }] });
      setTimeout(() => send({ type: 'event', event: 'job-ended', job: 'j', result: 'failed', outcome: null, error: { code: 'wrong-platform', message: 'built for Electron', hint: 'rebuild', detail: { image_platform: 'electron' } }, record: { id: 'j' } }), 20);
    }
  });
  try {
    await assert.rejects(flashd.flash({ name: 'e.bin', data: Buffer.from('x') }, { socket: fake.sock }), (e) => {
      assert.ok(flashd.FlashdError.is(e, 'wrong-platform'));
      assert.equal(e.exitStatus, 4);
      assert.equal(e.detail.image_platform, 'electron');
      assert.equal(e.job.id, 'j');
      return true;
    });
  } finally {
    fake.close();
  }
});

test('a request error, an error without id and a closed connection reject with their ids', { timeout: 20000 }, async () => {
  let n = 0;
  const fake = await fakeDaemon((msg, send, conn) => {
    n++;
    if (n === 1) send({ type: 'error', id: msg.id, code: 'device-not-found', message: 'no such device', hint: 'h', detail: { target: 'x' } });
    else if (n === 2) send({ type: 'error', code: 'bad-request', message: 'too long', hint: 'h', detail: { limit: 65536 } });
    else conn.destroy();
  });
  try {
    const c = await flashd.connect({ socket: fake.sock });
    await assert.rejects(c.info('x'), (e) => e.code === 'device-not-found' && e.detail.target === 'x');
    await assert.rejects(c.list(), (e) => e.code === 'bad-request' && e.exitStatus === 2);
    await assert.rejects(c.jobs(), (e) => e.code === 'daemon-unreachable' && e.exitStatus === 10);
  } finally {
    fake.close();
  }
  await assert.rejects(flashd.list({ socket: path.join(os.tmpdir(), 'no-such-flashd.sock') }), (e) => e.code === 'daemon-unreachable');
});

test('socketPath follows the documented order', () => {
  const saved = { ...process.env };
  try {
    assert.equal(flashd.socketPath('/x.sock'), '/x.sock');
    process.env.FLASHD_SOCKET = '/env.sock';
    assert.equal(flashd.socketPath(), '/env.sock');
    delete process.env.FLASHD_SOCKET;
    process.env.XDG_RUNTIME_DIR = '/run/user/1000';
    if (!fs.existsSync('/run/flashd/flashd.sock')) assert.equal(flashd.socketPath(), '/run/user/1000/flashd.sock');
  } finally {
    process.env = saved;
  }
});

