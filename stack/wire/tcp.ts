/**
 * TCP header and options (RFC 9293 3.1; MSS 3.2; window scale and timestamps RFC 7323;
 * SACK-permitted and SACK RFC 2018), the three faces every format here has:
 *   TcpField    the field table: byte offsets from the start of the header
 *   TcpPacket   a view: one field read or written in place, after `wrap` checked the length
 *   TcpRepr     the representation, one shape both ways: `parseTcp` fills it (the
 *               data offset, the checksum unless the device verified it, every option's
 *               length), `emitTcp` writes a header from it
 * The receive path allocates nothing per segment: `parseTcp` fills a representation the
 * layer reuses, and SACK blocks land in its fixed array.
 *
 *    0 source port  2 destination port  4 sequence number  8 acknowledgment number
 *   12 data offset (high 4 bits)  13 flags  14 window  16 checksum  18 urgent pointer
 *   20 options (data offset > 5)
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
import { readU16, readU32, writeU16, writeU32 } from './bytes';
import { PROTO_TCP } from './ipv4';
import { type Seq, asSeq, readSeq, writeSeq } from './seq';

export const TCP_MIN_HEADER = 20;
export const FIN = 0x01,
  SYN = 0x02,
  RST = 0x04,
  PSH = 0x08,
  ACK = 0x10,
  URG = 0x20,
  ECE = 0x40,
  CWR = 0x80;
export const MAX_SACK_BLOCKS = 4;

/** Byte offsets of the header's fields (RFC 9293 3.1). */
export const enum TcpField {
  SRC_PORT = 0,
  DST_PORT = 2,
  SEQ_NUM = 4,
  ACK_NUM = 8,
  /** Data offset in the high four bits, in 32-bit words. */
  DATA_OFF = 12,
  FLAGS = 13,
  WIN_SIZE = 14,
  CHECKSUM = 16,
  URGENT = 18,
  OPTIONS = 20,
}

/** Option kinds (RFC 9293 3.2, RFC 7323, RFC 2018). A const enum: the parser's switch compares constants, not module properties. */
export const enum TcpOption {
  END = 0,
  NOP = 1,
  MSS = 2,
  WSCALE = 3,
  SACK_PERM = 4,
  SACK = 5,
  TIMESTAMP = 8,
}

/**
 * One segment's header. Parsed from the wire, every field is set; to emit one, set the
 * ports, numbers, flags, window and options, and `payloadLength` (the bytes already
 * placed after where the header goes); `headerLength` and `payloadOffset` are results.
 */
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
  /** MSS option (SYN only); -1 when absent. */
  mss: number;
  /** Window scale shift (SYN only); -1 when absent. */
  wscale: number;
  sackPermitted: boolean;
  hasTimestamp: boolean;
  tsVal: number;
  tsEcr: number;
  sackCount: number;
  /** Pairs [left0, right0, left1, right1, ...] of SACK blocks (sequence numbers as uint32). */
  sack: Uint32Array;
}

export function newTcpRepr(): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: asSeq(0),
    ack: asSeq(0),
    flags: 0,
    window: 0,
    urgent: 0,
    headerLength: 20,
    payloadOffset: 0,
    payloadLength: 0,
    mss: -1,
    wscale: -1,
    sackPermitted: false,
    hasTimestamp: false,
    tsVal: 0,
    tsEcr: 0,
    sackCount: 0,
    sack: new Uint32Array(MAX_SACK_BLOCKS * 2),
  };
}

/** Clears the options of `r` (a segment without any). */
export function clearTcpOptions(r: TcpRepr): TcpRepr {
  r.mss = -1;
  r.wscale = -1;
  r.sackPermitted = false;
  r.hasTimestamp = false;
  r.sackCount = 0;
  return r;
}

export const enum TcpError {
  None = 0,
  Truncated = 1,
  BadOffset = 2,
  BadChecksum = 3,
  BadOption = 4,
}

