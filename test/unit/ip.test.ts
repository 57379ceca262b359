/**
 * IP layer over the memory link: fragmentation and reassembly (RFC 791 3.2, RFC
 * 815) with its limits, ICMP echo, UDP port unreachable (RFC 1122 4.1.3.1), UDP
 * echo, header errors counted (RFC 1122 3.2.1), ICMP errors rate-limited.
 */
import { describe, expect, test } from 'vitest';
import { Reassembler } from '../../stack/iface/reassembly';
import { internetChecksum } from '../../stack/wire/checksum';
import {
  IcmpError,
  newIcmpRepr,
  parseIcmp,
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  emitIcmp,
  UNREACH_PORT,
  UNREACH_PROTOCOL,
} from '../../stack/wire/icmp';
import { newIpv4Repr, parseIpv4Header, Ipv4Error, PROTO_ICMP, PROTO_TCP, PROTO_UDP } from '../../stack/wire/ipv4';
import { readU16, writeU16 } from '../../stack/wire/bytes';
import { emitUdp } from '../../stack/wire/udp';
import { SYN, ACK } from '../../stack/wire/tcp';
import type { FsUdpSocket } from '../../stack/api/dgram';
import { VirtioNetHdr, type OffloadMeta } from '../../drivers/device';
import { A_ADDR, A_IP, B_ADDR, B_IP, makePair, runFor, runUntil, sha256, testData, Pair } from './helpers/pair';
import { craftIp, craftTcp, Tap, Seen } from './helpers/tap';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { installFaults } from '../../stack/faults/install';
import { CHECKSUMS_VERIFIED } from '../../stack/wire/checksum';

/** A UDP datagram (header + payload, checksummed) from A:sport to B:dport. */
function udpDatagram(payload: Buffer, sport = 5000, dport = 7, src = A_IP, dst = B_IP): Buffer {
  const d = Buffer.alloc(8 + payload.length);
  payload.copy(d, 8);
  emitUdp(d, 0, { srcPort: sport, dstPort: dport, payloadOffset: 0, payloadLength: payload.length }, src, dst);
  return d;
}

/** Cuts a transport payload into IPv4 fragments of `size` bytes (multiple of 8 except the last). */
function fragments(payload: Buffer, size: number, o: { ident?: number; protocol?: number; src?: number; dst?: number } = {}): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < payload.length; off += size) {
    const end = Math.min(off + size, payload.length);
    out.push(
      craftIp({
        src: o.src,
        dst: o.dst,
        protocol: o.protocol ?? PROTO_UDP,
        payload: payload.subarray(off, end),
        ident: o.ident ?? 777,
        mf: end < payload.length,
        fragOffset: off,
      }),
    );
  }
  return out;
}

/** A UDP socket on B that records what it receives. */
function udpSink(p: Pair, port = 7) {
  const got: { data: Buffer; from: string; port: number }[] = [];
  const s = p.netB.createUdpSocket() as FsUdpSocket;
  s.on('message', (data: Buffer, rinfo: { address: string; port: number }) => got.push({ data, from: rinfo.address, port: rinfo.port }));
  s.bind(port);
  return { s, got };
}

function icmpOf(s: Seen) {
  const ip = newIpv4Repr();
  parseIpv4Header(s.raw, 0, s.raw.length, ip);
  const m = newIcmpRepr();
  const ok = parseIcmp(s.raw, ip.headerLength, ip.totalLength - ip.headerLength, m) === IcmpError.None;
  return { ip, m, ok };
}

