/**
 * TCP over the memory link on the virtual clock: handshake, bulk transfer with
 * SHA-256 equality, both directions, reordering and random loss.
 */
import { describe, expect, test } from 'vitest';
import { State } from '../../stack/tcp/connection';
import { ACK, SYN } from '../../stack/wire/tcp';
import { B_ADDR, connOf, makePair, runUntil, sha256, sinkServer, testData, transfer, watch } from './helpers/pair';
import { Tap } from './helpers/tap';
import { asSeq } from '../../stack/wire/seq';

describe('three-way handshake (RFC 9293 3.5)', () => {
  test('SYN, SYN-ACK, ACK with MSS, window scale, SACK-permitted and timestamps negotiated', async () => {
    const p = makePair();
    const tap = new Tap(p);
    sinkServer(p, 9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 });
    let connectedAt = -1;
    c.on('connect', () => {
      connectedAt = p.clock.now;
    });
    expect(await runUntil(p.clock, () => connectedAt > 0, 100)).toBe(true);

    const segs = tap.tcp();
    expect(segs.length).toBe(3);
    const [syn, synAck, ack] = segs.map((s) => s.tcp);
    expect(segs.map((s) => s.dir)).toEqual(['a->b', 'b->a', 'a->b']);
    expect(syn.flags).toBe(SYN);
    expect(syn).toMatchObject({ mss: 1460, wscale: 7, sackPermitted: true, hasTimestamp: true, tsEcr: 0, dport: 9000 });
    expect(synAck.flags).toBe(SYN | ACK);
    expect(synAck.ack).toBe((syn.seq + 1) >>> 0);
    expect(synAck).toMatchObject({ mss: 1460, wscale: 7, sackPermitted: true, hasTimestamp: true, tsEcr: syn.tsVal });
    // SYN windows are never scaled (RFC 7323 2.2): the receive buffer capped at 65535.
    expect(syn.window).toBe(65535);
    expect(ack.flags).toBe(ACK);
    expect(ack.seq).toBe((syn.seq + 1) >>> 0);
    expect(ack.ack).toBe((synAck.seq + 1) >>> 0);
    expect(ack.tsEcr).toBe(synAck.tsVal);
    // One round trip: 2 x 0.5 ms of link latency.
    expect(connectedAt - segs[0].t).toBeCloseTo(1, 5);

    // B's side is a half-open entry of its listener until the final ACK arrives; then
    // the connection is built, ESTABLISHED.
    const ca = connOf(p.a)!;
    expect(ca.state).toBe(State.Established);
    expect(await runUntil(p.clock, () => connOf(p.b)?.state === State.Established, 10)).toBe(true);
    const cb = connOf(p.b)!;
    for (const conn of [ca, cb]) {
      expect(conn).toMatchObject({ wsOk: true, sackOk: true, tsOk: true, sndWscale: 7, rcvWscale: 7, mss: 1448 });
    }
    expect(ca.sndNxt).toBe(cb.rcvNxt);
    expect(cb.sndNxt).toBe(ca.rcvNxt);
    expect(p.a.counters.TcpActiveOpens).toBe(1);
    expect(p.b.counters.TcpPassiveOpens).toBe(1);
    expect(p.a.counters.TcpCurrEstab).toBe(1);
    expect(p.b.counters.TcpCurrEstab).toBe(1);
  });

  test('a peer that offers no options gets none back: MSS 536 default, no scaling, no SACK, no timestamps', async () => {
    const p = makePair({}, { tcp: { windowScale: -1, sack: false, timestamps: false } });
    const tap = new Tap(p);
    sinkServer(p, 9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 });
    let connected = false;
    c.on('connect', () => {
      connected = true;
    });
    expect(await runUntil(p.clock, () => connected, 100)).toBe(true);
    const synAck = tap.tcp('b->a')[0].tcp;
    expect(synAck).toMatchObject({ wscale: -1, sackPermitted: false, hasTimestamp: false, mss: 1460 });
    expect(await runUntil(p.clock, () => connOf(p.b)?.state === State.Established, 10)).toBe(true);
    const cb = connOf(p.b)!;
    expect(cb).toMatchObject({ wsOk: false, sackOk: false, tsOk: false, sndWscale: 0, rcvWscale: 0, mss: 1460 });
  });
});

