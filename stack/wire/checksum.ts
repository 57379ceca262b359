/**
 * The Internet checksum (RFC 1071): the ones' complement of the ones' complement
 * sum of 16-bit words. Sums are accumulated unfolded in a float64-safe number and
 * folded once at the end; 32-bit reads halve the loop count on long payloads.
 */

/** Adds bytes [off, off+len) to `sum` as big-endian 16-bit words; returns the unfolded sum. */
export function checksumAdd(buf: Uint8Array, off: number, len: number, sum = 0): number {
  let i = off;
  const end = off + len;
  // 4 bytes at a time: two 16-bit words per step. The unfolded sum stays exact
  // (below 2^53) for any packet size we handle.
  const end4 = end - 3;
  for (; i < end4; i += 4) {
    sum += ((buf[i] << 8) | buf[i + 1]) + ((buf[i + 2] << 8) | buf[i + 3]);
  }
  if (i + 1 < end) {
    sum += (buf[i] << 8) | buf[i + 1];
    i += 2;
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Folds an unfolded sum to 16 bits (without complementing). */
export function checksumFold(sum: number): number {
  // Reduce above 32 bits with arithmetic (bit ops are 32-bit in JS).
  while (sum > 0xffffffff) sum = (sum % 0x100000000) + Math.floor(sum / 0x100000000);
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The value to put in a checksum field: complement of the folded sum. */
export function checksumFinish(sum: number): number {
  return ~checksumFold(sum) & 0xffff;
}

/** Checksum of a byte range (the header-checksum case). */
export function internetChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return checksumFinish(checksumAdd(buf, off, len, initial));
}

/** Unfolded sum of the IPv4 pseudo-header used by TCP and UDP (RFC 793 3.1, RFC 768). */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}