describe('fragmentation and reassembly', () => {
  test('a 4000-byte UDP datagram from A is cut into three fragments and put back together at B', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const a = p.netA.createUdpSocket() as FsUdpSocket;
    const msg = testData(4000, 41);
    a.send(msg, 7, B_ADDR);
    expect(await runUntil(p.clock, () => got.length === 1, 10)).toBe(true);
    expect(sha256(got[0].data)).toBe(sha256(msg));
    expect(got[0]).toMatchObject({ from: A_ADDR });
    const frags = tap.seen.filter((s) => s.dir === 'a->b');
    expect(frags.map((s) => [s.fragOffset, s.mf, s.raw.length])).toEqual([
      [0, true, 1500],
      [1480, true, 1500],
      [2960, false, 20 + 4008 - 2960],
    ]);
    expect(p.a.counters.IpFragCreates).toBe(3);
    expect(p.a.counters.IpFragOKs).toBe(1);
    expect(p.b.counters.IpReasmReqds).toBe(3);
    expect(p.b.counters.IpReasmOKs).toBe(1);
    expect(p.b.counters.IpReasmFails).toBe(0);
    expect(p.b.reassembler.inProgress).toBe(0);
    expect(p.b.reassembler.bufferedBytes).toBe(0);
  });

  test('fragments arriving out of order (last first, then shuffled) are reassembled', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const msg = testData(5000, 42);
    const frags = fragments(udpDatagram(msg), 1024, { ident: 1 });
    for (const f of [frags[4], frags[1], frags[3], frags[0], frags[2]]) tap.inject('b', f);
    expect(await runUntil(p.clock, () => got.length === 1, 10)).toBe(true);
    expect(sha256(got[0].data)).toBe(sha256(msg));
    expect(p.b.counters.IpReasmReqds).toBe(5);
    expect(p.b.counters.IpReasmOKs).toBe(1);
  });

  test('overlapping fragments: the bytes that arrived first are kept (and duplicates change nothing)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const msg = testData(1200, 43);
    const dgram = udpDatagram(msg);
    // [0, 800) first; then [400, 1208) whose first 400 bytes are garbage over the bytes we hold.
    const evil = Buffer.from(dgram);
    evil.fill(0xee, 400, 800);
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: dgram.subarray(0, 800), ident: 9, mf: true, fragOffset: 0 }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: dgram.subarray(0, 800), ident: 9, mf: true, fragOffset: 0 }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: evil.subarray(400), ident: 9, mf: false, fragOffset: 400 }));
    expect(await runUntil(p.clock, () => got.length === 1, 10)).toBe(true);
    expect(p.link.counters['a->b'].droppedMtu).toBe(0);
    // The UDP checksum would fail if the overlap had been taken from the second copy.
    expect(sha256(got[0].data)).toBe(sha256(msg));
  });

  test('an incomplete datagram times out after 30 s: counted, memory freed, a late fragment does not complete it', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const frags = fragments(udpDatagram(testData(3000, 44)), 1480, { ident: 5 });
    tap.inject('b', frags[0]);
    tap.inject('b', frags[1]);
    await runFor(p.clock, 2);
    expect(p.b.reassembler.inProgress).toBe(1);
    expect(p.b.reassembler.bufferedBytes).toBe(2960);
    await runFor(p.clock, 29_000, 100);
    expect(p.b.reassembler.inProgress).toBe(1);
    await runFor(p.clock, 2_000, 100);
    expect(p.b.reassembler.inProgress).toBe(0);
    expect(p.b.reassembler.bufferedBytes).toBe(0);
    expect(p.b.counters.IpReasmTimeout).toBe(1);
    expect(p.b.counters.IpReasmFails).toBe(1);
    tap.inject('b', frags[2]);
    await runFor(p.clock, 2);
    expect(got.length).toBe(0);
    expect(p.b.reassembler.inProgress).toBe(1); // a new, incomplete datagram
  });

  test('fragments that cannot be right are refused: a middle fragment not a multiple of 8, conflicting ends, past 64 KiB', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const d = udpDatagram(testData(100, 45));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: d.subarray(0, 50), ident: 21, mf: true, fragOffset: 0 })); // 50 % 8 != 0
    await runFor(p.clock, 2);
    expect(p.b.counters.IpReasmFails).toBe(1);
    // Two last fragments that disagree on the total length.
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: d.subarray(48), ident: 22, mf: false, fragOffset: 48 }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: d.subarray(40), ident: 22, mf: false, fragOffset: 48 }));
    await runFor(p.clock, 2);
    expect(p.b.counters.IpReasmFails).toBe(2);
    // Offset + length beyond the largest datagram (the "ping of death").
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: Buffer.alloc(1000), ident: 23, mf: false, fragOffset: 65528 - 8 * 100 }));
    await runFor(p.clock, 2);
    expect(p.b.counters.IpReasmFails).toBe(3);
    expect(got.length).toBe(0);
    expect(p.b.reassembler.inProgress).toBe(0);
  });

  test('limits: at most maxDatagrams in progress (the oldest is evicted) and at most maxBytes buffered', () => {
    const r = new Reassembler({ maxDatagrams: 4, maxBytes: 10_000, timeoutMs: 30_000 });
    const hdr = Buffer.alloc(20);
    for (let i = 0; i < 6; i++) expect(r.add(`k${i}`, i, hdr, 0, true, Buffer.alloc(800))).toEqual({ done: false });
    expect(r.inProgress).toBe(4);
    expect(r.evictions).toBe(2);
    // k0 and k1 were the oldest: completing k0 now starts afresh and does not complete.
    expect(r.add('k0', 10, hdr, 800, false, Buffer.alloc(8))).toEqual({ done: false });
    expect(r.add('k5', 10, hdr, 800, false, Buffer.alloc(8))).toMatchObject({ done: true });
    // Bytes: a datagram that would push the total past maxBytes evicts the oldest until it fits.
    const big = new Reassembler({ maxDatagrams: 64, maxBytes: 4000, timeoutMs: 30_000 });
    big.add('a', 0, hdr, 0, true, Buffer.alloc(2400));
    big.add('b', 1, hdr, 0, true, Buffer.alloc(2400));
    expect(big.bufferedBytes).toBeLessThanOrEqual(4000);
    expect(big.inProgress).toBe(1);
    expect(big.add('b', 2, hdr, 2400, false, Buffer.alloc(10))).toMatchObject({ done: true });
    expect(big.bufferedBytes).toBe(0);
  });

  test('datagrams evicted for room count in IpReasmFails (900 incomplete first fragments, 64 kept)', async () => {
    const p = makePair({ log: false });
    udpSink(p);
    for (let i = 0; i < 900; i++) p.link.a.send(craftIp({ protocol: PROTO_UDP, payload: Buffer.alloc(1480), ident: 1000 + i, mf: true, fragOffset: 0 }));
    p.link.a.flush();
    await runFor(p.clock, 5);
    expect(p.b.counters.IpReasmReqds).toBe(900);
    expect(p.b.reassembler.inProgress).toBe(64);
    expect(p.b.reassembler.evictions).toBe(900 - 64);
    expect(p.b.counters.IpReasmFails).toBe(900 - 64);
    // The 64 left time out: failed too, so every one of the 900 is accounted for.
    await runFor(p.clock, 31_000, 500);
    expect(p.b.counters.IpReasmTimeout).toBe(64);
    expect(p.b.counters.IpReasmFails).toBe(900);
    expect(p.b.counters.IpReasmOKs).toBe(0);
  });

  test('a TCP SYN that arrives in two fragments reaches the listener (checksum over the reassembled segment)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    p.netB.createServer(() => {}).listen(80);
    const syn = craftTcp({ sport: 40000, dport: 80, seq: 1, flags: SYN, mss: 1460, ts: [1, 0], sackPermitted: true, wscale: 7 });
    const tcp = syn.subarray(20);
    tap.inject('b', craftIp({ protocol: PROTO_TCP, payload: tcp.subarray(0, 16), ident: 30, mf: true, fragOffset: 0 }));
    tap.inject('b', craftIp({ protocol: PROTO_TCP, payload: tcp.subarray(16), ident: 30, mf: false, fragOffset: 16 }));
    await runFor(p.clock, 2);
    const synAck = tap.tcp('b->a')[0];
    expect(synAck.tcp.flags).toBe(SYN | ACK);
    expect(synAck.tcp.ack).toBe(2);
  });
});

