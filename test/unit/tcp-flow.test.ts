/**
 * Flow control and ACK policy: the receive window against a slow reader, the
 * persist timer and zero-window probes (RFC 9293 3.8.6.1), Nagle (RFC 896) vs
 * setNoDelay, delayed ACKs (RFC 9293 3.8.6.3, RFC 5681 4.2).
 */
import { describe, expect, test } from 'vitest';
import { B_ADDR, connOf, makePair, runFor, runUntil, sha256, testData, watch, Pair, Sink } from './helpers/pair';
import { craftTcp, Tap } from './helpers/tap';
import { ACK, PSH, SYN } from '../../stack/wire/tcp';
import type { FsSocket } from '../../stack/api/net';
import { asSeq, seqValue } from '../../stack/wire/seq';

/** A server on B whose sockets start paused (nobody reads until `resume`). */
function slowServer(p: Pair, port = 9000) {
  const sinks: Sink[] = [];
  const sockets: FsSocket[] = [];
  p.netB
    .createServer((s) => {
      const sock = s as FsSocket;
      sockets.push(sock);
      sock.on('end', () => sock.end());
      sock.pause();
    })
    .listen(port);
  return {
    sinks,
    sockets,
    /** Starts reading (attaching the data listener). */
    resume(i = 0) {
      sinks[i] = watch(sockets[i]);
      sockets[i].resume();
    },
  };
}

async function connect(p: Pair, port = 9000) {
  const c = p.netA.connect({ host: B_ADDR, port }) as FsSocket;
  const sink = watch(c);
  let up = false;
  c.on('connect', () => {
    up = true;
  });
  expect(await runUntil(p.clock, () => up, 100)).toBe(true);
  await runFor(p.clock, 2);
  return { c, sink, conn: connOf(p.a, (x) => x.remotePort === port)! };
}

/**
 * Checks that no data segment A sent went beyond the furthest right edge B had offered
 * by then (RFC 9293 3.8.6). An ACK sent at t reaches A at t + 0.5; a later ACK may
 * show an edge up to one scale unit lower (window rounding), so the furthest edge counts.
 */
/** Asserts that no data segment a->b went past the right edge b had offered; returns how many it checked. */
function expectWithinWindow(tap: Tap, wscale: number): number {
  let edge = -1;
  const events = tap
    .tcp()
    .map((s) => ({ s, at: s.dir === 'b->a' ? s.t + 0.5 : s.t }))
    .sort((x, y) => x.at - y.at || (x.s.dir === 'b->a' ? -1 : 1))
    .map((e) => e.s);
  let checked = 0;
  for (const s of events) {
    if (s.dir === 'b->a' && s.tcp.flags & ACK) {
      const e = (s.tcp.ack + (s.tcp.window << wscale)) >>> 0;
      if (edge < 0 || ((e - edge) | 0) > 0) edge = e;
    } else if (s.dir === 'a->b' && s.tcp.len > 0 && edge >= 0) {
      const end = (s.tcp.seq + s.tcp.len) >>> 0;
      expect(((end - edge) | 0) <= 0).toBe(true);
      checked++;
    }
  }
  return checked;
}

