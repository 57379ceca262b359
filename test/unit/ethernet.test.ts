/**
 * The Ethernet interface under stacks on an in-memory segment, on virtual time: ARP
 * resolution and answers, RFC 5227 announcements, which frames are ours, malformed
 * frames counted, EHOSTUNREACH after a failed resolution (TCP and UDP), the gateway as
 * next hop, ICMP errors and PMTU over Ethernet, IGMPv2, and the NLB seam.
 */
import { describe, expect, test } from 'vitest';
import { ARP_OP_REPLY, ARP_OP_REQUEST, ArpRepr, emitArp, newArpRepr, parseArp } from '../../stack/wire/arp';
import {
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_MS_NLB,
  MacAddr,
  emitEthernet,
  formatMac,
  ipv4MulticastMac,
  parseMac,
  readMac,
  writeMac,
} from '../../stack/wire/ethernet';
import { IGMP_LEAVE_GROUP, IGMP_MEMBERSHIP_QUERY, IGMP_V2_MEMBERSHIP_REPORT, buildIgmpDatagram } from '../../stack/wire/igmp';
import { emitIpv4Header, PROTO_UDP } from '../../stack/wire/ipv4';
import { emitIcmp, newIcmpRepr, ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, UNREACH_FRAG_NEEDED } from '../../stack/wire/icmp';
import { formatIpv4, parseIpv4 } from '../../stack/wire/addr';
import { emitUdp } from '../../stack/wire/udp';
import { Nud } from '../../stack/iface/neighbour';
import { dstMac, framesOf, hex, makeLan, srcMac } from './helpers/lan';
import { runFor, runUntil, sha256, testData, watch } from './helpers/pair';

const ip = (s: string) => parseIpv4(s)!;
const mac = (s: string) => parseMac(s)!;
const RAW_MAC = mac('52:54:00:00:00:99');
const RAW_IP = ip('198.18.0.99');

function frame(dst: MacAddr, src: MacAddr, type: number, payload: Buffer): Buffer {
  const f = Buffer.alloc(14 + payload.length);
  emitEthernet(f, 0, { dst, src, etherType: type });
  payload.copy(f, 14);
  return f;
}

function arpPayload(r: ArpRepr): Buffer {
  const b = Buffer.alloc(28);
  emitArp(b, 0, r);
  return b;
}

function arpOf(f: Buffer): ArpRepr {
  const r = newArpRepr();
  parseArp(f, 14, f.length - 14, r);
  return r;
}

/** An ICMP echo request from RAW_IP to `dst`. */
function echoRequest(dst: number, seq = 1): Buffer {
  const pkt = Buffer.alloc(20 + 16);
  pkt.write('faultstack', 28);
  emitIcmp(pkt, 20, { ...newIcmpRepr(), type: ICMP_ECHO_REQUEST, ident: 0x1234, seq, bodyLength: 8 });
  emitIpv4Header(pkt, 0, {
    src: RAW_IP,
    dst,
    protocol: 1,
    ttl: 64,
    tos: 0,
    ident: seq,
    dontFragment: false,
    moreFragments: false,
    fragmentOffset: 0,
    headerLength: 20,
    totalLength: pkt.length,
  });
  return pkt;
}

function two() {
  return makeLan([
    { name: 'a', addr: '198.18.0.1' },
    { name: 'b', addr: '198.18.0.2' },
  ]);
}