describe('TTL from the profile (DefaultTTL)', () => {
  test('Windows profiles send with TTL 128, linux with 64: echo replies, SYN-ACKs and fragments alike', async () => {
    for (const [profile, ttl] of [
      ['win2003-sp1', 128],
      ['nt4-sp6a', 128],
      ['linux', 64],
    ] as const) {
      const p = makePair();
      installFaults(p.b, buildFaultConfig({ profile, faults: [], params: [] }), new EventLog());
      const tap = new Tap(p);
      p.netB.createServer(() => {}).listen(80);
      const icmp = Buffer.alloc(8 + 3000);
      emitIcmp(icmp, 0, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 7, seq: 1, bodyLength: 3000 });
      tap.inject('b', craftIp({ protocol: PROTO_ICMP, payload: icmp.subarray(0, 108), ident: 1 }));
      tap.inject('b', craftTcp({ sport: 40000, dport: 80, seq: 1, flags: SYN, mss: 1460 }));
      await runFor(p.clock, 5);
      const out = tap.seen.filter((x) => x.dir === 'b->a');
      expect(out.length, profile).toBe(2);
      for (const x of out) expect(x.raw[8], profile).toBe(ttl);
    }
  });
});

describe('ICMP', () => {
  test("echo request -> echo reply: Linux's ping request gets the reply Linux gives (same ICMP bytes)", async () => {
    const p = makePair();
    const tap = new Tap(p);
    // The request ping sent on lo (id 19675, seq 1, 16 bytes of data), addressed to B.
    const icmp = Buffer.from('08005528' + '4cdb0001' + 'ff4c026b000000004643' + '0e0000000000', 'hex');
    tap.inject('b', craftIp({ protocol: PROTO_ICMP, payload: icmp, ident: 0x6d2b, df: true }));
    await runFor(p.clock, 2);
    const reply = tap.seen.filter((s) => s.dir === 'b->a')[0];
    const { ip, m, ok } = icmpOf(reply);
    expect(ok).toBe(true);
    expect(ip).toMatchObject({ src: B_IP, dst: A_IP, protocol: PROTO_ICMP });
    expect(m).toMatchObject({ type: ICMP_ECHO_REPLY, code: 0, ident: 19675, seq: 1 });
    expect(reply.raw.subarray(20).toString('hex')).toBe('00005d28' + '4cdb0001' + 'ff4c026b000000004643' + '0e0000000000');
    expect(p.b.counters.IcmpInEchos).toBe(1);
    expect(p.b.counters.IcmpOutEchoReps).toBe(1);
    expect(p.a.counters.IcmpInEchoReps).toBe(1);
  });

  test('a large echo request (fragmented) gets its whole reply back, fragmented to fit the MTU', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const body = testData(3000, 46);
    const icmp = Buffer.alloc(8 + body.length);
    body.copy(icmp, 8);
    emitIcmp(icmp, 0, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 0x1234, seq: 7, bodyLength: body.length });
    for (const f of fragments(icmp, 1480, { ident: 77, protocol: PROTO_ICMP })) tap.inject('b', f);
    await runFor(p.clock, 2);
    expect(p.b.counters.IcmpOutEchoReps).toBe(1);
    expect(p.link.counters['b->a'].droppedMtu).toBe(0);
    expect(p.a.counters.IcmpInEchoReps).toBe(1);
    const replies = tap.seen.filter((s) => s.dir === 'b->a');
    expect(replies.length).toBe(3);
    expect(replies.every((s) => s.raw.length <= 1500)).toBe(true);
  });

  test('ICMP with a bad checksum is counted and ignored', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const icmp = Buffer.alloc(16);
    emitIcmp(icmp, 0, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 0, seq: 1, bodyLength: 8 });
    icmp[10] ^= 1;
    tap.inject('b', craftIp({ protocol: PROTO_ICMP, payload: icmp }));
    await runFor(p.clock, 2);
    expect(p.b.counters.IcmpInErrors).toBe(1);
    expect(p.b.counters.IcmpInCsumErrors).toBe(1);
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(0);
  });

  test('an ICMP message shorter than its 8-byte header is an input error, not a checksum error', async () => {
    const p = makePair();
    const tap = new Tap(p);
    tap.inject('b', craftIp({ protocol: PROTO_ICMP, payload: Buffer.from([ICMP_ECHO_REQUEST, 0, 0xf7, 0xff, 0, 0]) }));
    await runFor(p.clock, 2);
    expect(p.b.counters.IcmpInMsgs).toBe(1);
    expect(p.b.counters.IcmpInErrors).toBe(1);
    expect(p.b.counters.IcmpInCsumErrors).toBe(0);
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(0);
  });

  test('an unknown protocol gets protocol unreachable quoting the header and 8 bytes', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const pkt = craftIp({ protocol: 99, payload: testData(40, 47) });
    tap.inject('b', pkt);
    await runFor(p.clock, 2);
    const [err] = tap.seen.filter((s) => s.dir === 'b->a');
    const { m, ok } = icmpOf(err);
    expect(ok).toBe(true);
    expect(m).toMatchObject({ type: ICMP_DEST_UNREACH, code: UNREACH_PROTOCOL });
    expect(err.raw.subarray(28)).toEqual(pkt.subarray(0, 28));
    expect(p.b.counters.IpInUnknownProtos).toBe(1);
  });
});