/** A view over a TCP header in place; `wrap` checks the 20 bytes and the data offset against the length. Re-pointed, not allocated. */
export class TcpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  wrap(buf: Uint8Array, off: number, len: number): TcpError {
    if (len < TCP_MIN_HEADER) return TcpError.Truncated;
    const hlen = (buf[off + TcpField.DATA_OFF] >> 4) * 4;
    if (hlen < TCP_MIN_HEADER || hlen > len) return TcpError.BadOffset;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return TcpError.None;
  }

  get srcPort(): number {
    return readU16(this.buf, this.off + TcpField.SRC_PORT);
  }
  get dstPort(): number {
    return readU16(this.buf, this.off + TcpField.DST_PORT);
  }
  get seq(): Seq {
    return readSeq(this.buf, this.off + TcpField.SEQ_NUM);
  }
  set seq(s: Seq) {
    writeSeq(this.buf, this.off + TcpField.SEQ_NUM, s);
  }
  get ack(): Seq {
    return readSeq(this.buf, this.off + TcpField.ACK_NUM);
  }
  get headerLength(): number {
    return (this.buf[this.off + TcpField.DATA_OFF] >> 4) * 4;
  }
  get flags(): number {
    return this.buf[this.off + TcpField.FLAGS];
  }
  set flags(f: number) {
    this.buf[this.off + TcpField.FLAGS] = f;
  }
  get window(): number {
    return readU16(this.buf, this.off + TcpField.WIN_SIZE);
  }
  get checksum(): number {
    return readU16(this.buf, this.off + TcpField.CHECKSUM);
  }
  set checksum(c: number) {
    writeU16(this.buf, this.off + TcpField.CHECKSUM, c);
  }
  get urgent(): number {
    return readU16(this.buf, this.off + TcpField.URGENT);
  }
  get payloadOffset(): number {
    return this.off + this.headerLength;
  }
  get payloadLength(): number {
    return this.len - this.headerLength;
  }
  /** The checksum over the pseudo-header (RFC 9293 3.1) and the whole segment is right. */
  verifyChecksum(src: number, dst: number): boolean {
    return checksumFinish(checksumAdd(this.buf, this.off, this.len, pseudoHeaderSum(src, dst, PROTO_TCP, this.len))) === 0;
  }
  /** Computes and stores the checksum of the whole segment. */
  fillChecksum(src: number, dst: number): void {
    this.checksum = 0;
    this.checksum = checksumFinish(checksumAdd(this.buf, this.off, this.len, pseudoHeaderSum(src, dst, PROTO_TCP, this.len)));
  }
}
const EMPTY = new Uint8Array(0);

/**
 * Parses the segment `buf[off, off+len)` (len = IP payload length) between `src` and
 * `dst`. Checks the data offset, every option's length and, unless `caps.tcp` says the
 * device verified it, the checksum over the pseudo-header.
 */
export function parseTcp(buf: Uint8Array, off: number, len: number, src: number, dst: number, out: TcpRepr, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): TcpError {
  if (len < TCP_MIN_HEADER) return TcpError.Truncated;
  const hlen = (buf[off + TcpField.DATA_OFF] >> 4) * 4;
  if (hlen < TCP_MIN_HEADER || hlen > len) return TcpError.BadOffset;
  if (checksumToVerify(caps.tcp) && checksumFinish(checksumAdd(buf, off, len, pseudoHeaderSum(src, dst, PROTO_TCP, len))) !== 0) return TcpError.BadChecksum;
  out.srcPort = readU16(buf, off + TcpField.SRC_PORT);
  out.dstPort = readU16(buf, off + TcpField.DST_PORT);
  out.seq = readSeq(buf, off + TcpField.SEQ_NUM);
  out.ack = readSeq(buf, off + TcpField.ACK_NUM);
  out.flags = buf[off + TcpField.FLAGS];
  out.window = readU16(buf, off + TcpField.WIN_SIZE);
  out.urgent = readU16(buf, off + TcpField.URGENT);
  out.headerLength = hlen;
  out.payloadOffset = off + hlen;
  out.payloadLength = len - hlen;
  out.mss = -1;
  out.wscale = -1;
  out.sackPermitted = false;
  out.hasTimestamp = false;
  out.sackCount = 0;
  if (hlen > TCP_MIN_HEADER) return parseOptions(buf, off + TcpField.OPTIONS, off + hlen, out);
  return TcpError.None;
}

