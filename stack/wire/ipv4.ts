/**
 * IPv4 header (RFC 791 3.1), the three faces every format here has:
 *   Ipv4Field     the field table: byte offsets from the start of the header
 *   Ipv4Packet    a view: one field read or written in place, after `wrap` checked the length
 *   Ipv4Repr      the representation: `parseIpv4Header` fills it (everything checked up
 *                 front: version, header length, total length against the buffer, the
 *                 header checksum), `emitIpv4Header` writes a header from it
 *
 *    0 version|IHL  1 TOS  2 total length  4 identification  6 flags|fragment offset
 *    8 TTL  9 protocol  10 header checksum  12 source address  16 destination address
 *   20 options (IHL > 5)
 */
import { type ChecksumCaps, SOFTWARE_CHECKSUMS, checksumAdd, checksumFinish, checksumToVerify, internetChecksum } from './checksum';
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const IPV4_MIN_HEADER = 20;
export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;

export const IP_FLAG_DF = 0x4000;
export const IP_FLAG_MF = 0x2000;

/** Byte offsets of the header's fields (RFC 791 3.1). */
export const enum Ipv4Field {
  VER_IHL = 0,
  TOS = 1,
  LENGTH = 2,
  IDENT = 4,
  FLG_OFF = 6,
  TTL = 8,
  PROTOCOL = 9,
  CHECKSUM = 10,
  SRC_ADDR = 12,
  DST_ADDR = 16,
}

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
  return {
    src: 0,
    dst: 0,
    protocol: 0,
    ttl: 64,
    tos: 0,
    ident: 0,
    dontFragment: false,
    moreFragments: false,
    fragmentOffset: 0,
    headerLength: 20,
    totalLength: 20,
  };
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
 * A view over an IPv4 header in place: `wrap` checks that the header (IHL words) lies
 * within the bytes given, and from then on every field is one read or write. The
 * datagram after the header may be cut short (an ICMP error quotes only the header
 * and 8 bytes of it). A view is re-pointed, not allocated: keep one per use.
 */
export class Ipv4Packet {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  /** Points the view at buf[off, off+len): at least 20 bytes, and the header length in [20, len]. */
  wrap(buf: Uint8Array, off: number, len: number): Ipv4Error {
    if (len < IPV4_MIN_HEADER) return Ipv4Error.Truncated;
    const hlen = (buf[off + Ipv4Field.VER_IHL] & 15) * 4;
    if (hlen < IPV4_MIN_HEADER || hlen > len) return Ipv4Error.BadHeaderLength;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return Ipv4Error.None;
  }

  get version(): number {
    return this.buf[this.off + Ipv4Field.VER_IHL] >> 4;
  }
  get headerLength(): number {
    return (this.buf[this.off + Ipv4Field.VER_IHL] & 15) * 4;
  }
  get tos(): number {
    return this.buf[this.off + Ipv4Field.TOS];
  }
  get totalLength(): number {
    return readU16(this.buf, this.off + Ipv4Field.LENGTH);
  }
  set totalLength(v: number) {
    writeU16(this.buf, this.off + Ipv4Field.LENGTH, v);
  }
  get ident(): number {
    return readU16(this.buf, this.off + Ipv4Field.IDENT);
  }
  get dontFragment(): boolean {
    return (readU16(this.buf, this.off + Ipv4Field.FLG_OFF) & IP_FLAG_DF) !== 0;
  }
  get moreFragments(): boolean {
    return (readU16(this.buf, this.off + Ipv4Field.FLG_OFF) & IP_FLAG_MF) !== 0;
  }
  /** In bytes. */
  get fragmentOffset(): number {
    return (readU16(this.buf, this.off + Ipv4Field.FLG_OFF) & 0x1fff) * 8;
  }
  get ttl(): number {
    return this.buf[this.off + Ipv4Field.TTL];
  }
  get protocol(): number {
    return this.buf[this.off + Ipv4Field.PROTOCOL];
  }
  get checksum(): number {
    return readU16(this.buf, this.off + Ipv4Field.CHECKSUM);
  }
  get src(): number {
    return readU32(this.buf, this.off + Ipv4Field.SRC_ADDR);
  }
  get dst(): number {
    return readU32(this.buf, this.off + Ipv4Field.DST_ADDR);
  }
  /** Where the payload (the transport header) starts in `buf`. */
  get payloadOffset(): number {
    return this.off + this.headerLength;
  }
  /** Bytes of payload the view holds (the quote of an ICMP error may hold fewer than the total length says). */
  get payloadLength(): number {
    return this.len - this.headerLength;
  }
  /** The header checksum is right (RFC 791 3.1: the ones' complement sum over the header is zero). */
  verifyChecksum(): boolean {
    return internetChecksum(this.buf, this.off, this.headerLength) === 0;
  }
  /** Computes and stores the header checksum. */
  fillChecksum(): void {
    writeU16(this.buf, this.off + Ipv4Field.CHECKSUM, 0);
    writeU16(this.buf, this.off + Ipv4Field.CHECKSUM, internetChecksum(this.buf, this.off, this.headerLength));
  }
}
const EMPTY = new Uint8Array(0);