describe('UDP', () => {
  test('to a closed port: ICMP port unreachable back, quoting the datagram; the sender gets ECONNREFUSED', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const a = p.netA.createUdpSocket() as FsUdpSocket;
    const errors: (Error & { code?: string })[] = [];
    a.on('error', (e) => errors.push(e));
    a.bind(5555);
    a.send(Buffer.from('anyone?'), 9, B_ADDR);
    await runFor(p.clock, 3);
    const sent = tap.seen.filter((s) => s.dir === 'a->b')[0];
    const [err] = tap.seen.filter((s) => s.dir === 'b->a');
    const { ip, m, ok } = icmpOf(err);
    expect(ok).toBe(true);
    expect(ip).toMatchObject({ src: B_IP, dst: A_IP, protocol: PROTO_ICMP });
    expect(m).toMatchObject({ type: ICMP_DEST_UNREACH, code: UNREACH_PORT });
    // RFC 792: the internet header plus the first 64 bits of the datagram.
    expect(err.raw.subarray(28)).toEqual(sent.raw.subarray(0, 28));
    expect(p.b.counters.UdpNoPorts).toBe(1);
    expect(p.b.counters.IcmpOutDestUnreachs).toBe(1);
    expect(p.a.counters.IcmpInDestUnreachs).toBe(1);
    expect(errors.length).toBe(1);
    expect(errors[0].code).toBe('ECONNREFUSED');
  });

  test('port unreachable for a reassembled datagram quotes a header that describes the whole datagram', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const a = p.netA.createUdpSocket() as FsUdpSocket;
    a.on('error', () => {});
    a.send(testData(3000, 48), 9, B_ADDR);
    await runFor(p.clock, 3);
    const [err] = tap.seen.filter((s) => s.dir === 'b->a');
    expect(err).toBeDefined();
    const quoted = err.raw.subarray(28);
    const qip = newIpv4Repr();
    // The quoted header is a valid header of the reassembled datagram: no MF, the full length.
    expect(parseIpv4Header(quoted, 0, 20, qip, CHECKSUMS_VERIFIED)).toBe(Ipv4Error.BadTotalLength); // only 28 bytes are quoted
    expect(readU16(quoted, 2)).toBe(20 + 8 + 3000);
    expect(readU16(quoted, 6) & 0x3fff).toBe(0);
    expect(internetChecksum(quoted, 0, 20)).toBe(0);
    expect(readU16(quoted, 20 + 4)).toBe(8 + 3000); // the UDP length
  });

  test('no ICMP error about a datagram whose source is not a single host (RFC 1122 3.2.2)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const sources = [0, 0xffffffff, 0xe0000001, 0xf0000001, 0x7f000001, 0xc61200ff];
    for (const src of sources) {
      tap.inject('b', craftIp({ src, protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('x'), 5000, 9, src, B_IP) }));
      tap.inject('b', craftIp({ src, protocol: 99, payload: Buffer.alloc(16) }));
    }
    await runFor(p.clock, 2);
    expect(p.b.counters.UdpNoPorts).toBe(sources.length);
    expect(tap.seen.filter((s) => s.dir === 'b->a').map((s) => s.dst.toString(16))).toEqual([]);
    expect(p.b.counters.IcmpOutDestUnreachs).toBe(0);
    // A unicast source still gets its error.
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('x'), 5000, 9) }));
    await runFor(p.clock, 2);
    expect(p.b.counters.IcmpOutDestUnreachs).toBe(1);
  });

  test('ICMP errors are rate limited (icmpErrorsPerSec)', async () => {
    const p = makePair({}, {}, { icmpErrorsPerSec: 3 });
    const tap = new Tap(p);
    for (let i = 0; i < 10; i++) tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('x'), 5000, 9) }));
    await runFor(p.clock, 2);
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(3);
    expect(p.b.counters.IcmpOutRateLimited).toBe(7);
    expect(p.b.counters.UdpNoPorts).toBe(10);
    await runFor(p.clock, 1000);
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('x'), 5000, 9) }));
    await runFor(p.clock, 2);
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(4);
  });

  test('UDP echo over the pair: small and large (fragmented) datagrams come back intact and in order', async () => {
    const p = makePair();
    const echo = p.netB.createUdpSocket() as FsUdpSocket;
    echo.on('message', (d: Buffer, r: { address: string; port: number }) => echo.send(d, r.port, r.address));
    echo.bind(7);
    const a = p.netA.createUdpSocket() as FsUdpSocket;
    const back: Buffer[] = [];
    a.on('message', (d: Buffer) => back.push(d));
    const msgs = [Buffer.from('hello'), testData(1472, 49), testData(1473, 50), testData(20_000, 51), Buffer.alloc(0)];
    for (const m of msgs) a.send(m, 7, B_ADDR);
    expect(await runUntil(p.clock, () => back.length === msgs.length, 50)).toBe(true);
    expect(back.map((b) => sha256(b))).toEqual(msgs.map((m) => sha256(m)));
    expect(p.b.counters.UdpInDatagrams).toBe(5);
    expect(p.a.counters.UdpInDatagrams).toBe(5);
    expect(p.a.counters.IpReasmOKs).toBe(2);
  });

  test('bad UDP length or checksum is counted in UdpInErrors / UdpInCsumErrors and dropped', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const good = udpDatagram(Buffer.from('payload'));
    const badSum = Buffer.from(good);
    badSum[10] ^= 1;
    const badLen = Buffer.from(good);
    writeU16(badLen, 4, 100);
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: badSum }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: badLen }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, payload: good }));
    await runFor(p.clock, 2);
    expect(got.map((g) => g.data.toString())).toEqual(['payload']);
    expect(p.b.counters.UdpInErrors).toBe(2);
    expect(p.b.counters.UdpInCsumErrors).toBe(1);
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(0); // no ICMP for broken datagrams
  });
});

