/**
 * A minimal model of MMS (Microsoft Media Server), enough for the streaming-media
 * filter of KB 319381 and the lab's media server and player (lab/media/). It is NOT
 * MMS: the real protocol ([MS-MMSP]) has dozens of messages, ASF headers and a
 * packet-pair bandwidth probe. What the model keeps is what the article depends on:
 * control on TCP 1755, the client naming the UDP port it wants the media on (MMSU),
 * media datagrams with sequence numbers from the server's ports 1024-5000, one stream
 * per item of a server-side playlist with its end announced on the control
 * connection, and media inline on the control connection for MMST.
 *
 * Control message (both directions), all big-endian:
 *   0  0xB00BFACE (the session id MS-MMSP's TCP header always carries; our magic)
 *   4  length (u16, the whole message, 8..1024)     6  command (u16)     8  body
 *
 *   Connect        0x0001 C->S  player name (the rest of the body, UTF-8)
 *   ConnectReply   0x0002 S->C  8: items in the server-side playlist (u16)
 *   TransportUdp   0x0003 C->S  8: client UDP port (u16)  10: client address (u32): MMSU,
 *                               where the client wants the media (MS-MMSP's "funnel" message
 *                               carries the same as text); the filter reads and NAT rewrites it
 *   TransportTcp   0x0004 C->S  (no body): MMST, media inline on this connection
 *   StartPlaying   0x0005 C->S  8: item (u16, from 1)  10: play incarnation (u8)
 *   StartedPlaying 0x0006 S->C  8: item  10: incarnation  12: datagrams (u32)  16: source port (u16)
 *   EndOfItem      0x0007 S->C  8: item  10: incarnation  12: datagrams sent (u32)
 *                               16: SHA-256 of the item's payloads in order (32 bytes)
 *   MediaData      0x0008 S->C  (MMST) 8: a media datagram as below, inline
 *   Close          0x0009 C->S  (no body)
 *   Error          0x000A S->C  a reason (UTF-8)
 *
 * Media datagram (UDP, or inside MediaData): the first 8 bytes are MS-MMSP's Data packet
 * header fields (little-endian there, as in the specification):
 *   0  LocationId: sequence number (LE u32)   4  PlayIncarnation (u8)
 *   5  AFFlags (u8; bit 0 ours: last datagram of the item)   6  PacketSize (LE u16)
 *   8  item (BE u16)   10  0 (u16)   12  payload
 */
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const MMS_PORT = 1755;
export const MMS_MAGIC = 0xb00bface;
export const MMS_HEADER = 8;
export const MMS_MAX_MESSAGE = 1024 + 2048;
export const MEDIA_HEADER = 12;
export const AF_LAST = 0x01;

export const MmsCommand = {
  Connect: 0x0001,
  ConnectReply: 0x0002,
  TransportUdp: 0x0003,
  TransportTcp: 0x0004,
  StartPlaying: 0x0005,
  StartedPlaying: 0x0006,
  EndOfItem: 0x0007,
  MediaData: 0x0008,
  Close: 0x0009,
  Error: 0x000a,
} as const;

/** The fixed body end of each command (variable tails start there). */
const FIXED: Record<number, number> = {
  0x0001: 8,
  0x0002: 10,
  0x0003: 14,
  0x0004: 8,
  0x0005: 11,
  0x0006: 18,
  0x0007: 48,
  0x0008: 8 + MEDIA_HEADER,
  0x0009: 8,
  0x000a: 8,
};

export type MmsMessage =
  | { command: typeof MmsCommand.Connect; player: string }
  | { command: typeof MmsCommand.ConnectReply; items: number }
  | { command: typeof MmsCommand.TransportUdp; port: number; addr: number }
  | { command: typeof MmsCommand.TransportTcp }
  | { command: typeof MmsCommand.StartPlaying; item: number; incarnation: number }
  | { command: typeof MmsCommand.StartedPlaying; item: number; incarnation: number; datagrams: number; sourcePort: number }
  | { command: typeof MmsCommand.EndOfItem; item: number; incarnation: number; datagrams: number; sha256: Buffer }
  | { command: typeof MmsCommand.MediaData; media: Buffer }
  | { command: typeof MmsCommand.Close }
  | { command: typeof MmsCommand.Error; reason: string };

