import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { launchString, type SourceConfig } from '../src/capture/pipelines.ts';
import { packRgb } from '../src/capture/gst-source.ts';
import { FolderSource } from '../src/capture/folder-source.ts';
import type { Frame, SourceState } from '../src/capture/types.ts';
import { tempDir, writeNominalSet } from './helpers/synthetic.ts';
import { which } from './helpers/services.ts';

const base: SourceConfig = { kind: 'videotestsrc', path: '', device: '/dev/video0', url: '', camera: '', pipeline: '', width: 64, height: 48, fps: 30, loop: false, frame_timeout_ms: 1000 };

// Probed in a child process, so this file's unit tests still run where GStreamer is missing.
const NO_GST =
  spawnSync(process.execPath, ['-e', "require('gstreamer-superficial')"], { cwd: join(import.meta.dirname, '..') }).status === 0
    ? false
    : 'gstreamer-superficial is not built (deploy/setup.sh, then npm ci)';

test('launch strings: every camera kind ends in the RGB appsink, with scaling in the pipeline', () => {
  const rgb = /videoconvert ! videoscale ! video\/x-raw,format=RGB,width=64,height=48 ! appsink name=hce_sink max-buffers=1 drop=true/;
  assert.match(launchString({ ...base, kind: 'v4l2', device: '/dev/video2' }), /^v4l2src device="\/dev\/video2" ! decodebin ! /);
  assert.match(launchString({ ...base, kind: 'rtsp', url: 'rtsp://cam/a"b' }), /^rtspsrc location="rtsp:\/\/cam\/a\\"b" latency=100/);
  assert.match(launchString({ ...base, kind: 'aravis', camera: 'Basler-123' }), /^aravissrc camera-name="Basler-123" ! /);
  assert.match(launchString({ ...base, kind: 'aravis' }), /^aravissrc ! /);
  assert.match(launchString({ ...base, kind: 'nvargus', camera: '1' }), /^nvarguscamerasrc sensor-id=1 ! nvvidconv/);
  assert.match(launchString({ ...base, kind: 'gstreamer', pipeline: 'multifilesrc location=x%03d.png ! pngdec' }), /^multifilesrc location=x%03d.png ! pngdec ! videoconvert/);
  for (const kind of ['v4l2', 'rtsp', 'aravis', 'videotestsrc'] as const) assert.match(launchString({ ...base, kind, url: 'rtsp://x' }), rgb);
  assert.doesNotMatch(launchString({ ...base, width: 0, height: 0 }), /width=/, 'native size when not set');
  assert.throws(() => launchString({ ...base, kind: 'folder' }), /not a GStreamer source/);
});

test('packRgb removes the 4-byte row padding GStreamer adds to RGB rows', () => {
  // width 3 -> 9 bytes per row, padded to 12
  const padded = Uint8Array.from({ length: 24 }, (_, i) => (i % 12 < 9 ? i : 255));
  const packed = packRgb(padded, 3, 2);
  assert.equal(packed.length, 18);
  assert.ok(!packed.includes(255));
  assert.deepEqual(Array.from(packed.subarray(9, 12)), [12, 13, 14]);
  assert.throws(() => packRgb(new Uint8Array(10), 3, 2), /too small/);
});

test('folder source replays files in order at the set rate, waits when told, then ends', async () => {
  const dir = tempDir('folder');
  await writeNominalSet(dir, 6, 32, 1);
  writeFileSync(join(dir, 'notes.txt'), 'not an image');
  const src = new FolderSource({ path: dir, fps: 50, loop: false });
  const frames: Omit<Frame, 'id'>[] = [];
  const states: SourceState[] = [];
  let allow = false;
  const t0 = Date.now();
  setTimeout(() => (allow = true), 200);
  await new Promise<void>((resolve) =>
    src.start({
      frame: (f) => frames.push(f),
      canAccept: () => allow || frames.length < 2,
      state: (s) => {
        states.push(s);
        if (s === 'ended') resolve();
      },
    }),
  );
  assert.equal(frames.length, 6);
  assert.deepEqual(
    frames.map((f) => f.path!.split('/').pop()),
    ['good_000.png', 'good_001.png', 'good_002.png', 'good_003.png', 'good_004.png', 'good_005.png'],
  );
  assert.ok(Date.now() - t0 >= 200, 'held back while the consumer said no');
  assert.deepEqual([states[0], states.at(-1)], ['streaming', 'ended']);
  assert.throws(() => new FolderSource({ path: join(dir, 'missing'), fps: 1, loop: false }), /does not exist/);
});

test('GStreamer source: frames from videotestsrc, and reconnect after the stream ends', { skip: NO_GST, timeout: 60_000 }, async () => {
  const { GstSource } = await import('../src/capture/gst-source.ts');
  const src = new GstSource({ ...base, kind: 'gstreamer', pipeline: 'videotestsrc num-buffers=5 ! video/x-raw,width=80,height=60,framerate=50/1' }, { initialMs: 100, maxMs: 200 });
  const frames: Omit<Frame, 'id'>[] = [];
  const states: string[] = [];
  src.start({ frame: (f) => frames.push(f), state: (s, d) => states.push(`${s}: ${d}`) });
  const until = Date.now() + 20_000;
  while ((src.reconnects < 2 || frames.length < 10) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  await src.stop();
  assert.ok(frames.length >= 10, `frames across reconnects: ${frames.length}; states: ${states.join(' | ')}`);
  assert.equal(frames[0].width, 64);
  assert.equal(frames[0].height, 48);
  assert.equal(frames[0].data.length, 64 * 48 * 3);
  assert.ok(
    states.some((s) => s.startsWith('lost: end of stream; reconnecting')),
    states.join(' | '),
  );
  assert.ok(src.reconnects >= 2);
});

const NO_ARAVIS = !which('arv-fake-gv-camera-0.8') ? 'aravis-tools not installed' : !which('unshare') || !which('ip') ? 'unshare/ip not available' : NO_GST;

test('GStreamer source: a GigE Vision camera (aravis fake camera, private network namespace)', { skip: NO_ARAVIS, timeout: 60_000 }, () => {
  // The fake camera answers discovery on loopback; a private namespace keeps it off the real network.
  const script = `
    import { GstSource } from '${join(import.meta.dirname, '..', 'src', 'capture', 'gst-source.ts')}';
    const s = new GstSource({ kind: 'aravis', camera: '', path: '', device: '', url: '', pipeline: '', width: 320, height: 240, fps: 10, loop: false, frame_timeout_ms: 5000 });
    let n = 0, size = '';
    s.start({ frame: (f) => { n++; size = f.width + 'x' + f.height + ':' + f.data.length; }, state: () => {} });
    setTimeout(async () => { console.log(JSON.stringify({ n, size })); await s.stop(); process.exit(0); }, 3000);`;
  const file = join(tempDir('arv'), 'arv.ts');
  writeFileSync(file, script);
  const r = spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && (arv-fake-gv-camera-0.8 -i 127.0.0.1 >/dev/null 2>&1 &) && sleep 1 && ${process.execPath} --import tsx ${file}`], {
    encoding: 'utf8',
    cwd: join(import.meta.dirname, '..'),
    timeout: 40_000,
  });
  if (r.status !== 0 && /unshare failed|Operation not permitted/.test(r.stderr)) {
    assert.fail(`cannot create a network namespace here: ${r.stderr}`);
  }
  const line = r.stdout.trim().split('\n').pop() ?? '';
  const res = JSON.parse(line || '{}') as { n?: number; size?: string };
  assert.ok((res.n ?? 0) >= 5, `frames from the fake GigE camera: ${line} ${r.stderr.slice(-500)}`);
  assert.equal(res.size, `320x240:${320 * 240 * 3}`);
});