describe('what the device verified (checksum capabilities per packet)', () => {
  const DATA_VALID: OffloadMeta = { flags: VirtioNetHdr.F_DATA_VALID, gsoType: VirtioNetHdr.GSO_NONE, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
  /** Sends `pkt` from A's side of the link to B with the offload meta a TUN device would give it. */
  const send = (p: Pair, pkt: Buffer, meta: OffloadMeta | null) => {
    p.link.a.send(pkt, meta);
    p.link.a.flush();
  };

  test('a wrong TCP or UDP checksum is dropped, unless the device vouched for the packet (virtio DATA_VALID)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    p.b.tcp.listen(9000, 0, 16);
    const { got } = udpSink(p);
    const syn = (sport: number) => {
      const pkt = craftTcp({ sport, dport: 9000, seq: 1000, flags: SYN });
      pkt[20 + 16] ^= 0xff; // the TCP checksum: now wrong
      return pkt;
    };
    const dgram = () => {
      const d = udpDatagram(Buffer.from('vouched'));
      d[6] ^= 0xff; // the UDP checksum (not 0: it is checked)
      return craftIp({ protocol: PROTO_UDP, payload: d });
    };
    send(p, syn(41000), null);
    send(p, dgram(), null);
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpInCsumErrors).toBe(1);
    expect(p.b.counters.UdpInCsumErrors).toBe(1);
    expect(got.length).toBe(0);
    send(p, syn(41001), DATA_VALID);
    send(p, dgram(), DATA_VALID);
    await runFor(p.clock, 2);
    expect(p.b.counters.TcpInCsumErrors).toBe(1);
    expect(p.b.counters.UdpInCsumErrors).toBe(1);
    expect(tap.tcp('b->a', (t) => t.flags === (SYN | ACK)).map((s) => s.tcp.dport)).toEqual([41001]);
    expect(got.map((g) => g.data.toString())).toEqual(['vouched']);
  });

  test('the IPv4 header checksum is checked whatever the device says (the virtio header vouches for transport checksums only)', async () => {
    const p = makePair();
    const { got } = udpSink(p);
    const pkt = craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('x')) });
    pkt[10] ^= 1;
    send(p, pkt, DATA_VALID);
    await runFor(p.clock, 2);
    expect(p.b.counters.IpInHdrErrors).toBe(1);
    expect(got.length).toBe(0);
  });
});