describe('receive window and the persist timer', () => {
  test('a reader that does not read: the window closes, the sender probes with backoff, reading reopens it and all data arrives', async () => {
    const p = makePair({}, {}, { tcp: { rcvBuf: 32 * 1024 } });
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c, conn } = await connect(p);
    const data = testData(200_000, 21);
    c.end(data);
    // The window fills and closes.
    expect(await runUntil(p.clock, () => conn.sndWnd === 0, 1_000)).toBe(true);
    const zeroAt = p.clock.now;
    const connB = connOf(p.b)!;
    // The whole advertised window is used (to within one 128-byte unit of window scaling:
    // the receiver rounds its window down and never takes back an edge it offered).
    expect(seqValue(connB.rcvAdvEdge) - seqValue(connB.rcvNxt)).toBeLessThan(128);
    expect(srv.sockets[0].readableLength).toBeGreaterThan(32 * 1024 - 128);
    expect(srv.sockets[0].readableLength).toBeLessThanOrEqual(32 * 1024);
    expect(srv.sockets[0].readableLength).toBe((seqValue(conn.sndUna) - seqValue(conn.iss) - 1) >>> 0);
    // Nobody reads for 10 s: the sender only probes.
    await runFor(p.clock, 10_000, 5);
    expect(p.a.counters.TcpExtTCPWinProbe).toBeGreaterThanOrEqual(4);
    const probes = tap.tcp('a->b', (t) => t.len === 0 && t.seq === (seqValue(conn.sndUna) - 1) >>> 0);
    expect(probes.length).toBe(p.a.counters.TcpExtTCPWinProbe);
    // Probes back off: each interval doubles (starting from the RTO, 200 ms here).
    const gaps = probes.slice(1).map((s, i) => Math.round(s.t - probes[i].t));
    expect(Math.round(probes[0].t - zeroAt)).toBeLessThanOrEqual(201);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBe(2 * gaps[i - 1]);
    // Every probe was answered with the (still zero) window.
    const answers = tap.tcp('b->a', (t, s) => t.window === 0 && s.t > probes[0].t);
    expect(answers.length).toBeGreaterThanOrEqual(probes.length);
    // No data was pushed into the closed window, no connection was dropped.
    expect(seqValue(connB.rcvAdvEdge) - seqValue(connB.rcvNxt)).toBeLessThan(128);
    expect(srv.sockets[0].readableLength).toBe((seqValue(conn.sndUna) - seqValue(conn.iss) - 1) >>> 0);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(0);
    // The reader wakes up.
    const resumeAt = p.clock.now;
    srv.resume();
    expect(await runUntil(p.clock, () => srv.sinks[0].ended, 5_000)).toBe(true);
    expect(sha256(srv.sinks[0].data())).toBe(sha256(data));
    // Reading sent a window update at once (RFC 9293 3.8.6.2.2): the sender did not
    // have to wait for its next probe (3.2 s away by now) to learn the window opened.
    const update = tap.tcp('b->a', (t, x) => x.t >= resumeAt && t.window > 0)[0];
    expect(update.t - resumeAt).toBeLessThanOrEqual(1); // (the rig runs the stream's nextTick after its first 1 ms step)
    expect(p.a.counters.TcpExtTCPWinProbe).toBe(probes.length);
    // One update, not one per chunk read.
    expect(tap.tcp('b->a', (_t, x) => x.t === update.t).length).toBe(1);
    // Every data segment of the 200 KB stayed within the edge the receiver had offered
    // (checked against each one: at least 200,000 / MSS of them).
    expect(expectWithinWindow(tap, 7)).toBeGreaterThanOrEqual(Math.ceil(200_000 / conn.mss));
  });

  test('a usable window smaller than one MSS is filled when the override timeout expires (RFC 9293 3.8.6.2.1)', async () => {
    // 32 KiB of buffer and full segments leave 896 bytes (7 << 7) at the end: less than an MSS.
    const p = makePair({}, {}, { tcp: { rcvBuf: 32 * 1024 } });
    const tap = new Tap(p);
    slowServer(p);
    const { c, conn } = await connect(p);
    c.write(testData(100_000, 20));
    expect(await runUntil(p.clock, () => conn.sndWnd > 0 && conn.sndWnd < conn.mss && conn.flight === 0, 100)).toBe(true);
    const smallAt = p.clock.now;
    const small = conn.sndWnd;
    // Sender SWS avoidance waits, but not forever: after the override timeout (the RTO) it sends min(D, U).
    expect(await runUntil(p.clock, () => conn.sndWnd === 0, 1_000)).toBe(true);
    const filler = tap.data('a->b').filter((s) => s.t > smallAt);
    expect(filler.length).toBe(1);
    expect(filler[0].tcp.len).toBe(small);
    expect(Math.round(filler[0].t - smallAt)).toBeLessThanOrEqual(conn.rto + 1);
    const connB = connOf(p.b)!;
    expect(seqValue(connB.rcvAdvEdge) - seqValue(connB.rcvNxt)).toBeLessThan(128);
  });

  test('the window update that reopens the window is lost: the next probe finds it open', async () => {
    const p = makePair({}, {}, { tcp: { rcvBuf: 16 * 1024 } });
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c, conn } = await connect(p);
    const data = testData(50_000, 22);
    c.end(data);
    expect(await runUntil(p.clock, () => conn.sndWnd === 0, 1_000)).toBe(true);
    await runFor(p.clock, 300);
    // Drop B's first ACK that opens the window again.
    let droppedUpdate = -1;
    tap.drop = (s) => {
      if (droppedUpdate < 0 && s.dir === 'b->a' && s.tcp && s.tcp.len === 0 && s.tcp.window > 0) {
        droppedUpdate = s.t;
        return true;
      }
      return false;
    };
    srv.resume();
    expect(await runUntil(p.clock, () => srv.sinks[0]?.ended ?? false, 10_000)).toBe(true);
    expect(droppedUpdate).toBeGreaterThan(0);
    expect(sha256(srv.sinks[0].data())).toBe(sha256(data));
    // A probe after the lost update is what got things moving again.
    // (A probe carries SND.UNA - 1: one below what B had acknowledged.)
    const una = tap
      .tcp('b->a')
      .filter((x) => x.t <= droppedUpdate)
      .pop()!.tcp.ack;
    const probeAfter = tap.tcp('a->b', (t, x) => t.len === 0 && x.t > droppedUpdate && t.seq === (una - 1) >>> 0)[0];
    expect(probeAfter).toBeDefined();
    expect(p.a.counters.TcpExtTCPWinProbe).toBeGreaterThan(0);
    const firstDataAfter = tap.data('a->b').find((s) => s.t > droppedUpdate)!;
    expect(firstDataAfter.t).toBeGreaterThan(probeAfter!.t);
  });

  test('a 1-byte zero-window probe (as Windows and BSD send) is answered with an ACK and not taken', async () => {
    // No window scaling on B: its window is exact, so "zero" is zero (no rounding slack).
    const p = makePair({}, {}, { tcp: { rcvBuf: 8 * 1024, windowScale: -1 } });
    const tap = new Tap(p);
    slowServer(p);
    const { c, conn } = await connect(p);
    c.write(testData(20_000, 23));
    expect(await runUntil(p.clock, () => conn.sndWnd === 0, 1_000)).toBe(true);
    await runFor(p.clock, 5);
    const connB = connOf(p.b)!;
    const rcvNxt = seqValue(connB.rcvNxt);
    // Keep A's own probes out of the picture.
    tap.drop = (s) => s.dir === 'a->b' && !s.injected;
    const before = tap.tcp('b->a').length;
    tap.inject(
      'b',
      craftTcp({
        sport: conn.localPort,
        dport: 9000,
        seq: rcvNxt,
        ack: seqValue(connB.sndNxt),
        flags: ACK | PSH,
        window: 1000,
        payload: Buffer.from('x'),
        ts: [conn.tsNow(p.clock.now), connB.tsNow(p.clock.now)],
      }),
    );
    await runFor(p.clock, 2);
    const replies = tap.tcp('b->a').slice(before);
    expect(replies.length).toBe(1);
    expect(replies[0].tcp).toMatchObject({ ack: rcvNxt, window: 0, len: 0 });
    expect(connB.rcvNxt).toBe(rcvNxt);
  });

  test('the sender never sends beyond the window the receiver advertised (slow reader, 300 kB)', async () => {
    const p = makePair({}, {}, { tcp: { rcvBuf: 24 * 1024 } });
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c } = await connect(p);
    const data = testData(300_000, 24);
    c.end(data);
    // Read 4 KiB every 10 ms: the sender is held to the reader's pace by the window.
    srv.sinks[0] = {
      chunks: [],
      bytes: 0,
      ended: false,
      closed: false,
      error: null,
      socket: srv.sockets[0],
      data() {
        return Buffer.concat(this.chunks);
      },
    };
    const sink = srv.sinks[0];
    const sock = srv.sockets[0];
    sock.on('end', () => {
      sink.ended = true;
    });
    let minWnd = Infinity;
    for (let i = 0; i < 2000 && !sink.ended; i++) {
      await runFor(p.clock, 10);
      const w = connOf(p.a)?.sndWnd;
      if (w !== undefined && w < minWnd) minWnd = w;
      let chunk: Buffer | null;
      let took = 0;
      while (took < 4096 && (chunk = sock.read(Math.min(4096 - took, sock.readableLength || 1))) !== null) {
        sink.chunks.push(chunk);
        sink.bytes += chunk.length;
        took += chunk.length;
      }
      if (sock.readableEnded) sink.ended = true;
    }
    expect(await runUntil(p.clock, () => sink.ended, 1_000)).toBe(true);
    // The window, not cwnd, was what held the sender: it ran down to a fraction of the buffer.
    expect(minWnd).toBeLessThan(4096);
    // About 4 KiB per 10 ms: the transfer took as long as the reader made it take.
    expect(p.clock.now).toBeGreaterThan(1000 + ((300_000 - 24 * 1024) / 4096) * 10);
    expect(sha256(srv.sinks[0].data())).toBe(sha256(data));
    expect(expectWithinWindow(tap, 7)).toBeGreaterThan(100);
  });

  test('receiver SWS avoidance: a reader taking 200 bytes at a time never opens the window by less than an MSS (RFC 9293 3.8.6.2.2)', async () => {
    const p = makePair({}, {}, { tcp: { rcvBuf: 24 * 1024 } });
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c } = await connect(p);
    const data = testData(120_000, 31);
    c.end(data);
    await runFor(p.clock, 50); // the window closes: the reader has not read yet
    const sock = srv.sockets[0];
    const got: Buffer[] = [];
    let bytes = 0;
    for (let i = 0; i < 3000 && bytes < data.length; i++) {
      await runFor(p.clock, 5);
      const chunk = sock.read(Math.min(200, sock.readableLength || 1)) as Buffer | null;
      if (chunk) {
        got.push(chunk);
        bytes += chunk.length;
      }
    }
    expect(sha256(Buffer.concat(got))).toBe(sha256(data));
    // Every move of B's right edge (ACK + scaled window) is at least min(RCV.BUFF/2, MSS),
    // less one window-scale unit of rounding.
    const mss = connOf(p.a)?.mss ?? 1448;
    let edge = -1;
    let moves = 0;
    // (The SYN-ACK's window is not scaled: start from the first ACK after it.)
    for (const s of tap.tcp('b->a', (t) => (t.flags & ACK) !== 0 && (t.flags & SYN) === 0)) {
      const e = (s.tcp.ack + (s.tcp.window << 7)) >>> 0;
      // Moves under one scale unit (128 bytes) are the rounding of a window that shrank
      // as data arrived, not openings; every real opening is at least an MSS.
      if (edge >= 0 && ((e - edge) | 0) >= 128) {
        expect((e - edge) | 0).toBeGreaterThanOrEqual(Math.min(12 * 1024, mss) - 128);
        moves++;
      }
      if (edge < 0 || ((e - edge) | 0) > 0) edge = e;
    }
    expect(moves).toBeGreaterThan(20);
  });

  test('the active opener advertises no more than its receive buffer, whatever the peer ISN (here >= 2^31)', async () => {
    const p = makePair({}, { tcp: { rcvBuf: 16 * 1024 } });
    p.b.tcp.isn = () => asSeq(0xc0000000);
    const tap = new Tap(p);
    // B sends to A; A reads nothing.
    const data = testData(100_000, 25);
    p.netB
      .createServer((s) => {
        s.end(data);
      })
      .listen(9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    c.pause();
    await runFor(p.clock, 500);
    const connA = connOf(p.a)!;
    for (const s of tap.tcp('a->b', (t) => (t.flags & ACK) !== 0)) {
      expect(s.tcp.window << 7).toBeLessThanOrEqual(16 * 1024);
    }
    expect(c.readableLength).toBeLessThanOrEqual(16 * 1024);
    expect(seqValue(connA.rcvNxt) - seqValue(connA.irs) - 1).toBeLessThanOrEqual(16 * 1024);
    // And the data all arrives once A reads.
    const sink = watch(c);
    c.resume();
    expect(await runUntil(p.clock, () => sink.ended, 5_000)).toBe(true);
    expect(sha256(sink.data())).toBe(sha256(data));
  });
});

