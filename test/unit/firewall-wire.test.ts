/**
 * The Firewall Client control-channel format (stack/wire/fwc.ts) and the MMS model
 * (stack/wire/mms.ts): every message emitted from its representation and parsed back,
 * the fields where docs/fwc.md says they are (the dissector's offsets), and every way a
 * message can be malformed refused with its reason before a field is read.
 */
import { describe, expect, it } from 'vitest';
import {
  FWC_HEADER,
  FWC_MAX_MESSAGE,
  FwcCommand,
  FwcError,
  RELAY_HEADER,
  RelayError,
  Wsa,
  emitFwc,
  emitRelay,
  frameLength,
  isRefusal,
  newRelayRepr,
  nextFwc,
  parseFwc,
  parseRelay,
  refusalOf,
  type FwcMessage,
} from '../../stack/wire/fwc';
import { MmsCommand, MmsError, MmsStream, emitMedia, emitMms, mediaPayload, mmsFrameLength, parseMedia, parseMms, type MmsMessage } from '../../stack/wire/mms';

const header = { clientId: 7, version: 0x00010200, serverId: 42, ack: 3, seq: 9 };

const MESSAGES: FwcMessage[] = [
  { command: FwcCommand.Hello, user: 'alice', application: 'wmplayer.exe', computer: 'CLIENT1' },
  { command: FwcCommand.HelloAck, externalAddr: 0xc6130001, externalPort: 0 },
  { command: FwcCommand.Connect, dstAddr: 0xc6130002, dstPort: 1755, clientPort: 1034, application: 'wmplayer.exe' },
  { command: FwcCommand.ConnectAck, relayAddr: 0xc6120101, relayPort: 33000, externalAddr: 0xc6130001, externalPort: 40001 },
  { command: FwcCommand.UdpBind, requestedPort: 7000, clientPort: 7000, application: 'wmplayer.exe' },
  { command: FwcCommand.BindAck, bindId: 5, externalAddr: 0xc6130001, externalPort: 7000, relayAddr: 0xc6120101, relayPort: 50000 },
  { command: FwcCommand.SessionEnd, bindId: 5 },
  { command: 'refused', refused: refusalOf(FwcCommand.UdpBind), wsaError: Wsa.WSAEADDRINUSE, reason: 'WSAEADDRINUSE: Address already in use' },
];

describe('Firewall Client messages', () => {
  it('every command round-trips through emit and parse', () => {
    for (const m of MESSAGES) {
      const b = emitFwc({ header, message: m });
      expect(frameLength(b, 0, b.length)).toBe(b.length);
      const r = parseFwc(b, 0, b.length);
      expect(r.error, JSON.stringify(m)).toBe(FwcError.None);
      expect(r.repr!.message).toEqual(m);
      expect(r.repr!.header).toEqual(header);
    }
  });

  it("keeps the dissector's layout: RWSP at 24, the command at 36, ports and addresses big-endian at 58 and 60", () => {
    const b = emitFwc({ header, message: MESSAGES[2]! });
    expect(b.readUInt32LE(0)).toBe(7); // client id, little-endian
    expect(b.readUInt32LE(8)).toBe(42); // server id
    expect(b[12]).toBe(3);
    expect(b[16]).toBe(9);
    expect(b.toString('ascii', 24, 28)).toBe('RWSP');
    expect(b.readUInt16BE(36)).toBe(0x071e);
    expect(b.readUInt16BE(58)).toBe(1755);
    expect(b.readUInt32BE(60)).toBe(0xc6130002);
    expect(b.readUInt16BE(72)).toBe(1034);
    expect(b.toString('latin1', 156, 168)).toBe('wmplayer.exe');
    expect(b[168]).toBe(0);
    const u = emitFwc({ header, message: MESSAGES[4]! });
    expect(u.readUInt16BE(36)).toBe(0x070b);
    expect(u.toString('latin1', 160, 172)).toBe('wmplayer.exe');
    const ack = emitFwc({ header, message: MESSAGES[5]! });
    expect(ack.readUInt32BE(44)).toBe(5);
    expect(ack.readUInt16BE(58)).toBe(7000);
    expect(isRefusal(refusalOf(0x070b))).toBe(true);
    expect(refusalOf(0x070b)).toBe(0x470b);
  });

  it('frames a stream: header first, then the whole message, several in one buffer', () => {
    const a = emitFwc({ header, message: MESSAGES[0]! });
    const b = emitFwc({ header, message: MESSAGES[6]! });
    const s = Buffer.concat([a, b]);
    expect(nextFwc(s, 0, 29)).toBeNull(); // fewer than 30 bytes: wait
    expect(nextFwc(s, 0, a.length - 1)).toBeNull(); // the header is there, the message not yet
    const first = nextFwc(s, 0, s.length)!;
    expect(first.length).toBe(a.length);
    const second = nextFwc(s, first.length, s.length - first.length)!;
    expect(second.repr!.message).toEqual(MESSAGES[6]);
  });

  it('refuses malformed messages with the reason, before reading a field', () => {
    const good = emitFwc({ header, message: MESSAGES[4]! });
    const noSig = Buffer.from(good);
    noSig.write('XXXX', 24, 'ascii');
    expect(frameLength(noSig, 0, noSig.length)).toBe(-FwcError.BadSignature);
    expect(parseFwc(noSig, 0, noSig.length).error).toBe(FwcError.BadSignature);
    const tooLong = Buffer.from(good);
    tooLong.writeUInt16BE(FWC_MAX_MESSAGE + 1, 28);
    expect(parseFwc(tooLong, 0, tooLong.length).error).toBe(FwcError.BadLength);
    const tooShort = Buffer.from(good);
    tooShort.writeUInt16BE(FWC_HEADER - 1, 28);
    expect(parseFwc(tooShort, 0, tooShort.length).error).toBe(FwcError.BadLength);
    const unknown = Buffer.from(good);
    unknown.writeUInt16BE(0x0999, 36);
    expect(parseFwc(unknown, 0, unknown.length)).toMatchObject({ error: FwcError.UnknownCommand, command: 0x0999 });
    // A UDP Bind cut before its fields end: a known command, a bad body.
    const cut = Buffer.from(good.subarray(0, 100));
    cut.writeUInt16BE(100, 28);
    expect(parseFwc(cut, 0, cut.length)).toMatchObject({ error: FwcError.BadBody, command: 0x070b });
    // The application name without its NUL.
    const noNul = Buffer.from(good);
    noNul[noNul.length - 1] = 0x41;
    expect(parseFwc(noNul, 0, noNul.length).error).toBe(FwcError.BadBody);
    // A refusal whose reason runs past the message.
    const ref = emitFwc({ header, message: MESSAGES[7]! });
    ref.writeUInt16BE(500, 42);
    expect(parseFwc(ref, 0, ref.length).error).toBe(FwcError.BadBody);
    expect(parseFwc(good, 0, 20).error).toBe(FwcError.Truncated);
    expect(() => emitFwc({ header, message: { command: FwcCommand.Hello, user: 'a\0b', application: '', computer: '' } })).toThrow(RangeError);
  });

  it('the relay header names the far end in front of the payload', () => {
    const out = Buffer.alloc(RELAY_HEADER + 3);
    emitRelay(out, 0, { addr: 0xc6130002, port: 1026 });
    out.write('abc', RELAY_HEADER);
    const r = newRelayRepr();
    expect(parseRelay(out, 0, out.length, r)).toBe(RelayError.None);
    expect(r).toEqual({ addr: 0xc6130002, port: 1026, payloadOffset: 8, payloadLength: 3 });
    expect(parseRelay(out, 0, 7, r)).toBe(RelayError.Truncated);
    out[0] = 9;
    expect(parseRelay(out, 0, out.length, r)).toBe(RelayError.BadVersion);
  });
});

