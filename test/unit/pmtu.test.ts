/**
 * Path MTU discovery (RFC 1191) and the host-route cache of KB 898060, on the
 * virtual clock: the cache's rules called directly (limit, aging, plateaus, floor,
 * never rising, the buggy and hotfixed counting rules), then real connections over
 * the memory link with a "router" on the path that drops segments too big for its
 * next hop and answers with ICMP fragmentation needed quoting them (RFC 792), the
 * RFC 5927 checks on what an ICMP message quotes, and black-hole detection
 * (EnablePMTUBHDetect) when the router stays silent.
 */
import { describe, expect, test } from 'vitest';
import { DEFAULT_PMTU, StackOptions } from '../../stack/stack';
import type { PmtuParams } from '../../stack/iface/pmtu';
import { CREATIONS_AND_REMOVALS, MTU_PLATEAUS } from '../../stack/iface/pmtu';
import { ARTICLE_ACCOUNTING } from '../../stack/faults/kb898060';
import { ICMP_DEST_UNREACH, UNREACH_FRAG_NEEDED, emitIcmp, newIcmpRepr } from '../../stack/wire/icmp';
import { parseIpv4 } from '../../stack/wire/addr';
import { buildFaultConfig } from '../../stack/faults/config';
import { EventLog } from '../../stack/faults/events';
import { installFaults } from '../../stack/faults/install';
import { A_IP, B_ADDR, B_IP, connOf, makePair, runFor, runUntil, sha256, sinkServer, testData, transfer, watch, Pair } from './helpers/pair';
import { PROTO_ICMP, Seen, Tap, craftIp } from './helpers/tap';
import type { FsSocket } from '../../stack/api/net';
import { seqValue } from '../../stack/wire/seq';

const ip = (s: string) => parseIpv4(s)!;
const ROUTER1 = ip('198.18.0.251');
const ROUTER2 = ip('198.18.0.252');

/** The host-route count of each mode: the article's (kb898060's module) or the core's correct one. */
type CountRule = 'buggy' | 'hotfixed';
const ACCOUNTING = { buggy: ARTICLE_ACCOUNTING, hotfixed: CREATIONS_AND_REMOVALS } as const;

interface Knobs {
  params: PmtuParams;
  rule: CountRule;
  limitEvents: { count: number; real: number; limit: number }[];
  ignored: { dst: number; mtu: number }[];
}

/** A pair whose stack A (the data sender in `transfer`) has PMTU parameters and a counting rule the test controls. */
function pmtuPair(params: Partial<PmtuParams> = {}, rule: CountRule = 'hotfixed', a: Partial<StackOptions> = {}) {
  const k: Knobs = { params: { ...DEFAULT_PMTU, ...params }, rule, limitEvents: [], ignored: [] };
  const p = makePair(
    {},
    {
      pmtu: () => k.params,
      hostRouteAccounting: ACCOUNTING[rule],
      pmtuEvents: {
        limitReached: (count, real, limit) => k.limitEvents.push({ count, real, limit }),
        ignoredAtLimit: (dst, mtu) => k.ignored.push({ dst, mtu }),
      },
      ...a,
    },
  );
  return { p, k };
}

/** Destination number i of a block of lab addresses (198.19.x.y), for the direct cache tests. */
const dest = (i: number) => (ip('198.19.0.0') + 256 + i) >>> 0;

/** ICMP destination unreachable, fragmentation needed, quoting `quoted`'s IP header and 8 bytes more (RFC 792). */
function fragNeeded(quoted: Buffer, nextHopMtu: number, from: number, to = A_IP): Buffer {
  const ihl = (quoted[0] & 15) * 4;
  const q = quoted.subarray(0, Math.min(quoted.length, ihl + 8));
  const body = Buffer.alloc(8 + q.length);
  q.copy(body, 8);
  emitIcmp(body, 0, { ...newIcmpRepr(), type: ICMP_DEST_UNREACH, code: UNREACH_FRAG_NEEDED, nextHopMtu: nextHopMtu & 0xffff, bodyLength: q.length });
  return craftIp({ src: from, dst: to, protocol: PROTO_ICMP, payload: body });
}

