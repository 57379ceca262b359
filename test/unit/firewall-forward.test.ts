/**
 * The firewall's forwarding plane and packet filter on the virtual clock
 * (test/unit/helpers/firewall.ts): SecureNAT for UDP, TCP and ICMP echo, TTL expiry and
 * the ICMP errors a router sends (RFC 1812), DF and the next hop's MTU, fragmentation,
 * ICMP errors translated back to the client, default deny from outside with every drop
 * counted by reason, rules, and the idle timeout.
 */
import { describe, expect, it } from 'vitest';
import { emitIpv4Header, newIpv4Repr, PROTO_UDP } from '../../stack/wire/ipv4';
import { emitUdp } from '../../stack/wire/udp';
import { internetChecksum } from '../../stack/wire/checksum';
import { FsUdpSocket } from '../../stack/api/dgram';
import { A_ADDR, A_IP, B_ADDR, B_IP, FE_ADDR, FE_IP, FI_IP, makeFirewall, runUntil, type FirewallRig } from './helpers/firewall';
import { sinkServer } from './helpers/pair';
import { testData, sha256, watch } from './helpers/pair';

/** An IPv4/UDP datagram from A, with the TTL, DF and size asked for. */
function udpPacket(o: { src?: number; dst?: number; sport?: number; dport?: number; ttl?: number; df?: boolean; payload?: number }): Buffer {
  const n = o.payload ?? 32;
  const pkt = Buffer.alloc(28 + n, 0x5a);
  emitUdp(pkt, 20, { srcPort: o.sport ?? 4000, dstPort: o.dport ?? 9, payloadOffset: 0, payloadLength: n }, o.src ?? A_IP, o.dst ?? B_IP);
  const r = newIpv4Repr();
  Object.assign(r, {
    src: o.src ?? A_IP,
    dst: o.dst ?? B_IP,
    protocol: PROTO_UDP,
    ttl: o.ttl ?? 64,
    ident: 77,
    dontFragment: o.df ?? false,
    totalLength: pkt.length,
  });
  emitIpv4Header(pkt, 0, r);
  return pkt;
}

/** Every packet a stack receives, copied (its IP input hook sees them before delivery). */
function capture(s: FirewallRig['a']): Buffer[] {
  const got: Buffer[] = [];
  s.ipInputHook = {
    input: (pkt) => {
      got.push(Buffer.from(pkt));
      return false;
    },
  };
  return got;
}

function udpSocket(rig: FirewallRig, which: 'a' | 'b', port: number) {
  const s = new FsUdpSocket(rig[which]);
  const got: { data: Buffer; from: string; port: number }[] = [];
  s.on('message', (data: Buffer, r: { address: string; port: number }) => got.push({ data, from: r.address, port: r.port }));
  s.bind(port);
  return { s, got };
}

