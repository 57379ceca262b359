import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryLink, SeededRandom, VirtualClock, type LinkDir } from '../../drivers/memory';

/** A tiny "packet": 4-byte sequence number followed by filler. */
function pkt(seq: number, len = 64): Buffer {
  const b = Buffer.alloc(len, 0xab);
  b.writeUInt32BE(seq, 0);
  return b;
}
const seqOf = (b: Buffer) => b.readUInt32BE(0);

function collect(link: MemoryLink, side: 'a' | 'b') {
  const got: { t: number; seqs: number[]; bufs: Buffer[] }[] = [];
  link[side].onReceive = (pkts, count) => {
    got.push({ t: link.clock.now, seqs: pkts.slice(0, count).map(seqOf), bufs: pkts.slice(0, count) });
  };
  return got;
}

afterEach(() => {
  vi.restoreAllMocks();
});

/** Makes any wall-clock read fail the test. */
function forbidWallClock() {
  const boom = () => {
    throw new Error('wall clock read');
  };
  vi.spyOn(Date, 'now').mockImplementation(boom);
  vi.spyOn(performance, 'now').mockImplementation(boom);
  vi.spyOn(process, 'hrtime').mockImplementation(boom as never);
}

describe('VirtualClock', () => {
  it('runs callbacks in time order, ties in insertion order, and never reads the wall clock', () => {
    forbidWallClock();
    const c = new VirtualClock(100);
    const order: string[] = [];
    c.schedule(105, () => order.push(`b@${c.now}`));
    c.schedule(102, () => order.push(`a@${c.now}`));
    c.schedule(105, () => order.push(`c@${c.now}`));
    const h = c.schedule(103, () => order.push('cancelled'));
    c.cancel(h);
    c.cancel(h); // twice is fine
    expect(c.pending).toBe(3);
    expect(c.advance(4)).toBe(1);
    expect(c.now).toBe(104);
    expect(order).toEqual(['a@102']);
    c.runUntil(200);
    expect(order).toEqual(['a@102', 'b@105', 'c@105']);
    expect(c.now).toBe(200);
    expect(c.pending).toBe(0);
  });

  it('callbacks scheduled while running join the run; past times run now', () => {
    const c = new VirtualClock();
    const seen: number[] = [];
    c.schedule(1, () => {
      seen.push(c.now);
      c.schedule(0, () => seen.push(c.now)); // in the past: runs at now (1)
      c.after(0.5, () => seen.push(c.now));
    });
    c.runUntil(10);
    expect(seen).toEqual([1, 1, 1.5]);
  });

  it('runUntilIdle stops when idle or at the limit', () => {
    const c = new VirtualClock();
    c.schedule(5, () => {});
    expect(c.runUntilIdle(100)).toBe(true);
    expect(c.now).toBe(5);
    // a periodic timer never goes idle
    const tick = () => c.after(10, tick);
    tick();
    expect(c.runUntilIdle(95)).toBe(false);
    expect(c.now).toBe(100);
    expect(c.pending).toBe(1);
  });
});