interface Hop {
  addr: number;
  mtu: number;
  /** false: a black hole (drops without telling). */ icmp?: boolean;
  /** What it reports (old routers say 0). */ reports?: number;
}

/**
 * Routers on the A->B path: a packet with DF set that is larger than a hop's MTU is
 * dropped there and (unless the hop is a black hole) the hop sends A an ICMP
 * fragmentation needed quoting it, 0.3 ms later. Returns what happened.
 */
function routers(p: Pair, hops: Hop[]) {
  const tap = new Tap(p);
  const sent: { from: number; mtu: number; quotedSeq: number; t: number }[] = [];
  const dropped: Seen[] = [];
  tap.drop = (s) => {
    if (s.dir !== 'a->b') return false;
    const df = (s.raw[6] & 0x40) !== 0;
    for (const h of hops) {
      if (s.raw.length <= h.mtu) continue;
      if (!df) return false; // would be fragmented; the stack never sends TCP without DF
      dropped.push(s);
      if (h.icmp !== false) {
        const msg = fragNeeded(s.raw, h.reports ?? h.mtu, h.addr);
        sent.push({ from: h.addr, mtu: h.reports ?? h.mtu, quotedSeq: s.tcp?.seq ?? -1, t: p.clock.now });
        p.clock.after(0.3, () => tap.inject('a', msg));
      }
      return true;
    }
    return false;
  };
  return { tap, sent, dropped };
}

