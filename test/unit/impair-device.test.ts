/**
 * The ImpairDevice's targeting and plumbing: each match flag takes only what it says and
 * everything else passes byte for byte, in order, as the same buffer; both directions;
 * chains; removal without loss; GSO super-segments cut only when an impairment takes them;
 * no clock read while no impairment is installed.
 */
import { describe, expect, test } from 'vitest';
import type { Device, OffloadMeta, ReceiveHandler } from '../../drivers/device';
import { ImpairDevice } from '../../stack/impair/device';
import { VirtualClock } from '../../drivers/memory';
import { VirtualScheduler } from '../../stack/runtime/scheduler';
import { PacketImpairSpec, parseImpairment } from '../../stack/impair/spec';
import { F, checksumsOk, icmpEcho, ipId, tcp, udp } from './helpers/packets';

class Recorder implements Device {
  readonly name = 'rec';
  readonly mtu = 1500;
  onReceive: ReceiveHandler | null = null;
  sent: { pkt: Buffer; meta: OffloadMeta | null }[] = [];
  flushes = 0;
  readonly claimable = new Set<Buffer>();
  send(pkt: Buffer, meta?: OffloadMeta | null): void {
    this.sent.push({ pkt, meta: meta ?? null });
  }
  flush(): void {
    this.flushes++;
  }
  claim(p: Buffer): boolean {
    return this.claimable.has(p);
  }
  close(): void {}
  stats(): Record<string, number> {
    return {};
  }
  receive(pkts: Buffer[], metas: (OffloadMeta | null)[] | null = null): void {
    this.onReceive!(pkts, pkts.length, metas);
  }
}

function rig() {
  const clock = new VirtualClock(1000);
  const sched = new VirtualScheduler(clock);
  const rec = new Recorder();
  const dev = new ImpairDevice(rec, sched);
  const got: Buffer[] = [];
  const claims: boolean[] = [];
  dev.onReceive = (pkts, n) => {
    for (let i = 0; i < n; i++) {
      got.push(pkts[i]!);
      claims.push(dev.claim(pkts[i]!));
    }
  };
  let id = 1;
  const add = (words: string, seed = 1) => dev.add(id++, parseImpairment(words) as PacketImpairSpec, seed);
  const out = (pkts: Buffer[]) => {
    for (const p of pkts) dev.send(p, null);
    dev.flush();
    return rec.sent.map((s) => s.pkt);
  };
  return { clock, sched, rec, dev, got, claims, add, out };
}

/** Sends `pkts` out through an impairment of 100% loss with `match`; returns which passed. */
function survivors(match: string, pkts: Buffer[]): Buffer[] {
  const r = rig();
  r.add(`out ${match} loss 100%`);
  const passed = r.out(pkts);
  // Whatever passes is the very buffer the stack gave, untouched.
  for (const p of passed) expect(pkts).toContain(p);
  return passed;
}

const ids = (ps: Buffer[]) => ps.map(ipId);