describe('Ethernet interface: ARP', () => {
  test('start-up sends two RFC 5227 announcements 2 s apart, in the form the Linux kernel uses', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', mac: mac('02:00:c6:12:00:01') }]);
    await runFor(lan.clock, 5000, 50);
    const ann = framesOf(lan.seg, ETHERTYPE_ARP, 'a');
    // Byte for byte what Linux sent on link up (test/unit/ethernet-wire.test.ts, ARP_ANNOUNCE).
    const linux = hex('ffff ffff ffff 0200 c612 0001 0806 0001 0800 0604 0001 0200 c612 0001 c612 0001 0000 0000 0000 c612 0001');
    expect(ann).toEqual([linux, linux]);
    const times = lan.seg.seen.filter((f) => f.from === 'a').map((f) => f.t);
    expect(times[1]! - times[0]!).toBe(2000);
    expect(lan.hosts.a!.eth.counters.ArpOutAnnouncements).toBe(2);
  });

  test('two stacks resolve each other and carry 1 MB of TCP intact; the kernel-style neighbour entries are REACHABLE / STALE', async () => {
    const lan = two();
    const { a, b } = lan.hosts as Record<string, NonNullable<typeof lan.hosts.a>>;
    const data = testData(1 << 20);
    const got: Buffer[] = [];
    let ended = false;
    b.net
      .createServer((s) => {
        s.on('data', (d: Buffer) => got.push(d));
        s.on('end', () => {
          ended = true;
          s.end();
        });
      })
      .listen(9000);
    const c = a.net.connect({ host: '198.18.0.2', port: 9000 });
    const sink = watch(c);
    c.end(data);
    expect(await runUntil(lan.clock, () => ended && sink.closed, 30_000)).toBe(true);
    expect(sink.error).toBeNull();
    expect(sha256(Buffer.concat(got))).toBe(sha256(data));
    expect(a.eth.neighbours.state(b.addr)).toBe(Nud.Reachable); // it asked, b answered
    // b learnt a from a's request (STALE), and using that entry moved it to DELAY: no request of its own.
    expect([Nud.Stale, Nud.Delay]).toContain(b.eth.neighbours.state(a.addr));
    expect(b.eth.neighbours.macOf(a.addr)).toBe(a.mac);
    expect(b.eth.counters.ArpOutRequests).toBe(0);
    expect(a.eth.neighbours.macOf(b.addr)).toBe(b.mac);
    // One request, one reply: the resolution did not repeat per packet.
    expect(a.eth.counters.ArpOutRequests).toBe(1);
    expect(b.eth.counters.ArpOutReplies).toBe(1);
    // Every IPv4 frame went to the other's MAC.
    for (const f of framesOf(lan.seg, ETHERTYPE_IPV4, 'a')) expect(dstMac(f)).toBe(b.mac);
  });

  test('answers a request for its address with a unicast reply, and nothing else', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true }]);
    const a = lan.hosts.a!;
    const ask = (tpa: number) =>
      lan.sendRaw(
        frame(
          BROADCAST_MAC,
          RAW_MAC,
          ETHERTYPE_ARP,
          arpPayload({
            operation: ARP_OP_REQUEST,
            senderHardwareAddr: RAW_MAC,
            senderProtocolAddr: RAW_IP,
            targetHardwareAddr: 0,
            targetProtocolAddr: tpa,
          }),
        ),
      );
    ask(a.addr);
    ask(ip('198.18.0.7'));
    await runFor(lan.clock, 10);
    expect(lan.got.length).toBe(1);
    const f = lan.got[0]!;
    expect([dstMac(f), srcMac(f), f.readUInt16BE(12), f.length]).toEqual([RAW_MAC, a.mac, ETHERTYPE_ARP, 42]);
    expect(arpOf(f)).toEqual({
      operation: ARP_OP_REPLY,
      senderHardwareAddr: a.mac,
      senderProtocolAddr: a.addr,
      targetHardwareAddr: RAW_MAC,
      targetProtocolAddr: RAW_IP,
    });
    expect(a.eth.counters).toMatchObject({ ArpInRequests: 2, ArpOutReplies: 1, ArpInIgnored: 1 });
    // The asker is now a STALE neighbour (it will talk to us next), the other request taught nothing.
    expect(a.eth.neighbours.state(RAW_IP)).toBe(Nud.Stale);
    expect(a.eth.neighbours.counters.rcv_probes_mcast).toBe(1);
  });

  test('proxy ARP: every host address of the subnet is answered and accepted by IP, not its network or broadcast address', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true, eth: { proxyArp: [{ addr: ip('198.18.10.0'), prefix: 24 }] } }]);
    const a = lan.hosts.a!;
    for (const t of ['198.18.10.5', '198.18.10.254', '198.18.10.0', '198.18.10.255', '198.18.11.5']) {
      lan.sendRaw(
        frame(
          BROADCAST_MAC,
          RAW_MAC,
          ETHERTYPE_ARP,
          arpPayload({ operation: ARP_OP_REQUEST, senderHardwareAddr: RAW_MAC, senderProtocolAddr: RAW_IP, targetHardwareAddr: 0, targetProtocolAddr: ip(t) }),
        ),
      );
    }
    await runFor(lan.clock, 10);
    expect(lan.got.map((f) => formatIpv4(arpOf(f).senderProtocolAddr))).toEqual(['198.18.10.5', '198.18.10.254']);
    // An echo to a proxied address is answered from that address.
    lan.got.length = 0;
    lan.sendRaw(frame(a.mac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(ip('198.18.10.5'))));
    await runFor(lan.clock, 10);
    const replies = lan.got.filter((f) => f.readUInt16BE(12) === ETHERTYPE_IPV4);
    expect(replies.length).toBe(1);
    expect(formatIpv4(replies[0]!.readUInt32BE(14 + 12))).toBe('198.18.10.5');
    expect(a.stack.counters.IcmpOutEchoReps).toBe(1);
  });

  test('a probe for our address (sender 0.0.0.0) is answered; another host announcing our address is a conflict, defended once per 10 s', async () => {
    const events: unknown[] = [];
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true, eth: { onEvent: (e) => events.push(e) } }]);
    const a = lan.hosts.a!;
    lan.sendRaw(
      frame(
        BROADCAST_MAC,
        RAW_MAC,
        ETHERTYPE_ARP,
        arpPayload({ operation: ARP_OP_REQUEST, senderHardwareAddr: RAW_MAC, senderProtocolAddr: 0, targetHardwareAddr: 0, targetProtocolAddr: a.addr }),
      ),
    );
    await runFor(lan.clock, 10);
    expect(lan.got.length).toBe(1);
    expect(arpOf(lan.got[0]!)).toMatchObject({ operation: ARP_OP_REPLY, senderProtocolAddr: a.addr, targetProtocolAddr: 0 });
    expect(a.eth.neighbours.size).toBe(0);
    const conflict = () =>
      lan.sendRaw(
        frame(
          BROADCAST_MAC,
          RAW_MAC,
          ETHERTYPE_ARP,
          arpPayload({ operation: ARP_OP_REQUEST, senderHardwareAddr: RAW_MAC, senderProtocolAddr: a.addr, targetHardwareAddr: 0, targetProtocolAddr: a.addr }),
        ),
      );
    lan.got.length = 0;
    conflict();
    await runFor(lan.clock, 100);
    conflict();
    await runFor(lan.clock, 100);
    expect(a.eth.counters.ArpInConflicts).toBe(2);
    expect(lan.got.length).toBe(1); // one defence
    expect(arpOf(lan.got[0]!)).toMatchObject({ operation: ARP_OP_REQUEST, senderHardwareAddr: a.mac, senderProtocolAddr: a.addr, targetProtocolAddr: a.addr });
    expect(events).toEqual([
      { kind: 'arp-conflict', address: '198.18.0.1', mac: '52:54:00:00:00:99', defended: true },
      { kind: 'arp-conflict', address: '198.18.0.1', mac: '52:54:00:00:00:99', defended: false },
    ]);
    expect(a.eth.neighbours.state(a.addr)).toBeNull();
  });
});