describe('the host-route cache (PathMtu, called directly)', () => {
  test('an ICMP next-hop MTU creates a host route; network routes keep the interface MTU', () => {
    const { p } = pmtuPair();
    const pm = p.a.pmtu;
    expect(pm.onFragNeeded(dest(1), 1280, 1500, p.clock.now)).toBe('created');
    expect(p.a.pathMtu(dest(1))).toBe(1280);
    expect(p.a.pathMtu(dest(2))).toBe(1500);
    const d = pm.describe(p.clock.now);
    expect(d.hosts).toEqual([expect.objectContaining({ dest: '198.19.1.1', mtu: 1280, source: 'icmp', updates: 0 })]);
    expect(d.networks.every((n) => n.mtu === 1500)).toBe(true);
    expect(d.hostRouteCount).toBe(1);
    expect(d.hostRoutesReal).toBe(1);
    expect(p.a.counters.FsHostRoutesCreated).toBe(1);
    expect(p.a.counters.TcpExtPMTUFragNeeded).toBe(1);
  });

  test('a router that reports MTU 0 gets the largest plateau below the quoted length (RFC 1191 7)', () => {
    const { p } = pmtuPair({ PMTUFloor: 68 });
    const pm = p.a.pmtu;
    const cases: [number, number][] = [
      [1500, 1492],
      [1492, 1006],
      [1006, 508],
      [1000, 508],
      [300, 296],
      [100, 68],
    ];
    cases.forEach(([quoted, want], i) => {
      pm.onFragNeeded(dest(i), 0, quoted, p.clock.now);
      expect(p.a.pathMtu(dest(i)), `quoted ${quoted}`).toBe(want);
    });
    // A next-hop MTU not below the length it refused is nonsense: the plateau rule too.
    pm.onFragNeeded(dest(20), 1500, 1500, p.clock.now);
    expect(p.a.pathMtu(dest(20))).toBe(1492);
    // A TSO super-segment quotes its whole length (tens of kilobytes), but what went on
    // the wire was at most the interface MTU: the plateau is taken below that.
    pm.onFragNeeded(dest(21), 0, 63_712, p.clock.now);
    expect(p.a.pathMtu(dest(21))).toBe(1492);
    // Late messages about packets sent before the decrease do not lower it further.
    pm.onFragNeeded(dest(21), 0, 1500, p.clock.now);
    expect(p.a.pathMtu(dest(21))).toBe(1492);
    expect(MTU_PLATEAUS).toEqual([65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68]);
  });

  test('floor 68: nothing below 68; floor 576 (MS05-019): a report below 576 does not lower the estimate', () => {
    const low = pmtuPair({ PMTUFloor: 68 }).p;
    low.a.pmtu.onFragNeeded(dest(1), 300, 1500, 0);
    expect(low.a.pathMtu(dest(1))).toBe(300);
    low.a.pmtu.onFragNeeded(dest(2), 40, 1500, 0);
    expect(low.a.pathMtu(dest(2))).toBe(68);

    const ms05 = pmtuPair({ PMTUFloor: 576 }).p;
    expect(ms05.a.pmtu.onFragNeeded(dest(1), 300, 1500, 0)).toBe('ignored-floor');
    expect(ms05.a.pathMtu(dest(1))).toBe(1500);
    expect(ms05.a.pmtu.onFragNeeded(dest(2), 576, 1500, 0)).toBe('created');
    expect(ms05.a.pathMtu(dest(2))).toBe(576);
    expect(ms05.a.pmtu.onFragNeeded(dest(2), 500, 576, 0)).toBe('ignored-floor');
    expect(ms05.a.pathMtu(dest(2))).toBe(576);
  });

  test('the estimate never rises on ICMP; each lowering is one update', () => {
    const { p } = pmtuPair();
    const pm = p.a.pmtu;
    expect(pm.onFragNeeded(dest(1), 1280, 1500, 0)).toBe('created');
    expect(pm.onFragNeeded(dest(1), 1400, 1500, 0)).toBe('unchanged');
    expect(pm.onFragNeeded(dest(1), 1280, 1500, 0)).toBe('unchanged');
    expect(p.a.pathMtu(dest(1))).toBe(1280);
    expect(pm.onFragNeeded(dest(1), 1000, 1280, 0)).toBe('updated');
    expect(p.a.pathMtu(dest(1))).toBe(1000);
    // An MTU at or above the interface's creates nothing.
    expect(pm.onFragNeeded(dest(2), 1500, 9000, 0)).toBe('unchanged');
    expect(pm.realCount).toBe(1);
    expect(p.a.counters.FsHostRoutesUpdated).toBe(1);
    expect(pm.describe(0).hosts[0].updates).toBe(1);
  });

  test('hotfixed: the limit counts real routes; at the limit new destinations are refused, existing routes still lowered', () => {
    const { p, k } = pmtuPair({ MaxIcmpHostRoutes: 5 });
    const pm = p.a.pmtu;
    for (let i = 0; i < 5; i++) expect(pm.onFragNeeded(dest(i), 1400, 1500, 0)).toBe('created');
    expect(k.limitEvents).toEqual([{ count: 5, real: 5, limit: 5 }]);
    expect(pm.onFragNeeded(dest(5), 1400, 1500, 0)).toBe('ignored-limit');
    expect(p.a.pathMtu(dest(5))).toBe(1500);
    expect(p.a.counters.FsIcmpIgnoredAtLimit).toBe(1);
    expect(k.ignored).toEqual([{ dst: dest(5), mtu: 1400 }]);
    // Lowering a route that exists creates nothing: the fixed rule lets it through.
    expect(pm.onFragNeeded(dest(0), 1280, 1400, 0)).toBe('updated');
    expect(p.a.pathMtu(dest(0))).toBe(1280);
    expect(pm.counted).toBe(5);
    expect(pm.describe(0)).toMatchObject({ hostRouteCount: 5, hostRoutesReal: 5, maxIcmpHostRoutes: 5, atLimit: true, countRule: 'creations-and-removals' });
  });

  test('buggy vs hotfixed: three destinations updated twice each; buggy reaches a limit of 10 with 4 real routes', () => {
    const run = (rule: CountRule) => {
      const { p, k } = pmtuPair({ MaxIcmpHostRoutes: 10 }, rule);
      const pm = p.a.pmtu;
      // Several routers on the way, a smaller MTU at each (1400, 1280, then a 1000-byte tunnel).
      for (let i = 0; i < 3; i++) for (const mtu of [1400, 1280, 1000]) pm.onFragNeeded(dest(i), mtu, 1500, 0);
      const afterThree = { counted: pm.counted, real: pm.realCount };
      const fourth = pm.onFragNeeded(dest(3), 1400, 1500, 0);
      const fifth = pm.onFragNeeded(dest(4), 1400, 1500, 0);
      const again = pm.onFragNeeded(dest(3), 1280, 1400, 0);
      return { p, k, pm, afterThree, fourth, fifth, again };
    };
    const buggy = run('buggy');
    expect(buggy.afterThree).toEqual({ counted: 9, real: 3 });
    expect(buggy.fourth).toBe('created');
    expect(buggy.k.limitEvents).toEqual([{ count: 10, real: 4, limit: 10 }]);
    expect(buggy.fifth).toBe('ignored-limit');
    // At the limit the buggy path ignores every message, updates of existing routes too.
    expect(buggy.again).toBe('ignored-limit');
    expect(buggy.p.a.pathMtu(dest(3))).toBe(1400);
    expect(buggy.p.a.pathMtu(dest(4))).toBe(1500);
    expect(buggy.p.a.counters.FsIcmpIgnoredAtLimit).toBe(2);
    expect(buggy.p.a.counters.FsHostRoutesUpdated).toBe(6);

    const fixed = run('hotfixed');
    expect(fixed.afterThree).toEqual({ counted: 3, real: 3 });
    expect([fixed.fourth, fixed.fifth, fixed.again]).toEqual(['created', 'created', 'updated']);
    expect(fixed.k.limitEvents).toEqual([]);
    expect(fixed.p.a.counters.FsIcmpIgnoredAtLimit).toBe(0);
    expect(fixed.pm.counted).toBe(5);
  });

  test('aging: a route not lowered for HostRouteAgingSec goes at the next once-a-minute sweep; the buggy count keeps its extra', async () => {
    for (const rule of ['hotfixed', 'buggy'] as const) {
      const { p } = pmtuPair({ HostRouteAgingSec: 600 }, rule);
      const pm = p.a.pmtu;
      const t0 = p.clock.now;
      pm.onFragNeeded(dest(1), 1400, 1500, t0);
      pm.onFragNeeded(dest(1), 1280, 1400, t0);
      await runFor(p.clock, 5 * 60_000, 1000);
      pm.onFragNeeded(dest(2), 1400, 1500, p.clock.now);
      // 9 minutes: both still there.
      await runFor(p.clock, 4 * 60_000, 1000);
      expect(pm.realCount).toBe(2);
      // 10 minutes after its last change (plus at most a minute for the sweep) the first has gone.
      await runFor(p.clock, 2 * 60_000, 1000);
      expect(pm.realCount, rule).toBe(1);
      expect(p.a.pathMtu(dest(1))).toBe(1500);
      expect(p.a.pathMtu(dest(2))).toBe(1400);
      expect(p.a.counters.FsHostRoutesRemoved).toBe(1);
      // Hotfixed counts what exists; buggy still carries the update it counted as a creation.
      expect(pm.counted, rule).toBe(rule === 'buggy' ? 2 : 1);
      await runFor(p.clock, 6 * 60_000, 1000);
      expect(pm.realCount).toBe(0);
      expect(pm.counted, rule).toBe(rule === 'buggy' ? 1 : 0);
    }
  });

  test('HostRouteAgingSec=0: host routes never age', async () => {
    const { p } = pmtuPair({ HostRouteAgingSec: 0 });
    p.a.pmtu.onFragNeeded(dest(1), 1000, 1500, p.clock.now);
    await runFor(p.clock, 3 * 3600_000, 10_000);
    expect(p.a.pmtu.realCount).toBe(1);
    expect(p.a.pathMtu(dest(1))).toBe(1000);
  });

  test('EnablePMTUDiscovery=0: 576 for destinations off the local subnet, the interface MTU on it, ICMP ignored', () => {
    const { p } = pmtuPair({ EnablePMTUDiscovery: 0 });
    expect(p.a.pathMtu(dest(1))).toBe(576);
    expect(p.a.pathMtu(B_IP)).toBe(1500);
    expect(p.a.pmtu.onFragNeeded(dest(1), 1000, 1500, 0)).toBe('ignored-disabled');
    expect(p.a.pmtu.realCount).toBe(0);
  });

  test('a host route never makes the path MTU larger than the interface MTU (the MTU workaround lowers it later)', () => {
    const { p } = pmtuPair();
    p.a.pmtu.onFragNeeded(dest(1), 1000, 1500, 0);
    p.a.routes.setInterfaceMtu(576);
    expect(p.a.pathMtu(dest(1))).toBe(576);
    expect(p.a.pathMtu(dest(2))).toBe(576);
  });
});

