/**
 * The neighbour table on virtual time: resolution, retries, failure, the REACHABLE ->
 * STALE -> DELAY -> PROBE cycle, queue bounds, locktime, arp_accept 0, collection.
 * Time is whatever the test says it is; the table's timers run when the test runs them.
 */
import { describe, expect, test } from 'vitest';
import { DEFAULT_NEIGH_PARAMS, NeighbourHost, NeighbourParams, NeighbourTable, Nud } from '../../stack/iface/neighbour';

const A = 0xc6120001; // 198.18.0.1
const B = 0xc6120003;
const MAC_A = 0x525400000001;
const MAC_A2 = 0x525400000002;

interface Rec {
  solicits: { t: number; target: number; unicastTo: number | null }[];
  sent: { t: number; pkt: string; mac: number }[];
  unreachable: { t: number; pkt: string; target: number }[];
}

function rig(params: Partial<NeighbourParams> = {}, random = () => 0.5, start = 1000) {
  const rec: Rec = { solicits: [], sent: [], unreachable: [] };
  const host: NeighbourHost<string> = {
    solicit: (target, unicastTo, _about, t) => rec.solicits.push({ t, target, unicastTo }),
    transmit: (pkt, mac, t) => rec.sent.push({ t, pkt, mac }),
    unreachable: (pkt, target, t) => rec.unreachable.push({ t, pkt, target }),
    sizeOf: (p) => (p.startsWith('big') ? 3000 : 100),
  };
  const table = new NeighbourTable<string>(host, start, params, random);
  let now = start;
  /** Runs every timer due up to `t`, at its own deadline. */
  const advanceTo = (t: number) => {
    for (;;) {
      const d = table.nextDeadline();
      if (d > t) break;
      now = d;
      table.run(d);
    }
    now = t;
  };
  /** The transmit path as the interface drives it: output, else enqueue. */
  const send = (addr: number, pkt: string): number => {
    const mac = table.output(addr, now);
    if (mac < 0) table.enqueue(addr, pkt, now);
    else rec.sent.push({ t: now, pkt, mac });
    return mac;
  };
  return {
    table,
    rec,
    advanceTo,
    send,
    get now() {
      return now;
    },
  };
}

const reply = { reply: true, forUs: false, gratuitous: false };
const request = { reply: false, forUs: true, gratuitous: false };

