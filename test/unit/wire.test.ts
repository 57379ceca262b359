/**
 * Wire formats against known bytes. The vectors are real packets captured with
 * `tcpdump -i lo -XX` on Linux 6.18 between two local processes (a Node TCP
 * client/server, a UDP send to a closed port, ping), and RFC 1071's example.
 *
 * Loopback never completes TCP/UDP checksums (CHECKSUM_PARTIAL): the captured
 * checksum field holds the folded pseudo-header sum. Each vector keeps that
 * field as captured (`partial`) and gives the complete checksum tcpdump computed
 * (`-vv`: "cksum 0xfe30 (incorrect -> 0xf803)").
 */
import { describe, expect, test } from 'vitest';
import {
  CHECKSUMS_VERIFIED,
  DeviceChecksum,
  SOFTWARE_CHECKSUMS,
  checksumAdd,
  checksumFinish,
  checksumFold,
  internetChecksum,
  pseudoHeaderSum,
} from '../../stack/wire/checksum';
import {
  Ipv4Error,
  Ipv4Field,
  Ipv4Packet,
  IP_FLAG_DF,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  emitIpv4Header,
  newIpv4Repr,
  parseIpv4Header,
} from '../../stack/wire/ipv4';
import { readU16, readU32, writeU16 } from '../../stack/wire/bytes';
import { ACK, FIN, PSH, SYN, TcpError, TcpField, TcpPacket, type TcpRepr, emitTcp, newTcpRepr, optionsLength, parseTcp } from '../../stack/wire/tcp';
import { asSeq, seqAdd, seqGe, seqGt, seqInWindow, seqLe, seqLt, seqMax, seqSize, seqSub, seqValue, tsGe, tsLe, tsLt } from '../../stack/wire/seq';
import { UdpError, UdpField, UdpPacket, emitUdp, newUdpRepr, parseUdp } from '../../stack/wire/udp';
import {
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  IcmpError,
  IcmpPacket,
  UNREACH_PORT,
  emitIcmp,
  newIcmpRepr,
  parseIcmp,
} from '../../stack/wire/icmp';
import { formatIpv4, parseCidr, parseIpv4, prefixMask, sameSubnet } from '../../stack/wire/addr';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const LO = 0x7f000001;

/** Overwrites the 16-bit field at `off` (a copy). */
function withU16(b: Buffer, off: number, v: number): Buffer {
  const c = Buffer.from(b);
  writeU16(c, off, v);
  return c;
}

// 127.0.0.1.54126 > 127.0.0.1.9998: Flags [S], seq 151613346, win 65495,
// options [mss 65495,sackOK,TS val 3629714553 ecr 0,nop,wscale 10]
const SYN_PKT = hex(`4500 003c 7ea4 4000 4006 be15 7f00 0001 7f00 0001
  d36e 270e 0909 6fa2 0000 0000 a002 ffd7 fe30 0000
  0204 ffd7 0402 080a d859 0c79 0000 0000 0103 030a`);
const SYN_CSUM = 0xf803;
// 127.0.0.1.9998 > 127.0.0.1.54126: Flags [S.], seq 3291249469, ack 151613347, win 65483,
// options [mss 65495,sackOK,TS val 1865390140 ecr 3629714553,nop,wscale 10]
const SYNACK_PKT = hex(`4500 003c 0000 4000 4006 3cba 7f00 0001 7f00 0001
  270e d36e c42c 7b3d 0909 6fa3 a012 ffcb fe30 0000
  0204 ffd7 0402 080a 6f2f 983c d859 0c79 0103 030a`);
const SYNACK_CSUM = 0xb128;
// 127.0.0.1.54126 > 127.0.0.1.9998: Flags [P.], seq 1:6, ack 1, win 64,
// options [nop,nop,TS val 3629714555 ecr 1865390140], length 5 ("hello")
const DATA_PKT = hex(`4500 0039 7ea6 4000 4006 be16 7f00 0001 7f00 0001
  d36e 270e 0909 6fa3 c42c 7b3e 8018 0040 fe2d 0000
  0101 080a d859 0c7b 6f2f 983c 6865 6c6c 6f`);
const DATA_CSUM = 0x95c6;
// 127.0.0.1.9998 > 127.0.0.1.54126: Flags [F.], seq 1, ack 6, win 64, options [nop,nop,TS val 1865390142 ecr 3629714555]
const FIN_PKT = hex(`4500 0034 993a 4000 4006 a387 7f00 0001 7f00 0001
  270e d36e c42c 7b3e 0909 6fa8 8011 0040 fe28 0000
  0101 080a 6f2f 983e d859 0c7b`);
const FIN_CSUM = 0xd99d;
// 127.0.0.1.52688 > 127.0.0.1.9999: UDP, length 10 ("faultstack")
const UDP_PKT = hex(`4500 0026 d37a 4000 4011 694a 7f00 0001 7f00 0001
  cdd0 270f 0012 fe25 6661 756c 7473 7461 636b`);
const UDP_CSUM = 0xe4d9;
// 127.0.0.1 > 127.0.0.1: ICMP 127.0.0.1 udp port 9999 unreachable (quotes UDP_PKT whole)
const PORT_UNREACH_PKT = hex(`45c0 0042 6d29 0000 4001 0ed0 7f00 0001 7f00 0001
  0303 e1d6 0000 0000
  4500 0026 d37a 4000 4011 694a 7f00 0001 7f00 0001 cdd0 270f 0012 fe25 6661 756c 7473 7461 636b`);
// ping: 127.0.0.1 > 127.0.0.1: ICMP echo request, id 19675, seq 1, length 24, and its reply
export const ECHO_REQ_PKT = hex(`4500 002c 6d2b 4000 4001 cfa3 7f00 0001 7f00 0001
  0800 5528 4cdb 0001 ff4c 026b 0000 0000 4643 0e00 0000 0000`);
