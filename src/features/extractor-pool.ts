/**
 * Feature extractors by input size. Frames of different aspect ratios (several products on one line,
 * or "auto" input size) need one onnxruntime session per network input size; this keeps one each.
 */
import { FeatureExtractor, type FeatureSettings } from './extractor.ts';
import type { ExecutionProvider } from './session.ts';

export class ExtractorPool {
  private readonly extractors = new Map<string, Promise<FeatureExtractor>>();
  constructor(
    readonly backboneDir: string,
    private readonly runtime: { provider?: ExecutionProvider; threads?: number } = {},
  ) {}

  static key(s: FeatureSettings): string {
    return `${s.width}x${s.height}/${s.fit}/${s.preDim}/${s.dim}/${(s.layers ?? []).join(',')}`;
  }

  get(s: FeatureSettings): Promise<FeatureExtractor> {
    const k = ExtractorPool.key(s);
    let e = this.extractors.get(k);
    if (!e) {
      e = FeatureExtractor.load(this.backboneDir, s, this.runtime);
      this.extractors.set(k, e);
      e.catch(() => this.extractors.delete(k));
    }
    return e;
  }

  async release(): Promise<void> {
    const all = [...this.extractors.values()];
    this.extractors.clear();
    for (const e of all) await (await e).release();
  }
}