describe('Ethernet interface: which frames are ours', () => {
  test('our MAC, broadcast and joined groups are taken; other unicast and unjoined multicast are counted and dropped', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true }]);
    const a = lan.hosts.a!;
    const echo = (dst: MacAddr, seq: number) => lan.sendRaw(frame(dst, RAW_MAC, ETHERTYPE_IPV4, echoRequest(a.addr, seq)));
    // Resolve RAW first so the replies can go out.
    a.eth.neighbours.learn(RAW_IP, RAW_MAC, { reply: false, forUs: true, gratuitous: false }, lan.clock.now);
    echo(a.mac, 1);
    echo(BROADCAST_MAC, 2);
    echo(mac('52:54:00:00:00:42'), 3); // someone else's
    echo(ipv4MulticastMac(ip('239.1.2.3')), 4); // a group we did not join (yet)
    await runFor(lan.clock, 10);
    a.eth.joinGroup(ip('239.1.2.3'));
    echo(ipv4MulticastMac(ip('239.1.2.3')), 5);
    echo(ipv4MulticastMac(ip('224.0.0.1')), 6); // all systems: always ours
    await runFor(lan.clock, 10);
    expect(a.stack.counters.IcmpInEchos).toBe(4);
    expect(a.eth.counters).toMatchObject({ EthInOtherHost: 1, EthInMcastNotJoined: 1, EthInBroadcast: 1, EthInMulticast: 2 });
  });

  test('promiscuous: everything is taken; the IP layer still keeps only our addresses', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true, eth: { promiscuous: true } }]);
    const a = lan.hosts.a!;
    lan.sendRaw(frame(mac('52:54:00:00:00:42'), RAW_MAC, ETHERTYPE_IPV4, echoRequest(a.addr, 1)));
    lan.sendRaw(frame(mac('52:54:00:00:00:42'), RAW_MAC, ETHERTYPE_IPV4, echoRequest(ip('198.18.0.42'), 2)));
    await runFor(lan.clock, 10);
    expect(a.eth.counters.EthInPromiscuous).toBe(2);
    expect(a.stack.counters.IcmpInEchos).toBe(1);
    expect(a.stack.counters.IpInAddrErrors).toBe(1);
  });

  test('malformed frames are counted by reason and dropped, and the stack keeps working', async () => {
    const lan = two();
    const { a, b } = lan.hosts as Record<string, NonNullable<typeof lan.hosts.a>>;
    const arpReq = arpPayload({
      operation: ARP_OP_REQUEST,
      senderHardwareAddr: RAW_MAC,
      senderProtocolAddr: RAW_IP,
      targetHardwareAddr: 0,
      targetProtocolAddr: a.addr,
    });
    const badLen = Buffer.from(arpReq);
    badLen[4] = 8; // hardware length 8
    const badPlen = Buffer.from(arpReq);
    badPlen[5] = 6;
    const badOp = Buffer.from(arpReq);
    badOp.writeUInt16BE(9, 6);
    const badHw = Buffer.from(arpReq);
    badHw.writeUInt16BE(6, 0);
    const mcastSrc = frame(a.mac, mac('01:00:5e:00:00:05'), ETHERTYPE_IPV4, echoRequest(a.addr));
    const crafted = [
      Buffer.from([1, 2, 3]), // runt
      frame(a.mac, RAW_MAC, ETHERTYPE_IPV4, Buffer.alloc(0)).subarray(0, 13), // runt: 13 bytes
      frame(a.mac, RAW_MAC, 0x0026, Buffer.alloc(38)), // IEEE 802.3 length field
      frame(a.mac, RAW_MAC, 0x88cc, Buffer.alloc(30)), // LLDP: no handler
      frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, arpReq.subarray(0, 20)), // truncated ARP
      frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, badLen),
      frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, badPlen),
      frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, badOp),
      frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_ARP, badHw),
      mcastSrc,
      frame(a.mac, RAW_MAC, ETHERTYPE_IPV4, hex('4500 0014')), // an IPv4 header cut short: the IP layer counts it
    ];
    for (const f of crafted) lan.sendRaw(f);
    await runFor(lan.clock, 10);
    expect(a.eth.counters).toMatchObject({
      EthInRunts: 2,
      EthInNotEthernetII: 1,
      EthInUnknownEtherType: 1,
      EthInBadSource: 1,
      ArpInErrors: 5,
      ArpInTruncated: 1,
      ArpInBadLengths: 2,
      ArpInBadOperation: 1,
      ArpInUnsupported: 1,
      ArpOutReplies: 0,
    });
    expect(a.stack.counters.IpInHdrErrors).toBe(1);
    expect(a.stack.counters.IcmpInEchos).toBe(0);
    expect(a.eth.neighbours.size).toBe(0);
    // Still fine: a TCP exchange afterwards.
    let got = '';
    b.net
      .createServer((s) =>
        s.on('data', (d: Buffer) => {
          got += d.toString();
        }),
      )
      .listen(7);
    a.net.connect({ host: '198.18.0.2', port: 7 }).end('after the garbage');
    expect(await runUntil(lan.clock, () => got === 'after the garbage', 5000)).toBe(true);
  });
});

