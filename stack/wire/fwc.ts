/**
 * The Firewall Client control channel (TCP 1745) and its UDP relay header, as
 * faultstack models them (docs/fwc.md has the whole format and where each part comes
 * from).
 *
 * Microsoft never published the protocol. What is public is Wireshark's msproxy
 * dissector (packet-msproxy.c), which decodes MS Proxy 2.0 / ISA 2000 messages: a
 * fixed header whose command word sits at byte 36 and, in it, a client id, a version,
 * a server id, the server's acknowledgement and a sequence number, the ASCII signature
 * "RWSP" at byte 24; then a body per command with ports and addresses in network byte
 * order at fixed offsets. We keep that header, those command codes and the field
 * offsets the dissector shows; the rest is ours:
 *
 *    0  client id (LE u32)        4  version (LE u32)         8  server id (LE u32)
 *   12  server ack (u8)  13-15 0  16  sequence (u8)  17-23 0   24  "RWSP"
 *   28  message length (BE u16; ours: the control channel is a TCP stream, a message
 *       needs its length)         30-35 0                      36  command (BE u16)
 *   38  body (per command, below)
 *
 *   Hello 0x0500         220: user, application, computer name (NUL-terminated)
 *   Hello Ack 0x1000      98: external port  100: external address
 *   Connect 0x071E        58: destination port  60: destination address  72: client port
 *                        156: application name
 *   Connect Ack 0x0703    58: relay port  60: relay address (the firewall's internal side,
 *                        where the client's data connection goes)  74: external port
 *                         76: external address (the firewall's end of the outside connection)
 *   UDP Bind 0x070B       58: requested external port (0: any)  72: client port (where
 *                        relayed datagrams go)  160: application name
 *   Bind Ack 0x0706       44: bind id  58: external port  60: external address
 *                         72: relay port  76: relay address (ours, as in Connect Ack)
 *   Session End 0x251E    44: bind id (ours: 0 ends the session, else releases that binding)
 *   refused 0x4nnn        38: Windows Sockets error (BE u32, e.g. 10048 WSAEADDRINUSE)
 *                         42: reason length (BE u16)  44: reason (UTF-8); nnn is the low
 *                        12 bits of the refused request (the dissector's "0x4..." refusals)
 *
 * Every length is checked before a field is read: `frameLength` says how long the next
 * message of a stream is (or that it cannot be one), `parseFwc` reads one message into
 * a representation, `emitFwc` writes one from a representation.
 */
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const FWC_PORT = 1745;
/** Bytes up to and including the command word. */
export const FWC_HEADER = 38;
/** Longest message accepted (ours: the largest we send is under 1 KiB). */
export const FWC_MAX_MESSAGE = 1024;
export const FWC_SIGNATURE = 'RWSP';
/** Our version word: 1.2 (the dissector shows it, never its values). */
export const FWC_VERSION = 0x00010200;
const SIG = Buffer.from(FWC_SIGNATURE, 'ascii');

export const FwcCommand = {
  Hello: 0x0500,
  HelloAck: 0x1000,
  Connect: 0x071e,
  ConnectAck: 0x0703,
  UdpBind: 0x070b,
  BindAck: 0x0706,
  SessionEnd: 0x251e,
} as const;
export type FwcCommandCode = (typeof FwcCommand)[keyof typeof FwcCommand];

/** A refusal's command: 0x4000 | the low 12 bits of the request it refuses. */
export function refusalOf(request: number): number {
  return 0x4000 | (request & 0x0fff);
}
export function isRefusal(command: number): boolean {
  return command >> 12 === 4;
}

/** Windows Sockets error codes the firewall answers with (winsock2.h values). */
export const Wsa = {
  WSAEINVAL: 10022,
  WSAEMSGSIZE: 10040,
  WSAEPROTONOSUPPORT: 10043,
  WSAEADDRINUSE: 10048,
  WSAENETUNREACH: 10051,
  WSAECONNRESET: 10054,
  WSAENOBUFS: 10055,
  WSAETIMEDOUT: 10060,
  WSAECONNREFUSED: 10061,
  WSAEHOSTUNREACH: 10065,
} as const;
const WSA_NAMES = new Map<number, string>(Object.entries(Wsa).map(([k, v]) => [v, k]));
export function wsaName(code: number): string {
  return WSA_NAMES.get(code) ?? `WSA error ${code}`;
}