describe('Nagle and setNoDelay', () => {
  async function smallWrites(noDelay: boolean) {
    const p = makePair();
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c } = await connect(p);
    // Start reading and let the first window update (64 KiB from the SYN-ACK up to the buffer) go by.
    srv.resume();
    await runFor(p.clock, 5);
    if (noDelay) c.setNoDelay(true);
    const t0 = p.clock.now;
    for (let i = 0; i < 100; i++) c.write(Buffer.from(`msg${String(i).padStart(3, '0')}|`));
    expect(await runUntil(p.clock, () => srv.sinks[0].bytes === 700, 1_000)).toBe(true);
    const segs = tap.data('a->b').filter((s) => s.t >= t0);
    expect(srv.sinks[0].data().toString()).toBe(Array.from({ length: 100 }, (_, i) => `msg${String(i).padStart(3, '0')}|`).join(''));
    return { segs, p };
  }

  test('Nagle on (default): 100 small writes in one go leave as 2 segments (one small segment in flight at a time)', async () => {
    const { segs } = await smallWrites(false);
    expect(segs.length).toBe(2);
    expect(segs[0].tcp.len).toBe(7);
    expect(segs[1].tcp.len).toBe(693);
    // The second waited for the ACK of the first, which the receiver delayed (40 ms).
    expect(Math.round(segs[1].t - segs[0].t)).toBe(41);
  });

  test('setNoDelay(true): 100 small writes leave as 100 segments at once', async () => {
    const { segs } = await smallWrites(true);
    expect(segs.length).toBe(100);
    expect(segs.every((s) => s.tcp.len === 7)).toBe(true);
    expect(segs[99].t - segs[0].t).toBe(0);
  });

  test('Nagle never holds back a full-sized segment', async () => {
    const p = makePair();
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c } = await connect(p);
    srv.resume();
    await runFor(p.clock, 5);
    const t0 = p.clock.now;
    c.write(Buffer.alloc(100, 1));
    c.write(Buffer.alloc(3 * 1448 + 200, 2));
    await runFor(p.clock, 1);
    const early = tap.data('a->b').filter((s) => s.t >= t0 && s.t < t0 + 1);
    // The first small segment, then the full ones; only the sub-MSS tail (200) waits for an ACK.
    expect(early.map((s) => s.tcp.len)).toEqual([100, 1448, 1448, 1448]);
    expect(await runUntil(p.clock, () => srv.sinks[0].bytes === 100 + 3 * 1448 + 200, 200)).toBe(true);
    const tail = tap.data('a->b').find((s) => s.tcp.len === 200)!;
    // It waited for the ACK of everything outstanding: one round trip (1 ms).
    expect(tail.t - t0).toBeCloseTo(1, 6);
  });
});

