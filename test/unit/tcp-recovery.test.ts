/**
 * Loss recovery: fast retransmit with SACK (RFC 6675) and without (NewReno, RFC
 * 6582), the retransmission timer (RFC 6298: minimum, backoff, give-up), asserted
 * on counters and on the virtual times at which segments leave.
 */
import { describe, expect, test } from 'vitest';
import { B_ADDR, connOf, makePair, runFor, runUntil, sha256, sinkServer, testData, transfer, watch, Pair } from './helpers/pair';
import { Seen, Tap } from './helpers/tap';
import { asSeq, seqGt, seqValue } from '../../stack/wire/seq';
import type { FsSocket } from '../../stack/api/net';
import { LinuxBacklog } from '../../stack/tcp/backlog';
import { State } from '../../stack/tcp/connection';

/**
 * Drops chosen data segments A->B: `which` gets the 1-based ordinal of each new
 * data segment (new = its sequence number was never sent before) and says how many
 * transmissions of it to drop (0 = none). Returns the tap and the dropped sequence numbers.
 */
function dropData(p: Pair, which: (ordinal: number) => number) {
  const tap = new Tap(p);
  const firstSeen = new Map<number, { ordinal: number; left: number }>();
  let ordinal = 0;
  let highest = -1;
  const dropped: number[] = [];
  tap.drop = (s: Seen) => {
    if (s.dir !== 'a->b' || !s.tcp || s.tcp.len === 0) return false;
    let e = firstSeen.get(s.tcp.seq);
    if (!e && (highest < 0 || seqGt(asSeq(s.tcp.seq), asSeq(highest)))) {
      e = { ordinal: ++ordinal, left: which(ordinal) };
      firstSeen.set(s.tcp.seq, e);
      highest = s.tcp.seq;
    }
    if (e && e.left > 0) {
      e.left--;
      dropped.push(s.tcp.seq);
      return true;
    }
    return false;
  };
  return { tap, dropped };
}

/** Transmissions (first and retransmissions) of the data segment starting at `seq`. */
function sendsOf(tap: Tap, seq: number): Seen[] {
  return tap.data('a->b').filter((s) => s.tcp.seq === seq);
}