describe('SecureNAT and the packet filter', () => {
  it('UDP from inside goes out from the external address with a mapped port; the reply comes back; the session is listed', async () => {
    const rig = await makeFirewall();
    const a = udpSocket(rig, 'a', 4000),
      b = udpSocket(rig, 'b', 9);
    a.s.send(Buffer.from('ping'), 9, B_ADDR);
    await runUntil(rig.clock, () => b.got.length > 0, 100);
    expect(b.got[0]!.from).toBe(FE_ADDR);
    const mapped = b.got[0]!.port;
    expect(mapped).toBeGreaterThanOrEqual(10000);
    expect(mapped).toBeLessThanOrEqual(29999);
    b.s.send(Buffer.from('pong'), mapped, FE_ADDR);
    await runUntil(rig.clock, () => a.got.length > 0, 100);
    expect(a.got[0]).toMatchObject({ from: B_ADDR, port: 9 });
    expect(a.got[0]!.data.toString()).toBe('pong');
    const rows = rig.fw.describeSessions(rig.fi.now);
    expect(rows).toEqual([
      expect.objectContaining({
        kind: 'securenat',
        proto: 'udp',
        internal: `${A_ADDR}:4000`,
        external: `${FE_ADDR}:${mapped}`,
        remote: `${B_ADDR}:9`,
        packetsOut: 1,
        packetsIn: 1,
      }),
    ]);
    expect(rig.fw.counters).toMatchObject({ FwForwardedOut: 1, FwForwardedIn: 1, FwSessionsCreated: 1, FwDropped: 0 });
    // Both UDP checksums were right after translation: the receivers counted no errors.
    expect(rig.b.counters.UdpInCsumErrors + rig.a.counters.UdpInCsumErrors).toBe(0);
  });

  it('TCP through SecureNAT: a 300 kB transfer arrives whole; the session follows the connection to closed', async () => {
    const rig = await makeFirewall();
    const { sinks } = sinkServer({ netB: rig.netB } as never, 8080);
    const data = testData(300_000, 5);
    const c = rig.netA.connect({ host: B_ADDR, port: 8080 });
    const cs = watch(c);
    c.end(data);
    await runUntil(rig.clock, () => sinks.length > 0 && sinks[0]!.ended && cs.closed, 20_000);
    expect(cs.error).toBeNull();
    expect(sha256(sinks[0]!.data())).toBe(sha256(data));
    expect(sinks[0]!.socket!.remoteAddress).toBe(FE_ADDR);
    const s = rig.fw.sessions.sessions()[0]!;
    expect(s.tcp).toBe('closed');
    expect(rig.a.counters.TcpInCsumErrors + rig.b.counters.TcpInCsumErrors).toBe(0);
    // Closed sessions go after 10 s, idle ones after 120 s.
    await runUntil(rig.clock, () => rig.fw.sessions.size === 0, 12_000, 100);
    expect(rig.fw.counters.FwSessionsClosed).toBe(1);
  });

  it('ICMP echo is translated by its identifier, both ways', async () => {
    const rig = await makeFirewall();
    const seenA = capture(rig.a);
    const req = Buffer.alloc(28 + 8);
    req[20] = 8;
    req.writeUInt16BE(0x1234, 24);
    req.writeUInt16BE(1, 26);
    req.writeUInt16BE(internetChecksum(req, 20, 16), 22);
    const r = newIpv4Repr();
    Object.assign(r, { src: A_IP, dst: B_IP, protocol: 1, ttl: 64, ident: 1, totalLength: req.length });
    emitIpv4Header(req, 0, r);
    rig.a.sendIp(req, null);
    rig.a.flushSoon();
    await runUntil(rig.clock, () => seenA.some((p) => p[9] === 1 && p[20] === 0), 100);
    const reply = seenA.find((p) => p[9] === 1 && p[20] === 0)!;
    expect(reply.readUInt32BE(12)).toBe(B_IP);
    expect(reply.readUInt16BE(24)).toBe(0x1234);
    expect(internetChecksum(reply, 20, reply.length - 20)).toBe(0);
    expect(rig.b.counters.IcmpInEchos).toBe(1);
  });

  it('TTL 1: dropped with ICMP time exceeded from the internal address, quoting the datagram (RFC 1812 5.3.1)', async () => {
    const rig = await makeFirewall();
    const seenA = capture(rig.a),
      seenB = capture(rig.b);
    rig.a.sendIp(udpPacket({ ttl: 1 }), null);
    rig.a.flushSoon();
    await runUntil(rig.clock, () => seenA.length > 0, 100);
    const icmp = seenA[0]!;
    expect(icmp.readUInt32BE(12)).toBe(FI_IP);
    expect([icmp[20], icmp[21]]).toEqual([11, 0]);
    expect(icmp.readUInt32BE(28 + 12)).toBe(A_IP); // the quoted header, untranslated
    expect(icmp.readUInt16BE(28 + 20)).toBe(4000);
    expect(internetChecksum(icmp, 20, icmp.length - 20)).toBe(0);
    expect(seenB).toEqual([]);
    expect(rig.fw.drops['ttl-exceeded']).toBe(1);
    // TTL 2 goes through with 1 left.
    rig.a.sendIp(udpPacket({ ttl: 2 }), null);
    rig.a.flushSoon();
    await runUntil(rig.clock, () => seenB.length > 0, 100);
    expect(seenB[0]![8]).toBe(1);
  });

  it('DF and too big for the next hop: fragmentation needed with its MTU; without DF the firewall fragments and B reassembles', async () => {
    const rig = await makeFirewall({ outside: { mtu: 1280 } });
    rig.fe.routes.setInterfaceMtu(1280);
    const seenA = capture(rig.a);
    const b = udpSocket(rig, 'b', 9);
    rig.a.sendIp(udpPacket({ df: true, payload: 1372 }), null);
    rig.a.flushSoon(); // 1400 bytes
    await runUntil(rig.clock, () => seenA.length > 0, 100);
    const icmp = seenA[0]!;
    expect(icmp.readUInt32BE(12)).toBe(FI_IP);
    expect([icmp[20], icmp[21]]).toEqual([3, 4]);
    expect(icmp.readUInt16BE(26)).toBe(1280); // RFC 1191: the next-hop MTU
    expect(rig.fw.drops['frag-needed']).toBe(1);
    expect(b.got).toEqual([]);
    rig.a.sendIp(udpPacket({ df: false, payload: 1372 }), null);
    rig.a.flushSoon();
    await runUntil(rig.clock, () => b.got.length > 0, 100);
    expect(b.got[0]!.data.length).toBe(1372);
    expect(rig.fw.counters).toMatchObject({ FwFragmentedDatagrams: 1, FwFragmentsCreated: 2 });
    expect(rig.b.counters.IpReasmOKs).toBe(1);
    expect(rig.outside.counters['a->b'].dropped).toBe(0); // nothing larger than 1280 left the firewall
  });

  it('from outside, on a session: TTL 1 and DF-too-big for the inside are answered quoting the datagram as its sender sent it', async () => {
    const rig = await makeFirewall({ inside: { mtu: 1280 } });
    rig.fi.routes.setInterfaceMtu(1280);
    const seenB = capture(rig.b);
    rig.a.sendIp(udpPacket({ payload: 10 }), null); // opens the session A:4000 -> B:9
    rig.a.flushSoon();
    await runUntil(rig.clock, () => rig.fw.sessions.size === 1, 100);
    const ext = [...rig.fw.sessions.byExt.values()][0]!.extPort;
    await runUntil(rig.clock, () => false, 20); // B's port unreachable for that datagram goes in first
    const forwardedIn = rig.fw.counters.FwForwardedIn;
    const back = (o: { ttl?: number; df?: boolean; payload?: number }) => {
      rig.b.sendIp(udpPacket({ src: B_IP, dst: FE_IP, sport: 9, dport: ext, ...o }), null);
      rig.b.flushSoon();
    };
    back({ ttl: 1 });
    await runUntil(rig.clock, () => seenB.some((p) => p[9] === 1), 100);
    const te = seenB.find((p) => p[9] === 1)!;
    expect([te[20], te[21]]).toEqual([11, 0]);
    expect(te.readUInt32BE(12)).toBe(FE_IP);
    expect(te.readUInt32BE(28 + 16)).toBe(FE_IP); // quoted destination: the external address, untranslated
    expect(te.readUInt16BE(28 + 22)).toBe(ext);
    seenB.length = 0;
    back({ df: true, payload: 1372 }); // 1400 bytes, the inside carries 1280
    await runUntil(rig.clock, () => seenB.some((p) => p[9] === 1), 100);
    const fn = seenB.find((p) => p[9] === 1)!;
    expect([fn[20], fn[21]]).toEqual([3, 4]);
    expect(fn.readUInt16BE(26)).toBe(1280);
    expect(fn.readUInt32BE(28 + 16)).toBe(FE_IP);
    expect(fn.readUInt16BE(28 + 22)).toBe(ext);
    expect(internetChecksum(fn, 20, fn.length - 20)).toBe(0);
    expect(rig.fw.drops).toMatchObject({ 'ttl-exceeded': 1, 'frag-needed': 1 });
    expect(rig.fw.counters.FwForwardedIn).toBe(forwardedIn); // neither went in
  });

  it("an ICMP port unreachable from outside is translated back: the client's socket hears ECONNREFUSED", async () => {
    const rig = await makeFirewall();
    const a = udpSocket(rig, 'a', 4001);
    const errors: string[] = [];
    a.s.on('error', (e: Error & { code?: string }) => errors.push(e.code ?? '?'));
    a.s.send(Buffer.from('x'), 5555, B_ADDR); // nobody listens on B:5555
    await runUntil(rig.clock, () => errors.length > 0, 200);
    expect(errors).toEqual(['ECONNREFUSED']);
    expect(rig.fw.counters.FwIcmpErrorsTranslated).toBe(1);
  });

  it('an ICMP error from the internal host about a datagram that came in through a session goes out translated', async () => {
    const rig = await makeFirewall();
    const a = udpSocket(rig, 'a', 4003),
      b = udpSocket(rig, 'b', 9);
    const errors: string[] = [];
    b.s.on('error', (e: Error & { code?: string }) => errors.push(e.code ?? '?'));
    a.s.send(Buffer.from('hello'), 9, B_ADDR);
    await runUntil(rig.clock, () => b.got.length > 0, 100);
    a.s.close(); // the client's port is gone: its kernel (here, A) answers port unreachable
    b.s.send(Buffer.from('late'), b.got[0]!.port, FE_ADDR);
    await runUntil(rig.clock, () => errors.length > 0, 200);
    expect(rig.a.counters.UdpNoPorts).toBe(1);
    expect(errors).toEqual(['ECONNREFUSED']); // B's stack matched the translated quote to its socket
    expect(rig.fw.counters.FwIcmpErrorsTranslated).toBe(1);
  });

  it('from outside, default deny: unsolicited datagrams are dropped and counted; a rule opens the way; spoofed sources are dropped', async () => {
    const rig = await makeFirewall({ rules: ['allow out any', 'allow in udp/9999 to 198.19.0.1/32'] });
    const fe9999 = new FsUdpSocket(rig.fe);
    const got: Buffer[] = [];
    fe9999.on('message', (d: Buffer) => got.push(d));
    fe9999.bind(9999);
    const b = udpSocket(rig, 'b', 3000);
    b.s.send(Buffer.from('knock'), 8888, FE_ADDR);
    b.s.send(Buffer.from('allowed'), 9999, FE_ADDR);
    await runUntil(rig.clock, () => got.length > 0, 100);
    expect(got.map(String)).toEqual(['allowed']);
    expect(rig.fw.drops['inbound-no-rule']).toBe(1);
    expect(rig.fe.counters.UdpNoPorts).toBe(0); // dropped by the filter, never answered
    // A source from the internal network arriving from outside.
    rig.b.sendIp(udpPacket({ src: A_IP, dst: FE_IP }), null);
    rig.b.flushSoon();
    await runUntil(rig.clock, () => rig.fw.drops.spoofed > 0, 100);
    expect(rig.fw.drops.spoofed).toBe(1);
    expect(rig.fw.rules.describe()).toEqual([
      { rule: 'allow out any', hits: 0 },
      { rule: 'allow in udp/9999 to 198.19.0.1/32', hits: 1 },
    ]);
  });

  it('a rule publishes an internal server: routed in untranslated, its answers go back untranslated', async () => {
    const rig = await makeFirewall({ rules: ['allow out any', 'allow in tcp/8080 to 198.18.1.2/32'] });
    const { sinks } = sinkServer({ netB: rig.netA } as never, 8080); // the server is A, inside
    const data = testData(50_000, 9);
    const c = rig.netB.connect({ host: A_ADDR, port: 8080 });
    const cs = watch(c);
    c.end(data);
    await runUntil(rig.clock, () => sinks.length > 0 && sinks[0]!.ended && cs.closed, 10_000);
    expect(cs.error).toBeNull();
    expect(sha256(sinks[0]!.data())).toBe(sha256(data));
    expect(sinks[0]!.socket!.remoteAddress).toBe(B_ADDR); // not translated
    expect(rig.fw.sessions.size).toBe(0);
    expect(rig.fw.rules.describe()[1]!.hits).toBeGreaterThan(0);
    // Another port of the same host stays closed.
    const d = rig.netB.connect({ host: A_ADDR, port: 8081 });
    watch(d);
    await runUntil(rig.clock, () => rig.fw.drops['inbound-no-rule'] > 0, 500);
    expect(rig.fw.drops['inbound-no-rule']).toBeGreaterThan(0);
    d.destroy();
  });

  it('a deny rule stops a client; a TCP segment without a session is dropped; an idle UDP session is forgotten after 120 s', async () => {
    const rig = await makeFirewall({ rules: ['deny out udp/53', 'allow out any'] });
    const a = udpSocket(rig, 'a', 4002),
      b = udpSocket(rig, 'b', 53);
    const seenA = capture(rig.a);
    a.s.send(Buffer.from('q'), 53, B_ADDR);
    await runUntil(rig.clock, () => rig.fw.drops['rule-deny'] > 0 && seenA.length > 0, 100);
    expect(b.got).toEqual([]);
    // The client hears why: destination unreachable, communication administratively prohibited (RFC 1812 5.2.7.1).
    expect([seenA[0]![20], seenA[0]![21]]).toEqual([3, 13]);
    expect(seenA[0]!.readUInt32BE(12)).toBe(FI_IP);
    const b9 = udpSocket(rig, 'b', 9);
    a.s.send(Buffer.from('q'), 9, B_ADDR);
    await runUntil(rig.clock, () => b9.got.length > 0, 100);
    expect(rig.fw.sessions.size).toBe(1);
    await runUntil(rig.clock, () => rig.fw.sessions.size === 0, 125_000, 500);
    expect(rig.fw.counters.FwSessionsExpired).toBe(1);
    // The server's late reply finds no session.
    b9.s.send(Buffer.from('late'), b9.got[0]!.port, FE_ADDR);
    await runUntil(rig.clock, () => rig.fw.drops['inbound-no-rule'] > 0, 100);
    expect(a.got).toEqual([]);
    // An ACK from inside that belongs to no session.
    const ack = Buffer.alloc(40);
    ack[32] = 0x50;
    ack[33] = 0x10; // data offset 5, ACK
    const r = newIpv4Repr();
    Object.assign(r, { src: A_IP, dst: B_IP, protocol: 6, ttl: 64, ident: 2, totalLength: 40 });
    emitIpv4Header(ack, 0, r);
    rig.a.sendIp(ack, null);
    rig.a.flushSoon();
    await runUntil(rig.clock, () => rig.fw.drops['tcp-no-session'] > 0, 100);
    expect(rig.fw.drops['tcp-no-session']).toBe(1);
  });
});