export interface FwcHeader {
  clientId: number;
  version: number;
  serverId: number;
  /** Byte 12: in a request the sequence of the last message the client got; in a reply the sequence of the request it answers (the dissector: server ack, client ack). */
  ack: number;
  seq: number;
}

export type FwcMessage =
  | { command: typeof FwcCommand.Hello; user: string; application: string; computer: string }
  | { command: typeof FwcCommand.HelloAck; externalAddr: number; externalPort: number }
  | { command: typeof FwcCommand.Connect; dstAddr: number; dstPort: number; clientPort: number; application: string }
  | { command: typeof FwcCommand.ConnectAck; relayAddr: number; relayPort: number; externalAddr: number; externalPort: number }
  | { command: typeof FwcCommand.UdpBind; requestedPort: number; clientPort: number; application: string }
  | { command: typeof FwcCommand.BindAck; bindId: number; externalAddr: number; externalPort: number; relayAddr: number; relayPort: number }
  | { command: typeof FwcCommand.SessionEnd; bindId: number }
  | { command: 'refused'; refused: number; wsaError: number; reason: string };

export type FwcRepr = { header: FwcHeader; message: FwcMessage };

/** Why a message was refused; each is a counter and an error the firewall answers with. */
export const enum FwcError {
  None = 0,
  /** Fewer bytes than the header or than its length says: in a stream, wait for more. */
  Truncated = 1,
  /** No "RWSP" at byte 24: not a Firewall Client message (the stream cannot be resynchronised). */
  BadSignature = 2,
  /** A length below the header's or above FWC_MAX_MESSAGE. */
  BadLength = 3,
  /** A command this firewall does not know. */
  UnknownCommand = 4,
  /** A body shorter than its command's fields, or a string without its NUL. */
  BadBody = 5,
}

export const FWC_ERROR_TEXT: Record<FwcError, string> = {
  [FwcError.None]: 'ok',
  [FwcError.Truncated]: 'truncated message',
  [FwcError.BadSignature]: `no "${FWC_SIGNATURE}" signature at byte 24`,
  [FwcError.BadLength]: `message length outside ${FWC_HEADER}..${FWC_MAX_MESSAGE}`,
  [FwcError.UnknownCommand]: 'unknown command',
  [FwcError.BadBody]: 'body too short for its command, or a string without its NUL',
};

/** Fixed end of each command's body (strings, where there are any, start there). */
const BODY_END: Record<number, number> = {
  [FwcCommand.Hello]: 220,
  [FwcCommand.HelloAck]: 104,
  [FwcCommand.Connect]: 156,
  [FwcCommand.ConnectAck]: 80,
  [FwcCommand.UdpBind]: 160,
  [FwcCommand.BindAck]: 80,
  [FwcCommand.SessionEnd]: 48,
};
const REFUSAL_FIXED = 44;
const MAX_STRING = 255;

/**
 * The length of the message that starts at `off` in a stream of `avail` bytes: a
 * positive length when its header is there (the whole message may not be yet), 0 when
 * fewer than 30 bytes have come, or a negative FwcError when these bytes cannot start
 * a message.
 */
export function frameLength(buf: Uint8Array, off: number, avail: number): number {
  if (avail < 30) return 0;
  for (let i = 0; i < 4; i++) if (buf[off + 24 + i] !== SIG[i]) return -FwcError.BadSignature;
  const len = readU16(buf, off + 28);
  if (len < FWC_HEADER || len > FWC_MAX_MESSAGE) return -FwcError.BadLength;
  return len;
}

function readString(buf: Uint8Array, at: number, end: number): { s: string; next: number } | null {
  const limit = Math.min(end, at + MAX_STRING + 1);
  for (let i = at; i < limit; i++) {
    if (buf[i] === 0) return { s: Buffer.from(buf.buffer, buf.byteOffset + at, i - at).toString('latin1'), next: i + 1 };
  }
  return null;
}

