/**
 * GStreamer launch strings for each camera kind. Every pipeline ends in the same appsink, so the
 * capture module sees RGB frames whatever the camera is. Scaling happens in the pipeline when
 * width/height are set, so full-resolution frames never cross into JavaScript.
 */
import { redactSecrets } from '../util/redact.ts';

export const SOURCE_KINDS = ['folder', 'file', 'v4l2', 'rtsp', 'aravis', 'nvargus', 'videotestsrc', 'gstreamer'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

export interface SourceConfig {
  kind: SourceKind;
  /** folder/file: image path */
  path: string;
  /** v4l2: /dev/videoN */
  device: string;
  /** rtsp: rtsp://... */
  url: string;
  /** aravis: camera name as arv-tool lists it ("" = first found); nvargus: sensor id */
  camera: string;
  /** gstreamer: a launch string producing video (the RGB appsink is appended) */
  pipeline: string;
  /** output frame size (0 = the camera's own) */
  width: number;
  height: number;
  fps: number;
  loop: boolean;
  /** no frame for this long = camera lost */
  frame_timeout_ms: number;
}

export const APPSINK = 'appsink name=hce_sink max-buffers=1 drop=true sync=false emit-signals=false';

const q = (s: string) => `"${s.replace(/(["\\])/g, '\\$1')}"`;

export function launchString(c: SourceConfig): string {
  const size = c.width > 0 && c.height > 0 ? `,width=${c.width},height=${c.height}` : '';
  const tail = `videoconvert ! videoscale ! video/x-raw,format=RGB${size} ! ${APPSINK}`;
  switch (c.kind) {
    case 'v4l2':
      return `v4l2src device=${q(c.device)} ! decodebin ! ${tail}`;
    case 'rtsp':
      return `rtspsrc location=${q(c.url)} latency=100 ! decodebin ! ${tail}`;
    case 'aravis':
      return `aravissrc${c.camera ? ` camera-name=${q(c.camera)}` : ''} ! ${tail}`;
    case 'nvargus':
      // nvvidconv leaves NVMM memory on the Jetson's own converter before the CPU-side conversion.
      return `nvarguscamerasrc sensor-id=${Number(c.camera) || 0} ! nvvidconv ! video/x-raw,format=BGRx ! ${tail}`;
    case 'videotestsrc':
      return `videotestsrc is-live=true pattern=smpte ! video/x-raw,framerate=${Math.max(1, Math.round(c.fps))}/1 ! ${tail}`;
    case 'gstreamer':
      return `${c.pipeline} ! ${tail}`;
    default:
      throw new Error(`source kind "${c.kind}" is not a GStreamer source`);
  }
}

/** The launch string as it may be shown (logs, MQTT camera status, errors): credentials removed. */
export function describeLaunch(c: SourceConfig): string {
  return redactSecrets(launchString(c));
}
