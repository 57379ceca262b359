/**
 * Impairments in a stack's device path, on the memory link and the virtual clock:
 *  - a 1 MB transfer survives loss, delay and reordering both ways, SHA intact;
 *  - the same seeds give the same run (the wire capture's times, sizes and flags);
 *  - captures on both sides of the ImpairDevice: the outer one (--pcap) shows what the
 *    stack sent and got, the inner one (--pcap-wire) what the wire carried, and their
 *    difference is exactly what the counters say (lost, delayed, corrupted);
 *  - the registry: ids, rows, events on add and removal.
 */
import { afterAll, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MemoryLink, VirtualClock } from '../../drivers/memory';
import { PcapDevice } from '../../drivers/pcap';
import { ImpairDevice } from '../../stack/impair/device';
import { Stack } from '../../stack/stack';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { createNetApi } from '../../stack/api/net';
import { Impairments } from '../../stack/impair/registry';
import { ToxicRegistry } from '../../stack/impair/toxics';
import { EventLog } from '../../stack/faults/events';
import { A_ADDR, A_IP, B_ADDR, B_IP, Pair, runFor, runUntil, sha256, testData, transfer } from './helpers/pair';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fs-impair-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

interface Rec {
  t: number;
  data: Buffer;
}

/** Reads a classic pcap file written by PcapWriter (little-endian, microseconds). */
function readPcap(file: string): Rec[] {
  const b = fs.readFileSync(file);
  expect(b.readUInt32LE(0)).toBe(0xa1b2c3d4);
  const out: Rec[] = [];
  for (let o = 24; o + 16 <= b.length;) {
    const sec = b.readUInt32LE(o),
      usec = b.readUInt32LE(o + 4),
      incl = b.readUInt32LE(o + 8);
    out.push({ t: sec * 1000 + usec / 1000, data: b.subarray(o + 16, o + 16 + incl) });
    o += 16 + incl;
  }
  return out;
}

const srcOf = (p: Buffer) => p.readUInt32BE(12);

/** Stack A behind `outer pcap -> ImpairDevice -> wire pcap -> link`, stack B plain. */
function impairedPair(impairments: string[]) {
  const clock = new VirtualClock(1000);
  const sched = new VirtualScheduler(clock);
  const link = new MemoryLink({ clock, latencyMs: 0.5 });
  const stackPcap = path.join(dir, `stack${n}.pcap`),
    wirePcap = path.join(dir, `wire${n++}.pcap`);
  const wire = new PcapDevice(link.a, { path: wirePcap, now: () => clock.now });
  const imp = new ImpairDevice(wire, sched);
  const outer = new PcapDevice(imp, { path: stackPcap, now: () => clock.now });
  const a = new Stack({ device: outer, scheduler: sched, address: A_IP, prefix: 24 });
  const b = new Stack({ device: link.b, scheduler: sched, address: B_IP, prefix: 24 });
  const events = new EventLog({ capacity: 100 });
  const reg = new Impairments({ device: imp, toxics: new ToxicRegistry(sched), now: () => clock.now, events });
  const rows = impairments.map((w) => reg.add(w));
  const p: Pair = { clock, link, a, b, netA: createNetApi(a), netB: createNetApi(b) };
  const close = () => {
    outer.flush();
    wire.flush();
  };
  return { p, imp, reg, rows, events, stackPcap, wirePcap, close, outer, wire };
}

describe('a transfer through impairments both ways', () => {
  const both = ['out loss 5% delay 2ms 1ms reorder 25% 50% seed 11', 'in loss 5% delay 2ms 1ms reorder 25% 50% seed 12'];

  test('1 MB arrives intact through 5% loss with reordering both ways; the captures differ by exactly what was lost', async () => {
    const r = impairedPair(both);
    const data = testData(1_000_000, 3);
    const before = r.p.a.counters.TcpRetransSegs;
    const t = await transfer(r.p, data, { maxMs: 300_000 });
    expect(t.done).toBe(true);
    expect(t.clientSink.error).toBeNull();
    expect(t.got.length).toBe(data.length);
    expect(sha256(t.got)).toBe(sha256(data));
    expect(r.p.a.counters.TcpRetransSegs).toBeGreaterThan(before);
    await runFor(r.p.clock, 200); // the last ACKs and FINs leave the queues
    r.close();
    const [outRow, inRow] = r.reg.list();
    expect(outRow!.counters).toMatchObject({ queued: 0 });
    const c = outRow!.counters as { matched: number; dropped: number; reordered: number; delayed: number; sent: number };
    const ci = inRow!.counters as typeof c;
    expect(c.dropped).toBeGreaterThan(0);
    expect(c.reordered).toBeGreaterThan(0);
    expect(ci.dropped).toBeGreaterThan(0);
    expect(c.matched).toBe(c.dropped + c.sent);
    const stackRecs = readPcap(r.stackPcap),
      wireRecs = readPcap(r.wirePcap);
    const fromA = (rs: Rec[]) => rs.filter((x) => srcOf(x.data) === A_IP).length;
    const fromB = (rs: Rec[]) => rs.filter((x) => srcOf(x.data) === B_IP).length;
    // out: the stack sent more than reached the wire, by the packets the out impairment dropped.
    expect(fromA(stackRecs) - fromA(wireRecs)).toBe(c.dropped);
    // in: the wire brought more than reached the stack, by the packets the in impairment dropped.
    expect(fromB(wireRecs) - fromB(stackRecs)).toBe(ci.dropped);
  }, 120_000);

  test('the same seeds give the same run: every packet at the same time, of the same size and flags', async () => {
    const trace = async () => {
      const r = impairedPair(both);
      const t = await transfer(r.p, testData(200_000, 5), { maxMs: 300_000 });
      expect(t.done).toBe(true);
      r.close();
      return readPcap(r.wirePcap).map((x) => `${x.t.toFixed(3)} ${x.data.length} ${x.data[9] === 6 ? x.data[33] : '-'}`);
    };
    const a = await trace(),
      b = await trace();
    expect(a.length).toBeGreaterThan(100);
    expect(b).toEqual(a);
  }, 120_000);
});

