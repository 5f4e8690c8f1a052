/**
 * Versioned bundles of the bundle folder (issue 10): numbering, metadata, the active and previous
 * one, pruning that never deletes either, and the `bundle list` / `bundle activate` CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { tempDir, writeSyntheticBundle } from './helpers/synthetic.ts';
import { BundleStore, NoSuchBundleError, isVersionName } from '../src/bundle/bundle-store.ts';

const day = new Date('2026-12-03T10:00:00Z');

async function storeWithBundle() {
  const dir = tempDir('bundle-versions');
  const { bundle } = await writeSyntheticBundle(join(dir, 'made'), 12);
  const folder = join(dir, 'bundles');
  mkdirSync(folder);
  const store = new BundleStore(folder, join(dir, 'state'), 2 ** 30);
  /** a fresh copy of the bundle file, as a calibration run leaves it */
  const fresh = (i: number) => {
    const p = join(dir, `run-${i}.hcebundle`);
    copyFileSync(bundle, p);
    return p;
  };
  return { dir, folder, store, fresh };
}

test('bundle versions: numbered in order, with metadata; previous and rollback target tracked', async () => {
  const { store, fresh } = await storeWithBundle();
  const v1 = store.addVersion(fresh(1), { validated: true, report: '/r/1.html', run_id: 'run-1' }, day);
  const v2 = store.addVersion(fresh(2), { validated: false, report: '/r/2.html', run_id: 'run-2', problem: 'cluster-0: 2 of 4 rejected' }, day);
  assert.equal(v1, 'v0001-20261203');
  assert.equal(v2, 'v0002-20261203');
  assert.ok(isVersionName(v1) && !isVersionName('v1') && !isVersionName('../v0001-20261203'));
  store.remember(store.versionPath(v1));
  const list = store.versions(store.versionPath(v1));
  assert.deepEqual(
    list.map((v) => [v.version, v.active, v.validated, v.problem ?? null]),
    [
      [v1, true, true, null],
      [v2, false, false, 'cluster-0: 2 of 4 rejected'],
    ],
  );
  assert.ok(list[0].bundle_id && list[0].clusters === 1);
  assert.equal(store.previous(), null, 'nothing before the first bundle');
  const v3 = store.addVersion(fresh(3), { validated: true, report: null, run_id: 'run-3' }, day);
  store.remember(store.versionPath(v3), '', store.versionPath(v1));
  assert.equal(store.previous(), store.versionPath(v1));
  // Remembering the same bundle again keeps the rollback target.
  store.remember(store.versionPath(v3));
  assert.equal(store.previous(), store.versionPath(v1));
  assert.throws(() => store.versionPath('v0009-20261203'), NoSuchBundleError);
  assert.throws(() => store.versionPath('/etc/passwd'), /not a bundle version/);
});

test('bundle versions: keep the last N, never the active or the previous one', async () => {
  const { store, fresh } = await storeWithBundle();
  const vs = Array.from({ length: 7 }, (_, i) => store.addVersion(fresh(i), { validated: true, report: null, run_id: null }, day));
  // v0001 active (rolled back to), v0002 previous: both are older than the 3 newest.
  store.remember(store.versionPath(vs[1]));
  store.remember(store.versionPath(vs[0]));
  const gone = store.prune(3, store.versionPath(vs[0]));
  assert.deepEqual(gone, [vs[2], vs[3], vs[4], vs[5]]);
  assert.deepEqual(
    store.versions().map((v) => v.version),
    [vs[0], vs[1], vs[6]],
  );
  const meta = (v: string) => join(store.folder, `${v}.meta.json`);
  assert.ok(existsSync(meta(vs[0])) && existsSync(meta(vs[6])), 'the kept versions keep their metadata');
  assert.ok(!existsSync(meta(vs[2])), 'a removed version takes its metadata along');
});

test('bundle list / bundle activate (CLI) read and write the daemon folder and state', { timeout: 60_000 }, async () => {
  const { dir, folder, store, fresh } = await storeWithBundle();
  const v1 = store.addVersion(fresh(1), { validated: true, report: '/r/1.html', run_id: 'run-1' }, day);
  const v2 = store.addVersion(fresh(2), { validated: false, report: null, run_id: 'run-2' }, day);
  store.remember(store.versionPath(v1));
  const site = join(dir, 'site.json');
  writeFileSync(site, JSON.stringify({ bundle_dir: folder, state_dir: join(dir, 'state'), source: { kind: 'folder', path: dir } }));
  const bin = join(import.meta.dirname, '..', 'bin', 'hiercore-edge.js');
  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, 'bundle', ...args, '--config', site], { encoding: 'utf8', env: { ...process.env, HCE_BUNDLE: '' } });
  const list = cli('list', '--json');
  assert.equal(list.status, 0, list.stderr);
  const j = JSON.parse(list.stdout) as { versions: { version: string; active: boolean; validated: boolean; report: string | null }[] };
  assert.deepEqual(
    j.versions.map((v) => [v.version, v.active, v.validated, v.report]),
    [
      [v1, true, true, '/r/1.html'],
      [v2, false, false, null],
    ],
  );
  const act = cli('activate', v2);
  assert.equal(act.status, 0, act.stderr);
  assert.equal(store.active(''), store.versionPath(v2));
  assert.equal(store.previous(), store.versionPath(v1));
  const text = cli('list');
  assert.match(text.stdout, new RegExp(`\\* ${v2} .*FAILED validation`));
  assert.match(text.stdout, new RegExp(`< ${v1} .*validated  report /r/1.html`));
  const bad = cli('activate', 'v0042-20261203');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /no bundle "v0042-20261203.hcebundle" in the bundle folder/);
});
