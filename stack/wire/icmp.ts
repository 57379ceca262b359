/**
 * ICMPv4 (RFC 792, RFC 1191 for the next-hop MTU). Echo and the error messages
 * that quote an offending datagram.
 */
import { internetChecksum } from './checksum';
import { readU16 } from './ipv4';

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

/** Returns false for a truncated message or a bad checksum. */
export function parseIcmp(buf: Uint8Array, off: number, len: number, out: IcmpRepr): boolean {
  if (len < 8) return false;
  if (internetChecksum(buf, off, len) !== 0) return false;
  out.type = buf[off];
  out.code = buf[off + 1];
  out.ident = readU16(buf, off + 4);
  out.seq = readU16(buf, off + 6);
  out.nextHopMtu = readU16(buf, off + 6);
  out.bodyOffset = off + 8;
  out.bodyLength = len - 8;
  return true;
}

/** Writes an ICMP header at `off` followed by `bodyLength` bytes already in place; fills the checksum. */
export function finishIcmp(buf: Uint8Array, off: number, type: number, code: number, word: number, bodyLength: number): number {
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = word >>> 24;
  buf[off + 5] = (word >>> 16) & 255;
  buf[off + 6] = (word >>> 8) & 255;
  buf[off + 7] = word & 255;
  const c = internetChecksum(buf, off, 8 + bodyLength);
  buf[off + 2] = c >> 8;
  buf[off + 3] = c & 255;
  return 8 + bodyLength;
}
