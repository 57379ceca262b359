/**
 * The Internet checksum (RFC 1071): the ones' complement of the ones' complement
 * sum of 16-bit words. Sums are accumulated unfolded in a float64-safe number and
 * folded once at the end; the loop adds two words (four bytes) per step.
 *
 * And what the device does with checksums (ChecksumCaps): every parse and emit of a
 * checksummed format takes one, instead of a "skip the checksum" flag.
 */

/**
 * What the device does with one protocol's checksum, as bits (smoltcp's
 * ChecksumCapabilities, seen from the device's side).
 */
export const enum DeviceChecksum {
  /** Nothing: the stack checks what it receives and computes what it sends. */
  None = 0,
  /** Receive: the device vouched for the checksum of what it delivered (virtio DATA_VALID, or NEEDS_CSUM from the local kernel): not checked again. */
  Verified = 1,
  /** Transmit: the device completes the checksum from the pseudo-header sum left in the field (virtio NEEDS_CSUM; the sender passes the offload meta). */
  Fills = 2,
}

/** Per protocol, DeviceChecksum bits. One object per device state, built once: nothing is allocated per packet. */
export interface ChecksumCaps {
  readonly ipv4: number;
  readonly icmp: number;
  readonly tcp: number;
  readonly udp: number;
}

/** A device that does nothing with checksums (the memory link, a TUN device without the virtio header). */
export const SOFTWARE_CHECKSUMS: ChecksumCaps = Object.freeze({
  ipv4: DeviceChecksum.None,
  icmp: DeviceChecksum.None,
  tcp: DeviceChecksum.None,
  udp: DeviceChecksum.None,
});
/** Every checksum counts as verified: for packets the stack built itself or a capture reads back (a TSO segment holds only a partial checksum). */
export const CHECKSUMS_VERIFIED: ChecksumCaps = Object.freeze({
  ipv4: DeviceChecksum.Verified,
  icmp: DeviceChecksum.Verified,
  tcp: DeviceChecksum.Verified,
  udp: DeviceChecksum.Verified,
});
/** The checksum of a received packet is checked unless the device verified it. */
export function checksumToVerify(caps: number): boolean {
  return (caps & DeviceChecksum.Verified) === 0;
}
/** The checksum of a packet to send is completed by the device (only the pseudo-header sum is stored). */
export function deviceFills(caps: number): boolean {
  return (caps & DeviceChecksum.Fills) !== 0;
}

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

/**
 * What a checksum field holds when the device completes it (virtio NEEDS_CSUM, Linux's
 * CHECKSUM_PARTIAL): the pseudo-header sum, folded to 16 bits and not complemented.
 */
export function partialChecksum(pseudoSum: number): number {
  let s = pseudoSum;
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Unfolded sum of the IPv4 pseudo-header used by TCP and UDP (RFC 793 3.1, RFC 768). */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}