describe('delayed ACK', () => {
  async function established(delayedAckMs?: number) {
    const p = makePair({}, {}, delayedAckMs ? { tcp: { delayedAckMs } } : {});
    const tap = new Tap(p);
    const srv = slowServer(p);
    const { c } = await connect(p);
    srv.resume();
    await runFor(p.clock, 5);
    return { p, tap, c, srv };
  }

  test('one segment: the ACK leaves after delayedAckMs (40 ms default)', async () => {
    const { p, tap, c } = await established();
    const t0 = p.clock.now;
    c.write(Buffer.from('ping'));
    await runFor(p.clock, 100);
    const data = tap.data('a->b').find((s) => s.t >= t0)!;
    const ack = tap.pureAcks('b->a').find((s) => s.t > data.t)!;
    expect(ack.tcp.ack).toBe((data.tcp.seq + 4) >>> 0);
    expect(ack.t - (data.t + 0.5)).toBeCloseTo(40, 6);
    expect(p.b.counters.TcpExtDelayedACKs).toBeGreaterThanOrEqual(1);
  });

  test('the delay follows the configuration (delayedAckMs 200)', async () => {
    const { p, tap, c } = await established(200);
    const t0 = p.clock.now;
    c.write(Buffer.from('ping'));
    await runFor(p.clock, 300);
    const data = tap.data('a->b').find((s) => s.t >= t0)!;
    const ack = tap.pureAcks('b->a').find((s) => s.t > data.t)!;
    expect(ack.t - (data.t + 0.5)).toBeCloseTo(200, 6);
  });

  test('two full segments are ACKed at once (RFC 5681 4.2: at least every second segment)', async () => {
    const { p, tap, c } = await established();
    const t0 = p.clock.now;
    c.write(Buffer.alloc(2 * 1448, 3));
    await runFor(p.clock, 100);
    const data = tap.data('a->b').filter((s) => s.t >= t0);
    expect(data.length).toBe(2);
    const ack = tap.pureAcks('b->a').find((s) => s.t >= data[1].t)!;
    expect(ack.tcp.ack).toBe((data[1].tcp.seq + 1448) >>> 0);
    expect(ack.t - (data[1].t + 0.5)).toBeCloseTo(0, 6);
  });

  test('an out-of-order segment is ACKed at once, with a SACK block (RFC 5681 4.2, RFC 2018)', async () => {
    const { p, tap, c } = await established();
    tap.drop = (s) =>
      s.dir === 'a->b' && !!s.tcp && s.tcp.len === 1000 && s.tcp.payload[0] === 1 && !s.dropped && tap.seen.filter((x) => x.dropped).length === 0;
    c.setNoDelay(true);
    const t0 = p.clock.now;
    c.write(Buffer.alloc(1000, 1));
    c.write(Buffer.alloc(500, 2));
    await runFor(p.clock, 3);
    const second = tap.data('a->b').find((s) => s.t >= t0 && s.tcp.len === 500)!;
    const ack = tap.pureAcks('b->a').find((s) => s.t > second.t)!;
    expect(ack.t - (second.t + 0.5)).toBeCloseTo(0, 6);
    expect(ack.tcp.sack).toEqual([[second.tcp.seq, (second.tcp.seq + 500) >>> 0]]);
  });
});