export const ECHO_REP_PKT = hex(`4500 002c 6d2c 0000 4001 0fa3 7f00 0001 7f00 0001
  0000 5d28 4cdb 0001 ff4c 026b 0000 0000 4643 0e00 0000 0000`);

/** The straightforward RFC 1071 loop, as a reference for the optimised one. */
function referenceChecksum(b: Uint8Array, off: number, len: number): number {
  let sum = 0;
  for (let i = 0; i < len; i += 2) {
    const hi = b[off + i];
    const lo = i + 1 < len ? b[off + i + 1] : 0;
    sum += (hi << 8) | lo;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

describe('Internet checksum (RFC 1071)', () => {
  test("RFC 1071 section 3's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d", () => {
    const b = hex('0001 f203 f4f5 f6f7');
    expect(checksumFold(checksumAdd(b, 0, 8))).toBe(0xddf2);
    expect(internetChecksum(b, 0, 8)).toBe(0x220d);
    // Placing the checksum in the data makes the whole sum verify to zero.
    const withSum = Buffer.concat([b, hex('220d')]);
    expect(internetChecksum(withSum, 0, 10)).toBe(0);
  });

  test('odd lengths pad with a zero byte; offsets are honoured; sums split at even boundaries add up', () => {
    const b = hex('ff 0001 f203 f4f5 f6f7 ab');
    expect(internetChecksum(b, 1, 8)).toBe(0x220d);
    expect(internetChecksum(b, 1, 9)).toBe(referenceChecksum(b, 1, 9));
    expect(internetChecksum(hex('ab'), 0, 1)).toBe(~0xab00 & 0xffff);
    const s1 = checksumAdd(b, 1, 4);
    expect(checksumFinish(checksumAdd(b, 5, 5, s1))).toBe(internetChecksum(b, 1, 9));
    expect(internetChecksum(b, 0, 0)).toBe(0xffff);
  });

  test('matches the reference loop on seeded random buffers of every length up to 1600 and at every alignment', () => {
    let s = 12345;
    const rnd = () => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s >>> 24;
    };
    const big = Buffer.alloc(1700);
    for (let i = 0; i < big.length; i++) big[i] = rnd();
    // Every length 0..1600 at every offset 0..7 (whatever word size the sum reads in).
    const wrong: string[] = [];
    let checked = 0;
    for (let len = 0; len <= 1600; len++) {
      for (let off = 0; off < 8; off++) {
        checked++;
        const got = internetChecksum(big, off, len),
          want = referenceChecksum(big, off, len);
        if (got !== want) wrong.push(`len ${len} off ${off}: ${got.toString(16)} != ${want.toString(16)}`);
      }
    }
    expect(checked).toBe(1601 * 8);
    expect(wrong.slice(0, 10)).toEqual([]);
    // All-ones data: the sum never stops carrying.
    const ff = Buffer.alloc(65536, 0xff);
    expect(internetChecksum(ff, 0, ff.length)).toBe(referenceChecksum(ff, 0, ff.length));
  });

  test('the pseudo-header sum for 127.0.0.1 -> 127.0.0.1 is what Linux leaves in a CHECKSUM_PARTIAL field', () => {
    expect(checksumFold(pseudoHeaderSum(LO, LO, PROTO_TCP, 40))).toBe(0xfe30);
    expect(checksumFold(pseudoHeaderSum(LO, LO, PROTO_UDP, 18))).toBe(0xfe25);
  });
});

describe('IPv4 header (RFC 791)', () => {
  test('parses every field of a captured header and emits the same 20 bytes back', () => {
    const r = newIpv4Repr();
    expect(parseIpv4Header(SYN_PKT, 0, SYN_PKT.length, r)).toBe(Ipv4Error.None);
    expect(r).toMatchObject({
      tos: 0,
      totalLength: 60,
      headerLength: 20,
      ident: 0x7ea4,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      ttl: 64,
      protocol: PROTO_TCP,
      src: LO,
      dst: LO,
    });
    const out = Buffer.alloc(20);
    expect(emitIpv4Header(out, 0, r)).toBe(20);
    expect(out).toEqual(SYN_PKT.subarray(0, 20));

    // TOS 0xc0, no DF, ICMP (the kernel's port unreachable).
    expect(parseIpv4Header(PORT_UNREACH_PKT, 0, PORT_UNREACH_PKT.length, r)).toBe(Ipv4Error.None);
    expect(r).toMatchObject({ tos: 0xc0, totalLength: 66, ident: 0x6d29, dontFragment: false, protocol: PROTO_ICMP, ttl: 64 });
    emitIpv4Header(out, 0, r);
    expect(out).toEqual(PORT_UNREACH_PKT.subarray(0, 20));
  });

  test('fragment fields: MF and a 13-bit offset in 8-byte units round-trip', () => {
    const r = {
      ...newIpv4Repr(),
      src: 0xc6120001,
      dst: 0xc6120002,
      protocol: PROTO_UDP,
      ident: 0xbeef,
      moreFragments: true,
      fragmentOffset: 1480,
      totalLength: 1500,
    };
    const b = Buffer.alloc(1500);
    emitIpv4Header(b, 0, r);
    expect(b.subarray(0, 20).toString('hex')).toBe('450005dcbeef20b94011' + b.subarray(10, 12).toString('hex') + 'c6120001c6120002');
    expect(readU16(b, 6)).toBe(0x2000 | (1480 / 8));
    const p = newIpv4Repr();
    expect(parseIpv4Header(b, 0, b.length, p)).toBe(Ipv4Error.None);
    expect(p).toMatchObject({ moreFragments: true, dontFragment: false, fragmentOffset: 1480, ident: 0xbeef });
    // The highest offset the field can hold.
    emitIpv4Header(b, 0, { ...r, moreFragments: false, dontFragment: true, fragmentOffset: 8191 * 8 });
    expect(readU16(b, 6)).toBe(IP_FLAG_DF | 8191);
    parseIpv4Header(b, 0, b.length, p);
    expect(p.fragmentOffset).toBe(65528);
  });

  test('link padding after the datagram is allowed: the total length field wins', () => {
    const padded = Buffer.concat([UDP_PKT, Buffer.alloc(8)]);
    const r = newIpv4Repr();
    expect(parseIpv4Header(padded, 0, padded.length, r)).toBe(Ipv4Error.None);
    expect(r.totalLength).toBe(38);
  });

  test('header options: IHL > 5 is accepted and the header length reported', () => {
    // Add 4 bytes of options (NOP NOP NOP EOL) to the UDP packet's header.
    const b = Buffer.concat([UDP_PKT.subarray(0, 20), hex('01010100'), UDP_PKT.subarray(20)]);
    b[0] = 0x46;
    writeU16(b, 2, b.length);
    writeU16(b, 10, 0);
    writeU16(b, 10, internetChecksum(b, 0, 24));
    const r = newIpv4Repr();
    expect(parseIpv4Header(b, 0, b.length, r)).toBe(Ipv4Error.None);
    expect(r.headerLength).toBe(24);
    expect(r.totalLength).toBe(42);
  });

  test('every validation error', () => {
    const r = newIpv4Repr();
    const p = UDP_PKT;
    expect(parseIpv4Header(p, 0, 19, r)).toBe(Ipv4Error.Truncated);
    expect(parseIpv4Header(Buffer.alloc(0), 0, 0, r)).toBe(Ipv4Error.Truncated);
    const v6 = Buffer.from(p);
    v6[0] = 0x65;
    expect(parseIpv4Header(v6, 0, v6.length, r)).toBe(Ipv4Error.BadVersion);
    const ihl4 = Buffer.from(p);
    ihl4[0] = 0x44;
    expect(parseIpv4Header(ihl4, 0, ihl4.length, r)).toBe(Ipv4Error.BadHeaderLength);
    const ihlLong = Buffer.from(p);
    ihlLong[0] = 0x4f; // 60 bytes of header in a 38-byte packet
    expect(parseIpv4Header(ihlLong, 0, ihlLong.length, r)).toBe(Ipv4Error.BadHeaderLength);
    expect(parseIpv4Header(withU16(p, 2, 19), 0, p.length, r)).toBe(Ipv4Error.BadTotalLength);
    expect(parseIpv4Header(withU16(p, 2, 39), 0, p.length, r)).toBe(Ipv4Error.BadTotalLength);
    expect(parseIpv4Header(withU16(p, 2, 0), 0, p.length, r)).toBe(Ipv4Error.BadTotalLength);
    // Truncated by the link: the header claims more than arrived.
    expect(parseIpv4Header(p, 0, 30, r)).toBe(Ipv4Error.BadTotalLength);
    const bad = Buffer.from(p);
    bad[8] = 63; // TTL changed, checksum not updated
    expect(parseIpv4Header(bad, 0, bad.length, r)).toBe(Ipv4Error.BadChecksum);
    expect(parseIpv4Header(withU16(p, 10, readU16(p, 10) ^ 1), 0, p.length, r)).toBe(Ipv4Error.BadChecksum);
    // ...unless the device vouched for it.
    expect(parseIpv4Header(bad, 0, bad.length, r, CHECKSUMS_VERIFIED)).toBe(Ipv4Error.None);
    // A parse error leaves no partial result the caller could trust: the checks come first.
    const fresh = newIpv4Repr();
    parseIpv4Header(bad, 0, bad.length, fresh);
    expect(fresh).toEqual(newIpv4Repr());
  });
});

/** Parses the TCP part of one of the captured IPv4 packets, with its checksum completed. */
function parseVector(pkt: Buffer, csum: number) {
  const fixed = withU16(pkt, 20 + 16, csum);
  const seg = newTcpRepr();
  const err = parseTcp(fixed, 20, fixed.length - 20, LO, LO, seg);
  return { fixed, seg, err };
}

/** A parsed segment to emit again: the same representation, without the SYN-only options unless asked. */
function reprOf(seg: TcpRepr, withSynOpts: boolean): TcpRepr {
  return { ...seg, sack: seg.sack, mss: withSynOpts ? seg.mss : -1, wscale: withSynOpts ? seg.wscale : -1 };
}

/** A device that completes TCP checksums (virtio NEEDS_CSUM). */
const TCP_FILLED = { ...SOFTWARE_CHECKSUMS, tcp: DeviceChecksum.Fills };

describe('TCP header and options (RFC 9293, RFC 7323, RFC 2018)', () => {
  test("Linux's SYN: every field and option", () => {
    const { seg, err } = parseVector(SYN_PKT, SYN_CSUM);
    expect(err).toBe(TcpError.None);
    expect(seg).toMatchObject({
      srcPort: 54126,
      dstPort: 9998,
      seq: 151613346,
      ack: 0,
      flags: SYN,
      window: 65495,
      urgent: 0,
      headerLength: 40,
      payloadOffset: 60,
      payloadLength: 0,
      mss: 65495,
      wscale: 10,
      sackPermitted: true,
      hasTimestamp: true,
      tsVal: 3629714553,
      tsEcr: 0,
      sackCount: 0,
    });
  });

  test("Linux's SYN is emitted back byte for byte (option layout MSS, SACK-perm+TS, NOP WS: 20 option bytes)", () => {
    const { fixed, seg } = parseVector(SYN_PKT, SYN_CSUM);
    const o = reprOf(seg, true);
    expect(optionsLength(o)).toBe(20);
    const out = Buffer.alloc(60);
    expect(emitTcp(out, 20, o, LO, LO)).toBe(40);
    expect(o.headerLength).toBe(40);
    expect(out.subarray(20).toString('hex')).toBe(fixed.subarray(20).toString('hex'));
    // With partial (offloaded) checksums the bytes are exactly what loopback carried.
    emitTcp(out, 20, o, LO, LO, TCP_FILLED);
    expect(out.subarray(20).toString('hex')).toBe(SYN_PKT.subarray(20).toString('hex'));
  });

  test("Linux's SYN-ACK round-trips", () => {
    const { fixed, seg, err } = parseVector(SYNACK_PKT, SYNACK_CSUM);
    expect(err).toBe(TcpError.None);
    expect(seg).toMatchObject({
      srcPort: 9998,
      dstPort: 54126,
      seq: 3291249469,
      ack: 151613347,
      flags: SYN | ACK,
      window: 65483,
      mss: 65495,
      wscale: 10,
      sackPermitted: true,
      hasTimestamp: true,
      tsVal: 1865390140,
      tsEcr: 3629714553,
    });
    const out = Buffer.alloc(60);
    emitTcp(out, 20, reprOf(seg, true), LO, LO);
    expect(out.subarray(20)).toEqual(fixed.subarray(20));
  });

  test('a data segment with a timestamp (NOP NOP TS) and payload round-trips', () => {
    const { fixed, seg, err } = parseVector(DATA_PKT, DATA_CSUM);
    expect(err).toBe(TcpError.None);
    expect(seg).toMatchObject({
      seq: 151613347,
      ack: 3291249470,
      flags: PSH | ACK,
      window: 64,
      headerLength: 32,
      payloadOffset: 52,
      payloadLength: 5,
      mss: -1,
      wscale: -1,
      sackPermitted: false,
      hasTimestamp: true,
      tsVal: 3629714555,
      tsEcr: 1865390140,
    });
    expect(fixed.subarray(seg.payloadOffset).toString()).toBe('hello');
    const out = Buffer.alloc(fixed.length);
    fixed.copy(out, 52, 52);
    expect(emitTcp(out, 20, reprOf(seg, false), LO, LO)).toBe(32);
    expect(out.subarray(20)).toEqual(fixed.subarray(20));
  });

  test('a FIN round-trips', () => {
    const { fixed, seg, err } = parseVector(FIN_PKT, FIN_CSUM);
    expect(err).toBe(TcpError.None);
    expect(seg.flags).toBe(FIN | ACK);
    const out = Buffer.alloc(fixed.length);
    emitTcp(out, 20, reprOf(seg, false), LO, LO);
    expect(out.subarray(20)).toEqual(fixed.subarray(20));
  });

  test('SACK blocks (RFC 2018 3): NOP NOP TS, NOP NOP SACK kind 5 len 2+8n, parsed in order and emitted back', () => {
    // An ACK as Linux lays it out: ack 1000, TS, then two SACK blocks.
    const tcp = hex(`0050 c000 0000 0064 0000 03e8 d010 0200 0000 0000
      0101 080a 0000 0001 0000 0002
      0101 0512 0000 07d0 0000 0bb8 0000 0fa0 0000 1388`);
    writeU16(tcp, 16, checksumFinish(checksumAdd(tcp, 0, tcp.length, pseudoHeaderSum(1, 2, PROTO_TCP, tcp.length))));
    const seg = newTcpRepr();
    expect(parseTcp(tcp, 0, tcp.length, 1, 2, seg)).toBe(TcpError.None);
    expect(seg.headerLength).toBe(52);
    expect(seg.sackCount).toBe(2);
    expect(Array.from(seg.sack.subarray(0, 4))).toEqual([2000, 3000, 4000, 5000]);
    expect(seg).toMatchObject({ hasTimestamp: true, tsVal: 1, tsEcr: 2 });
    const out = Buffer.alloc(tcp.length);
    emitTcp(out, 0, reprOf(seg, false), 1, 2);
    expect(out).toEqual(tcp);
    // Four blocks without a timestamp (the most that fit), sequence numbers near the wrap.
    const o: TcpRepr = {
      ...newTcpRepr(),
      srcPort: 1,
      dstPort: 2,
      seq: asSeq(3),
      ack: asSeq(4),
      flags: ACK,
      window: 5,
      sackCount: 4,
      sack: new Uint32Array([0xfffffff0, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70]),
    };
    expect(optionsLength(o)).toBe(36);
    const b = Buffer.alloc(56);
    expect(emitTcp(b, 0, o, 1, 2)).toBe(56);
    expect(parseTcp(b, 0, 56, 1, 2, seg)).toBe(TcpError.None);
    expect(seg.sackCount).toBe(4);
    expect(Array.from(seg.sack)).toEqual(Array.from(o.sack));
  });

  test('SACK-permitted without timestamps is NOP NOP SACKOK; unknown options are skipped; EOL ends the list', () => {
    const o: TcpRepr = { ...newTcpRepr(), srcPort: 1, dstPort: 2, seq: asSeq(3), flags: SYN, window: 5, mss: 1460, wscale: 7, sackPermitted: true };
    const b = Buffer.alloc(32);
    expect(emitTcp(b, 0, o, 1, 2)).toBe(32);
    expect(b.subarray(20).toString('hex')).toBe('020405b4' + '01010402' + '01030307');
    // Kind 30 (MPTCP, length 4) is skipped; after EOL nothing is read (the bytes after it are garbage).
    const t = hex(`0001 0002 0000 0003 0000 0000 8002 1000 0000 0000  1e04 0000 0204 0218 0000 ffff 0000 0000`);
    writeU16(t, 16, checksumFinish(checksumAdd(t, 0, t.length, pseudoHeaderSum(1, 2, PROTO_TCP, t.length))));
    const seg = newTcpRepr();
    expect(parseTcp(t, 0, t.length, 1, 2, seg)).toBe(TcpError.None);
    expect(seg.mss).toBe(0x218);
    expect(seg.wscale).toBe(-1);
  });

  test('options are reset between parses (the representation is reused)', () => {
    const seg = newTcpRepr();
    parseTcp(withU16(SYN_PKT, 36, SYN_CSUM), 20, 40, LO, LO, seg);
    expect(seg.mss).toBe(65495);
    parseTcp(withU16(FIN_PKT, 36, FIN_CSUM), 20, 32, LO, LO, seg);
    expect(seg).toMatchObject({ mss: -1, wscale: -1, sackPermitted: false, sackCount: 0, hasTimestamp: true });
  });

  test('every validation error: truncated, bad data offset, bad checksum, bad option lengths', () => {
    const seg = newTcpRepr();
    const { fixed } = parseVector(SYN_PKT, SYN_CSUM);
    const tcp = (b: Buffer) => parseTcp(b, 20, b.length - 20, LO, LO, seg);
    expect(parseTcp(fixed, 20, 19, LO, LO, seg)).toBe(TcpError.Truncated);
    const off4 = Buffer.from(fixed);
    off4[32] = 0x40;
    expect(tcp(off4)).toBe(TcpError.BadOffset);
    const off15 = Buffer.from(fixed);
    off15[32] = 0xf0; // 60-byte header in a 40-byte segment
    expect(tcp(off15)).toBe(TcpError.BadOffset);
    expect(parseTcp(fixed, 20, 39, LO, LO, seg)).toBe(TcpError.BadOffset);
    expect(tcp(SYN_PKT)).toBe(TcpError.BadChecksum); // the partial checksum as loopback carried it
    const flipped = Buffer.from(fixed);
    flipped[59] ^= 1;
    expect(tcp(flipped)).toBe(TcpError.BadChecksum);
    // The checksum covers the pseudo-header: the same bytes to another address fail.
    expect(parseTcp(fixed, 20, 40, LO, LO + 1, seg)).toBe(TcpError.BadChecksum);
    expect(parseTcp(SYN_PKT, 20, 40, LO, LO, seg, CHECKSUMS_VERIFIED)).toBe(TcpError.None);

    /** A 20-byte header followed by `opts` (padded to 4 with EOL), checksummed. */
    const withOpts = (opts: string) => {
      const o = hex(opts);
      const olen = (o.length + 3) & ~3;
      const b = Buffer.alloc(20 + olen);
      b[12] = ((20 + olen) / 4) << 4;
      b[13] = ACK;
      o.copy(b, 20);
      writeU16(b, 16, checksumFinish(checksumAdd(b, 0, b.length, pseudoHeaderSum(1, 2, PROTO_TCP, b.length))));
      return parseTcp(b, 0, b.length, 1, 2, seg);
    };
    expect(withOpts('020405b4')).toBe(TcpError.None);
    expect(withOpts('0201')).toBe(TcpError.BadOption); // length < 2
    expect(withOpts('0200')).toBe(TcpError.BadOption); // length 0 (would loop forever)
    expect(withOpts('020305')).toBe(TcpError.BadOption); // MSS must be 4
    expect(withOpts('010101 02')).toBe(TcpError.BadOption); // kind with no length byte at the end
    expect(withOpts('0308 07')).toBe(TcpError.BadOption); // runs past the header
    expect(withOpts('030407 00')).toBe(TcpError.BadOption); // window scale must be 3
    expect(withOpts('0403')).toBe(TcpError.BadOption); // SACK-permitted must be 2
    expect(withOpts('0808 00000001 0000')).toBe(TcpError.BadOption); // timestamps must be 10
    expect(withOpts('050b 00000001 00000002 00')).toBe(TcpError.BadOption); // SACK: 2 + 8n
    expect(withOpts('1e06 0000')).toBe(TcpError.BadOption); // unknown kind running past the end
  });

  test('sequence arithmetic wraps modulo 2^32 (RFC 9293 3.4)', () => {
    const S = asSeq;
    expect(seqLt(S(0xfffffff0), S(0x10))).toBe(true);
    expect(seqGt(S(0x10), S(0xfffffff0))).toBe(true);
    expect(seqLe(S(5), S(5)) && seqGe(S(5), S(5))).toBe(true);
    expect(seqLt(S(5), S(5))).toBe(false);
    expect(seqValue(seqAdd(S(0xffffffff), 2))).toBe(1);
    expect(seqValue(seqAdd(S(1), -2))).toBe(0xffffffff);
    expect(seqSub(S(0x10), S(0xfffffff0))).toBe(0x20);
    expect(seqSub(S(0xfffffff0), S(0x10))).toBe(-0x20);
    expect(seqSize(S(0xfffffff0), S(0x10))).toBe(0x20);
    expect(seqValue(seqMax(S(0xfffffff0), S(0x10)))).toBe(0x10);
    // asSeq folds any integer into 32 bits, as the header field holds it.
    expect(seqValue(S(-1))).toBe(0xffffffff);
    expect(seqValue(S(0x100000005))).toBe(5);
    // A window that wraps: [0xfffffff0, 0xfffffff0 + 0x40) holds 0xfffffff0 and 0x2f, not 0x30.
    expect(seqInWindow(S(0xfffffff0), S(0xfffffff0), 0x40)).toBe(true);
    expect(seqInWindow(S(0x2f), S(0xfffffff0), 0x40)).toBe(true);
    expect(seqInWindow(S(0x30), S(0xfffffff0), 0x40)).toBe(false);
    expect(seqInWindow(S(0xffffffef), S(0xfffffff0), 0x40)).toBe(false);
    expect(seqInWindow(S(5), S(5), 0)).toBe(false);
    // Half the space apart: the comparison is antisymmetric.
    expect(seqLt(S(0), S(0x7fffffff))).toBe(true);
    expect(seqGt(S(0x7fffffff), S(0))).toBe(true);
    // Timestamps wrap alike (RFC 7323 5.3).
    expect(tsLt(0xfffffff0, 0x10) && tsLe(0x10, 0x10) && tsGe(0x10, 0xfffffff0)).toBe(true);
  });
});

describe('UDP (RFC 768)', () => {
  test('the captured datagram: every field; emitted back with the complete checksum', () => {
    const fixed = withU16(UDP_PKT, 26, UDP_CSUM);
    const r = newUdpRepr();
    expect(parseUdp(fixed, 20, 18, LO, LO, r)).toBe(UdpError.None);
    expect(r).toEqual({ srcPort: 52688, dstPort: 9999, payloadOffset: 28, payloadLength: 10 });
    expect(fixed.subarray(28).toString()).toBe('faultstack');
    const out = Buffer.alloc(18);
    Buffer.from('faultstack').copy(out, 8);
    expect(emitUdp(out, 0, { ...newUdpRepr(), srcPort: 52688, dstPort: 9999, payloadLength: 10 }, LO, LO)).toBe(18);
    expect(out).toEqual(fixed.subarray(20));
  });

  test('a computed checksum of 0 is sent as ffff; a zero checksum field means none and is accepted', () => {
    // Find a payload whose checksum comes out 0: choose the last two bytes to make it so.
    const out = Buffer.alloc(12);
    out.write('ab', 8);
    emitUdp(out, 0, { ...newUdpRepr(), srcPort: 3, dstPort: 4, payloadLength: 4 }, 1, 2);
    const c = readU16(out, 6);
    // Adding c to the data drives the one's complement sum to ffff, i.e. checksum 0.
    writeU16(out, 10, c);
    emitUdp(out, 0, { ...newUdpRepr(), srcPort: 3, dstPort: 4, payloadLength: 4 }, 1, 2);
    expect(readU16(out, 6)).toBe(0xffff);
    const r = newUdpRepr();
    expect(parseUdp(out, 0, 12, 1, 2, r)).toBe(UdpError.None);
    const none = withU16(UDP_PKT, 26, 0);
    expect(parseUdp(none, 20, 18, LO, LO, r)).toBe(UdpError.None);
  });

  test('every validation error', () => {
    const r = newUdpRepr();
    const fixed = withU16(UDP_PKT, 26, UDP_CSUM);
    expect(parseUdp(fixed, 20, 7, LO, LO, r)).toBe(UdpError.Truncated);
    expect(parseUdp(withU16(fixed, 24, 7), 20, 18, LO, LO, r)).toBe(UdpError.BadLength);
    expect(parseUdp(withU16(fixed, 24, 19), 20, 18, LO, LO, r)).toBe(UdpError.BadLength);
    expect(parseUdp(UDP_PKT, 20, 18, LO, LO, r)).toBe(UdpError.BadChecksum);
    expect(parseUdp(fixed, 20, 18, LO, LO + 1, r)).toBe(UdpError.BadChecksum);
    expect(parseUdp(UDP_PKT, 20, 18, LO, LO, r, CHECKSUMS_VERIFIED)).toBe(UdpError.None);
    // Trailing bytes beyond the UDP length are not payload.
    const padded = Buffer.concat([fixed, Buffer.alloc(3)]);
    expect(parseUdp(padded, 20, 21, LO, LO, r)).toBe(UdpError.None);
    expect(r.payloadLength).toBe(10);
  });
});

describe('ICMP (RFC 792)', () => {
  test('echo request and reply from ping: fields, checksum, and the reply built from the request', () => {
    const m = newIcmpRepr();
    expect(parseIcmp(ECHO_REQ_PKT, 20, 24, m)).toBe(IcmpError.None);
    expect(m).toMatchObject({ type: ICMP_ECHO_REQUEST, code: 0, ident: 19675, seq: 1, bodyOffset: 28, bodyLength: 16 });
    const reply = Buffer.from(ECHO_REQ_PKT);
    expect(emitIcmp(reply, 20, { ...m, type: ICMP_ECHO_REPLY })).toBe(24);
    expect(reply.subarray(20)).toEqual(ECHO_REP_PKT.subarray(20));
    const req = Buffer.from(ECHO_REP_PKT);
    emitIcmp(req, 20, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 19675, seq: 1, bodyLength: 16 });
    expect(req.subarray(20)).toEqual(ECHO_REQ_PKT.subarray(20));
    expect(parseIcmp(ECHO_REP_PKT, 20, 24, m)).toBe(IcmpError.None);
    expect(m.type).toBe(ICMP_ECHO_REPLY);
  });

  test("the kernel's port unreachable: type 3 code 3, the quoted datagram in the body", () => {
    const m = newIcmpRepr();
    expect(parseIcmp(PORT_UNREACH_PKT, 20, 46, m)).toBe(IcmpError.None);
    expect(m).toMatchObject({ type: ICMP_DEST_UNREACH, code: UNREACH_PORT, nextHopMtu: 0, bodyOffset: 28, bodyLength: 38 });
    expect(PORT_UNREACH_PKT.subarray(28)).toEqual(UDP_PKT);
    const out = Buffer.from(PORT_UNREACH_PKT);
    emitIcmp(out, 20, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: UNREACH_PORT, bodyLength: 38 });
    expect(out).toEqual(PORT_UNREACH_PKT);
  });

  test('fragmentation needed carries the next-hop MTU in the low 16 bits (RFC 1191)', () => {
    const b = Buffer.alloc(8 + 28);
    emitIcmp(b, 0, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: 4, nextHopMtu: 1400, bodyLength: 28 });
    expect(b.subarray(0, 8).toString('hex').slice(8)).toBe('00000578');
    const m = newIcmpRepr();
    expect(parseIcmp(b, 0, b.length, m)).toBe(IcmpError.None);
    expect(m.nextHopMtu).toBe(1400);
  });

  test('truncated and bad checksum are refused', () => {
    const m = newIcmpRepr();
    expect(parseIcmp(ECHO_REQ_PKT, 20, 7, m)).toBe(IcmpError.Truncated);
    const bad = Buffer.from(ECHO_REQ_PKT);
    bad[43] ^= 0x80;
    expect(parseIcmp(bad, 20, 24, m)).toBe(IcmpError.BadChecksum);
    // A body cut short no longer sums to zero.
    expect(parseIcmp(ECHO_REQ_PKT, 20, 18, m)).toBe(IcmpError.BadChecksum);
    // ...unless the device vouched for the checksum.
    expect(parseIcmp(bad, 20, 24, m, CHECKSUMS_VERIFIED)).toBe(IcmpError.None);
  });
});

