/**
 * IPv4 header (RFC 791): a view over the bytes and a representation parsed from it.
 * `parseIpv4Header` validates everything a later layer relies on (version, header
 * length, total length against the buffer, header checksum) before any field is
 * trusted; after that, field reads go straight to the bytes.
 */
import { checksumAdd, checksumFinish, internetChecksum } from './checksum';

export const IPV4_MIN_HEADER = 20;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export const IP_FLAG_DF = 0x4000;
export const IP_FLAG_MF = 0x2000;

export interface Ipv4Repr {
  src: number;
  dst: number;
  protocol: number;
  ttl: number;
  tos: number;
  ident: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes. */
  fragmentOffset: number;
  headerLength: number;
  /** Total length from the header (may be less than the buffer: link padding). */
  totalLength: number;
}

export function newIpv4Repr(): Ipv4Repr {
  return { src: 0, dst: 0, protocol: 0, ttl: 64, tos: 0, ident: 0, dontFragment: false, moreFragments: false, fragmentOffset: 0, headerLength: 20, totalLength: 20 };
}

/** Why a header was refused; maps one-to-one to a counter. */
export const enum Ipv4Error {
  None = 0,
  Truncated = 1,
  BadVersion = 2,
  BadHeaderLength = 3,
  BadTotalLength = 4,
  BadChecksum = 5,
}

/**
 * Validates and parses the header of `buf[off, off+len)` into `out`.
 * `skipChecksum` is for packets whose checksum the local kernel vouched for.
 */
export function parseIpv4Header(buf: Uint8Array, off: number, len: number, out: Ipv4Repr, skipChecksum = false): Ipv4Error {
  if (len < IPV4_MIN_HEADER) return Ipv4Error.Truncated;
  const vihl = buf[off];
  if (vihl >> 4 !== 4) return Ipv4Error.BadVersion;
  const hlen = (vihl & 15) * 4;
  if (hlen < IPV4_MIN_HEADER || hlen > len) return Ipv4Error.BadHeaderLength;
  const total = (buf[off + 2] << 8) | buf[off + 3];
  // Total length 0 is what the kernel hands over for some GSO packets; callers that
  // accept those pass the real length and we take the buffer's.
  if (total < hlen || total > len) return Ipv4Error.BadTotalLength;
  if (!skipChecksum && internetChecksum(buf, off, hlen) !== 0) return Ipv4Error.BadChecksum;
  out.tos = buf[off + 1];
  out.totalLength = total;
  out.headerLength = hlen;
  out.ident = (buf[off + 4] << 8) | buf[off + 5];
  const ff = (buf[off + 6] << 8) | buf[off + 7];
  out.dontFragment = (ff & IP_FLAG_DF) !== 0;
  out.moreFragments = (ff & IP_FLAG_MF) !== 0;
  out.fragmentOffset = (ff & 0x1fff) * 8;
  out.ttl = buf[off + 8];
  out.protocol = buf[off + 9];
  out.src = readU32(buf, off + 12);
  out.dst = readU32(buf, off + 16);
  return Ipv4Error.None;
}

/** Writes a 20-byte header (no options) at `off` with a correct checksum. */
export function emitIpv4Header(buf: Uint8Array, off: number, r: Ipv4Repr): number {
  buf[off] = 0x45;
  buf[off + 1] = r.tos;
  buf[off + 2] = r.totalLength >> 8;
  buf[off + 3] = r.totalLength & 255;
  buf[off + 4] = r.ident >> 8;
  buf[off + 5] = r.ident & 255;
  const ff = (r.dontFragment ? IP_FLAG_DF : 0) | (r.moreFragments ? IP_FLAG_MF : 0) | ((r.fragmentOffset >> 3) & 0x1fff);
  buf[off + 6] = ff >> 8;
  buf[off + 7] = ff & 255;
  buf[off + 8] = r.ttl;
  buf[off + 9] = r.protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  writeU32(buf, off + 12, r.src);
  writeU32(buf, off + 16, r.dst);
  const c = checksumFinish(checksumAdd(buf, off, 20));
  buf[off + 10] = c >> 8;
  buf[off + 11] = c & 255;
  return 20;
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
export function readU16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
export function writeU16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >> 8) & 255;
  b[o + 1] = v & 255;
}
