/** What every capture source hands to the daemon. */
export interface Frame {
  /** monotonically increasing per daemon run, starting at 1 */
  id: number;
  width: number;
  height: number;
  /** packed RGB, width * height * 3 bytes */
  data: Uint8Array;
  /** ms since epoch at capture */
  capturedAt: number;
  /** image file for replay sources */
  path?: string;
}

export type SourceState = 'starting' | 'streaming' | 'lost' | 'ended';

export interface SourceEvents {
  frame: (f: Omit<Frame, 'id'>) => void;
  /** replay sources wait while this says no, instead of handing over frames that would be dropped */
  canAccept?: () => boolean;
  state: (s: SourceState, detail: string) => void;
}

export interface FrameSource {
  readonly description: string;
  start(events: SourceEvents): void;
  /** resolves when no further frame will be delivered */
  stop(): Promise<void>;
  readonly reconnects: number;
}
