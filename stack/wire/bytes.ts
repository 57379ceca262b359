/**
 * Big-endian (network byte order, RFC 791 appendix B) reads and writes of 16- and
 * 32-bit fields, for every wire format here. No bounds checks: each format checks its
 * lengths once, up front, before it reads a field.
 */

export function readU16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
export function writeU16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >> 8) & 255;
  b[o + 1] = v & 255;
}
export function readU32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
export function writeU32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 255;
  b[o + 2] = (v >>> 8) & 255;
  b[o + 3] = v & 255;
}