describe('views (field tables over the bytes, lengths checked once)', () => {
  test('Ipv4Packet: wrap checks the header fits, then every field reads what parse reads; writes land in place', () => {
    const v = new Ipv4Packet();
    expect(v.wrap(SYN_PKT, 0, 19)).toBe(Ipv4Error.Truncated);
    const ihlLong = Buffer.from(SYN_PKT);
    ihlLong[0] = 0x4f; // 60 bytes of header in 40 bytes
    expect(v.wrap(ihlLong, 0, 40)).toBe(Ipv4Error.BadHeaderLength);
    const ihl4 = Buffer.from(SYN_PKT);
    ihl4[0] = 0x44;
    expect(v.wrap(ihl4, 0, ihl4.length)).toBe(Ipv4Error.BadHeaderLength);
    // An ICMP quote holds the header and 8 bytes: a view needs no more.
    const quote = PORT_UNREACH_PKT.subarray(28, 28 + 28);
    expect(v.wrap(quote, 0, quote.length)).toBe(Ipv4Error.None);
    const r = newIpv4Repr();
    expect(parseIpv4Header(quote, 0, quote.length, r)).toBe(Ipv4Error.BadTotalLength); // says 38, holds 28
    expect([v.version, v.headerLength, v.totalLength, v.protocol, v.src, v.dst, v.payloadOffset, v.payloadLength]).toEqual([
      4,
      20,
      38,
      PROTO_UDP,
      LO,
      LO,
      20,
      8,
    ]);
    expect(v.verifyChecksum()).toBe(true);
    // Every field against the representation of the same header.
    const b = Buffer.from(SYN_PKT);
    expect(parseIpv4Header(b, 0, b.length, r)).toBe(Ipv4Error.None);
    expect(v.wrap(b, 0, b.length)).toBe(Ipv4Error.None);
    expect({
      tos: v.tos,
      totalLength: v.totalLength,
      headerLength: v.headerLength,
      ident: v.ident,
      dontFragment: v.dontFragment,
      moreFragments: v.moreFragments,
      fragmentOffset: v.fragmentOffset,
      ttl: v.ttl,
      protocol: v.protocol,
      src: v.src,
      dst: v.dst,
    }).toEqual(r);
    expect(v.checksum).toBe(0xbe15);
    v.totalLength = 1234;
    expect(readU16(b, Ipv4Field.LENGTH)).toBe(1234);
    expect(v.verifyChecksum()).toBe(false);
    v.fillChecksum();
    expect(v.verifyChecksum()).toBe(true);
    expect(parseIpv4Header(b, 0, b.length, r)).toBe(Ipv4Error.BadTotalLength); // the checksum is right, the buffer short
  });

  test('TcpPacket: wrap checks the data offset; fields, the sequence number as a Seq, and the checksum over the pseudo-header', () => {
    const v = new TcpPacket();
    const seg = Buffer.from(withU16(DATA_PKT, 20 + TcpField.CHECKSUM, DATA_CSUM).subarray(20));
    expect(v.wrap(seg, 0, 19)).toBe(TcpError.Truncated);
    expect(v.wrap(seg, 0, 31)).toBe(TcpError.BadOffset); // the data offset says 32
    expect(v.wrap(seg, 0, seg.length)).toBe(TcpError.None);
    const r = newTcpRepr();
    expect(parseTcp(seg, 0, seg.length, LO, LO, r)).toBe(TcpError.None);
    expect([v.srcPort, v.dstPort, v.seq, v.ack, v.flags, v.window, v.urgent, v.headerLength, v.payloadOffset, v.payloadLength]).toEqual([
      r.srcPort,
      r.dstPort,
      r.seq,
      r.ack,
      r.flags,
      r.window,
      r.urgent,
      r.headerLength,
      r.payloadOffset,
      r.payloadLength,
    ]);
    expect(v.verifyChecksum(LO, LO)).toBe(true);
    expect(v.verifyChecksum(LO, LO + 1)).toBe(false); // the pseudo-header counts
    v.seq = seqAdd(v.seq, 5);
    expect(readU32(seg, TcpField.SEQ_NUM)).toBe(151613347 + 5);
    expect(v.verifyChecksum(LO, LO)).toBe(false);
    v.fillChecksum(LO, LO);
    expect(v.verifyChecksum(LO, LO)).toBe(true);
    expect(parseTcp(seg, 0, seg.length, LO, LO, r)).toBe(TcpError.None);
    expect(seqValue(r.seq)).toBe(151613352);
  });

  test('UdpPacket and IcmpPacket: wrap checks what the fields need', () => {
    const u = new UdpPacket();
    const dgram = withU16(UDP_PKT, 26, UDP_CSUM).subarray(20);
    expect(u.wrap(dgram, 0, 7)).toBe(UdpError.Truncated);
    expect(u.wrap(withU16(dgram, UdpField.LENGTH, 19), 0, 18)).toBe(UdpError.BadLength);
    expect(u.wrap(dgram, 0, dgram.length)).toBe(UdpError.None);
    expect([u.srcPort, u.dstPort, u.length, u.checksum, u.payloadOffset, u.payloadLength]).toEqual([52688, 9999, 18, UDP_CSUM, 8, 10]);
    const m = new IcmpPacket();
    const echo = ECHO_REQ_PKT.subarray(20);
    expect(m.wrap(echo, 0, 7)).toBe(IcmpError.Truncated);
    expect(m.wrap(echo, 0, echo.length)).toBe(IcmpError.None);
    expect([m.type, m.code, m.ident, m.seq, m.bodyOffset, m.bodyLength, m.verifyChecksum()]).toEqual([ICMP_ECHO_REQUEST, 0, 19675, 1, 8, 16, true]);
    // In a fragmentation-needed message the same bytes are the next-hop MTU (RFC 1191 4).
    const fn = Buffer.alloc(8 + 28);
    emitIcmp(fn, 0, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: 4, nextHopMtu: 1280, bodyLength: 28 });
    expect(m.wrap(fn, 0, fn.length)).toBe(IcmpError.None);
    expect([m.type, m.code, m.nextHopMtu, readU16(fn, 4)]).toEqual([ICMP_DEST_UNREACH, 4, 1280, 0]);
  });
});

