#!/usr/bin/env node
// A session as an IDE would run it, against a real flashd (under flashd-sim in
// tests/integration/client/node_test.py, which checks what this prints): list,
// watch, info, flash with progress, a refused build, cancel, and uploads the
// daemon must refuse.  Prints one JSON object with what it saw.
//
//   sim-session.js SOCKET DEVICE_KEY GOOD_FILE WRONG_PLATFORM_FILE PART...
'use strict';

const crypto = require('node:crypto');
const flashd = require('..');

const [socket, device, good, wrong, ...parts] = process.argv.slice(2);

function errorFacts(e) {
  return flashd.FlashdError.is(e)
    ? { class: e.name, code: e.code, exit: e.exitStatus, message: e.message, hint: e.hint, detail: e.detail }
    : { class: e && e.name, message: String(e && e.stack) };
}

async function expectFailure(promise) {
  try {
    return { resolved: await promise };
  } catch (e) {
    return errorFacts(e);
  }
}

async function main() {
  const out = {};
  const watcher = await flashd.watch({ socket });
  const watched = [];
  watcher.on('event', (ev) => watched.push({ event: ev.event, job: ev.job, device: ev.device && ev.device.key }));
  out.watchDevices = watcher.devices.map((d) => d.key);
  out.list = (await flashd.list({ socket })).map((d) => ({ key: d.key, platform: d.platform, mode: d.mode }));

  // The good build, with progress.
  const uploads = [];
  const progress = [];
  const t0 = Date.now();
  let uploadMs = -1;
  const op = flashd.flash(good, { socket, device });
  op.on('upload', (u) => {
    uploads.push(u);
    if (u.sent === u.total) uploadMs = Date.now() - t0;
  });
  op.on('progress', (p) => progress.push({ state: p.state, done: p.done, total: p.total, percent: p.percent, note: p.note }));
  let jobs = null;
  op.on('jobs', (j) => (jobs = j.map((x) => x.id)));
  try {
    const res = await op;
    out.good = { ok: true, outcomes: res.outcomes, jobs: res.jobs.map((j) => ({ id: j.id, state: j.state, result: j.result, image: j.images[0].name, sha256: j.images[0].sha256 })) };
  } catch (e) {
    out.good = { ok: false, error: errorFacts(e) };
  }
  out.good.uploads = uploads;
  out.good.uploadMs = uploadMs;
  out.good.totalMs = Date.now() - t0;
  out.good.progress = progress;
  out.good.jobIds = jobs;

  // Several files in one job (system parts: several chunks each).
  out.parts = { uploads: [], progress: [], chunks: 0 };
  const op4 = flashd.flash(parts, { socket, device });
  op4.on('upload', (u) => {
    out.parts.uploads.push(u);
    out.parts.chunks++;
  });
  op4.on('progress', (p) => out.parts.progress.push({ state: p.state, done: p.done, total: p.total }));
  try {
    const res = await op4;
    Object.assign(out.parts, { ok: true, outcomes: res.outcomes, jobs: res.jobs.map((j) => ({ id: j.id, images: j.images.map((i) => i.name) })) });
  } catch (e) {
    Object.assign(out.parts, { ok: false, error: errorFacts(e) });
  }

  // The wrong platform's build: refused before the first byte.
  const wrongProgress = [];
  const op2 = flashd.flash(wrong, { socket, device });
  op2.on('progress', (p) => wrongProgress.push(p.state));
  out.wrong = await expectFailure(op2);
  out.wrong.progress = wrongProgress;

  out.info = await flashd.info(device, { socket }).then((d) => ({ key: d.key, platform: d.platform, modules_known: d.modules_known }), errorFacts);

  // cancel: a job that waits for a device that never comes.
  const client = await flashd.connect({ socket, clientName: 'sim-session' });
  const op3 = client.flash(good, { device: 'no-such-device', wait: 60 });
  const queued = await new Promise((resolve) => op3.once('jobs', resolve));
  out.cancelReply = await flashd.cancel(queued[0].id, { socket }).then((r) => ({ alreadyEnded: r.alreadyEnded, job: r.job.id }), errorFacts);
  out.cancelled = await expectFailure(op3);

  // Uploads the daemon refuses, through the same client.
  const data = crypto.randomBytes(3000);
  const begun = await client.request({ request: 'upload-begin', name: 'x.bin', size: data.length, sha256: crypto.createHash('sha256').update('other').digest('hex') });
  out.mismatch = await expectFailure(client.request({ request: 'upload-chunk', upload: begun.upload, offset: 0, data: data.toString('base64') }));
  // Throughput of a large upload (64 chunks), not flashed.
  const big = crypto.randomBytes(4 * 1024 * 1024);
  const tBig = Date.now();
  let bigChunks = 0;
  out.bigUpload = await client.upload('big.bin', big, () => bigChunks++).then((id) => ({ id, ms: Date.now() - tBig, chunks: bigChunks }), errorFacts);
  const before = client._sock.bytesWritten;
  out.tooLarge = await expectFailure(client.upload('huge.bin', Buffer.alloc(16 * 1024 * 1024 + 1)));
  out.tooLargeBytesSent = client._sock.bytesWritten - before;
  out.stillUsable = (await client.list()).length;
  client.close();

  await new Promise((r) => setTimeout(r, 200));
  watcher.close();
  out.watched = watched;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ crashed: String(e && e.stack) }) + '\n');
  process.exit(1);
});