describe('neighbour table', () => {
  test("Linux's defaults", () => {
    expect(DEFAULT_NEIGH_PARAMS).toMatchObject({
      baseReachableTimeMs: 30_000,
      retransTimeMs: 1000,
      delayFirstProbeTimeMs: 5000,
      mcastSolicit: 3,
      ucastSolicit: 3,
      unresQlen: 101,
      unresQlenBytes: 212_992,
      locktimeMs: 1000,
      gcStaleTimeMs: 60_000,
      gcThresh1: 128,
      gcThresh3: 1024,
    });
  });

  test('resolution: a broadcast request, packets wait, the reply sends them in order and makes the entry REACHABLE', () => {
    const r = rig();
    expect(r.send(A, 'p1')).toBe(-1);
    expect(r.send(A, 'p2')).toBe(-1);
    expect(r.table.state(A)).toBe(Nud.Incomplete);
    expect(r.rec.solicits).toEqual([{ t: 1000, target: A, unicastTo: null }]); // one request, not one per packet
    r.advanceTo(1200);
    r.table.learn(A, MAC_A, reply, r.now);
    expect(r.table.state(A)).toBe(Nud.Reachable);
    expect(r.rec.sent).toEqual([
      { t: 1200, pkt: 'p1', mac: MAC_A },
      { t: 1200, pkt: 'p2', mac: MAC_A },
    ]);
    expect(r.send(A, 'p3')).toBe(MAC_A);
    expect(r.table.counters).toMatchObject({ allocs: 1, solicits_mcast: 1, res_failed: 0, unresolved_discards: 0 });
    // No further request after the answer.
    r.advanceTo(10_000);
    expect(r.rec.solicits.length).toBe(1);
  });

  test('retries: mcast_solicit (3) requests retrans_time (1 s) apart, then FAILED and every waiting packet reported', () => {
    const r = rig();
    r.send(A, 'syn');
    r.advanceTo(1500);
    r.send(A, 'syn-again');
    r.advanceTo(3999);
    expect(r.rec.solicits.map((s) => s.t)).toEqual([1000, 2000, 3000]);
    expect(r.rec.solicits.every((s) => s.unicastTo === null)).toBe(true);
    expect(r.table.state(A)).toBe(Nud.Incomplete);
    expect(r.rec.unreachable).toEqual([]);
    r.advanceTo(4000);
    expect(r.table.state(A)).toBe(Nud.Failed);
    expect(r.rec.unreachable).toEqual([
      { t: 4000, pkt: 'syn', target: A },
      { t: 4000, pkt: 'syn-again', target: A },
    ]);
    expect(r.table.counters.res_failed).toBe(1);
    expect(r.rec.sent).toEqual([]);
    // A new packet starts over.
    r.advanceTo(9000);
    r.send(A, 'later');
    expect(r.table.state(A)).toBe(Nud.Incomplete);
    expect(r.rec.solicits.at(-1)).toEqual({ t: 9000, target: A, unicastTo: null });
    r.table.learn(A, MAC_A, reply, 9100);
    expect(r.rec.sent).toEqual([{ t: 9100, pkt: 'later', mac: MAC_A }]);
  });

  test('reachable_time is drawn from [base/2, 3*base/2)', () => {
    expect(rig({}, () => 0).table.currentReachableTime).toBe(15_000);
    expect(rig({}, () => 0.5).table.currentReachableTime).toBe(30_000);
    expect(rig({}, () => 0.999).table.currentReachableTime).toBe(44_970);
  });

  test('REACHABLE -> STALE after reachable_time with no traffic; STALE -> DELAY on use; DELAY -> PROBE with unicast requests; a reply makes it REACHABLE', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(A, MAC_A, reply, 1000);
    r.advanceTo(1000 + 29_999);
    expect(r.table.state(A)).toBe(Nud.Reachable);
    r.advanceTo(1000 + 30_000);
    expect(r.table.state(A)).toBe(Nud.Stale);
    // A stale entry is still used (no request yet), and moves to DELAY.
    r.advanceTo(40_000);
    expect(r.send(A, 'q')).toBe(MAC_A);
    expect(r.table.state(A)).toBe(Nud.Delay);
    const before = r.rec.solicits.length;
    r.advanceTo(44_999);
    expect(r.table.state(A)).toBe(Nud.Delay);
    r.advanceTo(45_000);
    expect(r.table.state(A)).toBe(Nud.Probe);
    expect(r.rec.solicits.slice(before)).toEqual([{ t: 45_000, target: A, unicastTo: MAC_A }]);
    // Packets still go to the cached MAC while probing.
    expect(r.send(A, 'r')).toBe(MAC_A);
    r.advanceTo(45_500);
    r.table.learn(A, MAC_A, reply, r.now);
    expect(r.table.state(A)).toBe(Nud.Reachable);
    r.advanceTo(60_000);
    expect(r.rec.solicits.length).toBe(before + 1);
  });

  test('PROBE runs out of ucast_solicit (3) unicast requests: FAILED', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(A, MAC_A, reply, 1000);
    r.advanceTo(31_000);
    r.send(A, 'q'); // DELAY
    r.advanceTo(36_000); // PROBE, first unicast request
    r.advanceTo(38_999);
    expect(r.rec.solicits.slice(1)).toEqual([
      { t: 36_000, target: A, unicastTo: MAC_A },
      { t: 37_000, target: A, unicastTo: MAC_A },
      { t: 38_000, target: A, unicastTo: MAC_A },
    ]);
    expect(r.table.state(A)).toBe(Nud.Probe);
    r.advanceTo(39_000);
    expect(r.table.state(A)).toBe(Nud.Failed);
    expect(r.table.counters).toMatchObject({ res_failed: 1, solicits_ucast: 3, solicits_mcast: 1 });
    expect(r.table.macOf(A)).toBeNull();
  });

  test('DELAY confirmed by a reply goes back to REACHABLE without a probe', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(A, MAC_A, reply, 1000);
    r.advanceTo(32_000);
    r.send(A, 'q');
    expect(r.table.state(A)).toBe(Nud.Delay);
    r.advanceTo(33_000);
    r.table.learn(A, MAC_A, reply, r.now);
    expect(r.table.state(A)).toBe(Nud.Reachable);
    r.advanceTo(40_000);
    expect(r.table.counters.solicits_ucast).toBe(0);
  });

  test('the queue: at most unres_qlen packets, the oldest dropped and counted', () => {
    const r = rig();
    for (let i = 0; i < 105; i++) r.send(A, `p${i}`);
    expect(r.table.counters.unresolved_discards).toBe(4);
    r.table.learn(A, MAC_A, reply, 1000);
    expect(r.rec.sent.length).toBe(101);
    expect(r.rec.sent[0]!.pkt).toBe('p4');
    expect(r.rec.sent.at(-1)!.pkt).toBe('p104');
  });

  test('the queue: at most unres_qlen_bytes of packet', () => {
    const r = rig();
    // 3000-byte packets: 70 fit in 212992 bytes.
    for (let i = 0; i < 75; i++) r.send(A, `big${i}`);
    expect(r.table.counters.unresolved_discards).toBe(5);
    r.table.learn(A, MAC_A, reply, 1000);
    expect(r.rec.sent.length).toBe(70);
    expect(r.rec.sent[0]!.pkt).toBe('big5');
  });

  test('a failed resolution reports only what is still queued', () => {
    const r = rig({ unresQlen: 2 });
    r.send(A, 'a');
    r.send(A, 'b');
    r.send(A, 'c');
    r.advanceTo(4000);
    expect(r.rec.unreachable.map((u) => u.pkt)).toEqual(['b', 'c']);
    expect(r.table.counters.unresolved_discards).toBe(1);
  });

  test('locktime: of two different answers within 1 s the first wins; later, or gratuitous, a new MAC replaces it', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(A, MAC_A, reply, 1000);
    r.table.learn(A, MAC_A2, reply, 1500);
    expect(r.table.macOf(A)).toBe(MAC_A);
    r.table.learn(A, MAC_A2, reply, 2000);
    expect(r.table.macOf(A)).toBe(MAC_A2);
    r.table.learn(A, MAC_A, { reply: false, forUs: false, gratuitous: true }, 2100);
    expect(r.table.macOf(A)).toBe(MAC_A);
    expect(r.table.state(A)).toBe(Nud.Stale); // a gratuitous request says where, not that it is reachable
  });

  test('arp_accept 0: an unsolicited reply or a request for someone else creates nothing; a request for us creates a STALE entry', () => {
    const r = rig();
    r.table.learn(A, MAC_A, reply, 1000);
    r.table.learn(A, MAC_A, { reply: false, forUs: false, gratuitous: true }, 1000);
    expect(r.table.state(A)).toBeNull();
    r.table.learn(B, MAC_A2, request, 1000);
    expect(r.table.state(B)).toBe(Nud.Stale);
    expect(r.send(B, 'to-b')).toBe(MAC_A2); // usable at once
    expect(r.table.state(B)).toBe(Nud.Delay);
  });

  test('an update that says only "stale" with the same MAC keeps REACHABLE', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(A, MAC_A, reply, 1000);
    r.table.learn(A, MAC_A, request, 5000);
    expect(r.table.state(A)).toBe(Nud.Reachable);
  });

  test('periodic collection above gc_thresh1 removes STALE entries unused for gc_stale_time', () => {
    const r = rig({ gcThresh1: 2 });
    for (const addr of [A, B, B + 1]) r.table.learn(addr, MAC_A, request, 1000);
    expect(r.table.size).toBe(3);
    r.advanceTo(60_000);
    expect(r.table.size).toBe(3); // unused for 59 s only
    r.send(A, 'keep'); // used: DELAY, not collected
    r.advanceTo(91_000);
    expect(r.table.size).toBe(1);
    expect(r.table.state(A)).not.toBeNull();
    expect(r.table.counters.periodic_gc_runs).toBeGreaterThan(0);
  });

  test('a full table: forced collection, then table_fulls and the packet lost', () => {
    const r = rig({ gcThresh3: 2 });
    r.send(A, 'a');
    r.send(B, 'b');
    r.send(B + 1, 'c'); // both entries are INCOMPLETE: nothing may go
    expect(r.table.size).toBe(2);
    expect(r.table.counters).toMatchObject({ forced_gc_runs: 1, table_fulls: 1 });
    r.advanceTo(5000); // both FAILED now
    r.send(B + 1, 'd');
    expect(r.table.size).toBe(1);
    expect(r.table.state(B + 1)).toBe(Nud.Incomplete);
  });

  test('rows read like ip neigh', () => {
    const r = rig();
    r.send(A, 'p');
    r.table.learn(B, MAC_A2, request, 1000);
    r.advanceTo(1500);
    const rows = r.table.rows(r.now);
    expect(rows).toEqual([
      { dst: '198.18.0.1', lladdr: null, state: 'INCOMPLETE', probes: 1, queued: 1, confirmedAgoMs: null, usedAgoMs: 500, updatedAgoMs: 500 },
      { dst: '198.18.0.3', lladdr: '52:54:00:00:00:02', state: 'STALE', probes: 0, queued: 0, confirmedAgoMs: null, usedAgoMs: 500, updatedAgoMs: 500 },
    ]);
  });
});
