/**
 * ESP (RFC 4303) and its UDP encapsulation (RFC 3948): formats only.
 *
 *   ESP packet (RFC 4303 2):  SPI(4) | Sequence Number(4) | IV | ciphertext | ICV
 *   plaintext after decryption (2.4, 2.6): payload | padding | Pad Length(1) | Next Header(1)
 *
 * Over UDP port 4500 the same port also carries IKE: an IKE message there starts with
 * four zero bytes, the non-ESP marker (RFC 3948 2.2), where ESP has its SPI, and SPI 0
 * is reserved (RFC 4303 2.1), so the two never collide. A single 0xFF byte is a NAT
 * keepalive (RFC 3948 2.3). Lengths are checked before anything is read.
 */
import { readU32, writeU32 } from './bytes';

export const PROTO_ESP = 50;
/** IKE's port (RFC 7296 2) and the NAT-traversal port that carries IKE and ESP (RFC 3948). */
export const IKE_PORT = 500;
export const NAT_T_PORT = 4500;
/** SPI and sequence number. */
export const ESP_HEADER = 8;
/** Pad Length and Next Header. */
export const ESP_TRAILER = 2;
/** Next Header values inside ESP (IANA protocol numbers): 4 = IPv4 in tunnel mode, 59 = no next header (dummy packet, RFC 4303 2.6). */
export const ESP_NEXT_IPV4 = 4;
export const ESP_NEXT_NONE = 59;

/** Byte offsets of the cleartext header's fields (RFC 4303 2). */
export const enum EspField {
  SPI = 0,
  SEQ = 4,
  BODY = 8,
}

/** The cleartext part of an ESP packet: what the SAD lookup and the replay check need. */
export interface EspRepr {
  spi: number;
  /** Low 32 bits of the sequence number as sent. */
  seq: number;
  /** Where the IV (then the ciphertext) starts, and how many bytes follow the header up to the end of the packet. */
  bodyOffset: number;
  bodyLength: number;
}

export function newEspRepr(): EspRepr {
  return { spi: 0, seq: 0, bodyOffset: 0, bodyLength: 0 };
}

export const enum EspError {
  None = 0,
  Truncated = 1,
  ZeroSpi = 2,
}

/** Parses the header of the ESP packet in `buf[off, off+len)`. */
export function parseEsp(buf: Uint8Array, off: number, len: number, out: EspRepr): EspError {
  if (len < ESP_HEADER) return EspError.Truncated;
  const spi = readU32(buf, off + EspField.SPI);
  if (spi === 0) return EspError.ZeroSpi;
  out.spi = spi;
  out.seq = readU32(buf, off + EspField.SEQ);
  out.bodyOffset = off + EspField.BODY;
  out.bodyLength = len - ESP_HEADER;
  return EspError.None;
}

/** Writes the header of `r` (SPI and the low 32 bits of the sequence number) at `off`. */
export function emitEspHeader(buf: Uint8Array, off: number, r: EspRepr): number {
  writeU32(buf, off + EspField.SPI, r.spi);
  writeU32(buf, off + EspField.SEQ, r.seq >>> 0);
  return ESP_HEADER;
}

/** The decrypted trailer (RFC 4303 2.4, 2.6). */
export interface EspTrailerRepr {
  padLength: number;
  nextHeader: number;
  /** Bytes of payload before the padding. */
  payloadLength: number;
}

export const enum EspTrailerError {
  None = 0,
  Truncated = 1,
  BadPadding = 2,
}

/**
 * Reads the trailer at the end of the plaintext `buf[off, off+len)`. The padding bytes
 * must be 1, 2, 3, ... (RFC 4303 2.4: the receiver SHOULD check them, which catches a
 * wrong key that slipped past the integrity check only in an integrity-free setup).
 */
export function parseEspTrailer(buf: Uint8Array, off: number, len: number, out: EspTrailerRepr): EspTrailerError {
  if (len < ESP_TRAILER) return EspTrailerError.Truncated;
  const padLength = buf[off + len - 2];
  if (padLength + ESP_TRAILER > len) return EspTrailerError.Truncated;
  const padStart = off + len - 2 - padLength;
  for (let i = 0; i < padLength; i++) if (buf[padStart + i] !== i + 1) return EspTrailerError.BadPadding;
  out.padLength = padLength;
  out.nextHeader = buf[off + len - 1];
  out.payloadLength = len - ESP_TRAILER - padLength;
  return EspTrailerError.None;
}

/**
 * Padding so that payload + padding + 2 ends on a multiple of `block` (RFC 4303 2.4:
 * the cipher's block size, and at least 4 so that the ICV is 4-byte aligned).
 */
export function espPadLength(payloadLength: number, block: number): number {
  const b = block < 4 ? 4 : block;
  const r = (payloadLength + ESP_TRAILER) % b;
  return r === 0 ? 0 : b - r;
}

/** Writes the trailer of `r` at `off`, just after the payload: padding 1..n, Pad Length and Next Header; returns the bytes written. */
export function emitEspTrailer(buf: Uint8Array, off: number, r: EspTrailerRepr): number {
  const padLength = r.padLength;
  for (let i = 0; i < padLength; i++) buf[off + i] = i + 1;
  buf[off + padLength] = padLength;
  buf[off + padLength + 1] = r.nextHeader;
  return padLength + ESP_TRAILER;
}

/** What a UDP datagram to port 4500 carries (RFC 3948 2.2, 2.3). */
export const enum UdpEncapKind {
  Esp = 0,
  /** Non-ESP marker: IKE follows the four zero bytes. */
  Ike = 1,
  /** One 0xFF byte: a NAT keepalive, to be dropped. */
  Keepalive = 2,
  /** Too short to be either. */
  Malformed = 3,
}

export function classifyUdpEncap(buf: Uint8Array, off: number, len: number): UdpEncapKind {
  if (len === 1 && buf[off] === 0xff) return UdpEncapKind.Keepalive;
  if (len < 4) return UdpEncapKind.Malformed;
  if (buf[off] === 0 && buf[off + 1] === 0 && buf[off + 2] === 0 && buf[off + 3] === 0) return UdpEncapKind.Ike;
  return len < ESP_HEADER ? UdpEncapKind.Malformed : UdpEncapKind.Esp;
}

/** The non-ESP marker's length. */
export const NON_ESP_MARKER = 4;