export const enum MmsError {
  None = 0,
  Truncated = 1,
  BadMagic = 2,
  BadLength = 3,
  UnknownCommand = 4,
  BadBody = 5,
}

/** Length of the message at the front of a stream: > 0, 0 (need 8 bytes), or -MmsError. */
export function mmsFrameLength(buf: Uint8Array, off: number, avail: number): number {
  if (avail < MMS_HEADER) return 0;
  if (readU32(buf, off) !== MMS_MAGIC) return -MmsError.BadMagic;
  const len = readU16(buf, off + 4);
  if (len < MMS_HEADER || len > MMS_MAX_MESSAGE) return -MmsError.BadLength;
  return len;
}

/** Parses one whole message at buf[off, off+len). */
export function parseMms(buf: Uint8Array, off: number, len: number): { error: MmsError; message: MmsMessage | null } {
  const fl = mmsFrameLength(buf, off, len);
  if (fl <= 0) return { error: fl === 0 ? MmsError.Truncated : (-fl as MmsError), message: null };
  if (fl > len) return { error: MmsError.Truncated, message: null };
  const cmd = readU16(buf, off + 6);
  const fixed = FIXED[cmd];
  if (fixed === undefined) return { error: MmsError.UnknownCommand, message: null };
  if (fl < fixed) return { error: MmsError.BadBody, message: null };
  const u16 = (o: number) => readU16(buf, off + o);
  const u32 = (o: number) => readU32(buf, off + o);
  const tail = (o: number) => Buffer.from(buf.buffer, buf.byteOffset + off + o, fl - o);
  let m: MmsMessage;
  switch (cmd) {
    case MmsCommand.Connect:
      m = { command: cmd, player: tail(8).toString('utf8') };
      break;
    case MmsCommand.ConnectReply:
      m = { command: cmd, items: u16(8) };
      break;
    case MmsCommand.TransportUdp:
      m = { command: cmd, port: u16(8), addr: u32(10) };
      break;
    case MmsCommand.TransportTcp:
      m = { command: cmd };
      break;
    case MmsCommand.StartPlaying:
      m = { command: cmd, item: u16(8), incarnation: buf[off + 10] };
      break;
    case MmsCommand.StartedPlaying:
      m = { command: cmd, item: u16(8), incarnation: buf[off + 10], datagrams: u32(12), sourcePort: u16(16) };
      break;
    case MmsCommand.EndOfItem:
      m = { command: cmd, item: u16(8), incarnation: buf[off + 10], datagrams: u32(12), sha256: Buffer.from(tail(16).subarray(0, 32)) };
      break;
    case MmsCommand.MediaData:
      m = { command: cmd, media: Buffer.from(tail(8)) };
      break;
    case MmsCommand.Close:
      m = { command: cmd };
      break;
    case MmsCommand.Error:
      m = { command: cmd, reason: tail(8).toString('utf8') };
      break;
    default:
      return { error: MmsError.UnknownCommand, message: null };
  }
  return { error: MmsError.None, message: m };
}

