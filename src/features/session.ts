import * as ort from 'onnxruntime-node';

export type ExecutionProvider = 'cpu' | 'cuda' | 'tensorrt';
export const EXECUTION_PROVIDERS: ExecutionProvider[] = ['cpu', 'cuda', 'tensorrt'];

/**
 * Create a session on the configured provider. The npm package ships CPU kernels only, so a GPU
 * provider that cannot be created falls back to CPU with a warning instead of stopping the line.
 */
export async function createSession(model: Uint8Array, provider: ExecutionProvider = 'cpu', threads?: number, warn: (msg: string) => void = (m) => console.warn(m)): Promise<ort.InferenceSession> {
  const base: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // Several sessions (backbone, kNN, heatmap) run one after another on few cores: a pool that spins
    // after its run steals the cores the next session needs (kNN 17 -> 65 ms after a backbone run).
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
  if (provider !== 'cpu') {
    try {
      return await ort.InferenceSession.create(model, { ...base, executionProviders: [provider, 'cpu'] });
    } catch (e) {
      warn(
        `execution provider "${provider}" is not available (${(e as Error).message.split('\n')[0]}); falling back to CPU. The npm package ships CPU kernels only: a GPU box needs a CUDA/TensorRT build of onnxruntime-node.`,
      );
    }
  }
  return ort.InferenceSession.create(model, { ...base, executionProviders: ['cpu'] });
}