describe('targeting: only what the match says', () => {
  const mix = () => [
    tcp({ id: 1, dport: 80 }),
    tcp({ id: 2, dport: 81 }),
    udp({ id: 3, dport: 80 }),
    icmpEcho({ id: 4 }),
    tcp({ id: 5, sport: 80, dport: 5000 }),
    udp({ id: 6, src: '198.18.1.9', dport: 53 }),
    tcp({ id: 7, dst: '198.18.5.5', dport: 443 }),
  ];

  test('--dport 80 takes TCP and UDP to port 80 only', () => {
    expect(ids(survivors('--dport 80', mix()))).toEqual([2, 4, 5, 6, 7]);
  });
  test('--sport 80 and --port 80 (either side)', () => {
    expect(ids(survivors('--sport 80', mix()))).toEqual([1, 2, 3, 4, 6, 7]);
    expect(ids(survivors('--port 80', mix()))).toEqual([2, 4, 6, 7]);
    expect(ids(survivors('--dport 80-443', mix()))).toEqual([4, 5, 6]);
  });
  test('--proto tcp | udp | icmp', () => {
    expect(ids(survivors('--proto tcp', mix()))).toEqual([3, 4, 6]);
    expect(ids(survivors('--proto udp', mix()))).toEqual([1, 2, 4, 5, 7]);
    expect(ids(survivors('--proto icmp', mix()))).toEqual([1, 2, 3, 5, 6, 7]);
  });
  test('--src and --dst, address or prefix', () => {
    expect(ids(survivors('--src 198.18.1.0/24', mix()))).toEqual([1, 2, 3, 4, 5, 7]);
    expect(ids(survivors('--src 198.18.0.2', mix()))).toEqual([6]);
    expect(ids(survivors('--dst 198.18.5.5', mix()))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(ids(survivors('--dst 198.18.0.0/16 --dport 443', mix()))).toEqual([1, 2, 3, 4, 5, 6]);
  });

  const flagMix = () => [
    tcp({ id: 1, flags: F.SYN }),
    tcp({ id: 2, flags: F.SYN | F.ACK }),
    tcp({ id: 3, flags: F.ACK }),
    tcp({ id: 4, flags: F.FIN | F.ACK }),
    tcp({ id: 5, flags: F.RST }),
    tcp({ id: 6, flags: F.RST | F.ACK }),
    tcp({ id: 7, flags: F.PSH | F.ACK, payload: 10 }),
    udp({ id: 8 }),
  ];
  test('--tcp-flags syn (only the opening SYN), syn-ack, fin, rst, FLAGS/MASK', () => {
    expect(ids(survivors('--tcp-flags syn', flagMix()))).toEqual([2, 3, 4, 5, 6, 7, 8]);
    expect(ids(survivors('--tcp-flags syn-ack', flagMix()))).toEqual([1, 3, 4, 5, 6, 7, 8]);
    expect(ids(survivors('--tcp-flags fin', flagMix()))).toEqual([1, 2, 3, 5, 6, 7, 8]);
    expect(ids(survivors('--tcp-flags rst', flagMix()))).toEqual([1, 2, 3, 4, 7, 8]);
    expect(ids(survivors('--tcp-flags psh,ack/syn,fin,rst,psh,ack', flagMix()))).toEqual([1, 2, 3, 4, 5, 6, 8]);
  });

  test('--conn: one connection, both directions, nothing else', () => {
    const a = '198.18.0.2',
      b = '198.18.0.1';
    const pkts = [
      tcp({ id: 1, src: a, sport: 40000, dst: b, dport: 80 }),
      tcp({ id: 2, src: b, sport: 80, dst: a, dport: 40000 }),
      tcp({ id: 3, src: a, sport: 40001, dst: b, dport: 80 }),
      tcp({ id: 4, src: a, sport: 40000, dst: b, dport: 81 }),
      udp({ id: 5, src: a, sport: 40000, dst: b, dport: 80 }),
    ];
    // UDP with the same ports is the same 4-tuple: --conn is about addresses and ports (add --proto tcp to narrow).
    expect(ids(survivors(`--conn ${a}:40000,${b}:80`, pkts))).toEqual([3, 4]);
    expect(ids(survivors(`--conn ${a}:40000,${b}:80 --proto tcp`, pkts))).toEqual([3, 4, 5]);
  });

  test('--nth N and --every N count only the packets that match the rest', () => {
    const pkts = Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? tcp({ id: i, dport: 80 }) : udp({ id: i, dport: 53 })));
    // TCP packets are ids 0, 2, 4...: the 3rd is id 4.
    expect(ids(survivors('--proto tcp --nth 3', pkts)).filter((x) => x % 2 === 0)).toEqual([0, 2, 6, 8, 10, 12, 14, 16, 18]);
    expect(ids(survivors('--proto tcp --every 4', pkts)).filter((x) => x % 2 === 0)).toEqual([0, 2, 4, 8, 10, 12, 16, 18]);
    expect(ids(survivors('--proto tcp --every 4', pkts)).filter((x) => x % 2 === 1)).toHaveLength(10);
  });

  test('--from and --until: a window from when the impairment was added', () => {
    const r = rig();
    r.clock.advance(5000);
    r.add('out --from 100ms --until 200ms loss 100%');
    const seen: number[] = [];
    for (let t = 0; t < 300; t += 10) {
      r.dev.send(udp({ id: t }), null);
      r.clock.advance(10);
    }
    r.dev.flush();
    for (const s of r.rec.sent) seen.push(ipId(s.pkt));
    expect(seen).toEqual(Array.from({ length: 30 }, (_, k) => k * 10).filter((t) => t < 100 || t >= 200));
  });

  test('IPv6 and later fragments never match a port criterion', () => {
    const v6 = Buffer.alloc(60);
    v6[0] = 0x60;
    const frag = udp({ id: 9, dport: 80 });
    frag.writeUInt16BE(0x0010, 6); // fragment offset 128, no DF
    expect(survivors('--dport 80', [v6, frag])).toHaveLength(2);
    expect(survivors('--proto udp', [v6, frag])).toEqual([v6]);
  });
});