describe('the recovery a connection uses', () => {
  /** Opens one connection A -> B and returns both ends once established (and A's end before that). */
  async function open(p: Pair) {
    sinkServer(p, 9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    const early = connOf(p.a)!;
    const earlyState = early.state,
      earlyRecovery = early.recovery;
    expect(await runUntil(p.clock, () => connOf(p.b)?.state === State.Established && connOf(p.a)?.state === State.Established, 100)).toBe(true);
    return { c, a: connOf(p.a)!, b: connOf(p.b)!, earlyState, earlyRecovery };
  }

  test('is chosen when the connection is synchronized: SACK recovery when both offered SACK-permitted', async () => {
    const { a, b, earlyState, earlyRecovery } = await open(makePair());
    expect(earlyState).toBe(State.SynSent);
    expect(earlyRecovery).toBeNull();
    expect([a.sackOk, b.sackOk]).toEqual([true, true]);
    expect([a.recovery?.kind, b.recovery?.kind]).toEqual(['sack', 'sack']);
  });

  test('NewReno recovery on both sides when one side does not do SACK', async () => {
    const { a, b } = await open(makePair({}, {}, { tcp: { sack: false } }));
    expect([a.sackOk, b.sackOk]).toEqual([false, false]);
    expect([a.recovery?.kind, b.recovery?.kind]).toEqual(['newreno', 'newreno']);
  });

  test('a connection opened by a SYN cookie has NewReno recovery: the cookie SYN-ACK offered no SACK', async () => {
    const backlog = new LinuxBacklog(() => ({ maxSynBacklog: 0, syncookies: 1, abortOnOverflow: false, somaxconn: 4096, synAckRetries: 5 }));
    const p = makePair({}, {}, { backlog });
    const { a, b } = await open(p);
    expect(p.b.counters.TcpExtSyncookiesRecv).toBe(1);
    expect([a.sackOk, b.sackOk]).toEqual([false, false]);
    expect(b.recovery?.kind).toBe('newreno');
    // The cookie's control block: the client's ISN + 1 is RCV.NXT, our ISN (the cookie) + 1 is SND.UNA.
    expect(b.rcvNxt).toBe(a.sndNxt);
    expect(b.sndUna).toBe(a.rcvNxt);
    expect(b.cc.cwnd).toBe(10 * b.mss);
    expect(p.b.counters.TcpCurrEstab).toBe(1);
  });
});

describe('fast retransmit', () => {
  test('SACK: the 5th data segment lost once -> one SACK recovery, one retransmission, no timeout', async () => {
    const p = makePair();
    const { tap, dropped } = dropData(p, (n) => (n === 5 ? 1 : 0));
    const data = testData(200_000);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(dropped.length).toBe(1);
    const c = p.a.counters;
    expect(c.TcpExtTCPSackRecovery).toBe(1);
    expect(c.TcpExtTCPRenoRecovery).toBe(0);
    expect(c.TcpExtTCPFastRetrans).toBe(1);
    expect(c.TcpRetransSegs).toBe(1);
    expect(c.TcpExtTCPTimeouts).toBe(0);
    // B reported the hole with SACK blocks above it.
    const sacks = tap.tcp('b->a', (t) => t.sack.length > 0);
    expect(sacks.length).toBeGreaterThanOrEqual(1);
    expect(sacks[0].tcp.ack).toBe(dropped[0]);
    expect(sacks[0].tcp.sack[0][0]).toBe((dropped[0] + 1448) >>> 0);
    expect(p.b.counters.TcpExtTCPOFOQueue).toBeGreaterThan(0);
    // The retransmission left within a few round trips (1 ms each), long before any RTO (>= 200 ms).
    const [first, again] = sendsOf(tap, dropped[0]);
    expect(again).toBeDefined();
    expect(again.t - first.t).toBeLessThan(10);
  });

  test('SACK: two segments lost in one window -> still one recovery, both holes resent, no timeout', async () => {
    const p = makePair();
    const { tap, dropped } = dropData(p, (n) => (n === 5 || n === 9 ? 1 : 0));
    const data = testData(200_000, 2);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(dropped.length).toBe(2);
    expect(p.a.counters.TcpExtTCPSackRecovery).toBe(1);
    expect(p.a.counters.TcpRetransSegs).toBe(2);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(0);
    for (const seq of dropped) expect(sendsOf(tap, seq).length).toBe(2);
    // SACK blocks described both holes at once at some point.
    expect(tap.tcp('b->a', (t) => t.sack.length >= 2).length).toBeGreaterThan(0);
  });

  test('NewReno (SACK disabled on B): the 5th data segment lost -> Reno recovery on three duplicate ACKs', async () => {
    const p = makePair({}, { tcp: { congestionControl: 'newreno' } }, { tcp: { sack: false } });
    const { tap, dropped } = dropData(p, (n) => (n === 5 ? 1 : 0));
    const data = testData(200_000, 3);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(connOf(p.a) === undefined || connOf(p.a)!.sackOk === false).toBe(true);
    const c = p.a.counters;
    expect(c.TcpExtTCPRenoRecovery).toBe(1);
    expect(c.TcpExtTCPSackRecovery).toBe(0);
    expect(c.TcpExtTCPFastRetrans).toBe(1);
    expect(c.TcpRetransSegs).toBe(1);
    expect(c.TcpExtTCPTimeouts).toBe(0);
    // No SACK blocks on the wire, and the retransmission followed the third duplicate ACK.
    expect(tap.tcp('b->a', (t) => t.sack.length > 0).length).toBe(0);
    const [first, again] = sendsOf(tap, dropped[0]);
    const dupAcks = tap.pureAcks('b->a').filter((s) => s.tcp.ack === dropped[0] && s.t > first.t && s.t < again.t);
    expect(dupAcks.length).toBeGreaterThanOrEqual(3);
    expect(again.t - first.t).toBeLessThan(10);
  });

  test('NewReno: two losses in one window -> the partial ACK resends the second hole (RFC 6582), no timeout', async () => {
    const p = makePair({}, { tcp: { congestionControl: 'newreno', sack: false } }, {});
    const { tap, dropped } = dropData(p, (n) => (n === 5 || n === 8 ? 1 : 0));
    const data = testData(200_000, 4);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(p.a.counters.TcpExtTCPRenoRecovery).toBe(1);
    expect(p.a.counters.TcpRetransSegs).toBe(2);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(0);
    // The second hole went out when the partial ACK (acking up to it) arrived.
    const second = sendsOf(tap, dropped[1])[1];
    const partial = tap.pureAcks('b->a').find((s) => s.tcp.ack === dropped[1]);
    expect(partial).toBeDefined();
    expect(second.t).toBeGreaterThanOrEqual(partial!.t);
    expect(second.t - partial!.t).toBeLessThanOrEqual(1);
  });
});

/** Connects A to a sink on B and waits for ESTABLISHED; returns the client socket. */
async function connected(p: Pair, port = 9000, maxMs = 100) {
  const { sinks } = sinkServer(p, port);
  const c = p.netA.connect({ host: B_ADDR, port }) as FsSocket;
  const sink = watch(c);
  let up = false;
  c.on('connect', () => {
    up = true;
  });
  expect(await runUntil(p.clock, () => up && sinks.length === 1, maxMs)).toBe(true);
  return { c, sink, sinks };
}

describe('retransmission timeout (RFC 6298)', () => {
  test('the only segment lost: RTO after the 200 ms minimum (between minRto and initialRto), then backoff doubles', async () => {
    const p = makePair();
    const { tap } = dropData(p, (n) => (n === 1 ? 3 : 0)); // first transmission and two retransmissions lost
    const { c, sinks } = await connected(p);
    c.write(Buffer.from('hello, world'));
    expect(await runUntil(p.clock, () => sinks[0].bytes === 12, 5_000)).toBe(true);
    const sends = tap.data('a->b');
    expect(sends.length).toBe(4);
    const gaps = sends.slice(1).map((s, i) => Math.round(s.t - sends[i].t));
    const cfg = p.a.tcp.config;
    expect(gaps[0]).toBeGreaterThanOrEqual(cfg.minRtoMs);
    expect(gaps[0]).toBeLessThanOrEqual(cfg.initialRtoMs);
    expect(gaps[0]).toBe(200); // srtt ~1 ms on this link: the minimum applies
    expect(gaps[1]).toBe(2 * gaps[0]);
    expect(gaps[2]).toBe(4 * gaps[0]);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(3);
    expect(p.a.counters.TcpRetransSegs).toBe(3);
    expect(sinks[0].data().toString()).toBe('hello, world');
    // The ACK of the retransmission resets the backoff (RFC 6298 5.7 keeps it only until new data is acked).
    const conn = connOf(p.a)!;
    expect(await runUntil(p.clock, () => conn.sndUna === conn.sndMax, 1_000)).toBe(true);
    expect(conn.backoff).toBe(0);
    expect(conn.rtoAt).toBe(Infinity); // nothing outstanding: timer off (RFC 6298 5.2)
  });

  test('tail loss (the last segment of a burst: no duplicate ACKs follow) is recovered by the RTO', async () => {
    const p = makePair();
    const { tap, dropped } = dropData(p, (n) => (n === 7 ? 1 : 0));
    const { c, sinks } = await connected(p);
    c.write(testData(7 * 1448, 5));
    expect(await runUntil(p.clock, () => sinks[0].bytes === 7 * 1448, 5_000)).toBe(true);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(1);
    expect(p.a.counters.TcpExtTCPSackRecovery + p.a.counters.TcpExtTCPRenoRecovery).toBe(0);
    // RFC 6298 5.3: each ACK of new data restarts the timer, so the RTO counts from the
    // last ACK's arrival (sent by B, plus 0.5 ms of link), not from the lost segment.
    const [first, again] = sendsOf(tap, dropped[0]);
    const lastAck = tap
      .tcp('b->a')
      .filter((s) => s.t < again.t)
      .pop()!;
    expect(again.t - (lastAck.t + 0.5)).toBeCloseTo(200, 6);
    expect(again.t - first.t).toBeLessThan(205);
  });

  test('no ACK ever comes back: the connection gives up after dataRetries retransmissions with ETIMEDOUT', async () => {
    const p = makePair({}, { tcp: { dataRetries: 3 } });
    const { tap, c, sink } = await (async () => {
      const tap = new Tap(p);
      const r = await connected(p);
      tap.drop = (s) => s.dir === 'a->b';
      return { tap, ...r };
    })();
    const t0 = p.clock.now;
    c.write(Buffer.from('into the void'));
    expect(await runUntil(p.clock, () => sink.error !== null, 10_000)).toBe(true);
    expect(sink.error!.code).toBe('ETIMEDOUT');
    const sends = tap.data('a->b');
    expect(sends.length).toBe(4); // the original and 3 retransmissions
    const offsets = sends.map((s) => Math.round(s.t - t0));
    expect(offsets).toEqual([0, 200, 600, 1400]);
    // The give-up comes one more (doubled) timeout after the last retransmission.
    expect(Math.round(p.clock.now - t0)).toBeGreaterThanOrEqual(3000);
    expect(Math.round(p.clock.now - t0)).toBeLessThanOrEqual(3002);
    expect(p.a.counters.TcpExtTCPAbortOnTimeout).toBe(1);
    expect(connOf(p.a)).toBeUndefined();
  });

  test('after an RTO the sender goes back to slow start: cwnd collapses to one segment and ssthresh halves', async () => {
    const p = makePair({}, { tcp: { congestionControl: 'newreno' } });
    const { tap } = dropData(p, () => 0);
    const { c } = await connected(p);
    const conn = connOf(p.a)!;
    // Fill the pipe, then black-hole everything until the RTO.
    tap.drop = (s) => s.dir === 'a->b' && !!s.tcp && s.tcp.len > 0;
    c.write(testData(20 * 1448, 6));
    await runFor(p.clock, 5);
    const flight = conn.flight;
    expect(flight).toBeGreaterThan(5 * 1448);
    expect(await runUntil(p.clock, () => p.a.counters.TcpExtTCPTimeouts === 1, 1_000)).toBe(true);
    expect(conn.cc.cwnd).toBe(conn.mss);
    expect(conn.cc.ssthresh).toBe(Math.max(flight >> 1, 2 * conn.mss));
    expect(seqValue(conn.sndNxt) - seqValue(conn.sndUna)).toBe(conn.mss); // one segment resent from SND.UNA
  });

  for (const cc of ['newreno', 'cubic'] as const) {
    test(`${cc}: a segment resent again by the timer keeps the ssthresh of the first timeout (RFC 5681 3.1)`, async () => {
      const p = makePair({}, { tcp: { congestionControl: cc } });
      const { tap } = dropData(p, () => 0);
      const { c, sinks } = await connected(p);
      const conn = connOf(p.a)!;
      // Let cwnd grow a little first.
      c.write(testData(30 * 1448, 7));
      expect(await runUntil(p.clock, () => conn.sndUna === conn.sndMax, 1_000)).toBe(true);
      // Then lose everything for three timeouts.
      tap.drop = (s) => s.dir === 'a->b' && !!s.tcp && s.tcp.len > 0 && p.a.counters.TcpExtTCPTimeouts < 3;
      c.write(testData(40 * 1448, 8));
      await runFor(p.clock, 5);
      expect(conn.flight).toBeGreaterThan(10 * 1448);
      expect(await runUntil(p.clock, () => p.a.counters.TcpExtTCPTimeouts === 1, 1_000)).toBe(true);
      const afterFirst = conn.cc.ssthresh;
      expect(afterFirst).toBeGreaterThan(4 * conn.mss);
      expect(await runUntil(p.clock, () => p.a.counters.TcpExtTCPTimeouts === 3, 2_000)).toBe(true);
      expect(conn.cc.ssthresh).toBe(afterFirst);
      expect(conn.cc.cwnd).toBe(conn.mss);
      expect(await runUntil(p.clock, () => sinks[0].bytes === 70 * 1448, 5_000)).toBe(true);
    });
  }
});

describe('RTT measurement (RFC 6298 2, RFC 7323 4)', () => {
  test('on a 300 ms round trip the RTO follows the measured RTT (srtt + 4 rttvar above the 200 ms floor)', async () => {
    const p = makePair({ latencyMs: 150 });
    const { tap, dropped } = dropData(p, (n) => (n === 30 ? 1 : 0));
    const { c, sinks } = await connected(p, 9000, 1_000);
    const conn = connOf(p.a)!;
    // 29 segments go through first, giving RTT samples of 300 ms (plus delayed ACKs).
    c.write(testData(29 * 1448, 81));
    expect(await runUntil(p.clock, () => conn.sndUna === conn.sndMax, 5_000)).toBe(true);
    expect(conn.srtt).toBeGreaterThanOrEqual(300);
    expect(conn.srtt).toBeLessThan(350);
    // RFC 6298 2.3: RTO = SRTT + max(G, 4 * RTTVAR), at least the minimum.
    const cfg = p.a.tcp.config;
    const rto = conn.rto;
    expect(rto).toBeCloseTo(Math.max(cfg.minRtoMs, conn.srtt + Math.max(cfg.clockGranularityMs, 4 * conn.rttvar)), 6);
    expect(rto).toBeGreaterThan(300);
    // Now a lone segment that is lost: only the timer can resend it.
    c.write(testData(1000, 82));
    expect(await runUntil(p.clock, () => sinks[0].bytes === 29 * 1448 + 1000, 5_000)).toBe(true);
    const [first, again] = sendsOf(tap, dropped[0]);
    expect(again.t - first.t).toBeCloseTo(rto, 0);
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(1);
  });
});

describe('RFC 6675 IsLost with reordering', () => {
  test('loss with mild reordering: holes are resent only when more than 2 MSS are SACKed above them', async () => {
    // Packets overtaken by one or two others look like holes for a moment. Only the
    // real losses should be retransmitted, not every gap below the highest SACK.
    const p = makePair({ lossRate: 0.02, seed: 11, reorderRate: 0.2, reorderDelayMs: 0.02 });
    const data = testData(2_000_000, 12);
    const r = await transfer(p, data, { maxMs: 120_000 });
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    const dropped = p.link.counters['a->b'].droppedLoss;
    expect(p.link.counters['a->b'].reordered).toBeGreaterThan(100);
    expect(dropped).toBeGreaterThan(10);
    expect(p.a.counters.TcpRetransSegs).toBeGreaterThanOrEqual(dropped - 5);
    // Spurious retransmissions of reordered (not lost) segments stay few: with this seed
    // 32 drops give 34 retransmissions; treating every gap as lost gave 61.
    expect(p.a.counters.TcpRetransSegs).toBeLessThan(dropped * 1.25 + 2);
  });
});
