// Compiled (never run) by unit.test.js with tsc --strict --noEmit: a program
// as an IDE extension would write it must type-check against index.d.ts, and
// each misuse marked @ts-expect-error must be refused.
import * as flashd from '../index';
import { FlashdError, type Device, type JobProgressEvent } from '../index';

async function main(): Promise<number> {
  const devices: Device[] = await flashd.list({ socket: '/tmp/flashd.sock' });
  const first = devices[0];
  if (first.platform !== null) console.log(first.platform.toUpperCase());
  const info = await flashd.info(first.key, { probe: true });
  console.log(info.modules.map((m) => m.function), info.probe?.outcome);

  const op = flashd.flash(['app.bin', { name: 'sys.bin', data: new Uint8Array(4) }], {
    device: first.key,
    dryRun: false,
    wait: 30,
  });
  op.on('upload', (u) => console.log(u.file, u.sent / u.total));
  op.on('progress', (ev: JobProgressEvent) => console.log(ev.state, ev.percent ?? 0, ev.eta_s));
  op.on('ended', (ev) => console.log(ev.result, ev.record.id));
  try {
    const res = await op;
    console.log(res.outcomes.join(','), res.jobs[0].images[0].sha256);
  } catch (e) {
    if (FlashdError.is(e, 'wrong-platform')) {
      // detail is typed from proto/errors.def
      const wanted: string | undefined = e.detail.image_platform;
      const id: number | undefined = e.detail.device_platform_id;
      console.log(wanted, id, e.hint, e.exitStatus);
      // @ts-expect-error: wrong-platform has no detail "limit"
      console.log(e.detail.limit);
    } else if (FlashdError.is(e, 'upload-checksum-mismatch')) {
      console.log(e.detail.expected_sha256, e.detail.computed_sha256);
    } else if (FlashdError.is(e)) {
      const code: flashd.ErrorCode = e.code;
      console.log(code, e.detail.file);
    }
    return 1;
  }

  const client = await flashd.connect();
  client.on('job-progress', (ev) => console.log(ev.done, ev.total));
  client.on('device-added', (ev) => console.log(ev.device.key));
  const id: string = await client.upload('x.bin', Buffer.from('abc'), (sent, total) => console.log(sent, total));
  console.log(id);
  const c = await client.cancel('0b8a1f7e-3c2d-4e5f-9a1b-2c3d4e5f6a7b');
  console.log(c.alreadyEnded, c.job.state);
  const w = await flashd.watch({ devices: true, jobs: false });
  w.on('device-removed', (ev) => console.log(ev.device.present));
  w.close();
  client.close();

  // @ts-expect-error: not a catalogue id
  FlashdError.is(new Error(), 'no-such-error');
  // @ts-expect-error: files are paths or {name, data}
  flashd.flash([42]);
  // @ts-expect-error: dryRun is a boolean
  flashd.flash('app.bin', { dryRun: 'yes' });
  // @ts-expect-error: the device is a string key
  await flashd.info(12);
  return 0;
}

void main();