describe('plumbing', () => {
  test('with no impairment the device reads no clock and hands on the same buffers', () => {
    const rec = new Recorder();
    const noClock = {
      now(): number {
        throw new Error('clock read');
      },
      at: () => null,
      cancel: () => {},
    };
    const dev = new ImpairDevice(rec, noClock);
    const got: Buffer[] = [];
    dev.onReceive = (p, n) => {
      for (let i = 0; i < n; i++) got.push(p[i]!);
    };
    const a = udp({ id: 1 }),
      b = udp({ id: 2 });
    dev.send(a, null);
    rec.receive([b]);
    expect(rec.sent[0]!.pkt).toBe(a);
    expect(got[0]).toBe(b);
  });

  test("in: packets that pass are the burst's own buffers (claimable as before); delayed ones are copies we own", () => {
    const r = rig();
    r.add('in --dport 9 delay 5ms');
    const pass = udp({ id: 1, dport: 7 }),
      wait = udp({ id: 2, dport: 9 });
    r.rec.claimable.add(pass);
    r.rec.receive([pass, wait]);
    expect(r.got).toEqual([pass]);
    expect(r.claims).toEqual([true]);
    wait.fill(0); // the slab is reused after the burst: the waiting packet must be a copy
    r.clock.advance(5);
    expect(r.got).toHaveLength(2);
    expect(ipId(r.got[1]!)).toBe(2);
    expect(checksumsOk(r.got[1]!)).toBe(true);
    expect(r.claims[1]).toBe(true);
  });

  test('out: a delayed packet leaves from the scheduler, and the device is flushed then', () => {
    const r = rig();
    r.add('out delay 20ms');
    r.dev.send(udp({ id: 1 }), null);
    r.dev.flush();
    expect(r.rec.sent).toHaveLength(0);
    const flushes = r.rec.flushes;
    r.clock.advance(19.9);
    expect(r.rec.sent).toHaveLength(0);
    r.clock.advance(0.1);
    expect(r.rec.sent).toHaveLength(1);
    expect(r.rec.flushes).toBe(flushes + 1);
  });

  test('a chain: the first impairment that matches takes a packet, what it releases goes on to the next', () => {
    const r = rig();
    r.add('out --dport 80 delay 10ms');
    const second = r.add('out --proto tcp loss 100% --nth 2');
    r.dev.send(tcp({ id: 1, dport: 80 }), null);
    r.dev.send(tcp({ id: 2, dport: 81 }), null);
    r.dev.send(tcp({ id: 3, dport: 81 }), null);
    r.clock.advance(10);
    // id 2 was the 1st TCP packet the second one saw, id 3 its 2nd (lost), id 1 its 3rd after the delay.
    expect(ids(r.rec.sent.map((s) => s.pkt))).toEqual([2, 1]);
    expect(second.matcher.counted).toBe(3);
    expect(second.queue.counters.matched).toBe(1);
    expect(second.queue.counters.dropped).toBe(1);
  });

  test('removal: what an impairment holds goes on at once, in order, nothing lost', () => {
    const r = rig();
    const s = r.add('out delay 1s');
    for (let i = 1; i <= 5; i++) r.dev.send(udp({ id: i }), null);
    expect(s.queue.queued).toBe(5);
    r.dev.remove(s.id);
    expect(ids(r.rec.sent.map((x) => x.pkt))).toEqual([1, 2, 3, 4, 5]);
    r.clock.advance(2000);
    expect(r.rec.sent).toHaveLength(5);
    // After removal packets pass straight through again.
    r.dev.send(udp({ id: 6 }), null);
    expect(r.rec.sent).toHaveLength(6);
  });

  test('GSO: a TSO super-segment an impairment takes is cut into MSS segments with complete checksums; others pass whole', () => {
    const payload = Buffer.alloc(5000);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 255;
    const big = tcp({ id: 100, dport: 80, flags: F.PSH | F.ACK | F.FIN, seq: 1000, payload });
    const meta = (): OffloadMeta => ({ flags: 1, gsoType: 1, hdrLen: 40, gsoSize: 1448, csumStart: 20, csumOffset: 16 });
    const r = rig();
    r.add('out --dport 80 delay 1ms');
    r.dev.send(Buffer.from(big), meta());
    const other = Buffer.from(big);
    other.writeUInt16BE(81, 22);
    const otherMeta = meta();
    r.dev.send(other, otherMeta);
    r.clock.advance(1);
    const sent = r.rec.sent;
    expect(sent[0]!.pkt).toBe(other);
    expect(sent[0]!.meta).toBe(otherMeta);
    const segs = sent.slice(1);
    expect(segs.map((s) => s.pkt.length - 40)).toEqual([1448, 1448, 1448, 656]);
    let seq = 1000;
    const joined: Buffer[] = [];
    segs.forEach((s, k) => {
      expect(s.meta).toBeNull();
      expect(checksumsOk(s.pkt)).toBe(true);
      expect(s.pkt.readUInt32BE(24)).toBe(seq);
      const flags = s.pkt[33]!;
      expect(flags & F.FIN).toBe(k === 3 ? F.FIN : 0);
      expect(flags & F.PSH).toBe(k === 3 ? F.PSH : 0);
      expect(ipId(s.pkt)).toBe(100 + k);
      seq += s.pkt.length - 40;
      joined.push(s.pkt.subarray(40));
    });
    expect(Buffer.concat(joined).equals(payload)).toBe(true);
    expect(r.dev.gsoSegmented.out).toBe(4);
  });
});