describe('captures before and after the impairment', () => {
  test('out: the stack capture has the datagram as sent at t, the wire capture 10 ms later with one bit flipped', async () => {
    const r = impairedPair(['out --proto udp delay 10ms corrupt 100% seed 4']);
    const sock = r.p.netA.createUdpSocket();
    const rx = r.p.netB.createUdpSocket();
    const got: Buffer[] = [];
    rx.on('message', (m: Buffer) => got.push(m));
    rx.bind(7000);
    sock.bind(7001);
    const t0 = r.p.clock.now;
    sock.send(Buffer.from('hello through an impaired link'), 7000, B_ADDR);
    await runUntil(r.p.clock, () => r.p.clock.now > t0 + 20);
    r.close();
    const s = readPcap(r.stackPcap).filter((x) => x.data[9] === 17);
    const w = readPcap(r.wirePcap).filter((x) => x.data[9] === 17);
    expect(s).toHaveLength(1);
    expect(w).toHaveLength(1);
    expect(w[0]!.t - s[0]!.t).toBeCloseTo(10, 3);
    let bits = 0;
    for (let k = 0; k < s[0]!.data.length; k++) {
      let x = s[0]!.data[k]! ^ w[0]!.data[k]!;
      while (x) {
        bits += x & 1;
        x >>= 1;
      }
    }
    expect(bits).toBe(1);
    expect(r.rows[0]!.id).toBe(1);
    expect(r.reg.list()[0]!.counters).toMatchObject({ matched: 1, delayed: 1, corrupted: 1, sent: 1 });
    // The flipped bit breaks a checksum (the UDP one, or the IP header's): B never delivers a damaged datagram.
    expect(got).toEqual([]);
    expect(
      r.p.b.counters.UdpInCsumErrors +
        r.p.b.counters.IpInHdrErrors +
        r.p.b.counters.IpInAddrErrors +
        r.p.b.counters.UdpNoPorts +
        r.p.b.counters.IpInUnknownProtos,
    ).toBe(1);
  });

  test('in: the wire capture has the datagram when it arrived, the stack capture when the stack got it, 10 ms later', async () => {
    const r = impairedPair(['in --proto udp delay 10ms']);
    const rx = r.p.netA.createUdpSocket();
    const got: { t: number; m: string }[] = [];
    rx.on('message', (m: Buffer) => got.push({ t: r.p.clock.now, m: m.toString() }));
    rx.bind(7000);
    const tx = r.p.netB.createUdpSocket();
    tx.bind(7001);
    const t0 = r.p.clock.now;
    tx.send(Buffer.from('late'), 7000, A_ADDR);
    await runUntil(r.p.clock, () => got.length > 0, 100);
    r.close();
    expect(got.map((g) => g.m)).toEqual(['late']);
    expect(got[0]!.t - t0).toBeGreaterThanOrEqual(10);
    const w = readPcap(r.wirePcap).filter((x) => x.data[9] === 17);
    const s = readPcap(r.stackPcap).filter((x) => x.data[9] === 17);
    expect(w).toHaveLength(1);
    expect(s).toHaveLength(1);
    expect(s[0]!.t - w[0]!.t).toBeCloseTo(10, 3);
    expect(s[0]!.data.equals(w[0]!.data)).toBe(true);
  });
});

describe('the registry', () => {
  test('ids, canonical words with the seed, counters, and an event on each add and removal', () => {
    const r = impairedPair([]);
    const a = r.reg.add('out --dport 80 loss 3% 25% delay 20ms 5ms distribution normal');
    const b = r.reg.add(['downstream', '--port', '80', 'latency', 'latency=100', 'seed', '5']);
    expect(a.id).toBe(1);
    expect(a.spec).toMatch(/^out --dport 80 delay 20ms 5ms distribution normal loss 3% 25% seed \d+$/);
    expect(b).toMatchObject({ id: 2, kind: 'toxic', direction: 'downstream', seed: 5, spec: 'downstream --port 80 latency latency=100 seed 5' });
    expect(r.reg.list().map((x) => x.id)).toEqual([1, 2]);
    const removed = r.reg.del(1);
    expect(removed.spec).toBe(a.spec);
    expect(() => r.reg.del(7)).toThrow(/no impairment 7: the ids are 2/);
    expect(r.reg.clear().map((x) => x.id)).toEqual([2]);
    expect(() => r.reg.del(2)).toThrow(/no impairment 2: there are none/);
    const ev = r.events.recent(10).map((e) => `${e.kind} ${e.message}`);
    expect(ev).toEqual([
      `impairment-added impairment 1 added: ${a.spec}`,
      `impairment-added impairment 2 added: ${b.spec}`,
      `impairment-removed impairment 1 removed: ${a.spec}`,
      `impairment-removed impairment 2 removed: ${b.spec}`,
    ]);
    // The words a row shows are an impairment add that gives the same impairment.
    const again = r.reg.add(a.spec);
    expect(again.spec).toBe(a.spec);
  });
});