describe('MemoryLink', () => {
  it('delivers in order after the latency, one burst per flush, receiver gets a copy', () => {
    forbidWallClock();
    const link = new MemoryLink({ latencyMs: 2 });
    const got = collect(link, 'b');
    const sent = [pkt(1), pkt(2), pkt(3)];
    for (const p of sent) link.a.send(p);
    sent[0]!.writeUInt32BE(999, 0); // the sender's later writes must not matter
    link.clock.advance(10); // nothing flushed yet
    expect(got).toEqual([]);
    link.a.flush();
    link.clock.advance(1.999);
    expect(got).toEqual([]);
    link.clock.advance(0.001);
    expect(got.map((g) => [g.t, g.seqs])).toEqual([[12, [1, 2, 3]]]);
    expect(got[0]!.bufs[0]).not.toBe(sent[0]);
    // two flushes at different times: two bursts, in order
    link.a.send(pkt(4));
    link.a.flush();
    link.clock.advance(0.5);
    link.a.send(pkt(5));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got.map((g) => [g.t, g.seqs])).toEqual([
      [12, [1, 2, 3]],
      [14, [4]],
      [14.5, [5]],
    ]);
    expect(link.counters['a->b']).toMatchObject({ transmitted: 5, delivered: 5, dropped: 0, bursts: 3 });
    expect(link.b.stats()).toMatchObject({ rxPackets: 5, rxBursts: 3, rxBytes: 5 * 64 });
    expect(link.a.stats()).toMatchObject({ txPackets: 5, txBytes: 5 * 64, txDrops: 0 });
  });

  it('default latency is 0.1 ms; both directions work; a reply inside onReceive works', () => {
    const link = new MemoryLink();
    const atA = collect(link, 'a');
    link.b.onReceive = (pkts, count) => {
      for (let i = 0; i < count; i++) link.b.send(pkt(seqOf(pkts[i]!) + 100));
      link.b.flush();
    };
    link.a.send(pkt(7));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(atA.map((g) => [g.t, g.seqs])).toEqual([[0.2, [107]]]);
    expect(link.counters['b->a'].delivered).toBe(1);
  });

  it('loss is deterministic for a seed and independent of the other direction', () => {
    const run = (seed: number, noise: boolean) => {
      const link = new MemoryLink({ lossRate: 0.3, seed });
      const got = collect(link, 'b');
      for (let i = 0; i < 200; i++) {
        link.a.send(pkt(i));
        if (noise) {
          link.b.send(pkt(i));
          link.b.flush();
        }
        link.a.flush();
        link.clock.advance(1);
      }
      link.clock.runUntilIdle();
      return { seqs: got.flatMap((g) => g.seqs), stats: link.counters['a->b'] };
    };
    const r1 = run(42, false);
    const r2 = run(42, true);
    const r3 = run(43, false);
    expect(r1.seqs).toEqual(r2.seqs);
    expect(r1.seqs).not.toEqual(r3.seqs);
    expect(r1.stats.droppedLoss).toBe(200 - r1.seqs.length);
    // 30% of 200 = 60; with any sane PRNG it lands well inside 30..90
    expect(r1.stats.droppedLoss).toBeGreaterThan(30);
    expect(r1.stats.droppedLoss).toBeLessThan(90);
    // delivered ones stay in order
    expect([...r1.seqs].sort((x, y) => x - y)).toEqual(r1.seqs);
  });

  it('the PRNG is uniform enough and reproducible', () => {
    const a = new SeededRandom(7);
    const b = new SeededRandom(7);
    const xs = Array.from({ length: 10000 }, () => a.next());
    const ys = Array.from({ length: 10000 }, () => b.next());
    expect(xs).toEqual(ys);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02);
  });

  it('dropFilter drops exactly the nth packet and is logged with its index', () => {
    const dirs: LinkDir[] = [];
    const link = new MemoryLink({
      dropFilter: (_p, dir, index) => {
        dirs.push(dir);
        return dir === 'a->b' && index === 3;
      },
    });
    const got = collect(link, 'b');
    for (let i = 0; i < 6; i++) link.a.send(pkt(i));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got.flatMap((g) => g.seqs)).toEqual([0, 1, 2, 4, 5]);
    expect(link.counters['a->b']).toMatchObject({ dropped: 1, droppedFilter: 1, delivered: 5 });
    expect(link.log['a->b'].filter((e) => e.event === 'dropped')).toEqual([{ index: 3, t: 0, len: 64, event: 'dropped', reason: 'filter' }]);
    expect(dirs).toEqual(Array(6).fill('a->b'));
  });

  it('a filter based on content (drop the packet with seq 2, once)', () => {
    let dropped = false;
    const link = new MemoryLink({
      dropFilter: (p) => {
        if (!dropped && seqOf(p) === 2) return (dropped = true);
        return false;
      },
      logPackets: true,
    });
    const got = collect(link, 'b');
    for (const s of [1, 2, 3, 2]) link.a.send(pkt(s));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got.flatMap((g) => g.seqs)).toEqual([1, 3, 2]);
    const d = link.log['a->b'].find((e) => e.event === 'dropped')!;
    expect(seqOf(d.packet!)).toBe(2);
  });

  it('packets bigger than the MTU are dropped and counted', () => {
    const link = new MemoryLink({ mtu: 576 });
    const got = collect(link, 'b');
    link.a.send(pkt(1, 576));
    link.a.send(pkt(2, 577));
    link.a.send(pkt(3, 100));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got.flatMap((g) => g.seqs)).toEqual([1, 3]);
    expect(link.counters['a->b']).toMatchObject({ droppedMtu: 1, dropped: 1, delivered: 2 });
    expect(link.a.stats().txDrops).toBe(1);
    expect(link.a.mtu).toBe(576);
  });

  it('reordering holds a packet back until the next one passes it (deterministic)', () => {
    const run = () => {
      const link = new MemoryLink({ reorderRate: 0.25, seed: 9, latencyMs: 1 });
      const got = collect(link, 'b');
      for (let i = 0; i < 100; i++) {
        link.a.send(pkt(i));
        link.a.flush();
        link.clock.advance(0.1);
      }
      link.clock.runUntilIdle();
      return { seqs: got.flatMap((g) => g.seqs), st: link.counters['a->b'] };
    };
    const r = run();
    expect(r.seqs).toEqual(run().seqs);
    expect([...r.seqs].sort((x, y) => x - y)).toEqual([...Array(100).keys()]); // nothing lost
    expect(r.st.reordered).toBeGreaterThan(5);
    expect(r.seqs).not.toEqual([...Array(100).keys()]);
    // every reordered packet arrives after some later-sent packet
    let inversions = 0;
    for (let i = 1; i < r.seqs.length; i++) if (r.seqs[i]! < r.seqs[i - 1]!) inversions++;
    expect(inversions).toBeGreaterThan(0);
  });

  it('a held packet with nobody to overtake it arrives after reorderDelayMs', () => {
    const link = new MemoryLink({ reorderRate: 1, latencyMs: 1, reorderDelayMs: 5 });
    const got = collect(link, 'b');
    link.a.send(pkt(1));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got.map((g) => [g.t, g.seqs])).toEqual([[6, [1]]]);
  });

  it('corrupt hook can flip bits; closed receivers drop; close is idempotent', () => {
    const link = new MemoryLink({
      corrupt: (p, _dir, index) => {
        if (index !== 1) return;
        p[10] ^= 0xff;
        return true;
      },
    });
    const got = collect(link, 'b');
    for (let i = 0; i < 3; i++) link.a.send(pkt(i));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(got[0]!.bufs.map((b) => b[10])).toEqual([0xab, 0x54, 0xab]);
    expect(link.counters['a->b'].corrupted).toBe(1);

    link.a.send(pkt(9));
    link.a.flush();
    link.b.close();
    link.b.close();
    link.clock.runUntilIdle();
    expect(got.length).toBe(1);
    expect(link.counters['a->b'].droppedClosed).toBe(1);
    link.b.send(pkt(1)); // sending on a closed device is a counted drop, not an error
    expect(link.b.stats().txDrops).toBe(1);
  });

  it('passes offload meta through when the sender gave some', () => {
    const link = new MemoryLink();
    let metas: unknown = 'unset';
    link.b.onReceive = (_p, _c, m) => (metas = m);
    link.a.send(pkt(1));
    link.a.send(pkt(2), { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 16 });
    link.a.flush();
    link.clock.runUntilIdle();
    expect(metas).toEqual([null, { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 16 }]);
    link.a.send(pkt(3));
    link.a.flush();
    link.clock.runUntilIdle();
    expect(metas).toBe(null);
  });

  it('shares a clock passed in', () => {
    const clock = new VirtualClock(1000);
    const link = new MemoryLink({ clock, latencyMs: 5 });
    const got = collect(link, 'b');
    link.a.send(pkt(1));
    link.a.flush();
    clock.advance(5);
    expect(got.map((g) => g.t)).toEqual([1005]);
  });
});
