/**
 * ICMPv4 (RFC 792; RFC 1191 4 for the next-hop MTU of "fragmentation needed"): echo,
 * and the error messages that quote an offending datagram.
 *
 *   0 type  1 code  2 checksum  4 rest of header: identifier(2) sequence(2) for echo,
 *   unused(2) next-hop MTU(2) for destination unreachable, 0 otherwise   8 body
 *
 * Field table, view (IcmpPacket), representation (parseIcmp / emitIcmp), as for IPv4.
 */
import { type ChecksumCaps, SOFTWARE_CHECKSUMS, checksumToVerify, internetChecksum } from './checksum';
import { readU16, writeU16 } from './bytes';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_SOURCE_QUENCH = 4;
export const ICMP_REDIRECT = 5;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_PARAM_PROBLEM = 12;

export const UNREACH_NET = 0;
export const UNREACH_HOST = 1;
export const UNREACH_PROTOCOL = 2;
export const UNREACH_PORT = 3;
export const UNREACH_FRAG_NEEDED = 4;
export const UNREACH_ADMIN_PROHIBITED = 13;

export const ICMP_HEADER_LEN = 8;

/** Byte offsets of the header's fields. */
export const enum IcmpField {
  TYPE = 0,
  CODE = 1,
  CHECKSUM = 2,
  /** Echo (and echo reply): identifier and sequence number. */
  IDENT = 4,
  SEQ = 6,
  /** Destination unreachable, code 4 (RFC 1191 4). */
  NEXT_HOP_MTU = 6,
  BODY = 8,
}

export interface IcmpRepr {
  type: number;
  code: number;
  /** Echo: identifier and sequence. */
  ident: number;
  seq: number;
  /** Destination unreachable code 4: the next-hop MTU (0 from old routers). */
  nextHopMtu: number;
  /** Offset and length of the body after the 8-byte ICMP header. */
  bodyOffset: number;
  bodyLength: number;
}

export function newIcmpRepr(): IcmpRepr {
  return { type: 0, code: 0, ident: 0, seq: 0, nextHopMtu: 0, bodyOffset: 0, bodyLength: 0 };
}

export const enum IcmpError {
  None = 0,
  Truncated = 1,
  BadChecksum = 2,
}

/** The types whose rest of header is an identifier and a sequence number (RFC 792: echo, timestamp, information). */
function hasIdent(type: number): boolean {
  return type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY || (type >= 13 && type <= 16);
}

/** A view over an ICMP message in place; `wrap` checks it holds the 8-byte header. Re-pointed, not allocated. */
export class IcmpPacket {
  buf: Uint8Array = EMPTY;
  off = 0;
  len = 0;

  wrap(buf: Uint8Array, off: number, len: number): IcmpError {
    if (len < ICMP_HEADER_LEN) return IcmpError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return IcmpError.None;
  }

  get type(): number {
    return this.buf[this.off + IcmpField.TYPE];
  }
  get code(): number {
    return this.buf[this.off + IcmpField.CODE];
  }
  get checksum(): number {
    return readU16(this.buf, this.off + IcmpField.CHECKSUM);
  }
  get ident(): number {
    return readU16(this.buf, this.off + IcmpField.IDENT);
  }
  get seq(): number {
    return readU16(this.buf, this.off + IcmpField.SEQ);
  }
  get nextHopMtu(): number {
    return readU16(this.buf, this.off + IcmpField.NEXT_HOP_MTU);
  }
  get bodyOffset(): number {
    return this.off + IcmpField.BODY;
  }
  get bodyLength(): number {
    return this.len - ICMP_HEADER_LEN;
  }
  /** The checksum covers the whole message (RFC 792). */
  verifyChecksum(): boolean {
    return internetChecksum(this.buf, this.off, this.len) === 0;
  }
}
const EMPTY = new Uint8Array(0);

/** Parses the message `buf[off, off+len)` (the IP payload): the header must be there, the checksum right unless the device verified it. */
export function parseIcmp(buf: Uint8Array, off: number, len: number, out: IcmpRepr, caps: ChecksumCaps = SOFTWARE_CHECKSUMS): IcmpError {
  if (len < ICMP_HEADER_LEN) return IcmpError.Truncated;
  if (checksumToVerify(caps.icmp) && internetChecksum(buf, off, len) !== 0) return IcmpError.BadChecksum;
  out.type = buf[off + IcmpField.TYPE];
  out.code = buf[off + IcmpField.CODE];
  out.ident = readU16(buf, off + IcmpField.IDENT);
  out.seq = readU16(buf, off + IcmpField.SEQ);
  out.nextHopMtu = readU16(buf, off + IcmpField.NEXT_HOP_MTU);
  out.bodyOffset = off + IcmpField.BODY;
  out.bodyLength = len - ICMP_HEADER_LEN;
  return IcmpError.None;
}

/**
 * Writes the header at `off` from `r`; its body (`r.bodyLength` bytes) must already follow
 * it. The rest of the header is what the type carries: identifier and sequence (echo),
 * the next-hop MTU (destination unreachable), zero otherwise. Fills the checksum.
 */
export function emitIcmp(buf: Uint8Array, off: number, r: IcmpRepr): number {
  buf[off + IcmpField.TYPE] = r.type;
  buf[off + IcmpField.CODE] = r.code;
  writeU16(buf, off + IcmpField.CHECKSUM, 0);
  if (hasIdent(r.type)) {
    writeU16(buf, off + IcmpField.IDENT, r.ident);
    writeU16(buf, off + IcmpField.SEQ, r.seq);
  } else {
    writeU16(buf, off + 4, 0);
    writeU16(buf, off + IcmpField.NEXT_HOP_MTU, r.type === ICMP_DEST_UNREACH ? r.nextHopMtu : 0);
  }
  const len = ICMP_HEADER_LEN + r.bodyLength;
  writeU16(buf, off + IcmpField.CHECKSUM, internetChecksum(buf, off, len));
  return len;
}