describe('checksum capabilities (what the device verifies and fills)', () => {
  test('receive: a checksum the device verified is not checked; one it did not is', () => {
    const bad = Buffer.from(DATA_PKT); // its TCP checksum field holds only the pseudo-header sum
    const r = newTcpRepr();
    expect(parseTcp(bad, 20, bad.length - 20, LO, LO, r, SOFTWARE_CHECKSUMS)).toBe(TcpError.BadChecksum);
    expect(parseTcp(bad, 20, bad.length - 20, LO, LO, r, { ...SOFTWARE_CHECKSUMS, tcp: DeviceChecksum.Verified })).toBe(TcpError.None);
    // Per protocol: a device that verified UDP did not verify TCP.
    expect(parseTcp(bad, 20, bad.length - 20, LO, LO, r, { ...SOFTWARE_CHECKSUMS, udp: DeviceChecksum.Verified })).toBe(TcpError.BadChecksum);
    const u = newUdpRepr();
    expect(parseUdp(UDP_PKT, 20, 18, LO, LO, u, { ...SOFTWARE_CHECKSUMS, tcp: DeviceChecksum.Verified })).toBe(UdpError.BadChecksum);
    expect(parseUdp(UDP_PKT, 20, 18, LO, LO, u, { ...SOFTWARE_CHECKSUMS, udp: DeviceChecksum.Verified })).toBe(UdpError.None);
  });

  test('transmit: when the device fills the checksum, emit leaves the folded pseudo-header sum (what Linux leaves for CHECKSUM_PARTIAL)', () => {
    const { seg } = parseVector(DATA_PKT, DATA_CSUM);
    const out = Buffer.from(DATA_PKT);
    emitTcp(out, 20, reprOf(seg, false), LO, LO, TCP_FILLED);
    expect(readU16(out, 20 + TcpField.CHECKSUM)).toBe(checksumFold(pseudoHeaderSum(LO, LO, PROTO_TCP, 37)));
    expect(out).toEqual(DATA_PKT);
    // UDP alike; only the protocol whose bit is set is left to the device.
    const ud = Buffer.from(UDP_PKT);
    const ur = { ...newUdpRepr(), srcPort: 52688, dstPort: 9999, payloadLength: 10 };
    emitUdp(ud, 20, ur, LO, LO, TCP_FILLED);
    expect(readU16(ud, 26)).toBe(UDP_CSUM);
    emitUdp(ud, 20, ur, LO, LO, { ...SOFTWARE_CHECKSUMS, udp: DeviceChecksum.Fills });
    expect(ud).toEqual(UDP_PKT);
  });
});

describe('addresses', () => {
  test('dotted quads and prefixes', () => {
    expect(parseIpv4('198.18.0.2')).toBe(0xc6120002);
    expect(parseIpv4(' 255.255.255.255 ')).toBe(0xffffffff);
    expect(parseIpv4('256.0.0.1')).toBeNull();
    expect(parseIpv4('1.2.3')).toBeNull();
    expect(parseIpv4('1.2.3.4.5')).toBeNull();
    expect(formatIpv4(0xc6120002)).toBe('198.18.0.2');
    expect(formatIpv4(0xffffffff)).toBe('255.255.255.255');
    expect(parseCidr('198.18.0.0/15')).toEqual({ addr: 0xc6120000, prefix: 15 });
    expect(parseCidr('198.18.0.0/33')).toBeNull();
    expect(parseCidr('198.18.0.0')).toBeNull();
    expect(prefixMask(0)).toBe(0);
    expect(prefixMask(32)).toBe(0xffffffff);
    expect(prefixMask(15)).toBe(0xfffe0000);
    expect(sameSubnet(0xc6120001, 0xc6130001, 15)).toBe(true);
    expect(sameSubnet(0xc6120001, 0xc6140001, 15)).toBe(false);
  });
});