function parseOptions(buf: Uint8Array, i: number, end: number, out: TcpRepr): TcpError {
  while (i < end) {
    const kind = buf[i];
    if (kind === TcpOption.END) break;
    if (kind === TcpOption.NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return TcpError.BadOption;
    const olen = buf[i + 1];
    if (olen < 2 || i + olen > end) return TcpError.BadOption;
    switch (kind) {
      case TcpOption.MSS:
        if (olen !== 4) return TcpError.BadOption;
        out.mss = readU16(buf, i + 2);
        break;
      case TcpOption.WSCALE:
        if (olen !== 3) return TcpError.BadOption;
        out.wscale = buf[i + 2];
        break;
      case TcpOption.SACK_PERM:
        if (olen !== 2) return TcpError.BadOption;
        out.sackPermitted = true;
        break;
      case TcpOption.TIMESTAMP:
        if (olen !== 10) return TcpError.BadOption;
        out.hasTimestamp = true;
        out.tsVal = readU32(buf, i + 2);
        out.tsEcr = readU32(buf, i + 6);
        break;
      case TcpOption.SACK: {
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

/** Length in bytes of the option block `r` carries (a multiple of 4). */
export function optionsLength(r: TcpRepr): number {
  let n = 0;
  if (r.mss >= 0) n += 4;
  if (r.hasTimestamp)
    n += 12; // NOP NOP TS, or SACKOK TS
  else if (r.sackPermitted) n += 4; // NOP NOP SACKOK
  if (r.wscale >= 0) n += 4; // NOP WS
  if (r.sackCount > 0) n += 4 + 8 * r.sackCount; // NOP NOP SACK
  return n;
}

/** The header length `emitTcp` writes for `r`. */
export function tcpHeaderLength(r: TcpRepr): number {
  return TCP_MIN_HEADER + optionsLength(r);
}

function emitOptions(buf: Uint8Array, i: number, r: TcpRepr): number {
  const start = i;
  if (r.mss >= 0) {
    buf[i++] = TcpOption.MSS;
    buf[i++] = 4;
    writeU16(buf, i, r.mss);
    i += 2;
  }
  // SACK-permitted (2 bytes) takes the place of the two NOPs that would align the
  // timestamp (RFC 7323 appendix A's layout, and what Linux sends): a SYN with MSS,
  // SACK-permitted, timestamps and window scale has 20 option bytes, not 24.
  if (r.sackPermitted && !r.hasTimestamp) {
    buf[i++] = TcpOption.NOP;
    buf[i++] = TcpOption.NOP;
    buf[i++] = TcpOption.SACK_PERM;
    buf[i++] = 2;
  }
  if (r.hasTimestamp) {
    if (r.sackPermitted) {
      buf[i++] = TcpOption.SACK_PERM;
      buf[i++] = 2;
    } else {
      buf[i++] = TcpOption.NOP;
      buf[i++] = TcpOption.NOP;
    }
    buf[i++] = TcpOption.TIMESTAMP;
    buf[i++] = 10;
    writeU32(buf, i, r.tsVal);
    writeU32(buf, i + 4, r.tsEcr);
    i += 8;
  }
  if (r.wscale >= 0) {
    buf[i++] = TcpOption.NOP;
    buf[i++] = TcpOption.WSCALE;
    buf[i++] = 3;
    buf[i++] = r.wscale;
  }
  if (r.sackCount > 0) {
    buf[i++] = TcpOption.NOP;
    buf[i++] = TcpOption.NOP;
    buf[i++] = TcpOption.SACK;
    buf[i++] = 2 + 8 * r.sackCount;
    for (let b = 0; b < r.sackCount; b++) {
      writeU32(buf, i, r.sack[b * 2]);
      writeU32(buf, i + 4, r.sack[b * 2 + 1]);
      i += 8;
    }
  }
  return i - start;
}

/**
 * Writes the header of `r` at `off`, between `src` and `dst`; its payload
 * (`r.payloadLength` bytes) must already follow where the header ends. Computes the
 * checksum, or stores only the pseudo-header sum when `caps.tcp` says the device fills
 * it (the sender then passes the offload meta: csum_start, csum_offset). Returns the
 * header length (also left in `r.headerLength`).
 */
export function emitTcp(buf: Uint8Array, off: number, r: TcpRepr, src: number, dst: number, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): number {
  const olen = optionsLength(r);
  const hlen = TCP_MIN_HEADER + olen;
  writeU16(buf, off + TcpField.SRC_PORT, r.srcPort);
  writeU16(buf, off + TcpField.DST_PORT, r.dstPort);
  writeSeq(buf, off + TcpField.SEQ_NUM, r.seq);
  writeSeq(buf, off + TcpField.ACK_NUM, r.ack);
  buf[off + TcpField.DATA_OFF] = (hlen / 4) << 4;
  buf[off + TcpField.FLAGS] = r.flags;
  writeU16(buf, off + TcpField.WIN_SIZE, r.window);
  writeU16(buf, off + TcpField.CHECKSUM, 0);
  writeU16(buf, off + TcpField.URGENT, 0);
  if (olen > 0) emitOptions(buf, off + TcpField.OPTIONS, r);
  r.headerLength = hlen;
  const total = hlen + r.payloadLength;
  const pseudo = pseudoHeaderSum(src, dst, PROTO_TCP, total);
  if (deviceFills(caps.tcp)) writeU16(buf, off + TcpField.CHECKSUM, partialChecksum(pseudo));
  else writeU16(buf, off + TcpField.CHECKSUM, checksumFinish(checksumAdd(buf, off, total, pseudo)));
  return hlen;
}