describe('IP header errors', () => {
  test('each malformed header is counted in IpInHdrErrors and goes no further', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const good = craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('ok')) });
    const variants: Buffer[] = [];
    const mk = (f: (b: Buffer) => void, fixSum = true) => {
      const b = Buffer.from(good);
      f(b);
      if (fixSum) {
        writeU16(b, 10, 0);
        writeU16(b, 10, internetChecksum(b, 0, (b[0] & 15) * 4 > b.length ? 20 : (b[0] & 15) * 4));
      }
      variants.push(b);
    };
    mk((b) => {
      b[10] ^= 0x55;
    }, false); // bad checksum
    mk((b) => {
      b[0] = 0x55;
    }); // version 5
    mk((b) => {
      b[0] = 0x44;
    }); // IHL 4
    mk((b) => {
      b[0] = 0x4f;
    }); // IHL 15: longer than the packet
    mk((b) => {
      writeU16(b, 2, b.length + 10);
    }); // total length beyond the packet
    mk((b) => {
      writeU16(b, 2, 12);
    }); // total length below the header
    variants.push(good.subarray(0, 12)); // truncated
    for (const v of variants) tap.inject('b', v);
    await runFor(p.clock, 2);
    expect(p.b.counters.IpInHdrErrors).toBe(variants.length);
    expect(p.b.counters.IpInDelivers).toBe(0);
    expect(got.length).toBe(0);
    tap.inject('b', good);
    await runFor(p.clock, 2);
    expect(got.length).toBe(1);
    expect(p.b.counters.IpInDelivers).toBe(1);
    expect(p.b.counters.IpInReceives).toBe(variants.length + 1);
  });

  test('IPv6 is counted as ignored, not as a header error; multicast and broadcast destinations are not ours', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    const v6 = Buffer.alloc(48);
    v6[0] = 0x60;
    tap.inject('b', v6);
    tap.inject('b', craftIp({ protocol: PROTO_UDP, dst: 0xe0000001, payload: udpDatagram(Buffer.from('m'), 5000, 7, A_IP, 0xe0000001) }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, dst: 0xc61200ff, payload: udpDatagram(Buffer.from('b'), 5000, 7, A_IP, 0xc61200ff) }));
    tap.inject('b', craftIp({ protocol: PROTO_UDP, dst: 0xffffffff, payload: udpDatagram(Buffer.from('b'), 5000, 7, A_IP, 0xffffffff) }));
    await runFor(p.clock, 2);
    expect(p.b.counters.FsIpv6Ignored).toBe(1);
    expect(p.b.counters.IpInHdrErrors).toBe(0);
    expect(p.b.counters.IpInAddrErrors).toBe(3);
    expect(got.length).toBe(0);
    // And none of them drew an ICMP error (RFC 1122 3.2.2: never for broadcast or multicast).
    expect(tap.seen.filter((s) => s.dir === 'b->a').length).toBe(0);
  });
});

