/**
 * Half-open connections as compact entries (stack/tcp/halfopen.ts) and the caps on the
 * SYN queue (stack/tcp/listener.ts), on the virtual clock. Spoofed SYNs come from
 * 198.18.100.0/22 through the memory link; their SYN-ACKs are dropped on the link
 * (those hosts do not exist), so every entry stays half-open until recycled or expired.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { describe, expect, test } from 'vitest';
import { LinuxBacklog } from '../../stack/tcp/backlog';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { installFaults } from '../../stack/faults/install';
import type { FsSocket } from '../../stack/api/net';
import { ACK, FIN, RST, SYN } from '../../stack/wire/tcp';
import { A_IP, B_ADDR, B_IP, makePair, runFor, runUntil, sinkServer, watch, type Pair } from './helpers/pair';
import { craftTcp, Tap } from './helpers/tap';

const SPOOF_BASE = 0xc6126400; // 198.18.100.0

/** Linux listener policy without cookies and with room for `max` half-open entries. */
const roomy = (max: number) => new LinuxBacklog(() => ({ maxSynBacklog: max, syncookies: 0, abortOnOverflow: false, somaxconn: 4096, synAckRetries: 5 }));

/** SYNs from spoofed sources, sent straight into B's device (no tap: nothing is copied or kept). */
function flood(p: Pair, port: number, n: number, from = 0): void {
  for (let i = from; i < from + n; i++) {
    p.link.a.send(
      craftTcp({
        src: SPOOF_BASE + (i >> 8),
        sport: 1024 + (i & 255) * 200 + (i >> 16),
        dport: port,
        seq: (i * 2654435761) >>> 0,
        flags: SYN,
        mss: 1460,
        wscale: 7,
        sackPermitted: true,
        ts: [i + 1, 0],
      }),
    );
    if ((i & 63) === 63) p.link.a.flush();
  }
  p.link.a.flush();
}

/** Drops what B sends to the spoofed (nonexistent) sources. */
function blackholeSpoofed(p: Pair): void {
  p.link.dropFilter = (pkt, dir) => dir === 'b->a' && pkt.readUInt32BE(16) !== A_IP;
}

let gcFn: (() => void) | null = null;
function heapAfterGc(): number {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  return process.memoryUsage().heapUsed;
}