describe('bulk transfer', () => {
  test('1 MB from A to B arrives intact (SHA-256), both sides close cleanly', async () => {
    const p = makePair();
    const data = testData(1_000_000);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(r.got.length).toBe(data.length);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(p.a.counters.TcpRetransSegs).toBe(0);
    expect(p.b.counters.TcpRetransSegs).toBe(0);
    expect(r.clientSink.error).toBeNull();
    // Only A's TIME-WAIT entry is left.
    const left = [...p.a.tcp.table.all()].map((c) => c.stateName);
    expect(left).toEqual(['TIME-WAIT']);
    expect([...p.b.tcp.table.all()]).toEqual([]);
    // Segments were full-sized: 1448 bytes of payload (1500 - 20 - 20 - 12 of timestamp).
    expect(p.a.counters.TcpOutSegs).toBeGreaterThanOrEqual(Math.ceil(data.length / 1448));
    expect(p.a.counters.TcpOutSegs).toBeLessThan(Math.ceil(data.length / 1448) + 10);
  });

  test('both directions at once: an echo server returns 300 kB intact', async () => {
    const p = makePair();
    p.netB
      .createServer((s) => {
        s.pipe(s);
      })
      .listen(7);
    const c = p.netA.connect({ host: B_ADDR, port: 7 });
    const sink = watch(c);
    const data = testData(300_000, 7);
    // Write in pieces of awkward sizes.
    for (let o = 0; o < data.length; o += 7777) c.write(data.subarray(o, Math.min(o + 7777, data.length)));
    c.end();
    expect(await runUntil(p.clock, () => sink.ended, 20_000)).toBe(true);
    expect(sha256(sink.data())).toBe(sha256(data));
  });

  test('a small MTU (576) gives a small MSS, and the transfer still completes intact', async () => {
    const p = makePair({ mtu: 576 });
    const tap = new Tap(p);
    const data = testData(100_000, 3);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    const lens = tap.data('a->b').map((s) => s.tcp.len);
    expect(Math.max(...lens)).toBe(576 - 40 - 12);
    expect(p.link.counters['a->b'].droppedMtu).toBe(0);
  });

  test('reordering (30% of packets, seeded): completes intact, the out-of-order queue is used', async () => {
    const p = makePair({ reorderRate: 0.3, seed: 42, reorderDelayMs: 2 });
    const data = testData(500_000, 5);
    const r = await transfer(p, data, { maxMs: 30_000 });
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(p.link.counters['a->b'].reordered).toBeGreaterThan(50);
    expect(p.b.counters.TcpExtTCPOFOQueue).toBeGreaterThan(0);
    expect(connOf(p.b)?.ooo.bytes ?? 0).toBe(0);
  });

  test('5% random loss both ways (seeded): completes intact, with retransmissions', async () => {
    const p = makePair({ lossRate: 0.05, seed: 7 });
    const data = testData(500_000, 9);
    const r = await transfer(p, data, { maxMs: 120_000 });
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(p.link.counters['a->b'].droppedLoss).toBeGreaterThan(10);
    expect(p.a.counters.TcpRetransSegs).toBeGreaterThan(0);
    expect(p.a.counters.TcpRetransSegs).toBeGreaterThanOrEqual(p.link.counters['a->b'].droppedLoss - 5);
  });

  test('5% loss with reordering and NewReno on both sides (no SACK): completes intact', async () => {
    const p = makePair({ lossRate: 0.05, reorderRate: 0.1, seed: 11 }, { tcp: { sack: false, congestionControl: 'newreno' } }, { tcp: { sack: false } });
    const data = testData(300_000, 13);
    const r = await transfer(p, data, { maxMs: 120_000 });
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
  });

  test('sequence numbers wrap: an ISN just below 2^32 still carries 200 kB intact', async () => {
    const p = makePair();
    // Force both ISNs near the wrap.
    p.a.tcp.isn = () => asSeq(0xffffff00);
    p.b.tcp.isn = () => asSeq(0xfffff000);
    const data = testData(200_000, 17);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
  });
});