/** Parses the message at `buf[off, off+len)`; `out.error` says why not. */
export function parseFwc(buf: Uint8Array, off: number, len: number): { error: FwcError; repr: FwcRepr | null; command: number } {
  const fail = (error: FwcError, command = -1) => ({ error, repr: null, command });
  if (len < 30) return fail(FwcError.Truncated);
  const fl = frameLength(buf, off, len);
  if (fl < 0) return fail(-fl as FwcError);
  if (fl > len || fl < FWC_HEADER) return fail(fl < FWC_HEADER ? FwcError.BadLength : FwcError.Truncated);
  const end = off + fl;
  const b = buf;
  const u32le = (o: number) => (b[off + o] | (b[off + o + 1] << 8) | (b[off + o + 2] << 16) | (b[off + o + 3] << 24)) >>> 0;
  const header: FwcHeader = { clientId: u32le(0), version: u32le(4), serverId: u32le(8), ack: b[off + 12], seq: b[off + 16] };
  const command = readU16(b, off + 36);
  const u16 = (o: number) => readU16(b, off + o);
  const u32 = (o: number) => readU32(b, off + o);
  if (isRefusal(command)) {
    if (fl < REFUSAL_FIXED) return fail(FwcError.BadBody, command);
    const rl = u16(42);
    if (REFUSAL_FIXED + rl > fl) return fail(FwcError.BadBody, command);
    const reason = Buffer.from(b.buffer, b.byteOffset + off + REFUSAL_FIXED, rl).toString('utf8');
    return { error: FwcError.None, command, repr: { header, message: { command: 'refused', refused: command, wsaError: u32(38), reason } } };
  }
  const fixed = BODY_END[command];
  if (fixed === undefined) return fail(FwcError.UnknownCommand, command);
  if (fl < fixed) return fail(FwcError.BadBody, command);
  let message: FwcMessage;
  switch (command) {
    case FwcCommand.Hello: {
      const u = readString(b, off + fixed, end);
      const a = u && readString(b, u.next, end);
      const c = a && readString(b, a.next, end);
      if (!u || !a || !c) return fail(FwcError.BadBody, command);
      message = { command, user: u.s, application: a.s, computer: c.s };
      break;
    }
    case FwcCommand.HelloAck:
      message = { command, externalPort: u16(98), externalAddr: u32(100) };
      break;
    case FwcCommand.Connect: {
      const a = readString(b, off + fixed, end);
      if (!a) return fail(FwcError.BadBody, command);
      message = { command, dstPort: u16(58), dstAddr: u32(60), clientPort: u16(72), application: a.s };
      break;
    }
    case FwcCommand.ConnectAck:
      message = { command, relayPort: u16(58), relayAddr: u32(60), externalPort: u16(74), externalAddr: u32(76) };
      break;
    case FwcCommand.UdpBind: {
      const a = readString(b, off + fixed, end);
      if (!a) return fail(FwcError.BadBody, command);
      message = { command, requestedPort: u16(58), clientPort: u16(72), application: a.s };
      break;
    }
    case FwcCommand.BindAck:
      message = { command, bindId: u32(44), externalPort: u16(58), externalAddr: u32(60), relayPort: u16(72), relayAddr: u32(76) };
      break;
    case FwcCommand.SessionEnd:
      message = { command, bindId: u32(44) };
      break;
    default:
      return fail(FwcError.UnknownCommand, command);
  }
  return { error: FwcError.None, command, repr: { header, message } };
}

function strBytes(s: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  if (b.length > MAX_STRING || b.includes(0))
    throw new RangeError(`a Firewall Client string is at most ${MAX_STRING} bytes without NUL: ${JSON.stringify(s.slice(0, 40))}`);
  return b;
}