describe('half-open entries', () => {
  test('a half-open entry costs a few hundred bytes of heap, not a connection', async () => {
    const N = 20_000;
    // No link log: the test link would keep a record of every packet.
    const p = makePair({ log: false }, {}, { backlog: roomy(100_000) });
    blackholeSpoofed(p);
    sinkServer(p, 80);
    await runFor(p.clock, 5);
    const before = heapAfterGc();
    flood(p, 80, N);
    await runFor(p.clock, 5);
    const l = p.b.tcp.listeners.get(80)!;
    expect(l.synQueue.size).toBe(N);
    expect(p.b.tcp.halfOpenCount).toBe(N);
    expect(p.b.tcp.table.size).toBe(0); // no TcpConnection was made for any of them
    const perEntry = (heapAfterGc() - before) / N;
    console.log(`heap per half-open entry: ${perEntry.toFixed(0)} B`);
    // About 290 B here (the entry 152 B, its boxed doubles, its Map slot and heap slot);
    // a TcpConnection with its queues is over 2 KB (bench: memory).
    expect(perEntry).toBeLessThan(400);
    expect(perEntry).toBeGreaterThan(50);
  });

  test('the entry answers as SYN-RECEIVED does: a repeated SYN gets the SYN-ACK again, a wrong ACK a RST, the right ACK a connection', async () => {
    const p = makePair();
    const tap = new Tap(p);
    // B's segments are seen, then kept from A (which has no such connection and would reset it).
    tap.drop = (s) => s.dir === 'b->a';
    const srv = sinkServer(p, 9000);
    await runFor(p.clock, 1);
    tap.inject('b', craftTcp({ sport: 40000, dport: 9000, seq: 1000, flags: SYN, mss: 1460, wscale: 7, sackPermitted: true, ts: [500, 0] }));
    await runFor(p.clock, 2);
    const [first] = tap.tcp('b->a', (t) => t.flags === (SYN | ACK));
    expect(first.tcp).toMatchObject({ ack: 1001, mss: 1460, wscale: 7, sackPermitted: true, hasTimestamp: true, tsEcr: 500 });
    // The SYN again: the same SYN-ACK at once (not the 1 s timer), counted as a retransmission.
    tap.inject('b', craftTcp({ sport: 40000, dport: 9000, seq: 1000, flags: SYN, mss: 1460, wscale: 7, sackPermitted: true, ts: [501, 0] }));
    await runFor(p.clock, 2);
    const synAcks = tap.tcp('b->a', (t) => t.flags === (SYN | ACK));
    expect(synAcks.length).toBe(2);
    expect(synAcks[1].tcp.seq).toBe(first.tcp.seq);
    expect(p.b.counters.FsSynAckRetrans).toBe(1);
    // An ACK of something we never sent: <SEQ=SEG.ACK><CTL=RST>, the entry stays.
    tap.inject('b', craftTcp({ sport: 40000, dport: 9000, seq: 1001, ack: (first.tcp.seq + 7) >>> 0, flags: ACK, ts: [502, first.tcp.tsVal] }));
    await runFor(p.clock, 2);
    const rst = tap.tcp('b->a', (t) => (t.flags & RST) !== 0);
    expect(rst.length).toBe(1);
    expect(rst[0].tcp.seq).toBe((first.tcp.seq + 7) >>> 0);
    expect(p.b.tcp.listeners.get(9000)!.synQueue.size).toBe(1);
    // The right ACK with data: the connection is built, ESTABLISHED, and the data is delivered.
    tap.inject(
      'b',
      craftTcp({ sport: 40000, dport: 9000, seq: 1001, ack: (first.tcp.seq + 1) >>> 0, flags: ACK, ts: [503, first.tcp.tsVal], payload: Buffer.from('hello') }),
    );
    expect(await runUntil(p.clock, () => srv.sinks.length === 1 && srv.sinks[0].bytes === 5, 50)).toBe(true);
    expect(srv.sinks[0].data().toString()).toBe('hello');
    expect(p.b.tcp.listeners.get(9000)!.synQueue.size).toBe(0);
    expect(p.b.tcp.halfOpenCount).toBe(0);
    const conn = [...p.b.tcp.table.all()][0]!;
    expect(conn).toMatchObject({ wsOk: true, sndWscale: 7, sackOk: true, tsOk: true, tsRecent: 503, rcvNxt: 1006 });
    // The SYN-ACK was resent: the initial window is one segment (RFC 5681 3.1).
    expect(conn.cc.cwnd).toBe(conn.mss);
  });

  test('one source port towards two of our addresses: two entries, two connections (a client may reuse a port per destination)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    tap.drop = (s) => s.dir === 'b->a';
    const srv = sinkServer(p, 9000);
    await runFor(p.clock, 1);
    const other = B_IP + 75; // 198.18.0.77: the stack answers any address routed to it
    for (const dst of [B_IP, other]) tap.inject('b', craftTcp({ dst, sport: 40000, dport: 9000, seq: 5000, flags: SYN, mss: 1460 }));
    await runFor(p.clock, 2);
    const l = p.b.tcp.listeners.get(9000)!;
    expect(l.synQueue.size).toBe(2);
    expect(p.b.counters.FsHalfOpenRecycled).toBe(0);
    const synAcks = tap.tcp('b->a', (t) => t.flags === (SYN | ACK));
    expect(synAcks.map((x) => x.src).sort()).toEqual([B_IP, other].sort());
    for (const sa of synAcks) {
      tap.inject(
        'b',
        craftTcp({ dst: sa.src, sport: 40000, dport: 9000, seq: 5001, ack: (sa.tcp.seq + 1) >>> 0, flags: ACK, payload: Buffer.from(`to ${sa.src}`) }),
      );
    }
    expect(await runUntil(p.clock, () => srv.sinks.length === 2 && srv.sinks.every((x) => x.bytes > 0), 50)).toBe(true);
    expect(srv.sinks.map((x) => x.data().toString()).sort()).toEqual([`to ${B_IP}`, `to ${other}`].sort());
    expect(l.synQueue.size).toBe(0);
    expect(tap.tcp('b->a', (t) => (t.flags & RST) !== 0)).toEqual([]);
  });

  test('a SYN with FIN gets no SYN-ACK and leaves no entry (Linux drops it)', async () => {
    const p = makePair();
    const tap = new Tap(p);
    sinkServer(p, 9000);
    await runFor(p.clock, 1);
    tap.inject('b', craftTcp({ sport: 40001, dport: 9000, seq: 77, flags: SYN | FIN, mss: 1460 }));
    await runFor(p.clock, 3000);
    expect(tap.tcp('b->a')).toEqual([]);
    expect(p.b.tcp.listeners.get(9000)!.synQueue.size).toBe(0);
    expect(p.b.counters.TcpPassiveOpens).toBe(0);
    // The same SYN without FIN is answered.
    tap.inject('b', craftTcp({ sport: 40001, dport: 9000, seq: 77, flags: SYN, mss: 1460 }));
    await runFor(p.clock, 2);
    expect(tap.tcp('b->a', (t) => t.flags === (SYN | ACK)).length).toBe(1);
  });
});

