/**
 * TCP header and options (RFC 9293 3.1; MSS; window scale and timestamps RFC 7323;
 * SACK-permitted and SACK RFC 2018). `parseTcp` fills a reusable representation so
 * the receive path allocates nothing per segment; SACK blocks land in a fixed array.
 */
import { checksumAdd, checksumFinish, pseudoHeaderSum } from './checksum';
import { PROTO_TCP, readU16, readU32, writeU16, writeU32 } from './ipv4';
import { type Seq, readSeq, writeSeq } from './seq';

export const TCP_MIN_HEADER = 20;
export const FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10, URG = 0x20, ECE = 0x40, CWR = 0x80;

export const OPT_END = 0, OPT_NOP = 1, OPT_MSS = 2, OPT_WSCALE = 3, OPT_SACK_PERM = 4, OPT_SACK = 5, OPT_TIMESTAMP = 8;
export const MAX_SACK_BLOCKS = 4;

export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: Seq;
  ack: Seq;
  flags: number;
  window: number;
  urgent: number;
  headerLength: number;
  payloadOffset: number;
  payloadLength: number;
  /** Options; -1 when absent. */
  mss: number;
  wscale: number;
  sackPermitted: boolean;
  hasTimestamp: boolean;
  tsVal: number;
  tsEcr: number;
  sackCount: number;
  /** Pairs [left0, right0, left1, right1, ...] of SACK blocks. */
  sack: Uint32Array;
}

export function newTcpRepr(): TcpRepr {
  return {
    srcPort: 0, dstPort: 0, seq: 0 as unknown as Seq, ack: 0 as unknown as Seq, flags: 0, window: 0, urgent: 0, headerLength: 20,
    payloadOffset: 0, payloadLength: 0, mss: -1, wscale: -1, sackPermitted: false,
    hasTimestamp: false, tsVal: 0, tsEcr: 0, sackCount: 0, sack: new Uint32Array(MAX_SACK_BLOCKS * 2),
  };
}

export const enum TcpError { None = 0, Truncated = 1, BadOffset = 2, BadChecksum = 3, BadOption = 4 }

/**
 * Parses the segment `buf[off, off+len)` (len = IP payload length). Checks the data
 * offset and, unless the device vouched for it, the checksum over the pseudo-header.
 */
export function parseTcp(buf: Uint8Array, off: number, len: number, src: number, dst: number, out: TcpRepr, skipChecksum = false): TcpError {
  if (len < TCP_MIN_HEADER) return TcpError.Truncated;
  const hlen = (buf[off + 12] >> 4) * 4;
  if (hlen < TCP_MIN_HEADER || hlen > len) return TcpError.BadOffset;
  if (!skipChecksum && checksumFinish(checksumAdd(buf, off, len, pseudoHeaderSum(src, dst, PROTO_TCP, len))) !== 0) return TcpError.BadChecksum;
  out.srcPort = readU16(buf, off);
  out.dstPort = readU16(buf, off + 2);
  out.seq = readSeq(buf, off + 4);
  out.ack = readSeq(buf, off + 8);
  out.flags = buf[off + 13];
  out.window = readU16(buf, off + 14);
  out.urgent = readU16(buf, off + 18);
  out.headerLength = hlen;
  out.payloadOffset = off + hlen;
  out.payloadLength = len - hlen;
  out.mss = -1;
  out.wscale = -1;
  out.sackPermitted = false;
  out.hasTimestamp = false;
  out.sackCount = 0;
  if (hlen > TCP_MIN_HEADER) return parseOptions(buf, off + TCP_MIN_HEADER, off + hlen, out);
  return TcpError.None;
}

function parseOptions(buf: Uint8Array, i: number, end: number, out: TcpRepr): TcpError {
  while (i < end) {
    const kind = buf[i];
    if (kind === OPT_END) break;
    if (kind === OPT_NOP) { i++; continue; }
    if (i + 1 >= end) return TcpError.BadOption;
    const olen = buf[i + 1];
    if (olen < 2 || i + olen > end) return TcpError.BadOption;
    switch (kind) {
      case OPT_MSS:
        if (olen !== 4) return TcpError.BadOption;
        out.mss = readU16(buf, i + 2);
        break;
      case OPT_WSCALE:
        if (olen !== 3) return TcpError.BadOption;
        out.wscale = buf[i + 2];
        break;
      case OPT_SACK_PERM:
        if (olen !== 2) return TcpError.BadOption;
        out.sackPermitted = true;
        break;
      case OPT_TIMESTAMP:
        if (olen !== 10) return TcpError.BadOption;
        out.hasTimestamp = true;
        out.tsVal = readU32(buf, i + 2);
        out.tsEcr = readU32(buf, i + 6);
        break;
      case OPT_SACK: {
        if ((olen - 2) % 8 !== 0) return TcpError.BadOption;
        const n = Math.min((olen - 2) / 8, MAX_SACK_BLOCKS);
        for (let b = 0; b < n; b++) {
          out.sack[b * 2] = readU32(buf, i + 2 + b * 8);
          out.sack[b * 2 + 1] = readU32(buf, i + 6 + b * 8);
        }
        out.sackCount = n;
        break;
      }
      default:
        break; // unknown options are skipped (RFC 9293 3.1)
    }
    i += olen;
  }
  return TcpError.None;
}

