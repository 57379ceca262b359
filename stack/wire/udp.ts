/** UDP (RFC 768). */
import { checksumAdd, checksumFinish, pseudoHeaderSum } from './checksum';
import { PROTO_UDP, readU16 } from './ipv4';

export const UDP_HEADER = 8;

export interface UdpRepr { srcPort: number; dstPort: number; payloadOffset: number; payloadLength: number }
export function newUdpRepr(): UdpRepr { return { srcPort: 0, dstPort: 0, payloadOffset: 0, payloadLength: 0 }; }

export const enum UdpError { None = 0, Truncated = 1, BadLength = 2, BadChecksum = 3 }

export function parseUdp(buf: Uint8Array, off: number, len: number, src: number, dst: number, out: UdpRepr, skipChecksum = false): UdpError {
  if (len < UDP_HEADER) return UdpError.Truncated;
  const ulen = readU16(buf, off + 4);
  if (ulen < UDP_HEADER || ulen > len) return UdpError.BadLength;
  const csum = readU16(buf, off + 6);
  // A zero checksum means the sender did not compute one (RFC 768).
  if (csum !== 0 && !skipChecksum) {
    if (checksumFinish(checksumAdd(buf, off, ulen, pseudoHeaderSum(src, dst, PROTO_UDP, ulen))) !== 0) return UdpError.BadChecksum;
  }
  out.srcPort = readU16(buf, off);
  out.dstPort = readU16(buf, off + 2);
  out.payloadOffset = off + UDP_HEADER;
  out.payloadLength = ulen - UDP_HEADER;
  return UdpError.None;
}

/** Writes the UDP header at `off`; the payload must already follow it. */
export function emitUdp(buf: Uint8Array, off: number, src: number, dst: number, srcPort: number, dstPort: number, payloadLength: number): number {
  const ulen = UDP_HEADER + payloadLength;
  buf[off] = srcPort >> 8; buf[off + 1] = srcPort & 255;
  buf[off + 2] = dstPort >> 8; buf[off + 3] = dstPort & 255;
  buf[off + 4] = ulen >> 8; buf[off + 5] = ulen & 255;
  buf[off + 6] = 0; buf[off + 7] = 0;
  let c = checksumFinish(checksumAdd(buf, off, ulen, pseudoHeaderSum(src, dst, PROTO_UDP, ulen)));
  if (c === 0) c = 0xffff; // 0 would mean "no checksum"
  buf[off + 6] = c >> 8; buf[off + 7] = c & 255;
  return ulen;
}