describe('Ethernet interface: failure and routing', () => {
  test('TCP connect to an address nobody answers fails with EHOSTUNREACH after mcast_solicit requests (3 s)', async () => {
    const events: unknown[] = [];
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', eth: { onEvent: (e) => events.push(e) } }]);
    const a = lan.hosts.a!;
    const t0 = lan.clock.now;
    const c = a.net.connect({ host: '198.18.0.77', port: 80 });
    const sink = watch(c);
    expect(await runUntil(lan.clock, () => sink.error !== null, 10_000, 10)).toBe(true);
    expect(sink.error!.code).toBe('EHOSTUNREACH');
    expect(lan.clock.now - t0).toBeGreaterThanOrEqual(3000);
    expect(lan.clock.now - t0).toBeLessThan(3100);
    const reqs = framesOf(lan.seg, ETHERTYPE_ARP, 'a').filter((f) => arpOf(f).targetProtocolAddr === ip('198.18.0.77'));
    expect(reqs.length).toBe(3);
    expect(reqs.every((f) => dstMac(f) === BROADCAST_MAC)).toBe(true);
    expect(a.eth.neighbours.state(ip('198.18.0.77'))).toBe(Nud.Failed);
    expect(a.eth.counters.NeighUnreachReported).toBeGreaterThanOrEqual(1);
    expect(a.stack.counters.TcpAttemptFails).toBe(1);
    // One event for the failed resolution: the SYN and its retransmissions at 1 s and 3 s (the
    // TCP timer fires before the neighbour's at the same instant) waited.
    expect(events).toEqual([{ kind: 'neigh-failed', address: '198.18.0.77', dropped: 3 }]);
  });

  test('to one of our own addresses: looped back up, no frame, no ARP', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', noStart: true }]);
    const a = lan.hosts.a!;
    let got = '';
    a.net
      .createServer((s) =>
        s.on('data', (d: Buffer) => {
          got += d.toString();
        }),
      )
      .listen(80);
    a.net.connect({ host: '198.18.0.1', port: 80 }).end('to myself');
    expect(await runUntil(lan.clock, () => got === 'to myself', 2000)).toBe(true);
    expect(lan.seg.seen.length).toBe(0);
    expect(a.eth.counters.EthLoopback).toBeGreaterThanOrEqual(3);
    expect(a.eth.neighbours.size).toBe(0);
  });

  test('UDP to an address nobody answers: the socket gets EHOSTUNREACH', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1' }]);
    const a = lan.hosts.a!;
    const s = a.net.createUdpSocket();
    const errors: (Error & { code?: string })[] = [];
    s.on('error', (e: Error & { code?: string }) => errors.push(e));
    s.bind(5000);
    await runFor(lan.clock, 1);
    s.send(Buffer.from('hello'), 9, '198.18.0.78');
    expect(await runUntil(lan.clock, () => errors.length > 0, 10_000, 10)).toBe(true);
    expect(errors.map((e) => e.code)).toEqual(['EHOSTUNREACH']);
  });

  test('off the subnet, the next hop is the gateway: ARP asks for it and frames go to its MAC', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.1', gateway: '198.18.0.254' }]);
    const a = lan.hosts.a!;
    const routerMac = mac('52:54:00:00:00:fe');
    // A "router" on the raw port answers for 198.18.0.254.
    lan.raw.onReceive = (frames, n) => {
      for (let i = 0; i < n; i++) {
        const f = frames[i]!;
        lan.got.push(Buffer.from(f));
        if (f.readUInt16BE(12) !== ETHERTYPE_ARP) continue;
        const r = arpOf(f);
        if (r.operation === ARP_OP_REQUEST && r.targetProtocolAddr === ip('198.18.0.254')) {
          lan.sendRaw(
            frame(
              r.senderHardwareAddr,
              routerMac,
              ETHERTYPE_ARP,
              arpPayload({
                operation: ARP_OP_REPLY,
                senderHardwareAddr: routerMac,
                senderProtocolAddr: ip('198.18.0.254'),
                targetHardwareAddr: r.senderHardwareAddr,
                targetProtocolAddr: r.senderProtocolAddr,
              }),
            ),
          );
        }
      }
    };
    const s = a.net.createUdpSocket();
    s.bind(5000);
    await runFor(lan.clock, 1);
    s.send(Buffer.from('far away'), 9, '203.0.113.9');
    await runFor(lan.clock, 50);
    const asked = lan.got.filter((f) => f.readUInt16BE(12) === ETHERTYPE_ARP).map((f) => formatIpv4(arpOf(f).targetProtocolAddr));
    expect(asked).not.toContain('203.0.113.9');
    expect(asked).toContain('198.18.0.254');
    const udp = lan.got.filter((f) => f.readUInt16BE(12) === ETHERTYPE_IPV4);
    expect(udp.length).toBe(1);
    expect(dstMac(udp[0]!)).toBe(routerMac);
    expect(formatIpv4(udp[0]!.readUInt32BE(14 + 16))).toBe('203.0.113.9');
    expect(a.stack.routes.describe(0).networks).toContainEqual({ dest: '0.0.0.0/0', mtu: 1500, kind: 'default', via: '198.18.0.254' });
  });

  test('ICMP port unreachable comes back over Ethernet to the UDP socket (ECONNREFUSED)', async () => {
    const lan = two();
    const { a } = lan.hosts as Record<string, NonNullable<typeof lan.hosts.a>>;
    const s = a.net.createUdpSocket();
    const errors: (Error & { code?: string })[] = [];
    s.on('error', (e: Error & { code?: string }) => errors.push(e));
    s.bind(5001);
    await runFor(lan.clock, 1);
    s.send(Buffer.from('nobody'), 4444, '198.18.0.2');
    expect(await runUntil(lan.clock, () => errors.length > 0, 5000)).toBe(true);
    expect(errors[0]!.code).toBe('ECONNREFUSED');
  });

  test('PMTU over Ethernet: a fragmentation-needed from a router lowers the path MTU and the connection resends smaller', async () => {
    const lan = two();
    const { a, b } = lan.hosts as Record<string, NonNullable<typeof lan.hosts.a>>;
    let bytes = 0;
    b.net
      .createServer((s) =>
        s.on('data', (d: Buffer) => {
          bytes += d.length;
        }),
      )
      .listen(9001);
    const c = a.net.connect({ host: '198.18.0.2', port: 9001 });
    await runUntil(lan.clock, () => [...a.stack.tcp.table.all()].some((x) => x.state === 4), 2000);
    // Drop a's full-sized segments; answer the first with an ICMP fragmentation needed (MTU 1280) from a router.
    let sentIcmp = false;
    lan.seg.dropFilter = (f, from) => {
      if (from !== 'a' || f.readUInt16BE(12) !== ETHERTYPE_IPV4 || f.length - 14 <= 1280) return false;
      if (!sentIcmp) {
        sentIcmp = true;
        const quote = f.subarray(14, 14 + 28);
        const icmp = Buffer.alloc(20 + 8 + quote.length);
        quote.copy(icmp, 28);
        emitIcmp(icmp, 20, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: UNREACH_FRAG_NEEDED, nextHopMtu: 1280, bodyLength: quote.length });
        emitIpv4Header(icmp, 0, {
          src: ip('198.18.0.250'),
          dst: a.addr,
          protocol: 1,
          ttl: 64,
          tos: 0,
          ident: 1,
          dontFragment: false,
          moreFragments: false,
          fragmentOffset: 0,
          headerLength: 20,
          totalLength: icmp.length,
        });
        lan.sendRaw(frame(a.mac, RAW_MAC, ETHERTYPE_IPV4, icmp));
      }
      return true;
    };
    const data = testData(200_000);
    c.write(data);
    expect(await runUntil(lan.clock, () => bytes === data.length, 20_000)).toBe(true);
    expect(a.stack.routes.hostRoutes.get(b.addr)?.mtu).toBe(1280);
    expect(a.stack.counters.FsHostRoutesCreated).toBe(1);
  });
});