describe('SYN queue caps (our choice: recycle the oldest half-open entry, RFC 4987 3.3)', () => {
  test('per listener: the queue stays at its cap, the oldest entries go, each counted; a real client is still served', async () => {
    const p = makePair({}, { tcp: {} }, { backlog: roomy(100_000), tcp: { synQueueCapPerListener: 100 } });
    blackholeSpoofed(p);
    const srv = sinkServer(p, 80);
    await runFor(p.clock, 1);
    flood(p, 80, 250);
    await runFor(p.clock, 2);
    const l = p.b.tcp.listeners.get(80)!;
    expect(l.synQueue.size).toBe(100);
    expect(p.b.counters.FsHalfOpenRecycled).toBe(150);
    expect(l.recycled).toBe(150);
    // The survivors are the 100 newest.
    const ports = [...l.synQueue.values()].map((r) => r.remotePort);
    expect(new Set(ports)).toEqual(new Set(Array.from({ length: 100 }, (_, k) => 1024 + ((150 + k) & 255) * 200)));
    // A real client during the flood: its handshake takes one round trip, long before
    // its entry would be the oldest.
    const c = p.netA.connect({ host: B_ADDR, port: 80 }) as FsSocket;
    const sink = watch(c);
    c.on('connect', () => c.end('real client'));
    flood(p, 80, 50, 250);
    expect(await runUntil(p.clock, () => srv.sinks.length === 1 && srv.sinks[0].ended && sink.closed, 200)).toBe(true);
    expect(srv.sinks[0].data().toString()).toBe('real client');
    expect(sink.error).toBeNull();
    // The client's entry became its connection; no flood SYN came after it.
    expect(l.synQueue.size).toBe(99);
    // An ACK for a recycled entry finds nothing and gets a RST, as any stray ACK does.
    const tap = new Tap(p); // takes over the link's filter: it drops what goes to spoofed sources
    tap.drop = (s) => s.dir === 'b->a' && s.dst !== A_IP;
    tap.inject('b', craftTcp({ src: SPOOF_BASE, sport: 1024, dport: 80, seq: 1, ack: 12345, flags: ACK }));
    await runFor(p.clock, 2);
    expect(tap.tcp('b->a', (t) => (t.flags & RST) !== 0 && t.dport === 1024).length).toBe(1);
    expect(p.b.counters.FsListenStrayAcks).toBe(1);
  });

  test('global: past the cap the fullest listener gives up its oldest entry, so a flood on one port leaves the others room', async () => {
    const p = makePair({}, {}, { backlog: roomy(100_000), tcp: { synQueueCapGlobal: 120 } });
    blackholeSpoofed(p);
    sinkServer(p, 80);
    sinkServer(p, 81);
    await runFor(p.clock, 1);
    flood(p, 80, 100);
    await runFor(p.clock, 2);
    flood(p, 81, 100, 1000);
    await runFor(p.clock, 2);
    const a = p.b.tcp.listeners.get(80)!,
      b = p.b.tcp.listeners.get(81)!;
    expect(p.b.tcp.halfOpenCount).toBe(120);
    expect(a.synQueue.size + b.synQueue.size).toBe(120);
    expect(a.synQueue.size).toBe(60);
    expect(b.synQueue.size).toBe(60);
    expect(p.b.counters.FsHalfOpenRecycled).toBe(80);
  });

  test('entries expire on the SYN-ACK schedule: the queue empties when the flood stops', async () => {
    const p = makePair({}, {}, { backlog: roomy(100_000) });
    blackholeSpoofed(p);
    sinkServer(p, 80);
    await runFor(p.clock, 1);
    flood(p, 80, 500);
    await runFor(p.clock, 2);
    expect(p.b.tcp.halfOpenCount).toBe(500);
    const timers = p.b.timers.size;
    expect(timers).toBeGreaterThanOrEqual(500); // one heap timer per entry: the entry itself
    // Linux: 5 retransmissions, 1 s doubling: given up after 1+2+4+8+16+32 = 63 s.
    await runFor(p.clock, 64_000, 100);
    expect(p.b.tcp.halfOpenCount).toBe(0);
    expect(p.b.tcp.listeners.get(80)!.synQueue.size).toBe(0);
    expect(p.b.counters.FsSynAckRetrans).toBe(500 * 5);
    expect(p.b.counters.TcpAttemptFails).toBe(500);
    expect(p.b.timers.size).toBe(timers - 500);
  });

  test('win2003-sp1 under a spoofed flood with protection on: bounded, and a real client connects and is served', async () => {
    const p = makePair({}, {}, { tcp: { synQueueCapPerListener: 2000 } });
    const cfg = buildFaultConfig({ profile: 'win2003-sp1', faults: [], params: [] });
    installFaults(p.b, cfg, new EventLog());
    blackholeSpoofed(p);
    const srv = sinkServer(p, 80);
    await runFor(p.clock, 1);
    flood(p, 80, 5000);
    await runFor(p.clock, 2);
    const l = p.b.tcp.listeners.get(80)!;
    expect(l.synQueue.size).toBe(2000);
    expect(p.b.counters.FsSynProtectTriggered).toBe(1); // TcpMaxHalfOpen 500 exceeded
    expect(p.b.counters.FsHalfOpenRecycled).toBe(3000);
    const c = p.netA.connect({ host: B_ADDR, port: 80 }) as FsSocket;
    const sink = watch(c);
    c.on('connect', () => c.end('served while protected'));
    flood(p, 80, 500, 5000);
    expect(await runUntil(p.clock, () => srv.sinks.length === 1 && srv.sinks[0].ended && sink.closed, 2000)).toBe(true);
    expect(srv.sinks[0].data().toString()).toBe('served while protected');
    expect(sink.error).toBeNull();
  });
});