describe('ICMP errors for TCP (RFC 5927, RFC 1122 4.2.3.9)', () => {
  /** A connect from A to B that B never hears; returns the SYN as it left A. */
  async function pendingConnect(p: Pair, tap: Tap) {
    tap.drop = (s) => s.dir === 'a->b' && !s.injected;
    const c = p.netA.connect({ host: B_ADDR, port: 80 });
    const errors: (Error & { code?: string })[] = [];
    c.on('error', (e) => errors.push(e));
    await runFor(p.clock, 1);
    const syn = tap.seen.find((s) => s.dir === 'a->b' && s.tcp && s.tcp.flags === SYN)!;
    return { c, errors, syn };
  }
  const unreachable = (quoted: Buffer, code: number) => {
    const body = Buffer.alloc(8 + 28);
    quoted.copy(body, 8, 0, 28);
    emitIcmp(body, 0, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code, bodyLength: 28 });
    return craftIp({ src: B_IP, dst: A_IP, protocol: PROTO_ICMP, payload: body });
  };

  test('port unreachable quoting our SYN fails the connect with ECONNREFUSED', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { errors, syn } = await pendingConnect(p, tap);
    tap.inject('a', unreachable(syn.raw, UNREACH_PORT));
    await runFor(p.clock, 2);
    expect(errors.map((e) => e.code)).toEqual(['ECONNREFUSED']);
    expect(p.a.counters.TcpAttemptFails).toBe(1);
    expect([...p.a.tcp.table.all()]).toEqual([]);
  });

  test('host unreachable fails it with EHOSTUNREACH', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { errors, syn } = await pendingConnect(p, tap);
    tap.inject('a', unreachable(syn.raw, 1));
    await runFor(p.clock, 2);
    expect(errors.map((e) => e.code)).toEqual(['EHOSTUNREACH']);
  });

  test('an ICMP error quoting a sequence number we never sent is ignored (RFC 5927 4.1)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { errors, syn } = await pendingConnect(p, tap);
    const forged = Buffer.from(syn.raw);
    forged.writeUInt32BE((forged.readUInt32BE(24) + 12345) >>> 0, 24);
    tap.inject('a', unreachable(forged, UNREACH_PORT));
    await runFor(p.clock, 2);
    expect(errors).toEqual([]);
    expect([...p.a.tcp.table.all()].map((c) => c.stateName)).toEqual(['SYN-SENT']);
  });

  test('on an established connection an unreachable is a soft error: the connection goes on', async () => {
    const p = makePair();
    const tap = new Tap(p);
    p.netB.createServer((s) => s.resume()).listen(80);
    const c = p.netA.connect({ host: B_ADDR, port: 80 });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await runFor(p.clock, 5);
    c.write(Buffer.from('data'));
    await runFor(p.clock, 0.25, 0.25);
    const seg = tap.seen.filter((s) => s.dir === 'a->b' && s.tcp && s.tcp.len > 0)[0];
    tap.inject('a', unreachable(seg.raw, 1));
    await runFor(p.clock, 5);
    expect(errors).toEqual([]);
    expect([...p.a.tcp.table.all()].map((x) => x.stateName)).toEqual(['ESTABLISHED']);
  });
});