describe('Ethernet interface: IGMPv2', () => {
  test('join reports at once and once more within 10 s; a general query is answered within Max Resp Time; leave goes to 224.0.0.2', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.2', noStart: true }]);
    const a = lan.hosts.a!;
    const group = ip('239.1.2.3');
    const t0 = lan.clock.now;
    a.eth.joinGroup(group);
    await runFor(lan.clock, 10_000, 100);
    const reports = () => lan.seg.seen.filter((f) => f.from === 'a' && f.frame.readUInt16BE(12) === ETHERTYPE_IPV4);
    expect(reports().length).toBe(2);
    // The first is what Linux sends (test/unit/ethernet-wire.test.ts), from our MAC.
    const want = Buffer.concat([Buffer.alloc(14), buildIgmpDatagram(a.addr, group, { type: IGMP_V2_MEMBERSHIP_REPORT, maxRespTime: 0, group })]);
    writeMac(want, 0, ipv4MulticastMac(group));
    writeMac(want, 6, a.mac);
    want.writeUInt16BE(0x0800, 12);
    expect(reports()[0]!.frame).toEqual(want);
    expect(reports()[0]!.t).toBe(t0);
    expect(reports()[1]!.t - t0).toBe(5000); // random 0.5 of the 10 s interval
    // A Linux bridge's general query (max resp 10 s, captured).
    lan.sendRaw(hex('0100 5e00 0001 5254 00aa bbcc 0800 46c0 0020 0000 4000 0102 0417 0000 0000 e000 0001 9404 0000 1164 ee9b 0000 0000'));
    const tq = lan.clock.now;
    await runFor(lan.clock, 10_000, 100);
    expect(reports().length).toBe(3);
    expect(reports()[2]!.t - tq).toBeGreaterThan(0);
    expect(reports()[2]!.t - tq).toBeLessThanOrEqual(10_000);
    expect(a.eth.counters).toMatchObject({ IgmpInQueries: 1, IgmpOutReports: 3 });
    a.eth.leaveGroup(group);
    await runFor(lan.clock, 10);
    const last = reports().at(-1)!.frame;
    expect(readMac(last, 0)).toBe(ipv4MulticastMac(ip('224.0.0.2')));
    expect(last[14 + 24]).toBe(IGMP_LEAVE_GROUP);
    expect(a.eth.counters.IgmpOutLeaves).toBe(1);
    // After leaving, the group's frames are no longer ours.
    lan.sendRaw(frame(ipv4MulticastMac(group), RAW_MAC, ETHERTYPE_IPV4, echoRequest(group)));
    await runFor(lan.clock, 10);
    expect(a.eth.counters.EthInMcastNotJoined).toBe(1);
  });

  test('report suppression: another member answering the query first keeps us quiet, and we send no leave', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.2', noStart: true }]);
    const a = lan.hosts.a!;
    const group = ip('239.1.2.3');
    a.eth.joinGroup(group);
    await runFor(lan.clock, 11_000, 100);
    const before = a.eth.counters.IgmpOutReports;
    const query = buildIgmpDatagram(0, ip('224.0.0.1'), { type: IGMP_MEMBERSHIP_QUERY, maxRespTime: 100, group: 0 });
    lan.sendRaw(frame(ipv4MulticastMac(ip('224.0.0.1')), RAW_MAC, ETHERTYPE_IPV4, query));
    await runFor(lan.clock, 100);
    const other = buildIgmpDatagram(RAW_IP, group, { type: IGMP_V2_MEMBERSHIP_REPORT, maxRespTime: 0, group });
    lan.sendRaw(frame(ipv4MulticastMac(group), RAW_MAC, ETHERTYPE_IPV4, other));
    await runFor(lan.clock, 11_000, 100);
    expect(a.eth.counters.IgmpOutReports).toBe(before);
    expect(a.eth.counters.IgmpInReports).toBe(1);
    a.eth.leaveGroup(group);
    expect(a.eth.counters.IgmpOutLeaves).toBe(0);
  });
});