describe('the MMS model', () => {
  const msgs: MmsMessage[] = [
    { command: MmsCommand.Connect, player: 'faultstack-mms-player/1.0' },
    { command: MmsCommand.ConnectReply, items: 6 },
    { command: MmsCommand.TransportUdp, port: 7000, addr: 0xc6130001 },
    { command: MmsCommand.TransportTcp },
    { command: MmsCommand.StartPlaying, item: 2, incarnation: 1 },
    { command: MmsCommand.StartedPlaying, item: 2, incarnation: 1, datagrams: 40, sourcePort: 1026 },
    { command: MmsCommand.EndOfItem, item: 2, incarnation: 1, datagrams: 40, sha256: Buffer.alloc(32, 7) },
    { command: MmsCommand.Close },
    { command: MmsCommand.Error, reason: 'no item 9' },
  ];

  it('control messages round-trip, also fed to the stream parser a byte at a time', () => {
    for (const m of msgs) {
      const b = emitMms(m);
      expect(mmsFrameLength(b, 0, b.length)).toBe(b.length);
      expect(parseMms(b, 0, b.length)).toEqual({ error: MmsError.None, message: m });
    }
    const all = Buffer.concat(msgs.map(emitMms));
    const st = new MmsStream();
    const got: MmsMessage[] = [];
    for (let i = 0; i < all.length; i++) for (const r of st.push(all.subarray(i, i + 1))) got.push(r.message!);
    expect(got).toEqual(msgs);
  });

  it("a media datagram carries MS-MMSP's data packet fields, little-endian, and a payload the player can check", () => {
    const p = mediaPayload(3, 17, 100);
    expect(p.equals(mediaPayload(3, 17, 100))).toBe(true);
    expect(p.equals(mediaPayload(3, 18, 100))).toBe(false);
    const d = emitMedia({ seq: 17, incarnation: 2, flags: 1, item: 3 }, p);
    expect(d.readUInt32LE(0)).toBe(17);
    expect(d[4]).toBe(2);
    expect(d.readUInt16LE(6)).toBe(d.length);
    expect(parseMedia(d, 0, d.length)).toMatchObject({ seq: 17, incarnation: 2, flags: 1, item: 3, payloadLength: 100 });
    expect(parseMedia(d, 0, d.length - 1)).toBeNull();
  });

  it('a stream that is not MMS stops parsing and says why', () => {
    const st = new MmsStream();
    expect(st.push(Buffer.from('GET / HTTP/1.0\r\n\r\n'))).toEqual([]);
    expect(st.error).toBe(MmsError.BadMagic);
  });
});