export function emitMms(m: MmsMessage): Buffer {
  let body: Buffer;
  switch (m.command) {
    case MmsCommand.Connect:
      body = Buffer.from(m.player, 'utf8');
      break;
    case MmsCommand.ConnectReply:
      body = Buffer.alloc(2);
      writeU16(body, 0, m.items);
      break;
    case MmsCommand.TransportUdp:
      body = Buffer.alloc(6);
      writeU16(body, 0, m.port);
      writeU32(body, 2, m.addr);
      break;
    case MmsCommand.TransportTcp:
    case MmsCommand.Close:
      body = Buffer.alloc(0);
      break;
    case MmsCommand.StartPlaying:
      body = Buffer.alloc(3);
      writeU16(body, 0, m.item);
      body[2] = m.incarnation;
      break;
    case MmsCommand.StartedPlaying:
      body = Buffer.alloc(10);
      writeU16(body, 0, m.item);
      body[2] = m.incarnation;
      writeU32(body, 4, m.datagrams);
      writeU16(body, 8, m.sourcePort);
      break;
    case MmsCommand.EndOfItem:
      body = Buffer.alloc(40);
      writeU16(body, 0, m.item);
      body[2] = m.incarnation;
      writeU32(body, 4, m.datagrams);
      m.sha256.copy(body, 8, 0, 32);
      break;
    case MmsCommand.MediaData:
      body = m.media;
      break;
    case MmsCommand.Error:
      body = Buffer.from(m.reason, 'utf8');
      break;
  }
  const len = MMS_HEADER + body.length;
  if (len > MMS_MAX_MESSAGE) throw new RangeError(`MMS message of ${len} bytes is longer than ${MMS_MAX_MESSAGE}`);
  const b = Buffer.allocUnsafe(len);
  writeU32(b, 0, MMS_MAGIC);
  writeU16(b, 4, len);
  writeU16(b, 6, m.command);
  body.copy(b, MMS_HEADER);
  return b;
}

export interface MediaRepr {
  seq: number;
  incarnation: number;
  flags: number;
  size: number;
  item: number;
  payloadOffset: number;
  payloadLength: number;
}

export function parseMedia(buf: Uint8Array, off: number, len: number): MediaRepr | null {
  if (len < MEDIA_HEADER) return null;
  const size = buf[off + 6] | (buf[off + 7] << 8);
  if (size !== len) return null;
  return {
    seq: (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0,
    incarnation: buf[off + 4],
    flags: buf[off + 5],
    size,
    item: readU16(buf, off + 8),
    payloadOffset: off + MEDIA_HEADER,
    payloadLength: len - MEDIA_HEADER,
  };
}

export function emitMedia(r: { seq: number; incarnation: number; flags: number; item: number }, payload: Uint8Array): Buffer {
  const len = MEDIA_HEADER + payload.length;
  const b = Buffer.allocUnsafe(len);
  b.writeUInt32LE(r.seq >>> 0, 0);
  b[4] = r.incarnation & 255;
  b[5] = r.flags & 255;
  b.writeUInt16LE(len, 6);
  writeU16(b, 8, r.item);
  writeU16(b, 10, 0);
  b.set(payload, MEDIA_HEADER);
  return b;
}

/**
 * The payload of datagram `seq` of `item`: deterministic, so a player can check what it got
 * without a second channel (the server's EndOfItem carries the SHA-256 of them all).
 */
export function mediaPayload(item: number, seq: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let s = (Math.imul(item, 0x9e3779b1) ^ Math.imul(seq + 1, 0x85ebca6b)) >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}

/** A stream parser for the control connection: feed bytes, get whole messages. */
export class MmsStream {
  private buf: Buffer = Buffer.alloc(0);
  /** Set when the stream cannot be parsed any more (bad magic or length). */
  error: MmsError = MmsError.None;

  push(data: Buffer): { message: MmsMessage | null; error: MmsError; raw: Buffer }[] {
    const out: { message: MmsMessage | null; error: MmsError; raw: Buffer }[] = [];
    if (this.error !== MmsError.None) return out;
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    let off = 0;
    while (true) {
      const fl = mmsFrameLength(this.buf, off, this.buf.length - off);
      if (fl < 0) {
        this.error = -fl as MmsError;
        break;
      }
      if (fl === 0 || fl > this.buf.length - off) break;
      const r = parseMms(this.buf, off, fl);
      out.push({ ...r, raw: this.buf.subarray(off, off + fl) });
      off += fl;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(off));
    return out;
  }
}
