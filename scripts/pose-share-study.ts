/**
 * Pose crossing-test study (issue 9): how often does calibration.turned_share split one real product
 * into two clusters? Clusters 20 random subsets (50-100% of the images) of each folder given, at
 * shares 0, 0.05 and 0.1, and prints the cluster count of each.
 *
 *   node --import tsx scripts/pose-share-study.ts ../shared/datasets/screw/train/good [more folders]
 */
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { embedImages } from '../src/calibrate/calibrate.ts';
import { featureSettings, loadEngineConfig } from '../src/config.ts';
import { ExtractorPool } from '../src/features/extractor-pool.ts';
import { clusterEmbeddings } from '../src/route/finch.ts';
import { gatherRows } from '../src/util/vec.ts';
import { seededRandom } from '../src/score/coreset.ts';
const cfg = loadEngineConfig(undefined, { backbone: 'models/mnv2-ptq' });
const pool = new ExtractorPool(resolve('models/mnv2-ptq'), { provider: 'cpu' });
for (const dir of process.argv.slice(2)) {
  const paths = readdirSync(dir)
    .filter((f) => f.endsWith('.png'))
    .sort()
    .map((f) => join(dir, f));
  const e = await embedImages(paths, pool, (f) => featureSettings(cfg, f), undefined, 'embed', true);
  const rnd = seededRandom(3);
  for (const share of [0, 0.05, 0.1]) {
    const counts: number[] = [];
    for (let t = 0; t < 20; t++) {
      const frac = t === 0 ? 1 : 0.5 + 0.5 * rnd();
      const rows = paths.map((_, i) => i).filter(() => t === 0 || rnd() < frac);
      const d = e.dim;
      const r = clusterEmbeddings(
        gatherRows(e.semantic, d, rows),
        rows.length,
        d,
        { minSilhouette: cfg.calibration.min_silhouette, poseMerge: cfg.calibration.pose_merge, minClusterSize: cfg.calibration.min_cluster_size, turnedShare: share },
        { samples: Float32Array.from(rows.map((i) => e.pose!.samples[i])), perRow: 1, turned: gatherRows(e.pose!.turned!, d, rows) },
      );
      counts.push(r.count);
    }
    console.log(dir.split('/').slice(-3).join('/'), 'share', share, 'clusters per subset:', counts.join(' '));
  }
}
await pool.release();
