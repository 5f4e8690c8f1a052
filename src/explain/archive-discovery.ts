/**
 * `defects discover` over an NG archive (entry folders with frame.jpg and verdict.json, see
 * src/service/archive.ts) or a plain folder of images: regions, descriptors and types per product
 * cluster, plus the crops a person looks at to name the types.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { listImagesRecursive } from '../eval/dataset.ts';
import { readImage, type RgbImage } from '../features/image.ts';
import type { Bundle } from '../bundle/bundle-file.ts';
import { FrameAnalyser } from './analyse.ts';
import { describeRegions, type RegionDescriptor } from './descriptors.ts';
import { cropBoxes, type Box, type Region } from './regions.ts';
import { discoverTypes, type ClusterTypes, type DefectTypes, type DiscoverOptions } from './discover.ts';
import type { ExecutionProvider } from '../features/session.ts';

export interface DiscoverySource {
  path: string;
  /** cluster name from the archived verdict (null: route the frame) */
  cluster: string | null;
}

/**
 * Frames to discover from: archive entries whose verdict is NG (UNKNOWN frames have no product), or
 * every image of a plain folder (archive heatmaps excluded).
 */
export function discoverySources(dir: string): DiscoverySource[] {
  const out: DiscoverySource[] = [];
  const entries = readdirSync(dir)
    .filter((e) => !e.startsWith('.'))
    .sort();
  const archived = entries.filter((e) => statSync(join(dir, e)).isDirectory() && existsSync(join(dir, e, 'frame.jpg')));
  if (archived.length > 0) {
    for (const e of archived) {
      const vp = join(dir, e, 'verdict.json');
      const v = existsSync(vp) ? (JSON.parse(readFileSync(vp, 'utf8')) as { verdict?: string; cluster?: string | null }) : {};
      if (v.verdict && v.verdict !== 'NG') continue;
      out.push({ path: join(dir, e, 'frame.jpg'), cluster: v.cluster ?? null });
    }
    return out;
  }
  return listImagesRecursive(dir)
    .filter((p) => !/(^|\/)heatmap\.jpe?g$/i.test(p))
    .map((path) => ({ path, cluster: null }));
}

export interface DiscoveredRegion {
  image: number;
  region: Region;
  crop: Box;
  typeIndex: number;
}

export interface ClusterDiscovery {
  types: ClusterTypes;
  images: { path: string; verdict: string; type: number }[];
  regions: DiscoveredRegion[];
}

export interface ArchiveDiscovery {
  types: DefectTypes;
  clusters: ClusterDiscovery[];
  skipped: { path: string; why: string }[];
}

interface Collected {
  path: string;
  verdict: string;
  regions: Region[];
  crops: Box[];
  descriptors: RegionDescriptor[];
  areas: number[];
}

async function collect(analyser: FrameAnalyser, src: DiscoverySource, bundle: Bundle): Promise<{ cluster: string; c: Collected } | { why: string }> {
  const img = await readImage(src.path);
  const forced = src.cluster === null ? undefined : analyser.clusterByName(src.cluster);
  if (src.cluster !== null && forced === undefined) return { why: `cluster "${src.cluster}" is not in this bundle` };
  const a = await analyser.analyse(img, forced);
  if (!a.cluster || !a.regions || !a.patches || !a.heatmap) return { why: 'routed to no product (UNKNOWN)' };
  if (a.regions.regions.length === 0) return { why: `no defect region (verdict ${a.verdict})` };
  const info = a.cluster;
  const ds = describeRegions(
    {
      patches: a.patches,
      dim: bundle.header.scoring.dim,
      grid: a.grid,
      heatmap: a.heatmap,
      labels: a.regions.mebin.labels,
      input: a.input,
      low: info.threshold,
      threshold: info.threshold,
      p50: info.statistics.nominal.p50,
      content: a.geometry.content,
    },
    a.regions.input,
  );
  const crops = cropBoxes(
    a.regions.regions.map((r) => r.bbox),
    img.width,
    img.height,
  );
  const cropOf = a.regions.regions.map((_, k) => crops.find((c) => c.members.includes(k))!.box);
  return { cluster: info.name, c: { path: src.path, verdict: a.verdict, regions: a.regions.regions, crops: cropOf, descriptors: ds, areas: a.regions.input.map((r) => r.area) } };
}

