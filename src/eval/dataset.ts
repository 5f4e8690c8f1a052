/** MVTec-AD-layout datasets: <cat>/train/good, <cat>/test/<defect|good>, <cat>/ground_truth/<defect>/<name>_mask.png. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';

export const IMAGE_EXTS = new Set(['.png', '.jpg', '.jpeg', '.bmp']);

export interface TestImage {
  path: string;
  defect: string; // 'good' for nominal
  anomalous: boolean;
  mask?: string;
}

export interface Category {
  name: string;
  root: string;
  train: string[];
  test: TestImage[];
  hasMasks: boolean;
}

export function listImages(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => IMAGE_EXTS.has(extname(f).toLowerCase()))
    .sort()
    .map((f) => join(dir, f));
}

export function loadCategory(root: string, name: string): Category {
  const dir = join(root, name);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`category "${name}" not found: ${dir} is not a directory`);
  const train = listImages(join(dir, 'train', 'good'));
  if (train.length === 0) throw new Error(`category "${name}": no training images in ${join(dir, 'train', 'good')}`);
  const testDir = join(dir, 'test');
  const defects = existsSync(testDir)
    ? readdirSync(testDir)
        .filter((d) => statSync(join(testDir, d)).isDirectory())
        .sort()
    : [];
  const test: TestImage[] = [];
  let hasMasks = false;
  for (const defect of defects) {
    for (const path of listImages(join(testDir, defect))) {
      const anomalous = defect !== 'good';
      let mask: string | undefined;
      if (anomalous) {
        const m = join(dir, 'ground_truth', defect, `${basename(path, extname(path))}_mask.png`);
        if (existsSync(m)) {
          mask = m;
          hasMasks = true;
        }
      }
      test.push({ path, defect, anomalous, mask });
    }
  }
  if (test.length === 0) throw new Error(`category "${name}": no test images under ${testDir}`);
  return { name, root: dir, train, test, hasMasks };
}

export function listCategories(root: string): string[] {
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new Error(`dataset root ${root} is not a directory`);
  const found = readdirSync(root)
    .filter((d) => existsSync(join(root, d, 'train', 'good')))
    .sort();
  if (found.length === 0) throw new Error(`no categories under ${root}: expected <category>/train/good folders (MVTec AD layout)`);
  return found;
}

/** Images under `dir` and its subfolders (sorted by path), for calibration sets of mixed products. */
export function listImagesRecursive(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (IMAGE_EXTS.has(extname(e.name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out;
}
