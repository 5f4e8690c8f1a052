/** How large a frame or replay image may be before it is refused undecoded. */
import { DEFAULT_MAX_PIXELS } from '../features/image.ts';

export { DEFAULT_MAX_PIXELS };

/**
 * `source.max_pixels`, or when 0: four times the configured output size (a replay folder may hold
 * somewhat larger images than the camera delivers), else 40 megapixels.
 */
export function maxPixelsFor(source: { max_pixels: number; width: number; height: number }): number {
  if (source.max_pixels > 0) return source.max_pixels;
  if (source.width > 0 && source.height > 0) return 4 * source.width * source.height;
  return DEFAULT_MAX_PIXELS;
}