export async function discoverArchive(
  dir: string,
  bundle: Bundle,
  backboneDir: string,
  opts: DiscoverOptions & {
    provider?: ExecutionProvider;
    threads?: number;
    progress?: (done: number, total: number) => void /** product cluster of frames whose verdict names none (a plain folder) */;
    cluster?: string;
  },
): Promise<ArchiveDiscovery> {
  // Defect frames often route as UNKNOWN (a defect moves the embedding); a folder of one product says which.
  const sources = discoverySources(dir).map((s) => ({ ...s, cluster: s.cluster ?? opts.cluster ?? null }));
  if (sources.length === 0) throw new Error(`no NG archive entries or images in ${dir}`);
  const analyser = await FrameAnalyser.load(bundle, backboneDir, { provider: opts.provider, threads: opts.threads });
  const byCluster = new Map<string, Collected[]>();
  const skipped: { path: string; why: string }[] = [];
  try {
    for (let i = 0; i < sources.length; i++) {
      try {
        const r = await collect(analyser, sources[i], bundle);
        if ('why' in r) skipped.push({ path: sources[i].path, why: r.why });
        else byCluster.set(r.cluster, [...(byCluster.get(r.cluster) ?? []), r.c]);
      } catch (e) {
        skipped.push({ path: sources[i].path, why: (e as Error).message });
      }
      opts.progress?.(i + 1, sources.length);
    }
  } finally {
    await analyser.release();
  }
  const clusters: ClusterDiscovery[] = [];
  for (const [name, frames] of [...byCluster].sort((a, b) => a[0].localeCompare(b[0]))) {
    const descriptors = frames.flatMap((f) => f.descriptors);
    const image = frames.flatMap((f, i) => f.descriptors.map(() => i));
    const area = frames.flatMap((f) => f.areas);
    const d = discoverTypes({ descriptors, image, area, images: frames.length }, opts);
    const regions = frames.flatMap((f, i) => f.regions.map((region, k) => ({ image: i, region, crop: f.crops[k] })));
    clusters.push({
      types: { cluster: name, space: d.space, types: d.types, discovery: { regions: descriptors.length, images: frames.length, reason: d.choice.reason } },
      images: frames.map((f, i) => ({ path: f.path, verdict: f.verdict, type: d.imageTypes[i] })),
      regions: regions.map((r, j) => ({ ...r, typeIndex: d.regionTypes[j] })),
    });
  }
  const types: DefectTypes = {
    format_version: 1,
    created_at: new Date().toISOString(),
    backbone: bundle.header.backbone,
    bundle_id: bundle.header.bundle_id,
    clusters: clusters.map((c) => c.types),
  };
  return { types, clusters, skipped };
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function cropJpeg(img: RgbImage, box: Box, side: number): Promise<string> {
  const buf = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .extract({ left: box[0], top: box[1], width: Math.min(box[2], img.width - box[0]), height: Math.min(box[3], img.height - box[1]) })
    .resize(side, side, { fit: 'contain', background: { r: 0, g: 0, b: 0 } })
    .jpeg({ quality: 80 })
    .toBuffer();
  return `data:image/jpeg;base64,${buf.toString('base64')}`;
}

/**
 * One self-contained HTML page (inline JPEG crops, no external resources): per cluster and type, the
 * crops of its regions, so a person can tell what the type is and name it.
 */
export async function discoveryReport(d: ArchiveDiscovery, opts: { perType?: number; side?: number } = {}): Promise<string> {
  const perType = opts.perType ?? 24;
  const side = opts.side ?? 128;
  const cache = new Map<string, RgbImage>();
  const parts: string[] = [];
  for (const c of d.clusters) {
    parts.push(`<h2>${esc(c.types.cluster)}</h2><p>${c.types.discovery.regions} regions in ${c.types.discovery.images} images; ${esc(c.types.discovery.reason)}</p>`);
    for (let t = 0; t < c.types.types.length; t++) {
      const type = c.types.types[t];
      const members = c.regions.filter((r) => r.typeIndex === t).slice(0, perType);
      const imgs: string[] = [];
      for (const m of members) {
        const path = c.images[m.image].path;
        if (!cache.has(path)) cache.set(path, await readImage(path));
        const src = await cropJpeg(cache.get(path)!, m.crop, side);
        const b = m.region.bbox;
        imgs.push(
          `<figure><img src="${src}" width="${side}" height="${side}" alt=""><figcaption>${esc(path.split('/').slice(-2).join('/'))}<br>box ${b.join(',')} area ${m.region.area_px}</figcaption></figure>`,
        );
      }
      const label = type.name ? `${esc(type.id)} "${esc(type.name)}"` : esc(type.id);
      parts.push(
        `<h3>${label}: ${type.count} regions, ${type.images} images, radius ${type.radius}</h3><p class="hint">name it: <code>hiercore-edge defects name types.json ${esc(type.id)} "…" --cluster ${esc(c.types.cluster)}</code></p><div class="grid">${imgs.join('')}</div>`,
      );
    }
  }
  if (d.skipped.length)
    parts.push(
      `<h2>Skipped</h2><ul>${d.skipped
        .slice(0, 200)
        .map((s) => `<li>${esc(s.path)}: ${esc(s.why)}</li>`)
        .join('')}</ul>`,
    );
  const style = 'body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px;font-size:10px;width:128px;vertical-align:top;word-break:break-all}.hint{color:#555}';
  return `<!doctype html><html><head><meta charset="utf-8"><title>Defect types</title><style>${style}</style></head><body><h1>Defect types (bundle ${esc(d.types.bundle_id)})</h1>${parts.join('\n')}</body></html>\n`;
}

/** Give a type a name; `cluster` is needed when the id exists in several clusters. */
export function nameType(types: DefectTypes, id: string, name: string, cluster?: string): DefectTypes {
  const hits = types.clusters.filter((c) => (!cluster || c.cluster === cluster) && c.types.some((t) => t.id === id));
  if (hits.length === 0)
    throw new Error(`no type "${id}"${cluster ? ` in cluster "${cluster}"` : ''}: types are ${types.clusters.map((c) => `${c.cluster}: ${c.types.map((t) => t.id).join(', ')}`).join('; ')}`);
  if (hits.length > 1) throw new Error(`type "${id}" exists in clusters ${hits.map((c) => c.cluster).join(', ')}: pass --cluster`);
  return { ...types, clusters: types.clusters.map((c) => (c === hits[0] ? { ...c, types: c.types.map((t) => (t.id === id ? { ...t, name } : t)) } : c)) };
}