describe('IP options', () => {
  /** Rewrites a 20-byte-header packet into one with 4 bytes of options (NOP NOP NOP EOL). */
  const withOptions = (pkt: Buffer) => {
    const b = Buffer.concat([pkt.subarray(0, 20), Buffer.from('01010100', 'hex'), pkt.subarray(20)]);
    b[0] = 0x46;
    writeU16(b, 2, b.length);
    writeU16(b, 10, 0);
    writeU16(b, 10, internetChecksum(b, 0, 24));
    return b;
  };

  test('a TCP SYN whose IP header has options reaches the listener', async () => {
    const p = makePair();
    const tap = new Tap(p);
    p.netB.createServer(() => {}).listen(80);
    tap.inject('b', withOptions(craftTcp({ sport: 40000, dport: 80, seq: 100, flags: SYN, mss: 1460 })));
    await runFor(p.clock, 2);
    const r = tap.tcp('b->a');
    expect(r.length).toBe(1);
    expect(r[0].tcp).toMatchObject({ flags: SYN | ACK, ack: 101 });
  });

  test('UDP with IP options is delivered; a port unreachable quotes the whole header (24 bytes) and 8 more', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const { got } = udpSink(p);
    tap.inject('b', withOptions(craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('opt')) })));
    const toClosed = withOptions(craftIp({ protocol: PROTO_UDP, payload: udpDatagram(Buffer.from('closed'), 5000, 9) }));
    tap.inject('b', toClosed);
    await runFor(p.clock, 2);
    expect(got.map((g) => g.data.toString())).toEqual(['opt']);
    const [err] = tap.seen.filter((s) => s.dir === 'b->a');
    expect(err.raw.length).toBe(20 + 8 + 24 + 8);
    expect(err.raw.subarray(28)).toEqual(toClosed.subarray(0, 32));
  });
});