describe('Ethernet interface: the seam for NLB', () => {
  test('an extra unicast MAC, a masked source MAC, a cluster address answered with the cluster MAC', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.2', noStart: true }]);
    const a = lan.hosts.a!;
    const cluster = ip('198.18.0.10');
    const clusterMac = mac('02:bf:c6:12:00:0a');
    const masked = mac('02:01:c6:12:00:0a');
    a.eth.addUnicastMac(clusterMac);
    a.eth.sourceMac = masked;
    a.eth.addAddress(cluster, { arpMac: clusterMac });
    lan.sendRaw(
      frame(
        BROADCAST_MAC,
        RAW_MAC,
        ETHERTYPE_ARP,
        arpPayload({ operation: ARP_OP_REQUEST, senderHardwareAddr: RAW_MAC, senderProtocolAddr: RAW_IP, targetHardwareAddr: 0, targetProtocolAddr: cluster }),
      ),
    );
    await runFor(lan.clock, 10);
    const rep = lan.got[0]!;
    expect(formatMac(srcMac(rep))).toBe('02:01:c6:12:00:0a'); // the frame: masked
    expect(formatMac(arpOf(rep).senderHardwareAddr)).toBe('02:bf:c6:12:00:0a'); // ARP: the cluster MAC
    lan.got.length = 0;
    lan.sendRaw(frame(clusterMac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(cluster)));
    await runFor(lan.clock, 10);
    expect(a.stack.counters.IcmpInEchos).toBe(1);
    const reply = lan.got.find((f) => f.readUInt16BE(12) === ETHERTYPE_IPV4)!;
    expect(srcMac(reply)).toBe(masked);
    expect(formatIpv4(reply.readUInt32BE(14 + 12))).toBe('198.18.0.10');
    // Leaving the cluster: the address is no longer answered, in ARP or in IP.
    expect(a.eth.removeAddress(cluster)).toBe(true);
    expect(a.eth.removeAddress(a.addr)).toBe(false); // the stack's own address stays
    lan.got.length = 0;
    lan.sendRaw(
      frame(
        BROADCAST_MAC,
        RAW_MAC,
        ETHERTYPE_ARP,
        arpPayload({ operation: ARP_OP_REQUEST, senderHardwareAddr: RAW_MAC, senderProtocolAddr: RAW_IP, targetHardwareAddr: 0, targetProtocolAddr: cluster }),
      ),
    );
    lan.sendRaw(frame(clusterMac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(cluster, 2)));
    await runFor(lan.clock, 10);
    expect(lan.got).toEqual([]);
    expect(a.stack.counters.IpInAddrErrors).toBe(1);
  });

  test('a multicast cluster MAC, frames of EtherType 0x886F both ways, an IPv4 filter before IP input', async () => {
    const lan = makeLan([{ name: 'a', addr: '198.18.0.2', noStart: true }]);
    const a = lan.hosts.a!;
    const cluster = ip('198.18.0.10');
    const mcastMac = mac('03:bf:c6:12:00:0a');
    a.eth.addMulticastMac(mcastMac);
    a.eth.addAddress(cluster, { arpMac: mcastMac, announce: false });
    const heard: { src: string; len: number }[] = [];
    a.eth.onEtherType(ETHERTYPE_MS_NLB, (f, src) => heard.push({ src: formatMac(src), len: f.length }));
    expect(() => a.eth.onEtherType(ETHERTYPE_MS_NLB, () => {})).toThrow(/already/);
    lan.sendRaw(frame(BROADCAST_MAC, RAW_MAC, ETHERTYPE_MS_NLB, Buffer.alloc(100, 7)));
    a.eth.sendFrame({ dst: BROADCAST_MAC, etherType: ETHERTYPE_MS_NLB }, Buffer.from('heartbeat'));
    // Odd source ports pass, even ones are somebody else's bucket.
    let seen = 0;
    a.eth.setIpv4Filter(cluster, (pkt) => {
      seen++;
      return (pkt.readUInt16BE(20) & 1) === 1;
    });
    a.eth.neighbours.learn(RAW_IP, RAW_MAC, { reply: false, forUs: true, gratuitous: false }, lan.clock.now);
    const udp = (sport: number) => {
      const p = Buffer.alloc(20 + 8 + 4);
      emitUdp(p, 20, { srcPort: sport, dstPort: 9, payloadOffset: 0, payloadLength: 4 }, RAW_IP, cluster);
      emitIpv4Header(p, 0, {
        src: RAW_IP,
        dst: cluster,
        protocol: PROTO_UDP,
        ttl: 64,
        tos: 0,
        ident: sport,
        dontFragment: false,
        moreFragments: false,
        fragmentOffset: 0,
        headerLength: 20,
        totalLength: p.length,
      });
      return frame(mcastMac, RAW_MAC, ETHERTYPE_IPV4, p);
    };
    for (const sport of [1001, 1002, 1003, 1004]) lan.sendRaw(udp(sport));
    lan.sendRaw(frame(a.mac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(a.addr))); // the dedicated address: no filter
    await runFor(lan.clock, 10);
    expect(heard).toEqual([{ src: '52:54:00:00:00:99', len: 114 }]);
    const hb = lan.seg.seen.find((f) => f.from === 'a' && f.frame.readUInt16BE(12) === ETHERTYPE_MS_NLB)!;
    expect(hb.frame.subarray(14).toString()).toBe('heartbeat');
    expect(seen).toBe(4);
    expect(a.eth.counters.EthInIpv4Filtered).toBe(2);
    expect(a.stack.counters.UdpInDatagrams + a.stack.counters.UdpNoPorts).toBe(2);
    expect(a.stack.counters.IcmpInEchos).toBe(1);
    expect(a.eth.describe(lan.clock.now)).toMatchObject({ multicastMacs: ['03:bf:c6:12:00:0a'], etherTypes: ['0x886f'], ipv4Filters: ['198.18.0.10'] });
  });

  test('a learning bridge floods frames to a MAC it never saw as a source (why NLB unicast mode masks it)', async () => {
    const lan = makeLan(
      [
        { name: 'h1', addr: '198.18.0.2', noStart: true },
        { name: 'h2', addr: '198.18.0.3', noStart: true },
      ],
      { mode: 'bridge' },
    );
    const { h1, h2 } = lan.hosts as Record<string, NonNullable<typeof lan.hosts.h1>>;
    const clusterMac = mac('02:bf:c6:12:00:0a');
    for (const h of [h1, h2]) {
      h.eth.addUnicastMac(clusterMac);
      h.eth.addAddress(ip('198.18.0.10'), { arpMac: clusterMac, announce: false });
    }
    h1.eth.sourceMac = mac('02:01:c6:12:00:0a');
    h2.eth.sourceMac = mac('02:02:c6:12:00:0a');
    h1.eth.sendFrame({ dst: BROADCAST_MAC, etherType: ETHERTYPE_MS_NLB }, Buffer.alloc(10));
    h2.eth.sendFrame({ dst: BROADCAST_MAC, etherType: ETHERTYPE_MS_NLB }, Buffer.alloc(10));
    await runFor(lan.clock, 10);
    expect(lan.seg.learned().has(clusterMac)).toBe(false);
    lan.sendRaw(frame(clusterMac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(ip('198.18.0.10'))));
    await runFor(lan.clock, 10);
    // Both hosts saw it: the bridge flooded it, never having learnt the cluster MAC.
    expect([h1.stack.counters.IcmpInEchos, h2.stack.counters.IcmpInEchos]).toEqual([1, 1]);
    expect(lan.seg.learned().has(clusterMac)).toBe(false);
    // Once a host sends from the cluster MAC itself, the bridge learns it and the other host stops seeing the traffic.
    h1.eth.sourceMac = clusterMac;
    h1.eth.sendFrame({ dst: BROADCAST_MAC, etherType: ETHERTYPE_MS_NLB }, Buffer.alloc(10));
    await runFor(lan.clock, 10);
    lan.sendRaw(frame(clusterMac, RAW_MAC, ETHERTYPE_IPV4, echoRequest(ip('198.18.0.10'), 2)));
    await runFor(lan.clock, 10);
    expect([h1.stack.counters.IcmpInEchos, h2.stack.counters.IcmpInEchos]).toEqual([2, 1]);
  });
});
