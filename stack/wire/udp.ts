/**
 * UDP (RFC 768): 0 source port  2 destination port  4 length  6 checksum  8 data.
 * Field table, view (UdpPacket), representation (parseUdp / emitUdp), as for IPv4.
 */
import {
  type ChecksumCaps,
  SOFTWARE_CHECKSUMS,
  checksumAdd,
  checksumFinish,
  checksumToVerify,
  deviceFills,
  partialChecksum,
  pseudoHeaderSum,
} from './checksum';
import { readU16, writeU16 } from './bytes';
import { PROTO_UDP } from './ipv4';

export const UDP_HEADER = 8;

/** Byte offsets of the header's fields. */
export const enum UdpField {
  SRC_PORT = 0,
  DST_PORT = 2,
  LENGTH = 4,
  CHECKSUM = 6,
}

export interface UdpRepr {
  srcPort: number;
  dstPort: number;
  payloadOffset: number;
  payloadLength: number;
}
export function newUdpRepr(): UdpRepr {
  return { srcPort: 0, dstPort: 0, payloadOffset: 0, payloadLength: 0 };
}

export const enum UdpError {
  None = 0,
  Truncated = 1,
  BadLength = 2,
  BadChecksum = 3,
}

/** A view over a UDP header in place; `wrap` checks the header is there and its length field fits. Re-pointed, not allocated. */
export class UdpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  wrap(buf: Uint8Array, off: number, len: number): UdpError {
    if (len < UDP_HEADER) return UdpError.Truncated;
    const ulen = readU16(buf, off + UdpField.LENGTH);
    if (ulen < UDP_HEADER || ulen > len) return UdpError.BadLength;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return UdpError.None;
  }

  get srcPort(): number {
    return readU16(this.buf, this.off + UdpField.SRC_PORT);
  }
  get dstPort(): number {
    return readU16(this.buf, this.off + UdpField.DST_PORT);
  }
  get length(): number {
    return readU16(this.buf, this.off + UdpField.LENGTH);
  }
  get checksum(): number {
    return readU16(this.buf, this.off + UdpField.CHECKSUM);
  }
  get payloadOffset(): number {
    return this.off + UDP_HEADER;
  }
  get payloadLength(): number {
    return this.length - UDP_HEADER;
  }
}
const EMPTY = new Uint8Array(0);

/**
 * Parses the datagram `buf[off, off+len)` (the IP payload) between `src` and `dst`.
 * The checksum is checked unless it is 0 (the sender computed none, RFC 768) or the
 * device verified it.
 */
export function parseUdp(buf: Uint8Array, off: number, len: number, src: number, dst: number, out: UdpRepr, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): UdpError {
  if (len < UDP_HEADER) return UdpError.Truncated;
  const ulen = readU16(buf, off + UdpField.LENGTH);
  if (ulen < UDP_HEADER || ulen > len) return UdpError.BadLength;
  const csum = readU16(buf, off + UdpField.CHECKSUM);
  if (csum !== 0 && checksumToVerify(caps.udp)) {
    if (checksumFinish(checksumAdd(buf, off, ulen, pseudoHeaderSum(src, dst, PROTO_UDP, ulen))) !== 0) return UdpError.BadChecksum;
  }
  out.srcPort = readU16(buf, off + UdpField.SRC_PORT);
  out.dstPort = readU16(buf, off + UdpField.DST_PORT);
  out.payloadOffset = off + UDP_HEADER;
  out.payloadLength = ulen - UDP_HEADER;
  return UdpError.None;
}

/**
 * Writes the header at `off` from `r` (ports and payload length); the payload must
 * already follow it. The checksum is computed, or only the pseudo-header sum is stored
 * when `caps.udp` says the device fills it (the caller then sends the offload meta).
 */
export function emitUdp(buf: Uint8Array, off: number, r: UdpRepr, src: number, dst: number, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): number {
  const ulen = UDP_HEADER + r.payloadLength;
  writeU16(buf, off + UdpField.SRC_PORT, r.srcPort);
  writeU16(buf, off + UdpField.DST_PORT, r.dstPort);
  writeU16(buf, off + UdpField.LENGTH, ulen);
  writeU16(buf, off + UdpField.CHECKSUM, 0);
  const pseudo = pseudoHeaderSum(src, dst, PROTO_UDP, ulen);
  if (deviceFills(caps.udp)) {
    writeU16(buf, off + UdpField.CHECKSUM, partialChecksum(pseudo));
  } else {
    let c = checksumFinish(checksumAdd(buf, off, ulen, pseudo));
    if (c === 0) c = 0xffff; // 0 would mean "no checksum"
    writeU16(buf, off + UdpField.CHECKSUM, c);
  }
  return ulen;
}