/** What to put in an outgoing header's options. */
export interface TcpOptionsOut {
  mss: number;          // -1: none
  wscale: number;       // -1: none
  sackPermitted: boolean;
  hasTimestamp: boolean;
  tsVal: number;
  tsEcr: number;
  sackCount: number;
  sack: Uint32Array | null;
}

/** Length in bytes of the option block `o` encodes (multiple of 4). */
export function optionsLength(o: TcpOptionsOut): number {
  let n = 0;
  if (o.mss >= 0) n += 4;
  if (o.hasTimestamp) n += 12;            // NOP NOP TS, or SACKOK TS
  else if (o.sackPermitted) n += 4;       // NOP NOP SACKOK
  if (o.wscale >= 0) n += 4;              // NOP WS
  if (o.sackCount > 0) n += 4 + 8 * o.sackCount; // NOP NOP SACK
  return n;
}

function emitOptions(buf: Uint8Array, i: number, o: TcpOptionsOut): number {
  const start = i;
  if (o.mss >= 0) { buf[i++] = OPT_MSS; buf[i++] = 4; writeU16(buf, i, o.mss); i += 2; }
  // SACK-permitted (2 bytes) takes the place of the two NOPs that would align the
  // timestamp (RFC 7323 appendix A's layout, and what Linux sends): a SYN with MSS,
  // SACK-permitted, timestamps and window scale has 20 option bytes, not 24.
  if (o.sackPermitted && !o.hasTimestamp) { buf[i++] = OPT_NOP; buf[i++] = OPT_NOP; buf[i++] = OPT_SACK_PERM; buf[i++] = 2; }
  if (o.hasTimestamp) {
    if (o.sackPermitted) { buf[i++] = OPT_SACK_PERM; buf[i++] = 2; }
    else { buf[i++] = OPT_NOP; buf[i++] = OPT_NOP; }
    buf[i++] = OPT_TIMESTAMP; buf[i++] = 10;
    writeU32(buf, i, o.tsVal); writeU32(buf, i + 4, o.tsEcr); i += 8;
  }
  if (o.wscale >= 0) { buf[i++] = OPT_NOP; buf[i++] = OPT_WSCALE; buf[i++] = 3; buf[i++] = o.wscale; }
  if (o.sackCount > 0 && o.sack) {
    buf[i++] = OPT_NOP; buf[i++] = OPT_NOP; buf[i++] = OPT_SACK; buf[i++] = 2 + 8 * o.sackCount;
    for (let b = 0; b < o.sackCount; b++) { writeU32(buf, i, o.sack[b * 2]); writeU32(buf, i + 4, o.sack[b * 2 + 1]); i += 8; }
  }
  return i - start;
}

/**
 * Writes a TCP header with options at `off`; the payload (`payloadLength` bytes)
 * must already follow the header. Computes the checksum unless `partial` is set,
 * in which case only the pseudo-header sum is stored (checksum offload: the
 * kernel completes it from csum_start/csum_offset).
 */
export function emitTcp(
  buf: Uint8Array, off: number, src: number, dst: number,
  srcPort: number, dstPort: number, seq: Seq, ack: Seq, flags: number, window: number,
  opts: TcpOptionsOut | null, payloadLength: number, partial = false,
): number {
  const olen = opts ? optionsLength(opts) : 0;
  const hlen = TCP_MIN_HEADER + olen;
  writeU16(buf, off, srcPort);
  writeU16(buf, off + 2, dstPort);
  writeSeq(buf, off + 4, seq);
  writeSeq(buf, off + 8, ack);
  buf[off + 12] = (hlen / 4) << 4;
  buf[off + 13] = flags;
  writeU16(buf, off + 14, window);
  buf[off + 16] = 0; buf[off + 17] = 0;
  buf[off + 18] = 0; buf[off + 19] = 0;
  if (opts && olen > 0) emitOptions(buf, off + TCP_MIN_HEADER, opts);
  const total = hlen + payloadLength;
  const pseudo = pseudoHeaderSum(src, dst, PROTO_TCP, total);
  if (partial) {
    // Store the folded (uncomplemented) pseudo-header sum, as Linux does for CHECKSUM_PARTIAL.
    let s = pseudo;
    s = (s & 0xffff) + (s >>> 16);
    s = (s & 0xffff) + (s >>> 16);
    writeU16(buf, off + 16, s);
  } else {
    writeU16(buf, off + 16, checksumFinish(checksumAdd(buf, off, total, pseudo)));
  }
  return hlen;
}