/** Writes one message; returns a new buffer of exactly its length. */
export function emitFwc(r: FwcRepr): Buffer {
  const m = r.message;
  let len: number;
  let strings: Buffer[] = [];
  let reason: Buffer | null = null;
  if (m.command === 'refused') {
    reason = Buffer.from(m.reason.slice(0, 400), 'utf8');
    len = REFUSAL_FIXED + reason.length;
  } else {
    if (m.command === FwcCommand.Hello) strings = [strBytes(m.user), strBytes(m.application), strBytes(m.computer)];
    else if (m.command === FwcCommand.Connect || m.command === FwcCommand.UdpBind) strings = [strBytes(m.application)];
    len = BODY_END[m.command]! + strings.reduce((n, s) => n + s.length + 1, 0);
  }
  if (len > FWC_MAX_MESSAGE) throw new RangeError(`Firewall Client message of ${len} bytes is longer than ${FWC_MAX_MESSAGE}`);
  const b = Buffer.alloc(len);
  b.writeUInt32LE(r.header.clientId >>> 0, 0);
  b.writeUInt32LE(r.header.version >>> 0, 4);
  b.writeUInt32LE(r.header.serverId >>> 0, 8);
  b[12] = r.header.ack & 255;
  b[16] = r.header.seq & 255;
  SIG.copy(b, 24);
  writeU16(b, 28, len);
  const w16 = (o: number, v: number) => writeU16(b, o, v);
  const w32 = (o: number, v: number) => writeU32(b, o, v >>> 0);
  if (m.command === 'refused') {
    w16(36, m.refused);
    w32(38, m.wsaError);
    w16(42, reason!.length);
    reason!.copy(b, REFUSAL_FIXED);
    return b;
  }
  w16(36, m.command);
  switch (m.command) {
    case FwcCommand.HelloAck:
      w16(98, m.externalPort);
      w32(100, m.externalAddr);
      break;
    case FwcCommand.Connect:
      w16(58, m.dstPort);
      w32(60, m.dstAddr);
      w16(72, m.clientPort);
      break;
    case FwcCommand.ConnectAck:
      w16(58, m.relayPort);
      w32(60, m.relayAddr);
      w16(74, m.externalPort);
      w32(76, m.externalAddr);
      break;
    case FwcCommand.UdpBind:
      w16(58, m.requestedPort);
      w16(72, m.clientPort);
      break;
    case FwcCommand.BindAck:
      w32(44, m.bindId);
      w16(58, m.externalPort);
      w32(60, m.externalAddr);
      w16(72, m.relayPort);
      w32(76, m.relayAddr);
      break;
    case FwcCommand.SessionEnd:
      w32(44, m.bindId);
      break;
    default:
      break;
  }
  let at = BODY_END[m.command]!;
  for (const s of strings) {
    s.copy(b, at);
    at += s.length + 1;
  }
  return b;
}

/** Reads the message at the front of a stream: the message and its length, null when more bytes are needed, or an error. */
export function nextFwc(buf: Uint8Array, off: number, avail: number): { length: number; error: FwcError; repr: FwcRepr | null; command: number } | null {
  const fl = frameLength(buf, off, avail);
  if (fl === 0) return null;
  if (fl < 0) return { length: 0, error: -fl as FwcError, repr: null, command: -1 };
  if (fl > avail) return null;
  const r = parseFwc(buf, off, fl);
  return { length: fl, ...r };
}

// ---------------------------------------------------------------------------------------------
// The UDP relay header (ours; ISA's is not public): 8 bytes in front of each relayed datagram,
// naming the far end as SOCKS5's UDP request header does (RFC 1928 7): towards the firewall the
// destination, from the firewall the source.
//
//   0  version (1)   1  flags (0)   2  port (BE u16)   4  address (BE u32)   8  payload

export const RELAY_HEADER = 8;
export const RELAY_VERSION = 1;

export interface RelayRepr {
  addr: number;
  port: number;
  payloadOffset: number;
  payloadLength: number;
}
export function newRelayRepr(): RelayRepr {
  return { addr: 0, port: 0, payloadOffset: 0, payloadLength: 0 };
}

export const enum RelayError {
  None = 0,
  Truncated = 1,
  BadVersion = 2,
}

export function parseRelay(buf: Uint8Array, off: number, len: number, out: RelayRepr): RelayError {
  if (len < RELAY_HEADER) return RelayError.Truncated;
  if (buf[off] !== RELAY_VERSION) return RelayError.BadVersion;
  out.port = readU16(buf, off + 2);
  out.addr = readU32(buf, off + 4);
  out.payloadOffset = off + RELAY_HEADER;
  out.payloadLength = len - RELAY_HEADER;
  return RelayError.None;
}

/** Writes the header at `off` (the payload follows it); returns its length. */
export function emitRelay(buf: Uint8Array, off: number, r: { addr: number; port: number }): number {
  buf[off] = RELAY_VERSION;
  buf[off + 1] = 0;
  writeU16(buf, off + 2, r.port);
  writeU32(buf, off + 4, r.addr);
  return RELAY_HEADER;
}