/**
 * Validates and parses the header of `buf[off, off+len)` into `out`. The header
 * checksum is checked unless `caps.ipv4` says the device verified it (no device we
 * drive does: the virtio header vouches for transport checksums only).
 */
export function parseIpv4Header(buf: Uint8Array, off: number, len: number, out: Ipv4Repr, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): Ipv4Error {
  if (len < IPV4_MIN_HEADER) return Ipv4Error.Truncated;
  const vihl = buf[off + Ipv4Field.VER_IHL];
  if (vihl >> 4 !== 4) return Ipv4Error.BadVersion;
  const hlen = (vihl & 15) * 4;
  if (hlen < IPV4_MIN_HEADER || hlen > len) return Ipv4Error.BadHeaderLength;
  const total = (buf[off + Ipv4Field.LENGTH] << 8) | buf[off + Ipv4Field.LENGTH + 1];
  // The total length must cover the header and fit the buffer (which may be longer:
  // link padding). A GSO packet whose total length the kernel left 0 has it filled in
  // from the buffer's length before it gets here (Stack.input).
  if (total < hlen || total > len) return Ipv4Error.BadTotalLength;
  if (checksumToVerify(caps.ipv4) && internetChecksum(buf, off, hlen) !== 0) return Ipv4Error.BadChecksum;
  out.tos = buf[off + Ipv4Field.TOS];
  out.totalLength = total;
  out.headerLength = hlen;
  out.ident = (buf[off + Ipv4Field.IDENT] << 8) | buf[off + Ipv4Field.IDENT + 1];
  const ff = (buf[off + Ipv4Field.FLG_OFF] << 8) | buf[off + Ipv4Field.FLG_OFF + 1];
  out.dontFragment = (ff & IP_FLAG_DF) !== 0;
  out.moreFragments = (ff & IP_FLAG_MF) !== 0;
  out.fragmentOffset = (ff & 0x1fff) * 8;
  out.ttl = buf[off + Ipv4Field.TTL];
  out.protocol = buf[off + Ipv4Field.PROTOCOL];
  out.src = readU32(buf, off + Ipv4Field.SRC_ADDR);
  out.dst = readU32(buf, off + Ipv4Field.DST_ADDR);
  return Ipv4Error.None;
}

/** Writes a 20-byte header (no options; `r.headerLength` is not consulted) at `off` from `r`, with its checksum. */
export function emitIpv4Header(buf: Uint8Array, off: number, r: Ipv4Repr): number {
  buf[off + Ipv4Field.VER_IHL] = 0x45;
  buf[off + Ipv4Field.TOS] = r.tos;
  buf[off + Ipv4Field.LENGTH] = r.totalLength >> 8;
  buf[off + Ipv4Field.LENGTH + 1] = r.totalLength & 255;
  buf[off + Ipv4Field.IDENT] = r.ident >> 8;
  buf[off + Ipv4Field.IDENT + 1] = r.ident & 255;
  const ff = (r.dontFragment ? IP_FLAG_DF : 0) | (r.moreFragments ? IP_FLAG_MF : 0) | ((r.fragmentOffset >> 3) & 0x1fff);
  buf[off + Ipv4Field.FLG_OFF] = ff >> 8;
  buf[off + Ipv4Field.FLG_OFF + 1] = ff & 255;
  buf[off + Ipv4Field.TTL] = r.ttl;
  buf[off + Ipv4Field.PROTOCOL] = r.protocol;
  buf[off + Ipv4Field.CHECKSUM] = 0;
  buf[off + Ipv4Field.CHECKSUM + 1] = 0;
  writeU32(buf, off + Ipv4Field.SRC_ADDR, r.src);
  writeU32(buf, off + Ipv4Field.DST_ADDR, r.dst);
  const c = checksumFinish(checksumAdd(buf, off, IPV4_MIN_HEADER));
  buf[off + Ipv4Field.CHECKSUM] = c >> 8;
  buf[off + Ipv4Field.CHECKSUM + 1] = c & 255;
  return IPV4_MIN_HEADER;
}