describe('PMTU discovery on real connections over the memory link', () => {
  test('a router with a 1000-byte next hop: A learns 1000 from its ICMP, lowers its segment size at once and resends', async () => {
    const { p } = pmtuPair();
    const { tap, sent, dropped } = routers(p, [{ addr: ROUTER1, mtu: 1000 }]);
    const data = testData(300_000, 7);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(p.a.counters.TcpExtPMTUFragNeeded).toBe(sent.length);
    expect(p.a.counters.FsHostRoutesCreated).toBe(1);
    expect(p.a.pmtu.describe(p.clock.now).hosts).toEqual([expect.objectContaining({ dest: B_ADDR, mtu: 1000 })]);
    // Every data segment after the ICMP arrived fits the hop; the first of them resends SND.UNA at once.
    const icmpAt = sent[0].t + 0.3;
    const after = tap.data('a->b').filter((s) => s.t >= icmpAt);
    expect(after.every((s) => s.raw.length <= 1000)).toBe(true);
    expect(after[0].tcp.seq).toBe(dropped[0].tcp!.seq);
    expect(after[0].t - icmpAt).toBeLessThan(2); // not the retransmission timer (>= 200 ms)
    expect(p.a.counters.TcpExtTCPTimeouts).toBe(0);
    // 1000 - 20 (IP) - 20 (TCP) - 12 (timestamps)
    expect(after[0].tcp.len).toBe(948);
  });

  test('two routers in a row (1400, then a 1000-byte tunnel): one creation and one update', async () => {
    for (const rule of ['hotfixed', 'buggy'] as const) {
      const { p } = pmtuPair({}, rule);
      const { sent } = routers(p, [
        { addr: ROUTER1, mtu: 1400 },
        { addr: ROUTER2, mtu: 1000 },
      ]);
      const data = testData(200_000, 8);
      const r = await transfer(p, data);
      expect(r.done).toBe(true);
      expect(sha256(r.got)).toBe(sha256(data));
      expect(new Set(sent.map((s) => s.from))).toEqual(new Set([ROUTER1, ROUTER2]));
      expect(p.a.counters.FsHostRoutesCreated).toBe(1);
      expect(p.a.counters.FsHostRoutesUpdated).toBe(1);
      expect(p.a.pathMtu(B_IP)).toBe(1000);
      expect(p.a.pmtu.realCount).toBe(1);
      expect(p.a.pmtu.counted, rule).toBe(rule === 'buggy' ? 2 : 1);
    }
  });

  test('a router reporting MTU 0 (pre-RFC 1191): the plateau below 1500 (1492), then below that (1006)', async () => {
    const { p } = pmtuPair();
    const { sent } = routers(p, [{ addr: ROUTER1, mtu: 1200, reports: 0 }]);
    const r = await transfer(p, testData(100_000, 9));
    expect(r.done).toBe(true);
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(p.a.pathMtu(B_IP)).toBe(1006);
    expect(p.a.counters.FsHostRoutesCreated).toBe(1);
    expect(p.a.counters.FsHostRoutesUpdated).toBe(1);
  });

  test('ICMP quoting a connection that does not exist, or a sequence number not in flight, changes nothing (RFC 5927)', async () => {
    const { p } = pmtuPair();
    const tap = new Tap(p);
    // A connection with data in flight, held there: B's sink server stops reading is not needed; we look between segments.
    const { sinks } = sinkServer(p, 9000);
    const c = p.netA.connect({ host: B_ADDR, port: 9000 }) as FsSocket;
    watch(c);
    await runUntil(p.clock, () => sinks.length === 1, 100);
    // Hold B's ACKs so data stays in flight.
    tap.drop = (s) => s.dir === 'b->a' && !!s.tcp && s.tcp.len === 0;
    c.write(testData(20_000, 10));
    await runFor(p.clock, 2);
    const conn = connOf(p.a)!;
    const seg = tap.data('a->b')[0];
    expect(seg).toBeDefined();
    const mssBefore = conn.mss;
    const variants: [string, Buffer][] = [];
    const other = Buffer.from(seg.raw);
    other.writeUInt16BE(seg.tcp.sport + 1, 20); // no such connection (source port)
    variants.push(['no such connection', other]);
    const old = Buffer.from(seg.raw);
    old.writeUInt32BE((seqValue(conn.sndUna) - 5000) >>> 0, 24); // acknowledged long ago
    variants.push(['sequence below SND.UNA', old]);
    const future = Buffer.from(seg.raw);
    future.writeUInt32BE((seqValue(conn.sndMax) + 100_000) >>> 0, 24); // never sent
    variants.push(['sequence beyond SND.MAX', future]);
    const otherHost = Buffer.from(seg.raw);
    otherHost.writeUInt32BE(ip('198.18.0.77'), 16); // a destination we have no connection to
    variants.push(['other destination', otherHost]);
    for (const [, q] of variants) tap.inject('a', fragNeeded(q, 1000, ROUTER1));
    await runFor(p.clock, 2);
    expect(p.a.counters.IcmpInDestUnreachs).toBe(4);
    expect(p.a.counters.TcpExtPMTUFragNeeded).toBe(0);
    expect(p.a.pmtu.realCount).toBe(0);
    expect(conn.mss).toBe(mssBefore);
    // The genuine quote works.
    tap.inject('a', fragNeeded(seg.raw, 1000, ROUTER1));
    await runFor(p.clock, 2);
    expect(p.a.pathMtu(B_IP)).toBe(1000);
    expect(conn.mss).toBe(948);
    c.destroy();
  });

  test('buggy at the limit: a new destination never learns its path MTU and its transfer stalls after the handshake; hotfixed completes', async () => {
    const outcome = async (rule: CountRule) => {
      // Limit 3: other destinations already hold one real route whose updates were counted twice more.
      const { p, k } = pmtuPair({ MaxIcmpHostRoutes: 3 }, rule);
      const pm = p.a.pmtu;
      for (const mtu of [1400, 1280, 1000]) pm.onFragNeeded(dest(1), mtu, 1500, p.clock.now);
      const { sent } = routers(p, [{ addr: ROUTER1, mtu: 1000 }]);
      const data = testData(100_000, 11);
      const r = await transfer(p, data, { maxMs: 10_000 });
      return { p, k, r, sent };
    };
    const buggy = await outcome('buggy');
    expect(buggy.r.done).toBe(false);
    expect(buggy.r.clientSink.error).toBeNull(); // connected, not refused: it just hangs
    expect(buggy.r.got.length).toBe(0);
    expect(buggy.r.serverSink).not.toBeNull(); // the handshake completed
    expect(buggy.sent.length).toBeGreaterThan(2);
    expect(buggy.p.a.counters.FsIcmpIgnoredAtLimit).toBe(buggy.sent.length);
    expect(buggy.p.a.counters.TcpExtTCPTimeouts).toBeGreaterThan(2);
    expect(buggy.k.limitEvents).toEqual([{ count: 3, real: 1, limit: 3 }]);
    expect(buggy.k.ignored[0]).toEqual({ dst: B_IP, mtu: 1000 });
    expect(buggy.p.a.pathMtu(B_IP)).toBe(1500);

    const fixed = await outcome('hotfixed');
    expect(fixed.r.done).toBe(true);
    expect(sha256(fixed.r.got)).toBe(sha256(testData(100_000, 11)));
    expect(fixed.p.a.counters.FsIcmpIgnoredAtLimit).toBe(0);
    expect(fixed.p.a.pmtu.describe(fixed.p.clock.now)).toMatchObject({ hostRouteCount: 2, hostRoutesReal: 2 });
  });

  test('black-hole detection: a router that drops big segments silently; with EnablePMTUBHDetect the MSS drops to 536 and the transfer completes', async () => {
    const run = async (bh: number) => {
      const { p } = pmtuPair({ EnablePMTUBHDetect: bh });
      const { tap, dropped } = routers(p, [{ addr: ROUTER1, mtu: 1000, icmp: false }]);
      const data = testData(100_000, 12);
      const r = await transfer(p, data, { maxMs: 10_000 });
      return { p, r, tap, dropped, data };
    };
    const off = await run(0);
    expect(off.r.done).toBe(false);
    expect(off.r.got.length).toBe(0);
    expect(off.p.a.counters.FsPmtuBlackHoleDetected).toBe(0);

    const on = await run(1);
    expect(on.r.done).toBe(true);
    expect(sha256(on.r.got)).toBe(sha256(on.data));
    expect(on.p.a.counters.FsPmtuBlackHoleDetected).toBe(1);
    // The first full-size segment went out three times (two retransmissions unanswered), then 536-byte segments.
    const firstSeq = on.dropped[0].tcp!.seq;
    const sends = on.tap.data('a->b').filter((s) => s.tcp.seq === firstSeq);
    expect(sends.length).toBe(4);
    expect(sends.slice(0, 3).every((s) => s.raw.length === 1500)).toBe(true);
    expect(sends[3].raw.length).toBe(576);
    const small = on.tap.data('a->b').filter((s) => s.t >= sends[3].t);
    expect(small.every((s) => s.raw.length <= 576)).toBe(true);
    // No ICMP was involved: no host route, the cache is untouched.
    expect(on.p.a.pmtu.realCount).toBe(0);
  });

  test("the MTU parameter (the article's workaround) sets the interface MTU: new connections offer and send 576-byte packets", async () => {
    const p = makePair();
    const cfg = buildFaultConfig({ faults: ['kb898060=buggy'], params: [] });
    const events = new EventLog();
    installFaults(p.a, cfg, events);
    // A route learned before the change must not keep the larger size.
    p.a.pmtu.onFragNeeded(B_IP, 1000, 1500, p.clock.now);
    cfg.setParam('MTU', 576);
    expect(p.a.routes.interfaceMtu).toBe(576);
    expect(p.a.pathMtu(B_IP)).toBe(576);
    const tap = new Tap(p);
    const data = testData(50_000, 13);
    const r = await transfer(p, data);
    expect(r.done).toBe(true);
    expect(sha256(r.got)).toBe(sha256(data));
    const syn = tap.tcp('a->b', (t) => (t.flags & 0x02) !== 0)[0];
    expect(syn.tcp.mss).toBe(536);
    expect(tap.data('a->b').every((s) => s.raw.length <= 576)).toBe(true);
    // MTU=0 goes back to the link's MTU; out of range values are clamped (68 at least, the link's at most).
    cfg.setParam('MTU', 0);
    expect(p.a.routes.interfaceMtu).toBe(1500);
    cfg.setParam('MTU', 9000);
    expect(p.a.routes.interfaceMtu).toBe(1500);
    cfg.setParam('MTU', 20);
    expect(p.a.routes.interfaceMtu).toBe(68);
    events.close();
  });

  test('the catalogue wires the mode and the parameters in: buggy events name the count and the real routes', () => {
    const p = makePair();
    const cfg = buildFaultConfig({ faults: ['pmtu-hostroutes=buggy'], params: ['MaxIcmpHostRoutes=2', 'PMTUFloor=68'] });
    const events = new EventLog();
    installFaults(p.a, cfg, events);
    const pm = p.a.pmtu;
    pm.onFragNeeded(dest(1), 1400, 1500, 0);
    pm.onFragNeeded(dest(1), 1280, 1400, 0);
    pm.onFragNeeded(dest(2), 1400, 1500, 0);
    const got = events.recent(100).filter((e) => e.fault === 'kb898060');
    expect(got.map((e) => e.kind)).toEqual(['hostroute-limit-reached', 'icmp-ignored-at-limit']);
    expect(got[0].data).toMatchObject({ count: 2, routes: 1, limit: 2 });
    expect(got[1].data).toMatchObject({ destination: '198.19.1.2', nextHopMtu: 1400 });
    expect(pm.hooks.hostRouteAccounting.rule).toBe('buggy');
    cfg.setMode('kb898060', 'hotfixed');
    expect(pm.hooks.hostRouteAccounting.rule).toBe('hotfixed');
    events.close();
  });
});
